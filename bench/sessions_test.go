package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/pesit/client"
	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// BenchmarkOpenSessions opens 10,000 PeSIT sessions (CONNECT answered by
// ACONNECT) on `vectis serve` (SQLite, argon2id partner), 64 at a time, and
// holds them open while one more partner pushes 1 MiB. It reports the time
// to open them all, the server's RSS while they are open and its peak, and
// the push's time. Goal (issue 17): <= 10 s and RSS <= 256 MiB.
// VECTIS_BENCH_SESSIONS changes the count. The per-address limit is lifted:
// the sessions come from 16 loopback addresses.
func BenchmarkOpenSessions(b *testing.B) {
	n := 10000
	if v := os.Getenv("VECTIS_BENCH_SESSIONS"); v != "" {
		if k, err := strconv.Atoi(v); err == nil && k > 0 {
			n = k
		}
	}
	s := startServe(b, serveOpts{maxSessions: n + 10, partners: []string{"BENCH", "LEGIT"},
		extra: "    limits: {maxConnectionsPerAddress: -1}\n"})
	src := writeFile(b, 1<<20)
	b.ResetTimer()
	for range b.N {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		conns := make([]net.Conn, n)
		var failed atomic.Int64
		var errMu sync.Mutex
		var firstErr error
		fail := func(err error) {
			failed.Add(1)
			errMu.Lock()
			if firstErr == nil {
				firstErr = err
			}
			errMu.Unlock()
		}
		next := atomic.Int64{}
		var wg sync.WaitGroup
		start := time.Now()
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1)) - 1
					if i >= n || ctx.Err() != nil {
						return
					}
					// 16 source addresses: the connections this closes stay
					// in TIME_WAIT, and back-to-back runs from one address
					// ran out of ports (bind: address already in use) or
					// waited for retransmissions.
					c, err := dialFrom(ctx, net.IPv4(127, 0, 2, byte(1+i%16)), s.pesit)
					if err != nil {
						fail(err)
						continue
					}
					c.SetDeadline(time.Now().Add(time.Minute))
					k, d, err := rawConnect(c, "BENCH", pw("BENCH"))
					if err != nil || k != fpdu.AConnect {
						if err == nil {
							err = fmt.Errorf("%v %v", k, d)
						}
						fail(err)
						c.Close()
						continue
					}
					c.SetDeadline(time.Time{})
					conns[i] = c
				}
			}()
		}
		wg.Wait()
		opened := time.Since(start)
		rss, _, err := memory(s.pid)
		if err != nil {
			b.Fatal(err)
		}
		pushStart := time.Now()
		_, perr := client.Push(ctx, pushConfig(s.pesit, "LEGIT"), client.SendRequest{Source: src, VirtualFile: "INBOX", NoRestart: true}, client.Retry{})
		push := time.Since(pushStart)
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		cancel()
		if f := failed.Load(); f > 0 {
			b.Fatalf("%d of %d sessions not opened (first: %v)", f, n, firstErr)
		}
		if perr != nil {
			b.Fatalf("push while %d sessions are open: %v", n, perr)
		}
		b.ReportMetric(opened.Seconds(), "s-to-open")
		b.ReportMetric(rss, "server-RSS-MiB-open")
		b.ReportMetric(float64(push.Milliseconds()), "push-ms")
	}
	b.StopTimer()
	_, peak, err := memory(s.pid)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(peak, "server-peak-RSS-MiB")
}
