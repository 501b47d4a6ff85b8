package api

import (
	"context"
	_ "embed"
	"errors"
	"net/http"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vectis-ft/vectis/store"
)

//go:embed openapi.yaml
var openAPIDocument []byte

// OpenAPI returns the embedded OpenAPI 3 document served at
// /api/openapi.yaml.
func OpenAPI() []byte { return append([]byte(nil), openAPIDocument...) }

func (a *API) routeTable(metricsAuth bool) []route {
	metricsRole := store.Role("")
	if metricsAuth {
		metricsRole = store.RoleViewer
	}
	const (
		viewer   = store.RoleViewer
		operator = store.RoleOperator
		admin    = store.RoleAdmin
	)
	partners, files, servers := a.partnerKind(), a.fileKind(), a.serverKind()
	rts := []route{
		{method: "GET", path: "/healthz", handler: a.healthz, quiet: true},
		{method: "GET", path: "/readyz", handler: a.readyz, quiet: true},
		{method: "GET", path: "/api/openapi.yaml", handler: a.openapi},
		{method: "GET", path: "/api/cluster/status", role: viewer, handler: a.clusterStatus},
		{method: "GET", path: "/api/v1/whoami", role: viewer, handler: a.whoami},

		{method: "GET", path: "/api/v1/partners", role: viewer, handler: partners.list},
		{method: "POST", path: "/api/v1/partners", role: admin, handler: partners.create},
		{method: "GET", path: "/api/v1/partners/{id}", role: viewer, handler: partners.get},
		{method: "PUT", path: "/api/v1/partners/{id}", role: admin, handler: partners.update},
		{method: "DELETE", path: "/api/v1/partners/{id}", role: admin, handler: partners.delete},
		{method: "PUT", path: "/api/v1/partners/{id}/password", role: admin, handler: a.setPartnerPassword},

		{method: "GET", path: "/api/v1/files", role: viewer, handler: files.list},
		{method: "POST", path: "/api/v1/files", role: admin, handler: files.create},
		{method: "GET", path: "/api/v1/files/{id}", role: viewer, handler: files.get},
		{method: "PUT", path: "/api/v1/files/{id}", role: admin, handler: files.update},
		{method: "DELETE", path: "/api/v1/files/{id}", role: admin, handler: files.delete},

		{method: "GET", path: "/api/v1/servers", role: viewer, handler: servers.list},
		{method: "POST", path: "/api/v1/servers", role: admin, handler: servers.create},
		{method: "GET", path: "/api/v1/servers/{id}", role: viewer, handler: servers.get},
		{method: "PUT", path: "/api/v1/servers/{id}", role: admin, handler: servers.update},
		{method: "DELETE", path: "/api/v1/servers/{id}", role: admin, handler: servers.delete},
		{method: "POST", path: "/api/v1/servers/{id}/start", role: operator, handler: a.startServer},
		{method: "POST", path: "/api/v1/servers/{id}/stop", role: operator, handler: a.stopServer},

		{method: "GET", path: "/api/v1/transfers", role: viewer, handler: a.listTransfers},
		{method: "GET", path: "/api/v1/transfers/stats", role: viewer, handler: a.transferStats},
		{method: "GET", path: "/api/v1/transfers/{id}", role: viewer, handler: a.getTransfer},
		{method: "POST", path: "/api/v1/transfers/{id}/cancel", role: operator, handler: a.cancelTransfer},

		{method: "GET", path: "/api/v1/audit", role: viewer, handler: a.listAudit},

		{method: "GET", path: "/api/v1/users", role: admin, handler: a.listUsers},
		{method: "GET", path: "/api/v1/users/{name}", role: admin, handler: a.getUser},
		{method: "PUT", path: "/api/v1/users/{name}", role: admin, handler: a.putUser},
		{method: "DELETE", path: "/api/v1/users/{name}", role: admin, handler: a.deleteUser},

		{method: "GET", path: "/api/v1/tokens", role: admin, handler: a.listTokens},
		{method: "POST", path: "/api/v1/tokens", role: admin, handler: a.createToken},
		{method: "DELETE", path: "/api/v1/tokens/{id}", role: admin, handler: a.deleteToken},
	}
	if a.metrics != nil {
		rts = append(rts, route{method: "GET", path: "/metrics", role: metricsRole, handler: a.serveMetrics, quiet: true})
	}
	return rts
}

func (a *API) healthz(w http.ResponseWriter, _ *http.Request, _ *Principal) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

func (a *API) readyz(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	if a.readiness != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		if err := a.readiness.Ready(ctx); err != nil {
			// The probe is unauthenticated: the reason (host names, driver
			// errors) goes to the log, not to the caller.
			a.log.InfoContext(r.Context(), "not ready", "error", err)
			return errorf(http.StatusServiceUnavailable, CodeUnavailable, "not ready; the reason is in the node's log")
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	return nil
}

func (a *API) openapi(w http.ResponseWriter, _ *http.Request, _ *Principal) error {
	w.Header().Set("Content-Type", "application/yaml")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(openAPIDocument)
	return nil
}

func (a *API) serveMetrics(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	promhttp.HandlerFor(a.metrics, promhttp.HandlerOpts{}).ServeHTTP(w, r)
	return nil
}

func (a *API) clusterStatus(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	st, err := a.cluster.Status(r.Context())
	if err != nil {
		a.log.WarnContext(r.Context(), "cluster status failed", "error", err)
		return errorf(http.StatusServiceUnavailable, CodeUnavailable, "cluster status is unavailable: %v", err)
	}
	if st.Members == nil {
		st.Members = []Member{}
	}
	st.MemberCount = len(st.Members)
	writeJSON(w, http.StatusOK, st)
	return nil
}

func (a *API) whoami(w http.ResponseWriter, _ *http.Request, p *Principal) error {
	writeJSON(w, http.StatusOK, p)
	return nil
}

// ---- transfers ----

func transferFilter(r *http.Request) (store.TransferFilter, error) {
	q := r.URL.Query()
	f := store.TransferFilter{
		Status:    store.TransferStatus(q.Get("status")),
		PartnerID: q.Get("partner"),
		ServerID:  q.Get("server"),
		FileID:    q.Get("file"),
		Direction: store.TransferDirection(q.Get("direction")),
	}
	if f.Status != "" && !f.Status.Valid() {
		return f, badRequest("query parameter status=%q: want in_progress, completed, failed, interrupted, restartable or cancelled", truncate(string(f.Status)))
	}
	switch f.Direction {
	case "", store.DirReceive, store.DirSend, store.DirMessage:
	default:
		return f, badRequest("query parameter direction=%q: want receive, send or message", truncate(string(f.Direction)))
	}
	for _, c := range []struct {
		name, v string
		max     int
	}{{"partner", f.PartnerID, maxPartnerID}, {"server", f.ServerID, maxServerID}, {"file", f.FileID, maxFileID}} {
		if c.v != "" {
			if err := checkID(c.name, c.v, c.max); err != nil {
				return f, badRequest("query parameter %s: %v", c.name, err)
			}
		}
	}
	var err error
	if f.Since, err = queryTime(r, "from"); err != nil {
		return f, err
	}
	if f.Until, err = queryTime(r, "to"); err != nil {
		return f, err
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Until.After(f.Since) {
		return f, badRequest("query parameters from and to: to must be after from")
	}
	return f, nil
}

func (a *API) listTransfers(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	f, err := transferFilter(r)
	if err != nil {
		return err
	}
	return writePage(w, r, "transfers", func(ctx context.Context, limit int, cursor string) ([]store.Transfer, string, error) {
		f.Limit, f.Cursor = limit, cursor
		page, err := a.store.ListTransfers(ctx, f)
		return page.Items, page.Next, err
	})
}

// transfer reads the transfer that the {id} path value names.
func (a *API) transfer(r *http.Request) (id string, t store.Transfer, err error) {
	if id, err = pathID(r, "transfer", 64); err != nil {
		return id, t, err
	}
	if t, err = a.store.GetTransfer(r.Context(), id); err != nil {
		return id, t, storeError(err, "transfer "+quote(id))
	}
	return id, t, nil
}

func (a *API) getTransfer(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	_, t, err := a.transfer(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, t)
	return nil
}

func (a *API) cancelTransfer(w http.ResponseWriter, r *http.Request, who *Principal) error {
	id, t, err := a.transfer(r)
	if err != nil {
		return err
	}
	if t.Status.Final() {
		return conflict("transfer %q is already %s", id, t.Status)
	}
	if !a.leader.IsLeader() {
		return notLeader(a.leader.LeaderName(), "cancel transfers")
	}
	if a.canceller == nil {
		return errorf(http.StatusServiceUnavailable, CodeUnavailable, "transfer cancellation is not available on this node")
	}
	live, err := a.canceller.Cancel(r.Context(), id)
	if err != nil {
		a.audit(r.Context(), who, "transfer.cancel", id, store.OutcomeFailure, "")
		return err
	}
	if !live {
		rc, ok := a.canceller.(RestingCanceller)
		if !ok {
			return conflict("transfer %q has no live session (status %s); only a running transfer can be cancelled", id, t.Status)
		}
		done, err := rc.CancelResting(r.Context(), id)
		if err != nil {
			a.audit(r.Context(), who, "transfer.cancel", id, store.OutcomeFailure, errDetail(err))
			return storeError(err, "transfer "+quote(id))
		}
		a.audit(r.Context(), who, "transfer.cancel", id, store.OutcomeSuccess, "no live session; was "+string(t.Status))
		writeJSON(w, http.StatusOK, done)
		return nil
	}
	a.audit(r.Context(), who, "transfer.cancel", id, store.OutcomeSuccess, "")
	writeJSON(w, http.StatusAccepted, map[string]any{"id": id, "cancelling": true})
	return nil
}

// transferStats is the body of GET /api/v1/transfers/stats: the store's
// aggregate over every matching transfer, with the time range asked for.
type transferStats struct {
	store.TransferStats
	From time.Time `json:"from,omitzero"`
	To   time.Time `json:"to,omitzero"`
}

// transferStats counts in the database (one GROUP BY query), so a long
// history costs the API neither memory nor a cap on the counted rows.
func (a *API) transferStats(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	f, err := transferFilter(r)
	if err != nil {
		return err
	}
	st, err := a.store.TransferStats(r.Context(), f)
	if err != nil {
		return storeError(err, "transfers")
	}
	writeJSON(w, http.StatusOK, transferStats{TransferStats: st, From: f.Since, To: f.Until})
	return nil
}

// ---- audit ----

// credentialActions are the audit actions only an admin may read: who logs
// in, fails to, or manages users, tokens and partner passwords. A viewer
// reading them would learn user names, attempted names and where
// credentials changed.
var credentialActions = []string{"api.auth", "pesit.auth", "user.", "token.", "partner.password"}

func (a *API) listAudit(w http.ResponseWriter, r *http.Request, who *Principal) error {
	q := r.URL.Query()
	f := store.AuditFilter{
		Actor:   q.Get("actor"),
		Action:  q.Get("action"),
		Target:  q.Get("target"),
		Outcome: store.Outcome(q.Get("outcome")),
	}
	if who == nil || who.Role != store.RoleAdmin {
		f.ExcludeActions = credentialActions
	}
	switch f.Outcome {
	case "", store.OutcomeSuccess, store.OutcomeFailure, store.OutcomeDenied:
	default:
		return badRequest("query parameter outcome=%q: want success, failure or denied", truncate(string(f.Outcome)))
	}
	for _, v := range []string{f.Actor, f.Action, f.Target} {
		if len(v) > 256 {
			return badRequest("query parameters actor, action and target are at most 256 characters")
		}
	}
	var err error
	if f.Since, err = queryTime(r, "from"); err != nil {
		return err
	}
	if f.Until, err = queryTime(r, "to"); err != nil {
		return err
	}
	return writePage(w, r, "audit events", func(ctx context.Context, limit int, cursor string) ([]store.AuditEvent, string, error) {
		f.Limit, f.Cursor = limit, cursor
		page, err := a.store.ListAudit(ctx, f)
		return page.Items, page.Next, err
	})
}

// ---- users ----

// userView is a user as the API shows it: never a hash.
type userView struct {
	Name      string     `json:"name"`
	Role      store.Role `json:"role"`
	Source    string     `json:"source"` // config or store
	CreatedAt time.Time  `json:"createdAt,omitzero"`
	UpdatedAt time.Time  `json:"updatedAt,omitzero"`
}

func storedUser(u store.User) userView {
	return userView{Name: u.Name, Role: u.Role, Source: "store", CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt}
}

func (a *API) listUsers(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	us, err := a.store.ListUsers(r.Context())
	if err != nil {
		return storeError(err, "users")
	}
	out := make([]userView, 0, len(us)+len(a.auth.static))
	for _, su := range a.auth.static {
		out = append(out, userView{Name: su.Name, Role: su.Role, Source: "config"})
	}
	for _, u := range us {
		if _, shadowed := a.auth.static[u.Name]; !shadowed {
			out = append(out, storedUser(u))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	writeJSON(w, http.StatusOK, newList(out))
	return nil
}

func userName(r *http.Request) (string, error) {
	name := r.PathValue("name")
	if err := checkUserName(name); err != nil {
		return "", invalid("%v", err)
	}
	return name, nil
}

func (a *API) getUser(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	name, err := userName(r)
	if err != nil {
		return err
	}
	if su, ok := a.auth.static[name]; ok {
		writeJSON(w, http.StatusOK, userView{Name: su.Name, Role: su.Role, Source: "config"})
		return nil
	}
	u, err := a.store.GetUser(r.Context(), name)
	if err != nil {
		return storeError(err, "user "+quote(name))
	}
	writeJSON(w, http.StatusOK, storedUser(u))
	return nil
}

func (a *API) putUser(w http.ResponseWriter, r *http.Request, who *Principal) error {
	name, err := userName(r)
	if err != nil {
		return err
	}
	var in struct {
		Role     store.Role `json:"role"`
		Password string     `json:"password"`
	}
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	if _, ok := a.auth.static[name]; ok {
		return conflict("user %q is defined in the configuration and cannot be changed through the API", name)
	}
	if !validRole(in.Role) {
		return invalid("role %q: want viewer, operator or admin", truncate(string(in.Role)))
	}
	if err := checkUserPassword(in.Password); err != nil {
		return invalid("%v", err)
	}
	if in.Role != store.RoleAdmin {
		if err := a.keepOneAdmin(r.Context(), name); err != nil {
			return err
		}
	}
	hash, err := store.HashPassword(in.Password)
	if err != nil {
		return err
	}
	_, existed := a.store.GetUser(r.Context(), name)
	u, err := a.store.PutUser(r.Context(), store.User{Name: name, Role: in.Role}, hash)
	if err != nil {
		a.audit(r.Context(), who, "user.put", name, store.OutcomeFailure, errDetail(err))
		return storeError(err, "user "+quote(name))
	}
	a.audit(r.Context(), who, "user.put", name, store.OutcomeSuccess, "role "+string(u.Role))
	status := http.StatusOK
	if existed != nil {
		status = http.StatusCreated
	}
	writeJSON(w, status, storedUser(u))
	return nil
}

// keepOneAdmin refuses to demote or delete name when it is the last admin:
// the API would have no one left to manage it.
func (a *API) keepOneAdmin(ctx context.Context, name string) error {
	for _, su := range a.auth.static {
		if su.Role == store.RoleAdmin {
			return nil
		}
	}
	us, err := a.store.ListUsers(ctx)
	if err != nil {
		return storeError(err, "users")
	}
	target, others := false, 0
	for _, u := range us {
		if u.Role != store.RoleAdmin {
			continue
		}
		if u.Name == name {
			target = true
		} else {
			others++
		}
	}
	if target && others == 0 {
		return conflict("user %q is the last admin", name)
	}
	return nil
}

func (a *API) deleteUser(w http.ResponseWriter, r *http.Request, who *Principal) error {
	name, err := userName(r)
	if err != nil {
		return err
	}
	if _, ok := a.auth.static[name]; ok {
		return conflict("user %q is defined in the configuration and cannot be deleted through the API", name)
	}
	if err := a.keepOneAdmin(r.Context(), name); err != nil {
		return err
	}
	if err := a.store.DeleteUser(r.Context(), name); err != nil {
		a.audit(r.Context(), who, "user.delete", name, store.OutcomeFailure, errDetail(err))
		return storeError(err, "user "+quote(name))
	}
	// A deleted user's tokens die with it.
	if ts, err := a.store.ListTokens(r.Context()); err == nil {
		for _, t := range ts {
			if t.User == name {
				if err := a.store.DeleteToken(r.Context(), t.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
					a.log.WarnContext(r.Context(), "delete token of deleted user", "user", name, "token", t.ID, "error", err)
				}
			}
		}
	}
	a.audit(r.Context(), who, "user.delete", name, store.OutcomeSuccess, "")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// ---- tokens ----

// tokenView is a token without its secret.
type tokenView struct {
	ID        string     `json:"id"`
	User      string     `json:"user,omitempty"`
	Role      store.Role `json:"role"`
	ExpiresAt time.Time  `json:"expiresAt,omitzero"`
	CreatedAt time.Time  `json:"createdAt"`
}

func viewToken(t store.Token) tokenView {
	return tokenView{ID: t.ID, User: t.User, Role: t.Role, ExpiresAt: t.ExpiresAt, CreatedAt: t.CreatedAt}
}

func (a *API) listTokens(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	ts, err := a.store.ListTokens(r.Context())
	if err != nil {
		return storeError(err, "tokens")
	}
	out := make([]tokenView, 0, len(ts))
	for _, t := range ts {
		out = append(out, viewToken(t))
	}
	writeJSON(w, http.StatusOK, newList(out))
	return nil
}

// Token lifetimes: every token expires (docs/security.md), by default after
// defaultTokenLifetime and at most after maxTokenLifetime.
const (
	defaultTokenLifetime = 30 * 24 * time.Hour
	maxTokenLifetime     = 366 * 24 * time.Hour
)

func (a *API) createToken(w http.ResponseWriter, r *http.Request, who *Principal) error {
	var in struct {
		Role      store.Role `json:"role"`
		ExpiresIn string     `json:"expiresIn"`
		ExpiresAt time.Time  `json:"expiresAt"`
	}
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	// A token minted with a token would outlive the revocation of its
	// parent: only a password login mints tokens.
	if who.Method != "basic" {
		return errorf(http.StatusForbidden, CodeForbidden, "tokens are created with a password login (HTTP basic), not with another token")
	}
	if !validRole(in.Role) {
		return invalid("role %q: want viewer, operator or admin", truncate(string(in.Role)))
	}
	now := a.now().UTC()
	exp := in.ExpiresAt
	if in.ExpiresIn != "" {
		if !exp.IsZero() {
			return invalid("give expiresIn or expiresAt, not both")
		}
		d, err := time.ParseDuration(in.ExpiresIn)
		if err != nil || d <= 0 || d > maxTokenLifetime {
			return invalid("expiresIn %q: want a positive Go duration such as 720h, at most 8784h (366 days)", truncate(in.ExpiresIn))
		}
		exp = now.Add(d)
	}
	if exp.IsZero() {
		exp = now.Add(defaultTokenLifetime)
	}
	if !exp.After(now) {
		return invalid("expiresAt is in the past")
	}
	if exp.Sub(now) > maxTokenLifetime {
		return invalid("expiresAt is more than 366 days ahead; tokens are rotated at least yearly")
	}
	plain, hash, err := store.NewToken()
	if err != nil {
		return err
	}
	t, err := a.store.CreateToken(r.Context(), store.Token{ID: randomHex(8), User: who.Name, Role: in.Role, ExpiresAt: exp}, hash)
	if err != nil {
		a.audit(r.Context(), who, "token.create", "", store.OutcomeFailure, errDetail(err))
		return storeError(err, "token")
	}
	a.audit(r.Context(), who, "token.create", t.ID, store.OutcomeSuccess, "role "+string(t.Role))
	writeJSON(w, http.StatusCreated, struct {
		tokenView
		Token string `json:"token"`
	}{viewToken(t), plain})
	return nil
}

func (a *API) deleteToken(w http.ResponseWriter, r *http.Request, who *Principal) error {
	id, err := pathID(r, "token", 64)
	if err != nil {
		return err
	}
	if err := a.store.DeleteToken(r.Context(), id); err != nil {
		a.audit(r.Context(), who, "token.delete", id, store.OutcomeFailure, errDetail(err))
		return storeError(err, "token "+quote(id))
	}
	a.audit(r.Context(), who, "token.delete", id, store.OutcomeSuccess, "")
	w.WriteHeader(http.StatusNoContent)
	return nil
}
