// Package election owns Vectis' use of etcd: one lease per member (the
// session), the membership registry attached to it, leader election with
// go.etcd.io/etcd/client/v3/concurrency, leader observation, and the
// fencing epoch (the create revision of the leader key).
//
// Keys, for cluster C:
//
//	/vectis/C/election/<lease-id-hex>  member name; lowest create revision leads
//	/vectis/C/members/<member>         JSON {name, address, startedAt}, on the lease
//
// From a shell, the leader is
//
//	etcdctl get --prefix /vectis/C/election/ --sort-by=CREATE --order=ASCEND --limit=1
//	etcdctl elect -l /vectis/C/election
//
// A leader must stop serving before etcd could expire its lease and let
// another member win. The member therefore renews its lease itself and
// keeps a deadline: the send time of the last renewal that etcd answered,
// plus the granted TTL, minus a margin. When the deadline passes without a
// renewal, the session is lost, whatever the etcd client still believes.
package election

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Why a session or a leadership ended; see Member.Err and Leadership.Err.
var (
	ErrDeadlineExceeded = errors.New("election: lease deadline passed without a renewal")
	ErrLeaseExpired     = errors.New("election: lease expired or revoked in etcd")
	ErrResigned         = errors.New("election: resigned")
	ErrClosed           = errors.New("election: member closed")
	ErrBusy             = errors.New("election: member is already campaigning or leading")
	ErrKeyDeleted       = errors.New("election: leader key deleted behind our back")
)

// Member is this process's presence in the cluster: one etcd lease, kept
// alive until Close or until it is lost, and the membership key on it. A
// lost Member stays lost: close it and create a new one.
type Member struct {
	*View

	cfg     Config
	cli     *clientv3.Client
	lease   clientv3.LeaseID
	ttl     time.Duration // granted by etcd
	session *concurrency.Session
	log     *slog.Logger

	ctx    context.Context // cancelled, with the reason, when the session ends
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup

	mu          sync.Mutex
	deadline    time.Time
	lastRenewal time.Time
	busy        bool
	closeOnce   sync.Once
	failures    atomic.Uint64
}

// MemberInfo is the value of a membership key.
type MemberInfo struct {
	Name      string    `json:"name"`
	Address   string    `json:"address"`
	StartedAt time.Time `json:"startedAt"`
	// Liveness is the member's liveness listener; set only when the member
	// confirms its leadership within ConfirmWindow (fast failover on).
	Liveness string `json:"liveness,omitempty"`
	// ConfirmWindowMS is that window, in milliseconds: what the next
	// leader must wait out after revoking this member (ConfirmWindow).
	ConfirmWindowMS int64 `json:"confirmWindowMs,omitempty"`
}

// ConfirmWindow is the member's confirmation window: the one it published,
// LegacyConfirmWindow for a member that advertises a liveness listener
// without one, 0 for a member that does not take part in fast failover.
func (mi MemberInfo) ConfirmWindow() time.Duration {
	switch {
	case mi.Liveness == "":
		return 0
	case mi.ConfirmWindowMS <= 0:
		return LegacyConfirmWindow
	default:
		return time.Duration(mi.ConfirmWindowMS) * time.Millisecond
	}
}

// New connects to etcd, grants the member's lease, registers the member
// and starts renewing the lease.
func New(ctx context.Context, cfg Config) (*Member, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	cc, err := cfg.clientConfig()
	if err != nil {
		return nil, err
	}
	cc.Context = context.WithoutCancel(ctx)
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("election: connect to etcd %v: %w", cfg.Endpoints, err)
	}
	m, err := start(ctx, cfg, cli)
	if err != nil {
		cli.Close()
		return nil, err
	}
	return m, nil
}

func start(ctx context.Context, cfg Config, cli *clientv3.Client) (*Member, error) {
	sent := time.Now()
	grant, err := cli.Grant(ctx, int64(cfg.TTL/time.Second))
	if err != nil {
		return nil, fmt.Errorf("election: grant lease: %w", err)
	}
	m := &Member{
		View:  NewView(cli, cfg.Cluster),
		cfg:   cfg,
		cli:   cli,
		lease: grant.ID,
		ttl:   time.Duration(grant.TTL) * time.Second,
		log:   cfg.Logger.With("cluster", cfg.Cluster, "member", cfg.Name, "lease", fmt.Sprintf("%x", int64(grant.ID))),
	}
	m.ctx, m.cancel = context.WithCancelCause(context.WithoutCancel(ctx))
	m.extend(sent, grant.TTL)

	// The session's own keepalive stream is redundant with ours and harmless;
	// concurrency.Election only needs its lease and client.
	m.session, err = concurrency.NewSession(cli, concurrency.WithLease(grant.ID), concurrency.WithContext(m.ctx))
	if err != nil {
		m.cancel(ErrClosed)
		_ = m.revoke()
		return nil, fmt.Errorf("election: session: %w", err)
	}
	mi := MemberInfo{Name: cfg.Name, Address: cfg.Address, StartedAt: time.Now().UTC(), Liveness: cfg.Liveness}
	if cfg.Liveness != "" {
		// Rounded up, so that the next leader never waits less.
		mi.ConfirmWindowMS = int64((cfg.ConfirmWindow + time.Millisecond - 1) / time.Millisecond)
	}
	info, err := json.Marshal(mi)
	if err != nil {
		return nil, fmt.Errorf("election: encode member: %w", err)
	}
	if _, err := cli.Put(ctx, m.memberKey(cfg.Name), string(info), clientv3.WithLease(grant.ID)); err != nil {
		m.cancel(ErrClosed)
		m.session.Orphan()
		_ = m.revoke()
		return nil, fmt.Errorf("election: register member: %w", err)
	}
	m.wg.Add(1)
	go m.keepAlive()
	m.log.Info("election: member registered", "ttl", m.ttl)
	return m, nil
}

// Name is the member's name.
func (m *Member) Name() string { return m.cfg.Name }

// Lease is the member's etcd lease.
func (m *Member) Lease() clientv3.LeaseID { return m.lease }

// Client is the member's etcd client, for callers that need etcd directly.
func (m *Member) Client() *clientv3.Client { return m.cli }

// Done is closed when the session ends: deadline passed, lease gone, or
// Close.
func (m *Member) Done() <-chan struct{} { return m.ctx.Done() }

// Err says why Done is closed (ErrDeadlineExceeded, ErrLeaseExpired,
// ErrClosed), or nil while the session lives.
func (m *Member) Err() error { return context.Cause(m.ctx) }

// Deadline is when this member must consider its lease gone if no renewal
// succeeds before: last answered renewal (send time) + TTL - margin.
func (m *Member) Deadline() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.deadline
}

// LastRenewal is the send time of the last renewal etcd answered.
func (m *Member) LastRenewal() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastRenewal
}

// RenewalFailures counts lease renewals that failed and were retried; a
// rising count with leadership intact means etcd members are failing.
func (m *Member) RenewalFailures() uint64 { return m.failures.Load() }

// Close ends the session: stops renewing, revokes the lease (which removes
// the membership and election keys at once, so a standby need not wait for
// the TTL) and closes the etcd client.
func (m *Member) Close() error {
	var err error
	m.closeOnce.Do(func() {
		m.mu.Lock()
		m.cancel(ErrClosed)
		m.mu.Unlock()
		m.wg.Wait()
		m.session.Orphan()
		err = m.revoke()
		if cerr := m.cli.Close(); err == nil {
			err = cerr
		}
	})
	return err
}

// extend records a renewal that etcd answered. The send time is used, not
// the reply time: etcd restarted the TTL somewhere in between, so this is
// never later than etcd's own view.
func (m *Member) extend(sent time.Time, ttlSeconds int64) {
	d := sent.Add(time.Duration(ttlSeconds)*time.Second - m.cfg.Margin)
	m.mu.Lock()
	defer m.mu.Unlock()
	if d.After(m.deadline) {
		m.deadline = d
	}
	if sent.After(m.lastRenewal) {
		m.lastRenewal = sent
	}
}

// LoseIfLeaseGone ends the session at once if err is etcd saying that
// this member's lease no longer exists (a standby revoked it on the fast
// failover path, or it expired), and reports whether it did. Without it
// the member would learn it at its next renewal, up to TTL/5 later, and
// until then campaign and revoke in vain (each write on the lease fails).
func (m *Member) LoseIfLeaseGone(err error) bool {
	if !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return false
	}
	m.lose(ErrLeaseExpired)
	return true
}

func (m *Member) lose(cause error) {
	if m.ctx.Err() != nil {
		return
	}
	m.log.Warn("election: session lost", "reason", cause, "deadline", m.Deadline())
	m.cancel(cause)
}

// keepAlive renews the lease every TTL/5 with KeepAliveOnce. Each renewal
// opens a new stream, and the client's round-robin balancer puts it on the
// next endpoint, so a renewal stuck on a hung etcd member times out and the
// retry goes elsewhere, well within the TTL.
func (m *Member) keepAlive() {
	defer m.wg.Done()
	interval := m.cfg.keepAliveInterval()
	retry := interval / 10
	wait := time.NewTimer(interval)
	defer wait.Stop()
	expire := time.NewTimer(time.Until(m.Deadline()))
	defer expire.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-expire.C:
			if time.Now().Before(m.Deadline()) {
				expire.Reset(time.Until(m.Deadline()))
				continue
			}
			m.lose(ErrDeadlineExceeded)
			return
		case <-wait.C:
		}
		sent := time.Now()
		timeout := min(interval, time.Until(m.Deadline()))
		actx, cancel := context.WithTimeout(clientv3.WithRequireLeader(m.ctx), timeout)
		resp, err := m.cli.KeepAliveOnce(actx, m.lease)
		if err == nil {
			// A partitioned etcd leader still answers lease renewals until
			// it notices it lost its quorum. A linearizable read needs the
			// quorum, so only a renewal followed by one extends the deadline.
			_, err = m.cli.Get(actx, m.memberKey(m.cfg.Name), clientv3.WithCountOnly())
		}
		cancel()
		switch {
		case err == nil:
			m.extend(sent, resp.TTL)
			expire.Reset(time.Until(m.Deadline()))
			wait.Reset(interval)
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			m.lose(ErrLeaseExpired)
			return
		case m.ctx.Err() != nil:
			return
		default:
			m.failures.Add(1)
			m.log.Debug("election: lease renewal failed, retrying", "err", err, "deadline", m.Deadline())
			wait.Reset(retry)
		}
	}
}

func (m *Member) revoke() error {
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.Margin)
	defer cancel()
	if _, err := m.cli.Revoke(ctx, m.lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("election: revoke lease %x: %w", int64(m.lease), err)
	}
	return nil
}

// Leadership is a won election. It ends (Done) when the member's session
// ends or on Resign; the caller must have stopped leader work by then. Its
// epoch fences writes: it only grows from one leader to the next.
type Leadership struct {
	m      *Member
	e      *concurrency.Election
	epoch  int64
	key    string
	ctx    context.Context
	cancel context.CancelCauseFunc

	mu        sync.Mutex
	confirmed time.Time // send time of the last read that found our key (ConfirmWindow > 0)
}

// Campaign blocks until this member leads, ctx ends, or the session is
// lost. Members win in the order they joined. Only one Campaign or
// Leadership may be active per Member at a time.
func (m *Member) Campaign(ctx context.Context) (*Leadership, error) {
	m.mu.Lock()
	if m.busy {
		m.mu.Unlock()
		return nil, ErrBusy
	}
	m.busy = true
	m.mu.Unlock()
	won := false
	defer func() {
		if !won {
			m.mu.Lock()
			m.busy = false
			m.mu.Unlock()
		}
	}()

	// A campaign must not outlive the session: a win on a lost lease would
	// be a leader that etcd has already forgotten.
	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(m.ctx, func() { cancel(context.Cause(m.ctx)) })
	defer stop()

	e := concurrency.NewElection(m.session, m.electionPrefix)
	if err := e.Campaign(cctx, m.cfg.Name); err != nil {
		if m.ctx.Err() != nil {
			return nil, fmt.Errorf("election: campaign: %w", context.Cause(m.ctx))
		}
		if cerr := context.Cause(cctx); cerr != nil {
			return nil, fmt.Errorf("election: campaign: %w", cerr)
		}
		if m.LoseIfLeaseGone(err) {
			return nil, fmt.Errorf("election: campaign: %w: %w", ErrLeaseExpired, err)
		}
		return nil, fmt.Errorf("election: campaign: %w", err)
	}
	// Re-check: the session may have ended while the last response was in
	// flight, or the deadline passed while we waited. Under mu, so that
	// Close (which cancels under mu) cannot start waiting for goroutines
	// before this one is counted.
	m.mu.Lock()
	lost := m.ctx.Err() != nil || !time.Now().Before(m.deadline)
	if !lost {
		m.wg.Add(1)
	}
	m.mu.Unlock()
	if lost {
		rctx, rcancel := context.WithTimeout(context.Background(), m.cfg.Margin)
		_ = e.Resign(rctx)
		rcancel()
		cause := context.Cause(m.ctx)
		if cause == nil {
			cause = ErrDeadlineExceeded
		}
		return nil, fmt.Errorf("election: campaign won on a lost session: %w", cause)
	}
	// A hung etcd member that resumes can revoke a lease renewed meanwhile
	// through another member (etcd-io/etcd#15247): make sure the key that
	// won is still ours, with a linearizable read, and watch it from its
	// creation so that a deletion in between is seen too.
	checked := time.Now()
	if err := m.checkOwnKey(ctx, e); err != nil {
		m.wg.Done()
		rctx, rcancel := context.WithTimeout(context.Background(), m.cfg.Margin)
		_ = e.Resign(rctx)
		rcancel()
		return nil, err
	}
	l := &Leadership{m: m, e: e, epoch: e.Rev(), key: e.Key(), confirmed: checked}
	l.ctx, l.cancel = context.WithCancelCause(m.ctx)
	go l.watchKey(e.Rev() + 1)
	if m.cfg.ConfirmWindow > 0 {
		// Under mu, as above: Close cancels under mu before it waits.
		m.mu.Lock()
		live := m.ctx.Err() == nil
		if live {
			m.wg.Add(1)
		}
		m.mu.Unlock()
		if live {
			go l.confirm()
		}
	}
	won = true
	m.log.Info("election: elected", "epoch", l.epoch, "deadline", m.Deadline())
	return l, nil
}

// checkOwnKey verifies that the leader key e won with exists, on this
// member's lease, created at e's revision.
func (m *Member) checkOwnKey(ctx context.Context, e *concurrency.Election) error {
	cctx, cancel := context.WithTimeout(ctx, m.cfg.keepAliveInterval())
	defer cancel()
	resp, err := m.cli.Get(cctx, e.Key())
	if err != nil {
		return fmt.Errorf("election: verify leader key: %w", err)
	}
	if len(resp.Kvs) != 1 || resp.Kvs[0].CreateRevision != e.Rev() || clientv3.LeaseID(resp.Kvs[0].Lease) != m.lease {
		return fmt.Errorf("election: campaign won with a key that is gone: %w", ErrKeyDeleted)
	}
	return nil
}

// watchKey ends leadership if the leader key is deleted while the lease
// lives (an operator's `etcdctl del`): the next member in line would win
// at once, so this one must stop.
func (l *Leadership) watchKey(fromRev int64) {
	defer l.m.wg.Done()
	wctx, cancel := context.WithCancel(l.ctx)
	defer cancel()
	for ev := range l.m.cli.Watch(wctx, l.key, clientv3.WithRev(fromRev), clientv3.WithFilterPut()) {
		if ev.Canceled {
			// Compacted past fromRev or similar: fall back to the lease
			// deadline, which still bounds the damage.
			return
		}
		for _, e := range ev.Events {
			if e.Type == clientv3.EventTypeDelete {
				l.m.log.Warn("election: leader key deleted, stepping down", "epoch", l.epoch)
				l.cancel(ErrKeyDeleted)
				return
			}
		}
	}
}

// Epoch is the create revision of the leader key: unique per term and
// strictly greater than any earlier leader's.
func (l *Leadership) Epoch() int64 { return l.epoch }

// Key is the leader key in etcd.
func (l *Leadership) Key() string { return l.key }

// Done is closed when leadership ends: session lost, deadline passed,
// resigned or member closed.
func (l *Leadership) Done() <-chan struct{} { return l.ctx.Done() }

// Context is cancelled when leadership ends; derive leader work from it.
func (l *Leadership) Context() context.Context { return l.ctx }

// Err says why leadership ended, or nil while it lasts.
func (l *Leadership) Err() error { return context.Cause(l.ctx) }

// Deadline is the time by which leader work must have stopped unless the
// lease is renewed before; it moves forward with each renewal.
func (l *Leadership) Deadline() time.Time { return l.m.Deadline() }

// Valid reports whether this leadership may still serve at this instant:
// it has not ended, and the member's own deadline has not passed. It reads
// the clock itself rather than waiting for the renewal goroutine to notice
// the deadline: a process frozen (SIGSTOP, a VM pause) past its deadline
// wakes up with every goroutine runnable at once, and one of them may be
// about to answer a partner before the renewal goroutine runs. Time here
// is monotonic, which keeps running while the process is stopped.
func (l *Leadership) Valid() bool {
	if l.ctx.Err() != nil {
		return false
	}
	now := time.Now()
	if w := l.m.cfg.ConfirmWindow; w > 0 {
		l.mu.Lock()
		until := l.confirmed.Add(w)
		l.mu.Unlock()
		if !now.Before(until) {
			return false
		}
	}
	return now.Before(l.m.Deadline())
}

// confirm reads the leader key every ConfirmWindow/5 while leadership
// lasts. A read that finds the key moves the confirmation to its send
// time: etcd linearized it after that, so the key existed then. A read
// that finds the key gone or on another lease (a standby revoked our lease
// on the fast failover path, or an operator deleted it) ends leadership at
// once. A read that fails changes nothing: Valid turns false by itself
// when the window passes, and true again after the next good read.
func (l *Leadership) confirm() {
	defer l.m.wg.Done()
	w := l.m.cfg.ConfirmWindow
	t := time.NewTicker(w / 5)
	defer t.Stop()
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(l.ctx, w)
		err := l.Confirm(ctx)
		cancel()
		if errors.Is(err, ErrKeyDeleted) {
			return
		}
	}
}

// Confirm reads the leader key now (a linearizable read). It returns nil
// if the key is still this leadership's, and moves the confirmation
// window forward; an error wrapping ErrKeyDeleted if the key is gone or on
// another lease, after ending leadership; or the read's error, changing
// nothing. A nil answer means the key existed after Confirm was called.
func (l *Leadership) Confirm(ctx context.Context) error {
	if err := l.ctx.Err(); err != nil {
		return fmt.Errorf("election: leadership already ended: %w", context.Cause(l.ctx))
	}
	sent := time.Now()
	resp, err := l.m.cli.Get(clientv3.WithRequireLeader(ctx), l.key)
	switch {
	case err != nil:
		return fmt.Errorf("election: confirm leadership: %w", err)
	case len(resp.Kvs) != 1 || resp.Kvs[0].CreateRevision != l.epoch || clientv3.LeaseID(resp.Kvs[0].Lease) != l.m.lease:
		l.m.log.Warn("election: leader key gone at confirmation, stepping down", "epoch", l.epoch)
		l.cancel(ErrKeyDeleted)
		return fmt.Errorf("election: confirm leadership: %w", ErrKeyDeleted)
	}
	l.mu.Lock()
	if sent.After(l.confirmed) {
		l.confirmed = sent
	}
	l.mu.Unlock()
	return nil
}

// Resign gives leadership up by deleting the leader key, so the next
// member in line wins at once. Leadership ends even if etcd cannot be
// reached; the lease then expires on its own.
func (l *Leadership) Resign(ctx context.Context) error {
	// Leadership ends before the key goes: whoever watches Done must have
	// stopped before the next leader can start.
	l.cancel(ErrResigned)
	defer func() {
		l.m.mu.Lock()
		l.m.busy = false
		l.m.mu.Unlock()
	}()
	if err := l.e.Resign(ctx); err != nil {
		return fmt.Errorf("election: resign: %w", err)
	}
	l.m.log.Info("election: resigned", "epoch", l.epoch)
	return nil
}
