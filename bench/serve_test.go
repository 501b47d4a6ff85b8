package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/store"
)

// This file runs `vectis serve` as users run it (a YAML file, SQLite,
// partners declared with passwords that the node stores as argon2id hashes)
// in a child process, so that its RSS is its own.

var (
	buildOnce sync.Once
	buildDir  string
	buildBin  string
	buildErr  error
)

// vectisBinary returns $VECTIS_BINARY, or builds ./cmd/vectis once per test
// binary (removed by TestMain).
func vectisBinary(t testing.TB) string {
	t.Helper()
	if b := os.Getenv("VECTIS_BINARY"); b != "" {
		return b
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "vectis-bench-bin-")
		if buildErr != nil {
			return
		}
		buildBin = filepath.Join(buildDir, "vectis")
		cmd := exec.Command("go", "build", "-o", buildBin, "github.com/vectis-ft/vectis/cmd/vectis")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/vectis: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

func removeBuild() {
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

// serveOpts shapes the configuration of one `vectis serve`.
type serveOpts struct {
	maxSessions int
	partners    []string // ids; the password of each is pw(id)
	// hashed declares the partners' passwords as argon2id hashes
	// (passwordHash) instead of in plain text (password), which every
	// node pins at start-up: the first CONNECT then pays a derivation.
	hashed bool
	extra  string // appended under vectis.pesit (e.g. limits)
	dir    string // the node's directory and file root; default a new temporary one
	bin    string // the vectis binary; default vectisBinary
}

// pw is the partner's password: PI 5 carries at most 8 characters.
func pw(id string) string { return "pw-" + strings.ToLower(id[:min(5, len(id))]) }

// served is one running `vectis serve`.
type served struct {
	cmd   *exec.Cmd
	pid   int
	pesit string // host:port
	api   string // http://host:port
	dir   string
	log   *lockedBuffer
	done  chan error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() < 4<<20 { // a flood of refusals must not fill the test's memory
		l.b.Write(p)
	}
	return len(p), nil
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startServe(t testing.TB, o serveOpts) *served {
	t.Helper()
	bin := o.bin
	if bin == "" {
		bin = vectisBinary(t)
	}
	dir := o.dir
	if dir == "" {
		dir = t.TempDir()
	}
	s := &served{pesit: testenv.FreeAddr(t), dir: dir, log: &lockedBuffer{}, done: make(chan error, 1)}
	apiAddr := testenv.FreeAddr(t)
	s.api = "http://" + apiAddr
	var partners strings.Builder
	for _, id := range o.partners {
		if !o.hashed {
			fmt.Fprintf(&partners, "      - {id: %s, password: %s, access: both}\n", id, pw(id))
			continue
		}
		h, err := store.HashPassword(pw(id))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&partners, "      - {id: %s, passwordHash: '%s', access: both}\n", id, h)
	}
	cfg := fmt.Sprintf(`vectis:
  dataDir: %[1]s/data
  fileRoot: %[1]s
  store: {driver: sqlite}
  api:
    listen: %[2]q
    users:
      - {name: admin, password: admin-secret-pw, role: admin}
  telemetry: {logFormat: json, logLevel: warn}
  pesit:
    servers:
      - {id: PESITSRV, listen: %[3]q, maxSessions: %[4]d}
    partners:
%[5]s    files:
      - {id: INBOX, direction: receive, receiveDir: %[1]s/in, namePattern: "${partner}/${file}-${transferId}"}
%[6]s`, dir, apiAddr, s.pesit, o.maxSessions, partners.String(), o.extra)
	file := filepath.Join(dir, "vectis.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command(bin, "serve", "-c", file)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.pid = s.cmd.Process.Pid
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() {
		s.stop(t)
		if t.Failed() {
			t.Logf("vectis serve log (tail):\n%s", tail(s.log.String(), 40))
		}
	})
	testenv.Eventually(t, 60*time.Second, func() error {
		select {
		case err := <-s.done:
			s.done <- err
			t.Fatalf("vectis serve exited: %v\n%s", err, s.log.String())
		default:
		}
		resp, err := http.Get(s.api + "/readyz")
		if err != nil {
			return fmt.Errorf("vectis serve /readyz: %w", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("vectis serve /readyz: %s", resp.Status)
		}
		return nil
	})
	return s
}

func (s *served) stop(t testing.TB) {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
		t.Errorf("vectis serve did not stop within 30s of SIGTERM")
	}
	s.cmd = nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// memory returns the current and peak RSS of pid, in MiB.
func memory(pid int) (rss, peak float64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		for key, dst := range map[string]*float64{"VmRSS:": &rss, "VmHWM:": &peak} {
			if v, ok := strings.CutPrefix(sc.Text(), key); ok {
				kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
				if err != nil {
					return 0, 0, err
				}
				*dst = kb / 1024
			}
		}
	}
	if peak == 0 {
		return 0, 0, errors.New("no VmHWM")
	}
	return rss, peak, nil
}

// dialFrom opens a TCP connection to addr from a given loopback source.
func dialFrom(ctx context.Context, src net.IP, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 10 * time.Second}
	return d.DialContext(ctx, "tcp", addr)
}

// rawConnect sends a CONNECT on c and returns the answer (ACONNECT or
// RCONNECT) with its diagnostic.
func rawConnect(c net.Conn, requester, password string) (fpdu.Kind, fpdu.Diagnostic, error) {
	f := fpdu.New(fpdu.Connect, 0, 1,
		fpdu.Param{ID: fpdu.PIRequesterID, Value: []byte(requester)},
		fpdu.Param{ID: fpdu.PIServerID, Value: []byte("PESITSRV")},
		fpdu.Param{ID: fpdu.PIAccessControl, Value: []byte(password)},
		fpdu.Param{ID: fpdu.PIVersion, Value: []byte{2}},
		fpdu.Param{ID: fpdu.PIAccessType, Value: []byte{0}})
	if err := fpdu.NewWriter(c).Write(f); err != nil {
		return 0, 0, err
	}
	ans, err := fpdu.NewReader(c).Next()
	if err != nil {
		return 0, 0, err
	}
	d, _ := ans.Params.Diagnostic()
	return ans.Kind, d, nil
}

// forwarder accepts on 127.0.0.1 and connects to target from src, so that
// the project's client (which has no source-address option) reaches the
// server from another loopback address.
type forwarder struct {
	ln net.Listener
	wg sync.WaitGroup
}

func newForwarder(t testing.TB, src net.IP, target string) *forwarder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarder{ln: ln}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := dialFrom(context.Background(), src, target)
			if err != nil {
				c.Close()
				continue
			}
			f.wg.Add(2)
			go func() { defer f.wg.Done(); io.Copy(up, c); up.Close() }()
			go func() { defer f.wg.Done(); io.Copy(c, up); c.Close() }()
		}
	}()
	t.Cleanup(func() { ln.Close(); f.wg.Wait() })
	return f
}

func (f *forwarder) addr() string { return f.ln.Addr().String() }
