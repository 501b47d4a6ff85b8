package pgtest_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/vectis-ft/vectis/internal/testenv/pgtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Shutdown()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			code = 1
			println("goleak:", err.Error())
		}
	}
	os.Exit(code)
}

func exec(t *testing.T, url, sql string, args ...any) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, sql, args...)
	return err
}

// Each Start gives an isolated database on the shared server.
func TestStartIsolatesDatabases(t *testing.T) {
	a, b := pgtest.Start(t), pgtest.Start(t)
	if a == b {
		t.Fatal("two tests got the same database")
	}
	if err := exec(t, a, "CREATE TABLE x (i int)"); err != nil {
		t.Fatal(err)
	}
	if err := exec(t, b, "CREATE TABLE x (i int)"); err != nil {
		t.Fatalf("databases are not isolated: %v", err)
	}
}

// A dedicated server keeps its data and port across Stop/Start and refuses
// connections while stopped.
func TestServerStopStart(t *testing.T) {
	srv := pgtest.NewServer(t)
	url := srv.NewDatabase(t)
	if err := exec(t, url, "CREATE TABLE kept (i int); INSERT INTO kept VALUES (7)"); err != nil {
		t.Fatal(err)
	}
	srv.Stop(t)
	if err := exec(t, url, "SELECT 1"); err == nil {
		t.Fatal("connected to a stopped server")
	}
	srv.Start(t)
	srv.Restart(t)
	ctx := context.Background()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var i int
	if err := c.QueryRow(ctx, "SELECT i FROM kept").Scan(&i); err != nil || i != 7 {
		t.Fatalf("data lost across restart: %d %v", i, err)
	}
}
