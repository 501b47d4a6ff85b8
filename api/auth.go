package api

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vectis-ft/vectis/store"
)

// Principal is the authenticated caller of a request.
type Principal struct {
	Name    string     `json:"name"`
	Role    store.Role `json:"role"`
	Method  string     `json:"method"`            // basic or token
	TokenID string     `json:"tokenId,omitempty"` // with method token
}

// roleRank orders roles: viewer < operator < admin.
func roleRank(r store.Role) int {
	switch r {
	case store.RoleViewer:
		return 1
	case store.RoleOperator:
		return 2
	case store.RoleAdmin:
		return 3
	}
	return 0
}

func validRole(r store.Role) bool { return roleRank(r) > 0 }

// allows reports whether role have may do what needs role need.
func allows(have, need store.Role) bool {
	return roleRank(have) > 0 && roleRank(have) >= roleRank(need)
}

// tokenPrefix starts every API token (store.NewToken), so that a leaked
// token is easy to recognise and a random string is refused without a lookup.
const tokenPrefix = "vt_"

// authenticator checks credentials against the configured users, the
// stored users and the stored tokens.
type authenticator struct {
	static map[string]StaticUser
	users  UserStore
	now    func() time.Time
	// dummyHash is compared when the user does not exist, so that an
	// unknown user costs the same time as a wrong password.
	dummyHash string

	// cache remembers recent successful password checks (keyed by an HMAC
	// of user, stored hash and password under a per-process random key, so
	// no password is kept) to spare a bcrypt derivation on every request.
	cacheKey []byte
	mu       sync.Mutex
	cache    map[string]time.Time

	// slots bounds the password derivations running at once: argon2id
	// takes ~19 MiB each, and a flood of logins must neither exhaust memory
	// nor outrun the per-address throttle by sheer parallelism.
	slots   chan struct{}
	limiter *loginLimiter
}

// maxConcurrentVerifications is the size of authenticator.slots.
const maxConcurrentVerifications = 4

const (
	authCacheTTL  = time.Minute
	authCacheSize = 1024
)

func newAuthenticator(static []StaticUser, users UserStore, limiter *loginLimiter, now func() time.Time) (*authenticator, error) {
	a := &authenticator{
		limiter:  limiter,
		static:   make(map[string]StaticUser, len(static)),
		users:    users,
		now:      now,
		cacheKey: make([]byte, 32),
		cache:    make(map[string]time.Time),
		slots:    make(chan struct{}, maxConcurrentVerifications),
	}
	_, _ = rand.Read(a.cacheKey)
	for _, u := range static {
		if err := checkUserName(u.Name); err != nil {
			return nil, fmt.Errorf("api: configured user %q: %w", u.Name, err)
		}
		if !validRole(u.Role) {
			return nil, fmt.Errorf("api: configured user %q: role %q is not viewer, operator or admin", u.Name, u.Role)
		}
		if _, dup := a.static[u.Name]; dup {
			return nil, fmt.Errorf("api: configured user %q is declared twice", u.Name)
		}
		if u.PasswordHash == "" {
			if u.Password == "" {
				return nil, fmt.Errorf("api: configured user %q has no password or passwordHash", u.Name)
			}
			h, err := store.HashPassword(u.Password)
			if err != nil {
				return nil, fmt.Errorf("api: configured user %q: %w", u.Name, err)
			}
			u.PasswordHash = h
		} else if _, err := store.VerifyPassword(u.PasswordHash, ""); err != nil {
			return nil, fmt.Errorf("api: configured user %q: passwordHash: %w (want bcrypt or argon2id)", u.Name, err)
		}
		u.Password = ""
		a.static[u.Name] = u
	}
	h, err := store.HashPassword(randomHex(16))
	if err != nil {
		return nil, err
	}
	a.dummyHash = h
	return a, nil
}

// errBadCredentials is any authentication failure; the reason is logged and
// audited, never told to the client. errCountedFailure is one that derive
// has already recorded with the throttle; errThrottled is a throttle refusal
// found once a verification slot was held.
var (
	errBadCredentials = errors.New("invalid credentials")
	errCountedFailure = fmt.Errorf("%w", errBadCredentials)
	errThrottled      = errors.New("throttled")
)

func (au *authenticator) cacheID(user, hash, password string) string {
	m := hmac.New(sha256.New, au.cacheKey)
	m.Write([]byte(user))
	m.Write([]byte{0})
	m.Write([]byte(hash))
	m.Write([]byte{0})
	m.Write([]byte(password))
	return string(m.Sum(nil))
}

// derive runs one password verification in a slot. The throttle is checked
// again once the slot is held, and a failure is recorded before the slot is
// released, so parallel guesses from one address cannot all slip past the
// check made when their requests arrived.
func (au *authenticator) derive(ctx context.Context, addr, hash, password string) (bool, error) {
	select {
	case au.slots <- struct{}{}:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	defer func() { <-au.slots }()
	if ok, _ := au.limiter.allow(addr); !ok {
		return false, errThrottled
	}
	good, err := store.VerifyPassword(hash, password)
	if err != nil || !good {
		au.limiter.fail(addr)
	}
	return good, err
}

func (au *authenticator) verify(ctx context.Context, addr, user, hash, password string) (bool, error) {
	id := au.cacheID(user, hash, password)
	now := au.now()
	au.mu.Lock()
	exp, ok := au.cache[id]
	au.mu.Unlock()
	if ok && now.Before(exp) {
		return true, nil
	}
	good, err := au.derive(ctx, addr, hash, password)
	if err != nil || !good {
		return false, err
	}
	au.mu.Lock()
	if len(au.cache) >= authCacheSize {
		for k, e := range au.cache {
			if !now.Before(e) || len(au.cache) >= authCacheSize {
				delete(au.cache, k)
			}
		}
	}
	au.cache[id] = now.Add(authCacheTTL)
	au.mu.Unlock()
	return true, nil
}

// basic checks a user name and password. Errors other than
// errBadCredentials are the store's (unavailable...).
func (au *authenticator) basic(ctx context.Context, addr, user, password string) (*Principal, error) {
	if su, ok := au.static[user]; ok {
		good, err := au.verify(ctx, addr, user, su.PasswordHash, password)
		if ctx.Err() != nil || errors.Is(err, errThrottled) {
			return nil, cmp.Or(ctx.Err(), err) // the client left, or was throttled, while waiting for a slot
		}
		if err != nil || !good {
			return nil, fmt.Errorf("%w: wrong password for configured user", errCountedFailure)
		}
		return &Principal{Name: user, Role: su.Role, Method: "basic"}, nil
	}
	hash := au.dummyHash
	known := true
	if checkUserName(user) != nil {
		known = false
	} else {
		h, err := au.users.UserPasswordHash(ctx, user)
		switch {
		case errors.Is(err, store.ErrNotFound):
			known = false
		case err != nil:
			return nil, err
		default:
			hash = h
		}
	}
	if !known {
		if _, err := au.derive(ctx, addr, au.dummyHash, password); ctx.Err() != nil || errors.Is(err, errThrottled) {
			return nil, cmp.Or(ctx.Err(), err)
		}
		return nil, fmt.Errorf("%w: unknown user", errCountedFailure)
	}
	good, err := au.verify(ctx, addr, user, hash, password)
	if ctx.Err() != nil || errors.Is(err, errThrottled) {
		return nil, cmp.Or(ctx.Err(), err)
	}
	if err != nil || !good {
		return nil, fmt.Errorf("%w: wrong password", errCountedFailure)
	}
	u, err := au.users.GetUser(ctx, user)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%w: user deleted", errBadCredentials)
	}
	if err != nil {
		return nil, err
	}
	return &Principal{Name: u.Name, Role: u.Role, Method: "basic"}, nil
}

// bearer checks an API token.
func (au *authenticator) bearer(ctx context.Context, token string) (*Principal, error) {
	if !strings.HasPrefix(token, tokenPrefix) || len(token) > 128 {
		return nil, fmt.Errorf("%w: malformed token", errBadCredentials)
	}
	t, err := au.users.LookupToken(ctx, store.HashToken(token))
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%w: unknown or expired token", errBadCredentials)
	}
	if err != nil {
		return nil, err
	}
	if !t.ExpiresAt.IsZero() && !au.now().Before(t.ExpiresAt) {
		return nil, fmt.Errorf("%w: expired token %s", errBadCredentials, t.ID)
	}
	if t.User == "" {
		return &Principal{Name: "token:" + t.ID, Role: t.Role, Method: "token", TokenID: t.ID}, nil
	}
	// A token never grants more than its owner has now: demoting a user
	// demotes the tokens it created.
	owner, err := au.currentRole(ctx, t.User)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%w: token %s belongs to a deleted user", errBadCredentials, t.ID)
	}
	if err != nil {
		return nil, err
	}
	role := t.Role
	if roleRank(owner) < roleRank(role) {
		role = owner
	}
	return &Principal{Name: t.User, Role: role, Method: "token", TokenID: t.ID}, nil
}

func (au *authenticator) currentRole(ctx context.Context, user string) (store.Role, error) {
	if su, ok := au.static[user]; ok {
		return su.Role, nil
	}
	u, err := au.users.GetUser(ctx, user)
	if err != nil {
		return "", err
	}
	return u.Role, nil
}

// authenticate identifies the caller or returns 401, 429 or 503.
func (a *API) authenticate(w http.ResponseWriter, r *http.Request) (*Principal, error) {
	ctx := r.Context()
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, errorf(http.StatusUnauthorized, CodeUnauthorized, "authentication required: HTTP basic or a bearer token")
	}
	addr := clientAddr(r)
	throttled := func() error {
		_, wait := a.limiter.allow(addr)
		a.m.authFailures.WithLabelValues("throttled").Inc()
		secs := max(1, int(math.Ceil(wait.Seconds())))
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		return errorf(http.StatusTooManyRequests, CodeTooManyRequests, "too many failed logins from %s; retry in %d s", addr, secs)
	}
	if ok, _ := a.limiter.allow(addr); !ok {
		return nil, throttled()
	}
	var (
		p    *Principal
		err  error
		user string
	)
	scheme, cred, _ := strings.Cut(h, " ")
	switch {
	case strings.EqualFold(scheme, "Basic"):
		var pw string
		var ok bool
		user, pw, ok = r.BasicAuth()
		if !ok {
			err = fmt.Errorf("%w: malformed basic credentials", errBadCredentials)
			break
		}
		p, err = a.auth.basic(ctx, addr, user, pw)
	case strings.EqualFold(scheme, "Bearer"):
		user = "token"
		p, err = a.auth.bearer(ctx, strings.TrimSpace(cred))
	default:
		err = fmt.Errorf("%w: unsupported scheme", errBadCredentials)
	}
	switch {
	case err == nil:
		return p, nil
	case errors.Is(err, errThrottled):
		return nil, throttled()
	case !errors.Is(err, errBadCredentials):
		return nil, storeError(err, "credentials")
	case !errors.Is(err, errCountedFailure):
		a.limiter.fail(addr)
	}
	a.m.authFailures.WithLabelValues("invalid").Inc()
	if checkUserName(user) != nil {
		user = "(invalid name)" // never log what may be a mistyped password
	}
	a.log.WarnContext(ctx, "api authentication failed", "user", user, "client", addr, "reason", err.Error())
	a.audit(ctx, &Principal{Name: user}, "api.auth", r.Method+" "+r.URL.Path, store.OutcomeFailure, "client "+addr+": "+err.Error())
	return nil, errorf(http.StatusUnauthorized, CodeUnauthorized, "invalid credentials")
}
