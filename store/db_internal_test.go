package store

import (
	"context"
	"database/sql/driver"
	"path/filepath"
	"testing"
)

// TestDeferredStatementsPreparedOnce: the deferred record of a sync point
// prepares its statements once on the writer's connection and reuses
// them; once database/sql has given that connection up, the next record
// prepares them again on the new one. Each record reaches the store.
func TestDeferredStatementsPreparedOnce(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, Config{Path: filepath.Join(t.TempDir(), "vectis.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.ClaimLeadership(ctx, 1, "test"); err != nil {
		t.Fatal(err)
	}
	tr, err := s.CreateTransfer(ctx, 1, Transfer{ServerID: "PESITSRV", PartnerID: "P", FileID: "INBOX", Direction: DirReceive,
		PesitID: 1, LocalPath: "/data/in/x", TempPath: "/data/in/.x.part", Node: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	p := s.db.(sqlDB).deferred
	prepared := func() (any, map[string]driver.Stmt) {
		p.mu.Lock()
		defer p.mu.Unlock()
		m := make(map[string]driver.Stmt, len(p.stmts))
		for q, st := range p.stmts {
			m[q] = st
		}
		return p.conn, m
	}
	record := func(ctx context.Context, n int64) error {
		return s.RecordSyncPointDeferred(ctx, 1, tr.ID, SyncPoint{Number: n, Offset: n << 20, Articles: n})
	}
	check := func(n int64) {
		t.Helper()
		got, err := s.GetTransfer(ctx, tr.ID)
		if err != nil || got.SyncPoint.Number != n || got.SyncPoint.Offset != n<<20 {
			t.Fatalf("after point %d the store holds %+v (%v)", n, got.SyncPoint, err)
		}
	}
	if err := record(ctx, 1); err != nil {
		t.Fatal(err)
	}
	conn1, first := prepared()
	if len(first) != 3 {
		t.Fatalf("%d statements prepared, want the 3 of a deferred record", len(first))
	}
	for n := int64(2); n <= 5; n++ {
		if err := record(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	check(5)
	conn, again := prepared()
	for q, st := range first {
		if conn != conn1 || again[q] != st {
			t.Fatalf("statement %q prepared again on the same connection", q)
		}
	}

	// What a failed PRAGMA makes execDeferred do: the connection goes.
	c, err := s.db.(sqlDB).db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := closeLax(c); err != nil {
		t.Fatal(err)
	}
	if err := record(ctx, 7); err != nil {
		t.Fatal(err)
	}
	check(7)
	if conn, m := prepared(); conn == conn1 || len(m) != 3 {
		t.Fatalf("the next record ran on the connection given up (%v) or prepared %d statements", conn == conn1, len(m))
	}
}
