package server

import (
	"context"
	"math"
	"net"
	"sync"
	"time"

	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// This file holds what bounds the work an unauthenticated peer can make the
// server do: connections per address, and the throttle of failed logins.
// The password derivation itself is bounded by the PasswordChecker (the
// node's credential.Verifier); the server decides when to ask it.

// PasswordVerdict is the answer of a PasswordChecker.
type PasswordVerdict uint8

// Verdicts.
const (
	PasswordRejected PasswordVerdict = iota
	// PasswordAccepted: derived and matched now.
	PasswordAccepted
	// PasswordCached: matched a credential verified recently; no derivation.
	PasswordCached
	// PasswordThrottled: Gate refused; nothing was derived.
	PasswordThrottled
	// PasswordBusy: no derivation slot within the checker's bound.
	PasswordBusy
)

// PasswordRequest is one password check.
type PasswordRequest struct {
	Partner string
	// Known is false for an unknown or disabled partner: the checker must
	// spend what a wrong password costs and answer PasswordRejected, so
	// that timing does not tell which partner ids exist.
	Known    bool
	Password string
	// Turn is called before a derivation (not for a cached credential) and
	// lets one check of the peer's address run at a time; the checker
	// calls release when done, and answers PasswordBusy when not ok.
	Turn func() (release func(), ok bool)
	// Gate is called just before a derivation (not for a cached
	// credential); false skips it with PasswordThrottled.
	Gate func() bool
	// OnDerived is called with the result of a derivation, before the
	// next queued request may call Gate.
	OnDerived func(ok bool)
}

// PasswordChecker verifies partner passwords with bounded work. When
// Deps.Passwords is nil the server calls Partner.VerifyPassword directly,
// which is fine for tests and benchmarks with a plain comparison.
type PasswordChecker interface {
	CheckPassword(ctx context.Context, req PasswordRequest) PasswordVerdict
}

// LoginEvent is a PeSIT password login decision, for the audit log.
type LoginEvent struct {
	ServerID string
	Partner  string // PI 3 as sent (may be unknown)
	Address  string // peer IP address
	OK       bool
	Reason   string // "bad credentials", "unknown partner", "disabled", "throttled"
}

// loginThrottle slows down password guessing: each failed login takes a
// token from the bucket of its address and of its partner; with either
// bucket empty, a login is refused without any derivation, and its answer is
// held until a token is back. Successful logins take nothing.
type loginThrottle struct {
	burst  float64
	refill time.Duration
	max    int

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLoginThrottle(burst int, refill time.Duration, max int) *loginThrottle {
	return &loginThrottle{burst: float64(burst), refill: refill, max: max, buckets: make(map[string]*bucket)}
}

func (l *loginThrottle) level(b *bucket, now time.Time) float64 {
	if el := now.Sub(b.last); el > 0 {
		b.tokens = math.Min(l.burst, b.tokens+float64(el)/float64(l.refill))
		b.last = now
	}
	return b.tokens
}

// wait returns how long until every key may try again; 0 = now.
func (l *loginThrottle) wait(now time.Time, keys ...string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	var w time.Duration
	for _, k := range keys {
		if b, ok := l.buckets[k]; ok {
			if t := l.level(b, now); t < 1 {
				w = max(w, time.Duration((1-t)*float64(l.refill)))
			}
		}
	}
	return w
}

// take reserves one failure from every key's bucket, or none if any is
// empty. A derivation runs only with a reservation, so that derivations
// running in parallel cannot all pass a bucket holding one token; a success
// gives the reservation back.
func (l *loginThrottle) take(now time.Time, keys ...string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	bs := make([]*bucket, len(keys))
	for i, k := range keys {
		b, ok := l.buckets[k]
		if !ok {
			if len(l.buckets) >= l.max {
				l.prune(now)
			}
			b = &bucket{tokens: l.burst, last: now}
			l.buckets[k] = b
		}
		if l.level(b, now) < 1 {
			return false
		}
		bs[i] = b
	}
	for _, b := range bs {
		b.tokens--
	}
	return true
}

// give returns a reservation taken by take.
func (l *loginThrottle) give(now time.Time, keys ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range keys {
		if b, ok := l.buckets[k]; ok {
			b.tokens = math.Min(l.burst, l.level(b, now)+1)
		}
	}
}

// prune forgets keys whose bucket is full again, then arbitrary ones, so
// that memory stays bounded under a distributed attack.
func (l *loginThrottle) prune(now time.Time) {
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

// hostOf is the IP address of a connection's peer: the unit of the
// per-address limits.
func hostOf(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	h, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return h
}

// checkPassword runs one password login through the throttle and the
// checker. known is false for an unknown or disabled partner, which costs a
// derivation all the same.
func (s *session) checkPassword(p Partner, id string, known bool, password string) PasswordVerdict {
	srv := s.srv
	keys := []string{"a:" + s.addr, "p:" + id}
	gate := func() bool { return srv.throttle.take(srv.now(), keys...) }
	onDerived := func(ok bool) {
		if ok {
			srv.throttle.give(srv.now(), keys...)
		}
	}
	if srv.passwords != nil {
		turn := func() (func(), bool) { return srv.addrTurn(s.ctx, s.addr) }
		return srv.passwords.CheckPassword(s.ctx, PasswordRequest{Partner: id, Known: known, Password: password, Turn: turn, Gate: gate, OnDerived: onDerived})
	}
	if !gate() {
		return PasswordThrottled
	}
	ok := known && p.VerifyPassword != nil && p.VerifyPassword(password)
	onDerived(ok)
	if ok {
		return PasswordAccepted
	}
	return PasswordRejected
}

// holdThrottled delays the answer to a throttled login until its bucket has
// a token again (at most maxThrottleDelay), so that a guesser's connections
// stay busy while the server spends nothing on them.
func (s *session) holdThrottled(id string) {
	d := min(s.srv.throttle.wait(s.srv.now(), "a:"+s.addr, "p:"+id), s.srv.cfg.MaxThrottleDelay)
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.ctx.Done():
	}
}

// login records a login decision: a metric, and an audit event for every
// failure and every success that needed a derivation (a cached success is
// the same partner reconnecting, and would flood the audit log).
func (s *session) login(id string, v PasswordVerdict, reason string) {
	srv := s.srv
	result := "failure"
	switch v {
	case PasswordAccepted, PasswordCached:
		result = "success"
	case PasswordThrottled:
		result = "throttled"
	case PasswordBusy:
		result = "busy"
	}
	if srv.met != nil && srv.met.Logins != nil {
		srv.met.Logins.WithLabelValues(srv.cfg.ID, result).Inc()
	}
	if srv.onLogin == nil || v == PasswordCached || v == PasswordThrottled || v == PasswordBusy {
		return
	}
	srv.onLogin(s.ctx, LoginEvent{ServerID: srv.cfg.ID, Partner: id, Address: s.addr, OK: result == "success", Reason: reason})
}

// full reports whether every session slot is taken: checked before any
// partner lookup or password work.
func (srv *Server) full() bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return srv.connected >= srv.cfg.MaxSessions
}

// mayAdmit is admit without the reservation: the limits are checked again
// by admit once the partner is authenticated.
func (srv *Server) mayAdmit(p Partner) fpdu.Diagnostic {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	switch {
	case srv.closing:
		return fpdu.DiagServerUnavailable
	case srv.connected >= srv.cfg.MaxSessions:
		return fpdu.DiagTooManyConnections
	case p.MaxSessions > 0 && srv.byPartner[p.ID] >= p.MaxSessions:
		return fpdu.DiagTooManyForPartner
	}
	return fpdu.DiagOK
}

// turn lets one password check of a peer address run at a time.
type turn struct {
	ch    chan struct{}
	users int // sessions holding or waiting for ch, under Server.mu
}

// addrTurn waits until no other password derivation of addr is running, at
// most Tc. One address can then have only one check queued for the node's
// derivation slots, however many CONNECTs it sends: a flood from a few
// addresses delays a partner from another address by a few derivations,
// not by the whole flood. Cached logins take no turn, and past the burst
// the throttle refuses without deriving, so one address's turns are short.
func (srv *Server) addrTurn(ctx context.Context, addr string) (release func(), ok bool) {
	srv.mu.Lock()
	t := srv.turns[addr]
	if t == nil {
		t = &turn{ch: make(chan struct{}, 1)}
		srv.turns[addr] = t
	}
	t.users++
	srv.mu.Unlock()
	done := func() {
		srv.mu.Lock()
		if t.users--; t.users == 0 {
			delete(srv.turns, addr)
		}
		srv.mu.Unlock()
	}
	timer := time.NewTimer(srv.cfg.ConnectTimeout)
	defer timer.Stop()
	select {
	case t.ch <- struct{}{}:
		return func() { <-t.ch; done() }, true
	case <-timer.C:
	case <-ctx.Done():
	}
	done()
	return nil, false
}
