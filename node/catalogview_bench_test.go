package node

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/store"
	"github.com/vectis-ft/vectis/store/storetest"
)

// BenchmarkDirectoryLookup measures the lookups of a CONNECT and a CREATE
// through the node's directory (the partner with its hash, the virtual
// file) while writers record durable sync points flat out, on SQLite, three
// ways in rotating order within each iteration: from the views, from the
// store's read pool (no views), and from a store whose reads queue on the
// writer's connection (no views, ReadConns -1: the path before both). It
// reports p50/p99 per lookup and lookups per second for each, and the
// ratios to the views.
//
//	go test -run '^$' -bench DirectoryLookup -benchtime 3x ./node
func BenchmarkDirectoryLookup(b *testing.B) {
	const (
		writers = 4  // transfers journaling at once
		readers = 16 // sessions looking up at once
		each    = 50 // lookups per reader per round
		entries = 20
	)
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.DiscardHandler)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	type side struct {
		name string
		st   *store.Store
		d    directory
		lat  storetest.Latencies
		wall time.Duration
		n    int
	}
	open := func(name string, readConns int, views bool) *side {
		st := storetest.Open(b, store.Config{Path: filepath.Join(b.TempDir(), "vectis.db"), ReadConns: readConns})
		if err := st.ClaimLeadership(ctx, 1, "bench"); err != nil {
			b.Fatal(err)
		}
		hash, err := store.HashPassword("x")
		if err != nil {
			b.Fatal(err)
		}
		for i := range entries {
			if _, err := st.CreatePartner(ctx, storetest.SamplePartner(fmt.Sprintf("P%02d", i)), hash); err != nil {
				b.Fatal(err)
			}
			if _, err := st.CreateFile(ctx, storetest.SampleFile(fmt.Sprintf("F%02d", i))); err != nil {
				b.Fatal(err)
			}
		}
		sd := &side{name: name, st: st, d: directory{st: st}}
		if views {
			sd.d.partners, sd.d.files = newPartnerView(st, log), newFileView(st, log)
			wg.Add(2)
			go func() { defer wg.Done(); sd.d.partners.run(ctx) }()
			go func() { defer wg.Done(); sd.d.files.run(ctx) }()
			deadline := time.Now().Add(10 * time.Second)
			for {
				_, p := sd.d.partners.get("P00")
				_, f := sd.d.files.get("F00")
				if p && f {
					break
				}
				if time.Now().After(deadline) {
					b.Fatal("views not loaded within 10s")
				}
				time.Sleep(time.Millisecond)
			}
		}
		return sd
	}
	sides := []*side{open("view", 0, true), open("pool", 0, false), open("one", -1, false)}
	round := func(sd *side) {
		stop := storetest.SyncPointLoad(b, sd.st, writers)
		wall, err := storetest.Concurrently(readers, each, func(g, i int) error {
			k := (g*each + i) % entries
			start := time.Now()
			if _, _, err := sd.d.partner(ctx, fmt.Sprintf("P%02d", k)); err != nil {
				return err
			}
			if _, err := sd.d.VirtualFile(ctx, fmt.Sprintf("F%02d", k)); err != nil {
				return err
			}
			sd.lat.Add(time.Since(start))
			return nil
		})
		stop()
		if err != nil {
			b.Fatal(err)
		}
		sd.wall += wall
		sd.n += readers * each
	}
	b.ResetTimer()
	for i := range b.N {
		for j := range sides {
			round(sides[(i+j)%len(sides)])
		}
	}
	b.StopTimer()
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	view := sides[0]
	for _, sd := range sides {
		b.ReportMetric(us(sd.lat.Percentile(0.5)), sd.name+"-p50-µs")
		b.ReportMetric(us(sd.lat.Percentile(0.99)), sd.name+"-p99-µs")
		b.ReportMetric(float64(sd.n)/sd.wall.Seconds(), sd.name+"-lookups/s")
		if sd != view {
			b.ReportMetric(us(sd.lat.Percentile(0.99))/us(view.lat.Percentile(0.99)), sd.name+"/view-p99")
		}
	}
}
