package client

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// cutProxy forwards loopback TCP connections to an upstream address and
// kills the i-th connection once budgets[i] bytes (both directions counted)
// have gone through; connections beyond the list are not cut.
type cutProxy struct {
	t        testing.TB
	ln       net.Listener
	upstream string
	budgets  []int64
	rate     int64 // bytes per second per direction; 0 = unlimited
	// dropAckSyn drops every ACK(SYN) from the client on connections
	// that will be cut (plain TCP only): acknowledgements lost in flight.
	dropAckSyn bool

	mu    sync.Mutex
	n     int
	conns map[net.Conn]bool
	wg    sync.WaitGroup
	cuts  atomic.Int32
}

func newCutProxy(t testing.TB, upstream string, budgets ...int64) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{t: t, ln: ln, upstream: upstream, budgets: budgets, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// newSlowProxy forwards at rate bytes per second in each direction.
func newSlowProxy(t testing.TB, upstream string, rate int64) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{t: t, ln: ln, upstream: upstream, rate: rate, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *cutProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.upstream)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		budget := int64(-1)
		if p.n < len(p.budgets) {
			budget = p.budgets[p.n]
		}
		p.n++
		p.conns[c], p.conns[up] = true, true
		p.mu.Unlock()
		if budget >= 0 {
			p.t.Logf("proxy: connection %d will be cut after %d bytes", p.n, budget)
		}
		var used atomic.Int64
		var once sync.Once
		kill := func() {
			once.Do(func() {
				c.Close()
				up.Close()
			})
		}
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			defer kill()
			buf := make([]byte, 32<<10)
			if p.rate > 0 {
				buf = buf[:16<<10]
			}
			for {
				n, err := src.Read(buf)
				if p.rate > 0 && n > 0 {
					time.Sleep(time.Duration(int64(n) * int64(time.Second) / p.rate))
				}
				if n > 0 {
					if budget >= 0 {
						total := used.Add(int64(n))
						if total > budget {
							keep := int64(n) - (total - budget)
							if keep > 0 {
								dst.Write(buf[:keep])
							}
							p.cuts.Add(1)
							return
						}
					}
					if _, werr := dst.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					if err != io.EOF {
						return
					}
					return
				}
			}
		}
		p.wg.Add(2)
		if budget >= 0 && p.dropAckSyn {
			go func() {
				defer p.wg.Done()
				defer kill()
				dropAckSyns(up, c)
			}()
		} else {
			go pipe(up, c)
		}
		go pipe(c, up)
	}
}

// dropAckSyns copies frames from src to dst, leaving out those that start
// with an ACK(SYN) (phase C0, type 38).
func dropAckSyns(dst, src net.Conn) {
	buf := make([]byte, 2+65535)
	for {
		if _, err := io.ReadFull(src, buf[:2]); err != nil {
			return
		}
		n := int(buf[0])<<8 | int(buf[1])
		if _, err := io.ReadFull(src, buf[2:2+n]); err != nil {
			return
		}
		if n >= 6 && buf[4] == 0xC0 && buf[5] == 0x38 {
			continue
		}
		if _, err := dst.Write(buf[:2+n]); err != nil {
			return
		}
	}
}
