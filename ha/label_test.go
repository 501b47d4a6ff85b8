package ha

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/election"
	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/internal/testenv/etcdtest"
)

// eventLog records, in order, what the nodes of a test did.
type eventLog struct {
	mu     sync.Mutex
	events []string
}

func (e *eventLog) add(ev string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.events = append(e.events, ev)
}

func (e *eventLog) index(ev string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, x := range e.events {
		if x == ev {
			return i
		}
	}
	return -1
}

func (e *eventLog) String() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return strings.Join(e.events, ", ")
}

// orderLabeler is a Labeler that logs each label it would patch, after
// the leadership confirmation the HA loop hands it; a failed confirmation
// patches nothing, as in k8s.Labeler.
type orderLabeler struct {
	name string
	log  *eventLog
}

func (o orderLabeler) Label(ctx context.Context, confirm func(context.Context) error) error {
	if err := confirm(ctx); err != nil {
		o.log.add(o.name + " label refused")
		return err
	}
	o.log.add(o.name + " labelled")
	return nil
}

func (o orderLabeler) Unlabel(context.Context) error { o.log.add(o.name + " unlabelled"); return nil }

func (o orderLabeler) Release(ctx context.Context) error { return o.Unlabel(ctx) }

// orderServing logs when a node's listeners accept.
type orderServing struct {
	Serving
	name string
	log  *eventLog
}

func (o orderServing) Start(ctx context.Context, epoch int64) error {
	if err := o.Serving.Start(ctx, epoch); err != nil {
		return err
	}
	o.log.add(o.name + " accepting")
	return nil
}

// TestLabelledWhileWaitingOutARevokedLeader: on the fast failover path the
// new leader waits out the old leader's confirmation window before it
// listens. The Service's endpoints take hundreds of milliseconds to follow
// a label on a real cluster, so the label goes on at the start of that
// wait, confirmed by a read of the leader key, and not after the
// listeners accept.
func TestLabelledWhileWaitingOutARevokedLeader(t *testing.T) {
	cluster := etcdtest.Start(t, etcdtest.Options{Size: 1})
	st := openStore(t)
	mon := &monitor{}
	log := &eventLog{}
	const ttl = 5 * time.Second
	start := func(name string) (*node, *killableListener) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		kl := &killableListener{Listener: ln}
		n := startNodeWith(t, cluster.Endpoints(), st, mon, name, ttl, func(c *Config) {
			c.FastFailover = true
			c.LivenessListener = kl
			c.Election.Liveness = ln.Addr().String()
			c.Election.ConfirmWindow = election.DefaultConfirmWindow
			c.Labeler = orderLabeler{name: name, log: log}
			c.LabelTimeout = 5 * time.Second
			c.Serving = orderServing{Serving: c.Serving, name: name, log: log}
		})
		return n, kl
	}
	a, aLn := start("a")
	waitLeader(t, []*node{a}, 10*time.Second)
	b, _ := start("b")
	waitFollowing(t, b, 1)
	aLn.kill()
	testenv.Eventually(t, 10*time.Second, func() error {
		if log.index("b accepting") < 0 {
			return fmt.Errorf("b has not taken over: %s", log)
		}
		return nil
	})
	labelled, accepting := log.index("b labelled"), log.index("b accepting")
	if labelled < 0 || labelled > accepting {
		t.Fatalf("events %s: b must be labelled before its listeners accept (it waits out the revoked leader's window meanwhile)", log)
	}
	if log.index("b label refused") >= 0 {
		t.Fatalf("events %s: the new leader's own confirmation failed", log)
	}
	if v := counterValue(t, b.loop.cfg.Metrics.fast.WithLabelValues(DecisionRevoked)); v != 1 {
		t.Fatalf("revocations counted by the standby: %v, want 1 (this test is about the fast path)", v)
	}
	if d, n := mon.overlap(); d > 0 || n > 1 {
		t.Errorf("two nodes accepted at once for %s", d)
	}
	// The deposed leader's labeller is stopped with its term, and what it
	// tried after losing its key was refused.
	if i := log.index("a labelled"); i > labelled {
		t.Errorf("events %s: the deposed leader labelled itself after its successor", log)
	}
}
