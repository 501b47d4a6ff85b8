//go:build e2e

package hascenarios

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// leaderProxy plays the Service in front of the PeSIT port: every new
// connection goes to the node that currently reports
// vectis_cluster_is_leader 1 on its /metrics; established connections stay
// where they are. With no leader it waits (bounded), then closes the
// client's connection, which the client sees as a transport failure and
// retries.
type leaderProxy struct {
	nodes []*vnode
	ln    net.Listener
	logf  func(string, ...any)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	routed []string // node of each forwarded connection, in order
}

func newLeaderProxy(nodes []*vnode, logf func(string, ...any)) (*leaderProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("leader proxy listen: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &leaderProxy{nodes: nodes, ln: ln, logf: logf, ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

func (p *leaderProxy) Addr() string { return p.ln.Addr().String() }

func (p *leaderProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() { defer p.wg.Done(); p.forward(c) }()
	}
}

// leader asks every node whether it leads, until one does or 5 s pass.
func (p *leaderProxy) leader() *vnode {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		for _, n := range p.nodes {
			if !n.running() || n.frozen.Load() {
				continue
			}
			qctx, qcancel := context.WithTimeout(ctx, 300*time.Millisecond)
			v, ok, err := n.metric(qctx, "vectis_cluster_is_leader")
			qcancel()
			if err == nil && ok && v == 1 {
				return n
			}
		}
		sleepCtx(ctx, 50*time.Millisecond)
	}
	return nil
}

func (p *leaderProxy) forward(c net.Conn) {
	n := p.leader()
	if n == nil {
		p.logf("leader proxy: no leader; closing client connection")
		c.Close()
		return
	}
	b, err := net.DialTimeout("tcp", n.pesitAddr(), 2*time.Second)
	if err != nil {
		p.logf("leader proxy: dial leader %s: %v", n.name, err)
		c.Close()
		return
	}
	p.mu.Lock()
	if p.conns == nil {
		p.mu.Unlock()
		c.Close()
		b.Close()
		return
	}
	p.conns[c], p.conns[b] = struct{}{}, struct{}{}
	p.routed = append(p.routed, n.name)
	p.mu.Unlock()
	p.logf("leader proxy: connection routed to %s", n.name)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		// One side ended: end both, as a dead backend resets the client.
		dst.Close()
		src.Close()
		done <- struct{}{}
	}
	go pipe(b, c)
	go pipe(c, b)
	<-done
	<-done
	p.mu.Lock()
	if p.conns != nil {
		delete(p.conns, c)
		delete(p.conns, b)
	}
	p.mu.Unlock()
}

// Routed lists the node of every forwarded connection.
func (p *leaderProxy) Routed() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.routed...)
}

// Close stops accepting and closes every forwarded connection.
func (p *leaderProxy) Close() {
	p.cancel()
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}
