//go:build e2e

package hascenarios

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vectis-ft/vectis/pesit/client"
)

// Fixed names of the node configuration.
const (
	serverID    = "PESITSRV"
	partnerID   = "CXCLIENT"
	partnerPass = "test123"
	fileID      = "INBOX"
	apiUser     = "admin"
	apiPassword = "ha-admin-pass"
	labelKey    = "vectis-leader"
	podSelector = "app=vectis-server"
	pesitPort   = 5000
	apiPort     = 8080
	// ttl is the election TTL of every scenario: the minimum, to keep the
	// suite fast.
	ttl = 2 * time.Second
)

// vnode is one `vectis serve` process, playing one pod.
type vnode struct {
	name string
	ip   string // its own 127.x address (node.bindAddress)
	// extraCluster is appended to the cluster section of its configuration
	// (lines starting with "\n    ").
	extraCluster string
	cfgPath      string
	logPath      string
	bin          string
	env          []string

	frozen atomic.Bool // SIGSTOPped: its listening socket is the kernel's, not the node's
	waking atomic.Bool // SIGCONT sent, and the monitor has not yet seen its PeSIT port closed

	mu      sync.Mutex
	cmd     *exec.Cmd
	logFile *os.File
	exited  chan struct{}
	exitErr error
	http    *http.Client
}

func (n *vnode) pesitAddr() string { return net.JoinHostPort(n.ip, strconv.Itoa(pesitPort)) }
func (n *vnode) apiURL() string    { return "http://" + net.JoinHostPort(n.ip, strconv.Itoa(apiPort)) }

// start runs the process; its output is appended to logPath.
func (n *vnode) start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil && !n.exitedLocked() {
		return fmt.Errorf("node %s is already running", n.name)
	}
	f, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("node %s log: %w", n.name, err)
	}
	cmd := exec.Command(n.bin, "serve", "--config", n.cfgPath)
	cmd.Env = n.env
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start node %s: %w", n.name, err)
	}
	n.cmd, n.logFile = cmd, f
	n.frozen.Store(false)
	exited := make(chan struct{})
	n.exited = exited
	go func() {
		err := cmd.Wait()
		n.mu.Lock()
		n.exitErr = err
		f.Close()
		n.mu.Unlock()
		close(exited)
	}()
	if n.http == nil {
		n.http = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	}
	return nil
}

func (n *vnode) exitedLocked() bool {
	select {
	case <-n.exited:
		return true
	default:
		return false
	}
}

// running reports whether the process is alive (a stopped one counts).
func (n *vnode) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil && !n.exitedLocked()
}

func (n *vnode) signal(sig syscall.Signal) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.exitedLocked() {
		return fmt.Errorf("node %s is not running", n.name)
	}
	switch sig {
	case syscall.SIGSTOP:
		n.frozen.Store(true)
	case syscall.SIGCONT:
		if n.frozen.Load() {
			n.waking.Store(true)
		}
		defer n.frozen.Store(false)
	}
	if err := n.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %v to node %s: %w", sig, n.name, err)
	}
	return nil
}

// wait waits for the process to exit, at most d.
func (n *vnode) wait(d time.Duration) error {
	n.mu.Lock()
	exited := n.exited
	n.mu.Unlock()
	if exited == nil {
		return nil
	}
	select {
	case <-exited:
		return nil
	case <-time.After(d):
		return fmt.Errorf("node %s did not exit within %v", n.name, d)
	}
}

// kill ends the process whatever its state (cleanup).
func (n *vnode) kill() {
	if !n.running() {
		return
	}
	_ = n.signal(syscall.SIGCONT)
	_ = n.signal(syscall.SIGKILL)
	_ = n.wait(10 * time.Second)
}

// accepting reports whether a TCP connection to the PeSIT port succeeds.
func (n *vnode) accepting(timeout time.Duration) bool {
	c, err := net.DialTimeout("tcp", n.pesitAddr(), timeout)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// metrics reads the node's /metrics (unauthenticated) as name{labels} ->
// value.
func (n *vnode) metrics(ctx context.Context) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.apiURL()+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := n.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("metrics of %s: %w", n.name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics of %s: HTTP %d", n.name, resp.StatusCode)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// metric is one series of the node's metrics; ok is false when absent.
func (n *vnode) metric(ctx context.Context, series string) (float64, bool, error) {
	m, err := n.metrics(ctx)
	if err != nil {
		return 0, false, err
	}
	v, ok := m[series]
	return v, ok, nil
}

// sumMetric adds every series of a metric whose labels contain all of
// the given label pairs (e.g. `class="stale_epoch"`).
func sumMetric(m map[string]float64, name string, labels ...string) float64 {
	var sum float64
	for k, v := range m {
		if k != name && !strings.HasPrefix(k, name+"{") {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(k, l) {
				ok = false
			}
		}
		if ok {
			sum += v
		}
	}
	return sum
}

// clusterStatus is the part of /api/cluster/status the scenarios read.
type clusterStatus struct {
	IsLeader    bool   `json:"isLeader"`
	Node        string `json:"node"`
	Leader      string `json:"leader"`
	Epoch       int64  `json:"epoch"`
	MemberCount int    `json:"memberCount"`
	Members     []struct {
		Name     string `json:"name"`
		IsLeader bool   `json:"isLeader"`
	} `json:"members"`
}

func (n *vnode) status(ctx context.Context) (clusterStatus, error) {
	var st clusterStatus
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.apiURL()+"/api/cluster/status", nil)
	if err != nil {
		return st, err
	}
	req.SetBasicAuth(apiUser, apiPassword)
	resp, err := n.http.Do(req)
	if err != nil {
		return st, fmt.Errorf("status of %s: %w", n.name, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("status of %s: HTTP %d: %s", n.name, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("status of %s: %w", n.name, err)
	}
	return st, nil
}

// pesitConnect proves the node serves PeSIT: CONNECT is accepted, then
// RELEASE.
func (n *vnode) pesitConnect(ctx context.Context) error {
	return pesitConnect(ctx, n.pesitAddr())
}

func pesitConnect(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := client.Dial(ctx, pesitConfig(addr))
	if err != nil {
		return fmt.Errorf("PeSIT CONNECT to %s: %w", addr, err)
	}
	if err := s.Release(ctx); err != nil {
		return fmt.Errorf("PeSIT RELEASE at %s: %w", addr, err)
	}
	return nil
}

func pesitConfig(addr string) client.Config {
	return client.Config{
		Addr: addr, RequesterID: partnerID, ServerID: serverID, Password: partnerPass,
		DialTimeout: 3 * time.Second, Timeout: 30 * time.Second,
	}
}

// tail returns the last lines of the node's log, with runs of lines that
// differ only in their timestamp folded into one.
func (n *vnode) tail(lines int) string {
	b, err := os.ReadFile(n.logPath)
	if err != nil {
		return err.Error()
	}
	var out []string
	prev, repeat := "", 0
	flush := func() {
		if repeat > 0 {
			out = append(out, fmt.Sprintf("        (previous line repeated %d times)", repeat))
		}
		repeat = 0
	}
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		key := l
		if i := strings.IndexByte(l, ' '); strings.HasPrefix(l, "time=") && i > 0 {
			key = l[i:]
		}
		if key == prev {
			repeat++
			continue
		}
		flush()
		prev = key
		out = append(out, l)
	}
	flush()
	if len(out) > lines {
		out = out[len(out)-lines:]
	}
	return strings.Join(out, "\n")
}
