package store

import (
	"errors"
	"fmt"
)

// Typed errors. Every error the store returns that falls in one of these
// classes wraps the matching value, so callers test with errors.Is and the
// API maps them to HTTP statuses (404, 409, 409/503, 503, 400).
var (
	// ErrNotFound: the record does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrConflict: a record with that key already exists, or a concurrent
	// change made the write impossible.
	ErrConflict = errors.New("store: conflict")
	// ErrStaleEpoch: a leader-only write carried an epoch that is not the
	// recorded leader epoch; the caller is no longer (or not yet) the leader.
	ErrStaleEpoch = errors.New("store: stale leader epoch")
	// ErrUnavailable: the database could not be reached (connection refused
	// or lost, server shutting down, connect deadline). Retrying later may work.
	ErrUnavailable = errors.New("store: database unavailable")
	// ErrInvalid: the record failed validation.
	ErrInvalid = errors.New("store: invalid")
	// ErrNotOwner: a transfer write came from a session that no longer owns
	// the transfer, because a newer term took it over (a restart on the new
	// leader, or the orphan sweep). It is a conflict (HTTP 409) and never a
	// reason to step down: the writer is a draining old leader.
	ErrNotOwner = fmt.Errorf("%w: transfer owned by a newer term", ErrConflict)
)
