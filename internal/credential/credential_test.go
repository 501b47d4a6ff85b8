package credential_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vectis-ft/vectis/internal/credential"
	"github.com/vectis-ft/vectis/store"
)

// counting wraps store.VerifyPassword and records how many derivations ran,
// and how many at most ran at once.
type counting struct {
	n, cur, peak atomic.Int64
	hold         time.Duration
}

func (c *counting) derive(hash, password string) (bool, error) {
	c.n.Add(1)
	cur := c.cur.Add(1)
	defer c.cur.Add(-1)
	for {
		p := c.peak.Load()
		if cur <= p || c.peak.CompareAndSwap(p, cur) {
			break
		}
	}
	// The hold is what the test measures against: a derivation that
	// takes a while (fake time under synctest).
	time.Sleep(c.hold)
	return store.VerifyPassword(hash, password)
}

func newVerifier(t *testing.T, cfg credential.Config, c *counting) *credential.Verifier {
	t.Helper()
	cfg.Derive = c.derive
	v, err := credential.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func hash(t *testing.T, pw string) string {
	t.Helper()
	h, err := store.HashPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// Regression for issue 16 defect 1: 24 concurrent wrong passwords never run
// more derivations at once than there are slots.
func TestConcurrencyIsBounded(t *testing.T) {
	// In a bubble the derivations' hold is fake time: the test is about
	// how many run at once, not how long they take.
	synctest.Test(t, func(t *testing.T) {
		c := &counting{hold: 5 * time.Millisecond}
		v := newVerifier(t, credential.Config{Slots: 2, MaxWait: time.Minute}, c)
		h := hash(t, "right")
		var wg sync.WaitGroup
		for i := range 24 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := v.Verify(context.Background(), credential.RealmPeSIT, "P", h, fmt.Sprint("wrong", i), nil, nil)
				if err != nil || r != credential.Rejected {
					t.Errorf("wrong password: %v %v", r, err)
				}
			}()
		}
		wg.Wait()
		if got := c.n.Load(); got != 24 {
			t.Errorf("derivations = %d, want 24", got)
		}
		if got := c.peak.Load(); got > 2 {
			t.Errorf("peak concurrent derivations = %d, want <= 2 slots", got)
		}
	})
}

// fakeClock is a settable clock for the cache's expiry.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (f *fakeClock) Now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.now }

func (f *fakeClock) advance(d time.Duration) { f.mu.Lock(); f.now = f.now.Add(d); f.mu.Unlock() }

// cachedVerifier is a verifier whose cache lives a minute on a fake clock.
func cachedVerifier(t *testing.T) (*credential.Verifier, *counting, *fakeClock) {
	c, clock := &counting{}, &fakeClock{now: time.Unix(1000, 0)}
	return newVerifier(t, credential.Config{CacheTTL: time.Minute, Now: clock.Now}, c), c, clock
}

func TestCacheSparesTheDerivation(t *testing.T) {
	v, c, clock := cachedVerifier(t)
	h := hash(t, "right")
	ctx := context.Background()
	for i := range 3 {
		r, err := v.Verify(ctx, credential.RealmPeSIT, "P", h, "right", func() bool {
			if i > 0 {
				t.Error("gate called on a cached credential")
			}
			return true
		}, nil)
		if err != nil || r != credential.Accepted {
			t.Fatalf("verify %d: %v %v", i, r, err)
		}
	}
	if got := c.n.Load(); got != 1 {
		t.Errorf("derivations for 3 good logins = %d, want 1", got)
	}
	// The cache never accepts a wrong password, nor the right password for
	// another subject or another stored hash.
	if r, _ := v.Verify(ctx, credential.RealmPeSIT, "P", h, "wrong", nil, nil); r != credential.Rejected {
		t.Errorf("wrong password after a cached good one: %v", r)
	}
	if r, _ := v.Verify(ctx, credential.RealmPeSIT, "Q", h, "right", nil, nil); r != credential.Accepted || c.n.Load() != 3 {
		t.Errorf("other subject: %v after %d derivations, want accepted after a derivation", r, c.n.Load())
	}
	h2 := hash(t, "new")
	if r, _ := v.Verify(ctx, credential.RealmPeSIT, "P", h2, "right", nil, nil); r != credential.Rejected {
		t.Errorf("old password after a password change: %v, want rejected", r)
	}
	// Forget and expiry both send the next login back to the derivation.
	n := c.n.Load()
	v.Forget("P")
	if r, _ := v.Verify(ctx, credential.RealmPeSIT, "P", h, "right", nil, nil); r != credential.Accepted || c.n.Load() != n+1 {
		t.Errorf("after Forget: %v, derivations %d -> %d", r, n, c.n.Load())
	}
	clock.advance(2 * time.Minute)
	if r, _ := v.Verify(ctx, credential.RealmPeSIT, "P", h, "right", nil, nil); r != credential.Accepted || c.n.Load() != n+2 {
		t.Errorf("after expiry: %v, derivations %d -> %d", r, n+1, c.n.Load())
	}
}

// An unknown subject (empty hash) derives the dummy hash: the same work as a
// wrong password, and never Accepted, even for the dummy's own password.
func TestUnknownSubjectCostsADerivation(t *testing.T) {
	c := &counting{}
	v := newVerifier(t, credential.Config{}, c)
	for _, pw := range []string{"", "x", "anything"} {
		r, err := v.Verify(context.Background(), credential.RealmAPI, "nobody", "", pw, nil, nil)
		if err != nil || r != credential.Rejected {
			t.Errorf("unknown subject: %v %v", r, err)
		}
	}
	if got := c.n.Load(); got != 3 {
		t.Errorf("derivations = %d, want 3 (one dummy per unknown login)", got)
	}
}

func TestGateRefusesWithoutDeriving(t *testing.T) {
	c := &counting{}
	v := newVerifier(t, credential.Config{}, c)
	h := hash(t, "right")
	var derived []bool
	r, err := v.Verify(context.Background(), credential.RealmPeSIT, "P", h, "right", func() bool { return false }, func(ok bool) { derived = append(derived, ok) })
	if err != nil || r != credential.Throttled || c.n.Load() != 0 || len(derived) != 0 {
		t.Errorf("gated: %v %v, %d derivations, onDerived %v", r, err, c.n.Load(), derived)
	}
	r, _ = v.Verify(context.Background(), credential.RealmPeSIT, "P", h, "wrong", nil, func(ok bool) { derived = append(derived, ok) })
	if r != credential.Rejected || len(derived) != 1 || derived[0] {
		t.Errorf("onDerived after a wrong password: %v %v", r, derived)
	}
}

func TestBusyAfterMaxWait(t *testing.T) {
	// In a bubble MaxWait and the hold are fake time, so the order is
	// certain: the second check waits out MaxWait while the first holds
	// the only slot.
	synctest.Test(t, func(t *testing.T) {
		c := &counting{hold: 300 * time.Millisecond}
		reg := prometheus.NewRegistry()
		v := newVerifier(t, credential.Config{Slots: 1, MaxWait: 20 * time.Millisecond, Registerer: reg}, c)
		h := hash(t, "right")
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = v.Verify(context.Background(), credential.RealmPeSIT, "P", h, "a", nil, nil)
		}()
		synctest.Wait() // the first check holds the slot, in its derivation
		if c.cur.Load() != 1 {
			t.Fatalf("%d derivations running, want the first check's", c.cur.Load())
		}
		_, err := v.Verify(context.Background(), credential.RealmPeSIT, "P", h, "b", nil, nil)
		if !errors.Is(err, credential.ErrBusy) {
			t.Errorf("second verify with the only slot held: %v, want ErrBusy", err)
		}
		<-done
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var busy float64
		var waits uint64
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				switch mf.GetName() {
				case "vectis_credential_checks_total":
					for _, l := range m.GetLabel() {
						if l.GetName() == "result" && l.GetValue() == "busy" {
							busy += m.GetCounter().GetValue()
						}
					}
				case "vectis_credential_wait_seconds":
					waits += m.GetHistogram().GetSampleCount()
				}
			}
		}
		if busy != 1 || waits != 2 {
			t.Errorf("busy count = %v, wait observations = %d; want 1 and 2", busy, waits)
		}
	})
}

// Issue 17 item 3: 1,000 sessions of one partner opened at once must not
// queue 1,000 derivations of the same password: identical checks share one.
func TestIdenticalChecksShareOneDerivation(t *testing.T) {
	// In a bubble every check has queued before the first derivation
	// ends (fake time advances only when all goroutines wait).
	synctest.Test(t, func(t *testing.T) {
		c := &counting{hold: 50 * time.Millisecond}
		v := newVerifier(t, credential.Config{Slots: 2}, c)
		h := hash(t, "right")
		var wg sync.WaitGroup
		var accepted, rejected atomic.Int64
		for i := range 100 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pw := "right"
				if i%2 == 1 {
					pw = "wrong"
				}
				r, err := v.Verify(context.Background(), credential.RealmPeSIT, "P", h, pw, nil, nil)
				switch {
				case err != nil:
					t.Error(err)
				case r == credential.Accepted && pw == "right":
					accepted.Add(1)
				case r == credential.Rejected && pw == "wrong":
					rejected.Add(1)
				default:
					t.Errorf("password %q: %v", pw, r)
				}
			}()
		}
		wg.Wait()
		if accepted.Load() != 50 || rejected.Load() != 50 {
			t.Errorf("accepted %d, rejected %d; want 50 and 50", accepted.Load(), rejected.Load())
		}
		// One derivation per distinct password, give or take a check that
		// arrived after its twin had finished (a wrong one is not cached).
		if n := c.n.Load(); n > 6 {
			t.Errorf("%d derivations for 100 checks of 2 distinct passwords", n)
		}
	})
}

// Turn is taken for a derivation only: a cached login of a busy address
// does not queue behind its other checks.
func TestTurnOnlyForDerivations(t *testing.T) {
	c := &counting{}
	v := newVerifier(t, credential.Config{}, c)
	h := hash(t, "right")
	turns := 0
	hooks := credential.Hooks{Turn: func() (func(), bool) { turns++; return func() {}, true }}
	ctx := context.Background()
	for range 3 {
		if r, err := v.VerifyWith(ctx, credential.RealmPeSIT, "P", h, "right", hooks); r != credential.Accepted || err != nil {
			t.Fatalf("%v %v", r, err)
		}
	}
	if turns != 1 {
		t.Errorf("%d turns for 1 derivation and 2 cached logins", turns)
	}
	refused := credential.Hooks{Turn: func() (func(), bool) { return nil, false }}
	if _, err := v.VerifyWith(ctx, credential.RealmPeSIT, "P", h, "other", refused); !errors.Is(err, credential.ErrBusy) || c.n.Load() != 1 {
		t.Errorf("no turn: %v after %d derivations, want ErrBusy and no derivation", err, c.n.Load())
	}
}

// TestPinSparesTheFirstDerivation: a password pinned from the configuration
// costs one derivation when pinned, none at the first login nor after the
// cache's TTL, and none again until its subject changes. A mismatch pins
// nothing, and a pinned credential never lets in another password, subject
// or stored hash.
func TestPinSparesTheFirstDerivation(t *testing.T) {
	v, c, clock := cachedVerifier(t)
	h := hash(t, "right")
	ctx := context.Background()

	if err := v.Pin(ctx, "P", h, "stale"); !errors.Is(err, credential.ErrPinMismatch) {
		t.Fatalf("pin of a password that does not match: %v, want ErrPinMismatch", err)
	}
	if err := v.Pin(ctx, "P", h, "right"); err != nil {
		t.Fatal(err)
	}
	if err := v.Pin(ctx, "P", h, "right"); err != nil {
		t.Fatal(err)
	}
	if got := c.n.Load(); got != 2 {
		t.Fatalf("derivations for a mismatch and two pins of one password = %d, want 2", got)
	}
	clock.advance(time.Hour) // far past the cache's TTL
	// The first login with a pinned password is treated as a derivation
	// would be, minus its cost: a throttle closes it, and a success is
	// reported; the next ones are cache hits.
	if r, _ := v.Verify(ctx, credential.RealmPeSIT, "P", h, "right", func() bool { return false }, nil); r != credential.Throttled {
		t.Errorf("pinned password through a closed gate: %v, want throttled", r)
	}
	reported := 0
	for i := range 3 {
		r, err := v.Verify(ctx, credential.RealmPeSIT, "P", h, "right", func() bool {
			if i > 0 {
				t.Error("gate called on a credential already proved")
			}
			return true
		}, func(ok bool) {
			if !ok {
				t.Error("pinned login reported as a failure")
			}
			reported++
		})
		if err != nil || r != credential.Accepted {
			t.Fatalf("login %d with the pinned password: %v %v", i, r, err)
		}
	}
	if reported != 1 {
		t.Errorf("logins reported as verified = %d, want 1 (the first)", reported)
	}
	if got := c.n.Load(); got != 2 {
		t.Errorf("derivations after logins with a pinned password = %d, want still 2", got)
	}
	if r, _ := v.Verify(ctx, credential.RealmPeSIT, "P", h, "wrong", nil, nil); r != credential.Rejected {
		t.Errorf("wrong password beside a pinned one: %v", r)
	}
	if r, _ := v.Verify(ctx, credential.RealmPeSIT, "Q", h, "right", nil, nil); r != credential.Accepted || c.n.Load() != 4 {
		t.Errorf("other subject: %v after %d derivations, want accepted after its own derivation", r, c.n.Load())
	}
	if r, _ := v.Verify(ctx, credential.RealmPeSIT, "P", hash(t, "new"), "right", nil, nil); r != credential.Rejected {
		t.Errorf("pinned password against a changed stored hash: %v, want rejected", r)
	}
	// A change of the subject unpins it: the next login derives again.
	n := c.n.Load()
	v.Forget("P")
	if r, _ := v.Verify(ctx, credential.RealmPeSIT, "P", h, "right", nil, nil); r != credential.Accepted || c.n.Load() != n+1 {
		t.Errorf("after Forget: %v, derivations %d -> %d, want one more", r, n, c.n.Load())
	}
}
