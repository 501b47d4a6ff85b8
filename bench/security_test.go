package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/pesit/client"
	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// The load tests of issue 16, against `vectis serve` in a child process.
// Each is bounded in connections and time, on loopback only.

func writeFile(t testing.TB, size int) string {
	t.Helper()
	b := make([]byte, size)
	_, _ = rand.Read(b)
	p := filepath.Join(t.TempDir(), "src.bin")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func pushConfig(addr, partner string) client.Config {
	return client.Config{Addr: addr, RequesterID: partner, ServerID: "PESITSRV", Password: pw(partner),
		SyncIntervalKB: 256, SyncWindow: 4, Timeout: 30 * time.Second, DialTimeout: 30 * time.Second}
}

// TestWrongPasswordFlood: 400 concurrent wrong-password CONNECTs (half for
// a real partner, half for invented ids, from 8 loopback addresses) cost
// bounded memory, and a legitimate push from another address meanwhile
// completes (within 2 s on an idle machine). Before the fix: 100 of them took RSS to 1.9 GiB and
// a legitimate CONNECT waited about 60 s.
func TestWrongPasswordFlood(t *testing.T) {
	s := startServe(t, serveOpts{maxSessions: 500, partners: []string{"CXCLIENT", "LEGIT"}})
	fwd := newForwarder(t, net.IPv4(127, 0, 0, 3), s.pesit)
	src := writeFile(t, 1<<20)
	rss0, _, err := memory(s.pid)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	const n = 400
	var refused, other, dialled atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := dialFrom(ctx, net.IPv4(127, 0, 1, byte(1+i%8)), s.pesit)
			dialled.Add(1)
			if err != nil {
				other.Add(1)
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(time.Minute))
			id := "CXCLIENT"
			if i%2 == 1 {
				id = fmt.Sprintf("NOSUCH%04d", i)
			}
			k, d, err := rawConnect(c, id, fmt.Sprintf("g%07d", i))
			if err == nil && k == fpdu.RConnect && d == fpdu.DiagNotAuthorised {
				refused.Add(1)
			} else {
				other.Add(1)
			}
		}()
	}
	// The legitimate push starts once the whole flood is on the wire.
	testenv.Eventually(t, time.Minute, func() error {
		if d := dialled.Load(); d < n {
			return fmt.Errorf("%d of %d flood connections dialled", d, n)
		}
		return nil
	})
	start := time.Now()
	res, err := client.Push(ctx, pushConfig(fwd.addr(), "LEGIT"), client.SendRequest{Source: src, VirtualFile: "INBOX", NoRestart: true}, client.Retry{})
	legit := time.Since(start)
	// The figure (about 1 s on an idle machine, 2 s the target) is logged
	// below; what fails the test is the defect's shape, a CONNECT queued
	// behind the flood's derivations (about 60 s before the fix), which no
	// slow or shared machine explains.
	if err != nil {
		t.Errorf("legitimate push during the flood: %v", err)
	} else if legit > 15*time.Second {
		t.Errorf("legitimate push took %v during the flood: queued behind the wrong passwords", legit)
	}
	wg.Wait()
	rss, peak, err := memory(s.pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("400 wrong-password CONNECTs: %d refused 3/304, %d other; legitimate push %v (CONNECT %v); server RSS %.0f MiB before, %.0f after, peak %.0f",
		refused.Load(), other.Load(), legit.Round(time.Millisecond), res.ConnectTime.Round(time.Millisecond), rss0, rss, peak)
	if refused.Load() != n {
		t.Errorf("%d of %d wrong passwords answered 3/304", refused.Load(), n)
	}
	if peak > 300 {
		t.Errorf("server peak RSS %.0f MiB, want <= 300", peak)
	}
}

// TestIdleSocketsFromOneAddress: 2,000 idle sockets from 127.0.0.2 do not
// take the connection slots; a client from 127.0.0.3 connects and pushes.
// Before the fix the global cap (2 × maxSessions + 16) was full and the
// legitimate CONNECT was reset.
func TestIdleSocketsFromOneAddress(t *testing.T) {
	s := startServe(t, serveOpts{maxSessions: 200, partners: []string{"LEGIT"}})
	fwd := newForwarder(t, net.IPv4(127, 0, 0, 3), s.pesit)
	src := writeFile(t, 1<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const n = 2000
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := dialFrom(ctx, net.IPv4(127, 0, 0, 2), s.pesit)
		if err != nil {
			t.Fatalf("idle socket %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	start := time.Now()
	_, err := client.Push(ctx, pushConfig(fwd.addr(), "LEGIT"), client.SendRequest{Source: src, VirtualFile: "INBOX", NoRestart: true}, client.Retry{})
	if err != nil {
		t.Fatalf("push from 127.0.0.3 with %d idle sockets open from 127.0.0.2: %v", n, err)
	}
	// How many of the idle sockets the server kept: the per-address limit.
	open := 0
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			open++
		}
	}
	t.Logf("push from 127.0.0.3 in %v with %d idle sockets from 127.0.0.2, of which the server kept %d", time.Since(start).Round(time.Millisecond), n, open)
	if open > 64 {
		t.Errorf("the server kept %d idle sockets from one address, want <= 64", open)
	}
}

// TestMetricsBoundedUnderInventedInput: 20,000 HTTP requests with invented
// methods and 1,000 peer ABORTs with random diagnostics grow /metrics by
// less than 10 KB. Before the fix, 20,000 invented methods made it 27 MB.
func TestMetricsBoundedUnderInventedInput(t *testing.T) {
	s := startServe(t, serveOpts{maxSessions: 100, partners: []string{"LEGIT"}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	scrape := func() int {
		resp, err := http.Get(s.api + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return len(b)
	}
	// One legitimate session first, so that the series of a normal start
	// (a login, a connection) are not counted as growth.
	sess, err := client.Dial(ctx, pushConfig(s.pesit, "LEGIT"))
	if err != nil {
		t.Fatal(err)
	}
	_ = sess.Release(ctx)
	before := scrape()

	tr := &http.Transport{MaxIdleConnsPerHost: 8}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var next, httpErrs atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > 20000 || ctx.Err() != nil {
					return
				}
				req, _ := http.NewRequestWithContext(ctx, "M"+strconv.FormatInt(i, 36)+"X", s.api+"/api/v1/partners", nil)
				resp, err := hc.Do(req)
				if err != nil {
					httpErrs.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()

	var aborts, abortErrs atomic.Int64
	next.Store(0)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= 1000 && ctx.Err() == nil {
				sess, err := client.Dial(ctx, pushConfig(s.pesit, "LEGIT"))
				if err != nil {
					abortErrs.Add(1)
					continue
				}
				d := fpdu.Diagnostic(uint32(1+mrand.IntN(3))<<16 | uint32(mrand.IntN(65536)))
				if err := sess.Abort(d); err != nil {
					abortErrs.Add(1)
				} else {
					aborts.Add(1)
				}
				sess.Close()
			}
		}()
	}
	wg.Wait()
	after := scrape()
	t.Logf("/metrics %d bytes before, %d after 20,000 invented methods (%d errors) and %d random ABORTs (%d errors): +%d bytes",
		before, after, httpErrs.Load(), aborts.Load(), abortErrs.Load(), after-before)
	if httpErrs.Load() > 0 || abortErrs.Load() > 0 {
		t.Errorf("%d HTTP and %d PeSIT errors", httpErrs.Load(), abortErrs.Load())
	}
	if after-before >= 10<<10 {
		t.Errorf("/metrics grew by %d bytes, want < 10 KB", after-before)
	}
}

// BenchmarkConnectArgon2id: 1,000 concurrent pushes of 1 MiB against
// `vectis serve` (SQLite, argon2id partner), reporting p50/p99
// CONNECT→ACONNECT and the server's peak RSS. Goal (issue 17): p99 <= 50
// ms, RSS <= 256 MiB. VECTIS_BENCH_PUSHES changes the count. The per-address
// limit is lifted: every push comes from 127.0.0.1. With -benchtime 2x the
// second run reports the reconnects (warm-*) apart from the first (cold-*).
// The partner's password is declared in plain text, which the node pins at
// start-up, so the first run pays no derivation either; with
// VECTIS_BENCH_DECLARED=hash it is declared as its argon2id hash, and the
// first run's CONNECTs wait for the one derivation.
func BenchmarkConnectArgon2id(b *testing.B) {
	n := 1000
	if v := os.Getenv("VECTIS_BENCH_PUSHES"); v != "" {
		if k, err := strconv.Atoi(v); err == nil && k > 0 {
			n = k
		}
	}
	hashed := os.Getenv("VECTIS_BENCH_DECLARED") == "hash"
	s := startServe(b, serveOpts{maxSessions: n + 10, partners: []string{"BENCH"}, hashed: hashed,
		extra: "    limits: {maxConnectionsPerAddress: -1}\n"})
	if !hashed {
		// Measure what a partner meets once the node is up: its declared
		// password pinned.
		waitPinned(b, s)
	}
	src := writeFile(b, 1<<20)
	b.ResetTimer()
	for it := range b.N {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		lat := make([]time.Duration, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := time.Now()
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := client.Push(ctx, pushConfig(s.pesit, "BENCH"), client.SendRequest{Source: src, VirtualFile: "INBOX", NoRestart: true},
					client.Retry{Retries: 3, Backoff: 100 * time.Millisecond})
				lat[i], errs[i] = res.ConnectTime, err
			}()
		}
		wg.Wait()
		el := time.Since(start)
		cancel()
		failed := 0
		for i, err := range errs {
			if err != nil {
				if failed < 5 {
					b.Errorf("push %d of run %d: %v", i, it, err)
				}
				failed++
			}
		}
		if failed > 0 {
			b.Fatalf("%d of %d pushes failed", failed, n)
		}
		slices.Sort(lat)
		// The first run finds the credential cache cold: with the password
		// declared as a hash, every CONNECT of it waits for the one
		// argon2id derivation. Later runs (-benchtime 2x) are its
		// reconnects.
		run := "warm-"
		if it == 0 {
			run = "cold-"
		}
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, run+"p99-connect-ms")
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, run+"p50-connect-ms")
		b.ReportMetric(el.Seconds(), run+"s/run")
	}
	b.StopTimer()
	_, peak, err := memory(s.pid)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(peak, "server-peak-RSS-MiB")
}

// BenchmarkRefusalTiming: an unknown partner id and a known one with a wrong
// password, alternated one at a time against `vectis serve` (throttle
// lifted), report their median CONNECT→RCONNECT time and the ratio. Before
// the fix: 0.54 ms against 22.9 ms, which told which ids exist (issue 16
// defect 3). The goal is a ratio near 1.
func BenchmarkRefusalTiming(b *testing.B) {
	s := startServe(b, serveOpts{maxSessions: 50, partners: []string{"CXCLIENT"},
		extra: "    limits: {loginFailureBurst: 1000000}\n"})
	const rounds = 30
	b.ResetTimer()
	for range b.N {
		var known, unknown []time.Duration
		for i := range 2 * rounds {
			c, err := dialFrom(context.Background(), net.IPv4(127, 0, 0, 1), s.pesit)
			if err != nil {
				b.Fatal(err)
			}
			id := "CXCLIENT"
			if i%2 == 1 {
				id = fmt.Sprintf("NOSUCH%03d", i)
			}
			start := time.Now()
			k, d, err := rawConnect(c, id, fmt.Sprintf("w%07d", i))
			el := time.Since(start)
			c.Close()
			if err != nil || k != fpdu.RConnect || d != fpdu.DiagNotAuthorised {
				b.Fatalf("CONNECT %s: %v %v %v", id, k, d, err)
			}
			if i%2 == 1 {
				unknown = append(unknown, el)
			} else {
				known = append(known, el)
			}
		}
		slices.Sort(known)
		slices.Sort(unknown)
		mk, mu := known[rounds/2], unknown[rounds/2]
		b.ReportMetric(float64(mk.Microseconds())/1000, "known-wrong-ms")
		b.ReportMetric(float64(mu.Microseconds())/1000, "unknown-ms")
		b.ReportMetric(float64(mu)/float64(mk), "unknown/known")
	}
}

// waitPinned waits until the node behind s has pinned a declared partner
// password (vectis_credential_checks_total{realm="pin",result="accepted"}).
func waitPinned(t testing.TB, s *served) {
	t.Helper()
	const line = `vectis_credential_checks_total{realm="pin",result="accepted"} `
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.api + "/metrics")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(body), line) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no declared password pinned within 30 s (last error %v)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
