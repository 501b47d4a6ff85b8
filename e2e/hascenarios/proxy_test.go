//go:build e2e

package hascenarios

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/vectis-ft/vectis/internal/testenv/faultproxy"
)

// leaderProxy plays the Service in front of the PeSIT port: every new
// connection goes to the node that currently reports
// vectis_cluster_is_leader 1 on its /metrics; established connections stay
// where they are. With no leader it waits (bounded), then closes the
// client's connection, which the client sees as a transport failure and
// retries.
type leaderProxy struct {
	*faultproxy.Proxy
	nodes []*vnode
	logf  func(string, ...any)

	mu     sync.Mutex
	routed []string // node of each forwarded connection, in order
}

func newLeaderProxy(nodes []*vnode, logf func(string, ...any)) (*leaderProxy, error) {
	p := &leaderProxy{nodes: nodes, logf: logf}
	fp, err := faultproxy.Listen(faultproxy.Options{Dial: p.dialLeader, Logf: logf})
	if err != nil {
		return nil, fmt.Errorf("leader proxy: %w", err)
	}
	p.Proxy = fp
	return p, nil
}

// dialLeader connects to the PeSIT port of the node that leads now.
func (p *leaderProxy) dialLeader(ctx context.Context) (net.Conn, error) {
	n := p.leader(ctx)
	if n == nil {
		return nil, errors.New("leader proxy: no leader")
	}
	c, err := net.DialTimeout("tcp", n.pesitAddr(), 2*time.Second)
	if err != nil {
		return nil, fmt.Errorf("leader proxy: dial leader %s: %w", n.name, err)
	}
	p.mu.Lock()
	p.routed = append(p.routed, n.name)
	p.mu.Unlock()
	p.logf("leader proxy: connection routed to %s", n.name)
	return c, nil
}

// leader asks every node whether it leads, until one does or 5 s pass.
func (p *leaderProxy) leader(ctx context.Context) *vnode {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
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

// Routed lists the node of every forwarded connection.
func (p *leaderProxy) Routed() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.routed...)
}
