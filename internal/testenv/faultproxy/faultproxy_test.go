package faultproxy_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vectis-ft/vectis/internal/testenv/etcdtest"
	"github.com/vectis-ft/vectis/internal/testenv/faultproxy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echo is a server that writes back what it reads, on a loopback port.
func echo(t *testing.T) string {
	t.Helper()
	return serve(t, func(c net.Conn) { _, _ = io.Copy(c, c) })
}

// serve runs a loopback server that handles each connection with handle,
// then closes it; everything stops at cleanup.
func serve(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); handle(c); c.Close() }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes msg and reads as many bytes back, within a deadline.
func roundTrip(c net.Conn, msg string, within time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(within))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	buf := make([]byte, len(msg))
	_, err := io.ReadFull(c, buf)
	return string(buf), err
}

// mustEcho fails the test unless msg comes back on c.
func mustEcho(t *testing.T, c net.Conn, msg, when string) {
	t.Helper()
	if got, err := roundTrip(c, msg, 10*time.Second); err != nil || got != msg {
		t.Fatalf("%s: round trip = %q, %v; want %q", when, got, err, msg)
	}
}

// readEnd reads on c and returns how it ended: a closed connection's EOF,
// a reset, or a deadline (it was still open after 10 s).
func readEnd(c net.Conn) error {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := c.Read(make([]byte, 1))
	return err
}

func TestForwards(t *testing.T) {
	p := faultproxy.New(t, echo(t))
	c := dial(t, p.Addr())
	mustEcho(t, c, "hello", "round trip")
	if p.Accepted() != 1 {
		t.Fatalf("accepted %d connections, want 1", p.Accepted())
	}
}

// TestCutIsSilence: in a partition nothing comes back and nothing fails;
// after Restore the broken connection is closed and a new one works.
func TestCutIsSilence(t *testing.T) {
	p := faultproxy.New(t, echo(t))
	c := dial(t, p.Addr())
	mustEcho(t, c, "a", "before the fault")
	p.Cut()
	_, err := roundTrip(c, "b", 200*time.Millisecond)
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("round trip through a cut = %v; want a timeout (silence)", err)
	}
	p.Restore()
	if err := readEnd(c); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read on a connection that lost bytes = %v; want it closed", err)
	}
	mustEcho(t, dial(t, p.Addr()), "c", "new connection after Restore")
}

// TestResetSendsRST: Reset ends the carried streams with a reset; the
// proxy still accepts.
func TestResetSendsRST(t *testing.T) {
	p := faultproxy.New(t, echo(t))
	c := dial(t, p.Addr())
	mustEcho(t, c, "a", "before the fault")
	p.Reset()
	if err := readEnd(c); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after Reset = %v; want ECONNRESET", err)
	}
	mustEcho(t, dial(t, p.Addr()), "b", "new connection after Reset")
}

// TestRefuseAndReopen: dials are refused, established streams go on, and
// Reopen listens again on the same address.
func TestRefuseAndReopen(t *testing.T) {
	p := faultproxy.New(t, echo(t))
	c := dial(t, p.Addr())
	p.Refuse()
	if _, err := net.Dial("tcp", p.Addr()); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial while refusing = %v; want ECONNREFUSED", err)
	}
	mustEcho(t, c, "a", "established connection while refusing")
	if err := p.Reopen(); err != nil {
		t.Fatal(err)
	}
	mustEcho(t, dial(t, p.Addr()), "b", "after Reopen")
}

// TestBudgetCutsExactly: the first connection delivers its budget and no
// more, then closes; the second is not cut.
func TestBudgetCutsExactly(t *testing.T) {
	talker := serve(t, func(c net.Conn) {
		_, _ = io.WriteString(c, "0123456789abcdef")
		_, _ = io.Copy(io.Discard, c)
	})
	p := faultproxy.Start(t, faultproxy.Options{Target: talker, Budgets: []int64{10}})
	first := dial(t, p.Addr())
	_ = first.SetReadDeadline(time.Now().Add(10 * time.Second))
	if got, err := io.ReadAll(first); string(got) != "0123456789" || err != nil {
		t.Fatalf("through a 10-byte budget: %q, %v; want %q then EOF", got, err, "0123456789")
	}
	if p.Cuts() != 1 {
		t.Fatalf("%d cuts, want 1", p.Cuts())
	}
	second := dial(t, p.Addr())
	_ = second.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, 16)
	if _, err := io.ReadFull(second, got); err != nil || string(got) != "0123456789abcdef" {
		t.Fatalf("second connection: %q, %v; want all 16 bytes", got, err)
	}
}

// TestCopierFilters: an upstream copier sees the client's bytes and decides
// what reaches the server.
func TestCopierFilters(t *testing.T) {
	upper := func(dst io.Writer, src io.Reader) error {
		buf := make([]byte, 1024)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				if _, werr := dst.Write(bytes.ToUpper(buf[:n])); werr != nil {
					return werr
				}
			}
			if err != nil {
				return err
			}
		}
	}
	p := faultproxy.Start(t, faultproxy.Options{Target: echo(t), Upstream: func(int) faultproxy.Copier { return upper }})
	if got, err := roundTrip(dial(t, p.Addr()), "quiet", 10*time.Second); err != nil || got != "QUIET" {
		t.Fatalf("through the filter = %q, %v; want %q", got, err, "QUIET")
	}
}

// TestRateDelivers: a paced link still delivers every byte in order; how
// fast is the benchmark's business, not this test's.
func TestRateDelivers(t *testing.T) {
	p := faultproxy.Start(t, faultproxy.Options{Target: echo(t), Rate: 1 << 20})
	msg := strings.Repeat("0123456789abcdef", 4<<10) // 64 KiB, several chunks
	if got, err := roundTrip(dial(t, p.Addr()), msg, 30*time.Second); err != nil || got != msg {
		t.Fatalf("paced round trip: %d bytes, %v", len(got), err)
	}
}

// TestDialFails: a connection whose server cannot be reached is closed,
// and the proxy goes on.
func TestDialFails(t *testing.T) {
	var logged []string
	var mu sync.Mutex
	p := faultproxy.Start(t, faultproxy.Options{
		Dial: func(context.Context) (net.Conn, error) { return nil, errors.New("no leader") },
		Logf: func(f string, a ...any) { mu.Lock(); logged = append(logged, f); mu.Unlock() },
	})
	if err := readEnd(dial(t, p.Addr())); !errors.Is(err, io.EOF) {
		t.Fatalf("read on a connection with no server = %v; want EOF", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(logged) != 1 {
		t.Fatalf("logged %q; want the dial failure", logged)
	}
}

// TestCutSilencesEtcd: through a cut proxy a real etcd client's request
// hangs until its deadline (not a fast failure, which would hide the
// partition from the code under test), and works again after Restore.
func TestCutSilencesEtcd(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{Size: 1})
	p := faultproxy.New(t, strings.TrimPrefix(c.Member(0).ClientURL, "http://"))
	cli := c.Client(t, p.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	p.Cut()
	short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err := cli.Get(short, "k")
	cancelShort()
	if err == nil {
		t.Fatal("get through a cut proxy succeeded")
	}
	if short.Err() == nil {
		t.Fatalf("get through a cut proxy failed before its deadline (%v); want silence", err)
	}
	p.Restore()
	if _, err := cli.Get(ctx, "k"); err != nil {
		t.Fatalf("get after restore: %v", err)
	}
}
