package ha

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vectis-ft/vectis/election"
	"github.com/vectis-ft/vectis/ha/liveness"
)

// Fast failover decisions, counted in
// vectis_cluster_fast_failover_decisions_total{decision}. The set is closed.
const (
	// DecisionRevoked: evidence, etcd still named that leader, its lease
	// was revoked.
	DecisionRevoked = "revoked"
	// DecisionReconnected: the stream broke but a reconnect succeeded.
	DecisionReconnected = "reconnected"
	// DecisionNoEvidence: the stream broke without evidence; the lease TTL
	// decides.
	DecisionNoEvidence = "no_evidence"
	// DecisionLeaderChanged: evidence, but etcd no longer names that
	// leader and lease (it resigned, or its lease went meanwhile).
	DecisionLeaderChanged = "leader_changed"
	// DecisionLeaseGone: the lease was gone by the time of the revocation.
	DecisionLeaseGone = "lease_gone"
	// DecisionError: etcd could not be asked or could not revoke; the lease
	// TTL decides.
	DecisionError = "error"
)

var decisions = []string{DecisionRevoked, DecisionReconnected, DecisionNoEvidence, DecisionLeaderChanged, DecisionLeaseGone, DecisionError}

// revokedPrefix holds one key per lease revoked on the fast failover path,
// written before the revocation on the revoker's own lease. The next
// leader finds it and waits a confirmation window before it serves.
func revokedPrefix(cluster string) string { return "/vectis/" + cluster + "/fastfailover/" }

// serveLiveness answers standbys' liveness streams for as long as the
// loop runs, whoever leads: the process's death is what they watch for.
func (l *Loop) serveLiveness(ctx context.Context) {
	srv := &liveness.Server{
		Hello: func() (liveness.Hello, bool) {
			l.mu.Lock()
			m := l.member
			l.mu.Unlock()
			if m == nil {
				return liveness.Hello{}, false
			}
			return liveness.Hello{Name: m.Name(), Lease: int64(m.Lease())}, true
		},
		Logger: l.log,
	}
	if err := srv.Serve(ctx, l.cfg.LivenessListener); err != nil {
		l.log.Warn("liveness listener stopped", "err", err)
	}
}

// followLeader holds a liveness stream to each leader in turn while this
// member is a standby, and revokes the lease of a leader whose process is
// gone.
func (l *Loop) followLeader(ctx context.Context, m *election.Member) {
	for ctx.Err() == nil {
		l.mu.Lock()
		info := l.leader
		l.mu.Unlock()
		var (
			t      liveness.Target
			window time.Duration
			ok     bool
		)
		if info.Name != "" && info.Name != m.Name() {
			t, window, ok = l.target(ctx, m, info)
		}
		if !ok {
			if !l.waitLeaderChange(ctx, info, time.Second) {
				return
			}
			continue
		}
		fctx, cancel := context.WithCancel(ctx)
		res := make(chan liveness.Outcome, 1)
		go func() {
			f := &liveness.Follower{
				Following:   l.cfg.Metrics.setFollowing,
				Reconnected: func() { l.cfg.Metrics.fastDecision(DecisionReconnected) },
				Logger:      l.log,
			}
			out, _ := f.Follow(fctx, t)
			res <- out
		}()
		var out liveness.Outcome
		for out == "" {
			select {
			case out = <-res:
			case <-l.leaderChange:
				l.mu.Lock()
				changed := l.leader.Key != info.Key
				l.mu.Unlock()
				if changed {
					cancel()
					<-res
					out = "changed"
				}
			case <-ctx.Done():
				cancel()
				<-res
				return
			}
		}
		cancel()
		switch out {
		case liveness.Evidence:
			l.revoke(ctx, m, info, window)
		case liveness.NoEvidence:
			l.cfg.Metrics.fastDecision(DecisionNoEvidence)
		}
		// Without evidence the same leader is followed again a second later
		// (a blip must not leave the standby on the TTL path for good); a
		// new stream has to be verified before anything counts again.
		if out != "changed" && !l.waitLeaderChange(ctx, info, time.Second) {
			return
		}
	}
}

// target finds the liveness address of leader info, and its confirmation
// window: its member key must be on the same lease (the same process) and
// advertise one. A leader that advertises none does not confirm its
// leadership within a window, so it must never be revoked.
func (l *Loop) target(ctx context.Context, m *election.Member, info election.LeaderInfo) (liveness.Target, time.Duration, bool) {
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	mi, lease, err := m.View.Member(cctx, info.Name)
	if err != nil || lease != info.Lease || mi.Liveness == "" {
		return liveness.Target{}, 0, false
	}
	return liveness.Target{Name: info.Name, Lease: info.Lease, Addr: mi.Liveness}, mi.ConfirmWindow(), true
}

// waitLeaderChange waits until the observed leader key differs from
// info's, or limit passes. It reports false when ctx ended.
func (l *Loop) waitLeaderChange(ctx context.Context, info election.LeaderInfo, limit time.Duration) bool {
	timeout := time.NewTimer(limit)
	defer timeout.Stop()
	for {
		l.mu.Lock()
		changed := l.leader.Key != info.Key
		l.mu.Unlock()
		if changed {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-timeout.C:
			return true
		case <-l.leaderChange:
		}
	}
}

// revoke ends the lease of a leader whose process is gone, after checking
// with a linearizable read that etcd still names that leader on that lease.
// The marker written first, which carries the leader's confirmation
// window, makes the next leader wait that window out: if the evidence was
// forged (a firewall's RST) and the leader lives, by then it has seen its
// key gone or stopped counting itself valid.
func (l *Loop) revoke(ctx context.Context, m *election.Member, info election.LeaderInfo, window time.Duration) {
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	cur, err := m.View.Leader(cctx)
	switch {
	case errors.Is(err, election.ErrNoLeader):
		l.cfg.Metrics.fastDecision(DecisionLeaderChanged)
		return
	case err != nil:
		l.log.Warn("fast failover: cannot read the leader; the lease TTL decides", "err", err)
		l.cfg.Metrics.fastDecision(DecisionError)
		return
	case cur.Key != info.Key || cur.Lease != info.Lease:
		l.log.Info("fast failover: the leader changed meanwhile", "was", info.Name, "now", cur.Name)
		l.cfg.Metrics.fastDecision(DecisionLeaderChanged)
		return
	}
	marker := revokedPrefix(l.cfg.Election.Cluster) + strconv.FormatInt(info.Lease, 16)
	value, err := json.Marshal(revocation{Leader: info.Name, ConfirmWindowMS: window.Milliseconds()})
	if err != nil {
		l.log.Warn("fast failover: cannot encode the revocation; the lease TTL decides", "err", err)
		l.cfg.Metrics.fastDecision(DecisionError)
		return
	}
	if _, err := m.Client().Put(cctx, marker, string(value), clientv3.WithLease(m.Lease())); err != nil {
		// This member's own lease gone (it was a leader revoked a moment
		// ago) ends its session now, so that it joins again and follows
		// with a lease that can write.
		m.LoseIfLeaseGone(err)
		l.log.Warn("fast failover: cannot record the revocation; the lease TTL decides", "err", err)
		l.cfg.Metrics.fastDecision(DecisionError)
		return
	}
	if _, err := m.Client().Revoke(cctx, clientv3.LeaseID(info.Lease)); err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			l.cfg.Metrics.fastDecision(DecisionLeaseGone)
			return
		}
		l.log.Warn("fast failover: revoke failed; the lease TTL decides", "err", err)
		l.cfg.Metrics.fastDecision(DecisionError)
		return
	}
	l.log.Warn("fast failover: leader process gone; its lease revoked", "leader", info.Name, "lease", fmt.Sprintf("%x", info.Lease))
	l.cfg.Metrics.fastDecision(DecisionRevoked)
}

// revocation is the value of a fast failover marker.
type revocation struct {
	Leader string `json:"leader"`
	// ConfirmWindowMS is the revoked leader's confirmation window.
	ConfirmWindowMS int64 `json:"confirmWindowMs"`
}

// revokedWindow is what the next leader waits out for a marker: the revoked
// leader's window, or LegacyConfirmWindow for a marker written by a
// release that did not record it (its value was the leader's name).
func revokedWindow(value []byte) time.Duration {
	var r revocation
	if json.Unmarshal(value, &r) != nil || r.ConfirmWindowMS <= 0 {
		return election.LegacyConfirmWindow
	}
	return time.Duration(r.ConfirmWindowMS) * time.Millisecond
}

// awaitRevoked runs on a new leader before it serves: if a lease was
// revoked on the fast failover path, the old leader may be alive (the
// evidence forged), so this one waits until that leader's confirmation
// window, plus a tenth for clock rates, has passed since it won, which is
// after the revocation. It checks whatever its own configuration: safety
// must not depend on every member agreeing on fast failover or on the
// window.
func (l *Loop) awaitRevoked(ctx context.Context, m *election.Member, won time.Time) error {
	prefix := revokedPrefix(l.cfg.Election.Cluster)
	gctx, cancel := context.WithTimeout(ctx, time.Second)
	resp, err := m.Client().Get(gctx, prefix, clientv3.WithPrefix())
	cancel()
	var window time.Duration
	switch {
	case err != nil:
		// Without an answer, wait all the same, for the longest window
		// a member of this TTL may have.
		ttl := l.cfg.Election.TTL
		if ttl <= 0 {
			ttl = election.DefaultTTL
		}
		window = ttl / 2
	case len(resp.Kvs) == 0:
		return nil
	default:
		for _, kv := range resp.Kvs {
			window = max(window, revokedWindow(kv.Value))
		}
	}
	// The campaign returned after the old key went, hence after the
	// revocation: the window counts from the win, and the fencing write
	// and the other steps since then are part of it.
	w := time.Until(won.Add(window + window/10))
	l.log.Info("a lease may have been revoked on the fast failover path; waiting out the old leader's confirmation window", "window", window, "wait", w, "err", err)
	if w > 0 && !sleep(ctx, w) {
		return ctx.Err()
	}
	dctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := m.Client().Delete(dctx, prefix, clientv3.WithPrefix()); err != nil {
		l.log.Warn("clear fast failover revocations", "err", err)
	}
	return nil
}

// revokedFast reports whether lease was revoked on the fast failover path
// (its marker is still there: the next leader removes it after its wait).
func revokedFast(ctx context.Context, cli *clientv3.Client, cluster string, lease int64) bool {
	resp, err := cli.Get(ctx, revokedPrefix(cluster)+strconv.FormatInt(lease, 16), clientv3.WithCountOnly())
	return err == nil && resp.Count > 0
}
