// Package faultproxy is the one TCP proxy that tests put between a client
// and a server to produce the network faults a real loopback cannot: a
// silent partition, a reset, a refused dial, a connection cut after so many
// bytes, a slow link, and frames lost or withheld by a filter. Everything
// else (TCP, the peers, their timers) is real.
package faultproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Copier copies one direction of a connection, from src to dst, until src
// ends or a write fails. A filter that drops or withholds frames is one.
type Copier func(dst io.Writer, src io.Reader) error

// Options configures a Proxy.
type Options struct {
	// Target is the server's host:port, dialled for each new connection
	// unless Dial is set.
	Target string
	// Dial, if set, opens the server side of a new connection instead
	// (a Service routing to the current leader). ctx ends at Close.
	Dial func(ctx context.Context) (net.Conn, error)
	// Host is the address the proxy listens on (default 127.0.0.1).
	Host string
	// Budgets cuts connections: the i-th connection (from 0) is closed
	// once Budgets[i] bytes, both directions counted, have gone through,
	// the bytes up to the budget delivered. A negative budget, or a
	// connection beyond the list, is never cut.
	Budgets []int64
	// Rate paces each direction to at most this many bytes per second
	// (0: unlimited), so that a transfer is still running when the test
	// acts.
	Rate int64
	// Upstream and Downstream, if set, return the copier for connection
	// i's client-to-server and server-to-client bytes (nil: a plain
	// copy). What they write is counted against the budget and paced.
	Upstream, Downstream func(i int) Copier
	// Logf, if set, hears about dials that fail and connections cut.
	Logf func(format string, args ...any)
}

// Proxy forwards TCP connections from its listener to a server, and
// injects faults on command. Its goroutines end at Close.
type Proxy struct {
	opts   Options
	addr   string
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	cuts   atomic.Int32

	mu     sync.Mutex
	ln     net.Listener // nil while refusing
	links  map[*link]struct{}
	n      int  // connections accepted so far
	cut    bool // a partition: drop every byte
	closed bool
}

// link is one proxied connection.
type link struct {
	i              int
	client, server net.Conn
	budget         int64 // < 0: never cut
	used           atomic.Int64
	dropped        atomic.Bool // lost bytes in a partition: never forwards again
	once           sync.Once
}

// New starts a proxy to target on a free loopback port, closed at test
// cleanup. It fails the test if it cannot listen.
func New(t testing.TB, target string) *Proxy {
	t.Helper()
	return Start(t, Options{Target: target})
}

// Start is New with options.
func Start(t testing.TB, opts Options) *Proxy {
	t.Helper()
	p, err := Listen(opts)
	if err != nil {
		t.Fatalf("faultproxy: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// Listen starts a proxy; the caller closes it.
func Listen(opts Options) (*Proxy, error) {
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.Dial == nil {
		if opts.Target == "" {
			return nil, errors.New("faultproxy: no Target and no Dial")
		}
		target := opts.Target
		opts.Dial = func(ctx context.Context) (net.Conn, error) {
			d := net.Dialer{Timeout: 5 * time.Second}
			return d.DialContext(ctx, "tcp", target)
		}
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(opts.Host, "0"))
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{opts: opts, addr: ln.Addr().String(), ctx: ctx, cancel: cancel, ln: ln, links: map[*link]struct{}{}}
	p.wg.Add(1)
	go p.accept(ln)
	return p, nil
}

// Addr is the proxy's host:port; it stays the same across Refuse and
// Reopen.
func (p *Proxy) Addr() string { return p.addr }

// URL is Addr as an http URL (an etcd endpoint).
func (p *Proxy) URL() string { return "http://" + p.addr }

// Accepted is the number of connections accepted so far.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// Cuts is the number of connections cut by their budget.
func (p *Proxy) Cuts() int { return int(p.cuts.Load()) }

// Cut starts a silent partition: every byte, on current and new
// connections, is read and dropped, so each side sees silence rather than
// a reset, as when a network fails.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for l := range p.links {
		l.dropped.Store(true)
	}
}

// Reset sends a TCP RST on every connection the proxy carries (an
// intermediary's reset); new connections still go through.
func (p *Proxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for l := range p.links {
		l.close(true)
	}
}

// Refuse stops listening: new dials are refused (a REJECT with
// tcp-reset) while established connections go on; Reset ends those, Reopen
// listens again.
func (p *Proxy) Refuse() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
}

// Restore ends the partition: connections that lost bytes in it are
// closed (their streams are corrupt); new ones forward again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
	for l := range p.links {
		if l.dropped.Load() {
			l.close(false)
		}
	}
}

// Reopen undoes Refuse: the proxy listens again on the same address.
func (p *Proxy) Reopen() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil || p.closed {
		return nil
	}
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		return fmt.Errorf("faultproxy: listen again on %s: %w", p.addr, err)
	}
	p.ln = ln
	p.wg.Add(1)
	go p.accept(ln)
	return nil
}

// Close stops the proxy, closes every connection and waits for its
// goroutines.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.cancel()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for l := range p.links {
		l.close(false)
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) logf(format string, args ...any) {
	if p.opts.Logf != nil {
		p.opts.Logf(format, args...)
	}
}

func (p *Proxy) accept(ln net.Listener) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		i := p.n
		p.n++
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(i, c)
	}
}

// serve dials the server for client connection i and forwards both ways.
func (p *Proxy) serve(i int, client net.Conn) {
	defer p.wg.Done()
	server, err := p.opts.Dial(p.ctx)
	if err != nil {
		p.logf("faultproxy: connection %d: dial: %v", i, err)
		client.Close()
		return
	}
	l := &link{i: i, client: client, server: server, budget: -1}
	if i < len(p.opts.Budgets) {
		l.budget = p.opts.Budgets[i]
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		l.close(false)
		return
	}
	l.dropped.Store(p.cut)
	p.links[l] = struct{}{}
	p.mu.Unlock()
	if l.budget >= 0 {
		p.logf("faultproxy: connection %d will be cut after %d bytes", i, l.budget)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.pipe(l, server, client, p.opts.Upstream)
	}()
	p.pipe(l, client, server, p.opts.Downstream)
	<-done
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
}

// pipe copies one direction; when it ends, for any reason, the whole
// connection ends, as a dead peer ends it for the other.
func (p *Proxy) pipe(l *link, dst, src net.Conn, copier func(int) Copier) {
	defer l.close(false)
	cp := plainCopy
	if copier != nil {
		if c := copier(l.i); c != nil {
			cp = c
		}
	}
	if err := cp(&faultWriter{p: p, l: l, dst: dst}, src); errors.Is(err, errCut) {
		p.cuts.Add(1)
		p.logf("faultproxy: connection %d cut after %d bytes", l.i, l.budget)
	}
}

func plainCopy(dst io.Writer, src io.Reader) error {
	buf := make([]byte, 32<<10)
	_, err := io.CopyBuffer(dst, struct{ io.Reader }{src}, buf)
	return err
}

// close ends both sides once; with reset, each side gets an RST instead of
// a FIN.
func (l *link) close(reset bool) {
	l.once.Do(func() {
		for _, c := range []net.Conn{l.client, l.server} {
			if tc, ok := c.(*net.TCPConn); ok && reset {
				_ = tc.SetLinger(0)
			}
			c.Close()
		}
	})
}

var errCut = errors.New("faultproxy: connection cut by its budget")

// faultWriter is where a direction's bytes go: dropped in a partition,
// paced to the rate, counted against the connection's budget.
type faultWriter struct {
	p   *Proxy
	l   *link
	dst net.Conn
}

// paceChunk is the most a paced direction writes at once, so that the
// flow is smooth rather than bursty.
const paceChunk = 16 << 10

func (w *faultWriter) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		chunk := b
		if w.p.opts.Rate > 0 && len(chunk) > paceChunk {
			chunk = chunk[:paceChunk]
		}
		n, err := w.write(chunk)
		written += n
		if err != nil {
			return written, err
		}
		b = b[len(chunk):]
	}
	return written, nil
}

func (w *faultWriter) write(b []byte) (int, error) {
	if w.l.dropped.Load() {
		return len(b), nil
	}
	if rate := w.p.opts.Rate; rate > 0 {
		// The pace is the fault under test: a slow link.
		select {
		case <-time.After(time.Duration(int64(len(b)) * int64(time.Second) / rate)):
		case <-w.p.ctx.Done():
			return 0, net.ErrClosed
		}
	}
	if w.l.budget >= 0 {
		total := w.l.used.Add(int64(len(b)))
		if over := total - w.l.budget; over > 0 {
			if keep := int64(len(b)) - over; keep > 0 {
				_, _ = w.dst.Write(b[:keep])
			}
			return 0, errCut
		}
	}
	return w.dst.Write(b)
}
