package node

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/pesit/client"
)

// cuttingProxy forwards one loopback connection at a time to target and cuts
// the first connection after limit bytes from the client, so that a transfer
// is interrupted in mid-flight; later connections pass untouched.
type cuttingProxy struct {
	ln     net.Listener
	target string
	limit  int64
	cuts   atomic.Int32
	wg     sync.WaitGroup
}

func newCuttingProxy(t *testing.T, target string, limit int64) *cuttingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cuttingProxy{ln: ln, target: target, limit: limit}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *cuttingProxy) serve() {
	defer p.wg.Done()
	first := true
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		limit := int64(-1)
		if first {
			limit, first = p.limit, false
		}
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			if limit >= 0 {
				_, _ = io.CopyN(up, c, limit)
				p.cuts.Add(1)
			} else {
				_, _ = io.Copy(up, c)
			}
			c.Close()
			up.Close()
		}()
		go func() { defer p.wg.Done(); _, _ = io.Copy(c, up); c.Close(); up.Close() }()
	}
}

func scrape(t *testing.T, api string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(api + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value sums a family's samples whose labels include want (counter, gauge
// or histogram sample count).
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
	var sum float64
	for _, m := range f.GetMetric() {
		match := true
		for k, v := range want {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			match = match && found
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

// TestMetricsCatalogueMoves drives a successful transfer, a refused CONNECT
// and an interrupted then restarted transfer, and checks over HTTP that
// every metric of the catalogue moved as it should.
func TestMetricsCatalogueMoves(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, baseConfig(t, dir, "metrics"))
	ctx := context.Background()
	before := scrape(t, n.api)

	// A session held open shows in the active gauge.
	s, err := client.Dial(ctx, clientConfig(n.pesit, "CXCLIENT", "test123"))
	if err != nil {
		t.Fatal(err)
	}
	during := scrape(t, n.api)
	if got := value(during, "vectis_pesit_sessions_active", map[string]string{"server": "PESITSRV"}); got != 1 {
		t.Errorf("vectis_pesit_sessions_active during a session = %v, want 1", got)
	}
	if err := s.Release(ctx); err != nil {
		t.Fatal(err)
	}

	// A successful push with sync points.
	src, _ := randomFile(t, dir, 1<<20)
	if _, err := client.Push(ctx, clientConfig(n.pesit, "CXCLIENT", "test123"), client.SendRequest{Source: src, VirtualFile: "INBOX", StateDir: dir, NoRestart: true}, client.Retry{}); err != nil {
		t.Fatalf("push: %v", err)
	}
	// A refused CONNECT.
	_, err = client.Dial(ctx, clientConfig(n.pesit, "CXCLIENT", "wrong"))
	var rej *client.RejectedError
	if !errors.As(err, &rej) {
		t.Fatalf("bad password: %v, want a RejectedError", err)
	}
	// An interrupted transfer, resumed from its last sync point.
	proxy := newCuttingProxy(t, n.pesit, 600<<10)
	src2, _ := randomFile(t, filepath.Join(dir), 2<<20)
	res, err := client.Push(ctx, clientConfig(proxy.ln.Addr().String(), "CXCLIENT", "test123"),
		client.SendRequest{Source: src2, VirtualFile: "INBOX", StateDir: t.TempDir()},
		client.Retry{Retries: 3, Backoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("interrupted push did not complete after retries: %v", err)
	}
	if !res.Restarted || proxy.cuts.Load() == 0 {
		t.Fatalf("push was not interrupted and restarted: %+v, cuts %d", res, proxy.cuts.Load())
	}

	var after map[string]*dto.MetricFamily
	testenv.Eventually(t, 5*time.Second, testenv.Awaiting("the interrupted session to be counted", func() bool {
		after = scrape(t, n.api)
		return value(after, "vectis_pesit_sessions_active", nil) == 0
	}))
	moved := []struct {
		name   string
		labels map[string]string
		min    float64
	}{
		{"vectis_pesit_connections_total", map[string]string{"server": "PESITSRV", "result": "accepted"}, 3},
		{"vectis_pesit_connections_total", map[string]string{"server": "PESITSRV", "result": "refused"}, 1},
		{"vectis_pesit_transfers_total", map[string]string{"server": "PESITSRV", "direction": "receive"}, 2},
		{"vectis_pesit_transfer_bytes_total", map[string]string{"direction": "receive"}, 3 << 20},
		{"vectis_pesit_transfer_duration_seconds", map[string]string{"direction": "receive"}, 2},
		{"vectis_pesit_sync_points_total", nil, 16},
		{"vectis_pesit_restarts_total", nil, 1},
		{"vectis_pesit_diagnostics_total", map[string]string{"code": "3/304"}, 1},
		{"vectis_store_operation_seconds", nil, 1},
	}
	for _, m := range moved {
		b, a := value(before, m.name, m.labels), value(after, m.name, m.labels)
		if b < 0 {
			b = 0
		}
		if a < 0 {
			t.Errorf("%s%v missing from /metrics", m.name, m.labels)
			continue
		}
		if a-b < m.min {
			t.Errorf("%s%v moved by %v, want at least %v", m.name, m.labels, a-b, m.min)
		}
	}
	if got := value(after, "vectis_pesit_sessions_active", nil); got != 0 {
		t.Errorf("vectis_pesit_sessions_active after the sessions = %v, want 0", got)
	}
}
