// Package etcdtest runs a real etcd cluster of processes on loopback for
// tests: one or three members with data in t.TempDir, fast raft timings, and
// per-member fault injection (stop, restart, pause, kill). The binaries come
// from `make tools` through testenv.Tool.
package etcdtest

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/vectis-ft/vectis/internal/testenv"
)

// Raft timings for tests. etcd's defaults (100 ms / 1 s) make a leader
// change after a member loss take seconds; these keep it well under one.
const (
	HeartbeatInterval = 50 * time.Millisecond
	ElectionTimeout   = 500 * time.Millisecond
)

// Options configures a cluster.
type Options struct {
	// Size is the number of members, 1 or 3 (default 1).
	Size int
	// StartTimeout bounds the wait for a healthy cluster (default 30 s).
	StartTimeout time.Duration
	// TLS serves clients over https with a generated CA and requires a
	// client certificate (Cluster.TLS has the files). Peers stay on http.
	TLS bool
}

// Cluster is a running etcd cluster. Its processes stop at test cleanup.
type Cluster struct {
	// TLS holds the certificate files when started with Options.TLS.
	TLS *TLSFiles

	t       testing.TB
	bin     string
	ctlBin  string
	members []*Member
}

// Member is one etcd process. Its ports and data directory survive a
// Stop/Start, so a restarted member rejoins as itself.
type Member struct {
	Name      string
	ClientURL string
	PeerURL   string

	tls     *tls.Config
	dataDir string
	args    []string // the arguments of the first start
	proc    *testenv.Process
}

// Start runs a cluster of opts.Size members and waits until every member
// reports a leader. It fails the test on error.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Size == 0 {
		opts.Size = 1
	}
	if opts.Size != 1 && opts.Size != 3 {
		t.Fatalf("etcdtest: size %d: want 1 or 3", opts.Size)
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 30 * time.Second
	}
	c := &Cluster{t: t, bin: testenv.Tool(t, "etcd")}
	if ctl, ok := testenv.LookTool("etcdctl"); ok {
		c.ctlBin = ctl
	}
	dir := t.TempDir()
	scheme := "http"
	if opts.TLS {
		f, err := newTLSFiles(dir)
		if err != nil {
			t.Fatalf("etcdtest: certificates: %v", err)
		}
		c.TLS, scheme = f, "https"
	}

	var initial []string
	for i := 0; i < opts.Size; i++ {
		ports := testenv.FreePorts(t, 2)
		m := &Member{
			Name:      fmt.Sprintf("m%d", i),
			ClientURL: fmt.Sprintf("%s://127.0.0.1:%d", scheme, ports[0]),
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
			dataDir:   filepath.Join(dir, fmt.Sprintf("m%d.etcd", i)),
		}
		m.proc = &testenv.Process{Name: "etcd " + m.Name, Bin: c.bin, Log: filepath.Join(dir, m.Name+".log")}
		c.members = append(c.members, m)
		initial = append(initial, m.Name+"="+m.PeerURL)
	}
	for _, m := range c.members {
		m.args = []string{
			"--name", m.Name,
			"--data-dir", m.dataDir,
			"--listen-client-urls", m.ClientURL,
			"--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", m.PeerURL,
			"--initial-advertise-peer-urls", m.PeerURL,
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-token", "etcdtest",
			"--initial-cluster-state", "new",
			"--heartbeat-interval", fmt.Sprint(HeartbeatInterval.Milliseconds()),
			"--election-timeout", fmt.Sprint(ElectionTimeout.Milliseconds()),
			// Tests own the data; fsync only slows a shared machine down.
			"--unsafe-no-fsync",
			"--log-level", "warn",
			"--logger", "zap",
			"--log-outputs", "stderr",
		}
		if c.TLS != nil {
			m.args = append(m.args,
				"--cert-file", c.TLS.ServerCert, "--key-file", c.TLS.ServerKey,
				"--trusted-ca-file", c.TLS.CAFile, "--client-cert-auth")
			m.tls, _ = c.TLS.Config()
		}
	}
	t.Cleanup(func() {
		for _, m := range c.members {
			_ = m.Kill()
		}
		if t.Failed() {
			for _, m := range c.members {
				m.proc.LogTailTo(t, 4<<10)
			}
		}
	})
	for _, m := range c.members {
		if err := m.Start(); err != nil {
			t.Fatalf("etcdtest: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.StartTimeout)
	defer cancel()
	if err := c.WaitHealthy(ctx); err != nil {
		t.Fatalf("etcdtest: %v", err)
	}
	return c
}

// Members returns the members in creation order.
func (c *Cluster) Members() []*Member { return c.members }

// Member returns member i.
func (c *Cluster) Member(i int) *Member { return c.members[i] }

// Endpoints returns the client URLs of every member.
func (c *Cluster) Endpoints() []string {
	eps := make([]string, len(c.members))
	for i, m := range c.members {
		eps[i] = m.ClientURL
	}
	return eps
}

// Client returns a client for the given endpoints (every member when none
// are given), closed at test cleanup.
func (c *Cluster) Client(t testing.TB, endpoints ...string) *clientv3.Client {
	t.Helper()
	if len(endpoints) == 0 {
		endpoints = c.Endpoints()
	}
	cfg := clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	}
	if c.TLS != nil {
		var err error
		if cfg.TLS, err = c.TLS.Config(); err != nil {
			t.Fatalf("etcdtest: client TLS: %v", err)
		}
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatalf("etcdtest: client: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// WaitHealthy waits until every running, unpaused member answers a
// linearizable read, i.e. the cluster has a leader and quorum.
func (c *Cluster) WaitHealthy(ctx context.Context) error {
	for _, m := range c.members {
		if !m.Running() {
			continue
		}
		if err := m.WaitHealthy(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Leader returns the member that is the raft leader, as the running
// members report it.
func (c *Cluster) Leader(ctx context.Context) (*Member, error) {
	for _, m := range c.members {
		if !m.Running() {
			continue
		}
		cli, err := clientv3.New(clientv3.Config{
			Endpoints: []string{m.ClientURL}, DialTimeout: time.Second, Logger: zap.NewNop(), TLS: m.tls,
		})
		if err != nil {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := cli.Status(sctx, m.ClientURL)
		var list *clientv3.MemberListResponse
		if err == nil && st.Leader != 0 {
			list, err = cli.MemberList(sctx)
		}
		cancel()
		cli.Close()
		if err != nil || list == nil {
			continue
		}
		for _, pm := range list.Members {
			if pm.ID != st.Leader {
				continue
			}
			for _, l := range c.members {
				if l.Name == pm.Name {
					return l, nil
				}
			}
		}
	}
	return nil, errors.New("etcdtest: no member reports a leader")
}

// Ctl runs etcdctl against every member and returns its standard output.
func (c *Cluster) Ctl(ctx context.Context, args ...string) (string, error) {
	if c.ctlBin == "" {
		return "", errors.New("etcdctl not found (run `make tools`)")
	}
	full := []string{"--endpoints", strings.Join(c.Endpoints(), ","), "--dial-timeout", "2s"}
	if c.TLS != nil {
		full = append(full, "--cacert", c.TLS.CAFile, "--cert", c.TLS.ClientCert, "--key", c.TLS.ClientKey)
	}
	full = append(full, args...)
	cmd := exec.CommandContext(ctx, c.ctlBin, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("etcdctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Start starts (or restarts, keeping its data) the member's process.
func (m *Member) Start() error {
	m.proc.Args = m.args
	if _, err := os.Stat(filepath.Join(m.dataDir, "member")); err == nil {
		// A restarted member must not try to bootstrap the cluster again.
		m.proc.Args = replaceFlag(m.args, "--initial-cluster-state", "existing")
	}
	return m.proc.Start(nil)
}

// WaitHealthy waits until this member answers a linearizable read.
func (m *Member) WaitHealthy(ctx context.Context) error {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{m.ClientURL},
		DialTimeout: time.Second,
		Logger:      zap.NewNop(),
		TLS:         m.tls,
	})
	if err != nil {
		return fmt.Errorf("member %s: %w", m.Name, err)
	}
	defer cli.Close()
	return m.proc.WaitReady(ctx, 50*time.Millisecond, func(ctx context.Context) error {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := cli.Get(clientv3.WithRequireLeader(actx), "health")
		return err
	})
}

// Running reports whether the process is alive (paused counts as alive).
func (m *Member) Running() bool { return m.proc.Running() }

// Stop terminates the process gracefully and waits for it.
func (m *Member) Stop() error { return m.proc.Stop(syscall.SIGTERM, 10*time.Second) }

// Kill kills the process (no graceful shutdown) and waits for it.
func (m *Member) Kill() error { return m.proc.Stop(syscall.SIGKILL, 10*time.Second) }

// Pause freezes the process with SIGSTOP: its sockets stay open but nothing
// answers, like a hung machine.
func (m *Member) Pause() error { return m.proc.Pause() }

// Resume continues a paused process with SIGCONT.
func (m *Member) Resume() error { return m.proc.Resume() }

func replaceFlag(args []string, flag, value string) []string {
	out := append([]string(nil), args...)
	for i := 0; i+1 < len(out); i++ {
		if out[i] == flag {
			out[i+1] = value
		}
	}
	return out
}
