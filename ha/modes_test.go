package ha

import (
	"fmt"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/election"
)

// TestStepDownModes: a node that may be cut off from etcd never drains (it
// must stop writing at once); a node that hands over on purpose resigns at
// once and drains for the drain timeout.
func TestStepDownModes(t *testing.T) {
	for _, r := range []Reason{ReasonLeaseLost, ReasonDeadlineExceeded, ReasonKeyDeleted, ReasonQuorumLost} {
		if m := ModeOf(r); m.Drain || m.wait(time.Minute) != 0 {
			t.Errorf("%s: %+v, want no drain", r, m)
		}
	}
	for _, r := range []Reason{ReasonShutdown, ReasonDemoted, ReasonStaleEpoch} {
		if m := ModeOf(r); !m.Resign || !m.Drain || m.wait(time.Minute) != time.Minute {
			t.Errorf("%s: %+v, want resign and drain for the drain timeout", r, m)
		}
	}
	if m := ModeOf("unknown"); m.Drain {
		t.Errorf("an unknown reason drains: %+v", m)
	}
	for err, want := range map[error]Reason{
		election.ErrLeaseExpired:                          ReasonLeaseLost,
		fmt.Errorf("x: %w", election.ErrDeadlineExceeded): ReasonDeadlineExceeded,
		election.ErrKeyDeleted:                            ReasonKeyDeleted,
		election.ErrClosed:                                ReasonQuorumLost,
	} {
		if got := lossReason(err); got != want {
			t.Errorf("lossReason(%v) = %s, want %s", err, got, want)
		}
	}
}
