package store_test

import (
	"context"
	"fmt"
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

// BenchmarkLookupUnderWrites measures what a CONNECT and a CREATE read from
// the store (the partner, its password hash, the virtual file) while
// writers record durable sync points flat out, as running transfers do.
// Each iteration runs one round on a SQLite store with its read pool and
// one on a store whose reads queue on the writer's single connection
// (ReadConns -1, as before the pool), in alternating order, so that both
// see the same machine; it reports each one's p50/p99 per lookup and
// lookups per second, the sync points written per second meanwhile, and the
// ratios one-connection / pool.
//
//	go test -run '^$' -bench LookupUnderWrites -benchtime 3x ./store
func BenchmarkLookupUnderWrites(b *testing.B) {
	const (
		writers = 4  // transfers journaling at once
		readers = 16 // CONNECTs at once
		each    = 50 // lookups per reader per round
	)
	ctx := context.Background()
	type side struct {
		s    *store.Store
		lat  storetest.Latencies
		wall time.Duration
		n    int
		// writes are the sync points recorded meanwhile.
		writes int64
	}
	open := func(readConns int) *side {
		cfg := store.Config{Path: filepath.Join(b.TempDir(), "vectis.db"), ReadConns: readConns}
		s := storetest.Open(b, cfg)
		if err := s.ClaimLeadership(ctx, 1, "bench"); err != nil {
			b.Fatal(err)
		}
		hash, err := store.HashPassword("x")
		if err != nil {
			b.Fatal(err)
		}
		for i := range 20 {
			id := fmt.Sprintf("P%02d", i)
			if _, err := s.CreatePartner(ctx, storetest.SamplePartner(id), hash); err != nil {
				b.Fatal(err)
			}
			if _, err := s.CreateFile(ctx, storetest.SampleFile(fmt.Sprintf("F%02d", i))); err != nil {
				b.Fatal(err)
			}
		}
		return &side{s: s}
	}
	pool, one := open(0), open(-1)
	round := func(sd *side) {
		stop := storetest.SyncPointLoad(b, sd.s, writers)
		wall, err := storetest.Concurrently(readers, each, func(g, i int) error {
			k := (g*each + i) % 20
			start := time.Now()
			if _, err := sd.s.GetPartner(ctx, fmt.Sprintf("P%02d", k)); err != nil {
				return err
			}
			if _, err := sd.s.PartnerPasswordHash(ctx, fmt.Sprintf("P%02d", k)); err != nil {
				return err
			}
			if _, err := sd.s.GetFile(ctx, fmt.Sprintf("F%02d", k)); err != nil {
				return err
			}
			sd.lat.Add(time.Since(start))
			return nil
		})
		sd.writes += stop()
		if err != nil {
			b.Fatal(err)
		}
		sd.wall += wall
		sd.n += readers * each
	}
	b.ResetTimer()
	for i := range b.N {
		if i%2 == 0 {
			round(pool)
			round(one)
		} else {
			round(one)
			round(pool)
		}
	}
	b.StopTimer()
	us := func(d time.Duration) float64 { return float64(d.Microseconds()) }
	rate := func(sd *side) float64 { return float64(sd.n) / sd.wall.Seconds() }
	b.ReportMetric(us(pool.lat.Percentile(0.5)), "pool-p50-µs")
	b.ReportMetric(us(pool.lat.Percentile(0.99)), "pool-p99-µs")
	b.ReportMetric(us(one.lat.Percentile(0.5)), "one-p50-µs")
	b.ReportMetric(us(one.lat.Percentile(0.99)), "one-p99-µs")
	b.ReportMetric(rate(pool), "pool-lookups/s")
	b.ReportMetric(rate(one), "one-lookups/s")
	b.ReportMetric(float64(pool.writes)/pool.wall.Seconds(), "pool-writes/s")
	b.ReportMetric(float64(one.writes)/one.wall.Seconds(), "one-writes/s")
	b.ReportMetric(us(one.lat.Percentile(0.5))/us(pool.lat.Percentile(0.5)), "one/pool-p50")
	b.ReportMetric(us(one.lat.Percentile(0.99))/us(pool.lat.Percentile(0.99)), "one/pool-p99")
	b.ReportMetric(rate(pool)/rate(one), "pool/one-rate")
}
