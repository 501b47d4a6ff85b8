//go:build e2e

package hascenarios

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

// probeInterval paces the monitor's PeSIT probe rounds.
const probeInterval = 10 * time.Millisecond

// round is one probe of every node's PeSIT port, all dialled at once.
type round struct {
	at        time.Time
	accepting []bool // per node; false for a frozen node (not probed)
	waking    []bool // the node was resumed (SIGCONT) and had not yet closed its port
	frozen    []bool // the node was SIGSTOPped during the round (not probed)
}

func (r round) acceptingNodes() []int {
	var out []int
	for i, a := range r.accepting {
		if a {
			out = append(out, i)
		}
	}
	return out
}

// overlapTracker measures runs of time during which a condition (two
// nodes accepting, two pods labelled) held.
type overlapTracker struct {
	start   time.Time
	longest time.Duration
	total   time.Duration
	count   int
	what    []string // description of each run, for the failure message
}

// observe feeds the condition at time t. A run lasts from the first
// observation where it held to the first where it no longer did, so a run
// seen by a single probe round counts as one round, never as 0.
func (o *overlapTracker) observe(t time.Time, holds bool, desc func() string) {
	switch {
	case holds && o.start.IsZero():
		o.start = t
		o.count++
		if len(o.what) < 10 {
			o.what = append(o.what, fmt.Sprintf("%s at +%v", desc(), t.Format("15:04:05.000")))
		}
	case !holds && !o.start.IsZero():
		o.close(t)
	}
}

func (o *overlapTracker) close(t time.Time) {
	if o.start.IsZero() {
		return
	}
	d := t.Sub(o.start)
	if d <= 0 {
		d = time.Millisecond
	}
	o.total += d
	if d > o.longest {
		o.longest = d
	}
	o.start = time.Time{}
}

// monitor watches the invariants of one scenario continuously: every
// probeInterval it dials every node's PeSIT port (all at once), and it
// watches every pod's labels (a watch sees every change, in order). It
// records the longest time two nodes accepted at once and two pods carried
// the leader label at once.
type monitor struct {
	nodes []*vnode
	cs    kubernetes.Interface
	ns    string

	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	rounds   []round
	listen   overlapTracker // every round
	awake    overlapTracker // rounds of nodes that are not just waking up from SIGSTOP
	label    overlapTracker
	labels   map[string]bool      // pod -> carries the leader label
	injected map[string]bool      // labels the test put on a pod itself
	labelAt  map[string]time.Time // last change of each pod's label
	watchErr int
	stopped  bool
}

func startMonitor(nodes []*vnode, cs kubernetes.Interface, ns string) *monitor {
	ctx, cancel := context.WithCancel(context.Background())
	m := &monitor{nodes: nodes, cs: cs, ns: ns, cancel: cancel,
		labels: map[string]bool{}, injected: map[string]bool{}, labelAt: map[string]time.Time{}}
	m.wg.Add(2)
	go func() { defer m.wg.Done(); m.probeLoop(ctx) }()
	go func() { defer m.wg.Done(); m.labelLoop(ctx) }()
	return m
}

// stop ends the monitor; the results stay readable.
func (m *monitor) stop() {
	m.cancel()
	m.wg.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.stopped {
		now := time.Now()
		m.listen.close(now)
		m.awake.close(now)
		m.label.close(now)
		m.stopped = true
	}
}

func (m *monitor) probeLoop(ctx context.Context) {
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		m.probe()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *monitor) probe() {
	r := round{at: time.Now(), accepting: make([]bool, len(m.nodes)), waking: make([]bool, len(m.nodes)), frozen: make([]bool, len(m.nodes))}
	frozenBefore := make([]bool, len(m.nodes))
	for i, n := range m.nodes {
		frozenBefore[i] = n.frozen.Load()
		r.waking[i] = n.waking.Load()
	}
	var wg sync.WaitGroup
	for i, n := range m.nodes {
		if frozenBefore[i] {
			// A SIGSTOPped process cannot accept: the kernel would complete
			// the handshake into its backlog, which says nothing about the
			// node, and would queue connections for it to find on waking.
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A refused connect on loopback is immediate; the timeout only
			// bounds a node that stopped while we dialled. A timeout is no
			// evidence of a closed listener (on a busy machine this test
			// process may not run within 50 ms, and the dial then times
			// out although the kernel completed it), so it is asked again
			// once, longer: a closed listener refuses at once both times.
			r.accepting[i] = n.accepting(50*time.Millisecond) || n.accepting(500*time.Millisecond)
		}()
	}
	wg.Wait()
	for i, n := range m.nodes {
		if frozenBefore[i] || n.frozen.Load() {
			r.accepting[i], r.frozen[i] = false, true
		}
		if r.waking[i] && !r.accepting[i] && !frozenBefore[i] {
			n.waking.Store(false)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return
	}
	m.rounds = append(m.rounds, r)
	acc := r.acceptingNodes()
	desc := func() string {
		names := make([]string, len(acc))
		for i, a := range acc {
			names[i] = m.nodes[a].name
			if r.waking[a] {
				names[i] += "(waking from SIGSTOP)"
			}
		}
		return fmt.Sprintf("nodes %v accepting", names)
	}
	m.listen.observe(r.at, len(acc) >= 2, desc)
	awake := 0
	for _, a := range acc {
		if !r.waking[a] {
			awake++
		}
	}
	m.awake.observe(r.at, awake >= 2, desc)
}

// labelLoop lists the pods, then watches them from the list's version;
// when the watch ends (API server down) it lists again.
func (m *monitor) labelLoop(ctx context.Context) {
	for ctx.Err() == nil {
		list, err := m.cs.CoreV1().Pods(m.ns).List(ctx, metav1.ListOptions{LabelSelector: podSelector})
		if err != nil {
			m.noteWatchErr()
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		now := time.Now()
		for i := range list.Items {
			m.setLabel(now, &list.Items[i])
		}
		w, err := m.cs.CoreV1().Pods(m.ns).Watch(ctx, metav1.ListOptions{
			LabelSelector: podSelector, ResourceVersion: list.ResourceVersion,
		})
		if err != nil {
			m.noteWatchErr()
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		for ev := range w.ResultChan() {
			switch ev.Type {
			case watch.Added, watch.Modified:
				if p, ok := ev.Object.(*corev1.Pod); ok {
					m.setLabel(time.Now(), p)
				}
			case watch.Deleted:
				if p, ok := ev.Object.(*corev1.Pod); ok {
					p = p.DeepCopy()
					delete(p.Labels, labelKey)
					m.setLabel(time.Now(), p)
				}
			}
		}
		w.Stop()
	}
}

func (m *monitor) noteWatchErr() {
	m.mu.Lock()
	m.watchErr++
	m.mu.Unlock()
}

func (m *monitor) setLabel(t time.Time, p *corev1.Pod) {
	has := p.Labels[labelKey] == "true"
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return
	}
	if m.labels[p.Name] != has {
		m.labelAt[p.Name] = t
	}
	m.labels[p.Name] = has
	if !has {
		delete(m.injected, p.Name)
	}
	var labelled []string
	for name, l := range m.labels {
		if l && !m.injected[name] {
			labelled = append(labelled, name)
		}
	}
	m.label.observe(t, len(labelled) >= 2, func() string { return fmt.Sprintf("pods %v labelled", labelled) })
}

// inject marks pod's coming leader label as put there by the test, so
// that it does not count as an overlap until it is removed.
func (m *monitor) inject(pod string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.injected[pod] = true
}

// labelled returns the pods carrying the leader label now, as watched.
func (m *monitor) labelled() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, n := range m.nodes {
		if m.labels[n.name] {
			out = append(out, n.name)
		}
	}
	return out
}

// labelChange is when pod's label last changed, as watched.
func (m *monitor) labelChange(pod string) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.labelAt[pod]
}

// overlaps returns the longest listener overlap (all rounds, and without
// nodes waking from SIGSTOP) and label overlap so far, with a description
// of each.
func (m *monitor) overlaps() (listen, awake, label time.Duration, desc string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	longest := func(o *overlapTracker) time.Duration {
		d := o.longest
		if !o.start.IsZero() && now.Sub(o.start) > d {
			d = now.Sub(o.start)
		}
		return d
	}
	return longest(&m.listen), longest(&m.awake), longest(&m.label),
		fmt.Sprintf("listener overlaps: %d %v; label overlaps: %d %v", m.listen.count, m.listen.what, m.label.count, m.label.what)
}

// rounds since t, copied.
func (m *monitor) roundsSince(t time.Time) []round {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []round
	for i := len(m.rounds) - 1; i >= 0 && !m.rounds[i].at.Before(t); i-- {
		out = append(out, m.rounds[i])
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// waitRound waits until a probe round started at or after since satisfies
// cond, and returns it.
func (m *monitor) waitRound(ctx context.Context, since time.Time, cond func(round) bool) (round, error) {
	seen := since
	for {
		for _, r := range m.roundsSince(seen) {
			if cond(r) {
				return r, nil
			}
			seen = r.at.Add(time.Nanosecond)
		}
		select {
		case <-ctx.Done():
			return round{}, ctx.Err()
		case <-time.After(probeInterval / 2):
		}
	}
}

// waitServing waits for the first round since t in which a node other
// than exclude (-1: any) accepts, and returns that node and the round's
// time.
func (m *monitor) waitServing(ctx context.Context, since time.Time, exclude int) (int, time.Time, error) {
	r, err := m.waitRound(ctx, since, func(r round) bool {
		for _, i := range r.acceptingNodes() {
			if i != exclude {
				return true
			}
		}
		return false
	})
	if err != nil {
		return -1, time.Time{}, err
	}
	for _, i := range r.acceptingNodes() {
		if i != exclude {
			return i, r.at, nil
		}
	}
	return -1, time.Time{}, fmt.Errorf("unreachable")
}

// waitNotAccepting waits for the first round since t in which node i does
// not accept.
func (m *monitor) waitNotAccepting(ctx context.Context, since time.Time, i int) (time.Time, error) {
	r, err := m.waitRound(ctx, since, func(r round) bool { return !r.accepting[i] && !r.frozen[i] })
	return r.at, err
}

// lastAccepting is the last round since t in which node i accepted
// (zero if none).
func (m *monitor) lastAccepting(since time.Time, i int) time.Time {
	var last time.Time
	for _, r := range m.roundsSince(since) {
		if r.accepting[i] {
			last = r.at
		}
	}
	return last
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
