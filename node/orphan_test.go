package node

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/config"
	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/internal/testenv/etcdtest"
	"github.com/vectis-ft/vectis/internal/testenv/pgtest"
	"github.com/vectis-ft/vectis/pesit/client"
)

// nodeHelperEnv makes the test binary run one node from a JSON config file,
// so that a test can SIGKILL it.
const nodeHelperEnv = "VECTIS_NODE_HELPER"

func runNodeHelper(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper config:", err)
		return 2
	}
	var cfg config.Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "helper config:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, &cfg, Options{Version: "test"}); err != nil {
		fmt.Fprintln(os.Stderr, "node:", err)
		return 1
	}
	return 0
}

// startNodeProcess runs cfg in a child process and waits for its API.
func startNodeProcess(t *testing.T, cfg config.Config) *exec.Cmd {
	t.Helper()
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), cfg.Node.Name+".json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(t.TempDir(), cfg.Node.Name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), nodeHelperEnv+"="+path)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logf.Name()); err == nil {
				t.Logf("log of %s:\n%s", cfg.Node.Name, b)
			}
		}
	})
	n := &testNode{cfg: cfg, api: "http://" + cfg.API.Listen}
	testenv.Eventually(t, 20*time.Second, testenv.Awaiting(cfg.Node.Name+" to lead", func() bool {
		st, ok := statusOf(t, n)
		return ok && st.IsLeader
	}))
	return cmd
}

// TestOrphanAfterLeaderKilled: the leader is SIGKILLed during a push. The
// new leader marks the transfer interrupted on winning, keeping its sync
// point and taking it over, and the partner's restart completes it there.
func TestOrphanAfterLeaderKilled(t *testing.T) {
	const (
		size = 6 << 20
		rate = 2 << 20
	)
	etcd := etcdtest.Start(t, etcdtest.Options{Size: 1})
	url := pgtest.Start(t)
	dir := t.TempDir()
	port := testenv.FreeAddr(t)[len("127.0.0.1"):]
	cfgs := make([]config.Config, 2)
	for i, name := range []string{"node-a", "node-b"} {
		cfg := baseConfig(t, dir, name)
		cfg.Node.BindAddress = fmt.Sprintf("127.0.0.%d", 41+i)
		cfg.API.Listen = config.BindHost(":"+strings.Split(testenv.FreeAddr(t), ":")[1], cfg.Node.BindAddress)
		cfg.PeSIT.Servers[0].Listen = port
		cfg.Cluster.Enabled = true
		cfg.Cluster.TTL = 2 * time.Second
		cfg.Cluster.Etcd.Endpoints = etcd.Endpoints()
		cfg.Cluster.Kubernetes.Enabled = false
		cfg.Store.Driver = "postgres"
		cfg.Store.URL = url
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		cfgs[i] = cfg
	}
	a := startNodeProcess(t, cfgs[0])
	b := startNode(t, cfgs[1])
	aPesit := config.BindHost(port, cfgs[0].Node.BindAddress)
	svc := newServiceProxy(t, rate, aPesit, b.pesit)
	src, sum := randomFile(t, dir, size)

	type outcome struct {
		res client.Result
		err error
	}
	out := make(chan outcome, 1)
	third := make(chan struct{})
	var once bool
	go func() {
		res, err := client.Push(context.Background(), clientConfig(svc.addr(), "CXCLIENT", "test123"), client.SendRequest{
			Source: src, VirtualFile: "INBOX", StateDir: dir,
			Progress: func(p client.Progress) {
				if p.Bytes >= size/3 && !once {
					once = true
					close(third)
				}
			},
		}, client.Retry{Retries: 30, Backoff: 200 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
		out <- outcome{res, err}
	}()
	select {
	case <-third:
	case o := <-out:
		t.Fatalf("push ended early: %+v %v", o.res, o.err)
	case <-time.After(30 * time.Second):
		t.Fatal("push made no progress")
	}
	// No new connection until the orphan is marked, so that the sweep on
	// winning (not the partner's restart) is what is observed.
	svc.hold(true)
	if err := a.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	var orphan transferRecord
	testenv.Eventually(t, 15*time.Second, testenv.Awaiting("the new leader to mark the orphan interrupted", func() bool {
		recs := listTransfers(t, b, "")
		if len(recs) == 1 && recs[0].Status == "interrupted" {
			orphan = recs[0]
			return true
		}
		return false
	}))
	t.Logf("orphan interrupted %v after the kill: %+v", time.Since(killed).Round(time.Millisecond), orphan)
	st, _ := statusOf(t, b)
	if !st.IsLeader || orphan.Node != "node-b" || orphan.Epoch != st.Epoch || orphan.Bytes == 0 ||
		!strings.Contains(orphan.Diagnostic, "node-a") {
		t.Fatalf("orphan %+v, want interrupted by node-b (epoch %d) keeping its sync point", orphan, st.Epoch)
	}
	svc.hold(false)

	var o outcome
	select {
	case o = <-out:
	case <-time.After(60 * time.Second):
		t.Fatal("push did not end")
	}
	if o.err != nil {
		t.Fatalf("push: %v", o.err)
	}
	if !o.res.Restarted || o.res.RestartPoint == 0 {
		t.Fatalf("push %+v: want a restart from a sync point", o.res)
	}
	got := filepath.Join(dir, "in", "CXCLIENT", fmt.Sprintf("INBOX-%d", o.res.TransferID))
	if fileSHA(t, got) != sum {
		t.Fatal("received file differs from the source")
	}
	recs := listTransfers(t, b, "")
	if len(recs) != 1 || recs[0].ID != orphan.ID || recs[0].Status != "completed" || recs[0].Node != "node-b" ||
		recs[0].SHA256 != sum {
		t.Fatalf("records %+v, want the orphan completed by node-b", recs)
	}
}
