package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/vectis-ft/vectis/internal/credential"
	"github.com/vectis-ft/vectis/internal/fileroot"
	"github.com/vectis-ft/vectis/store"
)

// The store aggregates the API reads and writes; *store.Store implements
// them all.
type (
	// PartnerStore is the partner aggregate.
	PartnerStore interface {
		CreatePartner(ctx context.Context, p store.Partner, passwordHash string) (store.Partner, error)
		UpdatePartner(ctx context.Context, p store.Partner) (store.Partner, error)
		SetPartnerPassword(ctx context.Context, id, passwordHash string) error
		DeletePartner(ctx context.Context, id string) error
		GetPartner(ctx context.Context, id string) (store.Partner, error)
		ListPartners(ctx context.Context) ([]store.Partner, error)
	}
	// FileStore is the virtual file aggregate.
	FileStore interface {
		CreateFile(ctx context.Context, f store.VirtualFile) (store.VirtualFile, error)
		UpdateFile(ctx context.Context, f store.VirtualFile) (store.VirtualFile, error)
		DeleteFile(ctx context.Context, id string) error
		GetFile(ctx context.Context, id string) (store.VirtualFile, error)
		ListFiles(ctx context.Context) ([]store.VirtualFile, error)
	}
	// ServerStore is the PeSIT server definition aggregate.
	ServerStore interface {
		CreateServer(ctx context.Context, s store.Server) (store.Server, error)
		UpdateServer(ctx context.Context, s store.Server) (store.Server, error)
		DeleteServer(ctx context.Context, id string) error
		GetServer(ctx context.Context, id string) (store.Server, error)
		ListServers(ctx context.Context) ([]store.Server, error)
	}
	// TransferReader reads transfer records; the API never writes them.
	TransferReader interface {
		GetTransfer(ctx context.Context, id string) (store.Transfer, error)
		ListTransfers(ctx context.Context, f store.TransferFilter) (store.TransferPage, error)
		TransferStats(ctx context.Context, f store.TransferFilter) (store.TransferStats, error)
	}
	// AuditLog is the audit trail.
	AuditLog interface {
		AppendAudit(ctx context.Context, e store.AuditEvent) (store.AuditEvent, error)
		ListAudit(ctx context.Context, f store.AuditFilter) (store.AuditPage, error)
	}
	// UserStore holds admin users and API tokens.
	UserStore interface {
		PutUser(ctx context.Context, u store.User, passwordHash string) (store.User, error)
		GetUser(ctx context.Context, name string) (store.User, error)
		ListUsers(ctx context.Context) ([]store.User, error)
		DeleteUser(ctx context.Context, name string) error
		UserPasswordHash(ctx context.Context, name string) (string, error)
		CreateToken(ctx context.Context, t store.Token, tokenHash string) (store.Token, error)
		LookupToken(ctx context.Context, tokenHash string) (store.Token, error)
		ListTokens(ctx context.Context) ([]store.Token, error)
		DeleteToken(ctx context.Context, id string) error
	}
	// Store is everything the API needs from the store.
	Store interface {
		PartnerStore
		FileStore
		ServerStore
		TransferReader
		AuditLog
		UserStore
	}
)

// StaticUser is a user from the configuration (vectis.api.users or the
// usersFile Secret). PasswordHash is bcrypt or argon2id; Password (plain
// text, development only) is hashed by New when PasswordHash is empty.
type StaticUser struct {
	Name         string
	Password     string
	PasswordHash string
	Role         store.Role
}

// Config is what New needs. Store and Cluster are required.
type Config struct {
	Store   Store
	Cluster ClusterView
	// Leadership gates start/stop/cancel; nil means Cluster if it
	// implements Leadership (Standalone does), else "always leader".
	Leadership Leadership
	// Servers starts and stops PeSIT listeners; nil answers 503.
	Servers ServerControl
	// Canceller interrupts live transfers; nil answers 503.
	Canceller TransferCanceller
	// Readiness backs /readyz; nil means always ready.
	Readiness Readiness
	// Users from the configuration; they take precedence over stored users
	// of the same name and cannot be changed through the API.
	Users []StaticUser
	// Metrics is the registry that /metrics exposes and that the API's own
	// metrics are registered on. Nil: /metrics answers 404.
	Metrics *prometheus.Registry
	// MetricsAuth requires the viewer role on /metrics (default: open, as
	// Prometheus scrapes usually are inside a cluster).
	MetricsAuth bool
	// TracerProvider traces requests; nil means no tracing.
	TracerProvider trace.TracerProvider
	Logger         *slog.Logger
	// MaxBodyBytes bounds a request body (default 1 MiB); larger is 413.
	MaxBodyBytes int64
	// LoginBurst failed authentications of one user from one address are
	// allowed in a row (default 5); then one more per LoginRefill (default
	// 12s), and 429 until then. One address gets ten times that, whatever
	// the user names. Valid tokens and cached passwords are never throttled.
	LoginBurst  int
	LoginRefill time.Duration
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
	// FileRoot confines the receiveDir and sendDir of virtual files
	// (vectis.fileRoot); the zero Root confines nothing.
	FileRoot fileroot.Root
	// Verifier checks passwords; the node shares one with its PeSIT
	// servers so that the bound on derivations holds per process. Nil: the
	// API makes its own, with 4 slots.
	Verifier *credential.Verifier
}

// API is the admin API handler. It is safe for concurrent use.
type API struct {
	store     Store
	cluster   ClusterView
	leader    Leadership
	servers   ServerControl
	canceller TransferCanceller
	fileRoot  fileroot.Root
	readiness Readiness
	metrics   *prometheus.Registry
	log       *slog.Logger
	tracer    trace.Tracer
	maxBody   int64
	now       func() time.Time

	auth    *authenticator
	limiter *loginThrottle
	csrf    *http.CrossOriginProtection
	mux     *http.ServeMux
	routes  []route
	m       apiMetrics
}

type apiMetrics struct {
	requests     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	authFailures *prometheus.CounterVec
}

// New builds the API handler.
func New(cfg Config) (*API, error) {
	if cfg.Store == nil {
		return nil, errors.New("api: Config.Store is required")
	}
	if cfg.Cluster == nil {
		return nil, errors.New("api: Config.Cluster is required (use api.Standalone without HA)")
	}
	a := &API{
		store:     cfg.Store,
		cluster:   cfg.Cluster,
		leader:    cfg.Leadership,
		servers:   cfg.Servers,
		canceller: cfg.Canceller,
		fileRoot:  cfg.FileRoot,
		readiness: cfg.Readiness,
		metrics:   cfg.Metrics,
		log:       cfg.Logger,
		maxBody:   cfg.MaxBodyBytes,
		now:       cfg.Now,
		csrf:      http.NewCrossOriginProtection(),
	}
	if a.leader == nil {
		if l, ok := cfg.Cluster.(Leadership); ok {
			a.leader = l
		} else {
			a.leader = Standalone{}
		}
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.maxBody <= 0 {
		a.maxBody = 1 << 20
	}
	if a.now == nil {
		a.now = time.Now
	}
	tp := cfg.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	a.tracer = tp.Tracer("github.com/vectis-ft/vectis/api")
	burst, refill := cfg.LoginBurst, cfg.LoginRefill
	if burst <= 0 {
		burst = 5
	}
	if refill <= 0 {
		refill = 12 * time.Second
	}
	a.limiter = newLoginThrottle(burst, refill, 10000, a.now)
	auth, err := newAuthenticator(cfg.Users, cfg.Store, a.limiter, cfg.Verifier, a.now)
	if err != nil {
		return nil, err
	}
	a.auth = auth
	if err := a.registerMetrics(); err != nil {
		return nil, err
	}
	a.routes = a.routeTable(cfg.MetricsAuth)
	a.mux = a.buildMux()
	return a, nil
}

func (a *API) registerMetrics() error {
	a.m = apiMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vectis_api_requests_total",
			Help: "Admin API requests by route, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vectis_api_request_duration_seconds",
			Help:    "Admin API request duration by route.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route", "method"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vectis_api_auth_failures_total",
			Help: "Admin API authentication failures by reason (invalid, throttled).",
		}, []string{"reason"}),
	}
	if a.metrics == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{a.m.requests, a.m.duration, a.m.authFailures} {
		if err := a.metrics.Register(c); err != nil {
			return fmt.Errorf("api: register metrics: %w", err)
		}
	}
	return nil
}

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mux.ServeHTTP(w, r)
}

// handlerFunc is a route's handler: it writes a success response itself or
// returns an error that the router turns into the JSON error body.
type handlerFunc func(w http.ResponseWriter, r *http.Request, p *Principal) error

// route is one method+pattern of the API. Role is the weakest role allowed;
// empty means no authentication.
type route struct {
	method  string
	path    string
	role    store.Role
	handler handlerFunc
	quiet   bool // probes: logged at debug
}

// Route is a documented method and path, for the OpenAPI check.
type Route struct {
	Method, Path string
	Role         store.Role // empty: no authentication
}

// Routes returns the routes the API serves.
func (a *API) Routes() []Route {
	out := make([]Route, 0, len(a.routes))
	for _, rt := range a.routes {
		out = append(out, Route{Method: rt.method, Path: rt.path, Role: rt.role})
	}
	return out
}

func (a *API) buildMux() *http.ServeMux {
	mux := http.NewServeMux()
	for _, rt := range a.routes {
		mux.Handle(rt.method+" "+rt.path, a.wrap(rt))
	}
	// Everything unmatched lands here: 405 with Allow when the path exists
	// with other methods, else 404, both as JSON.
	mux.Handle("/", a.wrap(route{path: "(unmatched)", handler: func(w http.ResponseWriter, r *http.Request, _ *Principal) error {
		var allow []string
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pattern := mux.Handler(probe); pattern != "/" && pattern != "" {
				allow = append(allow, m)
			}
		}
		if len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			return errorf(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "method %s not allowed; allowed: %s", r.Method, strings.Join(allow, ", "))
		}
		return notFound("no such endpoint: %s (see /api/openapi.yaml)", truncate(r.URL.Path))
	}}))
	return mux
}

// statusRecorder remembers the status code for logs, metrics and traces.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// wrap runs a route: tracing, metrics, access log, panic recovery, CSRF
// check, authentication, authorization, body limit, then the handler.
func (a *API) wrap(rt route) http.Handler {
	label := rt.path
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := a.now()
		method := methodLabel(r.Method)
		ctx, span := a.tracer.Start(r.Context(), method+" "+label,
			trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(
				attribute.String("http.request.method", method),
				attribute.String("http.route", label),
				attribute.String("client.address", clientAddr(r)),
			))
		defer span.End()
		r = r.WithContext(ctx)
		rec := &statusRecorder{ResponseWriter: w}
		var p *Principal
		func() {
			defer func() {
				if v := recover(); v != nil {
					if v == http.ErrAbortHandler {
						panic(v)
					}
					a.log.ErrorContext(ctx, "api handler panic", "route", label, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
					if rec.status == 0 {
						writeError(rec, errorf(http.StatusInternalServerError, CodeInternal, "internal error"))
					}
				}
			}()
			var err error
			p, err = a.serve(rec, r, rt)
			if err != nil {
				he := toHTTPError(err)
				if he.status >= 500 {
					a.log.ErrorContext(ctx, "api request failed", "route", label, "method", r.Method, "status", he.status, "error", he.Error())
				}
				writeError(rec, he)
			}
		}()
		if rec.status == 0 {
			rec.WriteHeader(http.StatusOK)
		}
		el := a.now().Sub(start)
		code := strconv.Itoa(rec.status)
		a.m.requests.WithLabelValues(label, method, code).Inc()
		a.m.duration.WithLabelValues(label, method).Observe(el.Seconds())
		span.SetAttributes(attribute.Int("http.response.status_code", rec.status))
		if rec.status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(rec.status))
		}
		user := ""
		if p != nil {
			user = p.Name
			span.SetAttributes(attribute.String("enduser.id", p.Name), attribute.String("enduser.role", string(p.Role)))
		}
		level := slog.LevelInfo
		if rt.quiet || (r.Method == http.MethodGet && rec.status < 400) {
			level = slog.LevelDebug
		}
		a.log.Log(ctx, level, "api request", "method", r.Method, "route", label, "path", r.URL.Path,
			"status", rec.status, "duration", el, "user", user, "client", clientAddr(r))
	})
}

func (a *API) serve(w http.ResponseWriter, r *http.Request, rt route) (*Principal, error) {
	if err := a.csrf.Check(r); err != nil {
		return nil, errorf(http.StatusForbidden, CodeForbidden, "cross-origin request refused")
	}
	var p *Principal
	if rt.role != "" {
		var err error
		p, err = a.authenticate(w, r)
		if err != nil {
			return nil, err
		}
		if !allows(p.Role, rt.role) {
			a.audit(r.Context(), p, "api.authorize", r.Method+" "+r.URL.Path, store.OutcomeDenied, "role "+string(p.Role)+" lacks "+string(rt.role))
			return p, errorf(http.StatusForbidden, CodeForbidden, "role %s may not %s %s (needs %s)", p.Role, r.Method, rt.path, rt.role)
		}
	}
	if r.Body != nil {
		r.Body = http.MaxBytesReader(w, r.Body, a.maxBody)
	}
	return p, rt.handler(w, r, p)
}

func toHTTPError(err error) *httpError {
	var he *httpError
	if errors.As(err, &he) {
		return he
	}
	return storeError(err, "object")
}

// clientAddr is the peer's IP address. X-Forwarded-For is deliberately
// ignored: the API is reached directly or through a Service, and trusting a
// client-supplied header would let an attacker pick its rate-limit key.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// audit appends an audit event; failing to audit is logged, not returned,
// because the action it records has already happened.
func (a *API) audit(ctx context.Context, p *Principal, action, target string, outcome store.Outcome, detail string) {
	actor := "anonymous"
	if p != nil {
		actor = p.Name
	}
	_, err := a.store.AppendAudit(context.WithoutCancel(ctx), store.AuditEvent{
		Time: a.now().UTC(), Actor: actor, Action: action, Target: target, Outcome: outcome, Detail: detail,
	})
	if err != nil {
		a.log.WarnContext(ctx, "audit append failed", "action", action, "target", target, "error", err)
	}
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

// methodLabel maps a request method to a closed set for metric labels and
// span names: any client can invent methods (or send 60 KB ones), and each
// new label value is a new series kept for the life of the process.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "other"
}
