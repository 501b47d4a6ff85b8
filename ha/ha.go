package ha

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vectis-ft/vectis/election"
)

// State is the loop's position.
type State string

// The states of the loop.
const (
	StateFollower     State = "follower"
	StateCandidate    State = "candidate"
	StateLeader       State = "leader"
	StateSteppingDown State = "stepping-down"
)

// Serving is the leader's work: the node's PeSIT servers.
type Serving interface {
	// Start starts the auto-start servers for a term and returns once their
	// listeners accept. Writes made for the term carry epoch.
	Start(ctx context.Context, epoch int64) error
	// StopAccepting closes every listener at once; sessions go on.
	StopAccepting()
	// Drain waits for live sessions to end until ctx is done, then aborts the
	// rest with ABORT 3/316. It returns when no session is left.
	Drain(ctx context.Context) error
}

// Labeler keeps the leader label on exactly one pod: this one while it leads.
// It counts its own failures (vectis_k8s_label_errors_total).
type Labeler interface {
	// Label puts the label on this pod and strips it from every other pod.
	// confirm (a linearizable read of the leader key) runs after the
	// labeller has read the pods and before it patches any, so that a
	// deposed leader never touches labels it read after its successor's.
	Label(ctx context.Context, confirm func(context.Context) error) error
	// Unlabel removes the label from this pod.
	Unlabel(ctx context.Context) error
	// Release removes the label from this pod after a step-down, unless a
	// successor strips it first: the successor strips it before labelling
	// its own pod, and the same change made twice within milliseconds
	// costs the Service a second (k8s.ServiceEndpoints says why).
	Release(ctx context.Context) error
}

// Fence records a new term in the shared store; a stale epoch fails.
type Fence interface {
	ClaimLeadership(ctx context.Context, epoch int64, member string) error
}

// Config assembles a loop.
type Config struct {
	Election election.Config
	Serving  Serving
	Fence    Fence
	// Labeler may be nil when no Kubernetes API is configured.
	Labeler Labeler
	// LeaderJobs runs while this node leads (retention, say); its context
	// ends when leadership does. May be nil.
	LeaderJobs func(ctx context.Context, epoch int64)
	// DrainTimeout bounds the drain on SIGTERM (default 20 s).
	DrainTimeout time.Duration
	// LabelTimeout bounds the first label attempt on winning; the labeler
	// keeps trying afterwards (default 2 s). PeSIT starts either way: a
	// missing label only hides a serving leader, it never exposes two.
	LabelTimeout time.Duration
	// RetryInterval paces re-joining etcd after a lost session (default 500 ms).
	RetryInterval time.Duration
	// LivenessListener, if set, serves liveness streams to standbys while
	// Run runs (package liveness); Run closes it.
	LivenessListener net.Listener
	// FastFailover makes this node, as a standby, follow the leader's
	// liveness stream and revoke its lease when its process is gone. The
	// leader side needs Election.ConfirmWindow and Election.Liveness.
	FastFailover bool

	Metrics        *Metrics // nil: not exported
	TracerProvider trace.TracerProvider
	Logger         *slog.Logger
}

// Loop is one node's HA loop. Run it once; read it from any goroutine.
type Loop struct {
	cfg    Config
	log    *slog.Logger
	tracer trace.Tracer
	demote chan demotion
	// leaderChange wakes the fast failover follower when the observed
	// leader changes.
	leaderChange chan struct{}

	mu          sync.Mutex
	state       State
	member      *election.Member
	leader      election.LeaderInfo // as last observed
	epoch       int64               // our term, while leading
	leaderSince time.Time
	lostAt      time.Time // when the last leader was seen gone
	lostLeader  string
	lostInfo    election.LeaderInfo // the lost leader's key, to tell a resignation from an expiry
	// serving is the leadership whose term runs the PeSIT servers, from just
	// before they start until the step-down begins; MayServe checks it.
	serving *election.Leadership
}

// demotion is a request to step down.
type demotion struct {
	reason Reason
	detail string
}

// New checks cfg and returns a loop in the follower state.
func New(cfg Config) (*Loop, error) {
	if cfg.Serving == nil || cfg.Fence == nil {
		return nil, errors.New("ha: Serving and Fence are required")
	}
	if cfg.Election.Name == "" || cfg.Election.Cluster == "" {
		return nil, errors.New("ha: election member name and cluster are required")
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 20 * time.Second
	}
	if cfg.LabelTimeout <= 0 {
		cfg.LabelTimeout = 2 * time.Second
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = 500 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = noop.NewTracerProvider()
	}
	return &Loop{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "ha", "member", cfg.Election.Name),
		tracer: cfg.TracerProvider.Tracer("github.com/vectis-ft/vectis/ha"),
		demote: make(chan demotion, 1),
		state:  StateFollower,

		leaderChange: make(chan struct{}, 1),
	}, nil
}

// Demote asks the leader to step down, e.g. because the store rejected its
// epoch (ReasonStaleEpoch). It does not block; it is a no-op when not leading.
func (l *Loop) Demote(r Reason, detail string) {
	select {
	case l.demote <- demotion{reason: r, detail: detail}:
	default:
	}
}

// Run joins the cluster and campaigns until ctx ends. On return this node
// no longer serves and has resigned.
func (l *Loop) Run(ctx context.Context) error {
	if l.cfg.Labeler != nil {
		// A container restarted in the same pod may still carry the label.
		uctx, cancel := context.WithTimeout(ctx, l.cfg.LabelTimeout)
		if err := l.cfg.Labeler.Unlabel(uctx); err != nil {
			l.log.Warn("remove a stale label from this pod", "err", err)
		}
		cancel()
	}
	if l.cfg.LivenessListener != nil {
		// The listener lives as long as the loop, not as ctx: a stop
		// signal ends ctx first, and the loop then resigns and drains
		// with this member's lease alive. A port closed meanwhile would
		// look to the standbys like a dead process (docs/ha.md).
		lctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{})
		go func() { defer close(done); l.serveLiveness(lctx) }()
		defer func() { stop(); <-done }()
	}
	for ctx.Err() == nil {
		m, err := election.New(ctx, l.cfg.Election)
		if err != nil {
			l.log.Warn("cannot join the cluster; retrying", "err", err)
			if !sleep(ctx, l.cfg.RetryInterval) {
				break
			}
			continue
		}
		l.runMember(ctx, m)
		if err := m.Close(); err != nil {
			l.log.Debug("close election member", "err", err)
		}
		l.setMember(nil)
	}
	l.setState(StateFollower, "shutdown")
	return nil
}

// runMember campaigns with one session until the session is lost or ctx ends.
func (l *Loop) runMember(ctx context.Context, m *election.Member) {
	l.setMember(m)
	observeCtx, stopObserve := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); l.observe(observeCtx, m) }()
	if l.cfg.FastFailover {
		wg.Add(1)
		go func() { defer wg.Done(); l.followLeader(observeCtx, m) }()
	}
	defer func() { stopObserve(); wg.Wait() }()

	for ctx.Err() == nil {
		select {
		case <-m.Done():
			l.log.Warn("election session lost; joining again", "err", m.Err())
			return
		default:
		}
		campaignStart := time.Now()
		lead, err := l.campaign(ctx, m)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			l.log.Warn("campaign ended without leadership", "err", err)
			if m.Err() != nil {
				continue // the session is gone (its lease revoked): join again at once
			}
			if !sleep(ctx, l.cfg.RetryInterval) {
				return
			}
			continue
		}
		l.lead(ctx, m, lead, campaignStart)
	}
}

// campaign blocks while another member leads.
func (l *Loop) campaign(ctx context.Context, m *election.Member) (*election.Leadership, error) {
	l.setState(StateCandidate, "campaign")
	lead, err := m.Campaign(ctx)
	if err != nil {
		return nil, fmt.Errorf("campaign: %w", err)
	}
	// A Campaign that returns after its session died must not be trusted.
	select {
	case <-m.Done():
		return nil, fmt.Errorf("campaign won on a lost session: %w", m.Err())
	case <-lead.Done():
		return nil, fmt.Errorf("leadership ended at once: %w", lead.Err())
	default:
	}
	return lead, nil
}

// lead runs one term: label beside fence and start, then wait for its end.
func (l *Loop) lead(ctx context.Context, m *election.Member, lead *election.Leadership, campaignStart time.Time) {
	won := time.Now()
	epoch := lead.Epoch()
	loss := l.takeLoss(lead.Key(), campaignStart, won)
	// When the outage began is read from etcd's history (two round trips; a
	// watch from a past revision waits for etcd's next resync of unsynced
	// watchers, up to 100 ms): beside the takeover, not ahead of it, where it
	// held back the fence, the listeners and the label by 100 to 200 ms on
	// kind. The failover span and its steps are emitted once it is known.
	steps := &takeover{tracer: l.tracer}
	outage := make(chan outageTime, 1)
	go func() {
		var o outageTime
		_ = steps.run(lead.Context(), "history", func(ctx context.Context) error {
			o.start, o.detection = l.outageStart(ctx, m, loss)
			return nil
		})
		outage <- o
	}()
	emit := func(serving time.Time, failure error) outageTime {
		o := <-outage
		steps.emit(lead.Context(), o, loss, m.Name(), epoch, won, serving, failure)
		return o
	}

	termCtx, endTerm := context.WithCancel(lead.Context())
	defer endTerm()
	stepCtx := lead.Context()

	// The label goes on as soon as the campaign is won, beside the fencing
	// write, the wait for a revoked leader and the start of the listeners.
	// Moving a Service's endpoints (label patch, EndpointSlice, kube-proxy
	// on every node) takes hundreds of milliseconds on a real cluster; done
	// after the listeners accept, it would add all of that to the outage.
	// Until they accept, connections the Service sends here are refused, as
	// the lost leader's were. It never makes two leaders labelled: this node
	// patches only after winning, and a deposed leader re-reads the leader
	// key between reading the pods and patching them (Leadership.Confirm).
	labelled := make(chan struct{})
	if l.cfg.Labeler == nil {
		close(labelled)
	} else {
		go func() {
			defer close(labelled)
			start := time.Now()
			if err := steps.run(stepCtx, "label", func(ctx context.Context) error {
				ctx, cancel := context.WithTimeout(ctx, l.cfg.LabelTimeout)
				defer cancel()
				return l.cfg.Labeler.Label(ctx, lead.Confirm)
			}); err != nil {
				l.log.Warn("pod label not set yet; the labeller keeps trying", "err", err)
				return
			}
			l.log.Info("pod labelled as leader", "took", time.Since(start))
		}()
	}
	if err := steps.run(stepCtx, "fence", func(ctx context.Context) error {
		return l.cfg.Fence.ClaimLeadership(ctx, epoch, m.Name())
	}); err != nil {
		l.log.Error("fencing write refused; giving up leadership", "epoch", epoch, "err", err)
		<-labelled
		emit(time.Time{}, fmt.Errorf("fencing failed: %w", err))
		l.stepDown(context.WithoutCancel(ctx), lead, ReasonFencingFailed, err.Error())
		return
	}
	if err := steps.run(stepCtx, "fastfailover.wait", func(ctx context.Context) error {
		return l.awaitRevoked(ctx, m, won)
	}); err != nil {
		l.log.Error("cannot wait out a revoked leader; giving up leadership", "err", err)
		<-labelled
		emit(time.Time{}, fmt.Errorf("fast failover wait failed: %w", err))
		l.stepDown(context.WithoutCancel(ctx), lead, ReasonStartFailed, err.Error())
		return
	}
	l.setServing(lead)
	if err := steps.run(stepCtx, "pesit.start", func(ctx context.Context) error {
		return l.cfg.Serving.Start(ctx, epoch)
	}); err != nil {
		l.log.Error("cannot start PeSIT servers; giving up leadership", "err", err)
		<-labelled
		emit(time.Time{}, fmt.Errorf("pesit start failed: %w", err))
		l.stepDown(context.WithoutCancel(ctx), lead, ReasonStartFailed, err.Error())
		return
	}
	l.becomeLeader(epoch, won)
	serving := time.Now()
	<-labelled
	o := emit(serving, nil)
	if loss.leader != "" && loss.leader != m.Name() {
		l.cfg.Metrics.observeFailover(serving.Sub(o.start))
	}
	l.log.Info("leading", "epoch", epoch, "previous", loss.leader,
		"failover", serving.Sub(o.start).Round(time.Millisecond), "detection", o.detection.Round(time.Millisecond))

	var wg sync.WaitGroup
	if l.cfg.Labeler != nil {
		wg.Add(1)
		go func() { defer wg.Done(); l.keepLabel(termCtx, lead.Confirm) }()
	}
	if l.cfg.LeaderJobs != nil {
		wg.Add(1)
		go func() { defer wg.Done(); l.cfg.LeaderJobs(termCtx, epoch) }()
	}

	var d demotion
	select {
	case <-lead.Done():
		d = demotion{reason: lossReason(lead.Err()), detail: fmt.Sprint(lead.Err())}
	case d = <-l.demote:
	case <-ctx.Done():
		d = demotion{reason: ReasonShutdown, detail: "node stopping"}
	}
	endTerm()
	wg.Wait()
	l.stepDown(context.WithoutCancel(ctx), lead, d.reason, d.detail)
}

// stepDown stops serving before anything else, then does what the step-down
// table says for reason: on shutdown or demotion it resigns right after the
// listeners close, so a standby wins in one round trip while the live
// sessions drain (they finish the transfers they own); when leadership may
// already be someone else's they are aborted at once.
func (l *Loop) stepDown(ctx context.Context, lead *election.Leadership, reason Reason, detail string) {
	mode := ModeOf(reason)
	l.setState(StateSteppingDown, string(reason))
	l.cfg.Metrics.steppedDown(reason)
	ctx, span := l.tracer.Start(ctx, "vectis.stepdown", trace.WithAttributes(
		attribute.String("vectis.member", l.cfg.Election.Name),
		attribute.Int64("vectis.epoch", lead.Epoch()),
		attribute.String("vectis.reason", string(reason)),
		attribute.String("vectis.stepdown.reason", string(reason)),
		attribute.String("vectis.stepdown.detail", detail),
		attribute.Bool("vectis.stepdown.resign", mode.Resign),
		attribute.Bool("vectis.stepdown.drain", mode.Drain),
	))
	defer span.End()
	began := time.Now()
	l.log.Info("stepping down", "reason", string(reason), "detail", detail, "resign", mode.Resign, "drain", mode.Drain)

	l.setServing(nil)
	l.cfg.Serving.StopAccepting()
	span.AddEvent("listeners closed")
	if mode.Resign {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if err := lead.Resign(rctx); err != nil {
			l.log.Warn("resign", "err", err)
		}
		cancel()
		span.AddEvent("resigned")
	}
	dctx, cancel := context.WithTimeout(ctx, mode.wait(l.cfg.DrainTimeout))
	if err := l.cfg.Serving.Drain(dctx); err != nil {
		span.RecordError(err)
		l.log.Warn("drain", "err", err)
	}
	cancel()
	span.AddEvent("sessions ended")
	if !mode.Resign {
		// Leadership is already over; release it all the same, so that the
		// member can campaign again and a key that etcd still holds goes.
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		_ = lead.Resign(rctx)
		cancel()
	}
	if l.cfg.Labeler != nil {
		// After the drain, and only if no successor stripped it by then:
		// a handover's seconds are the next leader's, whose first patch
		// strips this label, and a patch of ours at the same moment would
		// meet the EndpointSlice controller before it has seen the write
		// for this pod's deletion or for that strip.
		uctx, cancel := context.WithTimeout(ctx, 2*l.cfg.LabelTimeout)
		if err := l.cfg.Labeler.Release(uctx); err != nil {
			// The next leader strips it.
			l.log.Warn("unlabel own pod", "err", err)
		}
		cancel()
	}
	l.mu.Lock()
	l.epoch = 0
	l.leaderSince = time.Time{}
	l.mu.Unlock()
	l.cfg.Metrics.setLeader(false)
	l.setState(StateFollower, string(reason))
	l.log.Info("stepped down", "reason", string(reason), "took", time.Since(began).Round(time.Millisecond))
}

// keepLabel reconciles the label while leading: the API server may have been
// down at the win, or someone may have labelled another pod. A labeller that
// can watch runs its own loop; otherwise the label is re-applied on a timer.
func (l *Loop) keepLabel(ctx context.Context, confirm func(context.Context) error) {
	if r, ok := l.cfg.Labeler.(interface {
		Run(context.Context, func(context.Context) error) error
	}); ok {
		if err := r.Run(ctx, confirm); err != nil && ctx.Err() == nil {
			l.log.Warn("pod labeller stopped", "err", err)
		}
		return
	}
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		lctx, cancel := context.WithTimeout(ctx, l.cfg.LabelTimeout)
		if err := l.cfg.Labeler.Label(lctx, confirm); err != nil && ctx.Err() == nil {
			l.log.Debug("label reconcile", "err", err)
		}
		cancel()
	}
}

func (l *Loop) becomeLeader(epoch int64, since time.Time) {
	l.mu.Lock()
	l.epoch = epoch
	l.leaderSince = since
	l.mu.Unlock()
	// A demotion queued during a previous term is void.
	select {
	case <-l.demote:
	default:
	}
	l.cfg.Metrics.setLeader(true)
	l.setState(StateLeader, "won election")
}

func (l *Loop) setState(s State, reason string) {
	l.mu.Lock()
	prev := l.state
	l.state = s
	l.mu.Unlock()
	if prev != s {
		l.log.Info("ha transition", "from", string(prev), "to", string(s), "reason", reason)
	}
}

func (l *Loop) setServing(lead *election.Leadership) {
	l.mu.Lock()
	l.serving = lead
	l.mu.Unlock()
}

// MayServe reports whether this node may accept a partner now: it leads,
// and its leadership is valid at this instant by its own clock (see
// election.Leadership.Valid). The PeSIT servers ask it right before they
// answer ACONNECT. The step-down closes the listeners too, but only once
// the loop has run: a node frozen past its deadline wakes up with
// connections queued in its listeners' backlogs, and must refuse them
// even if a session goroutine runs before the loop does.
func (l *Loop) MayServe() bool {
	l.mu.Lock()
	lead := l.serving
	l.mu.Unlock()
	return lead != nil && lead.Valid()
}

func (l *Loop) setMember(m *election.Member) {
	l.mu.Lock()
	l.member = m
	l.mu.Unlock()
}

// loss is what this node knows of the leader it replaces.
type loss struct {
	leader string              // "" when there was none
	info   election.LeaderInfo // its key, revision and lease, if known
	seen   time.Time           // when its key was seen gone (the campaign win at the latest)
}

func (x loss) reason() string {
	if x.leader == "" {
		return "no previous leader"
	}
	return "previous leader lost"
}

// takeLoss says which leader this node replaces and since when it knew the
// leader was gone. The campaign returning is itself a detection: the key
// ahead of ours was deleted. The observer may have seen the deletion a little
// earlier, or not yet; a loss it recorded before this campaign began belongs
// to an older term. The recorded loss is consumed, so that a later term
// cannot reuse it.
func (l *Loop) takeLoss(ownKey string, campaignStart, won time.Time) loss {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := loss{seen: won}
	switch {
	case l.leader.Name != "" && l.leader.Key != ownKey:
		// The observer has not delivered the old leader's deletion yet.
		out.leader, out.info = l.leader.Name, l.leader
	case l.lostLeader != "" && !l.lostAt.Before(campaignStart):
		out.leader, out.info, out.seen = l.lostLeader, l.lostInfo, l.lostAt
	}
	l.lostLeader, l.lostAt, l.lostInfo = "", time.Time{}, election.LeaderInfo{}
	return out
}

// outageStart is the best time this node can know for when the old leader
// stopped serving, and how long it took to notice (the detection latency).
//
// A leader that resigned deleted its key while its lease lived: the outage
// began when the key went. A leader whose lease expired (killed, or cut off
// from etcd) stopped serving at the latest at its own deadline, shortly after
// its last renewal, which etcd dates at expiry - TTL: the outage began then,
// a TTL before the key went. The two differ in etcd's history: a resignation
// deletes the leader key alone, a lease expiry (or revocation) deletes it in
// the same revision as the member's registration key. Reading that history
// costs two round trips, bounded by TTL/5; if they fail the outage is dated
// from the observation, which only under-reports.
func (l *Loop) outageStart(ctx context.Context, m *election.Member, x loss) (time.Time, time.Duration) {
	if x.leader == "" || x.info.Key == "" {
		return x.seen, 0
	}
	ttl := l.cfg.Election.TTL
	if ttl <= 0 {
		ttl = election.DefaultTTL
	}
	cctx, cancel := context.WithTimeout(ctx, min(ttl/5, 250*time.Millisecond))
	defer cancel()
	expired, err := leaseEnded(cctx, m.Client(), x.info, election.MembersPrefix(l.cfg.Election.Cluster)+x.leader)
	if err != nil {
		l.log.Debug("failover: cannot tell resignation from expiry", "err", err)
		return x.seen, 0
	}
	if !expired {
		return x.seen, 0
	}
	if revokedFast(cctx, m.Client(), l.cfg.Election.Cluster, x.info.Lease) {
		// A standby revoked the lease within milliseconds of the process's
		// death (fast failover): the outage began about when the key went,
		// not a TTL earlier.
		return x.seen, 0
	}
	return x.seen.Add(-ttl), ttl
}

// leaseEnded reports whether the leader key in info went with its lease
// (expiry or revocation) rather than alone (resignation).
func leaseEnded(ctx context.Context, cli *clientv3.Client, info election.LeaderInfo, memberKey string) (bool, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var deleted int64
	for resp := range cli.Watch(wctx, info.Key, clientv3.WithRev(info.Epoch), clientv3.WithFilterPut()) {
		if err := resp.Err(); err != nil {
			return false, fmt.Errorf("watch %s: %w", info.Key, err)
		}
		for _, ev := range resp.Events {
			if ev.Type == clientv3.EventTypeDelete {
				deleted = ev.Kv.ModRevision
				break
			}
		}
		if deleted != 0 {
			break
		}
	}
	if deleted == 0 {
		return false, fmt.Errorf("deletion of %s not found: %w", info.Key, ctx.Err())
	}
	resp, err := cli.Get(ctx, memberKey, clientv3.WithRev(deleted))
	if err != nil {
		return false, fmt.Errorf("member key at revision %d: %w", deleted, err)
	}
	survived := len(resp.Kvs) == 1 && resp.Kvs[0].Lease == info.Lease
	return !survived, nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
