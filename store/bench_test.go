package store_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/internal/testenv/pgtest"
	"github.com/vectis-ft/vectis/store"
	"github.com/vectis-ft/vectis/store/storetest"
)

// syncPointsPerOp is how many sync point updates one benchmark iteration
// makes, so that `-benchtime 1x` (make bench) still yields stable percentiles.
const syncPointsPerOp = 500

// BenchmarkSyncPointUpdate measures the restart-state write made at every
// PeSIT sync point (RecordSyncPoint: one fenced UPDATE), with durable commits
// (PostgreSQL fsync on, SQLite WAL synchronous=FULL). It reports p50 and p99
// latency of single updates.
//
// The deferred rows are RecordSyncPointDeferred, the write a receiving
// server makes when the point's restart index is durable with the data.
func BenchmarkSyncPointUpdate(b *testing.B) {
	for _, deferred := range []bool{false, true} {
		suffix := ""
		if deferred {
			suffix = "-deferred"
		}
		b.Run("postgres"+suffix, func(b *testing.B) {
			srv := pgtest.NewServer(b, pgtest.Options{Durable: true})
			benchSyncPoints(b, store.Config{URL: srv.NewDatabase(b)}, deferred)
		})
		b.Run("sqlite"+suffix, func(b *testing.B) {
			benchSyncPoints(b, store.Config{Path: filepath.Join(b.TempDir(), "vectis.db")}, deferred)
		})
	}
}

func benchSyncPoints(b *testing.B, cfg store.Config, deferred bool) {
	ctx := context.Background()
	s := storetest.Open(b, cfg)
	if err := s.ClaimLeadership(ctx, 1, "bench"); err != nil {
		b.Fatal(err)
	}
	tr, err := s.CreateTransfer(ctx, 1, storetest.SampleTransfer("BENCH", 1))
	if err != nil {
		b.Fatal(err)
	}
	durations := make([]time.Duration, 0, b.N*syncPointsPerOp)
	var n int64
	b.ResetTimer()
	for range b.N {
		for range syncPointsPerOp {
			n++
			start := time.Now()
			record := s.RecordSyncPoint
			if deferred {
				record = s.RecordSyncPointDeferred
			}
			if err := record(ctx, 1, tr.ID, store.SyncPoint{Number: n, Offset: n << 16, Articles: n * 16}); err != nil {
				b.Fatal(err)
			}
			durations = append(durations, time.Since(start))
		}
	}
	b.StopTimer()
	slices.Sort(durations)
	pct := func(p float64) float64 {
		return float64(durations[int(p*float64(len(durations)-1))].Microseconds())
	}
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(len(durations)), "ns/update")
}
