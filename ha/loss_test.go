package ha

import (
	"context"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/election"
)

// TestTakeLoss covers the orders in which the observer and the campaign can
// learn that the previous leader is gone.
func TestTakeLoss(t *testing.T) {
	newLoop := func() *Loop {
		l, err := New(Config{Election: election.Config{Name: "me", Cluster: "c"}, Serving: &recorder{mon: &monitor{}}, Fence: nopFence{}})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	t0 := time.Now()
	campaign, won := t0.Add(time.Second), t0.Add(3*time.Second)

	// The observer has not seen the deletion yet: the leader it shows is the one replaced.
	l := newLoop()
	l.noteLeader(election.LeaderInfo{Name: "a", Key: "ka", Lease: 7})
	if x := l.takeLoss("kme", campaign, won); x.leader != "a" || !x.seen.Equal(won) || x.info.Lease != 7 {
		t.Errorf("observer behind: %+v, want a (lease 7) at the win", x)
	}

	// The observer saw the old leader go (to nobody, or straight to us).
	for _, next := range []election.LeaderInfo{{}, {Name: "me", Key: "kme"}} {
		l = newLoop()
		l.noteLeader(election.LeaderInfo{Name: "a", Key: "ka", Lease: 9})
		l.lostAt = time.Time{}
		l.noteLeader(next)
		seen := l.lostAt
		if seen.IsZero() {
			t.Fatalf("loss of a not recorded when the observer saw %+v", next)
		}
		x := l.takeLoss("kme", seen.Add(-time.Millisecond), seen.Add(time.Second))
		if x.leader != "a" || !x.seen.Equal(seen) || x.info.Lease != 9 {
			t.Errorf("observer ahead (%+v): %+v, want a (lease 9) from %v", next, x, seen)
		}
		// Consumed: a later term does not reuse it.
		if l.lostLeader != "" || !l.lostAt.IsZero() || l.lostInfo.Key != "" {
			t.Errorf("the loss of a was not consumed")
		}
	}

	// A loss recorded before this campaign began belongs to an older term.
	l = newLoop()
	l.lostLeader, l.lostAt = "old", t0
	if x := l.takeLoss("kme", campaign, won); x.leader != "" || !x.seen.Equal(won) {
		t.Errorf("stale loss: %+v, want none", x)
	}
}

type nopFence struct{}

func (nopFence) ClaimLeadership(context.Context, int64, string) error { return nil }
