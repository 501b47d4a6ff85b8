package client

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Retry says how Push and Pull repeat a failed attempt on a new connection.
type Retry struct {
	// Retries is the number of attempts after the first (0: no retry).
	Retries int
	// Backoff is the wait before the first retry (default 1 s); it doubles
	// after each attempt up to MaxBackoff (default 30 s).
	Backoff    time.Duration
	MaxBackoff time.Duration
	// OnRetry, when set, is told about each failed attempt that will be
	// retried, before the wait.
	OnRetry func(attempt int, err error, wait time.Duration)
}

// Push dials, sends req and releases, retrying retryable failures; each
// retry resumes from the last sync point the server acknowledged (restart
// state beside the source or in req.StateDir).
func Push(ctx context.Context, cfg Config, req SendRequest, r Retry) (Result, error) {
	return withRetry(ctx, cfg, r, func(s *Session) (Result, error) { return s.Send(ctx, req) })
}

// Pull dials, receives req and releases, retrying retryable failures; each
// retry resumes from the last sync point we acknowledged.
func Pull(ctx context.Context, cfg Config, req ReceiveRequest, r Retry) (Result, error) {
	return withRetry(ctx, cfg, r, func(s *Session) (Result, error) { return s.Receive(ctx, req) })
}

func withRetry(ctx context.Context, cfg Config, r Retry, do func(*Session) (Result, error)) (Result, error) {
	wait := r.Backoff
	if wait <= 0 {
		wait = time.Second
	}
	maxWait := r.MaxBackoff
	if maxWait <= 0 {
		maxWait = 30 * time.Second
	}
	for attempt := 1; ; attempt++ {
		res, err := once(ctx, cfg, do)
		res.Attempts = attempt
		if err == nil {
			return res, nil
		}
		if attempt > r.Retries || !Retryable(err) || ctx.Err() != nil {
			if attempt > 1 {
				err = fmt.Errorf("attempt %d: %w", attempt, err)
			}
			return res, err
		}
		if r.OnRetry != nil {
			r.OnRetry(attempt, err, wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return res, errors.Join(err, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, maxWait)
	}
}

func once(ctx context.Context, cfg Config, do func(*Session) (Result, error)) (Result, error) {
	s, err := Dial(ctx, cfg)
	if err != nil {
		return Result{}, err
	}
	res, err := do(s)
	res.ConnectTime = s.ConnectLatency()
	if err != nil {
		if s.broken || s.Release(ctx) != nil {
			_ = s.Abort(abortDiag(err))
		}
		return res, err
	}
	if err := s.Release(ctx); err != nil {
		// The transfer is complete and acknowledged; a failed RELEASE does
		// not undo it.
		s.log.Warn("release failed after a complete transfer", "err", err)
	}
	return res, nil
}
