// Package store owns Vectis's persistent state: partners, virtual files, PeSIT
// server definitions, transfer records, audit events, admin users and tokens,
// and the cluster leader epoch used for fencing. It is the only package that
// knows SQL. Two back ends share one implementation: PostgreSQL through pgx
// (required when clustering is on) and embedded SQLite through modernc.org/sqlite.
package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// Partners is the partner aggregate.
type Partners interface {
	CreatePartner(ctx context.Context, p Partner, passwordHash string) (Partner, error)
	UpdatePartner(ctx context.Context, p Partner) (Partner, error) // leaves the password alone
	SetPartnerPassword(ctx context.Context, id, passwordHash string) error
	DeletePartner(ctx context.Context, id string) error
	GetPartner(ctx context.Context, id string) (Partner, error)
	ListPartners(ctx context.Context) ([]Partner, error)
	// PartnerPasswordHash is for authentication only; never display it.
	PartnerPasswordHash(ctx context.Context, id string) (string, error)
	// PartnerByCert maps a TLS client certificate (subject CN, SHA-256 of the
	// DER, lowercase hex) to a partner; the fingerprint wins over the CN.
	PartnerByCert(ctx context.Context, cn, sha256hex string) (Partner, error)
}

// VirtualFiles is the virtual file aggregate.
type VirtualFiles interface {
	CreateFile(ctx context.Context, f VirtualFile) (VirtualFile, error)
	UpdateFile(ctx context.Context, f VirtualFile) (VirtualFile, error)
	DeleteFile(ctx context.Context, id string) error
	GetFile(ctx context.Context, id string) (VirtualFile, error)
	ListFiles(ctx context.Context) ([]VirtualFile, error)
}

// Servers is the PeSIT server definition aggregate.
type Servers interface {
	CreateServer(ctx context.Context, s Server) (Server, error)
	UpdateServer(ctx context.Context, s Server) (Server, error)
	DeleteServer(ctx context.Context, id string) error
	GetServer(ctx context.Context, id string) (Server, error)
	ListServers(ctx context.Context) ([]Server, error)
}

// Transfers is the transfer record aggregate. A transfer belongs to the term
// (epoch) that created or last took it over. Creating, taking over and
// UpdateTransfer are leader-only: they fail with ErrStaleEpoch unless epoch
// is the recorded leader epoch (see Leader). Sync points, progress and the
// outcome are owner-only: they carry the owner's epoch, which may be older
// than the leader's while a stepped-down node drains, and fail with
// ErrNotOwner once a newer term took the transfer over.
type Transfers interface {
	CreateTransfer(ctx context.Context, epoch int64, t Transfer) (Transfer, error)
	// TakeOverTransfer makes (node, epoch) the owner of a transfer whose
	// owner epoch is still from, marks it in_progress and counts a restart:
	// a compare-and-set, ErrNotOwner when from is no longer the owner.
	TakeOverTransfer(ctx context.Context, epoch int64, node, id string, from int64) (Transfer, error)
	// InterruptOrphans marks interrupted every in_progress transfer whose
	// owner gone reports true, keeping its sync point, and makes (node,
	// epoch) its owner so that a late write of the gone session is refused.
	InterruptOrphans(ctx context.Context, epoch int64, node string, gone func(Transfer) bool) ([]Transfer, error)
	// ListUnpublished returns at most limit completed receives whose
	// temp_path is still set, oldest update first: the leader's sweep
	// checks that their file was published (the record is written before
	// the rename, so a crash between the two leaves the file under its
	// temporary name). Leader-only.
	ListUnpublished(ctx context.Context, epoch int64, limit int) ([]Transfer, error)
	// SettlePublished clears the temp_path of a completed transfer whose
	// temp_path is still temp (a compare-and-set; false when it matched no
	// row) and, when diagnostic is not empty, sets its diagnostic.
	// Leader-only.
	SettlePublished(ctx context.Context, epoch int64, id, temp, diagnostic string) (bool, error)
	// RecordSyncPoint persists the restart state at a sync point in one
	// statement: sync point number, offset and article count, and Bytes and
	// Articles set to the same offset and count.
	RecordSyncPoint(ctx context.Context, epoch int64, id string, sp SyncPoint) error
	// RecordSyncPointDeferred is RecordSyncPoint whose commit is not
	// flushed to stable storage before it returns (a machine crash may
	// take the record back to an earlier point), for a point made durable
	// elsewhere with its data.
	RecordSyncPointDeferred(ctx context.Context, epoch int64, id string, sp SyncPoint) error
	// AddTransferProgress atomically adds to Bytes and Articles.
	AddTransferProgress(ctx context.Context, epoch int64, id string, bytes, articles int64) error
	// FinishTransfer records the outcome; a final status sets FinishedAt.
	FinishTransfer(ctx context.Context, epoch int64, id string, r TransferResult) error
	// UpdateTransfer is a read-modify-write under a row lock: mutate sees the
	// current record and its changes are written atomically. ID, CreatedAt are
	// kept; UpdatedAt, Epoch and FinishedAt (on a final status) are set.
	UpdateTransfer(ctx context.Context, epoch int64, id string, mutate func(*Transfer) error) (Transfer, error)
	GetTransfer(ctx context.Context, id string) (Transfer, error)
	ListTransfers(ctx context.Context, f TransferFilter) (TransferPage, error)
	// FindRestartable returns the newest transfer for key whose status is
	// in_progress, interrupted or restartable.
	FindRestartable(ctx context.Context, key RestartKey) (Transfer, error)
	// FindCompletedReceive returns the newest completed receive for key
	// that finished at or after since: a requester that never got the
	// ACK(TRANS.END) of a transfer recorded completed restarts it.
	FindCompletedReceive(ctx context.Context, key RestartKey, since time.Time) (Transfer, error)
}

// Retention removes old history; leader-only.
type Retention interface {
	Purge(ctx context.Context, epoch int64, olderThan time.Duration) (PurgeResult, error)
}

// Declarations applies the configuration file's partners, files and servers.
type Declarations interface {
	ApplyDeclared(ctx context.Context, d Declared) (ApplyResult, error)
}

// Audit is the audit event aggregate.
type Audit interface {
	AppendAudit(ctx context.Context, e AuditEvent) (AuditEvent, error)
	ListAudit(ctx context.Context, f AuditFilter) (AuditPage, error)
}

// Leader is the cluster leader record used for fencing.
type Leader interface {
	// ClaimLeadership records epoch and member if epoch is greater than the
	// recorded epoch (or equal with the same member); else ErrStaleEpoch.
	ClaimLeadership(ctx context.Context, epoch int64, member string) error
	Leadership(ctx context.Context) (Leadership, error)
	// CheckEpoch returns ErrStaleEpoch unless epoch is the recorded one.
	CheckEpoch(ctx context.Context, epoch int64) error
}

// Users is the admin API user and token aggregate.
type Users interface {
	PutUser(ctx context.Context, u User, passwordHash string) (User, error) // create or replace
	GetUser(ctx context.Context, name string) (User, error)
	ListUsers(ctx context.Context) ([]User, error)
	DeleteUser(ctx context.Context, name string) error
	UserPasswordHash(ctx context.Context, name string) (string, error) // authentication only
	CreateToken(ctx context.Context, t Token, tokenHash string) (Token, error)
	// LookupToken finds a token by HashToken(plaintext); expired tokens are ErrNotFound.
	LookupToken(ctx context.Context, tokenHash string) (Token, error)
	ListTokens(ctx context.Context) ([]Token, error)
	DeleteToken(ctx context.Context, id string) error
}

// Notifier delivers configuration changes made by any process.
type Notifier interface {
	Subscribe(ctx context.Context) <-chan Change
}

// Compile-time proof that *Store is every aggregate.
var (
	_ Partners     = (*Store)(nil)
	_ VirtualFiles = (*Store)(nil)
	_ Servers      = (*Store)(nil)
	_ Transfers    = (*Store)(nil)
	_ Audit        = (*Store)(nil)
	_ Leader       = (*Store)(nil)
	_ Users        = (*Store)(nil)
	_ Notifier     = (*Store)(nil)
	_ Retention    = (*Store)(nil)
	_ Declarations = (*Store)(nil)
)

// Driver names.
const (
	DriverSQLite   = "sqlite"
	DriverPostgres = "postgres"
)

// Config opens a store.
type Config struct {
	// Driver is "sqlite" or "postgres". Empty: postgres if URL is set, else sqlite.
	Driver string
	// URL is the PostgreSQL connection string (postgres://...).
	URL string
	// Path is the SQLite file; required for sqlite.
	Path string
	// Registerer, if set, receives vectis_store_operation_seconds.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// SkipMigrate leaves the schema alone in Open (vectis migrate status).
	SkipMigrate bool
	// MaxConns bounds the PostgreSQL pool (default 10).
	MaxConns int32
	// ConnectTimeout bounds each PostgreSQL connection attempt (default 5s).
	ConnectTimeout time.Duration
	// ReadConns sizes SQLite's pool of read-only connections beside its one
	// writer (default: GOMAXPROCS, at least 2 and at most 4; see
	// readConns). Negative: no pool, reads queue on the writer's
	// connection as they did before the pool (for comparisons).
	ReadConns int
}

// Store is the persistence layer. It is safe for concurrent use.
type Store struct {
	d  dialect
	db db
	// rd serves the reads made outside a transaction: SQLite's read pool
	// (WAL lets readers run beside the writer and see every commit made
	// before they start), or the same pool as db on PostgreSQL. Reads
	// inside a transaction use the transaction, on the writer.
	rd      queryer
	log     *slog.Logger
	opHist  *prometheus.HistogramVec
	opErrs  *prometheus.CounterVec
	hub     *hub
	closeMu sync.Mutex
	closed  bool
	// listener (postgres only) runs LISTEN on a dedicated connection.
	listenOnce   sync.Once
	listenCancel context.CancelFunc
	listenDone   chan struct{}
	listenReady  chan struct{}
	pgConnConfig *pgx.ConnConfig
	connTimeout  time.Duration
	// origin marks this Store's NOTIFY payloads, so that its listener
	// skips the changes it already published at commit (notify.go).
	origin  string
	closeFn func()
}

// Open connects to the configured database and, unless cfg.SkipMigrate,
// brings the schema up to date (under a PostgreSQL advisory lock, so several
// processes may start at once).
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Driver == "" {
		cfg.Driver = DriverSQLite
		if cfg.URL != "" {
			cfg.Driver = DriverPostgres
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	var o [8]byte
	_, _ = rand.Read(o[:]) // crypto/rand.Read never fails (Go 1.24)
	s := &Store{log: cfg.Logger, hub: newHub(), connTimeout: cfg.ConnectTimeout, origin: hex.EncodeToString(o[:])}
	var err error
	switch strings.ToLower(cfg.Driver) {
	case DriverPostgres, "postgresql", "pgx":
		if cfg.URL == "" {
			return nil, fmt.Errorf("open store: %w: postgres needs a URL", ErrInvalid)
		}
		err = s.openPostgres(ctx, cfg)
	case DriverSQLite, "sqlite3":
		if cfg.Path == "" {
			return nil, fmt.Errorf("open store: %w: sqlite needs a path", ErrInvalid)
		}
		err = s.openSQLite(ctx, cfg)
	default:
		return nil, fmt.Errorf("open store: %w: unknown driver %q (want sqlite or postgres)", ErrInvalid, cfg.Driver)
	}
	if err != nil {
		return nil, err
	}
	if err := s.registerMetrics(cfg.Registerer); err != nil {
		s.Close()
		return nil, err
	}
	if !cfg.SkipMigrate {
		if err := s.Migrate(ctx); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// Driver returns "sqlite" or "postgres".
func (s *Store) Driver() string { return s.d.name }

// Ping checks that the database answers (readiness).
func (s *Store) Ping(ctx context.Context) (err error) {
	defer s.observe("ping", &err)()
	return s.wrap("ping", s.db.ping(ctx))
}

// Close stops the change listener, ends subscriptions and closes the
// database. It is safe to call twice.
func (s *Store) Close() {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return
	}
	s.closed = true
	s.closeMu.Unlock()
	if s.listenCancel != nil {
		s.listenCancel()
		<-s.listenDone
	}
	s.hub.close()
	if s.closeFn != nil {
		s.closeFn()
	}
}

func (s *Store) registerMetrics(reg prometheus.Registerer) error {
	s.opHist = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "vectis_store_operation_seconds",
		Help:    "Duration of store operations.",
		Buckets: []float64{.0002, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"operation"})
	s.opErrs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vectis_store_operation_errors_total",
		Help: "Store operations that failed, by operation and error class.",
	}, []string{"operation", "class"})
	if reg == nil {
		return nil
	}
	// A second Store on the same registry (tests, migrate then serve) shares
	// the collectors instead of failing.
	if err := reg.Register(s.opHist); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return fmt.Errorf("register store metrics: %w", err)
		}
		h, ok := are.ExistingCollector.(*prometheus.HistogramVec)
		if !ok {
			return fmt.Errorf("register store metrics: %w", err)
		}
		s.opHist = h
	}
	if err := reg.Register(s.opErrs); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return fmt.Errorf("register store metrics: %w", err)
		}
		c, ok := are.ExistingCollector.(*prometheus.CounterVec)
		if !ok {
			return fmt.Errorf("register store metrics: %w", err)
		}
		s.opErrs = c
	}
	return nil
}

// observe times an operation and counts its failure by class:
// defer s.observe("op", &err)().
func (s *Store) observe(op string, errp *error) func() {
	start := time.Now()
	return func() {
		s.opHist.WithLabelValues(op).Observe(time.Since(start).Seconds())
		if err := *errp; err != nil {
			s.opErrs.WithLabelValues(op, errorClass(err)).Inc()
		}
	}
}

func errorClass(err error) string {
	switch {
	case errors.Is(err, ErrNotFound):
		return "not_found"
	case errors.Is(err, ErrNotOwner):
		return "not_owner" // before conflict, which it also is
	case errors.Is(err, ErrConflict):
		return "conflict"
	case errors.Is(err, ErrStaleEpoch):
		return "stale_epoch"
	case errors.Is(err, ErrUnavailable):
		return "unavailable"
	case errors.Is(err, ErrInvalid):
		return "invalid"
	}
	return "other"
}
