//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/pesit/client"
	"github.com/vectis-ft/vectis/telemetry/otlptest"
)

// chartTTL is vectis.cluster.ttl in charts/vectis/ci/e2e-values.yaml.
const chartTTL = 5 * time.Second

// checkSpanCoversOutage: after a kill, the failover span starts at the old
// leader's last lease renewal (expiry - TTL), which was at most TTL/5 (one
// renewal interval) before the kill, and lasts as long as the outage the
// harness measured from the kill to the new leader's listener accepting,
// within TTL/5.
func (s *suite) checkSpanCoversOutage(t *testing.T, r *row, run int, span otlptest.Span, kill time.Time, outage time.Duration) {
	t.Helper()
	bound := chartTTL / 5
	if off := span.Start.Sub(kill); off < -bound || off > bound {
		t.Errorf("run %d: vectis.failover span starts %v from the kill, want within TTL/5 = %v (detection %s)",
			run, off, bound, span.Attributes["vectis.failover.detection_seconds"])
	}
	diff := span.End.Sub(span.Start) - outage
	r.SpanVsOutage = append(r.SpanVsOutage, diff.Round(time.Millisecond))
	t.Logf("run %d: span %v, outage (kill->listener accepting) %v, difference %v", run, span.End.Sub(span.Start), outage, diff)
	if diff < -bound || diff > bound {
		t.Errorf("run %d: vectis.failover span lasts %v, the measured outage %v: off by more than TTL/5 = %v",
			run, span.End.Sub(span.Start), outage, bound)
	}
}

// pacer stands between the partner and the Service and paces the
// partner's data, so that a push is still running when the leader is
// stopped. Each connection goes through the Service afresh.
type pacer struct {
	ln   net.Listener
	to   string
	rate int64 // bytes per second
	wg   sync.WaitGroup
}

func newPacer(t *testing.T, to string, rate int64) *pacer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pacer{ln: ln, to: to, rate: rate}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *pacer) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", p.to, time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			buf := make([]byte, 16<<10)
			start, sent := time.Now(), int64(0)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if _, werr := up.Write(buf[:n]); werr != nil {
						break
					}
					sent += int64(n)
					time.Sleep(time.Until(start.Add(time.Duration(sent * int64(time.Second) / p.rate))))
				}
				if err != nil {
					break
				}
			}
			c.Close()
			up.Close()
		}()
		go func() { defer p.wg.Done(); _, _ = io.Copy(c, up); c.Close(); up.Close() }()
	}
}

// podTransfers lists the transfer records through a pod's admin API.
func podTransfers(ctx context.Context, c Cluster, p Pod) ([]map[string]any, error) {
	base, err := c.PodAPI(ctx, p)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/transfers?limit=1000", nil)
	if err != nil {
		return nil, err
	}
	user, pass := c.APIAuth()
	req.SetBasicAuth(user, pass)
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /api/v1/transfers on %s: %s", p.Name, resp.Status)
	}
	var page struct {
		Items []map[string]any `json:"items"`
	}
	return page.Items, json.NewDecoder(resp.Body).Decode(&page)
}

// chartDrain is vectis.pesit.timers.drain as the e2e chart leaves it.
const chartDrain = 20 * time.Second

// transferAcrossGracefulStop: a paced push is running when the leader's pod
// is deleted (SIGTERM). The chart's drain timeout (20 s) is long enough for
// it to finish: the old pod completes it without any restart and records it
// completed, while the new leader already serves through the Service.
func (s *suite) transferAcrossGracefulStop(ctx context.Context, t *testing.T, r *row) {
	// 6 s at the pace, well within the drain timeout.
	s.transferAcrossStop(ctx, t, r, 48<<20, 8<<20, false)
}

// transferAcrossShortDrain: the same push, paced so that it cannot end
// within the drain timeout. At the drain's end the old pod interrupts it
// with IDT (PI 19 = 4) at its last acknowledged sync point; the partner's
// restart reaches the new leader through the Service and resumes there:
// 0 bytes lost, one record, completed under the new owner with a restart.
func (s *suite) transferAcrossShortDrain(ctx context.Context, t *testing.T, r *row) {
	// At 768 KiB/s the 24 MiB left after the SIGTERM take 32 s: the drain
	// (20 s) ends with about 9 MiB to go.
	s.transferAcrossStop(ctx, t, r, 32<<20, 768<<10, true)
}

func (s *suite) transferAcrossStop(ctx context.Context, t *testing.T, r *row, size, rate int64, short bool) {
	st := waitSteady(ctx, t, s.c, 90*time.Second)
	dir := t.TempDir()
	if left := time.Duration(float64(size) * 3 / 4 / float64(rate) * float64(time.Second)); short != (left > chartDrain) {
		t.Fatalf("test setup: %v of data left at the SIGTERM against a drain of %v (short drain: %v)", left, chartDrain, short)
	}
	src := randomFile(t, dir, "graceful.bin", size)
	pace := newPacer(t, s.c.ServiceAddr(), rate)
	cfg := pesitConfig(pace.ln.Addr().String())
	cfg.SyncIntervalKB, cfg.SyncWindow = 1024, 4
	cfg.Timeout = 10 * time.Second
	third := make(chan struct{})
	var once sync.Once
	type outcome struct {
		res client.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := client.Push(ctx, cfg, client.SendRequest{
			Source: src, VirtualFile: "LOOPBACK", StateDir: dir,
			Progress: func(p client.Progress) {
				if p.Bytes >= size/4 {
					once.Do(func() { close(third) })
				}
			},
		}, client.Retry{Retries: 10, Backoff: 200 * time.Millisecond, MaxBackoff: time.Second})
		done <- outcome{res, err}
	}()
	select {
	case <-third:
	case o := <-done:
		t.Fatalf("push ended before the stop: %+v, %v", o.res, o.err)
	case <-ctx.Done():
		t.Fatal("push made no progress")
	}
	old := st.Leader
	sigterm := time.Now()
	if err := s.c.DeletePod(ctx, st.Leader.Name, nil); err != nil {
		t.Fatalf("delete leader: %v", err)
	}
	stopped := stopTime(ctx, s.c, old, time.Minute)
	if d, err := timeToConnect(ctx, s.c, sigterm, &old, time.Minute); err != nil {
		t.Errorf("after the SIGTERM: %v", err)
	} else {
		r.Connect = append(r.Connect, d)
		if st := <-stopped; !st.IsZero() {
			r.StopToConnect = append(r.StopToConnect, (d - st.Sub(sigterm)).Round(time.Millisecond))
		}
		// Issue 12 aims at 0.5 s p99 from the SIGTERM to the new leader
		// serving through the Service; the e2e table reports it (0.15 to
		// 0.4 s locally). The bound asserted here is looser, yet far below
		// the TTL (5 s) that a handover without resignation would take:
		// the EndpointSlice controller, when a pod change reaches it before
		// its informer has seen its own last write ("EndpointSlice informer
		// cache is out of date"), retries the Service after 1 s
		// (defaultSyncBackOff in kube-controller-manager), and a handover
		// changes three pods' worth of endpoints within milliseconds; a
		// local run saw 1.18 s that way. On kind kube-proxy adds its own
		// delay behind the NodePort (docs/kubernetes.md).
		bound := 2500 * time.Millisecond
		if s.c.Backend() == "kind" {
			bound = 3 * time.Second
		}
		if d > bound {
			t.Errorf("new leader served through the Service %v after the SIGTERM, want at most %v", d, bound)
		}
	}
	o := <-done
	if o.err != nil {
		t.Fatalf("push across the graceful stop: %v", o.err)
	}
	t.Logf("push: %+v", o.res)
	switch {
	case !short && (o.res.Attempts != 1 || o.res.Restarted):
		t.Errorf("push needed %d attempts (restarted %v): the draining leader did not finish it", o.res.Attempts, o.res.Restarted)
	case short && (o.res.Attempts < 2 || !o.res.Restarted || o.res.RestartPoint == 0):
		t.Errorf("push: %d attempts, restarted %v from sync point %d; want a restart from the last acknowledged sync point",
			o.res.Attempts, o.res.Restarted, o.res.RestartPoint)
	}
	dest := filepath.Join(dir, "back.bin")
	if _, err := client.Pull(ctx, pesitConfig(s.c.ServiceAddr()), client.ReceiveRequest{VirtualFile: "LOOPBACK", Dest: dest, StateDir: dir},
		client.Retry{Retries: 10, Backoff: 200 * time.Millisecond}); err != nil {
		t.Fatalf("pull back: %v", err)
	}
	r.Runs, r.HasBytes = 1, true
	r.BytesLost = bytesLost(t, src, dest)
	after := waitReplaced(ctx, t, s.c, st.Leader.Name, 90*time.Second)
	recs, err := podTransfers(ctx, s.c, after.Leader)
	if err != nil {
		t.Fatalf("transfer records: %v", err)
	}
	found := 0
	for _, rec := range recs {
		if rec["pesitId"] == float64(o.res.TransferID) && rec["direction"] == "receive" {
			found++
			switch {
			case !short && (rec["status"] != "completed" || rec["node"] != st.Leader.Name || rec["restartCount"] != float64(0)):
				t.Errorf("record of the push %v: want completed by %s without restart", rec, st.Leader.Name)
			case short && (rec["status"] != "completed" || rec["node"] == st.Leader.Name || rec["restartCount"] != float64(o.res.Attempts-1)):
				t.Errorf("record of the push %v: want completed by the new leader, not %s, with %d restarts",
					rec, st.Leader.Name, o.res.Attempts-1)
			}
		}
		if rec["status"] == "in_progress" {
			t.Errorf("record left in_progress after the stop: %v", rec)
		}
	}
	if found != 1 {
		t.Errorf("%d receive records with PI 13 = %d among %d records, want exactly one", found, o.res.TransferID, len(recs))
	}
}
