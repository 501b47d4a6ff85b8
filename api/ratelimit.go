package api

import (
	"math"
	"sync"
	"time"
)

// loginLimiter slows down password guessing: every failed authentication
// from a client address takes a token from that address's bucket; with the
// bucket empty, every request from the address that tries to authenticate is
// answered 429 (before any credential is checked) until a token has been
// refilled. Successful logins take nothing.
type loginLimiter struct {
	burst  float64       // failures allowed in a row
	refill time.Duration // one failure forgiven per refill
	max    int           // addresses tracked
	now    func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLoginLimiter(burst int, refill time.Duration, max int, now func() time.Time) *loginLimiter {
	return &loginLimiter{
		burst: float64(burst), refill: refill, max: max, now: now,
		buckets: make(map[string]*bucket),
	}
}

// level refreshes b to now and returns its tokens.
func (l *loginLimiter) level(b *bucket, now time.Time) float64 {
	if el := now.Sub(b.last); el > 0 {
		b.tokens = math.Min(l.burst, b.tokens+float64(el)/float64(l.refill))
		b.last = now
	}
	return b.tokens
}

// allow reports whether addr may try to authenticate now, and if not, how
// long until it may.
func (l *loginLimiter) allow(addr string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[addr]
	if !ok {
		return true, 0
	}
	t := l.level(b, l.now())
	if t >= 1 {
		return true, 0
	}
	return false, time.Duration((1 - t) * float64(l.refill))
}

// fail records a failed authentication from addr.
func (l *loginLimiter) fail(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b, ok := l.buckets[addr]
	if !ok {
		if len(l.buckets) >= l.max {
			l.prune(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[addr] = b
	}
	l.level(b, now)
	b.tokens = math.Max(0, b.tokens-1)
}

// prune forgets addresses whose bucket is full again; if that is not enough
// it forgets arbitrary ones, so memory stays bounded under a distributed
// attack (which per-address limiting cannot stop anyway).
func (l *loginLimiter) prune(now time.Time) {
	for k, b := range l.buckets {
		if l.level(b, now) >= l.burst {
			delete(l.buckets, k)
		}
	}
	for k := range l.buckets {
		if len(l.buckets) < l.max {
			break
		}
		delete(l.buckets, k)
	}
}

// loginThrottle keys failed logins on the user and the client address, so
// that behind a NAT or an ingress one bad client locks out only the user it
// guesses, not every user of the address; a looser bucket per address (ten
// times the burst, refilled ten times faster) still stops one address from
// spraying user names. Bearer tokens count under the user "token". A
// credential the verifier has cached, and a valid token, pass without
// consulting it.
type loginThrottle struct {
	byUser, byAddr *loginLimiter
}

func newLoginThrottle(burst int, refill time.Duration, max int, now func() time.Time) *loginThrottle {
	return &loginThrottle{
		byUser: newLoginLimiter(burst, refill, max, now),
		byAddr: newLoginLimiter(10*burst, refill/10, max, now),
	}
}

func userKey(user, addr string) string { return user + "\x00" + addr }

// allow reports whether user may try to authenticate from addr now, and if
// not, how long until it may.
func (t *loginThrottle) allow(user, addr string) (bool, time.Duration) {
	ok1, w1 := t.byUser.allow(userKey(user, addr))
	ok2, w2 := t.byAddr.allow(addr)
	return ok1 && ok2, max(w1, w2)
}

// fail records a failed authentication of user from addr.
func (t *loginThrottle) fail(user, addr string) {
	t.byUser.fail(userKey(user, addr))
	t.byAddr.fail(addr)
}
