package store

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Migrations are versioned SQL files, one set per dialect, named
// NNNN_description.sql. Each runs in its own transaction together with the
// row that records it in schema_migrations.
//
//go:embed migrations
var migrationFS embed.FS

// migrationLockKey is the PostgreSQL advisory lock that serialises migrators
// across processes ("vectis" in ASCII).
const migrationLockKey = 0x766563746973

// Migration is one schema version and whether it is applied.
type Migration struct {
	Version   int64     `json:"version"`
	Name      string    `json:"name"`
	Applied   bool      `json:"applied"`
	AppliedAt time.Time `json:"appliedAt,omitzero"`
	sql       string
}

func loadMigrations(dialect string) ([]Migration, error) {
	dir := path.Join("migrations", dialect)
	entries, err := fs.ReadDir(migrationFS, dir)
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var ms []Migration
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".sql") {
			continue
		}
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.ParseInt(num, 10, 64)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must be NNNN_description.sql", name)
		}
		b, err := fs.ReadFile(migrationFS, path.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", name, err)
		}
		ms = append(ms, Migration{Version: v, Name: strings.TrimSuffix(name, ".sql"), sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i := 1; i < len(ms); i++ {
		if ms[i].Version == ms[i-1].Version {
			return nil, fmt.Errorf("migrations %s and %s share version %d", ms[i-1].Name, ms[i].Name, ms[i].Version)
		}
	}
	return ms, nil
}

const createVersionTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
    version    BIGINT PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at %s NOT NULL
)`

// Migrate applies every pending migration and returns how many it applied
// through MigrationStatus. On PostgreSQL it holds a session advisory lock for
// the whole run, so concurrent migrators apply each version exactly once; on
// SQLite the run is one BEGIN IMMEDIATE transaction, which is the file lock.
func (s *Store) Migrate(ctx context.Context) (err error) {
	defer s.observe("migrate", &err)()
	ms, err := loadMigrations(s.d.name)
	if err != nil {
		return err
	}
	if s.d.name == DriverPostgres {
		return s.wrap("migrate", s.migratePostgres(ctx, ms))
	}
	return s.wrap("migrate", s.migrateSQLite(ctx, ms))
}

func (s *Store) migratePostgres(ctx context.Context, ms []Migration) error {
	pool := s.db.(pgDB).pool
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(migrationLockKey)); err != nil {
		return fmt.Errorf("advisory lock: %w", err)
	}
	defer func() {
		// Unlock on a fresh context: the caller's may be done. If the
		// connection is broken the lock died with its session anyway.
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, "SELECT pg_advisory_unlock($1)", int64(migrationLockKey)); err != nil {
			_ = conn.Conn().Close(uctx) // the pool discards it; closing drops the lock
		}
	}()
	q := pgQueryer{conn}
	if _, err := q.exec(ctx, fmt.Sprintf(createVersionTable, "TIMESTAMPTZ")); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	applied, err := appliedVersions(ctx, q)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if _, ok := applied[m.Version]; ok {
			continue
		}
		t, err := conn.Begin(ctx)
		if err != nil {
			return err
		}
		tq := pgQueryer{t}
		if _, err := tq.exec(ctx, m.sql); err != nil {
			_ = t.Rollback(ctx)
			return fmt.Errorf("apply %s: %w", m.Name, err)
		}
		if _, err := tq.exec(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
			m.Version, m.Name, s.d.ts(now())); err != nil {
			_ = t.Rollback(ctx)
			return fmt.Errorf("record %s: %w", m.Name, err)
		}
		if err := t.Commit(ctx); err != nil {
			return fmt.Errorf("commit %s: %w", m.Name, err)
		}
		s.log.Info("applied migration", "version", m.Version, "name", m.Name, "driver", s.d.name)
	}
	return nil
}

func (s *Store) migrateSQLite(ctx context.Context, ms []Migration) error {
	t, err := s.db.begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = t.rollback(ctx) }() // no-op after commit
	if _, err := t.exec(ctx, fmt.Sprintf(createVersionTable, "INTEGER")); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	applied, err := appliedVersions(ctx, t)
	if err != nil {
		return err
	}
	var done []Migration
	for _, m := range ms {
		if _, ok := applied[m.Version]; ok {
			continue
		}
		if _, err := t.exec(ctx, m.sql); err != nil {
			return fmt.Errorf("apply %s: %w", m.Name, err)
		}
		if _, err := t.exec(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
			m.Version, m.Name, s.d.ts(now())); err != nil {
			return fmt.Errorf("record %s: %w", m.Name, err)
		}
		done = append(done, m)
	}
	if err := t.commit(ctx); err != nil {
		return err
	}
	for _, m := range done {
		s.log.Info("applied migration", "version", m.Version, "name", m.Name, "driver", s.d.name)
	}
	return nil
}

func appliedVersions(ctx context.Context, q queryer) (map[int64]time.Time, error) {
	r, err := q.query(ctx, "SELECT version, applied_at FROM schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	defer r.Close()
	out := map[int64]time.Time{}
	for r.Next() {
		var v int64
		var at time.Time
		if err := r.Scan(&v, tsScan{&at}); err != nil {
			return nil, err
		}
		out[v] = at
	}
	return out, r.Err()
}

// MigrationStatus lists the known migrations and whether each is applied.
// Versions recorded in the database but unknown to this binary (a newer
// binary migrated) are listed too, with an empty name.
func (s *Store) MigrationStatus(ctx context.Context) (_ []Migration, err error) {
	defer s.observe("migration_status", &err)()
	ms, err := loadMigrations(s.d.name)
	if err != nil {
		return nil, err
	}
	var exists bool
	q := "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_name = 'schema_migrations')"
	if s.d.name == DriverSQLite {
		q = "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations')"
	}
	if err := s.db.queryRow(ctx, q).Scan(&exists); err != nil {
		return nil, s.wrap("migration status", err)
	}
	applied := map[int64]time.Time{}
	if exists {
		if applied, err = appliedVersions(ctx, s.db); err != nil {
			return nil, s.wrap("migration status", err)
		}
	}
	known := map[int64]bool{}
	for i := range ms {
		known[ms[i].Version] = true
		if at, ok := applied[ms[i].Version]; ok {
			ms[i].Applied, ms[i].AppliedAt = true, at
		}
		ms[i].sql = ""
	}
	for v, at := range applied {
		if !known[v] {
			ms = append(ms, Migration{Version: v, Applied: true, AppliedAt: at})
		}
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	return ms, nil
}
