package election

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/internal/testenv/etcdtest"
	"github.com/vectis-ft/vectis/internal/testenv/faultproxy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newMember(t *testing.T, endpoints []string, name string, ttl time.Duration) *Member {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := New(ctx, Config{
		Endpoints: endpoints,
		TTL:       ttl,
		Cluster:   "test",
		Name:      name,
		Address:   name + ":5000",
		Logger:    slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatalf("New(%s): %v", name, err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

type result struct {
	l   *Leadership
	err error
	at  time.Time
}

func campaignAsync(ctx context.Context, m *Member) <-chan result {
	ch := make(chan result, 1)
	go func() {
		l, err := m.Campaign(ctx)
		ch <- result{l, err, time.Now()}
	}()
	return ch
}

// waitKeys waits until n election keys exist, i.e. n campaigns have queued.
func waitKeys(t *testing.T, cli *clientv3.Client, n int) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() error {
		resp, err := cli.Get(context.Background(), ElectionPrefix("test")+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return err
		}
		if resp.Count != int64(n) {
			return fmt.Errorf("%d election keys, want %d", resp.Count, n)
		}
		return nil
	})
}

func mustNotReturn(t *testing.T, ch <-chan result, d time.Duration, what string) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("%s returned early: leadership=%v err=%v", what, r.l != nil, r.err)
	case <-time.After(d):
	}
}

func mustWin(t *testing.T, ch <-chan result, what string) result {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("%s: %v", what, r.err)
		}
		return r
	case <-time.After(15 * time.Second):
		t.Fatalf("%s did not win", what)
	}
	return result{}
}

// TestQueueResignEpochs: the first to campaign wins, the others queue in
// order, a resign hands over at once, and epochs only grow.
func TestQueueResignEpochs(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{Size: 3})
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	names := []string{"a", "b", "c"}
	var ms []*Member
	var chs []<-chan result
	for i, n := range names {
		m := newMember(t, c.Endpoints(), n, 3*time.Second)
		ms = append(ms, m)
		chs = append(chs, campaignAsync(ctx, m))
		waitKeys(t, cli, i+1)
	}
	first := mustWin(t, chs[0], "a")
	mustNotReturn(t, chs[1], 300*time.Millisecond, "b's campaign")
	mustNotReturn(t, chs[2], 0, "c's campaign")

	if _, err := ms[0].Campaign(ctx); !errors.Is(err, ErrBusy) {
		t.Fatalf("second campaign on a leading member: %v, want ErrBusy", err)
	}
	got, err := ms[2].Leader(ctx)
	if err != nil || got.Name != "a" || got.Epoch != first.l.Epoch() {
		t.Fatalf("Leader() = %+v, %v; want a at epoch %d", got, err, first.l.Epoch())
	}

	prev := first.l
	for i := 1; i < len(names); i++ {
		start := time.Now()
		if err := prev.Resign(ctx); err != nil {
			t.Fatal(err)
		}
		if !errors.Is(prev.Err(), ErrResigned) {
			t.Fatalf("resigned leadership Err = %v", prev.Err())
		}
		r := mustWin(t, chs[i], names[i])
		handover := r.at.Sub(start)
		t.Logf("resign %s -> %s elected in %v", names[i-1], names[i], handover)
		if handover > time.Second {
			t.Errorf("handover took %v, want one round trip", handover)
		}
		if r.l.Epoch() <= prev.Epoch() {
			t.Fatalf("epoch went from %d to %d", prev.Epoch(), r.l.Epoch())
		}
		if i+1 < len(names) {
			mustNotReturn(t, chs[i+1], 100*time.Millisecond, names[i+1]+"'s campaign")
		}
		prev = r.l
	}

	// The first member campaigns again on the same session: it queues
	// behind c and its new term gets a higher epoch.
	again := campaignAsync(ctx, ms[0])
	waitKeys(t, cli, 2)
	if err := prev.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	r := mustWin(t, again, "a again")
	if r.l.Epoch() <= prev.Epoch() {
		t.Fatalf("epoch went from %d to %d", prev.Epoch(), r.l.Epoch())
	}
	if err := r.l.Resign(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestMembership: the member key appears with New, carries the JSON
// record, vanishes at Close, and vanishes by itself when the lease expires.
func TestMembership(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{Size: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := newMember(t, c.Endpoints(), "a", 2*time.Second)
	b := newMember(t, c.Endpoints(), "b", 2*time.Second)
	ms, err := a.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].Name != "a" || ms[0].Address != "a:5000" || ms[0].StartedAt.IsZero() || ms[1].Name != "b" {
		t.Fatalf("members = %+v", ms)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	ms, err = a.Members(ctx)
	if err != nil || len(ms) != 1 || ms[0].Name != "a" {
		t.Fatalf("after b.Close members = %+v, %v", ms, err)
	}

	// Lease gone behind the member's back (an operator revoking it): the
	// key vanishes and the member notices at its next renewal.
	view := NewView(c.Client(t), "test")
	if _, err := c.Client(t).Revoke(ctx, a.Lease()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("member did not notice its revoked lease")
	}
	if !errors.Is(a.Err(), ErrLeaseExpired) {
		t.Fatalf("Err = %v, want ErrLeaseExpired", a.Err())
	}
	ms, err = view.Members(ctx)
	if err != nil || len(ms) != 0 {
		t.Fatalf("after revoke members = %+v, %v", ms, err)
	}
}

// TestSessionLossDeadline cuts the leader off etcd with a TCP proxy that
// drops everything. The leader must give up (Done) on its own deadline,
// while etcd still holds its lease, and a standby must win only after that.
func TestSessionLossDeadline(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{Size: 3})
	var proxied []string
	var proxies []*faultproxy.Proxy
	for _, m := range c.Members() {
		p := faultproxy.New(t, strings.TrimPrefix(m.ClientURL, "http://"))
		proxies = append(proxies, p)
		proxied = append(proxied, p.URL())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const ttl = 3 * time.Second
	leader := newMember(t, proxied, "leader", ttl)
	standby := newMember(t, c.Endpoints(), "standby", ttl)
	l := mustWin(t, campaignAsync(ctx, leader), "leader").l
	sch := campaignAsync(ctx, standby)
	waitKeys(t, c.Client(t), 2)

	observer := c.Client(t)
	cutAt := time.Now()
	for _, p := range proxies {
		p.Cut()
	}
	var doneAt time.Time
	select {
	case <-l.Done():
		doneAt = time.Now()
	case r := <-sch:
		t.Fatalf("standby won (err %v) while the old leader was still leading", r.err)
	case <-time.After(2 * ttl):
		t.Fatal("leader kept leading after losing etcd")
	}
	// What etcd thinks of the lease at the moment the leader gave up: it
	// must still exist (TTL -1 means expired).
	ttlResp, err := observer.TimeToLive(ctx, leader.Lease())
	if err != nil {
		t.Fatal(err)
	}
	if ttlResp.TTL < 0 {
		t.Fatalf("etcd had already expired the lease when the leader gave up")
	}
	testenv.Eventually(t, 2*ttl, func() error {
		resp, err := observer.TimeToLive(ctx, leader.Lease())
		if err != nil {
			return err
		}
		if resp.TTL >= 0 {
			return fmt.Errorf("lease %x lives on, TTL %d s", leader.Lease(), resp.TTL)
		}
		return nil
	})
	expiredAt := time.Now()
	last := leader.LastRenewal()
	t.Logf("cut -> leader Done in %v (last renewal %v before the cut); leader Done -> etcd lease expiry seen %v",
		doneAt.Sub(cutAt).Round(time.Millisecond), cutAt.Sub(last).Round(time.Millisecond), expiredAt.Sub(doneAt).Round(time.Millisecond))
	if !errors.Is(l.Err(), ErrDeadlineExceeded) {
		t.Fatalf("Err = %v, want ErrDeadlineExceeded", l.Err())
	}
	// Safety, as an order: the leader gave up before the earliest instant
	// etcd could expire its lease, its last answered renewal + TTL.
	if !doneAt.Before(last.Add(ttl)) {
		t.Fatalf("leader gave up %v after its last renewal, at or after the lease could expire (TTL %v)", doneAt.Sub(last), ttl)
	}
	r := mustWin(t, sch, "standby")
	t.Logf("leader Done -> standby elected in %v (lease expiry on the etcd side)", r.at.Sub(doneAt))
	if !r.at.After(doneAt) {
		t.Fatal("standby elected before the old leader stopped")
	}
	if r.l.Epoch() <= l.Epoch() {
		t.Fatalf("epoch went from %d to %d", l.Epoch(), r.l.Epoch())
	}
	// The lost member's registration went with its lease.
	if ms, err := standby.Members(ctx); err != nil || len(ms) != 1 || ms[0].Name != "standby" {
		t.Fatalf("members after the leader's lease expired = %+v, %v", ms, err)
	}
	if _, err := leader.Campaign(ctx); err == nil {
		t.Fatal("campaign on a lost session succeeded")
	}
}

// TestSurvivesEtcdMemberLoss hangs (SIGSTOP) the etcd raft leader, which
// the client also talks to, for two TTLs: leadership must hold, with the
// default TTL. Then it kills another member, losing quorum: the leader's
// deadline must pass within the TTL.
func TestSurvivesEtcdMemberLoss(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{Size: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	leader := newMember(t, c.Endpoints(), "leader", 0)
	standby := newMember(t, c.Endpoints(), "standby", 0)
	l := mustWin(t, campaignAsync(ctx, leader), "leader").l
	sch := campaignAsync(ctx, standby)
	waitKeys(t, c.Client(t), 2)

	raftLeader, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := raftLeader.Pause(); err != nil {
		t.Fatal(err)
	}
	t.Logf("paused etcd raft leader %s", raftLeader.Name)
	hold := 2 * DefaultTTL
	select {
	case <-l.Done():
		t.Fatalf("leadership lost after an etcd member hung: %v", l.Err())
	case r := <-sch:
		t.Fatalf("standby won (err %v) after an etcd member hung", r.err)
	case <-time.After(hold):
	}
	t.Logf("leadership held for %v with the etcd leader hung; %d lease renewals failed over to another member",
		hold, leader.RenewalFailures())
	if got, err := standby.Leader(ctx); err != nil || got.Name != "leader" || got.Epoch != l.Epoch() {
		t.Fatalf("Leader() = %+v, %v after member loss", got, err)
	}

	// Quorum loss: a second member dies.
	var other *etcdtest.Member
	for _, m := range c.Members() {
		if m != raftLeader {
			other = m
			break
		}
	}
	lossAt := time.Now()
	if err := other.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Done():
	case <-time.After(2 * DefaultTTL):
		t.Fatal("leader kept leading without quorum")
	}
	doneAt := time.Now()
	last := leader.LastRenewal()
	margin := DefaultTTL / 5
	t.Logf("quorum lost -> leader Done in %v; last answered renewal sent %v after the loss; Done %v after it",
		doneAt.Sub(lossAt).Round(time.Millisecond), last.Sub(lossAt).Round(time.Millisecond), doneAt.Sub(last).Round(time.Millisecond))
	if !errors.Is(l.Err(), ErrDeadlineExceeded) {
		t.Fatalf("Err = %v, want ErrDeadlineExceeded", l.Err())
	}
	// Safety, as an order: the leader stopped before the earliest instant
	// etcd could expire its lease, its last answered renewal + TTL (it
	// aims at TTL - margin, %v here).
	if !doneAt.Before(last.Add(DefaultTTL)) {
		t.Fatalf("leader stopped %v after its last renewal, at or after the lease could expire (TTL %v, margin %v)", doneAt.Sub(last), DefaultTTL, margin)
	}
	// How soon after the quorum loss is logged above: an etcd leader that
	// lost quorum keeps answering renewals until CheckQuorum demotes it
	// (one election timeout), then TTL - margin runs out.
	_ = raftLeader.Resume()
}

// TestObserve: Observe reports the leader, each change, and "no leader".
func TestObserve(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{Size: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	view := NewView(c.Client(t), "test")
	if _, err := view.Leader(ctx); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("Leader() on an empty cluster: %v, want ErrNoLeader", err)
	}
	octx, ocancel := context.WithCancel(ctx)
	obs := view.Observe(octx)
	next := func(want string) LeaderInfo {
		t.Helper()
		select {
		case li := <-obs:
			if li.Name != want {
				t.Fatalf("observed leader %q, want %q", li.Name, want)
			}
			return li
		case <-time.After(5 * time.Second):
			t.Fatalf("no observation, want %q", want)
		}
		return LeaderInfo{}
	}
	next("")
	a := newMember(t, c.Endpoints(), "a", 2*time.Second)
	b := newMember(t, c.Endpoints(), "b", 2*time.Second)
	la := mustWin(t, campaignAsync(ctx, a), "a").l
	if li := next("a"); li.Epoch != la.Epoch() {
		t.Fatalf("observed epoch %d, want %d", li.Epoch, la.Epoch())
	}
	bch := campaignAsync(ctx, b)
	waitKeys(t, c.Client(t), 2)
	if err := la.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	mustWin(t, bch, "b")
	next("b")
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	next("")
	ocancel()
	for range obs {
	}
}

func TestConfigValidation(t *testing.T) {
	good := Config{Endpoints: []string{"http://127.0.0.1:1"}, Cluster: "c", Name: "n"}
	for _, tc := range []struct {
		name string
		edit func(*Config)
	}{
		{"ttl below minimum", func(c *Config) { c.TTL = time.Second }},
		{"fractional ttl", func(c *Config) { c.TTL = 2500 * time.Millisecond }},
		{"no endpoints", func(c *Config) { c.Endpoints = nil }},
		{"no cluster", func(c *Config) { c.Cluster = "" }},
		{"slash in name", func(c *Config) { c.Name = "a/b" }},
		{"cert without key", func(c *Config) { c.CertFile = "x.pem" }},
		{"margin too large", func(c *Config) { c.TTL, c.Margin = 4*time.Second, 2*time.Second }},
		{"confirm window below minimum", func(c *Config) { c.ConfirmWindow = MinConfirmWindow - time.Millisecond }},
		{"confirm window at TTL/2", func(c *Config) { c.ConfirmWindow = DefaultTTL / 2 }},
		{"liveness without a confirm window", func(c *Config) { c.Liveness = "127.0.0.1:7947" }},
	} {
		cfg := good
		tc.edit(&cfg)
		if _, err := New(context.Background(), cfg); err == nil {
			t.Errorf("%s: New accepted %+v", tc.name, cfg)
		}
	}
	cfg, err := good.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TTL != DefaultTTL || cfg.Margin != DefaultTTL/5 {
		t.Fatalf("defaults: TTL %v margin %v", cfg.TTL, cfg.Margin)
	}
}

// TestEtcdctlShowsLeader checks the two shell commands the package doc
// gives for finding the leader, and that deleting the leader key by hand
// ends the leadership.
func TestEtcdctlShowsLeader(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{Size: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := newMember(t, c.Endpoints(), "a", 2*time.Second)
	b := newMember(t, c.Endpoints(), "b", 2*time.Second)
	la := mustWin(t, campaignAsync(ctx, a), "a").l
	bch := campaignAsync(ctx, b)
	waitKeys(t, c.Client(t), 2)

	out, err := c.Ctl(ctx, "get", "--prefix", ElectionPrefix("test")+"/", "--sort-by=CREATE", "--order=ASCEND", "--limit=1", "--print-value-only")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != "a" {
		t.Fatalf("etcdctl get leader = %q, want a", out)
	}
	// `elect -l` keeps listening; stop it after the first answer.
	ectx, ecancel := context.WithTimeout(ctx, 2*time.Second)
	out, _ = c.Ctl(ectx, "elect", "-l", ElectionPrefix("test"))
	ecancel()
	if lines := strings.Fields(out); len(lines) < 2 || lines[0] != la.Key() || lines[1] != "a" {
		t.Fatalf("etcdctl elect -l = %q, want %s and a", out, la.Key())
	}

	if _, err := c.Ctl(ctx, "del", la.Key()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-la.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("leadership survived the deletion of its key")
	}
	if !errors.Is(la.Err(), ErrKeyDeleted) {
		t.Fatalf("Err = %v, want ErrKeyDeleted", la.Err())
	}
	mustWin(t, bch, "b")
}

// TestTLSAndAuth: a member reaches etcd over TLS with a client
// certificate, authenticates as a user whose role only covers its
// cluster's keys, and is refused with a wrong password.
func TestTLSAndAuth(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{Size: 1, TLS: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, args := range [][]string{
		{"user", "add", "root", "--no-password"},
		{"role", "add", "vectis"},
		{"role", "grant-permission", "vectis", "--prefix=true", "readwrite", "/vectis/test/"},
		{"user", "add", "vectis:s3cret"},
		{"user", "grant-role", "vectis", "vectis"},
		{"auth", "enable"},
	} {
		if _, err := c.Ctl(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}
	cfg := Config{
		Endpoints: c.Endpoints(),
		Cluster:   "test",
		Name:      "a",
		TTL:       2 * time.Second,
		CAFile:    c.TLS.CAFile,
		CertFile:  c.TLS.ClientCert,
		KeyFile:   c.TLS.ClientKey,
		Username:  "vectis",
		Password:  "s3cret",
		Logger:    slog.New(slog.DiscardHandler),
	}
	m, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	l, err := m.Campaign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := m.Leader(ctx); err != nil || info.Name != "a" {
		t.Fatalf("Leader() = %+v, %v", info, err)
	}
	if err := l.Resign(ctx); err != nil {
		t.Fatal(err)
	}

	bad := cfg
	bad.Name, bad.Password = "b", "wrong"
	if m, err := New(ctx, bad); err == nil {
		m.Close()
		t.Fatal("wrong password accepted")
	}
	// Another cluster's keys are outside the role.
	other := cfg
	other.Cluster, other.Name = "other", "c"
	if m, err := New(ctx, other); err == nil {
		m.Close()
		t.Fatal("registration outside the role's prefix accepted")
	}
}

// TestConfirmWindow: with a confirmation window, a leader whose reads stop
// being answered (the only etcd member hung) counts itself invalid within
// the window, long before its lease deadline, and valid again once etcd
// answers; and a leader whose key is deleted ends its leadership.
func TestConfirmWindow(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{Size: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const w = 300 * time.Millisecond
	m, err := New(ctx, Config{
		Endpoints: c.Endpoints(), TTL: 5 * time.Second, ConfirmWindow: w,
		Liveness: "127.0.0.1:1", // published only; nobody follows it here
		Cluster:  "test", Name: "leader", Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	l := mustWin(t, campaignAsync(ctx, m), "leader").l
	if !l.Valid() {
		t.Fatal("a fresh leadership is not valid")
	}
	// The member key publishes the window, which the next leader waits
	// out after revoking this one (package ha).
	if mi, _, err := m.View.Member(ctx, "leader"); err != nil || mi.ConfirmWindow() != w {
		t.Fatalf("published confirm window %v (%v), want %v", mi.ConfirmWindow(), err, w)
	}
	if err := c.Member(0).Pause(); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	// Invalid before the lease could run out (the TTL after the last
	// renewal), though nothing but the window tells it so; how soon is
	// logged.
	if err := testenv.Poll(time.Until(m.LastRenewal().Add(5*time.Second)), testenv.Until(func() bool { return !l.Valid() })); err != nil {
		_ = c.Member(0).Resume()
		t.Fatalf("still valid %v after etcd hung, as late as the lease deadline; want invalid within the window %v", time.Since(paused), w)
	}
	t.Logf("invalid %v after etcd hung (window %v)", time.Since(paused).Round(time.Millisecond), w)
	if err := c.Member(0).Resume(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if !l.Valid() {
			return fmt.Errorf("not valid again after etcd resumed: %v", l.Err())
		}
		return nil
	})

	if _, err := c.Client(t).Delete(ctx, l.Key()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Done():
		if !errors.Is(l.Err(), ErrKeyDeleted) {
			t.Fatalf("leadership ended with %v, want ErrKeyDeleted", l.Err())
		}
	case <-time.After(2 * time.Second):
		t.Fatal("leadership survived the deletion of its key")
	}
	if l.Valid() {
		t.Fatal("an ended leadership is valid")
	}
}
