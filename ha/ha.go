package ha

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

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
	Label(ctx context.Context) error
	// Unlabel removes the label from this pod.
	Unlabel(ctx context.Context) error
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

	Metrics        *Metrics // nil: not exported
	TracerProvider trace.TracerProvider
	Logger         *slog.Logger
}

// Loop is one node's HA loop. Run it once; read it from any goroutine.
type Loop struct {
	cfg    Config
	log    *slog.Logger
	tracer trace.Tracer
	demote chan string

	mu          sync.Mutex
	state       State
	member      *election.Member
	leader      election.LeaderInfo // as last observed
	epoch       int64               // our term, while leading
	leaderSince time.Time
	lostAt      time.Time // when the last leader was seen gone
	lostLeader  string
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
		demote: make(chan string, 1),
		state:  StateFollower,
	}, nil
}

// Demote asks the leader to step down, e.g. because the store rejected its
// epoch. It does not block; it is a no-op when not leading.
func (l *Loop) Demote(reason string) {
	select {
	case l.demote <- reason:
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

// lead runs one term: fence, start, label, then wait for its end.
func (l *Loop) lead(ctx context.Context, m *election.Member, lead *election.Leadership, campaignStart time.Time) {
	won := time.Now()
	epoch := lead.Epoch()
	previous, start := l.takeLoss(lead.Key(), campaignStart, won)
	fctx, span := l.tracer.Start(lead.Context(), "vectis.failover", trace.WithTimestamp(start),
		trace.WithAttributes(
			attribute.String("vectis.previous_leader", previous),
			attribute.String("vectis.new_leader", m.Name()),
			attribute.Int64("vectis.epoch", epoch),
			attribute.String("vectis.reason", lossReason(previous)),
		))
	span.AddEvent("campaign won")

	termCtx, endTerm := context.WithCancel(lead.Context())
	defer endTerm()

	if err := l.transition(fctx, "fence", func(ctx context.Context) error {
		return l.cfg.Fence.ClaimLeadership(ctx, epoch, m.Name())
	}); err != nil {
		l.log.Error("fencing write refused; giving up leadership", "epoch", epoch, "err", err)
		span.RecordError(err)
		span.SetStatus(codes.Error, "fencing failed")
		span.End()
		l.stepDown(context.WithoutCancel(ctx), lead, "fencing failed", true)
		return
	}
	if err := l.transition(fctx, "pesit.start", func(ctx context.Context) error {
		return l.cfg.Serving.Start(ctx, epoch)
	}); err != nil {
		l.log.Error("cannot start PeSIT servers; giving up leadership", "err", err)
		span.RecordError(err)
		span.SetStatus(codes.Error, "pesit start failed")
		span.End()
		l.stepDown(context.WithoutCancel(ctx), lead, "pesit start failed", true)
		return
	}
	l.becomeLeader(epoch, won)
	serving := time.Now()
	if l.cfg.Labeler != nil {
		// Labelling is after the listeners accept so that the Service never
		// routes to a leader that is not serving yet.
		if err := l.transition(fctx, "label", func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, l.cfg.LabelTimeout)
			defer cancel()
			return l.cfg.Labeler.Label(ctx)
		}); err != nil {
			l.log.Warn("pod label not set yet; the labeller keeps trying", "err", err)
		}
	}
	span.SetAttributes(attribute.Float64("vectis.failover_seconds", serving.Sub(start).Seconds()))
	span.End()
	if previous != "" && previous != m.Name() {
		l.cfg.Metrics.observeFailover(serving.Sub(start))
	}
	l.log.Info("leading", "epoch", epoch, "previous", previous,
		"failover", serving.Sub(start).Round(time.Millisecond))

	var wg sync.WaitGroup
	if l.cfg.Labeler != nil {
		wg.Add(1)
		go func() { defer wg.Done(); l.keepLabel(termCtx) }()
	}
	if l.cfg.LeaderJobs != nil {
		wg.Add(1)
		go func() { defer wg.Done(); l.cfg.LeaderJobs(termCtx, epoch) }()
	}

	var reason string
	resign := false
	select {
	case <-lead.Done():
		reason = fmt.Sprintf("leadership lost: %v", lead.Err())
	case r := <-l.demote:
		reason = "demoted: " + r
		resign = true
	case <-ctx.Done():
		reason = "shutdown"
		resign = true
	}
	endTerm()
	wg.Wait()
	l.stepDown(context.WithoutCancel(ctx), lead, reason, resign)
}

// stepDown stops serving before anything else. On shutdown it resigns right
// after the listeners close, so a standby wins in one round trip while the
// live sessions drain; when leadership is already lost they are aborted at
// once, since another member may be leading.
func (l *Loop) stepDown(ctx context.Context, lead *election.Leadership, reason string, resign bool) {
	l.setState(StateSteppingDown, reason)
	ctx, span := l.tracer.Start(ctx, "vectis.stepdown", trace.WithAttributes(
		attribute.String("vectis.member", l.cfg.Election.Name),
		attribute.Int64("vectis.epoch", lead.Epoch()),
		attribute.String("vectis.reason", reason),
	))
	defer span.End()
	began := time.Now()

	l.cfg.Serving.StopAccepting()
	span.AddEvent("listeners closed")
	drain := l.cfg.DrainTimeout
	if resign {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if err := lead.Resign(rctx); err != nil {
			l.log.Warn("resign", "err", err)
		}
		cancel()
		span.AddEvent("resigned")
	} else {
		drain = 0
	}
	dctx, cancel := context.WithTimeout(ctx, drain)
	if err := l.cfg.Serving.Drain(dctx); err != nil {
		span.RecordError(err)
		l.log.Warn("drain", "err", err)
	}
	cancel()
	span.AddEvent("sessions ended")
	if !resign {
		// Leadership is already over; release it all the same, so that the
		// member can campaign again and a key that etcd still holds goes.
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		_ = lead.Resign(rctx)
		cancel()
	}
	if l.cfg.Labeler != nil {
		uctx, cancel := context.WithTimeout(ctx, l.cfg.LabelTimeout)
		if err := l.cfg.Labeler.Unlabel(uctx); err != nil {
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
	l.setState(StateFollower, reason)
	l.log.Info("stepped down", "reason", reason, "took", time.Since(began).Round(time.Millisecond))
}

// keepLabel reconciles the label while leading: the API server may have been
// down at the win, or someone may have labelled another pod. A labeller that
// can watch runs its own loop; otherwise the label is re-applied on a timer.
func (l *Loop) keepLabel(ctx context.Context) {
	if r, ok := l.cfg.Labeler.(interface{ Run(context.Context) error }); ok {
		if err := r.Run(ctx); err != nil && ctx.Err() == nil {
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
		if err := l.cfg.Labeler.Label(lctx); err != nil && ctx.Err() == nil {
			l.log.Debug("label reconcile", "err", err)
		}
		cancel()
	}
}

// transition runs one step of taking over as a child span of the failover.
func (l *Loop) transition(ctx context.Context, name string, step func(context.Context) error) error {
	ctx, span := l.tracer.Start(ctx, "vectis.failover."+name)
	defer span.End()
	if err := step(ctx); err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
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

func (l *Loop) setMember(m *election.Member) {
	l.mu.Lock()
	l.member = m
	l.mu.Unlock()
}

// takeLoss says which leader this node replaces and since when it knew the
// leader was gone, for the failover span and metric. The campaign returning
// is itself a detection: the key ahead of ours was deleted. The observer may
// have seen the deletion a little earlier, or not yet; a loss it recorded
// before this campaign began belongs to an older term. The recorded loss is
// consumed, so that a later term cannot reuse it.
func (l *Loop) takeLoss(ownKey string, campaignStart, won time.Time) (string, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	previous, start := "", won
	switch {
	case l.leader.Name != "" && l.leader.Key != ownKey:
		// The observer has not delivered the old leader's deletion yet.
		previous = l.leader.Name
	case l.lostLeader != "" && !l.lostAt.Before(campaignStart):
		previous, start = l.lostLeader, l.lostAt
	}
	l.lostLeader, l.lostAt = "", time.Time{}
	return previous, start
}

func lossReason(previous string) string {
	if previous == "" {
		return "no previous leader"
	}
	return "previous leader lost"
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
