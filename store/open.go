package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	sqlite "modernc.org/sqlite" // also registers driver "sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

func (s *Store) openPostgres(ctx context.Context, cfg Config) error {
	pc, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		// The URL may hold a password: do not echo it.
		return fmt.Errorf("open postgres: %w: cannot parse the store URL", ErrInvalid)
	}
	switch {
	case cfg.MaxConns > 0:
		pc.MaxConns = cfg.MaxConns
	case !strings.Contains(cfg.URL, "pool_max_conns") && pc.MaxConns < 10:
		// pgx's default (number of CPUs, at least 4) is too small for a server
		// whose sessions each write at sync points.
		pc.MaxConns = 10
	}
	if pc.ConnConfig.ConnectTimeout == 0 || pc.ConnConfig.ConnectTimeout > cfg.ConnectTimeout {
		pc.ConnConfig.ConnectTimeout = cfg.ConnectTimeout
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return s.wrap("open postgres", err)
	}
	pctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return s.wrap("open postgres "+describeConn(pc), err)
	}
	s.d = pgDialect
	s.db = pgDB{pgQueryer{pool}, pool}
	s.rd = s.db
	s.pgConnConfig = pc.ConnConfig
	s.closeFn = pool.Close
	return nil
}

func (s *Store) openSQLite(ctx context.Context, cfg Config) error {
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o750); err != nil {
		return fmt.Errorf("open sqlite: %w", err)
	}
	if err := privateFiles(cfg.Path); err != nil {
		return fmt.Errorf("open sqlite: %w", err)
	}
	// WAL with synchronous=FULL: a commit is on stable storage when it
	// returns (ACK(SYN) depends on it). BEGIN IMMEDIATE takes the write lock
	// up front so a read-modify-write cannot fail halfway with SQLITE_BUSY,
	// and busy_timeout makes other processes wait for it.
	q := url.Values{}
	q.Set("_busy_timeout", "10000")
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", "FULL")
	q.Set("_foreign_keys", "1")
	q.Set("_txlock", "immediate")
	dsn := "file:" + cfg.Path + "?" + q.Encode()
	sdb, err := sql.Open("sqlite", dsn)
	if err != nil {
		return fmt.Errorf("open sqlite %s: %w", cfg.Path, err)
	}
	// One writer connection: SQLite has one writer anyway, and queuing in
	// database/sql is cheaper and fairer than SQLite's busy-wait.
	sdb.SetMaxOpenConns(1)
	sdb.SetMaxIdleConns(1)
	sdb.SetConnMaxLifetime(0)
	// Switching a new file to WAL takes an exclusive lock without going
	// through the busy handler, so processes opening the same new file at
	// once can see SQLITE_BUSY here: retry for as long as busy_timeout.
	if err := pingBusy(ctx, sdb); err != nil {
		_ = sdb.Close()
		return s.wrap("open sqlite "+cfg.Path, err)
	}
	s.d = sqliteDialect
	db := sqlDB{sqlQueryer{sdb}, sdb, &connStmts{}}
	s.db = db
	s.rd = s.db
	if cfg.ReadConns < 0 {
		s.closeFn = func() { db.close(); _ = sdb.Close() }
		return nil
	}
	rdb, err := openSQLiteReaders(ctx, cfg.Path, readConns(cfg.ReadConns))
	if err != nil {
		_ = sdb.Close()
		return s.wrap("open sqlite "+cfg.Path+" readers", err)
	}
	s.rd = sqlQueryer{rdb}
	s.closeFn = func() {
		// Readers first: the last connection to close checkpoints the WAL,
		// and that must be the writer's.
		_ = rdb.Close()
		db.close()
		_ = sdb.Close()
	}
	return nil
}

// readConns is the size of SQLite's read pool: n if set, else GOMAXPROCS
// bounded to [2, 4]. The driver is pure Go, so a read is CPU work on a Go
// thread and readers beyond the cores only queue; two at least, so that a
// long API listing does not hold up a CONNECT's lookup; four at most,
// because the readers are the catalog lookups the node's views miss and
// the admin API, and every connection keeps its own page cache.
func readConns(n int) int {
	if n > 0 {
		return n
	}
	return min(4, max(2, runtime.GOMAXPROCS(0)))
}

// openSQLiteReaders opens the read pool. In WAL mode readers take no lock
// the writer waits for and see every transaction committed before their
// statement began, so a read after a write returned sees it, as on
// PostgreSQL. query_only makes a write sent here by mistake fail instead
// of racing the writer for the lock.
func openSQLiteReaders(ctx context.Context, path string, n int) (*sql.DB, error) {
	q := url.Values{}
	q.Set("_busy_timeout", "10000")
	q.Set("_query_only", "1")
	rdb, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, err
	}
	rdb.SetMaxOpenConns(n)
	rdb.SetMaxIdleConns(n)
	rdb.SetConnMaxLifetime(0)
	if err := pingBusy(ctx, rdb); err != nil {
		_ = rdb.Close()
		return nil, err
	}
	return rdb, nil
}

// pingBusy pings db, retrying SQLITE_BUSY for up to 10 s (busy_timeout).
func pingBusy(ctx context.Context, db *sql.DB) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := db.PingContext(ctx)
		if err == nil {
			return nil
		}
		if !isBusy(err) || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(time.Duration(10+rand.IntN(40)) * time.Millisecond)
	}
}

// describeConn names the database of a connection for messages, from the
// parsed configuration rather than the string: the password may sit in the
// URL's user info, in its query (?password=, ?sslpassword=) or in a
// keyword/value string, quoted or not, and none of it may reach a log.
func describeConn(pc *pgxpool.Config) string {
	c := pc.ConnConfig
	return fmt.Sprintf("%s/%s as %s", net.JoinHostPort(c.Host, strconv.Itoa(int(c.Port))), c.Database, c.User)
}

// privateFiles creates the database file readable by its owner only (it
// holds password hashes and the audit log), and takes group and other
// access away from one an earlier version created 0644. SQLite gives its
// -wal and -shm files the database file's mode.
func privateFiles(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	for _, p := range []string{path, path + "-wal", path + "-shm", path + "-journal"} {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if fi.Mode().IsRegular() && fi.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(p, fi.Mode().Perm()&0o700); err != nil {
				return fmt.Errorf("restrict %s to its owner: %w", p, err)
			}
		}
	}
	return nil
}

func isBusy(err error) bool {
	var sqErr *sqlite.Error
	return errors.As(err, &sqErr) && sqErr.Code()&0xff == sqlite3.SQLITE_BUSY
}
