package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// dialect holds the few things that differ between the back ends. Queries are
// written once, with PostgreSQL's $n placeholders.
type dialect struct {
	name string
	// forUpdate locks the selected rows until the transaction ends; SQLite
	// needs nothing (write transactions are BEGIN IMMEDIATE, one writer).
	forUpdate string
	// forShare locks the leader row against a concurrent claim.
	forShare string
	// ts converts a time to the column representation: timestamptz on
	// PostgreSQL, integer microseconds since the epoch on SQLite.
	ts func(time.Time) any
}

var (
	pgDialect = dialect{
		name: DriverPostgres, forUpdate: " FOR UPDATE", forShare: " FOR SHARE",
		ts: func(t time.Time) any { return t.UTC().Truncate(time.Microsecond) },
	}
	sqliteDialect = dialect{
		name: DriverSQLite,
		ts:   func(t time.Time) any { return t.UTC().UnixMicro() },
	}
)

// nts is ts for a nullable column: the zero time is NULL.
func (d dialect) nts(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return d.ts(t)
}

// now is the store's clock, at the precision both back ends keep.
func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// tsScan scans either representation (and NULL, as the zero time).
type tsScan struct{ t *time.Time }

func (s tsScan) Scan(v any) error {
	switch x := v.(type) {
	case nil:
		*s.t = time.Time{}
	case time.Time:
		*s.t = x.UTC()
	case int64:
		*s.t = time.UnixMicro(x).UTC()
	default:
		return fmt.Errorf("scan time: unexpected %T", v)
	}
	return nil
}

// queryer is what both a pool and a transaction offer.
type queryer interface {
	exec(ctx context.Context, q string, args ...any) (int64, error)
	query(ctx context.Context, q string, args ...any) (rows, error)
	queryRow(ctx context.Context, q string, args ...any) row
}

type rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

type row interface{ Scan(dest ...any) error }

type db interface {
	queryer
	begin(ctx context.Context) (tx, error)
	ping(ctx context.Context) error
	// execDeferred is exec committed without waiting for the flush of
	// the commit to stable storage: a crash of the machine (not of the
	// process) may lose it, never a later durable commit without it.
	execDeferred(ctx context.Context, q string, args ...any) (int64, error)
}

type tx interface {
	queryer
	commit(ctx context.Context) error
	rollback(ctx context.Context) error
}

// ---- PostgreSQL (pgx) ----

type pgQ interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

type pgQueryer struct{ q pgQ }

func (p pgQueryer) exec(ctx context.Context, q string, args ...any) (int64, error) {
	tag, err := p.q.Exec(ctx, q, args...)
	return tag.RowsAffected(), err
}

func (p pgQueryer) query(ctx context.Context, q string, args ...any) (rows, error) {
	r, err := p.q.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return pgRows{r}, nil
}

func (p pgQueryer) queryRow(ctx context.Context, q string, args ...any) row {
	return p.q.QueryRow(ctx, q, args...)
}

type pgRows struct{ pgx.Rows }

func (r pgRows) Close() { r.Rows.Close() }

type pgDB struct {
	pgQueryer
	pool *pgxpool.Pool
}

func (p pgDB) begin(ctx context.Context) (tx, error) {
	t, err := p.pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	return pgTx{pgQueryer{t}, t}, nil
}

func (p pgDB) ping(ctx context.Context) error { return p.pool.Ping(ctx) }

// execDeferred commits with synchronous_commit off for this transaction
// only: PostgreSQL flushes it with its WAL writer, in commit order.
func (p pgDB) execDeferred(ctx context.Context, q string, args ...any) (n int64, err error) {
	t, err := p.pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			_ = t.Rollback(context.WithoutCancel(ctx))
		}
	}()
	if _, err := t.Exec(ctx, "SET LOCAL synchronous_commit = off"); err != nil {
		return 0, err
	}
	tag, err := t.Exec(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), t.Commit(ctx)
}

type pgTx struct {
	pgQueryer
	t pgx.Tx
}

func (t pgTx) commit(ctx context.Context) error   { return t.t.Commit(ctx) }
func (t pgTx) rollback(ctx context.Context) error { return t.t.Rollback(ctx) }

// ---- SQLite (database/sql) ----

var placeholder = regexp.MustCompile(`\$(\d+)`)

// sqliteSQL rewrites $n to SQLite's equivalent ?n. The statements hold no
// string literal with a '$'.
func sqliteSQL(q string) string { return placeholder.ReplaceAllString(q, "?$1") }

type sqlQ interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

type sqlQueryer struct{ q sqlQ }

func (s sqlQueryer) exec(ctx context.Context, q string, args ...any) (int64, error) {
	res, err := s.q.ExecContext(ctx, sqliteSQL(q), args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (s sqlQueryer) query(ctx context.Context, q string, args ...any) (rows, error) {
	r, err := s.q.QueryContext(ctx, sqliteSQL(q), args...)
	if err != nil {
		return nil, err
	}
	return sqlRows{r}, nil
}

func (s sqlQueryer) queryRow(ctx context.Context, q string, args ...any) row {
	return s.q.QueryRowContext(ctx, sqliteSQL(q), args...)
}

type sqlRows struct{ *sql.Rows }

func (r sqlRows) Close() { _ = r.Rows.Close() }

type sqlDB struct {
	sqlQueryer
	db       *sql.DB
	deferred *connStmts // execDeferred's, on the writer connection
}

func (s sqlDB) begin(ctx context.Context) (tx, error) {
	t, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	return sqlTx{sqlQueryer{t}, t}, nil
}

func (s sqlDB) ping(ctx context.Context) error { return s.db.PingContext(ctx) }

// execDeferred runs q with synchronous=NORMAL on the (single) connection:
// in WAL mode the commit is appended to the WAL without fsync, and the next
// synchronous=FULL commit's fsync covers it, as WAL frames are ordered. The
// connection goes back to FULL before anyone else may use it; if that
// fails, it is discarded rather than left lax. The three statements are
// prepared once on the connection (deferred): a transfer records a point
// per MiB through here, and parsing them again each time was half of what
// a point cost the server (issue 17).
func (s sqlDB) execDeferred(ctx context.Context, q string, args ...any) (int64, error) {
	nv := make([]driver.NamedValue, len(args))
	for i, a := range args {
		v, err := driver.DefaultParameterConverter.ConvertValue(a)
		if err != nil {
			return 0, fmt.Errorf("argument %d: %w", i+1, err)
		}
		nv[i] = driver.NamedValue{Ordinal: i + 1, Value: v}
	}
	c, err := s.db.Conn(ctx)
	if err != nil {
		return 0, err
	}
	var n int64
	lax := false // synchronous may not be FULL
	err = c.Raw(func(dc any) error {
		p := s.deferred
		p.mu.Lock()
		defer p.mu.Unlock()
		if _, err := p.exec(ctx, dc, "PRAGMA synchronous = NORMAL", nil); err != nil {
			lax = true
			p.closeOn(dc)
			return err
		}
		res, err := p.exec(ctx, dc, q, nv)
		if err == nil {
			n, err = res.RowsAffected()
		}
		if _, rerr := p.exec(context.WithoutCancel(ctx), dc, "PRAGMA synchronous = FULL", nil); rerr != nil {
			lax = true
			p.closeOn(dc)
			return errors.Join(err, rerr)
		}
		return err
	})
	if lax {
		return n, errors.Join(err, closeLax(c))
	}
	return n, errors.Join(err, c.Close())
}

// connStmts are statements prepared on one driver connection, the
// writer's: used only inside its sql.Conn.Raw, under mu.
type connStmts struct {
	mu    sync.Mutex
	conn  any
	stmts map[string]driver.Stmt
}

// exec runs q (with $n placeholders) on dc, preparing it on the first
// use, so that it is rewritten for SQLite only then. A connection other
// than the one the statements were prepared on means that one is gone
// (database/sql closed it), and its statements with it: they are dropped,
// not closed, as the driver's statements cannot be closed after their
// connection.
func (p *connStmts) exec(ctx context.Context, dc any, q string, args []driver.NamedValue) (driver.Result, error) {
	if p.conn != dc {
		p.conn, p.stmts = dc, map[string]driver.Stmt{}
	}
	st, ok := p.stmts[q]
	if !ok {
		pc, ok := dc.(driver.ConnPrepareContext)
		if !ok {
			return nil, fmt.Errorf("sqlite driver connection %T cannot prepare statements", dc)
		}
		var err error
		if st, err = pc.PrepareContext(ctx, sqliteSQL(q)); err != nil {
			return nil, err
		}
		p.stmts[q] = st
	}
	ec, ok := st.(driver.StmtExecContext)
	if !ok {
		return nil, fmt.Errorf("sqlite driver statement %T cannot execute with a context", st)
	}
	return ec.ExecContext(ctx, args)
}

// closeOn closes the statements prepared on dc, which is about to be
// closed.
func (p *connStmts) closeOn(dc any) {
	if p.conn != dc {
		return
	}
	for _, st := range p.stmts {
		_ = st.Close()
	}
	p.conn, p.stmts = nil, nil
}

// close closes the statements of execDeferred, before the writer's
// connection is closed (Store.Close).
func (s sqlDB) close() {
	c, err := s.db.Conn(context.Background())
	if err != nil {
		return
	}
	_ = c.Raw(func(dc any) error {
		s.deferred.mu.Lock()
		defer s.deferred.mu.Unlock()
		s.deferred.closeOn(dc)
		return nil
	})
	_ = c.Close()
}

// closeLax gives back a connection whose synchronous setting may not be
// FULL any more, telling database/sql to close it rather than reuse it.
func closeLax(c *sql.Conn) error {
	err := c.Raw(func(any) error { return driver.ErrBadConn })
	if errors.Is(err, driver.ErrBadConn) {
		return nil
	}
	return err
}

type sqlTx struct {
	sqlQueryer
	t *sql.Tx
}

func (t sqlTx) commit(context.Context) error   { return t.t.Commit() }
func (t sqlTx) rollback(context.Context) error { return t.t.Rollback() }

// ---- errors ----

// wrap turns a driver error into a typed store error with context. It leaves
// errors that already carry a store type alone.
func (s *Store) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	for _, typed := range []error{ErrNotFound, ErrConflict, ErrStaleEpoch, ErrUnavailable, ErrInvalid} {
		if errors.Is(err, typed) {
			return fmt.Errorf("%s: %w", op, err)
		}
	}
	if errors.Is(err, pgx.ErrNoRows) || errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	}
	if isConflict(err) {
		return fmt.Errorf("%s: %w: %w", op, ErrConflict, err)
	}
	if isUnavailable(err) {
		return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func isConflict(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// unique_violation, exclusion_violation, serialization_failure, deadlock
		switch pgErr.Code {
		case "23505", "23P01", "40001", "40P01":
			return true
		}
		return false
	}
	var sqErr *sqlite.Error
	if errors.As(err, &sqErr) {
		switch sqErr.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return true
		}
	}
	return false
}

func isUnavailable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// class 08 connection exception; 57P01..57P03 shutdown / cannot connect
		// now; 53300 too many connections.
		return strings.HasPrefix(pgErr.Code, "08") || pgErr.Code == "57P01" || pgErr.Code == "57P02" ||
			pgErr.Code == "57P03" || pgErr.Code == "53300"
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return true
	}
	var sqErr *sqlite.Error
	if errors.As(err, &sqErr) {
		c := sqErr.Code() & 0xff
		return c == sqlite3.SQLITE_BUSY || c == sqlite3.SQLITE_LOCKED || c == sqlite3.SQLITE_IOERR ||
			c == sqlite3.SQLITE_CANTOPEN || c == sqlite3.SQLITE_FULL
	}
	if pgconn.Timeout(err) || pgconn.SafeToRetry(err) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) {
		return true
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	// pgx reports a connection that died mid-query as "conn closed" /
	// "unexpected EOF" wrapped in plain errors on some paths.
	msg := err.Error()
	return strings.Contains(msg, "conn closed") || strings.Contains(msg, "connection reset") ||
		strings.Contains(msg, "broken pipe") || strings.Contains(msg, "failed to connect") ||
		strings.Contains(msg, "connection refused")
}
