package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/vectis-ft/vectis/api"
	"github.com/vectis-ft/vectis/internal/testenv/pgtest"
	"github.com/vectis-ft/vectis/store"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Shutdown()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// Passwords of the configured users of every test server.
const (
	adminPW    = "admin-Secret-123"
	operatorPW = "operator-Secret-123"
	viewerPW   = "viewer-Secret-123"
)

// backends runs f once per store implementation: embedded SQLite in a temp
// directory and a fresh database on a real PostgreSQL.
func backends(t *testing.T, f func(t *testing.T, st *store.Store)) {
	t.Helper()
	for _, name := range []string{store.DriverSQLite, store.DriverPostgres} {
		t.Run(name, func(t *testing.T) {
			f(t, openStore(t, name))
		})
	}
}

func openStore(t testing.TB, driver string) *store.Store {
	t.Helper()
	cfg := store.Config{Driver: driver}
	if driver == store.DriverPostgres {
		cfg.URL = pgtest.Start(t)
	} else {
		cfg.Path = filepath.Join(t.TempDir(), "vectis.db")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := store.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("open %s store: %v", driver, err)
	}
	t.Cleanup(st.Close)
	return st
}

// logBuffer captures the API's slog output for secret checks.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// clock is a settable clock for throttling and token expiry.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// leadership is the HA layer's answer, settable by the test.
type leadership struct {
	mu     sync.Mutex
	leader bool
	name   string
}

func (l *leadership) IsLeader() bool     { l.mu.Lock(); defer l.mu.Unlock(); return l.leader }
func (l *leadership) LeaderName() string { l.mu.Lock(); defer l.mu.Unlock(); return l.name }
func (l *leadership) set(leader bool, name string) {
	l.mu.Lock()
	l.leader, l.name = leader, name
	l.mu.Unlock()
}

// servers records start/stop calls as the PeSIT server manager would see them.
type servers struct {
	mu      sync.Mutex
	running map[string]bool
	calls   []string
	fail    error
}

func (s *servers) Start(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "start "+id)
	if s.fail != nil {
		return s.fail
	}
	s.running[id] = true
	return nil
}

func (s *servers) Stop(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "stop "+id)
	delete(s.running, id)
	return nil
}

func (s *servers) Running(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running[id]
}

func (s *servers) Apply(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "apply "+id)
	return nil
}

func (s *servers) ListenError(string) string { return "" }

func (s *servers) Listening(string) (string, string) { return "", "" }

// canceller stands for the PeSIT sessions: live lists the transfers that
// have a session on this node.
type canceller struct {
	mu        sync.Mutex
	live      map[string]bool
	cancelled []string
}

func (c *canceller) Cancel(_ context.Context, id string) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.live[id] {
		return false, nil
	}
	delete(c.live, id)
	c.cancelled = append(c.cancelled, id)
	return true, nil
}

type env struct {
	t        testing.TB
	st       *store.Store
	api      *api.API
	srv      *httptest.Server
	logs     *logBuffer
	clock    *clock
	leader   *leadership
	servers  *servers
	cancel   *canceller
	registry *prometheus.Registry
	ready    *readiness
}

type readiness struct {
	mu  sync.Mutex
	err error
}

func (r *readiness) Ready(context.Context) error { r.mu.Lock(); defer r.mu.Unlock(); return r.err }

type envOption func(*api.Config)

// staticUsers are the configured users of every test server, hashed once
// per test binary (argon2id is deliberately slow).
var staticUsers = sync.OnceValue(func() []api.StaticUser {
	users := []api.StaticUser{
		{Name: "admin", Password: adminPW, Role: store.RoleAdmin},
		{Name: "operator", Password: operatorPW, Role: store.RoleOperator},
		{Name: "viewer", Password: viewerPW, Role: store.RoleViewer},
	}
	for i := range users {
		h, err := store.HashPassword(users[i].Password)
		if err != nil {
			panic(err)
		}
		users[i].Password, users[i].PasswordHash = "", h
	}
	return users
})

// newEnv serves the API backed by st on a real loopback listener.
func newEnv(t testing.TB, st *store.Store, opts ...envOption) *env {
	t.Helper()
	e := &env{
		t: t, st: st, logs: &logBuffer{},
		clock:    &clock{t: time.Now()},
		leader:   &leadership{leader: true, name: "vectis-0"},
		servers:  &servers{running: map[string]bool{}},
		cancel:   &canceller{live: map[string]bool{}},
		registry: prometheus.NewRegistry(),
		ready:    &readiness{},
	}
	cfg := api.Config{
		Store:      st,
		Cluster:    api.Standalone{ClusterName: "vectis-cluster", Name: "vectis-0", Address: "10.0.0.10"},
		Leadership: e.leader,
		Servers:    e.servers,
		Canceller:  e.cancel,
		Readiness:  e.ready,
		Users:      staticUsers(),
		Metrics:    e.registry,
		Logger:     slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		LoginBurst: 5,
		Now:        e.clock.Now,
	}
	for _, o := range opts {
		o(&cfg)
	}
	a, err := api.New(cfg)
	if err != nil {
		t.Fatalf("api.New: %v", err)
	}
	e.api = a
	e.srv = httptest.NewServer(a)
	t.Cleanup(e.srv.Close)
	return e
}

// response is a completed request.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("response %d is not JSON: %v: %s", r.status, err, r.body)
	}
}

func (r response) errorCode(t *testing.T) string {
	t.Helper()
	var e struct{ Error, Message string }
	r.json(t, &e)
	if e.Error == "" || e.Message == "" {
		t.Fatalf("error response without error/message: %s", r.body)
	}
	return e.Error
}

// cred is who makes a request: a configured user, basic credentials or a token.
type cred struct {
	user, password string
	token          string
}

var (
	anon     = cred{}
	asAdmin  = cred{user: "admin", password: adminPW}
	asOper   = cred{user: "operator", password: operatorPW}
	asViewer = cred{user: "viewer", password: viewerPW}
)

func roleCred(role store.Role) cred {
	switch role {
	case store.RoleAdmin:
		return asAdmin
	case store.RoleOperator:
		return asOper
	case store.RoleViewer:
		return asViewer
	}
	return anon
}

// do sends a request; body is JSON-encoded unless it is a string or nil.
func (e *env) do(c cred, method, path string, body any) response {
	e.t.Helper()
	return e.doClient(http.DefaultClient, c, method, path, body, nil)
}

func (e *env) doClient(client *http.Client, c cred, method, path string, body any, hdr map[string]string) response {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	switch {
	case c.token != "":
		req.Header.Set("Authorization", "Bearer "+c.token)
	case c.user != "" || c.password != "":
		req.SetBasicAuth(c.user, c.password)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// must sends a request and fails the test unless the status is want.
func (e *env) must(want int, c cred, method, path string, body any) response {
	e.t.Helper()
	r := e.do(c, method, path, body)
	if r.status != want {
		e.t.Fatalf("%s %s as %q: status %d, want %d: %s", method, path, c.user, r.status, want, r.body)
	}
	return r
}

// clientFrom returns a client whose connections come from the given
// loopback address, to test per-address throttling.
func clientFrom(t *testing.T, ip string) *http.Client {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// claim makes this test's node the leader in the store, so that it may
// record transfers.
func claim(t *testing.T, st *store.Store) int64 {
	t.Helper()
	if err := st.ClaimLeadership(context.Background(), 1, "vectis-0"); err != nil {
		t.Fatalf("claim leadership: %v", err)
	}
	return 1
}

func newTransfer(t *testing.T, st *store.Store, tr store.Transfer) store.Transfer {
	t.Helper()
	if tr.ServerID == "" {
		tr.ServerID = "PESITSRV"
	}
	if tr.Direction == "" {
		tr.Direction = store.DirReceive
	}
	out, err := st.CreateTransfer(context.Background(), 1, tr)
	if err != nil {
		t.Fatalf("create transfer: %v", err)
	}
	return out
}
