package client

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/internal/testenv"
)

// TestRawRestartAfterCut cuts push and pull connections at seeded random
// points through a TCP proxy; the retry must resume from the last
// acknowledged sync point and deliver a byte-identical file.
func TestRawRestartAfterCut(t *testing.T) {
	const size = 4 << 20
	const syncKB, window = 64, 2
	for _, dir := range []string{"push", "pull"} {
		for seed := uint64(1); seed <= 3; seed++ {
			t.Run(dir, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				srv := newRawServer(t, syncKB, window)
				r := rand.New(rand.NewPCG(seed, 42))
				// Past (window + 2) intervals of data, at least one sync
				// point has been acknowledged before the cut.
				minCut := int64(window+2) * syncKB * 1024
				cut := minCut + r.Int64N(size-minCut-64<<10)
				t.Logf("seed %d: cut after %d bytes", seed, cut)
				proxy := newCutProxy(t, srv.addr(), cut)
				cfg := rawConfig(proxy.addr())
				cfg.SyncIntervalKB, cfg.SyncWindow = syncKB, window
				local := t.TempDir()
				retry := Retry{Retries: 3, Backoff: 10 * time.Millisecond}
				var res Result
				var err error
				var want, got string
				if dir == "push" {
					want = writeRandom(t, local, "f.bin", size, seed)
					got = filepath.Join(srv.dir, "f.bin")
					res, err = Push(ctx, cfg, SendRequest{Source: want, ArticleLength: 4096}, retry)
				} else {
					want = writeRandom(t, srv.dir, "f.bin", size, seed)
					got = filepath.Join(local, "f.bin")
					res, err = Pull(ctx, cfg, ReceiveRequest{VirtualFile: "f.bin", Dest: got}, retry)
				}
				if err != nil {
					t.Fatalf("%s: %v", dir, err)
				}
				sameFile(t, want, got)
				if proxy.cuts.Load() == 0 {
					t.Fatal("the proxy never cut the connection")
				}
				if res.Attempts < 2 || !res.Restarted || res.RestartPoint == 0 {
					t.Fatalf("result %+v: want a restart from a sync point > 0 on attempt >= 2", res)
				}
				t.Logf("restarted from sync point %d on attempt %d", res.RestartPoint, res.Attempts)
			})
		}
	}
}

// TestRestartAfterCut is TestRawRestartAfterCut against the real server:
// seeded random cuts in both directions, over TCP, resumed by Push/Pull.
func TestRestartAfterCut(t *testing.T) {
	const size = 6 << 20
	const syncKB, window = 64, 2
	// Seed 14 runs over TLS: the cut then lands inside TLS records.
	seeds := []uint64{11, 12, 13, 14}
	for _, dir := range []string{"push", "pull"} {
		for _, seed := range seeds {
			useTLS := seed == 14
			t.Run(fmt.Sprintf("%s/seed=%d/tls=%v", dir, seed, useTLS), func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
				defer cancel()
				ts := startServer(t, serverOpts{syncKB: syncKB, window: window, entity: 4096, tls: useTLS})
				r := rand.New(rand.NewPCG(seed, 99))
				minCut := int64(window+2) * syncKB * 1024
				// Two cuts for odd seeds: the second attempt is cut too.
				cuts := []int64{minCut + r.Int64N(size/2)}
				if seed%2 == 1 {
					cuts = append(cuts, minCut+r.Int64N(size/2))
				}
				t.Logf("seed %d: cuts after %v bytes", seed, cuts)
				upstream := ts.addr
				if useTLS {
					upstream = ts.tlsAddr
				}
				proxy := newCutProxy(t, upstream, cuts...)
				cfg := ts.config(useTLS, syncKB, window)
				cfg.Addr = proxy.addr()
				local := t.TempDir()
				// The server notices the cut on its side before it can offer
				// the restart; a short backoff covers that.
				retry := Retry{Retries: 4, Backoff: 200 * time.Millisecond}
				var res Result
				var err error
				var want, got string
				if dir == "push" {
					want = writeRandom(t, local, "f.bin", size, seed)
					got = filepath.Join(ts.in, "CUT")
					res, err = Push(ctx, cfg, SendRequest{Source: want, VirtualFile: "CUT", StateDir: filepath.Join(local, "state")}, retry)
				} else {
					want = writeRandom(t, ts.out, "CUT", size, seed)
					got = filepath.Join(local, "f.bin")
					res, err = Pull(ctx, cfg, ReceiveRequest{VirtualFile: "CUT", Dest: got}, retry)
				}
				if err != nil {
					t.Fatalf("%s: %v", dir, err)
				}
				sameFile(t, want, got)
				if n := proxy.cuts.Load(); int(n) < len(cuts) {
					t.Fatalf("the proxy cut %d connections, want %d", n, len(cuts))
				}
				if res.Attempts != len(cuts)+1 || !res.Restarted || res.RestartPoint == 0 {
					t.Fatalf("result %+v: want a restart from a sync point > 0 on attempt %d", res, len(cuts)+1)
				}
				t.Logf("restarted from sync point %d on attempt %d", res.RestartPoint, res.Attempts)
				if dir == "pull" {
					if m, _ := filepath.Glob(filepath.Join(local, ".*")); len(m) != 0 {
						t.Fatalf("temporary or state files left behind: %v", m)
					}
				}
			})
		}
	}
}

// TestRestartFromStateFile interrupts a push and a pull without retries,
// then starts a fresh Push/Pull (as a new process would): the restart state
// on disk alone lets it resume from a sync point > 0.
func TestRestartFromStateFile(t *testing.T) {
	const size = 4 << 20
	for _, dir := range []string{"push", "pull"} {
		t.Run(dir, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			ts := startServer(t, serverOpts{syncKB: 64, window: 2, entity: 4096})
			proxy := newCutProxy(t, ts.addr, size/2)
			local := t.TempDir()
			state := filepath.Join(local, "state")
			cut := ts.config(false, 64, 2)
			cut.Addr = proxy.addr()
			direct := ts.config(false, 64, 2)
			var want, got string
			run := func(cfg Config) (Result, error) {
				if dir == "push" {
					return Push(ctx, cfg, SendRequest{Source: want, VirtualFile: "NP", StateDir: state}, Retry{})
				}
				return Pull(ctx, cfg, ReceiveRequest{VirtualFile: "NP", Dest: got, StateDir: state}, Retry{})
			}
			if dir == "push" {
				want, got = writeRandom(t, local, "f.bin", size, 8), filepath.Join(ts.in, "NP")
			} else {
				want, got = writeRandom(t, ts.out, "NP", size, 8), filepath.Join(local, "f.bin")
			}
			_, err := run(cut)
			if err == nil || !Retryable(err) {
				t.Fatalf("first attempt through the cutting proxy: %v, want a retryable failure", err)
			}
			if m, _ := filepath.Glob(filepath.Join(state, "*.json")); len(m) != 1 {
				t.Fatalf("restart state files: %v, want one", m)
			}
			// The restart needs the server's record of the interruption,
			// and the file released by the cut session (else 2/207).
			testenv.Eventually(t, 10*time.Second, func() error {
				if _, err := ts.jnl.lastOutcome(); err != nil {
					return err
				}
				if n := ts.srv.ActiveSessions(); n != 0 {
					return fmt.Errorf("%d sessions still open", n)
				}
				return nil
			})
			res, err := run(direct)
			if err != nil {
				t.Fatalf("second attempt: %v", err)
			}
			sameFile(t, want, got)
			if !res.Restarted || res.RestartPoint == 0 {
				t.Fatalf("result %+v: want a restart from a sync point > 0", res)
			}
			if m, _ := filepath.Glob(filepath.Join(state, "*.json")); len(m) != 0 {
				t.Fatalf("restart state left after success: %v", m)
			}
		})
	}
}

// TestPullRestartFromUnacknowledgedPoint cuts a pull after the client made
// a sync point durable that the server never saw acknowledged: its
// ACK(SYN)s are lost (window 2), or there are none (window 0, the server
// has sent points beyond the client's). The resumed pull starts from the
// client's point, not from 0, and the file is byte-identical.
func TestPullRestartFromUnacknowledgedPoint(t *testing.T) {
	const syncKB = 16
	for _, c := range []struct {
		name   string
		window uint8
		text   bool
		cut    int64
	}{
		{"ACK(SYN) lost, window 2", 2, false, 24 << 10},
		{"window 0", 0, false, 300 << 10},
		{"window 0, text", 0, true, 300 << 10},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			defer cancel()
			ts := startServer(t, serverOpts{syncKB: syncKB, window: c.window, entity: 4096, text: c.text})
			proxy := newCutProxy(t, ts.addr, c.cut)
			proxy.dropAckSyn = true
			cfg := ts.config(false, syncKB, c.window)
			cfg.Addr = proxy.addr()
			local := t.TempDir()
			var want string
			if c.text {
				want = writeText(t, ts.out, "CUT", 40000, 5)
			} else {
				want = writeRandom(t, ts.out, "CUT", 2<<20, 5)
			}
			got := filepath.Join(local, "f.bin")
			res, err := Pull(ctx, cfg, ReceiveRequest{VirtualFile: "CUT", Dest: got}, Retry{Retries: 2, Backoff: 200 * time.Millisecond})
			if err != nil {
				t.Fatalf("pull: %v", err)
			}
			sameFile(t, want, got)
			if proxy.cuts.Load() != 1 || res.Attempts != 2 || !res.Restarted || res.RestartPoint == 0 {
				t.Fatalf("result %+v after %d cuts: want a restart from a sync point > 0 on attempt 2", res, proxy.cuts.Load())
			}
			ts.jnl.mu.Lock()
			first := ts.jnl.recs[0].sync
			ts.jnl.mu.Unlock()
			t.Logf("restarted from sync point %d; the server had sent up to %d", res.RestartPoint, first)
		})
	}
}
