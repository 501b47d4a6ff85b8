// Package pgtest runs throwaway PostgreSQL servers for tests: initdb and
// postgres from the Debian package (or PATH), on a free loopback port, in a
// temporary directory, as the postgres system user when the tests run as root
// (initdb and postgres refuse to run as root).
//
// Start gives each test its own database on one server shared by the test
// binary; call Shutdown from TestMain after m.Run. NewServer gives a test its
// own server with Stop/Start/Restart for outage tests. VECTIS_TEST_POSTGRES_URL
// points at an existing server instead (each test then gets a fresh database
// there; NewServer skips, as it cannot stop someone else's server).
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/vectis-ft/vectis/internal/testenv"
)

// URLEnv points tests at an existing PostgreSQL server (a superuser URL).
const URLEnv = "VECTIS_TEST_POSTGRES_URL"

// Server is one PostgreSQL server process run by this package.
type Server struct {
	bin     string // directory holding initdb and postgres
	dir     string // owned temp dir: data/, sock/, postgres.log
	port    int
	cred    *syscall.Credential
	durable bool

	mu    sync.Mutex
	proc  *testenv.Process
	stdin *os.File // closing it makes the wrapper shell stop postgres
}

// Options tune NewServer.
type Options struct {
	// Durable keeps fsync on (benchmarks); the default turns it off, which
	// only matters if the machine crashes during a test.
	Durable bool
}

var (
	sharedMu  sync.Mutex
	shared    *Server
	sharedErr error
	dbSeq     atomic.Int64
)

// Start returns the URL of a new, empty database for this test, on the shared
// server (started on first use) or on $VECTIS_TEST_POSTGRES_URL. The database
// is dropped at t.Cleanup.
func Start(t testing.TB) string {
	t.Helper()
	if base := os.Getenv(URLEnv); base != "" {
		return createDatabase(t, base)
	}
	sharedMu.Lock()
	if shared == nil && sharedErr == nil {
		shared, sharedErr = newServer(Options{})
	}
	s, err := shared, sharedErr
	sharedMu.Unlock()
	if err != nil {
		if errors.Is(err, errMissing) {
			testenv.Missing(t, "%v", err)
		}
		t.Fatalf("pgtest: start shared PostgreSQL: %v", err)
	}
	return s.NewDatabase(t)
}

// Shutdown stops the shared server, if one was started. Call it from
// TestMain after m.Run.
func Shutdown() {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared != nil {
		_ = shared.stop()
		_ = os.RemoveAll(shared.dir)
		shared = nil
	}
	sharedErr = nil
}

// NewServer starts a dedicated server, stopped and removed at t.Cleanup.
func NewServer(t testing.TB, opts ...Options) *Server {
	t.Helper()
	if os.Getenv(URLEnv) != "" {
		t.Skipf("pgtest: %s is set; a dedicated server (stop/restart) needs the local binaries", URLEnv)
	}
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	s, err := newServer(o)
	if err != nil {
		if errors.Is(err, errMissing) {
			testenv.Missing(t, "%v", err)
		}
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("pgtest: stop: %v", err)
		}
		_ = os.RemoveAll(s.dir)
	})
	return s
}

var errMissing = errors.New("PostgreSQL binaries (initdb, postgres) not found")

// findBin looks on PATH / tools dirs, then in /usr/lib/postgresql/<newest>/bin.
func findBin() (string, error) {
	if p, ok := testenv.LookTool("initdb"); ok {
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("%w on PATH or in /usr/lib/postgresql/*/bin (apt-get install postgresql)", errMissing)
}

func version(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// credential returns the postgres user's credential when running as root.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("%w: running as root and there is no postgres system user to run them as", errMissing)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func newServer(o Options) (*Server, error) {
	bin, err := findBin()
	if err != nil {
		return nil, err
	}
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	// Not t.TempDir: its parents are 0700 root, which the postgres user
	// cannot traverse.
	dir, err := os.MkdirTemp("", "vectis-pg-")
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin, dir: dir, cred: cred, durable: o.Durable}
	s.proc = &testenv.Process{
		Name: "postgres", Bin: "/bin/sh", Log: filepath.Join(dir, "postgres.log"),
		Dir: dir, Env: append(os.Environ(), "LC_ALL=C", "LANG=C"), Credential: cred,
	}
	if err := s.init(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if err := s.start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "LANG=C")
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	return cmd
}

func (s *Server) init() error {
	for _, d := range []string{s.dir, filepath.Join(s.dir, "sock")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
		if s.cred != nil {
			if err := os.Chown(d, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
				return fmt.Errorf("chown %s: %w", d, err)
			}
		}
	}
	out, err := s.command("initdb", "-D", filepath.Join(s.dir, "data"), "-U", "postgres", "--auth=trust",
		"-E", "UTF8", "--no-sync", "--no-instructions").CombinedOutput()
	if err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, out)
	}
	return nil
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc.Running() {
		return errors.New("already running")
	}
	if s.port == 0 {
		p, err := testenv.FreePort()
		if err != nil {
			return err
		}
		s.port = p
	}
	args := []string{"-D", filepath.Join(s.dir, "data"), "-p", strconv.Itoa(s.port),
		"-k", filepath.Join(s.dir, "sock"), "-c", "listen_addresses=127.0.0.1",
		"-c", "max_connections=300", "-c", "shared_buffers=32MB", "-c", "log_min_messages=warning"}
	if !s.durable {
		args = append(args, "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off")
	}
	// postgres runs under a tiny shell that stops it (fast shutdown) when
	// its stdin reaches EOF, i.e. when we close the pipe or when this test
	// process dies for any reason: a crashed or timed-out test binary does
	// not leave a server behind.
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	script := `exec 3<&0; "$0" "$@" & pid=$!; (read _ <&3; kill -INT $pid 2>/dev/null) & wait $pid`
	s.proc.Args = append([]string{"-c", script, filepath.Join(s.bin, "postgres")}, args...)
	err = s.proc.Start(pr)
	pr.Close()
	if err != nil {
		pw.Close()
		return err
	}
	s.stdin = pw
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = s.proc.WaitReady(ctx, 50*time.Millisecond, func(ctx context.Context) error {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		c, err := pgx.Connect(cctx, s.URL("postgres"))
		if err != nil {
			return err
		}
		return c.Close(context.Background())
	})
	if err != nil {
		_ = s.stopLocked()
		return fmt.Errorf("%w\n%s", err, s.proc.LogTail(4000))
	}
	return nil
}

// stop asks for a fast shutdown (SIGINT: abort sessions, checkpoint, exit) and
// waits for it.
func (s *Server) stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked()
}

func (s *Server) stopLocked() error {
	err := s.proc.StopWith(30*time.Second,
		func(*exec.Cmd) { _ = s.stdin.Close() },
		func(*exec.Cmd) { s.killPostmaster() })
	if errors.Is(err, testenv.ErrKilled) {
		// A hung fast shutdown was ended by force; the data is a test's
		// and the port is free again, which is all a test needs.
		return nil
	}
	return err
}

// killPostmaster is the last resort when a fast shutdown hangs.
func (s *Server) killPostmaster() {
	b, err := os.ReadFile(filepath.Join(s.dir, "data", "postmaster.pid"))
	if err != nil {
		return
	}
	line, _, _ := strings.Cut(string(b), "\n")
	if pid, err := strconv.Atoi(strings.TrimSpace(line)); err == nil && pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// URL is the connection URL of database db on this server.
func (s *Server) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, db)
}

// Port is the server's TCP port (kept across Stop/Start).
func (s *Server) Port() int { return s.port }

// Stop shuts the server down (fast mode); connections break.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	if err := s.stop(); err != nil {
		t.Fatalf("pgtest: stop: %v", err)
	}
}

// Start starts a stopped server on the same port and data directory.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	if err := s.start(); err != nil {
		t.Fatalf("pgtest: start: %v", err)
	}
}

// Restart is Stop then Start, like pg_ctl restart -m fast.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop(t)
	s.Start(t)
}

// NewDatabase creates a fresh database, dropped at t.Cleanup, and returns its URL.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	return createDatabase(t, s.URL("postgres"))
}

var unsafeName = regexp.MustCompile(`[^a-z0-9_]+`)

func createDatabase(t testing.TB, base string) string {
	t.Helper()
	name := unsafeName.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(name) > 40 {
		name = name[:40]
	}
	name = fmt.Sprintf("t%d_%d_%s", os.Getpid(), dbSeq.Add(1), name)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, base)
		if err != nil {
			return // server stopped by the test, or gone: nothing to clean
		}
		defer c.Close(context.Background())
		_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("pgtest: parse %s: %v", URLEnv, err)
	}
	u.Path = "/" + name
	return u.String()
}
