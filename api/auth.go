package api

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/vectis-ft/vectis/internal/credential"
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

// unknownActor stands in the log and the audit log for a user name that
// names no user.
const unknownActor = "(unknown)"

// tokenPrefix starts every API token (store.NewToken), so that a leaked
// token is easy to recognise and a random string is refused without a lookup.
const tokenPrefix = "vt_"

// authenticator checks credentials against the configured users, the
// stored users and the stored tokens.
type authenticator struct {
	static map[string]StaticUser
	users  UserStore
	now    func() time.Time
	// verifier runs every password derivation through the node's bounded
	// slots (shared with PeSIT: argon2id takes ~19 MiB each, and a flood of
	// logins must neither exhaust memory nor outrun the per-address
	// throttle by sheer parallelism), remembers recent good passwords under
	// a keyed MAC, and derives a dummy hash for unknown users so that they
	// cost the same time as a wrong password.
	verifier *credential.Verifier
	limiter  *loginThrottle
}

// maxConcurrentVerifications and authCacheTTL size the verifier the API
// makes for itself when the node gives it none (tests, embedding).
const (
	maxConcurrentVerifications = 4
	authCacheTTL               = time.Minute
)

func newAuthenticator(static []StaticUser, users UserStore, limiter *loginThrottle, v *credential.Verifier, now func() time.Time) (*authenticator, error) {
	if v == nil {
		var err error
		if v, err = credential.New(credential.Config{Slots: maxConcurrentVerifications, CacheTTL: authCacheTTL, Now: now}); err != nil {
			return nil, fmt.Errorf("api: %w", err)
		}
	}
	a := &authenticator{
		limiter:  limiter,
		static:   make(map[string]StaticUser, len(static)),
		users:    users,
		now:      now,
		verifier: v,
	}
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
	return a, nil
}

// errBadCredentials is any authentication failure; the reason is logged and
// audited, never told to the client. errCountedFailure is one that derive
// has already recorded with the throttle; errThrottled is a throttle refusal
// found once a verification slot was held.
var (
	errBadCredentials = errors.New("invalid credentials")
	errCountedFailure = fmt.Errorf("%w", errBadCredentials)
	// errUnknownUser is a counted failure for a name that is no user: the
	// name is then never logged nor audited (it is often a password typed
	// in the wrong field).
	errUnknownUser = fmt.Errorf("%w: unknown user", errCountedFailure)
	errThrottled   = errors.New("throttled")
	errBusy        = errors.New("password verification busy")
)

// verify runs one password check. A cached good password passes at once;
// otherwise the throttle is checked again once a derivation slot is held,
// and a failure is recorded before the slot is released, so parallel
// guesses from one address cannot all slip past the check made when their
// requests arrived. An empty hash (unknown user) derives a dummy.
func (au *authenticator) verify(ctx context.Context, addr, user, hash, password string) (bool, error) {
	res, err := au.verifier.Verify(ctx, credential.RealmAPI, "user:"+user, hash, password,
		func() bool { ok, _ := au.limiter.allow(user, addr); return ok },
		func(ok bool) {
			if !ok {
				au.limiter.fail(user, addr)
			}
		})
	switch {
	case errors.Is(err, credential.ErrBusy):
		return false, errBusy
	case err != nil:
		return false, err
	case res == credential.Throttled:
		return false, errThrottled
	}
	return res == credential.Accepted, nil
}

// basic checks a user name and password. Errors other than
// errBadCredentials are the store's (unavailable...).
func (au *authenticator) basic(ctx context.Context, addr, user, password string) (*Principal, error) {
	if su, ok := au.static[user]; ok {
		good, err := au.verify(ctx, addr, user, su.PasswordHash, password)
		if ctx.Err() != nil || errors.Is(err, errThrottled) || errors.Is(err, errBusy) {
			return nil, cmp.Or(ctx.Err(), err) // the client left, or was throttled, while waiting for a slot
		}
		if err != nil || !good {
			return nil, fmt.Errorf("%w: wrong password for configured user", errCountedFailure)
		}
		return &Principal{Name: user, Role: su.Role, Method: "basic"}, nil
	}
	hash := ""
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
		if _, err := au.verify(ctx, addr, user, "", password); ctx.Err() != nil || errors.Is(err, errThrottled) || errors.Is(err, errBusy) {
			return nil, cmp.Or(ctx.Err(), err)
		}
		return nil, errUnknownUser
	}
	good, err := au.verify(ctx, addr, user, hash, password)
	if ctx.Err() != nil || errors.Is(err, errThrottled) || errors.Is(err, errBusy) {
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
	var (
		p    *Principal
		err  error
		user string
	)
	throttled := func() error {
		_, wait := a.limiter.allow(user, addr)
		a.m.authFailures.WithLabelValues("throttled").Inc()
		secs := max(1, int(math.Ceil(wait.Seconds())))
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		return errorf(http.StatusTooManyRequests, CodeTooManyRequests, "too many failed logins from %s; retry in %d s", addr, secs)
	}
	// No throttle check here: a password the verifier has cached and a
	// valid token pass whatever other clients of the address did; the
	// throttle gates password derivations (in verify) and is consulted
	// below for the other failures.
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
	case errors.Is(err, errBusy):
		w.Header().Set("Retry-After", "1")
		return nil, errorf(http.StatusServiceUnavailable, CodeUnavailable, "too many logins in progress; retry shortly")
	case !errors.Is(err, errBadCredentials):
		return nil, storeError(err, "credentials")
	case !errors.Is(err, errCountedFailure):
		// A failure that cost no derivation (bad token, malformed header):
		// once the bucket is empty it is refused unaudited, so that bogus
		// tokens cannot flood the audit log.
		if ok, _ := a.limiter.allow(user, addr); !ok {
			return nil, throttled()
		}
		a.limiter.fail(user, addr)
	}
	a.m.authFailures.WithLabelValues("invalid").Inc()
	reason := err.Error()
	switch {
	case errors.Is(err, errUnknownUser) || checkUserName(user) != nil:
		// Never log or audit what may be a mistyped password.
		user = unknownActor
	}
	if errors.Is(err, errCountedFailure) {
		// Unknown user and wrong password read the same, in the audit log
		// as on the wire: neither tells which user names exist.
		reason = "invalid user name or password"
	}
	a.log.WarnContext(ctx, "api authentication failed", "user", user, "client", addr, "reason", reason)
	a.audit(ctx, &Principal{Name: user}, "api.auth", r.Method+" "+r.URL.Path, store.OutcomeFailure, "client "+addr+": "+reason)
	return nil, errorf(http.StatusUnauthorized, CodeUnauthorized, "invalid credentials")
}
