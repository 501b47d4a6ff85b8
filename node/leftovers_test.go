package node

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/store"
)

// seedInterrupted writes, before the node starts, an interrupted receive of
// a previous process with a partial file of size bytes: what a crash of
// both sides leaves behind.
func seedInterrupted(t *testing.T, path string, part string, size int) store.Transfer {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{Driver: store.DriverSQLite, Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	prev, err := st.Leadership(ctx)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	epoch := prev.Epoch + 1
	if err := st.ClaimLeadership(ctx, epoch, "crashed"); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(part), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(part, make([]byte, size), 0o600); err != nil {
		t.Fatal(err)
	}
	tr, err := st.CreateTransfer(ctx, epoch, store.Transfer{ServerID: "PESITSRV", PartnerID: "CXCLIENT", FileID: "INBOX",
		Direction: store.DirReceive, PesitID: int64(size), Node: "crashed", TempPath: part})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.FinishTransfer(ctx, epoch, tr.ID, store.TransferResult{Status: store.StatusInterrupted, Bytes: int64(size)}); err != nil {
		t.Fatal(err)
	}
	return tr
}

func transferOf(t *testing.T, n *testNode, id string) store.Transfer {
	t.Helper()
	code, body := n.do(t, "GET", "/api/v1/transfers/"+id, nil)
	if code != http.StatusOK {
		t.Fatalf("GET transfer %s: %d %s", id, code, body)
	}
	var tr store.Transfer
	if err := json.Unmarshal(body, &tr); err != nil {
		t.Fatal(err)
	}
	return tr
}

// TestInterruptedTransfersExpire: an interrupted transfer no restart
// resumed within store.interruptedExpiry fails with a diagnostic and its
// partial file is deleted (issue 16, defect 8).
func TestInterruptedTransfersExpire(t *testing.T) {
	dir := t.TempDir()
	cfg := baseConfig(t, dir, "expiry")
	cfg.Store.InterruptedExpiry = 200 * time.Millisecond
	part := filepath.Join(dir, "in", ".old.part")
	tr := seedInterrupted(t, filepath.Join(cfg.DataDir, "vectis.db"), part, 4096)
	// The clock gap under test: the record must be older than the expiry
	// when the node starts, because the leader expires leftovers at the
	// start of its term and then only hourly.
	time.Sleep(cfg.Store.InterruptedExpiry + 100*time.Millisecond)

	n := startNode(t, cfg)
	testenv.Eventually(t, 10*time.Second, testenv.Awaiting("the interrupted transfer to expire", func() bool {
		return transferOf(t, n, tr.ID).Status == store.StatusFailed
	}))
	got := transferOf(t, n, tr.ID)
	if got.Diagnostic == "" || got.FinishedAt.IsZero() {
		t.Fatalf("expired transfer %+v, want a diagnostic and a finish time", got)
	}
	if _, err := os.Stat(part); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("partial file after expiry: %v", err)
	}
}

// TestCancelInterruptedTransfer: cancel works on a transfer no session
// carries (it answered 409 before), deletes its partial file, and the
// partial-file gauge follows (issue 16, defect 8).
func TestCancelInterruptedTransfer(t *testing.T) {
	dir := t.TempDir()
	cfg := baseConfig(t, dir, "cancel")
	cfg.Cluster.TTL = time.Second // the sweep that measures partial files
	part := filepath.Join(dir, "in", ".left.part")
	tr := seedInterrupted(t, filepath.Join(cfg.DataDir, "vectis.db"), part, 12345)

	n := startNode(t, cfg)
	testenv.Eventually(t, 10*time.Second, testenv.Awaiting("vectis_transfer_partial_bytes to count the partial file", func() bool {
		return value(scrape(t, n.api), "vectis_transfer_partial_bytes", nil) == 12345
	}))
	code, body := n.do(t, "POST", "/api/v1/transfers/"+tr.ID+"/cancel", nil)
	if code != http.StatusOK {
		t.Fatalf("cancel of an interrupted transfer: %d %s", code, body)
	}
	if got := transferOf(t, n, tr.ID); got.Status != store.StatusCancelled {
		t.Fatalf("after cancel: %+v", got)
	}
	if _, err := os.Stat(part); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("partial file after cancel: %v", err)
	}
	testenv.Eventually(t, 10*time.Second, testenv.Awaiting("vectis_transfer_partial_bytes back to 0", func() bool {
		return value(scrape(t, n.api), "vectis_transfer_partial_bytes", nil) == 0
	}))
	// A second cancel is a conflict: the transfer is final.
	if code, body := n.do(t, "POST", "/api/v1/transfers/"+tr.ID+"/cancel", nil); code != http.StatusConflict {
		t.Fatalf("second cancel: %d %s", code, body)
	}
}
