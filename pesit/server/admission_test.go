package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/server"
	"github.com/vectis-ft/vectis/pesit/server/memjournal"
)

// fakeChecker stands for the node's bounded credential verifier: it counts
// the derivations it would run and calls the server's gate and callback as
// the real one does.
type fakeChecker struct {
	mu       sync.Mutex
	derived  int
	unknowns int
	gated    int
}

func (c *fakeChecker) CheckPassword(_ context.Context, r server.PasswordRequest) server.PasswordVerdict {
	if r.Gate != nil && !r.Gate() {
		c.mu.Lock()
		c.gated++
		c.mu.Unlock()
		return server.PasswordThrottled
	}
	c.mu.Lock()
	c.derived++
	if !r.Known {
		c.unknowns++
	}
	c.mu.Unlock()
	ok := r.Known && r.Password == password
	if r.OnDerived != nil {
		r.OnDerived(ok)
	}
	if ok {
		return server.PasswordAccepted
	}
	return server.PasswordRejected
}

func (c *fakeChecker) counts() (derived, unknowns, gated int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.derived, c.unknowns, c.gated
}

type loginLog struct {
	mu     sync.Mutex
	events []server.LoginEvent
}

func (l *loginLog) add(_ context.Context, ev server.LoginEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, ev)
}

func (l *loginLog) all() []server.LoginEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]server.LoginEvent(nil), l.events...)
}

// startServer runs a server with deps beyond newEnv's: a password checker
// and a login recorder.
func startServer(t *testing.T, mod func(*server.Config), deps server.Deps) (*server.Server, *memjournal.Directory) {
	t.Helper()
	cfg := testConfig()
	if mod != nil {
		mod(&cfg)
	}
	dir := &memjournal.Directory{}
	var calls atomic.Int64
	dir.AddPartner(server.Partner{ID: partnerID, Enabled: true, Access: server.AccessBoth, VerifyPassword: func(s string) bool {
		calls.Add(1)
		return s == password
	}})
	deps.Directory, deps.Journal = dir, &memjournal.Journal{}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	srv, err := server.New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return srv, dir
}

func refusedWith(t *testing.T, f *fpdu.FPDU, want fpdu.Diagnostic) {
	t.Helper()
	d, _ := f.Params.Diagnostic()
	if f.Kind != fpdu.RConnect || d != want {
		t.Fatalf("CONNECT answered %v %v, want RCONNECT %v", f.Kind, d, want)
	}
}

// Regression for issue 16 defect 1 / issue 17 item 3: a CONNECT that the
// session limits refuse costs no password work.
func TestSessionLimitBeforePasswordWork(t *testing.T) {
	chk := &fakeChecker{}
	srv, dir := startServer(t, func(c *server.Config) { c.MaxSessions = 1 }, server.Deps{Passwords: chk})
	dir.AddPartner(server.Partner{ID: "ONEONLY", Enabled: true, Access: server.AccessBoth, MaxSessions: 1})
	a := dial(t, srv.Addr())
	a.connect()
	if d, _, _ := chk.counts(); d != 1 {
		t.Fatalf("derivations after one login = %d", d)
	}
	for range 5 {
		b := dial(t, srv.Addr())
		refusedWith(t, b.connectWith(serverID, partnerID, "guess", 2, 2), fpdu.DiagTooManyConnections)
		c := dial(t, srv.Addr())
		refusedWith(t, c.connectWith(serverID, "NOSUCH", "guess", 2, 2), fpdu.DiagTooManyConnections)
	}
	if d, _, _ := chk.counts(); d != 1 {
		t.Errorf("derivations after 10 CONNECTs refused by the session limit = %d, want still 1", d)
	}
	a.release()
}

// Regression for issue 16 defect 3: an unknown or disabled partner goes
// through the same password check (against a dummy) as a known one, so its
// refusal costs the same; the answer is the same 3/304.
func TestUnknownPartnerCostsAPasswordCheck(t *testing.T) {
	chk := &fakeChecker{}
	srv, dir := startServer(t, nil, server.Deps{Passwords: chk})
	dir.AddPartner(server.Partner{ID: "OFF", Enabled: false, Access: server.AccessBoth})
	for _, id := range []string{"NOSUCH", "OFF"} {
		p := dial(t, srv.Addr())
		refusedWith(t, p.connectWith(serverID, id, "guess", 2, 2), fpdu.DiagNotAuthorised)
	}
	if d, u, _ := chk.counts(); d != 2 || u != 2 {
		t.Errorf("derivations %d (unknown %d), want 2 dummy derivations", d, u)
	}
}

// Regression for issue 16 defect 3: failed logins are throttled per address
// and per partner; a throttled login is refused with no derivation and its
// answer is held. Every login decision that cost a derivation is recorded.
func TestLoginThrottleAndAudit(t *testing.T) {
	chk := &fakeChecker{}
	logins := &loginLog{}
	reg := prometheus.NewRegistry()
	srv, _ := startServer(t, func(c *server.Config) {
		c.LoginBurst, c.LoginRefill, c.MaxThrottleDelay = 3, time.Hour, 300*time.Millisecond
	}, server.Deps{Passwords: chk, OnLogin: logins.add, Metrics: server.NewMetrics(reg)})
	good := dial(t, srv.Addr())
	good.connect()
	good.release()
	for i := range 8 {
		p := dial(t, srv.Addr())
		start := time.Now()
		refusedWith(t, p.connectWith(serverID, partnerID, "guess", 2, 2), fpdu.DiagNotAuthorised)
		if i >= 3 && time.Since(start) < 250*time.Millisecond {
			t.Errorf("throttled login %d answered after %v, want held ~300ms", i, time.Since(start))
		}
	}
	d, _, g := chk.counts()
	if d != 4 || g != 5 {
		t.Errorf("derivations %d, throttled %d; want 1+3 derivations then 5 throttled", d, g)
	}
	ev := logins.all()
	if len(ev) != 4 || !ev[0].OK || ev[1].OK || ev[0].Partner != partnerID || ev[1].Address != "127.0.0.1" || ev[1].Reason != "bad credentials" {
		t.Errorf("login events %+v: want 1 success then 3 failures from 127.0.0.1", ev)
	}
	// Another address is still throttled for this partner (a distributed
	// guess), and a third partner from a fresh address is not.
	od := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 3)}}
	other, err := od.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	q := newPeer(t, other)
	refusedWith(t, q.connectWith(serverID, partnerID, password, 2, 2), fpdu.DiagNotAuthorised)
	if _, _, g := chk.counts(); g != 6 {
		t.Errorf("throttled = %d after a login from another address for the same partner, want 6", g)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() == "vectis_pesit_logins_total" {
			for _, m := range mf.GetMetric() {
				got[labelString(m.GetLabel())] = m.GetCounter().GetValue()
			}
		}
	}
	if got[`result="success",server="PESITSRV"`] != 1 || got[`result="failure",server="PESITSRV"`] != 3 || got[`result="throttled",server="PESITSRV"`] != 6 {
		t.Errorf("vectis_pesit_logins_total = %v", got)
	}
}

// Regression for issue 16 defect 4: idle sockets from one address cannot
// take every slot; another address still connects. And an idle socket is
// closed after the first-FPDU timeout, not after Tc.
func TestPerAddressLimitAndFirstFPDUTimeout(t *testing.T) {
	srv, _ := startServer(t, func(c *server.Config) {
		c.MaxSessions = 4 // global cap 2*4+16 = 24 raw connections
		c.MaxConnsPerAddr = 5
		c.ConnectTimeout = 30 * time.Second
		c.FirstFPDUTimeout = 500 * time.Millisecond
	}, server.Deps{})
	from := func(ip byte) (net.Conn, error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, ip)}, Timeout: 2 * time.Second}
		return d.Dial("tcp", srv.Addr().String())
	}
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for range 40 {
		c, err := from(2)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	c, err := from(3)
	if err != nil {
		t.Fatal(err)
	}
	p := newPeer(t, c)
	p.connect()
	p.release()
	// The 35 beyond the limit are closed at once, before a byte is read or
	// written: they see EOF and nothing else. The 5 admitted are dropped
	// after the first-FPDU timeout (500ms), with ABORT 3/317, far before
	// Tc (30s), which the read deadline would meet first.
	deadline := time.Now().Add(5 * time.Second)
	var dropped, aborted int
	for i, c := range idle {
		c.SetReadDeadline(deadline)
		b, err := io.ReadAll(c)
		switch {
		case err != nil:
			t.Errorf("idle socket %d still open after 5s: %v (%d bytes)", i, err, len(b))
		case len(b) == 0:
			dropped++
		default:
			aborted++
		}
	}
	if dropped != 35 || aborted != 5 {
		t.Errorf("of 40 idle sockets from one address, %d closed without a word and %d after an ABORT; want 35 and 5", dropped, aborted)
	}
}

// Regression for issue 16 defect 2: diagnostics from a peer's ABORT are
// labelled only when the spec lists them; any other code is "other". Before
// the fix each invented code made a new series of
// vectis_pesit_diagnostics_total.
func TestPeerDiagnosticsKeepMetricsBounded(t *testing.T) {
	e := newEnv(t, nil)
	for i := range 60 {
		p := dial(t, e.srv.Addr())
		p.connect()
		d := fpdu.Diagnostic(uint32(1+i%3)<<16 | uint32(4000+i*997)) // unlisted
		if i%10 == 0 {
			d = fpdu.DiagTransmissionError
		}
		p.sendKind(fpdu.Abort, diagParam(d))
		p.expectClosed()
	}
	testenv.Eventually(t, 5*time.Second, testenv.Awaiting("60 aborts counted", func() bool {
		var n float64
		for k, v := range gather(t, e) {
			if strings.HasPrefix(k, "vectis_pesit_diagnostics_total") {
				n += v
			}
		}
		return n == 60
	}))
	series := map[string]float64{}
	for k, v := range gather(t, e) {
		if strings.HasPrefix(k, "vectis_pesit_diagnostics_total") {
			series[k] = v
		}
	}
	if len(series) != 2 {
		t.Errorf("diagnostics series %v, want 1/100 and other", series)
	}
}

// slowChecker holds the check of the password "slow" until release is
// closed, as a derivation queued behind a flood would be.
type slowChecker struct {
	started chan struct{}
	release chan struct{}
}

func (c *slowChecker) CheckPassword(_ context.Context, r server.PasswordRequest) server.PasswordVerdict {
	if r.Password == "slow" {
		close(c.started)
		<-c.release
		return server.PasswordRejected
	}
	if r.Known && r.Password == "pw" {
		return server.PasswordAccepted
	}
	return server.PasswordRejected
}

// A CONNECT whose password check is pending does not hold a session slot
// of its partner: the session limits are checked before the password work
// but the slot is taken only once authenticated, so a guesser cannot lock a
// partner out with 3/309 while its answers wait.
func TestPendingLoginHoldsNoSlot(t *testing.T) {
	chk := &slowChecker{started: make(chan struct{}), release: make(chan struct{})}
	srv, dir := startServer(t, nil, server.Deps{Passwords: chk})
	dir.AddPartner(server.Partner{ID: "ONEONLY", Enabled: true, Access: server.AccessBoth, MaxSessions: 1})
	guesser := dial(t, srv.Addr())
	done := make(chan *fpdu.FPDU, 1)
	go func() { done <- guesser.connectWith(serverID, "ONEONLY", "slow", 2, 2) }()
	<-chk.started
	ld := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 3)}}
	lc, err := ld.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	legit := newPeer(t, lc)
	if f := legit.connectWith(serverID, "ONEONLY", "pw", 2, 2); f.Kind != fpdu.AConnect {
		d, _ := f.Params.Diagnostic()
		t.Errorf("partner's CONNECT while a guess is pending: %v %v, want ACONNECT", f.Kind, d)
	}
	close(chk.release)
	refusedWith(t, <-done, fpdu.DiagNotAuthorised)
	legit.release()
}

// countingChecker records how many derivations run at once.
type countingChecker struct {
	cur, peak atomic.Int64
	calls     atomic.Int64
}

func (c *countingChecker) CheckPassword(_ context.Context, r server.PasswordRequest) server.PasswordVerdict {
	// As the node's checker: a cache miss takes the address's turn.
	release, ok := r.Turn()
	if !ok {
		return server.PasswordBusy
	}
	defer release()
	c.calls.Add(1)
	n := c.cur.Add(1)
	defer c.cur.Add(-1)
	for p := c.peak.Load(); n > p && !c.peak.CompareAndSwap(p, n); p = c.peak.Load() {
	}
	// A derivation takes time, and the hold is what the test needs: only
	// checks that last can overlap, so without it serialized and
	// concurrent checks would look alike.
	time.Sleep(20 * time.Millisecond)
	if r.Known && r.Password == password {
		return server.PasswordAccepted
	}
	return server.PasswordRejected
}

// The password checks of one address run one at a time, so that a flood
// from one address queues one derivation for the node's slots, not all of
// its CONNECTs; another address is not serialized with it.
func TestPasswordChecksSerializedPerAddress(t *testing.T) {
	chk := &countingChecker{}
	srv, _ := startServer(t, func(c *server.Config) { c.LoginBurst = 1000 }, server.Deps{Passwords: chk})
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", srv.Addr().String())
			if err != nil {
				t.Error(err)
				return
			}
			p := newPeer(t, c)
			pw := fmt.Sprintf("guess%d", i)
			refusedWith(t, p.connectWith(serverID, partnerID, pw, 2, 2), fpdu.DiagNotAuthorised)
		}()
	}
	wg.Wait()
	if chk.calls.Load() != 10 || chk.peak.Load() != 1 {
		t.Errorf("%d checks, at most %d at once from one address; want 10, 1", chk.calls.Load(), chk.peak.Load())
	}
}
