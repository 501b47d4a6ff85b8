// Package credential verifies passwords against stored hashes with bounded
// work. It is shared by the PeSIT servers and the admin API of a process, so
// that "at most N password derivations per node" holds for the whole node:
// an argon2id derivation takes about 19 MiB and 18 ms of CPU, and a flood of
// CONNECTs or HTTP logins must cost neither unbounded memory nor unbounded
// CPU.
//
// A Verifier owns three things:
//   - a semaphore of derivation slots, with the time spent waiting for one
//     counted in a histogram and a bound on that wait;
//   - a cache of verified credentials, keyed by an HMAC-SHA256 (under a
//     per-process random key) of the subject, the stored hash and the
//     password, so that no password is kept and a change of the stored hash
//     makes old entries unreachable;
//   - a dummy argon2id hash, derived for unknown subjects so that refusing
//     an unknown partner or user costs what a wrong password costs;
//   - pinned credentials (Pin): passwords the process was given in its own
//     configuration, verified once against their stored hash and kept
//     without expiry until their subject changes, so that a standby that
//     becomes leader does not pay a derivation at its first CONNECT.
package credential

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vectis-ft/vectis/store"
)

// Realms label the metrics by caller; a closed set.
const (
	RealmPeSIT = "pesit"
	RealmAPI   = "api"
	// RealmPin counts the derivations of Pin: no login, a password the
	// process was configured with.
	RealmPin = "pin"
)

// Result is the outcome of Verify.
type Result uint8

// Results.
const (
	// Rejected: the password does not match, or the subject is unknown.
	Rejected Result = iota
	// Accepted: the password matches (derived now or found in the cache).
	Accepted
	// Throttled: the gate refused the derivation; nothing was derived.
	Throttled
)

func (r Result) String() string {
	switch r {
	case Accepted:
		return "accepted"
	case Throttled:
		return "throttled"
	}
	return "rejected"
}

// ErrBusy is returned when no derivation slot freed up within Config.MaxWait:
// the node is overloaded with logins and the caller should answer
// "try later" (PeSIT congestion, HTTP 503).
var ErrBusy = errors.New("credential: password verification busy")

// Config sizes a Verifier. Zero values take the defaults.
type Config struct {
	// Slots bounds concurrent derivations; 0 = GOMAXPROCS, at least 2 and
	// at most 8. Each argon2id slot holds about 19 MiB while it runs.
	Slots int
	// MaxWait bounds the wait for a slot; 0 = 5s.
	MaxWait time.Duration
	// CacheTTL is how long a verified credential is remembered; 0 = 10m.
	CacheTTL time.Duration
	// CacheSize bounds the remembered credentials; 0 = 4096.
	CacheSize int
	// Registerer receives the metrics; nil = not registered.
	Registerer prometheus.Registerer
	// Now is the clock of the cache; nil = time.Now.
	Now func() time.Time
	// Derive checks a password against a hash; nil = store.VerifyPassword.
	// Tests replace it to count derivations.
	Derive func(hash, password string) (bool, error)
}

// Defaults.
const (
	DefaultMaxWait   = 5 * time.Second
	DefaultCacheTTL  = 10 * time.Minute
	DefaultCacheSize = 4096
)

// Verifier is safe for concurrent use.
type Verifier struct {
	slots   chan struct{}
	maxWait time.Duration
	ttl     time.Duration
	size    int
	now     func() time.Time
	derive  func(hash, password string) (bool, error)
	dummy   string
	key     []byte

	wait   *prometheus.HistogramVec
	checks *prometheus.CounterVec
	inUse  prometheus.Gauge

	mu       sync.Mutex
	cache    map[string]entry
	inflight map[string]*call
	// pinned maps cache ids to their subject; see Pin.
	pinned map[string]string
}

// call is a derivation in flight; identical checks wait for its result
// rather than queueing their own: 1,000 sessions of one partner opened at
// once cost one derivation, not 1,000.
type call struct {
	done chan struct{}
	res  Result
	err  error
}

type entry struct {
	subject string
	expires time.Time
}

// New returns a Verifier; it derives one dummy hash (a few milliseconds).
func New(cfg Config) (*Verifier, error) {
	if cfg.Slots <= 0 {
		cfg.Slots = min(max(runtime.GOMAXPROCS(0), 2), 8)
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = DefaultCacheSize
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Derive == nil {
		cfg.Derive = store.VerifyPassword
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("credential: cache key: %w", err)
	}
	dummy, err := store.HashPassword(hex.EncodeToString(key[:8]))
	if err != nil {
		return nil, fmt.Errorf("credential: dummy hash: %w", err)
	}
	v := &Verifier{
		slots: make(chan struct{}, cfg.Slots), maxWait: cfg.MaxWait, ttl: cfg.CacheTTL, size: cfg.CacheSize,
		now: cfg.Now, derive: cfg.Derive, dummy: dummy, key: key,
		cache: make(map[string]entry), inflight: make(map[string]*call), pinned: make(map[string]string),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vectis_credential_wait_seconds",
			Help:    "Time a password verification waited for a derivation slot.",
			Buckets: []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5},
		}, []string{"realm"}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vectis_credential_checks_total",
			Help: "Password verifications by realm and result (accepted, cached, rejected, throttled, busy, error).",
		}, []string{"realm", "result"}),
		inUse: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vectis_credential_derivations_active",
			Help: "Password derivations running now (bounded by the slots).",
		}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{v.wait, v.checks, v.inUse} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("credential metrics: %w", err)
			}
		}
	}
	return v, nil
}

// Slots returns the number of concurrent derivations allowed.
func (v *Verifier) Slots() int { return cap(v.slots) }

func (v *Verifier) cacheID(subject, hash, password string) string {
	m := hmac.New(sha256.New, v.key)
	m.Write([]byte(subject))
	m.Write([]byte{0})
	m.Write([]byte(hash))
	m.Write([]byte{0})
	m.Write([]byte(password))
	return string(m.Sum(nil))
}

// Verify checks password for subject against its stored hash. An empty hash
// means the subject is unknown (or has no password): the dummy hash is
// derived instead, through the same slots, and the result is Rejected.
//
// A password found in the cache is Accepted without a derivation and without
// calling gate, so that a throttle keyed on a partner or an address cannot
// lock out a client that has already proved its password. Otherwise gate (if
// not nil) is called once a slot is held, just before deriving: when it
// returns false nothing is derived and the result is Throttled. Checking
// there, rather than when the request arrived, stops many parallel guesses
// from all slipping past a throttle that only their failures would close.
// onDerived (if not nil) is called with the result while the slot is still
// held, so a failure is counted before the next queued guess checks gate.
//
// Identical checks (subject, hash and password) running at once share one
// derivation. A shared failure calls gate and onDerived as a derivation
// would, so that a throttle counts it.
func (v *Verifier) Verify(ctx context.Context, realm, subject, hash, password string, gate func() bool, onDerived func(ok bool)) (Result, error) {
	return v.VerifyWith(ctx, realm, subject, hash, password, Hooks{Gate: gate, OnDerived: onDerived})
}

// Hooks let a caller take part in a check that needs a derivation. Each may
// be nil.
type Hooks struct {
	// Turn is called after a cache miss, before waiting for a slot; the
	// check runs once it returns ok, and calls release when done. A server
	// uses it to let one peer address queue one derivation at a time,
	// without slowing the cached logins of that address. Not ok: ErrBusy.
	Turn func() (release func(), ok bool)
	// Gate and OnDerived are those of Verify.
	Gate      func() bool
	OnDerived func(ok bool)
}

// VerifyWith is Verify with every hook.
func (v *Verifier) VerifyWith(ctx context.Context, realm, subject, hash, password string, h Hooks) (Result, error) {
	gate, onDerived := h.Gate, h.OnDerived
	known := hash != ""
	if !known {
		hash = v.dummy
	}
	id := v.cacheID(subject, hash, password)
	var c *call
	for c == nil {
		now := v.now()
		v.mu.Lock()
		if e, ok := v.cache[id]; ok && known && now.Before(e.expires) {
			v.mu.Unlock()
			v.checks.WithLabelValues(realm, "cached").Inc()
			return Accepted, nil
		}
		if _, ok := v.pinned[id]; ok && known {
			v.mu.Unlock()
			return v.pinnedHit(realm, id, subject, gate, onDerived), nil
		}
		other, busy := v.inflight[id]
		if !busy {
			c = &call{done: make(chan struct{})}
			v.inflight[id] = c
		}
		v.mu.Unlock()
		if busy {
			select {
			case <-other.done:
			case <-ctx.Done():
				return Rejected, ctx.Err()
			}
			// The same subject, hash and password were just checked: share a
			// definite answer; after a throttle or an error, try again. A
			// shared failure still passes the gate and is reported, so that
			// a throttle counts every guess, identical or not.
			if other.err == nil && other.res == Rejected {
				if gate != nil && !gate() {
					v.checks.WithLabelValues(realm, "throttled").Inc()
					return Throttled, nil
				}
				if onDerived != nil {
					onDerived(false)
				}
				v.checks.WithLabelValues(realm, "rejected").Inc()
				return Rejected, nil
			}
		}
	}
	res, err := v.derivation(ctx, realm, subject, hash, password, known, h)
	c.res, c.err = res, err
	v.mu.Lock()
	delete(v.inflight, id)
	v.mu.Unlock()
	close(c.done)
	if res == Accepted {
		v.remember(id, subject)
	}
	return res, err
}

// derivation runs one derivation in a slot.
func (v *Verifier) derivation(ctx context.Context, realm, subject, hash, password string, known bool, h Hooks) (Result, error) {
	gate, onDerived := h.Gate, h.OnDerived
	if h.Turn != nil {
		release, ok := h.Turn()
		if !ok {
			v.checks.WithLabelValues(realm, "busy").Inc()
			return Rejected, ErrBusy
		}
		defer release()
	}

	start := time.Now()
	timer := time.NewTimer(v.maxWait)
	defer timer.Stop()
	select {
	case v.slots <- struct{}{}:
	case <-timer.C:
		v.wait.WithLabelValues(realm).Observe(time.Since(start).Seconds())
		v.checks.WithLabelValues(realm, "busy").Inc()
		return Rejected, ErrBusy
	case <-ctx.Done():
		v.wait.WithLabelValues(realm).Observe(time.Since(start).Seconds())
		return Rejected, ctx.Err()
	}
	v.wait.WithLabelValues(realm).Observe(time.Since(start).Seconds())
	defer func() { <-v.slots }()
	if gate != nil && !gate() {
		v.checks.WithLabelValues(realm, "throttled").Inc()
		return Throttled, nil
	}
	v.inUse.Inc()
	good, err := v.derive(hash, password)
	v.inUse.Dec()
	good = good && err == nil && known
	if onDerived != nil {
		onDerived(good)
	}
	if err != nil {
		v.checks.WithLabelValues(realm, "error").Inc()
		return Rejected, fmt.Errorf("verify password of %q: %w", subject, err)
	}
	if !good {
		v.checks.WithLabelValues(realm, "rejected").Inc()
		return Rejected, nil
	}
	v.checks.WithLabelValues(realm, "accepted").Inc()
	return Accepted, nil
}

func (v *Verifier) remember(id, subject string) {
	now := v.now()
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.cache) >= v.size {
		for k, e := range v.cache {
			if !now.Before(e.expires) {
				delete(v.cache, k)
			}
		}
		for k := range v.cache { // still full: forget arbitrary entries
			if len(v.cache) < v.size {
				break
			}
			delete(v.cache, k)
		}
	}
	v.cache[id] = entry{subject: subject, expires: now.Add(v.ttl)}
}

// Forget drops every cached and pinned credential of subject: called when a
// partner or user changes, so that a disabled, deleted or re-keyed subject
// is checked against the store again. (A changed hash alone already misses
// the cache.)
func (v *Verifier) Forget(subject string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for k, e := range v.cache {
		if e.subject == subject {
			delete(v.cache, k)
		}
	}
	for k, s := range v.pinned {
		if s == subject {
			delete(v.pinned, k)
		}
	}
}

// pinnedHit answers a check that matches a pinned credential as its
// derivation would have, without the derivation: through the gate (a
// throttled address or partner gets no answer on a password it has not
// proved, pinned or not), reported to onDerived (which audits the login and
// resets the failure count), and remembered like a derived success, so that
// the next logins are plain cache hits.
func (v *Verifier) pinnedHit(realm, id, subject string, gate func() bool, onDerived func(bool)) Result {
	if gate != nil && !gate() {
		v.checks.WithLabelValues(realm, "throttled").Inc()
		return Throttled
	}
	if onDerived != nil {
		onDerived(true)
	}
	v.checks.WithLabelValues(realm, "pinned").Inc()
	v.remember(id, subject)
	return Accepted
}

// ErrPinMismatch: the password given to Pin does not verify against the
// stored hash (the subject was changed elsewhere); nothing was pinned.
var ErrPinMismatch = errors.New("credential: password does not match the stored hash")

// Pin verifies password against hash for subject with one derivation, in a
// slot like any other, and if it matches keeps the credential with no
// expiry until Forget(subject): later checks of that password against that
// hash are accepted without a derivation (see pinnedHit: they still pass
// the gate and are reported as verified logins). It is meant for passwords the
// process holds anyway (declared in its configuration), which it may check
// before any peer presents them. A mismatch returns ErrPinMismatch and
// counts toward no throttle: no peer made the attempt.
func (v *Verifier) Pin(ctx context.Context, subject, hash, password string) error {
	if hash == "" {
		return fmt.Errorf("credential: pin %q: no stored hash", subject)
	}
	id := v.cacheID(subject, hash, password)
	v.mu.Lock()
	_, done := v.pinned[id]
	v.mu.Unlock()
	if done {
		return nil
	}
	res, err := v.derivation(ctx, RealmPin, subject, hash, password, true, Hooks{})
	if err != nil {
		return err
	}
	if res != Accepted {
		return fmt.Errorf("%w (subject %q)", ErrPinMismatch, subject)
	}
	v.mu.Lock()
	v.pinned[id] = subject
	v.mu.Unlock()
	return nil
}
