package client

import (
	"io"
	"testing"

	"github.com/vectis-ft/vectis/internal/testenv/faultproxy"
)

// cutProxy forwards loopback TCP connections to an upstream address and
// kills the i-th connection once budgets[i] bytes (both directions counted)
// have gone through; connections beyond the list are not cut.
type cutProxy struct {
	*faultproxy.Proxy
	budgets []int64
	cuts    cutCount
	// dropAckSyn drops every ACK(SYN) from the client on connections
	// that will be cut (plain TCP only): acknowledgements lost in flight.
	dropAckSyn bool
}

// cutCount reads how many connections the proxy has cut.
type cutCount struct{ p *faultproxy.Proxy }

func (c cutCount) Load() int32 { return int32(c.p.Cuts()) }

func newCutProxy(t testing.TB, upstream string, budgets ...int64) *cutProxy {
	t.Helper()
	p := &cutProxy{budgets: budgets}
	p.Proxy = faultproxy.Start(t, faultproxy.Options{
		Target: upstream, Budgets: budgets, Logf: t.Logf,
		Upstream: func(i int) faultproxy.Copier {
			if p.dropAckSyn && i < len(p.budgets) && p.budgets[i] >= 0 {
				return dropAckSyns
			}
			return nil
		},
	})
	p.cuts = cutCount{p.Proxy}
	return p
}

// newSlowProxy forwards at rate bytes per second in each direction.
func newSlowProxy(t testing.TB, upstream string, rate int64) *cutProxy {
	t.Helper()
	p := &cutProxy{Proxy: faultproxy.Start(t, faultproxy.Options{Target: upstream, Rate: rate})}
	p.cuts = cutCount{p.Proxy}
	return p
}

func (p *cutProxy) addr() string { return p.Addr() }

// dropAckSyns copies frames from src to dst, leaving out those that start
// with an ACK(SYN) (phase C0, type 38).
func dropAckSyns(dst io.Writer, src io.Reader) error {
	buf := make([]byte, 2+65535)
	for {
		if _, err := io.ReadFull(src, buf[:2]); err != nil {
			return err
		}
		n := int(buf[0])<<8 | int(buf[1])
		if _, err := io.ReadFull(src, buf[2:2+n]); err != nil {
			return err
		}
		if n >= 6 && buf[4] == 0xC0 && buf[5] == 0x38 {
			continue
		}
		if _, err := dst.Write(buf[:2+n]); err != nil {
			return err
		}
	}
}
