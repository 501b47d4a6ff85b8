package ha

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/election"
	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/internal/testenv/etcdtest"
	"github.com/vectis-ft/vectis/store"
)

// killableListener lets a test make a live process look dead to its
// standbys: kill closes the listener and every stream accepted on it, as the
// kernel does for a dead process and as a firewall REJECT looks from outside.
type killableListener struct {
	net.Listener
	resetNew atomic.Bool // reset new connections at once
	mu       sync.Mutex
	conns    []net.Conn
}

func (l *killableListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.resetNew.Load() {
			// Ambiguous to a standby: neither a stream nor a refusal.
			_ = c.(*net.TCPConn).SetLinger(0)
			c.Close()
			continue
		}
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
		return c, nil
	}
}

// breakStreams closes the streams accepted so far; the listener stays.
func (l *killableListener) breakStreams() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.Close()
	}
	l.conns = nil
}

func (l *killableListener) kill() {
	l.Listener.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.Close()
	}
}

// fastPair starts a one-member etcd, a fast-failover leader a (its
// liveness listener aLn) and a standby b that follows a's liveness stream.
func fastPair(t *testing.T, ttl time.Duration) (a *node, aLn *killableListener, b *node, mon *monitor) {
	t.Helper()
	cluster := etcdtest.Start(t, etcdtest.Options{Size: 1})
	st := openStore(t)
	mon = &monitor{}
	a, aLn = fastNode(t, cluster.Endpoints(), st, mon, "a", ttl)
	waitLeader(t, []*node{a}, 10*time.Second)
	b, _ = fastNode(t, cluster.Endpoints(), st, mon, "b", ttl)
	waitFollowing(t, b, 1)
	return a, aLn, b, mon
}

// waitFollowing waits until n's vectis_cluster_liveness_following is want.
func waitFollowing(t *testing.T, n *node, want float64) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() error {
		if got := gaugeValue(t, n.loop.cfg.Metrics.following); got != want {
			return fmt.Errorf("%s: vectis_cluster_liveness_following = %v, want %v", n.name, got, want)
		}
		return nil
	})
}

func fastNode(t *testing.T, endpoints []string, st *store.Store, mon *monitor, name string, ttl time.Duration) (*node, *killableListener) {
	t.Helper()
	return fastNodeWindow(t, endpoints, st, mon, name, ttl, election.DefaultConfirmWindow)
}

func fastNodeWindow(t *testing.T, endpoints []string, st *store.Store, mon *monitor, name string, ttl, window time.Duration) (*node, *killableListener) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	kl := &killableListener{Listener: ln}
	n := startNodeWith(t, endpoints, st, mon, name, ttl, func(c *Config) {
		c.FastFailover = true
		c.LivenessListener = kl
		c.Election.Liveness = ln.Addr().String()
		c.Election.ConfirmWindow = window
	})
	return n, kl
}

// TestFastFailoverForgedRefusal: the leader lives and renews its lease, but
// its liveness listener refuses (a firewall REJECT, or the kernel of a dead
// process). The standby revokes the lease and takes over well within the
// TTL, and the old leader, which finds its key gone, stops accepting before
// the new one starts.
func TestFastFailoverForgedRefusal(t *testing.T) {
	const ttl = 5 * time.Second
	a, aLn, b, mon := fastPair(t, ttl)

	killed := time.Now()
	aLn.kill()
	waitLeaderOtherThan(t, a, []*node{a, b}, 10*time.Second)
	took := time.Since(killed)
	// That the fast path took it, not the TTL, is the revocation counted
	// below; how fast is logged.
	t.Logf("takeover after the refusal: %v (TTL %v)", took, ttl)
	if took < election.DefaultConfirmWindow {
		t.Errorf("takeover after %v: the new leader did not wait out the old leader's confirmation window", took)
	}
	if d, n := mon.overlap(); d > 0 || n > 1 {
		t.Errorf("two nodes accepted at once for %s", d)
	}
	if v := counterValue(t, b.loop.cfg.Metrics.fast.WithLabelValues(DecisionRevoked)); v != 1 {
		t.Errorf("revocations counted by the standby: %v, want 1", v)
	}
	if a.serve.accepting() {
		t.Error("the revoked leader still accepts")
	}
}

// TestNewLeaderWaitsTheRevokedLeadersWindow: the wait after a revocation
// is the revoked leader's window, which it published, not the new
// leader's: a leader with a long window is not raced by a successor
// configured with a short one.
func TestNewLeaderWaitsTheRevokedLeadersWindow(t *testing.T) {
	const (
		ttl         = 5 * time.Second
		aWindow     = 1500 * time.Millisecond
		bWindow     = election.MinConfirmWindow
		revokedWait = aWindow + aWindow/10
	)
	cluster := etcdtest.Start(t, etcdtest.Options{Size: 1})
	st := openStore(t)
	mon := &monitor{}
	a, aLn := fastNodeWindow(t, cluster.Endpoints(), st, mon, "a", ttl, aWindow)
	waitLeader(t, []*node{a}, 10*time.Second)
	b, _ := fastNodeWindow(t, cluster.Endpoints(), st, mon, "b", ttl, bWindow)
	waitFollowing(t, b, 1)

	killed := time.Now()
	aLn.kill()
	waitLeaderOtherThan(t, a, []*node{a, b}, 10*time.Second)
	took := time.Since(killed)
	t.Logf("takeover after the refusal: %v (a's window %v, b's %v)", took, aWindow, bWindow)
	if took < revokedWait {
		t.Errorf("b served %v after the refusal, before a's window (%v, plus a tenth) had passed", took, aWindow)
	}
	if v := counterValue(t, b.loop.cfg.Metrics.fast.WithLabelValues(DecisionRevoked)); v != 1 {
		t.Errorf("revocations counted by the standby: %v, want 1 (the TTL path would take %v)", v, ttl)
	}
	if d, n := mon.overlap(); d > 0 || n > 1 {
		t.Errorf("two nodes accepted at once for %s", d)
	}
}

// TestUnreadableMarkersWaitHalfTheTTL: a new leader that cannot read the
// revocation markers (etcd hung right after its win) does not know the
// revoked leader's window, so it waits the longest one a member may have,
// TTL/2 plus a tenth, before it serves.
func TestUnreadableMarkersWaitHalfTheTTL(t *testing.T) {
	const ttl = 4 * time.Second
	cluster := etcdtest.Start(t, etcdtest.Options{Size: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := election.New(ctx, election.Config{
		Endpoints: cluster.Endpoints(), TTL: ttl, Cluster: "markers", Name: "new-leader",
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	l := &Loop{cfg: Config{Election: election.Config{TTL: ttl, Cluster: "markers"}}, log: slog.New(slog.DiscardHandler)}
	if err := cluster.Member(0).Pause(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.Member(0).Resume() })
	won := time.Now()
	if err := l.awaitRevoked(ctx, m, won); err != nil {
		t.Fatalf("awaitRevoked: %v", err)
	}
	took := time.Since(won)
	t.Logf("served %v after the win with the markers unreadable", took)
	if want := ttl/2 + ttl/20; took < want {
		t.Errorf("served %v after the win, before TTL/2 plus a tenth (%v): a revoked leader's window may be that long", took, want)
	}
}

func TestRevokedWindow(t *testing.T) {
	for value, want := range map[string]time.Duration{
		`{"leader":"a","confirmWindowMs":300}`:  300 * time.Millisecond,
		`{"leader":"a","confirmWindowMs":1500}`: 1500 * time.Millisecond,
		`a`:                                     election.LegacyConfirmWindow, // the marker of a release that recorded only the name
		`{"leader":"a"}`:                        election.LegacyConfirmWindow,
	} {
		if got := revokedWindow([]byte(value)); got != want {
			t.Errorf("revokedWindow(%s) = %v, want %v", value, got, want)
		}
	}
}

// TestNoRevocationWithoutLiveness: a leader that does not advertise a
// liveness listener (fast failover off there: it does not confirm within
// the window) is never revoked, even by a standby that has it on.
func TestNoRevocationWithoutLiveness(t *testing.T) {
	cluster := etcdtest.Start(t, etcdtest.Options{Size: 1})
	st := openStore(t)
	mon := &monitor{}
	a := startNode(t, cluster.Endpoints(), st, mon, "a", 2*time.Second)
	waitLeader(t, []*node{a}, 10*time.Second)
	b, _ := fastNode(t, cluster.Endpoints(), st, mon, "b", 2*time.Second)
	waitStandby(t, b)
	// Nothing is to happen, so the test watches for a while: the sleep is
	// the window in which a standby that wrongly followed would.
	time.Sleep(time.Second)
	if v := gaugeValue(t, b.loop.cfg.Metrics.following); v != 0 {
		t.Errorf("the standby follows a leader that advertises no liveness listener")
	}
	if !a.loop.IsLeader() {
		t.Error("the leader lost its leadership")
	}
}

// TestFollowsAgainAfterNoEvidence: the leader's stream breaks and the
// redials get neither a stream nor a refusal (no evidence). Once the
// leader's listener answers again, the standby follows it again rather
// than staying on the TTL path until the next leader change.
func TestFollowsAgainAfterNoEvidence(t *testing.T) {
	a, aLn, b, _ := fastPair(t, 5*time.Second)
	aLn.resetNew.Store(true)
	aLn.breakStreams()
	testenv.Eventually(t, 10*time.Second, func() error {
		if counterValue(t, b.loop.cfg.Metrics.fast.WithLabelValues(DecisionNoEvidence)) < 1 {
			return errors.New("no no_evidence decision after the stream broke and redials were reset")
		}
		return nil
	})
	aLn.resetNew.Store(false)
	waitFollowing(t, b, 1)
	if !a.loop.IsLeader() {
		t.Error("the leader was replaced without evidence")
	}
	if v := counterValue(t, b.loop.cfg.Metrics.fast.WithLabelValues(DecisionRevoked)); v != 0 {
		t.Errorf("%v revocations without evidence", v)
	}
}

// TestLivenessOutlivesTheDrain: a leader stopped by its signal resigns and
// drains its sessions with its lease alive, for the transfers it still
// owns. Its liveness listener must keep answering until then: were it to
// close at the signal, a standby would see its port refuse, and if it read
// the leader key before the resignation deleted it, revoke the lease of a
// node that is still finishing transfers (which the orphan sweep would then
// take from it).
func TestLivenessOutlivesTheDrain(t *testing.T) {
	a, aLn, b, _ := fastPair(t, 5*time.Second)
	var drainDial error
	drained := make(chan struct{})
	a.serve.onDrain = func() {
		defer close(drained)
		c, err := net.DialTimeout("tcp", aLn.Addr().String(), time.Second)
		if err == nil {
			c.Close()
		}
		drainDial = err
	}
	a.stop()
	select {
	case <-drained:
	default:
		t.Fatal("the stopped leader did not drain")
	}
	if drainDial != nil {
		t.Errorf("liveness listener of the draining leader: %v, want it to answer until the drain ends", drainDial)
	}
	if v := counterValue(t, b.loop.cfg.Metrics.fast.WithLabelValues(DecisionRevoked)); v != 0 {
		t.Errorf("the standby revoked the lease of a leader that resigned and drained: %v revocations", v)
	}
}
