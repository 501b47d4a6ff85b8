package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/config"
	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/internal/testenv/etcdtest"
	"github.com/vectis-ft/vectis/internal/testenv/pgtest"
	"github.com/vectis-ft/vectis/pesit/client"
)

// serviceProxy plays the Kubernetes Service in front of the pods: each new
// connection goes to whichever backend accepts (only the leader listens),
// and the partner's data is paced to rate bytes per second so that a
// transfer is still running when the leader is stopped.
type serviceProxy struct {
	ln       net.Listener
	backends []string
	rate     int64
	down     bool // pace the server's data instead of the partner's
	wg       sync.WaitGroup

	mu    sync.Mutex
	held  bool // refuse new connections, as a Service with no ready endpoint
	conns []net.Conn
	dials []string // backend of each accepted connection, in order
}

func newServiceProxy(t *testing.T, rate int64, backends ...string) *serviceProxy {
	t.Helper()
	return startServiceProxy(t, &serviceProxy{backends: backends, rate: rate})
}

func startServiceProxy(t *testing.T, p *serviceProxy) *serviceProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.ln = ln
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *serviceProxy) addr() string { return p.ln.Addr().String() }

func (p *serviceProxy) hold(on bool) {
	p.mu.Lock()
	p.held = on
	p.mu.Unlock()
}

func (p *serviceProxy) backendsUsed() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.dials...)
}

func (p *serviceProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		held := p.held
		p.mu.Unlock()
		if held {
			c.Close()
			continue
		}
		var up net.Conn
		var to string
		for _, b := range p.backends {
			if up, err = net.DialTimeout("tcp", b, time.Second); err == nil {
				to = b
				break
			}
		}
		if up == nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.dials = append(p.dials, to)
		p.mu.Unlock()
		p.wg.Add(2)
		upCopy, downCopy := p.pace, func(dst io.Writer, src io.Reader) { _, _ = io.Copy(dst, src) }
		if p.down {
			upCopy, downCopy = downCopy, p.pace
		}
		go func() { defer p.wg.Done(); upCopy(up, c); c.Close(); up.Close() }()
		go func() { defer p.wg.Done(); downCopy(c, up); c.Close(); up.Close() }()
	}
}

// pace copies src to dst at no more than p.rate bytes per second, in small
// chunks, so the flow is smooth rather than bursty.
func (p *serviceProxy) pace(dst io.Writer, src io.Reader) {
	buf := make([]byte, 16<<10)
	start := time.Now()
	var sent int64
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			sent += int64(n)
			if due := start.Add(time.Duration(sent * int64(time.Second) / p.rate)); time.Until(due) > 0 {
				// The pacing is the point: the push must still run when
				// the leader gets its SIGTERM.
				time.Sleep(time.Until(due))
			}
		}
		if err != nil {
			return
		}
	}
}

type transferRecord struct {
	ID           string `json:"id"`
	Status       string `json:"status"`
	Node         string `json:"node"`
	Epoch        int64  `json:"epoch"`
	Bytes        int64  `json:"bytes"`
	RestartCount int    `json:"restartCount"`
	SHA256       string `json:"sha256"`
	PesitID      int64  `json:"pesitId"`
	Diagnostic   string `json:"diagnostic"`
}

func listTransfers(t *testing.T, n *testNode, query string) []transferRecord {
	t.Helper()
	code, body := n.do(t, "GET", "/api/v1/transfers"+query, nil)
	if code != 200 {
		t.Fatalf("list transfers: %d %s", code, body)
	}
	var page struct {
		Items []transferRecord `json:"items"`
	}
	if err := json.Unmarshal(body, &page); err != nil {
		t.Fatalf("transfers JSON: %v: %s", err, body)
	}
	return page.Items
}

type clusterStatus struct {
	IsLeader    bool    `json:"isLeader"`
	Leader      *string `json:"leader"`
	MemberCount int     `json:"memberCount"`
	Epoch       int64   `json:"epoch"`
}

// statusOf reads the node's cluster status; false while it does not answer.
func statusOf(t *testing.T, n *testNode) (clusterStatus, bool) {
	t.Helper()
	req, _ := http.NewRequest("GET", n.api+"/api/cluster/status", nil)
	req.SetBasicAuth("admin", "admin-pw")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return clusterStatus{}, false
	}
	defer resp.Body.Close()
	var st clusterStatus
	return st, resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&st) == nil
}

// startCluster starts two nodes on PostgreSQL and etcd with the given drain
// timeout and returns them, leader first.
func startCluster(t *testing.T, dir string, drain time.Duration) (leader, standby *testNode) {
	t.Helper()
	return startClusterWith(t, dir, drain, func(*config.Config) Options { return Options{} })
}

// startClusterWith is startCluster with per-node settings and Options.
func startClusterWith(t *testing.T, dir string, drain time.Duration, with func(*config.Config) Options) (leader, standby *testNode) {
	t.Helper()
	etcd := etcdtest.Start(t, etcdtest.Options{Size: 1})
	url := pgtest.Start(t)
	var nodes []*testNode
	port := testenv.FreeAddr(t)[len("127.0.0.1"):]
	for i, name := range []string{"node-a", "node-b"} {
		cfg := baseConfig(t, dir, name)
		cfg.Node.BindAddress = fmt.Sprintf("127.0.0.%d", 31+i)
		cfg.API.Listen = config.BindHost(":"+strings.Split(testenv.FreeAddr(t), ":")[1], cfg.Node.BindAddress)
		cfg.PeSIT.Servers[0].Listen = port
		cfg.PeSIT.Timers.Drain = drain
		cfg.Cluster.Enabled = true
		cfg.Cluster.TTL = 2 * time.Second
		cfg.Cluster.Etcd.Endpoints = etcd.Endpoints()
		cfg.Cluster.Kubernetes.Enabled = false
		cfg.Store.Driver = "postgres"
		cfg.Store.URL = url
		n := startNodeWith(t, cfg, with(&cfg))
		nodes = append(nodes, n)
		if i == 0 {
			testenv.Eventually(t, 15*time.Second, testenv.Awaiting("node-a to lead", func() bool {
				st, ok := statusOf(t, n)
				return ok && st.IsLeader
			}))
		}
	}
	testenv.Eventually(t, 10*time.Second, testenv.Awaiting("two members", func() bool {
		st, ok := statusOf(t, nodes[1])
		return ok && st.MemberCount == 2 && !st.IsLeader
	}))
	return nodes[0], nodes[1]
}

// stopAsync sends the node its SIGTERM (the end of its context) without
// waiting for the drain, and returns when it was sent.
func stopAsync(t *testing.T, n *testNode) <-chan struct{} {
	done := make(chan struct{})
	cancel := n.cancel
	n.cancel = nil
	cancel()
	go func() {
		defer close(done)
		select {
		case err := <-n.done:
			if err != nil {
				t.Errorf("node %s: %v", n.cfg.Node.Name, err)
			}
		case <-time.After(60 * time.Second):
			t.Errorf("node %s did not stop within 60s", n.cfg.Node.Name)
		}
	}()
	return done
}

// waitServing waits until addr accepts TCP.
func waitServing(t *testing.T, addr string, within time.Duration) {
	t.Helper()
	testenv.Eventually(t, within, func() error {
		c, err := net.DialTimeout("tcp", addr, 50*time.Millisecond)
		if err != nil {
			return fmt.Errorf("%s not serving: %w", addr, err)
		}
		c.Close()
		return nil
	})
}

// TestTransferAcrossGracefulStop: a paced push is running when the leader
// gets its SIGTERM. With a drain long enough, the old leader finishes it
// (its sessions may still write the transfers they own) and records it
// completed, while the standby already serves; with a short drain the
// session is ended, recorded interrupted at its last sync point, and the
// partner's restart resumes it on the new leader, byte-identical, recorded
// completed once under the new owner. No record is left in_progress.
func TestTransferAcrossGracefulStop(t *testing.T) {
	const (
		size = 6 << 20
		rate = 2 << 20 // bytes per second: a 3 s transfer
	)
	for _, tc := range []struct {
		name    string
		drain   time.Duration
		restart bool
	}{
		{"LongDrainCompletes", 20 * time.Second, false},
		{"ShortDrainResumesOnNewLeader", 300 * time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			leader, standby := startCluster(t, dir, tc.drain)
			svc := newServiceProxy(t, rate, leader.pesit, standby.pesit)
			src, sum := randomFile(t, dir, size)

			type outcome struct {
				res client.Result
				err error
			}
			out := make(chan outcome, 1)
			var started sync.Once
			half := make(chan struct{})
			go func() {
				cfg := clientConfig(svc.addr(), "CXCLIENT", "test123")
				res, err := client.Push(context.Background(), cfg, client.SendRequest{
					Source: src, VirtualFile: "INBOX", StateDir: dir,
					Progress: func(p client.Progress) {
						if p.Bytes >= size/3 {
							started.Do(func() { close(half) })
						}
					},
				}, client.Retry{Retries: 5, Backoff: 100 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
				out <- outcome{res, err}
			}()
			select {
			case <-half:
			case o := <-out:
				t.Fatalf("push ended before the stop: %+v %v", o.res, o.err)
			case <-time.After(30 * time.Second):
				t.Fatal("push made no progress")
			}
			if got := listTransfers(t, standby, "?status=in_progress"); len(got) != 1 || got[0].Node != "node-a" {
				t.Fatalf("before the stop: in-progress records %+v, want one on node-a", got)
			}
			sigterm := time.Now()
			stopped := stopAsync(t, leader)
			waitServing(t, standby.pesit, 5*time.Second)
			// How soon is measured by ha's BenchmarkGracefulHandover and the
			// e2e tables; here the order: the old leader resigns at once,
			// so with a long drain the new one serves before the old one
			// has finished its push.
			t.Logf("new leader accepting %v after the SIGTERM", time.Since(sigterm).Round(time.Millisecond))
			if !tc.restart {
				select {
				case <-stopped:
					t.Errorf("the new leader accepted only once the old one had drained and exited: no resignation before the drain")
				default:
				}
			}

			var o outcome
			select {
			case o = <-out:
			case <-time.After(60 * time.Second):
				t.Fatal("push did not end")
			}
			if o.err != nil {
				t.Fatalf("push: %v", o.err)
			}
			<-stopped
			got := filepath.Join(dir, "in", "CXCLIENT", fmt.Sprintf("INBOX-%d", o.res.TransferID))
			if fileSHA(t, got) != sum {
				t.Fatal("received file differs from the source")
			}
			recs := listTransfers(t, standby, "")
			if len(recs) != 1 {
				t.Fatalf("records %+v, want exactly one", recs)
			}
			r := recs[0]
			if r.Status != "completed" || r.Bytes != size || r.SHA256 != sum {
				t.Fatalf("record %+v, want completed with %d bytes and the source's sha256", r, size)
			}
			used := svc.backendsUsed()
			if !tc.restart {
				if o.res.Attempts != 1 || o.res.Restarted || r.Node != "node-a" || r.RestartCount != 0 {
					t.Fatalf("long drain: attempts %d restarted %v, record %+v; want one attempt finished by node-a",
						o.res.Attempts, o.res.Restarted, r)
				}
				return
			}
			// The drain deadline interrupted the push with IDT 2/216, PI 19
			// = 4, and the partner's ACK(IDT) let the old leader record it
			// interrupted before the new one resumed it.
			if !strings.Contains(leader.log.String(), "transfer interrupted by the shutdown") {
				t.Errorf("the old leader did not interrupt the push with IDT at the drain deadline:\n%s", leader.log.String())
			}
			st, _ := statusOf(t, standby)
			if o.res.Attempts < 2 || !o.res.Restarted || o.res.RestartPoint == 0 {
				t.Fatalf("short drain: attempts %d restarted %v from %d; want a restart from a sync point",
					o.res.Attempts, o.res.Restarted, o.res.RestartPoint)
			}
			if r.Node != "node-b" || r.Epoch != st.Epoch || r.RestartCount != o.res.Attempts-1 {
				t.Fatalf("record %+v, want owned by node-b at epoch %d with %d restarts", r, st.Epoch, o.res.Attempts-1)
			}
			if len(used) < 2 || used[0] != leader.pesit || used[len(used)-1] != standby.pesit {
				t.Fatalf("connections went to %v, want the old leader first and the new one last", used)
			}
		})
	}
}
