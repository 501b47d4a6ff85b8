//go:build e2e

package hascenarios

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/internal/testenv/etcdtest"
	"github.com/vectis-ft/vectis/internal/testenv/kubetest"
	"github.com/vectis-ft/vectis/pesit/client"
)

// TestHA runs every scenario of issue 6 on its own etcd, database,
// namespace and three vectis processes; the Kubernetes control plane is
// shared. Scenarios run one after the other (the machine has two cores).
func TestHA(t *testing.T) {
	bin := vectisBinary(t)
	testenv.Tool(t, "etcd")
	testenv.Tool(t, "kube-apiserver")
	start := time.Now()
	cp := kubetest.Start(t, kubetest.Options{StartTimeout: 3 * time.Minute})
	t.Logf("kube-apiserver up in %v", time.Since(start).Round(time.Millisecond))
	e := &env{bin: bin, cp: cp, admin: cp.AdminClient(t)}

	scenarios := []struct {
		name, title string
		run         func(ctx context.Context, t *testing.T, c *cluster, rec func(func(*row)))
		// ttl overrides the suite's minimal TTL. Surviving the loss of the
		// etcd raft leader needs a new raft leader to be elected and the
		// lease renewed through it within TTL - margin: the default TTL
		// (5 s) guarantees it, the minimum (2 s) does not on a loaded machine.
		ttl time.Duration
	}{
		{"StartTogether", "3 nodes start together", e.startTogether, 0},
		{"LeaderSIGTERM", "leader SIGTERM", e.leaderSIGTERM, 0},
		{"LeaderSIGKILL", "leader SIGKILL", e.leaderSIGKILL, 0},
		{"LeaderCutFromEtcd", "leader cut off from etcd only", e.leaderCut, 0},
		{"LeaderSIGSTOP", "leader SIGSTOP past the TTL, then SIGCONT", e.leaderSIGSTOP, 0},
		{"EtcdMemberLost", "one etcd member lost (each in turn, TTL 5s)", e.etcdMemberLost, 5 * time.Second},
		{"EtcdQuorumLost", "etcd quorum lost", e.etcdQuorumLost, 0},
		{"StaleLabel", "stale label injected on another pod", e.staleLabel, 0},
		{"APIServerDown", "API server down while the leader changes", e.apiServerDown, 0},
		{"PushLeaderKill", "push interrupted by a leader kill", e.pushLeaderKill, 0},
	}
	for idx, sc := range scenarios {
		order := idx + 1
		t.Run(sc.name, func(t *testing.T) {
			rec := func(f func(*row)) { results.update(order, sc.title, f) }
			rec(func(r *row) { r.result = "FAIL" })
			scTTL := ttl
			if sc.ttl != 0 {
				scTTL = sc.ttl
			}
			c := e.newCluster(t, order, scTTL)
			defer func() {
				c.assertInvariants(rec)
				rec(func(r *row) {
					if !t.Failed() {
						r.result = "PASS"
					}
				})
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			sc.run(ctx, t, c, rec)
		})
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%dms", d.Milliseconds()) }

// leaderOf waits for the stable leader of a fresh cluster.
func leaderOf(ctx context.Context, t testing.TB, c *cluster) int {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	i, _, err := c.waitStableLeader(wctx, time.Time{}, true)
	if err != nil {
		t.Fatalf("no stable, labelled leader: %v", err)
	}
	return i
}

// waitFollowers waits until every running node other than leader reports
// it as the leader and itself as a follower.
func waitFollowers(ctx context.Context, t testing.TB, c *cluster, leader int, within time.Duration) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for i, n := range c.nodes {
		if i == leader || !n.running() {
			continue
		}
		var last string
		for {
			st, err := n.status(wctx)
			if err == nil && !st.IsLeader && st.Leader == c.nodes[leader].name {
				break
			}
			last = fmt.Sprintf("%+v %v", st, err)
			if wctx.Err() != nil {
				t.Fatalf("%s does not follow %s within %v: %s", n.name, c.nodes[leader].name, within, last)
			}
			sleepCtx(wctx, 100*time.Millisecond)
		}
	}
}

// takeover signals the leader and measures until another node accepts.
func (e *env) takeover(ctx context.Context, t *testing.T, c *cluster, rec func(func(*row)), sig syscall.Signal, bound time.Duration) {
	i := leaderOf(ctx, t, c)
	old := c.nodes[i]
	t0 := time.Now()
	if err := old.signal(sig); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, bound+10*time.Second)
	defer cancel()
	j, at, err := c.mon.waitServing(wctx, t0, i)
	if err != nil {
		t.Fatalf("no other node serves after %v of %s: %v", sig, old.name, err)
	}
	took := at.Sub(t0)
	stopped := c.mon.lastAccepting(t0, i)
	note := fmt.Sprintf("%s -> %s", old.name, c.nodes[j].name)
	if !stopped.IsZero() {
		note += fmt.Sprintf("; old accepted until +%s", ms(stopped.Sub(t0)))
	}
	rec(func(r *row) { r.takeover = ms(took) + " (bound " + ms(bound) + ")"; r.note = note })
	t.Logf("%v: %s", sig, note)
	if took > bound {
		t.Errorf("after %v of the leader another node served in %v, want within %v", sig, took, bound)
	}
	if err := c.nodes[j].pesitConnect(ctx); err != nil {
		t.Errorf("new leader %s does not serve PeSIT: %v", c.nodes[j].name, err)
	}
	k, _, err := c.waitStableLeader(wctx, at, true)
	if err != nil {
		t.Fatalf("after %v: %v", sig, err)
	}
	if k != j {
		t.Errorf("leader moved again: %s then %s", c.nodes[j].name, c.nodes[k].name)
	}
	if err := old.wait(10 * time.Second); err != nil {
		t.Errorf("after %v: %v", sig, err)
	}
	waitFollowers(ctx, t, c, j, 15*time.Second)
}

func (e *env) startTogether(ctx context.Context, t *testing.T, c *cluster, rec func(func(*row))) {
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	i, first, err := c.waitStableLeader(wctx, start, true)
	if err != nil {
		t.Fatal(err)
	}
	leader := c.nodes[i]
	rec(func(r *row) {
		r.takeover = "first leader serving +" + ms(first.Sub(start))
		r.note = "leader " + leader.name
	})
	if err := leader.pesitConnect(ctx); err != nil {
		t.Errorf("leader does not serve PeSIT: %v", err)
	}
	waitFollowers(ctx, t, c, i, 20*time.Second)

	// Exactly one leader, seen every way: the API of each node, its
	// metrics, the PeSIT ports, the labels, the fencing record.
	leaders := 0
	for j, n := range c.nodes {
		st, err := n.status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.IsLeader {
			leaders++
		}
		if st.IsLeader != (j == i) || st.Leader != leader.name || st.MemberCount != 3 {
			t.Errorf("%s status: isLeader=%v leader=%q members=%d; want isLeader=%v leader=%q members=3",
				n.name, st.IsLeader, st.Leader, st.MemberCount, j == i, leader.name)
		}
		// The members gauge is refreshed from etcd every 2 s.
		var m map[string]float64
		for deadline := time.Now().Add(3 * ttl); ; {
			m, err = n.metrics(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if m["vectis_cluster_members"] == 3 || time.Now().After(deadline) {
				break
			}
			sleepCtx(ctx, 100*time.Millisecond)
		}
		want := 0.0
		if j == i {
			want = 1
		}
		if got := m["vectis_cluster_is_leader"]; got != want {
			t.Errorf("%s vectis_cluster_is_leader = %v, want %v", n.name, got, want)
		}
		if got := m["vectis_cluster_members"]; got != 3 {
			t.Errorf("%s vectis_cluster_members = %v, want 3", n.name, got)
		}
		if j != i && n.accepting(time.Second) {
			t.Errorf("follower %s accepts on its PeSIT port", n.name)
		}
	}
	if leaders != 1 {
		t.Errorf("%d nodes report isLeader, want 1", leaders)
	}
	if l := c.mon.labelled(); len(l) != 1 || l[0] != leader.name {
		t.Errorf("labelled pods %v, want [%s]", l, leader.name)
	}
	for _, n := range c.nodes {
		p, err := e.admin.CoreV1().Pods(c.ns).Get(ctx, n.name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if has := p.Labels[labelKey] == "true"; has != (n == leader) {
			t.Errorf("pod %s labelled=%v, want %v", n.name, has, n == leader)
		}
	}
	epoch, member, _, err := c.fencedLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if member != leader.name || epoch <= 0 {
		t.Errorf("fencing record: epoch %d member %q, want member %q", epoch, member, leader.name)
	}
	// And it stays that way.
	hold := time.Now()
	sleepCtx(ctx, 2*ttl)
	for _, r := range c.mon.roundsSince(hold) {
		if acc := r.acceptingNodes(); len(acc) != 1 || acc[0] != i {
			t.Fatalf("at %s nodes %v accept, want only %s", r.at.Format("15:04:05.000"), acc, leader.name)
		}
	}
}

func (e *env) leaderSIGTERM(ctx context.Context, t *testing.T, c *cluster, rec func(func(*row))) {
	e.takeover(ctx, t, c, rec, syscall.SIGTERM, time.Second)
}

func (e *env) leaderSIGKILL(ctx context.Context, t *testing.T, c *cluster, rec func(func(*row))) {
	e.takeover(ctx, t, c, rec, syscall.SIGKILL, ttl+time.Second)
}

func (e *env) leaderCut(ctx context.Context, t *testing.T, c *cluster, rec func(func(*row))) {
	i := leaderOf(ctx, t, c)
	old := c.nodes[i]
	waitFollowers(ctx, t, c, i, 15*time.Second)
	t0 := time.Now()
	for _, p := range c.proxies[i] {
		p.Cut()
	}
	wctx, cancel := context.WithTimeout(ctx, 3*ttl+10*time.Second)
	defer cancel()
	stoppedAt, err := c.mon.waitNotAccepting(wctx, t0, i)
	if err != nil {
		t.Fatalf("%s, cut off from etcd, never stopped serving: %v", old.name, err)
	}
	j, at, err := c.mon.waitServing(wctx, t0, i)
	if err != nil {
		t.Fatalf("no other node serves after %s was cut off: %v", old.name, err)
	}
	lastOld := c.mon.lastAccepting(t0, i)
	note := fmt.Sprintf("%s stopped +%s (last accept +%s), %s serving +%s", old.name, ms(stoppedAt.Sub(t0)),
		ms(lastOld.Sub(t0)), c.nodes[j].name, ms(at.Sub(t0)))
	rec(func(r *row) {
		r.takeover = ms(at.Sub(t0)) + " (old stopped +" + ms(stoppedAt.Sub(t0)) + ")"
		r.note = note
	})
	t.Log(note)
	if !stoppedAt.Before(at) || !lastOld.Before(at) {
		t.Errorf("the cut-off leader did not stop serving before another node won: %s", note)
	}
	if stoppedAt.Sub(t0) > ttl {
		t.Errorf("the cut-off leader stopped serving %v after the cut, want within the TTL %v", stoppedAt.Sub(t0), ttl)
	}
	k, _, err := c.waitStableLeader(wctx, at, true)
	if err != nil {
		t.Fatal(err)
	}
	if k != j {
		t.Errorf("leader moved again: %s then %s", c.nodes[j].name, c.nodes[k].name)
	}
	if err := c.nodes[k].pesitConnect(ctx); err != nil {
		t.Errorf("new leader does not serve PeSIT: %v", err)
	}
	// The network heals: the old leader comes back as a follower.
	for _, p := range c.proxies[i] {
		p.Restore()
	}
	waitFollowers(ctx, t, c, k, 20*time.Second)
	if old.accepting(time.Second) {
		t.Errorf("%s accepts again after the network healed", old.name)
	}
}

func (e *env) leaderSIGSTOP(ctx context.Context, t *testing.T, c *cluster, rec func(func(*row))) {
	i := leaderOf(ctx, t, c)
	old := c.nodes[i]
	waitFollowers(ctx, t, c, i, 15*time.Second)
	epoch1, _, _, err := c.fencedLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// A push in flight when the leader freezes: when it wakes up, its
	// sessions still have data to record under its old epoch.
	src := writeRandomFile(t, filepath.Join(c.dir, "frozen.bin"), 64<<20, 7)
	pushCtx, stopPush := context.WithCancel(ctx)
	defer stopPush()
	pushed := make(chan error, 1)
	go func() {
		cfg := pesitConfig(old.pesitAddr())
		cfg.SyncIntervalKB, cfg.SyncWindow = 64, 2
		_, err := client.Push(pushCtx, cfg, client.SendRequest{Source: src, VirtualFile: fileID, StateDir: filepath.Join(c.dir, "state-frozen")}, client.Retry{})
		pushed <- err
	}()
	if _, err := waitSyncPoint(ctx, c, 2, pushed); err != nil {
		t.Fatal(err)
	}

	t0 := time.Now()
	if err := old.signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	j, at, err := c.mon.waitServing(wctx, t0, i)
	if err != nil {
		_ = old.signal(syscall.SIGCONT)
		t.Fatalf("no other node serves while %s is stopped: %v", old.name, err)
	}
	epoch2, member2, since2, err := c.fencedLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A partner connects to the stopped node: the kernel queues the
	// connection and the CONNECT for the node to find when it wakes up.
	// A deposed leader must not answer it with ACONNECT.
	connected := make(chan error, 1)
	go func() {
		cfg := pesitConfig(old.pesitAddr())
		cfg.Timeout = 15 * time.Second
		s, err := client.Dial(ctx, cfg)
		if err == nil {
			s.Close()
			err = fmt.Errorf("ACONNECT")
		} else {
			err = fmt.Errorf("refused: %w", err)
		}
		connected <- err
	}()
	// Stay stopped well past the TTL and past the new leader's start.
	sleepCtx(ctx, time.Until(t0.Add(ttl+2*time.Second)))
	c.allowWaking = true
	t1 := time.Now()
	if err := old.signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped, err := c.mon.waitNotAccepting(wctx, t1, i)
	if err != nil {
		t.Fatalf("%s never stopped accepting after SIGCONT: %v", old.name, err)
	}
	lastOld := c.mon.lastAccepting(t1, i)
	note := fmt.Sprintf("%s stopped %s, %s serving +%s; after SIGCONT old port open until +%s",
		old.name, ms(t1.Sub(t0)), c.nodes[j].name, ms(at.Sub(t0)), ms(stopped.Sub(t1)))
	if !lastOld.IsZero() {
		t.Logf("%s accepted TCP connections until %v after SIGCONT (its runtime waking up)", old.name, lastOld.Sub(t1))
	}
	if stopped.Sub(t1) > 500*time.Millisecond {
		t.Errorf("%s kept its PeSIT port open %v after SIGCONT", old.name, stopped.Sub(t1))
	}
	select {
	case err := <-connected:
		if err.Error() == "ACONNECT" {
			t.Errorf("%s, deposed while stopped, answered a CONNECT queued during the stop with ACONNECT", old.name)
			note += "; queued CONNECT got ACONNECT"
		} else {
			note += "; queued CONNECT refused"
			t.Logf("CONNECT queued at the stopped node: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("CONNECT queued at the stopped node got no answer 20 s after SIGCONT")
	}
	rec(func(r *row) { r.takeover = ms(at.Sub(t0)) + " (bound " + ms(ttl+time.Second) + ")"; r.note = note })
	t.Log(note)
	if at.Sub(t0) > ttl+time.Second {
		t.Errorf("another node served %v after the leader stopped, want within TTL + 1 s", at.Sub(t0))
	}
	if member2 != c.nodes[j].name || epoch2 <= epoch1 {
		t.Errorf("fencing record after takeover: epoch %d member %q; want member %s with epoch > %d", epoch2, member2, c.nodes[j].name, epoch1)
	}

	// It steps down.
	testenv.Eventually(t, 5*time.Second, func() error {
		if v, ok, err := old.metric(ctx, "vectis_cluster_is_leader"); err != nil || !ok || v != 0 {
			return fmt.Errorf("%s still reports vectis_cluster_is_leader=%v (%v) after SIGCONT", old.name, v, err)
		}
		return nil
	})
	// Its writes under the old epoch are refused: the push it was serving
	// cannot complete, and no row carrying the old epoch changed after the
	// new leader's claim.
	select {
	case err := <-pushed:
		if err == nil {
			t.Errorf("the push to the stopped leader completed after it was deposed")
		} else {
			t.Logf("push to the deposed leader failed as it must: %v", err)
		}
	case <-time.After(40 * time.Second):
		t.Errorf("the push to the deposed leader neither failed nor completed")
		stopPush()
		<-pushed
	}
	conn, err := c.pg(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var late int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM transfers WHERE epoch = $1 AND updated_at > $2`, epoch1, since2).Scan(&late); err != nil {
		t.Fatal(err)
	}
	if late != 0 {
		t.Errorf("%d transfer rows were written with the stale epoch %d after the claim of epoch %d", late, epoch1, epoch2)
	}
	m, err := old.metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Its transfer was taken over by the new leader's orphan sweep, so the
	// session's writes are refused as not the owner's (per transfer
	// fencing); a leader-only write would be refused as a stale epoch.
	stale := sumMetric(m, "vectis_store_operation_errors_total", `class="stale_epoch"`) +
		sumMetric(m, "vectis_store_operation_errors_total", `class="not_owner"`)
	t.Logf("%s: %v store writes refused for a stale epoch or a lost transfer", old.name, stale)
	if stale == 0 {
		t.Errorf("%s made no fenced write that PostgreSQL refused (vectis_store_operation_errors_total{class=\"stale_epoch\"|\"not_owner\"} = 0)", old.name)
	}
	rec(func(r *row) { r.note += fmt.Sprintf("; %v fenced writes refused", stale) })
	k, _, err := c.waitStableLeader(wctx, at, true)
	if err != nil {
		t.Fatal(err)
	}
	if k != j {
		t.Errorf("leader moved again: %s then %s", c.nodes[j].name, c.nodes[k].name)
	}
	waitFollowers(ctx, t, c, k, 20*time.Second)
}

func (e *env) etcdMemberLost(ctx context.Context, t *testing.T, c *cluster, rec func(func(*row))) {
	i := leaderOf(ctx, t, c)
	leader := c.nodes[i]
	waitFollowers(ctx, t, c, i, 15*time.Second)
	epoch, _, _, err := c.fencedLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	changes := map[string]float64{}
	for _, n := range c.nodes {
		m, err := n.metrics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		changes[n.name] = m["vectis_cluster_leader_changes_total"]
	}
	// The leader's client talks to one of the members; losing each in turn
	// covers that one, whichever it is, and three ways to lose it.
	// Each member is lost in turn (stopped, killed, stopped).
	members := c.etcd.Members()
	steps := []struct {
		pick func() *etcdtest.Member
		way  string
	}{
		{func() *etcdtest.Member { return members[0] }, "stop"},
		{func() *etcdtest.Member { return members[1] }, "kill"},
		{func() *etcdtest.Member { return members[2] }, "stop"},
		// Not asserted: pausing the raft leader (SIGSTOP, a hung machine).
		// Followers keep forwarding lease renewals to the hung leader for
		// longer than TTL - margin, even with the default TTL, so the
		// leader steps down and another node wins (safely: no overlap).
		// Known limitation, reported on the HA issue.
	}
	var notes []string
	for _, step := range steps {
		m, way := step.pick(), step.way
		t0 := time.Now()
		var err error
		switch way {
		case "stop":
			err = m.Stop()
		case "kill":
			err = m.Kill()
		case "pause":
			err = m.Pause()
		}
		if err != nil {
			t.Fatalf("%s etcd member %s: %v", way, m.Name, err)
		}
		sleepCtx(ctx, 2*c.ttl)
		tr := time.Now()
		if way == "pause" {
			err = m.Resume()
		} else {
			err = m.Start()
		}
		if err != nil {
			t.Fatalf("restore etcd member %s: %v", m.Name, err)
		}
		hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = c.etcd.WaitHealthy(hctx)
		cancel()
		if err != nil {
			t.Fatalf("etcd not healthy after restoring %s: %v", m.Name, err)
		}
		// The member's return counts too: a paused raft leader that wakes
		// up may act on its stale view.
		sleepCtx(ctx, c.ttl)
		for _, r := range c.mon.roundsSince(t0) {
			if acc := r.acceptingNodes(); len(acc) != 1 || acc[0] != i {
				phase := fmt.Sprintf("+%s after the loss", ms(r.at.Sub(t0)))
				if r.at.After(tr) {
					phase = fmt.Sprintf("+%s after it came back", ms(r.at.Sub(tr)))
				}
				t.Errorf("etcd member %s lost (%s): %s nodes %v accept, want only %s",
					m.Name, way, phase, names(c, acc), leader.name)
				break
			}
		}
		notes = append(notes, m.Name+":"+way)
		if way == "pause" {
			notes[len(notes)-1] += "(raft leader)"
		}
		if t.Failed() {
			break
		}
	}
	epoch2, member2, _, err := c.fencedLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if epoch2 != epoch || member2 != leader.name {
		t.Errorf("fencing record changed: epoch %d -> %d, member %s", epoch, epoch2, member2)
	}
	for _, n := range c.nodes {
		m, err := n.metrics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := m["vectis_cluster_leader_changes_total"]; got != changes[n.name] {
			t.Errorf("%s vectis_cluster_leader_changes_total %v -> %v", n.name, changes[n.name], got)
		}
	}
	if l := c.mon.labelled(); len(l) != 1 || l[0] != leader.name {
		t.Errorf("labelled pods %v, want [%s]", l, leader.name)
	}
	rec(func(r *row) {
		r.takeover = "no change (" + leader.name + ")"
		if epoch2 != epoch || member2 != leader.name {
			r.takeover = fmt.Sprintf("CHANGED %s -> %s (epoch %d -> %d)", leader.name, member2, epoch, epoch2)
		}
		r.note = "members lost in turn: " + strings.Join(notes, ", ")
	})
}

func (e *env) etcdQuorumLost(ctx context.Context, t *testing.T, c *cluster, rec func(func(*row))) {
	i := leaderOf(ctx, t, c)
	leader := c.nodes[i]
	waitFollowers(ctx, t, c, i, 15*time.Second)
	members := c.etcd.Members()
	for _, m := range members[1:] {
		if err := m.Kill(); err != nil {
			t.Fatalf("kill etcd member %s: %v", m.Name, err)
		}
	}
	tq := time.Now()
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	stopped, err := c.mon.waitNotAccepting(wctx, tq, i)
	if err != nil {
		t.Fatalf("leader never stopped serving without quorum: %v", err)
	}
	if stopped.Sub(tq) > ttl {
		t.Errorf("leader stopped serving %v after quorum loss, want within the TTL %v", stopped.Sub(tq), ttl)
	}
	// Nobody serves while there is no quorum.
	sleepCtx(ctx, ttl)
	for _, r := range c.mon.roundsSince(stopped) {
		if acc := r.acceptingNodes(); len(acc) > 0 {
			t.Errorf("without quorum, nodes %v accept at +%s", acc, ms(r.at.Sub(tq)))
			break
		}
	}
	tr0 := time.Now()
	for _, m := range members[1:] {
		if err := m.Start(); err != nil {
			t.Fatalf("restart etcd member %s: %v", m.Name, err)
		}
	}
	if err := c.etcd.WaitHealthy(wctx); err != nil {
		t.Fatalf("etcd quorum does not come back: %v", err)
	}
	tr := time.Now()
	j, at, err := c.mon.waitServing(wctx, tr0, -1)
	if err != nil {
		t.Fatalf("no leader serves after quorum returned: %v", err)
	}
	took := at.Sub(tr)
	note := fmt.Sprintf("%s stopped +%s after quorum loss; quorum back %s after restart; %s serving +%s after quorum back",
		leader.name, ms(stopped.Sub(tq)), ms(tr.Sub(tr0)), c.nodes[j].name, ms(took))
	rec(func(r *row) {
		r.takeover = fmt.Sprintf("stop +%s; serve +%s (bound %s)", ms(stopped.Sub(tq)), ms(took), ms(ttl+5*time.Second))
		r.note = note
	})
	t.Log(note)
	if took > ttl+5*time.Second {
		t.Errorf("a leader served %v after quorum returned, want within TTL + 5 s", took)
	}
	k, _, err := c.waitStableLeader(wctx, at, true)
	if err != nil {
		t.Fatal(err)
	}
	waitFollowers(ctx, t, c, k, 20*time.Second)
}

func (e *env) staleLabel(ctx context.Context, t *testing.T, c *cluster, rec func(func(*row))) {
	i := leaderOf(ctx, t, c)
	victim := c.nodes[(i+1)%3]
	c.mon.inject(victim.name)
	t0 := time.Now()
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:"true"}}}`, labelKey)
	if _, err := e.admin.CoreV1().Pods(c.ns).Patch(ctx, victim.name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := t0.Add(10 * time.Second)
	for {
		changed := c.mon.labelChange(victim.name)
		if changed.After(t0) && !contains(c.mon.labelled(), victim.name) {
			took := changed.Sub(t0)
			rec(func(r *row) { r.takeover = "stripped in " + ms(took); r.note = "label injected on " + victim.name })
			t.Logf("stale label on %s stripped in %v", victim.name, took)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stale label on %s not stripped within 10 s (labelled: %v)", victim.name, c.mon.labelled())
		}
		sleepCtx(ctx, 10*time.Millisecond)
	}
	p, err := e.admin.CoreV1().Pods(c.ns).Get(ctx, victim.name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, has := p.Labels[labelKey]; has {
		t.Errorf("pod %s still has %s: %v", victim.name, labelKey, p.Labels)
	}
	if l := c.mon.labelled(); len(l) != 1 || l[0] != c.nodes[i].name {
		t.Errorf("labelled pods %v, want [%s]", l, c.nodes[i].name)
	}
}

func (e *env) apiServerDown(ctx context.Context, t *testing.T, c *cluster, rec func(func(*row))) {
	i := leaderOf(ctx, t, c)
	old := c.nodes[i]
	waitFollowers(ctx, t, c, i, 15*time.Second)
	if err := e.cp.StopAPIServer(); err != nil {
		t.Fatalf("stop kube-apiserver: %v", err)
	}
	apiBack := false
	defer func() {
		if !apiBack {
			if err := e.cp.StartAPIServer(); err != nil {
				t.Errorf("restart kube-apiserver: %v", err)
			}
		}
	}()
	t0 := time.Now()
	if err := old.signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	j, at, err := c.mon.waitServing(wctx, t0, i)
	if err != nil {
		t.Fatalf("no new leader serves while the API server is down: %v", err)
	}
	leader := c.nodes[j]
	if err := leader.pesitConnect(ctx); err != nil {
		t.Errorf("new leader %s does not serve PeSIT with the API server down: %v", leader.name, err)
	}
	var labelErrs float64
	for {
		v, _, err := leader.metric(ctx, "vectis_k8s_label_errors_total")
		if err == nil && v > 0 {
			labelErrs = v
			break
		}
		if time.Since(at) > 15*time.Second {
			t.Fatalf("%s counts no label error 15 s into its term with the API server down (vectis_k8s_label_errors_total=%v, %v)", leader.name, v, err)
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
	// Still no label anywhere but where it was: nobody could patch.
	if l := c.mon.labelled(); len(l) != 1 || l[0] != old.name {
		t.Errorf("with the API server down the watched labels changed: %v", l)
	}
	ta := time.Now()
	if err := e.cp.StartAPIServer(); err != nil {
		t.Fatalf("restart kube-apiserver: %v", err)
	}
	apiBack = true
	ready := time.Since(ta)
	var followed time.Duration
	for {
		l := c.mon.labelled()
		if len(l) == 1 && l[0] == leader.name {
			followed = c.mon.labelChange(leader.name).Sub(ta)
			break
		}
		if time.Since(ta) > 30*time.Second {
			t.Fatalf("label did not follow the leader %s within 30 s of the API server's return: labelled %v", leader.name, l)
		}
		sleepCtx(ctx, 20*time.Millisecond)
	}
	p, err := e.admin.CoreV1().Pods(c.ns).Get(ctx, old.name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, has := p.Labels[labelKey]; has {
		t.Errorf("the dead leader's pod %s still carries %s", old.name, labelKey)
	}
	note := fmt.Sprintf("%s -> %s serving +%s; %v label errors; API server restarted (ready in %s), label on %s +%s after the restart began",
		old.name, leader.name, ms(at.Sub(t0)), labelErrs, ms(ready), leader.name, ms(followed))
	rec(func(r *row) {
		r.takeover = ms(at.Sub(t0)) + " (label +" + ms(followed) + " after API restart)"
		r.note = note
	})
	t.Log(note)
	if at.Sub(t0) > ttl+time.Second {
		t.Errorf("new leader served %v after the kill, want within TTL + 1 s", at.Sub(t0))
	}
}

func (e *env) pushLeaderKill(ctx context.Context, t *testing.T, c *cluster, rec func(func(*row))) {
	i := leaderOf(ctx, t, c)
	waitFollowers(ctx, t, c, i, 15*time.Second)
	proxy, err := newLeaderProxy(c.nodes, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()

	const size = 48 << 20
	src := writeRandomFile(t, filepath.Join(c.dir, "payload.bin"), size, 42)
	pushed := make(chan error, 1)
	var res client.Result
	go func() {
		cfg := pesitConfig(proxy.Addr())
		cfg.SyncIntervalKB, cfg.SyncWindow = 64, 4
		var err error
		res, err = client.Push(ctx, cfg, client.SendRequest{Source: src, VirtualFile: fileID, StateDir: filepath.Join(c.dir, "state")},
			client.Retry{Retries: 30, Backoff: 200 * time.Millisecond, MaxBackoff: time.Second,
				OnRetry: func(n int, err error, wait time.Duration) {
					t.Logf("push attempt %d failed (%v); retry in %v", n, err, wait)
				}})
		pushed <- err
	}()
	syncAtKill, err := waitSyncPoint(ctx, c, 3, pushed)
	if err != nil {
		t.Fatal(err)
	}
	old := c.nodes[i]
	t0 := time.Now()
	if err := old.signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	j, at, err := c.mon.waitServing(wctx, t0, i)
	if err != nil {
		t.Fatalf("no new leader: %v", err)
	}
	var perr error
	select {
	case perr = <-pushed:
	case <-wctx.Done():
		t.Fatalf("push did not end within 60 s of the kill")
	}
	if perr != nil {
		t.Fatalf("push failed: %v", perr)
	}
	lost, finalPath, err := compareReceived(src, c.recvDir)
	if err != nil {
		t.Fatal(err)
	}
	routed := proxy.Routed()
	note := fmt.Sprintf("%s killed at sync point %d; resumed on %s from sync point %d (restarted=%v, %d attempts); connections: %v",
		old.name, syncAtKill, c.nodes[j].name, res.RestartPoint, res.Restarted, res.Attempts, routed)
	rec(func(r *row) {
		r.takeover = ms(at.Sub(t0)) + " (bound " + ms(ttl+time.Second) + ")"
		r.bytesLost = fmt.Sprint(lost)
		r.note = note
	})
	t.Log(note)
	if lost != 0 {
		t.Errorf("received file %s differs from the source: %d bytes lost or wrong", finalPath, lost)
	}
	if !res.Restarted || res.RestartPoint == 0 {
		t.Errorf("the push did not resume from a sync point: restarted=%v restart point %d", res.Restarted, res.RestartPoint)
	}
	// The store had sync point syncAtKill persisted before the kill; the
	// client may not have seen the ACK(SYN) of the last one, no more.
	if int64(res.RestartPoint)+1 < syncAtKill {
		t.Errorf("resumed from sync point %d, but %d was acknowledged before the kill", res.RestartPoint, syncAtKill)
	}
	if at.Sub(t0) > ttl+time.Second {
		t.Errorf("new leader served %v after the kill, want within TTL + 1 s", at.Sub(t0))
	}
	if len(routed) < 2 || routed[0] != old.name || routed[len(routed)-1] != c.nodes[j].name {
		t.Errorf("connections were routed to %v; want the first to %s and the last to %s", routed, old.name, c.nodes[j].name)
	}
}

// waitSyncPoint waits until the latest transfer in the store has recorded
// sync point n or more, and returns the number recorded. It fails when the
// push ends first.
func waitSyncPoint(ctx context.Context, c *cluster, n int64, pushed chan error) (int64, error) {
	conn, err := c.pg(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-pushed:
			pushed <- err
			return 0, fmt.Errorf("the push ended (%v) before sync point %d was recorded; use a larger file", err, n)
		default:
		}
		var num int64
		err := conn.QueryRow(ctx, `SELECT sync_number FROM transfers ORDER BY created_at DESC LIMIT 1`).Scan(&num)
		if err == nil && num >= n {
			return num, nil
		}
		sleepCtx(ctx, 5*time.Millisecond)
	}
	return 0, fmt.Errorf("no transfer reached sync point %d within 60 s", n)
}

// writeRandomFile writes size pseudo-random bytes (seeded, so that a
// failure can be reproduced).
func writeRandomFile(t *testing.T, path string, size int, seed uint64) string {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	buf := make([]byte, size)
	for i := 0; i+8 <= len(buf); i += 8 {
		v := r.Uint64()
		for k := range 8 {
			buf[i+k] = byte(v >> (8 * k))
		}
	}
	if err := os.WriteFile(path, buf, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// compareReceived finds the one delivered file under dir (temporary
// ".*.part" files excluded) and counts the bytes in which it differs from
// src, a missing or extra byte counting as one.
func compareReceived(src, dir string) (int64, string, error) {
	var found []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && !strings.HasPrefix(d.Name(), ".") {
			found = append(found, p)
		}
		return nil
	})
	if err != nil {
		return 0, "", err
	}
	if len(found) != 1 {
		return 0, "", fmt.Errorf("want one delivered file in %s, found %v", dir, found)
	}
	want, err := os.ReadFile(src)
	if err != nil {
		return 0, "", err
	}
	got, err := os.ReadFile(found[0])
	if err != nil {
		return 0, "", err
	}
	if bytes.Equal(want, got) {
		return 0, found[0], nil
	}
	n := min(len(want), len(got))
	var diff int64
	for k := 0; k < n; k++ {
		if want[k] != got[k] {
			diff++
		}
	}
	diff += int64(max(len(want), len(got)) - n)
	return diff, found[0], nil
}

func names(c *cluster, idx []int) []string {
	out := make([]string, len(idx))
	for k, i := range idx {
		out[k] = c.nodes[i].name
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
