//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"iter"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/pesit/client"
)

// clusterStatus is GET /api/cluster/status.
type clusterStatus struct {
	ClusterName string `json:"clusterName"`
	IsLeader    bool   `json:"isLeader"`
	Members     []struct {
		Name     string `json:"name"`
		Address  string `json:"address"`
		IsLeader bool   `json:"isLeader"`
	} `json:"members"`
	MemberCount int    `json:"memberCount"`
	Node        string `json:"node"`
	Leader      string `json:"leader"`
	Epoch       int64  `json:"epoch"`
}

// membersLeader is the leader according to the members list.
func (s clusterStatus) membersLeader() string {
	var l []string
	for _, m := range s.Members {
		if m.IsLeader {
			l = append(l, m.Name)
		}
	}
	return strings.Join(l, ",")
}

func podStatus(ctx context.Context, c Cluster, p Pod) (clusterStatus, error) {
	var st clusterStatus
	base, err := c.PodAPI(ctx, p)
	if err != nil {
		return st, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/cluster/status", nil)
	if err != nil {
		return st, err
	}
	req.SetBasicAuth(c.APIAuth())
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("pod %s: status %s: %s", p.Name, resp.Status, b)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("pod %s: %w: %s", p.Name, err, b)
	}
	return st, nil
}

// clusterState is one consistent look at the cluster.
type clusterState struct {
	Pods     []Pod
	Leader   Pod // the pod every status API names
	Labelled []string
	Statuses map[string]clusterStatus
}

// steadyState checks once that the cluster is settled: the replica count of
// ready, non-terminating pods; every pod's status API names the same leader,
// which is one of them and says isLeader, with every pod a member; exactly
// one pod labelled and it is that leader (when wantLabel).
func steadyState(ctx context.Context, c Cluster, wantLabel bool) (clusterState, error) {
	var s clusterState
	pods, err := c.Pods(ctx)
	if err != nil {
		return s, err
	}
	s.Pods = pods
	if len(pods) != c.Replicas() {
		return s, fmt.Errorf("%d pods, want %d", len(pods), c.Replicas())
	}
	s.Statuses = map[string]clusterStatus{}
	leader := ""
	for _, p := range pods {
		if !p.Ready || p.Terminating {
			return s, fmt.Errorf("pod %s ready=%v terminating=%v", p.Name, p.Ready, p.Terminating)
		}
		st, err := podStatus(ctx, c, p)
		if err != nil {
			return s, err
		}
		s.Statuses[p.Name] = st
		if st.Leader == "" {
			return s, fmt.Errorf("pod %s sees no leader", p.Name)
		}
		if leader == "" {
			leader = st.Leader
		} else if st.Leader != leader {
			return s, fmt.Errorf("pods disagree on the leader: %s says %s, another says %s", p.Name, st.Leader, leader)
		}
		if st.MemberCount != c.Replicas() || len(st.Members) != c.Replicas() {
			return s, fmt.Errorf("pod %s sees %d members (%d listed), want %d", p.Name, st.MemberCount, len(st.Members), c.Replicas())
		}
		if ml := st.membersLeader(); ml != leader {
			return s, fmt.Errorf("pod %s: members mark %q as leader, leader field says %q", p.Name, ml, leader)
		}
		if st.IsLeader != (p.Name == leader) {
			return s, fmt.Errorf("pod %s: isLeader=%v but the leader is %s", p.Name, st.IsLeader, leader)
		}
		if st.ClusterName != c.ClusterName() {
			return s, fmt.Errorf("pod %s: cluster %q, want %q", p.Name, st.ClusterName, c.ClusterName())
		}
		if p.Labels[labelKey] == "true" {
			s.Labelled = append(s.Labelled, p.Name)
		}
	}
	i := slices.IndexFunc(pods, func(p Pod) bool { return p.Name == leader })
	if i < 0 {
		return s, fmt.Errorf("leader %s is not one of the pods", leader)
	}
	s.Leader = pods[i]
	for _, p := range pods {
		var names []string
		for _, m := range s.Statuses[p.Name].Members {
			names = append(names, m.Name)
		}
		sort.Strings(names)
		for _, q := range pods {
			if !slices.Contains(names, q.Name) {
				return s, fmt.Errorf("pod %s: %s is not among the members %v", p.Name, q.Name, names)
			}
		}
	}
	if wantLabel && (len(s.Labelled) != 1 || s.Labelled[0] != leader) {
		return s, fmt.Errorf("labelled pods %v, want exactly the leader %s (is the k8s labeller wired into vectis serve?)", s.Labelled, leader)
	}
	return s, nil
}

// waitSteady waits until steadyState holds (labels included).
func waitSteady(ctx context.Context, t testing.TB, c Cluster, timeout time.Duration) clusterState {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	var unlabelledSince time.Time
	for {
		s, err := steadyState(ctx, c, true)
		if err == nil {
			return s
		}
		last = err
		// Settled in every other way: the leader labels its pod right after
		// its listeners accept, so a label still missing long after that
		// will not come. Fail fast with that reason.
		if _, e := steadyState(ctx, c, false); e == nil {
			if unlabelledSince.IsZero() {
				unlabelledSince = time.Now()
			} else if time.Since(unlabelledSince) > labelGrace {
				t.Fatalf("cluster settled but not labelled for %v: %v", labelGrace, err)
			}
		} else {
			unlabelledSince = time.Time{}
		}
		if !sleepCtx(ctx, 100*time.Millisecond) {
			t.Fatalf("cluster not steady after %v: %v", timeout, last)
		}
	}
}

// labelGrace is how long a settled cluster may go without the leader label
// before waitSteady gives up.
const labelGrace = 15 * time.Second

func pesitConfig(addr string) client.Config {
	return client.Config{
		Addr: addr, RequesterID: partnerID, ServerID: serverID, Password: partnerPass,
		DialTimeout: time.Second, Timeout: 5 * time.Second,
	}
}

// connectOnce opens a PeSIT session (CONNECT/ACONNECT) through addr and
// releases it.
func connectOnce(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	s, err := client.Dial(ctx, pesitConfig(addr))
	if err != nil {
		return err
	}
	defer s.Close()
	return s.Release(ctx)
}

// timeToConnect starts a CONNECT through the Service every 20 ms until one
// succeeds that the deposed leader old cannot have served, and returns the
// time since from (old nil: any pod may serve it). A CONNECT counts only if
// old's own PeSIT port refused just before it started: a deleted pod's
// listener never comes back, so the session was served by another pod, the
// new leader. A CONNECT that the dying leader still answered (its process
// outlives the delete call) is not a failover.
//
// Attempts overlap: one waiting on a lost SYN (TCP retransmits it after
// 1 s) does not hold back the next ones, so the figure is when the Service
// serves again, as the monitor's 20 ms period promises, not one unlucky
// client's retransmission timer. Each attempt lasts at most 3 s, so at most
// 150 are in flight.
func timeToConnect(ctx context.Context, c Cluster, from time.Time, old *Pod, timeout time.Duration) (time.Duration, error) {
	r, err := connectAfter(ctx, c, from, old, timeout)
	return r.took, err
}

// connected is what connectAfter saw.
type connected struct {
	took time.Duration
	// waiting: attempts started earlier and still without an answer when
	// the first one succeeded (their SYN, or the Service's backend SYN,
	// was lost): a partner that made one of them waited longer.
	waiting int
	// attempt: how long the CONNECT that succeeded took, from its dial to
	// its release (TCP through the Service, the password check on the new
	// leader, ACONNECT, RELEASE).
	attempt time.Duration
}

// connectAfter is timeToConnect, with the attempts still waiting.
func connectAfter(ctx context.Context, c Cluster, from time.Time, old *Pod, timeout time.Duration) (connected, error) {
	const connectProbesInFlight = 150
	ctx, cancel := context.WithTimeout(ctx, timeout)
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel, which runs first
	defer cancel()
	type outcome struct {
		attempt int
		at      time.Time
		err     error
	}
	outcomes := make(chan outcome, connectProbesInFlight)
	pending := map[int]time.Time{} // the attempts in flight and when each started
	attempts := 0
	var last error
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for due := true; ; {
		switch {
		case !due || len(pending) == connectProbesInFlight:
		case old != nil && podAccepts(ctx, c, *old):
			last = fmt.Errorf("the deleted leader %s still accepts on its own PeSIT port", old.Name)
		default:
			attempt := attempts
			attempts++
			pending[attempt] = time.Now()
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := connectOnce(ctx, c.ServiceAddr())
				outcomes <- outcome{attempt, time.Now(), err}
			}()
		}
		due = false
		select {
		case o := <-outcomes:
			began := pending[o.attempt]
			delete(pending, o.attempt)
			if o.err == nil {
				// Attempts a refused or served one would have answered by
				// now: started over 200 ms before this success.
				waiting := 0
				for _, started := range pending {
					if o.at.Sub(started) > 200*time.Millisecond {
						waiting++
					}
				}
				return connected{took: o.at.Sub(from), waiting: waiting, attempt: o.at.Sub(began)}, nil
			}
			last = o.err
		case <-tick.C:
			due = true
		case <-ctx.Done():
			return connected{}, fmt.Errorf("no CONNECT through the Service within %v: %v", timeout, last)
		}
	}
}

// timeToAccept is the time from from until a pod of candidates other than
// old accepts on its own PeSIT port: the outage as the cluster's members can
// know it. The candidates are the pods listed before the disruption (the
// pods that can take over exist then): a list through the API server at
// this moment, busy with the disruption, can take hundreds of milliseconds,
// which would count as outage.
func timeToAccept(ctx context.Context, c Cluster, from time.Time, old Pod, candidates []Pod, timeout time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		for _, p := range candidates {
			if p.Name == old.Name {
				continue
			}
			probed := time.Now()
			if podAccepts(ctx, c, p) {
				return probed.Sub(from), nil
			}
		}
		if !sleepCtx(ctx, 20*time.Millisecond) {
			return 0, fmt.Errorf("no pod but %s accepted on its PeSIT port within %v", old.Name, timeout)
		}
	}
}

// stopTime polls p's own PeSIT port every 10 ms and sends the time of the
// first probe that found it closed: the moment p's stop took effect (the
// watch event of its pod's deletion, or its SIGTERM), as seen from outside
// (a leader closes its listeners first thing). It sends
// the zero time if the port never closed within timeout.
func stopTime(ctx context.Context, c Cluster, p Pod, timeout time.Duration) <-chan time.Time {
	out := make(chan time.Time, 1)
	go func() {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		for {
			probed := time.Now()
			if !podAccepts(ctx, c, p) {
				out <- probed
				return
			}
			if !sleepCtx(ctx, 10*time.Millisecond) {
				out <- time.Time{}
				return
			}
		}
	}()
	return out
}

// podAccepts tells whether p's own PeSIT port accepts a connection.
func podAccepts(ctx context.Context, c Cluster, p Pod) bool {
	a, err := c.PodPeSIT(ctx, p)
	if err != nil {
		return false
	}
	if ap, ok := c.(acceptProber); ok {
		return ap.Accepting(ctx, a)
	}
	d := net.Dialer{Timeout: 200 * time.Millisecond}
	conn, err := d.DialContext(ctx, "tcp", a)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// acceptingPods are the pods whose own PeSIT port accepts a connection.
func acceptingPods(ctx context.Context, c Cluster, pods []Pod) []string {
	var out []string
	for _, p := range pods {
		if podAccepts(ctx, c, p) {
			out = append(out, p.Name)
		}
	}
	return out
}

// logEvent is one JSON log line of a pod.
type logEvent struct {
	Time time.Time `json:"time"`
	Msg  string    `json:"msg"`
	// The labeller's handover line times each of its calls.
	List             string `json:"list"`
	AwaitTerminating string `json:"await_terminating"`
	Confirm          string `json:"confirm"`
	Strip            string `json:"strip"`
	AwaitOnly        string `json:"await_only"`
	ConfirmAgain     string `json:"confirm_again"`
	Label            string `json:"label"`
}

// steps renders the labeller's step times, if the line has them.
func (ev logEvent) steps() string {
	var parts []string
	for _, f := range []struct{ name, v string }{
		{"list", ev.List}, {"await_terminating", ev.AwaitTerminating}, {"confirm", ev.Confirm}, {"strip", ev.Strip},
		{"await_only", ev.AwaitOnly}, {"confirm_again", ev.ConfirmAgain}, {"label", ev.Label},
	} {
		if f.v != "" {
			parts = append(parts, f.name+" "+f.v)
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// podEvents yields, in order, the JSON log lines of pod name from since on
// whose message is one of msgs.
func podEvents(c Cluster, name string, since time.Time, msgs []string) iter.Seq[logEvent] {
	return func(yield func(logEvent) bool) {
		sc := bufio.NewScanner(strings.NewReader(c.PodLog(name)))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var ev logEvent
			if json.Unmarshal(sc.Bytes(), &ev) != nil || ev.Time.Before(since) || !slices.Contains(msgs, ev.Msg) {
				continue
			}
			if !yield(ev) {
				return
			}
		}
	}
}

// firstLog returns the first log line of any of the named pods, after
// since, whose message is one of msgs.
func firstLog(c Cluster, pods []string, since time.Time, msgs ...string) (logEvent, bool) {
	var best logEvent
	found := false
	for _, name := range pods {
		for ev := range podEvents(c, name, since, msgs) {
			if !found || ev.Time.Before(best.Time) {
				best, found = ev, true
			}
			break
		}
	}
	return best, found
}

// failoverMilestones are the log messages that date the steps of a
// takeover.
var failoverMilestones = []string{
	"stepping down",
	"liveness: stream to the leader broke",
	"liveness: leader's listener refused twice after its stream broke: its process is gone",
	"fast failover: leader process gone; its lease revoked",
	"election: elected",
	"k8s: labelled own pod as leader",
	"pod labelled as leader",
	"a lease may have been revoked on the fast failover path; waiting out the old leader's confirmation window",
	"pesit server accepting",
	"leading",
}

// milestones lists, for a slow run, when each step of the takeover
// happened in the pods' logs within 10 s, in milliseconds after since:
// where the time went, for the reader of the test log.
func milestones(c Cluster, pods []string, since time.Time) string {
	var b strings.Builder
	for _, name := range pods {
		for ev := range podEvents(c, name, since, failoverMilestones) {
			if ev.Time.After(since.Add(10 * time.Second)) {
				break
			}
			fmt.Fprintf(&b, "\n\t+%dms %s: %s%s", ev.Time.Sub(since).Milliseconds(), name, ev.Msg, ev.steps())
		}
	}
	return b.String()
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p*float64(len(s))+0.999999) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(s) {
		i = len(s) - 1
	}
	return s[i]
}

// checkLogin reads the cluster status as user.
func checkLogin(ctx context.Context, c Cluster, p Pod, user, password string) error {
	base, err := c.PodAPI(ctx, p)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/cluster/status", nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth(user, password)
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /api/cluster/status on %s: %s: %s", p.Name, resp.Status, b)
	}
	return nil
}

// podMetric reads one unlabelled metric from a pod's /metrics.
func podMetric(ctx context.Context, c Cluster, p Pod, name string) (float64, error) {
	base, err := c.PodAPI(ctx, p)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err != nil {
				return 0, fmt.Errorf("metric %s: %q: %w", name, v, err)
			}
			return f, nil
		}
	}
	return 0, fmt.Errorf("metric %s not found in /metrics", name)
}
