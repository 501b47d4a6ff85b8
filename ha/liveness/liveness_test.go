package liveness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/internal/testenv/faultproxy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve starts a liveness server greeting as h on a loopback port; stop
// closes its listener and streams, as the kernel does when the process dies.
func serve(t *testing.T, h Hello) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = (&Server{Hello: func() (Hello, bool) { return h, true }}).Serve(ctx, ln)
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}

type result struct {
	out Outcome
	err error
}

func follow(ctx context.Context, f *Follower, tg Target) <-chan result {
	ch := make(chan result, 1)
	go func() {
		out, err := f.Follow(ctx, tg)
		ch <- result{out, err}
	}()
	return ch
}

func waitFollowing(t *testing.T, following *atomic.Bool) {
	t.Helper()
	testenv.Eventually(t, 5*time.Second, func() error {
		if !following.Load() {
			return errors.New("no verified stream to the leader")
		}
		return nil
	})
}

// TestDeadProcessIsEvidence: the listener and the stream close (the
// process died): the standby sees the break and two refusals at once.
func TestDeadProcessIsEvidence(t *testing.T) {
	h := Hello{Name: "vectis-0", Lease: 42}
	addr, stop := serve(t, h)
	var following atomic.Bool
	f := &Follower{Following: following.Store}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch := follow(ctx, f, Target{Name: h.Name, Lease: h.Lease, Addr: addr})
	waitFollowing(t, &following)
	killed := time.Now()
	stop()
	r := <-ch
	if r.err != nil || r.out != Evidence {
		t.Fatalf("Follow after the leader's listener went = %q, %v; want evidence", r.out, r.err)
	}
	t.Logf("evidence %v after the leader's process went", time.Since(killed))
}

// TestResetStreamIsNoEvidence: an intermediary resets the stream of a
// live leader; the reconnect succeeds, so Follow goes on following.
func TestResetStreamIsNoEvidence(t *testing.T) {
	h := Hello{Name: "vectis-0", Lease: 42}
	addr, _ := serve(t, h)
	p := faultproxy.New(t, addr)
	var following atomic.Bool
	var reconnects atomic.Int32
	f := &Follower{Following: following.Store, Reconnected: func() { reconnects.Add(1) }}
	ctx, cancel := context.WithCancel(context.Background())
	ch := follow(ctx, f, Target{Name: h.Name, Lease: h.Lease, Addr: p.Addr()})
	for i := range 20 {
		waitFollowing(t, &following)
		p.Reset()
		testenv.Eventually(t, 5*time.Second, func() error {
			select {
			case r := <-ch:
				return fmt.Errorf("reset %d: Follow returned %q, %v; want it to keep following", i, r.out, r.err)
			default:
			}
			if reconnects.Load() <= int32(i) {
				return fmt.Errorf("reset %d: no reconnect yet", i)
			}
			return nil
		})
	}
	cancel()
	if r := <-ch; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("Follow = %q, %v; want context.Canceled", r.out, r.err)
	}
}

// TestOtherProcessIsNoEvidence: after the break another process answers at
// the address (an address reused by a new pod): that proves nothing.
func TestOtherProcessIsNoEvidence(t *testing.T) {
	h := Hello{Name: "vectis-0", Lease: 42}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	var (
		mu    sync.Mutex
		hello = h
	)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = (&Server{Hello: func() (Hello, bool) { mu.Lock(); defer mu.Unlock(); return hello, true }}).Serve(ctx, ln)
	}()
	defer func() { cancel(); <-done }()

	var following atomic.Bool
	f := &Follower{Following: following.Store}
	fctx, fcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer fcancel()
	// A reset-only proxy lets the test break the stream.
	p := faultproxy.New(t, addr)
	ch := follow(fctx, f, Target{Name: h.Name, Lease: h.Lease, Addr: p.Addr()})
	waitFollowing(t, &following)
	mu.Lock()
	hello = Hello{Name: "vectis-3", Lease: 7}
	mu.Unlock()
	p.Reset()
	r := <-ch
	if r.err != nil || r.out != NoEvidence {
		t.Fatalf("Follow with another process at the address = %q, %v; want no evidence", r.out, r.err)
	}
}

// TestSilentListenerIsNoEvidence: the address accepts but never greets
// (a frozen process's backlog, a black hole behind a proxy): a timeout,
// not evidence.
func TestSilentListenerIsNoEvidence(t *testing.T) {
	h := Hello{Name: "vectis-0", Lease: 42}
	addr, _ := serve(t, h)
	p := faultproxy.New(t, addr)
	var following atomic.Bool
	f := &Follower{Following: following.Store, DialTimeout: 200 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch := follow(ctx, f, Target{Name: h.Name, Lease: h.Lease, Addr: p.Addr()})
	waitFollowing(t, &following)
	// From now on the proxy's address is a listener nobody accepts on.
	p.Refuse()
	silent, err := net.Listen("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	p.Reset()
	r := <-ch
	if r.err != nil || r.out != NoEvidence {
		t.Fatalf("Follow with a silent listener = %q, %v; want no evidence", r.out, r.err)
	}
}

// TestNeverReachedIsNoEvidence: a standby that never had a stream (wrong
// address, leader already gone) keeps trying and never claims evidence.
func TestNeverReachedIsNoEvidence(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // refused from now on
	f := &Follower{RetryInterval: 10 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	out, err := f.Follow(ctx, Target{Name: "vectis-0", Lease: 42, Addr: addr})
	if !errors.Is(err, context.DeadlineExceeded) || out != "" {
		t.Fatalf("Follow to an address never reached = %q, %v; want it to wait until ctx ends", out, err)
	}
}

// TestDyingListenerIsEvidence: a process being killed closes its streams a
// moment before its listener, so the first redial may land in the backlog
// and be reset. That is ambiguous, not evidence; the refusals that follow
// are.
func TestDyingListenerIsEvidence(t *testing.T) {
	h := Hello{Name: "vectis-0", Lease: 42}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var following atomic.Bool
	f := &Follower{Following: following.Store}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch := follow(ctx, f, Target{Name: h.Name, Lease: h.Lease, Addr: ln.Addr().String()})
	c1, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c1.Write([]byte(`{"name":"vectis-0","lease":42}` + "\n")); err != nil {
		t.Fatal(err)
	}
	waitFollowing(t, &following)
	c1.Close()
	c2, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	_ = c2.(*net.TCPConn).SetLinger(0)
	c2.Close()
	ln.Close()
	r := <-ch
	if r.err != nil || r.out != Evidence {
		t.Fatalf("Follow with a reset then refusals = %q, %v; want evidence", r.out, r.err)
	}
}
