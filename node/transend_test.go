package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/internal/testenv/pgtest"
	"github.com/vectis-ft/vectis/pesit/client"
	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/store"
)

// TestTransEndWithDatabaseDown (issue 16, defect 6), on a real PostgreSQL
// stopped between the push's last sync point and its TRANS.END: the node
// retries the finish for Tp, then answers IDT 2/215 with PI 19 = 4 instead of
// ACK(TRANS.END), and publishes nothing. Once PostgreSQL is back, the sweep
// records the transfer interrupted at its last sync point (it no longer
// stays in_progress), and the partner's restart completes it from there.
func TestTransEndWithDatabaseDown(t *testing.T) {
	const (
		size = 3<<20 + 768<<10 // sync points at 1, 2 and 3 MiB, then 768 KiB
		rate = 1 << 20
	)
	dir := t.TempDir()
	pg := pgtest.NewServer(t)
	url := pg.NewDatabase(t)
	cfg := baseConfig(t, dir, "solo")
	cfg.Store.Driver = "postgres"
	cfg.Store.URL = url
	cfg.PeSIT.Timers.Inactivity = 2 * time.Second // Tp: how long the finish is retried
	cfg.Cluster.TTL = 2 * time.Second             // the sweeps' period
	n := startNode(t, cfg)
	svc := newServiceProxy(t, rate, n.pesit)
	src, sum := randomFile(t, dir, size)

	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{Driver: store.DriverPostgres, URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	ccfg := clientConfig(svc.addr(), "CXCLIENT", "test123")
	ccfg.SyncIntervalKB = 1024
	tail := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	pushErr := make(chan error, 1)
	go func() {
		_, err := client.Push(ctx, ccfg, client.SendRequest{
			Source: src, VirtualFile: "INBOX", StateDir: dir,
			Progress: func(p client.Progress) {
				if p.Bytes >= 3<<20+128<<10 {
					// Hold the push past its last sync point while the
					// database goes down.
					once.Do(func() { close(tail); <-release })
				}
			},
		}, client.Retry{})
		pushErr <- err
	}()
	select {
	case <-tail:
	case err := <-pushErr:
		t.Fatalf("push ended early: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("push made no progress")
	}
	var rec store.Transfer
	testenv.Eventually(t, 15*time.Second, testenv.Awaiting("sync point 3 recorded", func() bool {
		page, err := st.ListTransfers(ctx, store.TransferFilter{})
		if err != nil || len(page.Items) != 1 {
			return false
		}
		rec = page.Items[0]
		return rec.SyncPoint.Number == 3
	}))
	pg.Stop(t)
	close(release)

	select {
	case err = <-pushErr:
	case <-time.After(30 * time.Second):
		t.Fatal("push did not end")
	}
	var te *client.TransferError
	if !errors.As(err, &te) || te.Op != fpdu.IDT || te.EndCode != 4 || te.Diagnostic != fpdu.DiagSystemError {
		t.Fatalf("push with the database down at TRANS.END: %v, want IDT 2/215 with PI 19 = 4", err)
	}
	if !client.Retryable(err) {
		t.Fatalf("%v is not retryable for the client", err)
	}
	final := filepath.Join(dir, "in", "CXCLIENT", fmt.Sprintf("INBOX-%d", rec.PesitID))
	if _, err := os.Stat(final); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("final file %s exists (%v) though its end was not recorded", final, err)
	}

	pg.Start(t)
	testenv.Eventually(t, 30*time.Second, testenv.Awaiting("the unrecorded transfer marked interrupted", func() bool {
		got, err := st.GetTransfer(ctx, rec.ID)
		if err == nil {
			rec = got
		}
		return err == nil && got.Status == store.StatusInterrupted
	}))
	if rec.SyncPoint.Number != 3 || rec.SyncPoint.Offset != 3<<20 {
		t.Fatalf("record %+v, want sync point 3 at 3 MiB kept", rec)
	}

	res, err := client.Push(ctx, ccfg, client.SendRequest{Source: src, VirtualFile: "INBOX", StateDir: dir}, client.Retry{})
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	if !res.Restarted || res.RestartPoint != 3 {
		t.Fatalf("restart %+v, want resumed from sync point 3", res)
	}
	if fileSHA(t, final) != sum {
		t.Fatal("delivered file differs from the source")
	}
	got, err := st.GetTransfer(ctx, rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != store.StatusCompleted || got.SHA256 != sum || got.RestartCount != 1 {
		t.Fatalf("record after the restart %+v, want completed with one restart", got)
	}
}
