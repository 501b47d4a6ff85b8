package storetest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/store"
)

// SyncPointLoad keeps writers goroutines recording sync points, each on
// its own transfer, with durable commits: the store's side of as many
// transfers running flat out (a point every 1 MiB). The store's leader
// epoch must be 1. stop ends the writers and returns how many points they
// recorded.
func SyncPointLoad(tb testing.TB, s *store.Store, writers int) (stop func() int64) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ids := make([]string, writers)
	for i := range ids {
		tr, err := s.CreateTransfer(ctx, 1, SampleTransfer("LOAD", int64(1000+i)))
		if err != nil {
			cancel()
			tb.Fatalf("load transfer: %v", err)
		}
		ids[i] = tr.ID
	}
	var (
		wg    sync.WaitGroup
		n     atomic.Int64
		first atomic.Pointer[error]
	)
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := int64(1); ctx.Err() == nil; k++ {
				err := s.RecordSyncPoint(ctx, 1, id, store.SyncPoint{Number: k, Offset: k << 20, Articles: k})
				if err != nil {
					if ctx.Err() == nil {
						first.CompareAndSwap(nil, &err)
					}
					return
				}
				n.Add(1)
			}
		}()
	}
	return func() int64 {
		cancel()
		wg.Wait()
		if err := first.Load(); err != nil {
			tb.Errorf("sync point load: %v", *err)
		}
		return n.Load()
	}
}

// Latencies collects durations from several goroutines.
type Latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

// Add records one duration.
func (l *Latencies) Add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// Percentile returns the p-th percentile (0..1); 0 without samples.
func (l *Latencies) Percentile(p float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0
	}
	slices.Sort(l.d)
	return l.d[int(p*float64(len(l.d)-1))]
}

// Len is the number of samples.
func (l *Latencies) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.d)
}

// Concurrently runs fn(g, i) for i in [0, each) on each of g goroutines
// and returns the wall time; the first error stops nothing and is
// returned.
func Concurrently(goroutines, each int, fn func(g, i int) error) (time.Duration, error) {
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	start := time.Now()
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := fn(g, i); err != nil {
					once.Do(func() { first = fmt.Errorf("goroutine %d, call %d: %w", g, i, err) })
					return
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start), first
}
