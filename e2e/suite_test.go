//go:build e2e

package e2e

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/vectis-ft/vectis/pesit/client"
	"github.com/vectis-ft/vectis/telemetry/otlptest"
)

// row is one scenario's line in the summary table.
type row struct {
	Scenario      string
	Runs          int
	Connect       []time.Duration // kill (or disruption) to the first CONNECT through the Service
	Label, Listen time.Duration   // longest overlaps seen by the monitor
	BytesLost     int64
	HasBytes      bool
	Result        string
	SpanVsOutage  []time.Duration // failover span duration minus kill->listener accepting, per run
	// StopToConnect: from the old leader's own PeSIT port refusing (the
	// start of its handover as seen from outside: at the watch event of its
	// pod's deletion, or at its SIGTERM, whichever comes first) to the
	// first CONNECT through the Service, per graceful run.
	StopToConnect []time.Duration
}

// report collects the rows of one backend's run.
type report struct {
	backend string
	mu      sync.Mutex
	rows    []*row
}

func (r *report) add(x *row) {
	r.mu.Lock()
	r.rows = append(r.rows, x)
	r.mu.Unlock()
}

// print writes the table as plain aligned text.
func (r *report) print(w io.Writer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(w, "\n== Vectis e2e summary (%s backend) ==\n", r.backend)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\truns\tp50 kill->CONNECT\tp99 kill->CONNECT\tlabel overlap ms\tlistener overlap ms\tbytes lost\tresult\t")
	for _, x := range r.rows {
		p50, p99 := "-", "-"
		if len(x.Connect) > 0 {
			p50 = ms(percentile(x.Connect, 0.50))
			p99 = ms(percentile(x.Connect, 0.99))
		}
		lost := "-"
		if x.HasBytes {
			lost = fmt.Sprint(x.BytesLost)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n", x.Scenario, x.Runs, p50, p99,
			msInt(x.Label), msInt(x.Listen), lost, x.Result)
	}
	tw.Flush()
	for _, x := range r.rows {
		if len(x.StopToConnect) > 0 {
			fmt.Fprintf(w, "%s: old leader's listener closed (handover start: deletion seen or SIGTERM) -> CONNECT through the Service per run: %v\n",
				x.Scenario, x.StopToConnect)
		}
		if len(x.SpanVsOutage) > 0 {
			fmt.Fprintf(w, "%s: vectis.failover span minus kill->listener accepting per run: %v (bound: TTL/5 = %v)\n",
				x.Scenario, x.SpanVsOutage, chartTTL/5)
		}
	}
	fmt.Fprintln(w, "kill->CONNECT: from the pod delete call, or the container's SIGKILL as its node's clock read it, to the first CONNECT/ACONNECT through the PeSIT Service (rollout: longest outage).")
	fmt.Fprintln(w, "overlaps: longest time two pods were labelled / accepted on their PeSIT port at once, probed every 20 ms; both must be 0.")
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }
func msInt(d time.Duration) string {
	return fmt.Sprintf("%d", d.Milliseconds())
}

// suite runs every scenario against one backend, in order, with the
// invariant monitor running throughout. Install is the first scenario.
type suite struct {
	c   Cluster
	rep *report
	mon *monitor
}

func runSuite(t *testing.T, c Cluster) *report {
	s := &suite{c: c, rep: &report{backend: c.Backend()}}
	s.mon = startMonitor(c, 20*time.Millisecond)
	defer s.mon.stop()

	s.scenario(t, "install", 3*time.Minute, s.install)
	s.scenario(t, "push-pull", 2*time.Minute, s.pushPull)
	s.scenario(t, "etcdctl-leader", time.Minute, s.etcdctl)
	s.scenario(t, "standby-delete", 2*time.Minute, s.standbyDelete)
	s.scenario(t, "leader-kill-grace0", 4*time.Minute, func(ctx context.Context, t *testing.T, r *row) {
		zero := int64(0)
		s.leaderDelete(ctx, t, r, &zero, 3)
	})
	graceful, _ := strconv.Atoi(os.Getenv("VECTIS_E2E_GRACEFUL_RUNS"))
	s.scenario(t, "leader-delete-graceful", 2*time.Minute+time.Duration(max(graceful, 2))*30*time.Second, func(ctx context.Context, t *testing.T, r *row) {
		s.leaderDelete(ctx, t, r, nil, envInt(t, "VECTIS_E2E_GRACEFUL_RUNS", 2))
	})
	s.scenario(t, "rollout-restart", 4*time.Minute, s.rolloutRestart)
	crashes, _ := strconv.Atoi(os.Getenv("VECTIS_E2E_CRASHES"))
	s.scenario(t, "leader-container-restart", 2*time.Minute+time.Duration(max(crashes, 3))*40*time.Second, s.containerRestart)
	s.scenario(t, "hung-leader-sigkill", 3*time.Minute, s.hungLeaderKilled)
	s.scenario(t, "transfer-across-failover", 4*time.Minute, s.interruptedTransfer)
	s.scenario(t, "failover-span", 3*time.Minute, s.failoverSpan)
	s.scenario(t, "transfer-across-graceful-stop", 4*time.Minute, s.transferAcrossGracefulStop)
	s.scenario(t, "transfer-across-short-drain", 4*time.Minute, s.transferAcrossShortDrain)
	return s.rep
}

// scenario runs one scenario as a subtest, bounded by timeout, and checks
// the monitor's invariants over exactly its duration.
func (s *suite) scenario(t *testing.T, name string, timeout time.Duration, fn func(context.Context, *testing.T, *row)) {
	r := &row{Scenario: name}
	t.Run(name, func(t *testing.T) {
		// Only scenarios that run (not filtered out by -run) get a row.
		r.Result = "FAIL"
		s.rep.add(r)
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		s.mon.take()
		defer func() {
			o := s.mon.take()
			r.Label, r.Listen = o.Label, o.Listen
			t.Logf("invariants: %s", o)
			if o.Label > 0 {
				t.Errorf("two pods carried the leader label at once for %v (%s)", o.Label, o.LabelWho)
			}
			if o.Listen > 0 {
				t.Errorf("two pods accepted on their PeSIT port at once for %v (%s)", o.Listen, o.ListenWho)
			}
			switch {
			case t.Skipped():
				r.Result = "SKIP"
			case !t.Failed():
				r.Result = "PASS"
			}
		}()
		fn(ctx, t, r)
	})
}

func (s *suite) install(ctx context.Context, t *testing.T, r *row) {
	start := time.Now()
	if err := s.c.Install(ctx); err != nil {
		t.Fatalf("install: %v", err)
	}
	st := waitSteady(ctx, t, s.c, 2*time.Minute)
	r.Runs = 1
	t.Logf("installed: %d pods ready, leader %s, in %v", len(st.Pods), st.Leader.Name, time.Since(start).Round(time.Millisecond))
	if acc := acceptingPods(ctx, s.c, st.Pods); len(acc) != 1 || acc[0] != st.Leader.Name {
		t.Errorf("pods accepting on their PeSIT port: %v, want exactly the leader %s", acc, st.Leader.Name)
	}
	// /metrics agrees with the status API on every pod.
	for _, p := range st.Pods {
		want := 0.0
		if p.Name == st.Leader.Name {
			want = 1
		}
		if got, err := podMetric(ctx, s.c, p, "vectis_cluster_is_leader"); err != nil {
			t.Errorf("pod %s: %v", p.Name, err)
		} else if got != want {
			t.Errorf("pod %s: vectis_cluster_is_leader %v, want %v", p.Name, got, want)
		}
	}
	// The chart's users Secret (api.users in the values, mounted as the
	// usersFile): its admin must be able to log in. Checked once, so that a
	// failure does not lock the client out.
	if err := checkLogin(ctx, s.c, st.Leader, apiUser, apiPassword); err != nil {
		t.Errorf("chart user %s from the users Secret (vectis.api.usersFile): %v", apiUser, err)
	}
	d, err := timeToConnect(ctx, s.c, time.Now(), nil, 10*time.Second)
	if err != nil {
		t.Errorf("CONNECT through the Service: %v", err)
	} else {
		t.Logf("CONNECT through the Service in %v", d)
	}
}

// randomFile writes size pseudo-random bytes (fast, not compressible).
func randomFile(t testing.TB, dir, name string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.NewChaCha8([32]byte{byte(size), byte(time.Now().UnixNano())})
	if _, err := io.CopyN(f, rng, size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// bytesLost compares a received file with its source: bytes missing or
// different.
func bytesLost(t testing.TB, src, got string) int64 {
	t.Helper()
	a, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(got)
	if err != nil {
		t.Errorf("read received file: %v", err)
		return int64(len(a))
	}
	lost := int64(0)
	for i := range a {
		if i >= len(b) || a[i] != b[i] {
			lost++
		}
	}
	if len(b) > len(a) {
		t.Errorf("received %d bytes, sent %d", len(b), len(a))
	}
	if sha256.Sum256(a) != sha256.Sum256(b) {
		t.Errorf("received file differs from the source (%d bytes lost or changed)", lost)
	}
	return lost
}

func (s *suite) pushPull(ctx context.Context, t *testing.T, r *row) {
	waitSteady(ctx, t, s.c, time.Minute)
	dir := t.TempDir()
	src := randomFile(t, dir, "payload.bin", 4<<20)
	cfg := pesitConfig(s.c.ServiceAddr())
	cfg.SyncIntervalKB, cfg.SyncWindow = 256, 4
	retry := client.Retry{Retries: 3, Backoff: 200 * time.Millisecond}
	res, err := client.Push(ctx, cfg, client.SendRequest{Source: src, VirtualFile: "LOOPBACK", StateDir: dir}, retry)
	if err != nil {
		t.Fatalf("push through the Service: %v", err)
	}
	t.Logf("push: %d bytes, %d sync points, %v", res.FileBytes, res.SyncPoints, res.Duration)
	dest := filepath.Join(dir, "back.bin")
	if _, err := client.Pull(ctx, cfg, client.ReceiveRequest{VirtualFile: "LOOPBACK", Dest: dest, StateDir: dir}, retry); err != nil {
		t.Fatalf("pull through the Service: %v", err)
	}
	r.Runs, r.HasBytes = 1, true
	r.BytesLost = bytesLost(t, src, dest)
	// The partner's inbound file too: a receive-only virtual file.
	if _, err := client.Push(ctx, cfg, client.SendRequest{Source: src, VirtualFile: "INBOX", StateDir: dir}, retry); err != nil {
		t.Errorf("push to INBOX through the Service: %v", err)
	}
}

func (s *suite) etcdctl(ctx context.Context, t *testing.T, r *row) {
	st := waitSteady(ctx, t, s.c, time.Minute)
	r.Runs = 1
	prefix := "/vectis/" + s.c.ClusterName() + "/election"
	out, err := s.c.Etcdctl(ctx, "get", "--prefix", prefix+"/", "--sort-by=CREATE", "--order=ASCEND", "--limit=1")
	if err != nil {
		t.Fatalf("etcdctl get: %v", err)
	}
	lines := strings.Fields(out)
	if len(lines) != 2 || !strings.HasPrefix(lines[0], prefix+"/") || lines[1] != st.Leader.Name {
		t.Errorf("etcdctl get --prefix %s/ --limit=1 printed %q, want the key and leader %s", prefix, out, st.Leader.Name)
	}
	ectx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	out, _ = s.c.Etcdctl(ectx, "elect", "-l", prefix)
	lines = strings.Fields(out)
	if len(lines) < 2 || lines[1] != st.Leader.Name {
		t.Errorf("etcdctl elect -l %s printed %q, want leader %s", prefix, out, st.Leader.Name)
	}
	// (That exactly the leader is labelled is part of waitSteady.)
}

func (s *suite) standbyDelete(ctx context.Context, t *testing.T, r *row) {
	st := waitSteady(ctx, t, s.c, time.Minute)
	i := slices.IndexFunc(st.Pods, func(p Pod) bool { return p.Name != st.Leader.Name })
	victim := st.Pods[i]
	// The Service must keep answering while a standby goes away.
	pctx, stopProbe := context.WithCancel(ctx)
	var failures, probes int
	var pwg sync.WaitGroup
	pwg.Add(1)
	go func() {
		defer pwg.Done()
		for sleepCtx(pctx, 100*time.Millisecond) {
			probes++
			if err := connectOnce(pctx, s.c.ServiceAddr()); err != nil && pctx.Err() == nil {
				failures++
				t.Logf("CONNECT through the Service failed while a standby was deleted: %v", err)
			}
		}
	}()
	// And a session open on the leader must survive it: a standby that
	// goes and a replacement that starts are no business of the leader's.
	dir := t.TempDir()
	src := randomFile(t, dir, "during-standby.bin", 1<<20)
	sess, err := client.Dial(ctx, pesitConfig(s.c.ServiceAddr()))
	if err != nil {
		t.Fatalf("open a session through the Service: %v", err)
	}
	defer sess.Close()
	if err := s.c.DeletePod(ctx, victim.Name, nil); err != nil {
		t.Fatalf("delete standby %s: %v", victim.Name, err)
	}
	after := waitReplaced(ctx, t, s.c, victim.Name, 90*time.Second)
	time.Sleep(time.Second) // let the replacement settle in fully
	if _, err := sess.Send(ctx, client.SendRequest{Source: src, VirtualFile: "INBOX", NoRestart: true}); err != nil {
		t.Errorf("a session opened on the leader before a standby was replaced is broken afterwards: %v", err)
	} else if err := sess.Release(ctx); err != nil {
		t.Errorf("release: %v", err)
	}
	stopProbe()
	pwg.Wait()
	r.Runs = 1
	if after.Leader.Name != st.Leader.Name {
		t.Errorf("leader changed from %s to %s when a standby was deleted", st.Leader.Name, after.Leader.Name)
	}
	for _, p := range after.Pods {
		if !slices.ContainsFunc(st.Pods, func(q Pod) bool { return q.Name == p.Name }) {
			if after.Statuses[p.Name].IsLeader || p.Labels[labelKey] == "true" {
				t.Errorf("replacement %s is leader/labelled; want a standby", p.Name)
			}
			t.Logf("replacement %s joined as a standby", p.Name)
		}
	}
	if failures > 0 {
		t.Errorf("%d of %d CONNECTs through the Service failed while a standby was deleted", failures, probes)
	}
}

// waitReplaced waits until pod gone has disappeared and the cluster is
// steady again.
func waitReplaced(ctx context.Context, t testing.TB, c Cluster, gone string, timeout time.Duration) clusterState {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		st, err := steadyState(ctx, c, true)
		if err == nil && !slices.ContainsFunc(st.Pods, func(p Pod) bool { return p.Name == gone }) {
			return st
		}
		if err == nil {
			err = fmt.Errorf("pod %s still there", gone)
		}
		last = err
		if !sleepCtx(ctx, 100*time.Millisecond) {
			t.Fatalf("no steady cluster without %s after %v: %v", gone, timeout, last)
		}
	}
}

// leaderDelete deletes the leader runs times (grace nil: the pod's own
// grace period) and measures each time to the first CONNECT through the
// Service.
func (s *suite) leaderDelete(ctx context.Context, t *testing.T, r *row, grace *int64, runs int) {
	for i := 0; i < runs; i++ {
		st := waitSteady(ctx, t, s.c, 90*time.Second)
		old := st.Leader
		kill := time.Now()
		if err := s.c.DeletePod(ctx, old.Name, grace); err != nil {
			t.Fatalf("delete leader %s: %v", old.Name, err)
		}
		deleted := time.Since(kill)
		// The new leader's own listener, beside the Service: what the
		// handover takes, apart from the Service's routing delay. And the
		// old leader's listener closing: when its SIGTERM arrived.
		accepted := make(chan time.Duration, 1)
		go func() {
			d, err := timeToAccept(ctx, s.c, kill, old, st.Pods, time.Minute)
			if err != nil {
				d = -1
			}
			accepted <- d
		}()
		stopped := stopTime(ctx, s.c, old, time.Minute)
		conn, err := connectAfter(ctx, s.c, kill, &old, time.Minute)
		d := conn.took
		acc := <-accepted
		if err != nil {
			t.Fatalf("run %d: after deleting leader %s: %v", i+1, old.Name, err)
		}
		if st := <-stopped; !st.IsZero() && grace == nil {
			r.StopToConnect = append(r.StopToConnect, (d - st.Sub(kill)).Round(time.Millisecond))
		}
		r.Connect = append(r.Connect, d)
		r.Runs++
		if d > 500*time.Millisecond {
			var names []string
			for _, p := range st.Pods {
				names = append(names, p.Name)
			}
			t.Logf("run %d took %v; the delete call returned after %v; the CONNECT that succeeded took %v; milestones after the call:%s",
				i+1, d.Round(time.Millisecond), deleted.Round(time.Millisecond), conn.attempt.Round(time.Millisecond), milestones(s.c, names, kill))
		}
		if grace == nil {
			// The old leader must stop on SIGTERM, well within the grace
			// period (30 s), not be killed at its end.
			if err := waitGone(ctx, s.c, old.Name, 25*time.Second); err != nil {
				t.Errorf("run %d: leader %s did not stop after SIGTERM: %v", i+1, old.Name, err)
			}
		}
		// waitReplaced returns a steady cluster without old: its leader is
		// another pod.
		after := waitReplaced(ctx, t, s.c, old.Name, 90*time.Second)
		t.Logf("run %d: leader %s deleted (grace %v), new leader's listener accepting after %v, first CONNECT through the Service after %v, new leader %s",
			i+1, old.Name, graceString(grace), acc.Round(time.Millisecond), d.Round(time.Millisecond), after.Leader.Name)
	}
}

func graceString(g *int64) string {
	if g == nil {
		return "default"
	}
	return fmt.Sprintf("%ds", *g)
}

func waitGone(ctx context.Context, c Cluster, name string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		pods, err := c.Pods(ctx)
		if err == nil && !slices.ContainsFunc(pods, func(p Pod) bool { return p.Name == name }) {
			return nil
		}
		if !sleepCtx(ctx, 50*time.Millisecond) {
			return fmt.Errorf("pod %s still present after %v", name, timeout)
		}
	}
}

// rolloutOutageBound bounds the longest PeSIT outage through the Service
// during a rollout restart: the leader's pod goes with a graceful handoff,
// so no outage may be longer than a failover after a crash (TTL 5 s + 1 s).
const rolloutOutageBound = 6 * time.Second

func (s *suite) rolloutRestart(ctx context.Context, t *testing.T, r *row) {
	st := waitSteady(ctx, t, s.c, 90*time.Second)
	// Availability through the Service during the rollout: the longest
	// time from a failed CONNECT to the next successful one.
	pctx, stopProbe := context.WithCancel(ctx)
	var outage time.Duration
	var pwg sync.WaitGroup
	pwg.Add(1)
	go func() {
		defer pwg.Done()
		var lastOK time.Time
		down := false
		for sleepCtx(pctx, 20*time.Millisecond) {
			err := connectOnce(pctx, s.c.ServiceAddr())
			now := time.Now()
			switch {
			case err == nil && down:
				if d := now.Sub(lastOK); d > outage {
					outage = d
				}
				down, lastOK = false, now
			case err == nil:
				lastOK = now
			case pctx.Err() == nil && !lastOK.IsZero():
				down = true
			}
		}
		// An outage still open when probing stops counts up to now.
		if down {
			if d := time.Since(lastOK); d > outage {
				outage = d
			}
		}
	}()
	if err := s.c.RolloutRestart(ctx); err != nil {
		t.Fatalf("rollout restart: %v", err)
	}
	var last error
	for {
		after, err := steadyState(ctx, s.c, true)
		if err == nil {
			for _, p := range after.Pods {
				if slices.ContainsFunc(st.Pods, func(q Pod) bool { return q.Name == p.Name }) {
					err = fmt.Errorf("old pod %s still there", p.Name)
				}
			}
		}
		if err == nil {
			t.Logf("rolled out: leader %s -> %s", st.Leader.Name, after.Leader.Name)
			break
		}
		last = err
		if !sleepCtx(ctx, 200*time.Millisecond) {
			stopProbe()
			pwg.Wait()
			t.Fatalf("rollout not complete: %v", last)
		}
	}
	stopProbe()
	pwg.Wait()
	r.Runs = 1
	r.Connect = []time.Duration{outage}
	t.Logf("longest PeSIT outage through the Service during the rollout: %v", outage)
	if outage > rolloutOutageBound {
		t.Errorf("longest PeSIT outage through the Service during the rollout: %v, want at most %v", outage, rolloutOutageBound)
	}
}

func (s *suite) interruptedTransfer(ctx context.Context, t *testing.T, r *row) {
	st := waitSteady(ctx, t, s.c, 90*time.Second)
	dir := t.TempDir()
	const size = 64 << 20
	src := randomFile(t, dir, "big.bin", size)
	cfg := pesitConfig(s.c.ServiceAddr())
	cfg.SyncIntervalKB, cfg.SyncWindow = 1024, 4
	cfg.Timeout = 10 * time.Second
	// The push is held at the halfway mark until the leader is dead: a real
	// kubelet stops a pod deleted with grace 0 only after a moment, long
	// enough for the rest of the file to reach the old leader.
	halfway, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	type outcome struct {
		res client.Result
		err error
	}
	done := make(chan outcome, 1)
	attempts := 0
	go func() {
		res, err := client.Push(ctx, cfg, client.SendRequest{
			Source: src, VirtualFile: "LOOPBACK", StateDir: dir,
			Progress: func(p client.Progress) {
				if p.Bytes >= 16<<20 {
					once.Do(func() {
						close(halfway)
						select {
						case <-resume:
						case <-ctx.Done():
						}
					})
				}
			},
		}, client.Retry{Retries: 40, Backoff: 200 * time.Millisecond, MaxBackoff: time.Second,
			OnRetry: func(n int, err error, _ time.Duration) { attempts = n; t.Logf("push attempt %d failed: %v", n, err) }})
		done <- outcome{res, err}
	}()
	select {
	case <-halfway:
	case o := <-done:
		t.Fatalf("push ended before the leader was killed: %+v, %v", o.res, o.err)
	case <-ctx.Done():
		t.Fatal("push made no progress")
	}
	kill, inPlace, err := crashPod(ctx, s.c, st.Leader)
	if err != nil {
		close(resume)
		t.Fatalf("kill leader: %v", err)
	}
	for podAccepts(ctx, s.c, st.Leader) && sleepCtx(ctx, 20*time.Millisecond) {
	}
	close(resume)
	if d, err := timeToConnect(ctx, s.c, kill, &st.Leader, time.Minute); err != nil {
		t.Errorf("after the kill: %v", err)
	} else {
		r.Connect = append(r.Connect, d)
	}
	o := <-done
	if o.err != nil {
		t.Fatalf("push across the failover: %v (after %d retries)", o.err, attempts)
	}
	t.Logf("push: %+v", o.res)
	if !o.res.Restarted || o.res.RestartPoint == 0 {
		t.Errorf("push did not resume from a sync point (restarted=%v, restart point %d): the new leader did not pick up the transfer",
			o.res.Restarted, o.res.RestartPoint)
	}
	dest := filepath.Join(dir, "back.bin")
	if _, err := client.Pull(ctx, cfg, client.ReceiveRequest{VirtualFile: "LOOPBACK", Dest: dest, StateDir: dir},
		client.Retry{Retries: 10, Backoff: 200 * time.Millisecond}); err != nil {
		t.Fatalf("pull back: %v", err)
	}
	r.Runs, r.HasBytes = 1, true
	r.BytesLost = bytesLost(t, src, dest)
	waitRecovered(ctx, t, s.c, st.Leader, inPlace)
}

func (s *suite) failoverSpan(ctx context.Context, t *testing.T, r *row) {
	rc, ok := s.c.(interface{ Traces() *otlptest.Receiver })
	if !ok || rc.Traces() == nil {
		t.Skipf("the %s backend has no OTLP receiver the pods can reach", s.c.Backend())
	}
	// Several kills: which standby wins, and how its view of the old
	// leader races with its campaign, changes from one to the next.
	for i := 1; i <= 3; i++ {
		s.oneFailoverSpan(ctx, t, r, rc.Traces(), i)
	}
}

func (s *suite) oneFailoverSpan(ctx context.Context, t *testing.T, r *row, recv *otlptest.Receiver, run int) {
	st := waitSteady(ctx, t, s.c, 90*time.Second)
	kill, inPlace, err := crashPod(ctx, s.c, st.Leader)
	if err != nil {
		t.Fatalf("run %d: kill leader: %v", run, err)
	}
	// The span is compared with the outage as the new leader lived it:
	// kill -> its own listener accepting. kill -> CONNECT through the
	// Service adds the Service's routing delay, which no node can see.
	type acceptTime struct {
		d   time.Duration
		err error
	}
	accepted := make(chan acceptTime, 1)
	go func() {
		d, err := timeToAccept(ctx, s.c, kill, st.Leader, st.Pods, time.Minute)
		accepted <- acceptTime{d, err}
	}()
	d, err := timeToConnect(ctx, s.c, kill, &st.Leader, time.Minute)
	if err != nil {
		t.Fatalf("run %d: %v", run, err)
	}
	r.Connect = append(r.Connect, d)
	r.Runs++
	acc := <-accepted
	if acc.err != nil {
		t.Fatalf("run %d: %v", run, acc.err)
	}
	after := waitRecovered(ctx, t, s.c, st.Leader, inPlace)
	span, err := recv.WaitFor(func(sp otlptest.Span) bool {
		return sp.Name == "vectis.failover" && sp.Attributes["vectis.new_leader"] == after.Leader.Name && !sp.End.Before(kill)
	}, 15*time.Second)
	if err != nil {
		t.Fatalf("run %d: no vectis.failover span from the new leader %s: %v", run, after.Leader.Name, err)
	}
	t.Logf("run %d: vectis.failover of %s: %v long, starts %v after the kill, attributes %v",
		run, after.Leader.Name, span.End.Sub(span.Start), span.Start.Sub(kill), span.Attributes)
	if span.Attributes["vectis.previous_leader"] != st.Leader.Name {
		t.Errorf("run %d: vectis.failover span: previous_leader %q, want the killed leader %s",
			run, span.Attributes["vectis.previous_leader"], st.Leader.Name)
	}
	t.Logf("run %d: kill->listener accepting %v, kill->CONNECT through the Service %v", run, acc.d, d)
	s.checkSpanCoversOutage(t, r, run, span, kill, acc.d)
	if got := span.Resource["k8s.pod.name"]; got != after.Leader.Name {
		t.Errorf("run %d: span resource k8s.pod.name %q, want %s", run, got, after.Leader.Name)
	}
	want := []string{"vectis.failover.fence", "vectis.failover.pesit.start", "vectis.failover.label"}
	var children []string
	deadline := time.Now().Add(5 * time.Second)
	for {
		children = children[:0]
		for _, sp := range recv.Spans() {
			if sp.TraceID == span.TraceID && sp.ParentSpanID == span.SpanID {
				children = append(children, sp.Name)
			}
		}
		if containsAll(children, want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !containsAll(children, want) {
		t.Errorf("run %d: children of vectis.failover: %v, want %v", run, children, want)
	}
}

// crashPod kills p's process at once, as a crash would. On a real kubelet
// a pod deleted with grace 0 still gets SIGTERM and two seconds to drain, so
// there the container's process is killed instead, and the kubelet
// restarts it in the same pod (inPlace); the process kubelet SIGKILLs on a
// grace-0 delete.
func crashPod(ctx context.Context, c Cluster, p Pod) (killed time.Time, inPlace bool, err error) {
	if ck, ok := c.(containerKiller); ok {
		killed, err := ck.KillContainer(ctx, p)
		return killed, true, err
	}
	zero := int64(0)
	killed = time.Now()
	return killed, false, c.DeletePod(ctx, p.Name, &zero)
}

// waitRecovered waits for a steady cluster after crashPod(p): p restarted in
// place, or replaced.
func waitRecovered(ctx context.Context, t testing.TB, c Cluster, p Pod, inPlace bool) clusterState {
	t.Helper()
	if inPlace {
		return waitRestartedInPlace(ctx, t, c, p, 90*time.Second)
	}
	return waitReplaced(ctx, t, c, p.Name, 90*time.Second)
}

// containerKiller is for backends with a real kubelet, which restarts a
// container that died inside its pod.
type containerKiller interface {
	// KillContainer returns the time the signal was sent.
	KillContainer(ctx context.Context, p Pod) (time.Time, error)
}

// containerRestart kills the leader's container process (SIGKILL, as a
// crash or the OOM killer would) without deleting its pod. A standby must
// take over (at once with fast failover: the dead process's liveness port
// refuses), and the kubelet's restart of the container in the same pod must
// rejoin as a standby, not take the lead back or fight for it. It runs
// VECTIS_E2E_CRASHES times (default 3); between runs the restarted pod is
// deleted, so that the kubelet's crash-loop back-off, which grows with each
// crash of the same pod, does not stretch the run.
func (s *suite) containerRestart(ctx context.Context, t *testing.T, r *row) {
	ck, ok := s.c.(containerKiller)
	if !ok {
		t.Skipf("the %s backend has no kubelet that restarts a container in its pod", s.c.Backend())
	}
	runs := envInt(t, "VECTIS_E2E_CRASHES", 3)
	for i := 1; i <= runs; i++ {
		st := waitSteady(ctx, t, s.c, 90*time.Second)
		old := st.Leader
		kill, err := ck.KillContainer(ctx, old)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := connectAfter(ctx, s.c, kill, &old, time.Minute)
		if err != nil {
			t.Fatalf("run %d: after killing the leader's container: %v", i, err)
		}
		d := conn.took
		if conn.waiting > 0 {
			t.Logf("run %d: %d CONNECT attempts started before the first success were still waiting for an answer (a lost SYN)", i, conn.waiting)
		}
		r.Connect = append(r.Connect, d)
		r.Runs++
		if d > 800*time.Millisecond {
			var names []string
			for _, p := range st.Pods {
				names = append(names, p.Name)
			}
			t.Logf("run %d took %v; milestones after the kill:%s", i, d.Round(time.Millisecond), milestones(s.c, names, kill))
		}
		after := waitRestartedInPlace(ctx, t, s.c, old, 90*time.Second)
		t.Logf("run %d: leader container of %s killed at %s: first CONNECT through the Service after %v, new leader %s, %s restarted and rejoined as a standby",
			i, old.Name, kill.UTC().Format("15:04:05.000"), d.Round(time.Millisecond), after.Leader.Name, old.Name)
		if i < runs {
			if err := s.c.DeletePod(ctx, old.Name, nil); err != nil {
				t.Fatalf("delete the restarted standby %s: %v", old.Name, err)
			}
			waitReplaced(ctx, t, s.c, old.Name, 90*time.Second)
		}
	}
}

// envInt is a positive count from the environment, else def.
func envInt(t testing.TB, key string, def int) int {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive count", key, v)
	}
	return n
}

// waitRestartedInPlace waits for a steady cluster with the same pods, old's
// container restarted in place by the kubelet and rejoined as a standby: it
// must not take the lead back from the standby that took over.
func waitRestartedInPlace(ctx context.Context, t testing.TB, c Cluster, old Pod, timeout time.Duration) clusterState {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		after, err := steadyState(ctx, c, true)
		if err == nil {
			i := slices.IndexFunc(after.Pods, func(p Pod) bool { return p.Name == old.Name })
			switch {
			case i < 0:
				t.Fatalf("pod %s is gone: the kubelet should have restarted its container in place", old.Name)
			case after.Pods[i].Restarts <= old.Restarts:
				err = fmt.Errorf("pod %s: restart count %d, not yet above %d", old.Name, after.Pods[i].Restarts, old.Restarts)
			case after.Leader.Name == old.Name:
				t.Fatalf("the restarted %s leads again; want a standby to have taken over", old.Name)
			default:
				return after
			}
		}
		last = err
		if !sleepCtx(ctx, 200*time.Millisecond) {
			t.Fatalf("no steady cluster with %s restarted: %v", old.Name, last)
		}
	}
}

// containerStopper is for backends with a real kubelet, whose SIGKILL at
// the end of the grace period is the only way a hung process goes.
type containerStopper interface {
	StopContainer(ctx context.Context, p Pod) error
}

// hungLeaderKilled freezes the leader's process (SIGSTOP: a leader that
// hangs and cannot act on SIGTERM), then deletes its pod with a 2 s grace
// period: the kubelet's SIGTERM goes unanswered and its SIGKILL follows when
// the grace period expires. A standby must take over once the lease
// expires, with no overlap with the frozen process, whose listening socket
// still completes TCP handshakes until it is killed.
func (s *suite) hungLeaderKilled(ctx context.Context, t *testing.T, r *row) {
	cs, ok := s.c.(containerStopper)
	if !ok {
		t.Skipf("the %s backend has no kubelet to SIGKILL a hung container after its grace period", s.c.Backend())
	}
	st := waitSteady(ctx, t, s.c, 90*time.Second)
	old := st.Leader
	if err := cs.StopContainer(ctx, old); err != nil {
		t.Fatal(err)
	}
	grace := int64(2)
	kill := time.Now()
	if err := s.c.DeletePod(ctx, old.Name, &grace); err != nil {
		t.Fatalf("delete the hung leader %s: %v", old.Name, err)
	}
	d, err := timeToConnect(ctx, s.c, kill, &old, time.Minute)
	if err != nil {
		t.Fatalf("after deleting the hung leader %s: %v", old.Name, err)
	}
	r.Connect, r.Runs = append(r.Connect, d), 1
	after := waitReplaced(ctx, t, s.c, old.Name, 90*time.Second)
	t.Logf("hung leader %s deleted with grace %ds (SIGKILL at its end): first CONNECT through the Service after %v, new leader %s",
		old.Name, grace, d.Round(time.Millisecond), after.Leader.Name)
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}
