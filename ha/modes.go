package ha

import (
	"errors"
	"time"

	"github.com/vectis-ft/vectis/election"
)

// Reason names why a leader steps down. It is logged, traced (attribute
// vectis.stepdown.reason) and counted (vectis_cluster_stepdowns_total{reason}).
type Reason string

// The step-down reasons.
const (
	// ReasonShutdown: the process is stopping (SIGTERM, a rollout).
	ReasonShutdown Reason = "shutdown"
	// ReasonStaleEpoch: the store refused a leader-only write because a newer
	// term is recorded there.
	ReasonStaleEpoch Reason = "stale_epoch"
	// ReasonDemoted: another part of the node asked the leader to step down.
	ReasonDemoted Reason = "demoted"
	// ReasonLeaseLost: etcd says the lease expired or was revoked.
	ReasonLeaseLost Reason = "lease_lost"
	// ReasonDeadlineExceeded: the leader's own deadline (last answered
	// renewal + TTL - margin) passed without a renewal.
	ReasonDeadlineExceeded Reason = "deadline_exceeded"
	// ReasonKeyDeleted: the leader key was deleted behind the leader's back.
	ReasonKeyDeleted Reason = "key_deleted"
	// ReasonQuorumLost: the session ended for another reason (etcd
	// unreachable, member closed).
	ReasonQuorumLost Reason = "quorum_lost"
	// ReasonFencingFailed: the fencing write of a new term was refused.
	ReasonFencingFailed Reason = "fencing_failed"
	// ReasonStartFailed: the PeSIT servers of a new term did not start.
	ReasonStartFailed Reason = "start_failed"
)

// Mode is what a step-down does, in the spirit of Patroni's mode_control.
// Listeners always close first, before anything else.
type Mode struct {
	// Resign deletes the leader key right after the listeners close, so that
	// a standby wins in one round trip. Without it the key is released only
	// after the sessions ended (it may already be gone).
	Resign bool
	// Drain lets live sessions finish for up to the drain timeout; each
	// finishes the transfers it owns, which the store lets it do (per
	// transfer fencing). Without it live sessions are aborted at once
	// (ABORT 3/316): the node may be cut off from etcd, so another member
	// may lead, and a node cut off stops writing.
	Drain bool
}

// modes is the step-down table: reason -> (resign?, drain?). The wait is
// the drain timeout when Drain is set, else none.
var modes = map[Reason]Mode{
	ReasonShutdown:         {Resign: true, Drain: true},
	ReasonStaleEpoch:       {Resign: true, Drain: true},
	ReasonDemoted:          {Resign: true, Drain: true},
	ReasonLeaseLost:        {Resign: false, Drain: false},
	ReasonDeadlineExceeded: {Resign: false, Drain: false},
	ReasonKeyDeleted:       {Resign: false, Drain: false},
	ReasonQuorumLost:       {Resign: false, Drain: false},
	ReasonFencingFailed:    {Resign: true, Drain: false},
	ReasonStartFailed:      {Resign: true, Drain: false},
}

// ModeOf returns the step-down mode of r; an unknown reason gets the safest
// mode (no drain).
func ModeOf(r Reason) Mode {
	return modes[r]
}

// wait is how long a step-down in mode m lets sessions run.
func (m Mode) wait(drainTimeout time.Duration) time.Duration {
	if m.Drain {
		return drainTimeout
	}
	return 0
}

// lossReason names why an election leadership ended on its own.
func lossReason(err error) Reason {
	switch {
	case errors.Is(err, election.ErrLeaseExpired):
		return ReasonLeaseLost
	case errors.Is(err, election.ErrDeadlineExceeded):
		return ReasonDeadlineExceeded
	case errors.Is(err, election.ErrKeyDeleted):
		return ReasonKeyDeleted
	}
	return ReasonQuorumLost
}
