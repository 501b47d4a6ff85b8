// Package liveness tells a standby, within milliseconds, that the leader's
// process is gone, from evidence that only a dead process produces.
//
// Every member serves a liveness listener for as long as its process runs.
// A standby holds one long-lived TCP stream to the leader's listener; the
// leader greets it with its name and lease and then never writes or closes
// it. When the process dies, whatever the cause (SIGKILL, OOM kill, panic,
// container crash), its kernel closes the stream and the listening socket:
// the stream ends and a new connection to the same address is refused with
// a TCP RST (ECONNREFUSED).
//
// Follow returns Evidence only for that: a verified stream to the leader
// broke, and of the few dials that followed, two in a row were refused
// (the first may land in the backlog of a listener that is closing and be
// reset: that is ambiguous, neither evidence nor a live leader). Anything else
// (a timeout, an unreachable host, a reset while a reconnect succeeds, a
// different process answering at the address) is not evidence, and the
// caller falls back to the lease TTL. Evidence is necessary, not
// sufficient: an intermediary can forge a refusal (a firewall REJECT with
// tcp-reset). The caller must therefore check etcd before acting, and the
// takeover it triggers must be safe even for a live leader; see the fast
// failover section of docs/ha.md.
package liveness

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// Hello is the greeting the leader sends on each stream: who it is.
type Hello struct {
	Name  string `json:"name"`
	Lease int64  `json:"lease"`
}

// Server answers liveness streams on a listener.
type Server struct {
	// Hello returns this process's identity now; ok false (not a member at
	// the moment) closes the stream at once, which a standby does not take
	// as evidence since its dial succeeded.
	Hello  func() (Hello, bool)
	Logger *slog.Logger
}

// Serve accepts streams on ln until ctx ends, then closes ln and every
// stream and returns once their goroutines are gone.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	log := s.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var (
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
	)
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	defer stop()
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			log.Warn("liveness: accept", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		mu.Lock()
		if ctx.Err() != nil {
			mu.Unlock()
			c.Close()
			return nil
		}
		conns[c] = struct{}{}
		wg.Add(1)
		mu.Unlock()
		go func() {
			defer wg.Done()
			defer func() {
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				c.Close()
			}()
			h, ok := s.Hello()
			if !ok {
				return
			}
			b, err := json.Marshal(h)
			if err != nil {
				return
			}
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := c.Write(append(b, '\n')); err != nil {
				return
			}
			// The standby never writes; a read only returns when it goes
			// or when Serve closes the stream.
			_, _ = io.Copy(io.Discard, io.LimitReader(c, 1<<10))
		}()
	}
}

// Target is the leader a standby follows.
type Target struct {
	Name  string
	Lease int64
	Addr  string
}

// Outcome is why Follow returned.
type Outcome string

// Follow's outcomes. The set is closed: they label metrics.
const (
	// Evidence: the stream broke and two dials in a row were refused.
	Evidence Outcome = "evidence"
	// NoEvidence: the stream broke, and what came after proves nothing
	// (timeout, unreachable, a reset, another process at the address).
	NoEvidence Outcome = "no_evidence"
)

// Follower holds the stream to one leader.
type Follower struct {
	// DialTimeout bounds each dial and the greeting (default 1 s).
	DialTimeout time.Duration
	// RetryInterval paces dials while no stream is up (default 250 ms).
	RetryInterval time.Duration
	// ConfirmDelay separates the dials after a break (default 20 ms): a
	// listener being re-created (a restart in place) is not taken for dead.
	ConfirmDelay time.Duration
	// Following is called with true while a verified stream is up.
	Following func(bool)
	// Reconnected is called when a stream broke and a reconnect to the same
	// leader succeeded (a reset by an intermediary, say).
	Reconnected func()
	Logger      *slog.Logger
}

func (f *Follower) defaults() {
	if f.DialTimeout <= 0 {
		f.DialTimeout = time.Second
	}
	if f.RetryInterval <= 0 {
		f.RetryInterval = 250 * time.Millisecond
	}
	if f.ConfirmDelay <= 0 {
		f.ConfirmDelay = 20 * time.Millisecond
	}
	if f.Following == nil {
		f.Following = func(bool) {}
	}
	if f.Reconnected == nil {
		f.Reconnected = func() {}
	}
	if f.Logger == nil {
		f.Logger = slog.New(slog.DiscardHandler)
	}
}

// Follow holds a stream to t until ctx ends (it returns "", ctx.Err()) or
// the stream breaks in a way that ends following: Evidence, or NoEvidence
// when the dials right after a break (see afterBreak) prove nothing. Before the
// first verified stream, failed dials are retried and prove nothing: a
// standby that has never reached the leader's listener cannot tell a dead
// leader from a wrong address.
func (f *Follower) Follow(ctx context.Context, t Target) (Outcome, error) {
	f.defaults()
	log := f.Logger.With("leader", t.Name, "liveness", t.Addr)
	var c net.Conn
	for c == nil {
		var err error
		c, err = f.open(ctx, t)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		log.Debug("liveness: no stream to the leader yet", "err", err)
		if !sleep(ctx, f.RetryInterval) {
			return "", ctx.Err()
		}
	}
	for {
		f.Following(true)
		err := hold(ctx, c)
		f.Following(false)
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		log.Info("liveness: stream to the leader broke", "err", err)
		var out Outcome
		c, out = f.afterBreak(ctx, t, log)
		if c == nil {
			if ctx.Err() != nil {
				return "", ctx.Err()
			}
			return out, nil
		}
		f.Reconnected()
		log.Info("liveness: reconnected to the leader; no evidence")
	}
}

// afterBreak redials a leader whose stream broke, at once and then every
// ConfirmDelay, at most breakDials times. A stream again ends it (no
// evidence: the leader lives); so does a timeout or an unreachable host,
// which says nothing about the process. Two refusals in a row are
// evidence. Anything else, such as a connection the kernel completed into
// the backlog of a listener that is closing, then reset, is ambiguous: it
// breaks a run of refusals and the next dial decides.
func (f *Follower) afterBreak(ctx context.Context, t Target, log *slog.Logger) (net.Conn, Outcome) {
	refusals := 0
	for range breakDials {
		c, err := f.open(ctx, t)
		switch {
		case err == nil:
			return c, ""
		case ctx.Err() != nil:
			return nil, ""
		case refused(err):
			if refusals++; refusals == 2 {
				log.Warn("liveness: leader's listener refused twice after its stream broke: its process is gone")
				return nil, Evidence
			}
		case silent(err):
			log.Info("liveness: leader unreachable; no evidence, the lease TTL decides", "err", err)
			return nil, NoEvidence
		default:
			log.Debug("liveness: ambiguous answer after the stream broke", "err", err)
			refusals = 0
		}
		if !sleep(ctx, f.ConfirmDelay) {
			return nil, ""
		}
	}
	log.Info("liveness: no evidence after the stream broke; the lease TTL decides")
	return nil, NoEvidence
}

// breakDials bounds the dials after a break: with the default delay, the
// decision is taken within about 100 ms or left to the lease.
const breakDials = 5

// silent reports a dial that got no answer: a timeout or no route.
func silent(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, os.ErrDeadlineExceeded)
}

// open dials t and checks its greeting names t's leader and lease.
func (f *Follower) open(ctx context.Context, t Target) (net.Conn, error) {
	d := net.Dialer{Timeout: f.DialTimeout}
	c, err := d.DialContext(ctx, "tcp", t.Addr)
	if err != nil {
		return nil, err
	}
	_ = c.SetReadDeadline(time.Now().Add(f.DialTimeout))
	line, err := bufio.NewReaderSize(io.LimitReader(c, 512), 512).ReadBytes('\n')
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("liveness: greeting from %s: %w", t.Addr, err)
	}
	var h Hello
	if err := json.Unmarshal(line, &h); err != nil {
		c.Close()
		return nil, fmt.Errorf("liveness: greeting from %s: %w", t.Addr, err)
	}
	if h.Name != t.Name || h.Lease != t.Lease {
		c.Close()
		return nil, fmt.Errorf("liveness: %s is %s (lease %x), not the leader %s (lease %x)", t.Addr, h.Name, h.Lease, t.Name, t.Lease)
	}
	_ = c.SetReadDeadline(time.Time{})
	return c, nil
}

// hold blocks until the stream ends or ctx does, and closes it.
func hold(ctx context.Context, c net.Conn) error {
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	defer c.Close()
	var b [64]byte
	for {
		if _, err := c.Read(b[:]); err != nil {
			return err
		}
	}
}

// refused reports a dial answered by a TCP RST: nothing listens there.
func refused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
