package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/internal/testenv/pgtest"
	"github.com/vectis-ft/vectis/store"
	"github.com/vectis-ft/vectis/store/storetest"
)

// helperEnv makes the test binary act as one migrating process (see
// TestMigrateConcurrentProcesses): VECTIS_STORE_MIGRATE_HELPER=driver|target|startUnixNano.
const helperEnv = "VECTIS_STORE_MIGRATE_HELPER"

func TestMain(m *testing.M) {
	if v := os.Getenv(helperEnv); v != "" {
		os.Exit(migrateHelper(v))
	}
	code := m.Run()
	pgtest.Shutdown()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func migrateHelper(v string) int {
	var driver, target string
	var start int64
	if _, err := fmt.Sscanf(v, "%s %s %d", &driver, &target, &start); err != nil {
		fmt.Fprintln(os.Stderr, "bad helper spec:", err)
		return 2
	}
	// Start together, to make the race real: the helpers meet at an
	// instant, as processes on different pods would; the sleep is the
	// start line of the race under test.
	time.Sleep(time.Until(time.Unix(0, start)))
	cfg := store.Config{Driver: driver, URL: target, Path: target}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := store.Open(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		return 1
	}
	defer s.Close()
	ms, err := s.MigrationStatus(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "status:", err)
		return 1
	}
	for _, m := range ms {
		if !m.Applied {
			fmt.Fprintln(os.Stderr, "not applied:", m.Name)
			return 1
		}
	}
	return 0
}

func sqliteConfig(t testing.TB) store.Config {
	return store.Config{Driver: store.DriverSQLite, Path: filepath.Join(t.TempDir(), "vectis.db")}
}

func postgresConfig(t testing.TB) store.Config {
	return store.Config{Driver: store.DriverPostgres, URL: pgtest.Start(t), ConnectTimeout: 5 * time.Second}
}

func TestSQLite(t *testing.T) {
	storetest.Run(t, sqliteConfig)
}

func TestPostgres(t *testing.T) {
	storetest.Run(t, postgresConfig)
}

// TestMigrateConcurrentProcesses starts three processes that open (and so
// migrate) the same empty database at the same instant. All must succeed and
// the version table must hold exactly one row per migration.
func TestMigrateConcurrentProcesses(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  func(t testing.TB) store.Config
	}{{"postgres", postgresConfig}, {"sqlite", sqliteConfig}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg(t)
			target := cfg.URL
			if cfg.Driver == store.DriverSQLite {
				target = cfg.Path
			}
			start := time.Now().Add(500 * time.Millisecond).UnixNano()
			var wg sync.WaitGroup
			outs := make([][]byte, 3)
			errs := make([]error, 3)
			for i := range 3 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					cmd := exec.Command(os.Args[0], "-test.run=^$")
					cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %d", helperEnv, cfg.Driver, target, start))
					outs[i], errs[i] = cmd.CombinedOutput()
				}()
			}
			wg.Wait()
			for i := range 3 {
				if errs[i] != nil {
					t.Errorf("process %d: %v\n%s", i, errs[i], outs[i])
				}
			}
			ms := migrationsOf(t, cfg)
			var rows, distinct int
			q := "SELECT count(*), count(DISTINCT version) FROM schema_migrations"
			if cfg.Driver == store.DriverPostgres {
				c, err := pgx.Connect(context.Background(), cfg.URL)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close(context.Background())
				err = c.QueryRow(context.Background(), q).Scan(&rows, &distinct)
				if err != nil {
					t.Fatal(err)
				}
			} else {
				db, err := sql.Open("sqlite", cfg.Path)
				if err != nil {
					t.Fatal(err)
				}
				defer db.Close()
				if err := db.QueryRow(q).Scan(&rows, &distinct); err != nil {
					t.Fatal(err)
				}
			}
			if rows != len(ms) || distinct != len(ms) {
				t.Fatalf("schema_migrations has %d rows (%d distinct), want %d", rows, distinct, len(ms))
			}
		})
	}
}

func migrationsOf(t *testing.T, cfg store.Config) []store.Migration {
	cfg.SkipMigrate = true
	s := storetest.Open(t, cfg)
	ms, err := s.MigrationStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if !m.Applied {
			t.Fatalf("migration %s not applied", m.Name)
		}
	}
	return ms
}

func TestMigrationStatusOnEmptyDatabase(t *testing.T) {
	cfg := sqliteConfig(t)
	cfg.SkipMigrate = true
	s := storetest.Open(t, cfg)
	ms, err := s.MigrationStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 || ms[0].Applied {
		t.Fatalf("fresh database status %+v", ms)
	}
	if _, err := s.ListPartners(context.Background()); err == nil {
		t.Fatal("query on an unmigrated database succeeded")
	}
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ListPartners(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestPostgresRestartUnderLoad keeps writers busy while PostgreSQL is
// restarted and then stopped for a while: errors during the outage must be
// ErrUnavailable, the pool must recover without reopening the store, and every
// write that returned nil must be there afterwards.
func TestPostgresRestartUnderLoad(t *testing.T) {
	srv := pgtest.NewServer(t)
	url := srv.NewDatabase(t)
	ctx := context.Background()
	s := storetest.Open(t, store.Config{URL: url, ConnectTimeout: time.Second, MaxConns: 8})
	if err := s.ClaimLeadership(ctx, 1, "node-a"); err != nil {
		t.Fatal(err)
	}
	subCtx, cancelSub := context.WithCancel(ctx)
	defer cancelSub()
	changes := s.Subscribe(subCtx)
	const writers = 6
	type acked struct {
		ids      []string         // transfers whose create returned nil
		lastSync map[string]int64 // last sync point number acknowledged per transfer
	}
	results := make([]acked, writers)
	var unavailable, otherErrs, acks atomic.Int64
	var otherMu sync.Mutex
	var others []error
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := acked{lastSync: map[string]int64{}}
			defer func() { results[w] = res }()
			var cur string
			var n int64
			for i := 0; i < 100000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				opCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
				var err error
				if cur == "" || i%5 == 0 {
					var tr store.Transfer
					tr, err = s.CreateTransfer(opCtx, 1, storetest.SampleTransfer(fmt.Sprintf("W%d", w), int64(i)))
					if err == nil {
						res.ids = append(res.ids, tr.ID)
						cur, n = tr.ID, 0
					}
				} else {
					n++
					err = s.RecordSyncPoint(opCtx, 1, cur, store.SyncPoint{Number: n, Offset: n * 4096, Articles: n})
					if err == nil {
						res.lastSync[cur] = n
					}
				}
				cancel()
				switch {
				case err == nil:
					acks.Add(1)
				case errors.Is(err, store.ErrUnavailable):
					unavailable.Add(1)
					backOff(stop)
				default:
					otherErrs.Add(1)
					otherMu.Lock()
					others = append(others, err)
					otherMu.Unlock()
					backOff(stop)
				}
			}
		}()
	}
	// Each phase lasts until the writers have shown it, not for a time:
	// acknowledged writes before and after the restart, refusals during
	// the outage.
	moreAcks := func(than, by int64) func() error {
		return func() error {
			if n := acks.Load(); n < than+by {
				return fmt.Errorf("%d acknowledged writes, waiting for %d", n, than+by)
			}
			return nil
		}
	}
	testenv.Eventually(t, 30*time.Second, moreAcks(0, 3*writers))
	srv.Restart(t) // fast shutdown + start: every pooled connection breaks
	testenv.Eventually(t, 30*time.Second, moreAcks(acks.Load(), 3*writers))
	srv.Stop(t) // a real outage: connection refused for a while
	atStop := unavailable.Load()
	testenv.Eventually(t, 30*time.Second, func() error {
		if n := unavailable.Load() - atStop; n < 3*writers {
			return fmt.Errorf("%d ErrUnavailable results since the stop, waiting for %d", n, 3*writers)
		}
		return nil
	})
	downErrs := unavailable.Load()
	// Forget what the listener said about the first restart: the resync
	// awaited below must be the one that follows this Start.
	for drained := false; !drained; {
		select {
		case <-changes:
		case <-time.After(200 * time.Millisecond):
			drained = true
		}
	}
	srv.Start(t)
	// The pool must recover by itself.
	testenv.Eventually(t, 15*time.Second, func() error {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return s.Ping(pctx)
	})
	// Writers keep going on the recovered pool.
	testenv.Eventually(t, 30*time.Second, moreAcks(acks.Load(), 3*writers))
	close(stop)
	wg.Wait()
	if len(others) > 0 {
		t.Fatalf("%d errors during the outage were not ErrUnavailable, e.g. %v", len(others), others[0])
	}
	if downErrs == 0 {
		t.Fatal("no ErrUnavailable observed while PostgreSQL was down: the test did not exercise the outage")
	}
	var lost int
	for _, r := range results {
		for _, id := range r.ids {
			tr, err := s.GetTransfer(ctx, id)
			if err != nil {
				t.Errorf("acknowledged transfer %s: %v", id, err)
				lost++
				continue
			}
			if want := r.lastSync[id]; tr.SyncPoint.Number < want {
				t.Errorf("transfer %s: sync point %d, acknowledged %d", id, tr.SyncPoint.Number, want)
				lost++
			}
		}
	}
	// The LISTEN connection reconnected: subscribers are told to resync, and
	// changes flow again.
	if !waitForChange(changes, store.Change{Kind: store.KindAll, Op: store.OpResync}, 15*time.Second) {
		t.Fatal("no resync notification after the listener reconnected")
	}
	if _, err := s.CreateFile(ctx, storetest.SampleFile("AFTER")); err != nil {
		t.Fatal(err)
	}
	if !waitForChange(changes, store.Change{Kind: store.KindFile, ID: "AFTER", Op: store.OpCreate}, 15*time.Second) {
		t.Fatal("change made after the outage not delivered")
	}
	t.Logf("acknowledged writes: %d, ErrUnavailable results: %d (%d by the end of the outage), lost: %d",
		acks.Load(), unavailable.Load(), downErrs, lost)
}

// backOff paces a writer that just failed, so that an outage is not a busy
// loop; it returns early when the writers are told to stop.
func backOff(stop <-chan struct{}) {
	select {
	case <-stop:
	case <-time.After(20 * time.Millisecond):
	}
}

// waitForChange reads changes until want arrives (true) or timeout passes.
func waitForChange(ch <-chan store.Change, want store.Change, timeout time.Duration) bool {
	deadline := time.After(timeout)
	for {
		select {
		case c, ok := <-ch:
			if !ok {
				return false
			}
			if c == want {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

// TestReadsBesideOpenWrite: a read outside a transaction proceeds while a
// write transaction is open. On SQLite it runs on the read pool; with the
// pool off (ReadConns < 0, one connection as before) the same read waits
// for the writer's connection, which the transaction holds: that half
// shows the test can fail.
func TestReadsBesideOpenWrite(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      func(t testing.TB) store.Config
		readPool bool
	}{
		{"sqlite", sqliteConfig, true},
		{"sqlite-no-pool", func(t testing.TB) store.Config {
			c := sqliteConfig(t)
			c.ReadConns = -1
			return c
		}, false},
		{"postgres", postgresConfig, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			s := storetest.Open(t, tc.cfg(t))
			if err := s.ClaimLeadership(ctx, 1, "node-a"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.CreateFile(ctx, storetest.SampleFile("INBOX")); err != nil {
				t.Fatal(err)
			}
			tr, err := s.CreateTransfer(ctx, 1, storetest.SampleTransfer("P", 1))
			if err != nil {
				t.Fatal(err)
			}
			wait := 5 * time.Second
			if !tc.readPool {
				wait = 300 * time.Millisecond
			}
			var readErr error
			// UpdateTransfer runs mutate inside its write transaction.
			_, err = s.UpdateTransfer(ctx, 1, tr.ID, func(cur *store.Transfer) error {
				rctx, cancel := context.WithTimeout(ctx, wait)
				defer cancel()
				_, readErr = s.GetFile(rctx, "INBOX")
				if readErr == nil {
					_, readErr = s.GetTransfer(rctx, tr.ID)
				}
				cur.Diagnostic = "read inside"
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.readPool && readErr != nil:
				t.Fatalf("read while a write transaction is open: %v", readErr)
			case !tc.readPool && !errors.Is(readErr, context.DeadlineExceeded):
				t.Fatalf("with one connection the read did not wait for the transaction: %v", readErr)
			}
		})
	}
}
