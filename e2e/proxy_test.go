//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// serviceProxy routes like kube-proxy for one Service port: a loopback
// listener that sends each new connection to one of the Service's ready
// endpoints, read from its EndpointSlices. Established connections stay
// where they are when the endpoints change; with no ready endpoint a new
// connection is refused (closed at once).
type serviceProxy struct {
	slices   func() []*discoveryv1.EndpointSlice
	ns, svc  string
	portName string
	ln       net.Listener
	logf     func(string, ...any)

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newServiceProxy(slices func() []*discoveryv1.EndpointSlice, ns, svc, portName string, logf func(string, ...any)) (*serviceProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("service proxy listen: %w", err)
	}
	p := &serviceProxy{slices: slices, ns: ns, svc: svc, portName: portName, ln: ln, logf: logf, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

func (p *serviceProxy) Addr() string { return p.ln.Addr().String() }

// Endpoints returns the ready endpoints (ip:port) of the Service now.
func (p *serviceProxy) Endpoints() []string {
	var out []string
	for _, s := range p.slices() {
		if s.Labels[discoveryv1.LabelServiceName] != p.svc {
			continue
		}
		var port int32
		for _, sp := range s.Ports {
			if sp.Name != nil && *sp.Name == p.portName && sp.Port != nil && (sp.Protocol == nil || *sp.Protocol == corev1.ProtocolTCP) {
				port = *sp.Port
			}
		}
		if port == 0 {
			continue
		}
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			for _, a := range ep.Addresses {
				out = append(out, net.JoinHostPort(loopbackFor(a), fmt.Sprint(port)))
			}
		}
	}
	return out
}

func (p *serviceProxy) serve() {
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

func (p *serviceProxy) forward(c net.Conn) {
	eps := p.Endpoints()
	if len(eps) == 0 {
		c.Close()
		return
	}
	target := eps[rand.IntN(len(eps))]
	b, err := net.DialTimeout("tcp", target, 2*time.Second)
	if err != nil {
		c.Close()
		return
	}
	if !p.track(c, b) {
		return
	}
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(b, c)
	go pipe(c, b)
	<-done
	<-done
	p.untrack(c, b)
}

func (p *serviceProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *serviceProxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		c.Close()
		delete(p.conns, c)
	}
}

// Close stops accepting and closes every forwarded connection.
func (p *serviceProxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}
