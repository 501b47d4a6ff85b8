//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"time"
)

// monitor checks the two safety invariants of the HA design for as long as
// it runs: at most one pod accepts on its PeSIT ports (plain or TLS), and at
// most one pod carries the leader label. Every probeInterval it reads every
// pod's labels and connects, all at once, to every PeSIT address, plain and
// TLS, it has seen and not found dead (a dead pod's address is never
// reused), and it keeps the longest run of rounds in which two or more pods
// did either.
type monitor struct {
	c        Cluster
	interval time.Duration

	mu     sync.Mutex
	addrs  map[string]string // address -> pod name
	label  overlap
	listen overlap
	rounds int

	cancel context.CancelFunc
	done   chan struct{}
}

// acceptProber is for backends where a TCP connect alone does not tell
// whether the pod accepts (a port-forward accepts for a closed port too).
type acceptProber interface {
	Accepting(ctx context.Context, addr string) bool
}

// overlap is the longest run of rounds with two or more pods at once.
type overlap struct {
	since, last time.Time
	who         string
	max         time.Duration
	maxWho      string
}

func (o *overlap) observe(now time.Time, who []string) {
	if len(who) >= 2 {
		if o.since.IsZero() {
			o.since = now
			o.who = strings.Join(who, "+")
		}
		o.last = now
		return
	}
	o.close(now)
}

// close ends an open run at now: it lasted at least from its first round
// to the first round without it.
func (o *overlap) close(now time.Time) {
	if o.since.IsZero() {
		return
	}
	if d := now.Sub(o.since); d > o.max {
		o.max, o.maxWho = d, o.who
	}
	o.since = time.Time{}
}

func startMonitor(c Cluster, interval time.Duration) *monitor {
	ctx, cancel := context.WithCancel(context.Background())
	m := &monitor{c: c, interval: interval, addrs: map[string]string{}, cancel: cancel, done: make(chan struct{})}
	go m.run(ctx)
	return m
}

func (m *monitor) run(ctx context.Context) {
	defer close(m.done)
	t := time.NewTicker(m.interval)
	defer t.Stop()
	d := net.Dialer{Timeout: 100 * time.Millisecond}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pods, err := m.c.Pods(ctx)
		if err != nil {
			continue
		}
		now := time.Now()
		var labelled []string
		present := map[string]bool{}
		for _, p := range pods {
			present[p.Name] = true
			if p.Labels[labelKey] == "true" {
				labelled = append(labelled, p.Name)
			}
			if p.IP != "" {
				for _, addr := range []func(context.Context, Pod) (string, error){m.c.PodPeSIT, m.c.PodPeSITTLS} {
					if a, err := addr(ctx, p); err == nil {
						m.mu.Lock()
						m.addrs[a] = p.Name
						m.mu.Unlock()
					}
				}
			}
		}
		m.mu.Lock()
		addrs := make(map[string]string, len(m.addrs))
		for a, n := range m.addrs {
			addrs[a] = n
		}
		m.mu.Unlock()
		// Every address is probed at once, so that two pods seen accepting
		// in one round accepted at the same time, not one after the other
		// across a round made long by dials to dead pods timing out. A pod
		// counts once however many of its ports accept.
		var (
			amu       sync.Mutex
			accepting = map[string]bool{}
			dead      []string
			pwg       sync.WaitGroup
		)
		for a, name := range addrs {
			pwg.Add(1)
			go func() {
				defer pwg.Done()
				ok := false
				if p, isProber := m.c.(acceptProber); isProber {
					ok = p.Accepting(ctx, a)
				} else if conn, err := d.DialContext(ctx, "tcp", a); err == nil {
					conn.Close()
					ok = true
				}
				amu.Lock()
				if ok {
					accepting[name] = true
				} else if !present[name] {
					dead = append(dead, a)
				}
				amu.Unlock()
			}()
		}
		pwg.Wait()
		// A pod that is gone from the API and whose port no longer accepts
		// never accepts again (a closed listener of a deleted pod does not
		// come back): stop probing it, so that dials to it timing out do
		// not stretch every later round.
		m.mu.Lock()
		for _, a := range dead {
			delete(m.addrs, a)
		}
		m.mu.Unlock()
		m.mu.Lock()
		m.label.observe(now, labelled)
		m.listen.observe(now, slices.Sorted(maps.Keys(accepting)))
		m.rounds++
		m.mu.Unlock()
	}
}

// overlaps is what take returns.
type overlaps struct {
	Label, Listen       time.Duration
	LabelWho, ListenWho string
	Rounds              int
}

func (o overlaps) String() string {
	return fmt.Sprintf("label overlap %v %s, listener overlap %v %s (%d rounds)",
		o.Label, o.LabelWho, o.Listen, o.ListenWho, o.Rounds)
}

// take returns the longest overlaps since the previous take and starts a
// new window (a run still open is measured up to now and stays open).
func (m *monitor) take() overlaps {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	for _, o := range []*overlap{&m.label, &m.listen} {
		if !o.since.IsZero() {
			if d := now.Sub(o.since); d > o.max {
				o.max, o.maxWho = d, o.who
			}
		}
	}
	r := overlaps{Label: m.label.max, LabelWho: m.label.maxWho, Listen: m.listen.max, ListenWho: m.listen.maxWho, Rounds: m.rounds}
	m.label.max, m.label.maxWho, m.listen.max, m.listen.maxWho, m.rounds = 0, "", 0, "", 0
	return r
}

func (m *monitor) stop() {
	m.cancel()
	<-m.done
}
