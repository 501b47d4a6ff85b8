package ha

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// outageTime is when the lost leader stopped serving, as well as this node
// can know it, and how long the loss took to notice.
type outageTime struct {
	start     time.Time
	detection time.Duration
}

// takeover records the steps of taking over leadership. The span that covers
// the failover starts when the outage began, which is known only once etcd's
// history has been read beside the steps; the steps are timed as they run and
// emitted as its children afterwards, with their own timestamps.
type takeover struct {
	tracer trace.Tracer

	mu    sync.Mutex
	steps []takeoverStep
}

type takeoverStep struct {
	name       string
	start, end time.Time
	err        error
}

// run runs one step of taking over and records it.
func (t *takeover) run(ctx context.Context, name string, step func(context.Context) error) error {
	start := time.Now()
	err := step(ctx)
	t.mu.Lock()
	t.steps = append(t.steps, takeoverStep{name: name, start: start, end: time.Now(), err: err})
	t.mu.Unlock()
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// emit writes the vectis.failover span, from the outage's start to serving
// (or to now when the takeover failed), and one child span per step.
func (t *takeover) emit(ctx context.Context, o outageTime, x loss, self string, epoch int64, won, serving time.Time, failure error) {
	_, span := t.tracer.Start(ctx, "vectis.failover", trace.WithTimestamp(o.start),
		trace.WithAttributes(
			attribute.String("vectis.previous_leader", x.leader),
			attribute.String("vectis.new_leader", self),
			attribute.Int64("vectis.epoch", epoch),
			attribute.String("vectis.reason", x.reason()),
			attribute.Float64("vectis.failover.detection_seconds", o.detection.Seconds()),
		))
	if !x.seen.IsZero() {
		span.AddEvent("leader loss observed", trace.WithTimestamp(x.seen))
	}
	span.AddEvent("campaign won", trace.WithTimestamp(won))
	fctx := trace.ContextWithSpan(ctx, span)
	t.mu.Lock()
	steps := append([]takeoverStep(nil), t.steps...)
	t.mu.Unlock()
	for _, s := range steps {
		_, child := t.tracer.Start(fctx, "vectis.failover."+s.name, trace.WithTimestamp(s.start))
		if s.err != nil {
			child.RecordError(s.err)
			child.SetStatus(codes.Error, s.err.Error())
		}
		child.End(trace.WithTimestamp(s.end))
	}
	if failure != nil {
		span.RecordError(failure)
		span.SetStatus(codes.Error, failure.Error())
		span.End()
		return
	}
	span.SetAttributes(attribute.Float64("vectis.failover_seconds", serving.Sub(o.start).Seconds()))
	span.End(trace.WithTimestamp(serving))
}
