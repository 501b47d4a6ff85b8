package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vectis-ft/vectis/config"
	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/internal/testenv/etcdtest"
	"github.com/vectis-ft/vectis/internal/testenv/pgtest"
	"github.com/vectis-ft/vectis/pesit/client"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(nodeHelperEnv); spec != "" {
		os.Exit(runNodeHelper(spec))
	}
	code := m.Run()
	pgtest.Shutdown()
	os.Exit(code)
}

// syncBuffer collects a node's log for assertions.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type testNode struct {
	cfg    config.Config
	api    string
	pesit  string
	log    *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

// baseConfig is a node with one server, the partner CXCLIENT/test123 and
// two virtual files under dir.
func baseConfig(t *testing.T, dir, name string) config.Config {
	cfg := config.Default()
	cfg.Node.Name = name
	cfg.DataDir = filepath.Join(dir, name)
	cfg.FileRoot = dir // the virtual files below are shared by the nodes of a test
	cfg.API.Listen = testenv.FreeAddr(t)
	cfg.API.Users = []config.User{{Name: "admin", Password: "admin-pw", Role: "admin"}}
	cfg.Telemetry.LogFormat = "json"
	cfg.PeSIT.Timers.Drain = 2 * time.Second
	cfg.PeSIT.Servers = []config.Server{{ID: "PESITSRV", Listen: testenv.FreeAddr(t), MaxSessions: 50}}
	cfg.PeSIT.Partners = []config.Partner{{ID: "CXCLIENT", Password: "test123", Access: "both"}}
	cfg.PeSIT.Files = []config.VirtualFile{
		{ID: "INBOX", Direction: "receive", ReceiveDir: filepath.Join(dir, "in"), NamePattern: "${partner}/${file}-${transferId}"},
		{ID: "OUTBOX", Direction: "send", SendDir: filepath.Join(dir, "out")},
	}
	return cfg
}

func startNode(t *testing.T, cfg config.Config, collectors ...prometheus.Collector) *testNode {
	t.Helper()
	return startNodeWith(t, cfg, Options{Collectors: collectors})
}

// startNodeWith is startNode with the caller's Options (the test sets the
// version and the log output).
func startNodeWith(t *testing.T, cfg config.Config, opts Options) *testNode {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &testNode{cfg: cfg, api: "http://" + cfg.API.Listen, pesit: config.BindHost(cfg.PeSIT.Servers[0].Listen, cfg.Node.BindAddress), log: &syncBuffer{}, cancel: cancel, done: make(chan error, 1)}
	opts.Version, opts.LogOutput = "test", n.log
	go func() { n.done <- Run(ctx, &n.cfg, opts) }()
	t.Cleanup(func() {
		n.stop(t)
		if t.Failed() {
			t.Logf("log of %s:\n%s", cfg.Node.Name, n.log.String())
		}
	})
	testenv.Eventually(t, 20*time.Second, func() error {
		select {
		case err := <-n.done:
			n.done <- err // for the cleanup's stop, which waits for it
			t.Fatalf("node %s exited: %v\n%s", cfg.Node.Name, err, n.log.String())
		default:
		}
		resp, err := http.Get(n.api + "/readyz")
		if err != nil {
			return fmt.Errorf("node %s API not up: %w", cfg.Node.Name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("node %s /readyz: %s", cfg.Node.Name, resp.Status)
		}
		return nil
	})
	return n
}

func (n *testNode) stop(t *testing.T) {
	if n.cancel == nil {
		return
	}
	n.cancel()
	n.cancel = nil
	select {
	case err := <-n.done:
		if err != nil {
			t.Errorf("node %s: %v", n.cfg.Node.Name, err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("node %s did not stop within 30s", n.cfg.Node.Name)
	}
}

func (n *testNode) do(t *testing.T, method, path string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, n.api+path, r)
	req.SetBasicAuth("admin", "admin-pw")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func randomFile(t *testing.T, dir string, size int) (string, string) {
	t.Helper()
	b := make([]byte, size)
	_, _ = rand.Read(b)
	p := filepath.Join(dir, fmt.Sprintf("src-%d.bin", size))
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return p, hex.EncodeToString(sum[:])
}

func fileSHA(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func clientConfig(addr, partner, password string) client.Config {
	return client.Config{Addr: addr, RequesterID: partner, ServerID: "PESITSRV", Password: password,
		SyncIntervalKB: 64, SyncWindow: 2, Timeout: 10 * time.Second}
}

// TestStandaloneNodeOnSQLite runs the node as `make run` does and drives it
// like a user: a push and a pull through the PeSIT server, the transfer
// records and the cluster status through the API.
func TestStandaloneNodeOnSQLite(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, baseConfig(t, dir, "solo"))
	ctx := context.Background()

	src, sum := randomFile(t, dir, 1<<20)
	res, err := client.Push(ctx, clientConfig(n.pesit, "CXCLIENT", "test123"), client.SendRequest{Source: src, VirtualFile: "INBOX", StateDir: dir}, client.Retry{})
	if err != nil {
		t.Fatalf("push: %v\n%s", err, n.log.String())
	}
	got := filepath.Join(dir, "in", "CXCLIENT", fmt.Sprintf("INBOX-%d", res.TransferID))
	if fileSHA(t, got) != sum {
		t.Fatalf("received file differs from the source")
	}

	if err := os.MkdirAll(filepath.Join(dir, "out"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(got, filepath.Join(dir, "out", "OUTBOX")); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(dir, "pulled.bin")
	if _, err := client.Pull(ctx, clientConfig(n.pesit, "CXCLIENT", "test123"), client.ReceiveRequest{VirtualFile: "OUTBOX", Dest: dest, StateDir: dir}, client.Retry{}); err != nil {
		t.Fatalf("pull: %v", err)
	}
	if fileSHA(t, dest) != sum {
		t.Fatalf("pulled file differs from the source")
	}

	code, body := n.do(t, "GET", "/api/v1/transfers?status=completed", nil)
	if code != 200 {
		t.Fatalf("list transfers: %d %s", code, body)
	}
	var page struct {
		Items []struct {
			Direction string `json:"direction"`
			SHA256    string `json:"sha256"`
			Bytes     int64  `json:"bytes"`
			Epoch     int64  `json:"epoch"`
		} `json:"items"`
	}
	if err := json.Unmarshal(body, &page); err != nil {
		t.Fatalf("transfers JSON: %v: %s", err, body)
	}
	dirs := map[string]bool{}
	for _, it := range page.Items {
		dirs[it.Direction] = true
		if it.Bytes != 1<<20 || it.Epoch == 0 {
			t.Errorf("transfer record %+v: want 1 MiB and a leader epoch", it)
		}
		if it.Direction == "receive" && it.SHA256 != sum {
			t.Errorf("receive record sha256 = %q, want %q", it.SHA256, sum)
		}
	}
	if !dirs["receive"] || !dirs["send"] {
		t.Fatalf("completed transfers %s, want a receive and a send", body)
	}

	code, body = n.do(t, "GET", "/api/cluster/status", nil)
	if code != 200 {
		t.Fatalf("cluster status: %d %s", code, body)
	}
	var st map[string]any
	_ = json.Unmarshal(body, &st)
	if st["isLeader"] != true || st["memberCount"] != float64(1) || st["clusterName"] != "vectis-cluster" {
		t.Fatalf("standalone status = %s", body)
	}
	if strings.Contains(n.log.String(), "test123") {
		t.Fatal("the partner password appears in the node log")
	}
}

// TestTwoNodesOnPostgres: a change made through the standby's API is applied
// by the leader, which serves PeSIT, without a restart.
func TestTwoNodesOnPostgres(t *testing.T) {
	etcd := etcdtest.Start(t, etcdtest.Options{Size: 1})
	url := pgtest.Start(t)
	dir := t.TempDir()
	var nodes []*testNode
	port := testenv.FreeAddr(t)[len("127.0.0.1"):] // ":NNNN", shared through the store
	for i, name := range []string{"node-a", "node-b"} {
		cfg := baseConfig(t, dir, name)
		// Each node has its own loopback address, like a pod.
		cfg.Node.BindAddress = fmt.Sprintf("127.0.0.%d", 21+i)
		cfg.API.Listen = config.BindHost(":"+strings.Split(testenv.FreeAddr(t), ":")[1], cfg.Node.BindAddress)
		cfg.PeSIT.Servers[0].Listen = port
		cfg.Cluster.Enabled = true
		cfg.Cluster.TTL = 2 * time.Second
		cfg.Cluster.Etcd.Endpoints = etcd.Endpoints()
		cfg.Cluster.Kubernetes.Enabled = false
		cfg.Store.Driver = "postgres"
		cfg.Store.URL = url
		nodes = append(nodes, startNode(t, cfg))
	}

	var leader, standby *testNode
	testenv.Eventually(t, 15*time.Second, testenv.Awaiting("a leader", func() bool {
		for i, n := range nodes {
			_, body := n.do(t, "GET", "/api/cluster/status", nil)
			var st struct {
				IsLeader    bool `json:"isLeader"`
				MemberCount int  `json:"memberCount"`
			}
			if json.Unmarshal(body, &st) == nil && st.IsLeader && st.MemberCount == 2 {
				leader, standby = n, nodes[1-i]
				return true
			}
		}
		return false
	}))
	// Only the leader listens for PeSIT.
	if c, err := net.DialTimeout("tcp", standby.pesit, time.Second); err == nil {
		c.Close()
		t.Fatal("the standby accepts PeSIT connections")
	}

	code, body := standby.do(t, "POST", "/api/v1/partners", map[string]any{
		"id": "NEWPART", "password": "s3cret", "access": "write", "enabled": true,
	})
	if code != 201 && code != 200 {
		t.Fatalf("create partner on the standby: %d %s", code, body)
	}
	src, sum := randomFile(t, dir, 256<<10)
	res, err := client.Push(context.Background(), clientConfig(leader.pesit, "NEWPART", "s3cret"), client.SendRequest{Source: src, VirtualFile: "INBOX", StateDir: dir}, client.Retry{})
	if err != nil {
		t.Fatalf("push with the partner created on the standby: %v", err)
	}
	if got := fileSHA(t, filepath.Join(dir, "in", "NEWPART", fmt.Sprintf("INBOX-%d", res.TransferID))); got != sum {
		t.Fatal("received file differs")
	}

	// Move the PeSIT server to another port through the standby's API.
	newPort := ":" + strings.Split(testenv.FreeAddr(t), ":")[1]
	newAddr := config.BindHost(newPort, leader.cfg.Node.BindAddress)
	code, body = standby.do(t, "PUT", "/api/v1/servers/PESITSRV", map[string]any{
		"id": "PESITSRV", "listen": newPort, "maxSessions": 50, "autoStart": true,
	})
	if code != 200 {
		t.Fatalf("update server on the standby: %d %s", code, body)
	}
	testenv.Eventually(t, 10*time.Second, testenv.Awaiting("the leader to listen on the new address", func() bool {
		c, err := net.DialTimeout("tcp", newAddr, 200*time.Millisecond)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}))
	if _, err := client.Push(context.Background(), clientConfig(newAddr, "NEWPART", "s3cret"), client.SendRequest{Source: src, VirtualFile: "INBOX", StateDir: t.TempDir()}, client.Retry{}); err != nil {
		t.Fatalf("push to the moved server: %v", err)
	}
}
