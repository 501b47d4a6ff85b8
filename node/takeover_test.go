package node

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/internal/testenv/pgtest"
	"github.com/vectis-ft/vectis/pesit/client"
	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/store"
)

// TestOldSessionRefusedAfterTakeover: a push is running on a node when a
// newer term takes its transfer over (as a restart on a new leader does).
// From then on the old session's writes are refused: its next sync point
// fails (server.ErrTransferLost), it ends the transfer with IDT PI 19 = 4,
// records nothing and leaves the partial file as it is.
// The record stays as the new owner left it, and the partial file still
// holds, up to the sync point the new owner resumes from, the source's bytes.
func TestOldSessionRefusedAfterTakeover(t *testing.T) {
	const (
		size = 6 << 20
		rate = 2 << 20
	)
	dir := t.TempDir()
	url := pgtest.Start(t)
	cfg := baseConfig(t, dir, "old")
	cfg.Store.Driver = "postgres"
	cfg.Store.URL = url
	n := startNode(t, cfg)
	svc := newServiceProxy(t, rate, n.pesit)
	src, _ := randomFile(t, dir, size)
	srcBytes, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}

	ctx := context.Background()
	newer, err := store.Open(ctx, store.Config{Driver: store.DriverPostgres, URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer newer.Close()

	pushErr := make(chan error, 1)
	third := make(chan struct{})
	var once bool
	go func() {
		_, err := client.Push(ctx, clientConfig(svc.addr(), "CXCLIENT", "test123"), client.SendRequest{
			Source: src, VirtualFile: "INBOX", StateDir: dir,
			Progress: func(p client.Progress) {
				if p.Bytes >= size/3 && !once {
					once = true
					close(third)
				}
			},
		}, client.Retry{})
		pushErr <- err
	}()
	select {
	case <-third:
	case err := <-pushErr:
		t.Fatalf("push ended early: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("push made no progress")
	}
	recs := listTransfers(t, n, "?status=in_progress")
	if len(recs) != 1 {
		t.Fatalf("in-progress records %+v, want one", recs)
	}
	id, oldEpoch := recs[0].ID, recs[0].Epoch

	// The newer term: claim, then take the transfer over.
	if err := newer.ClaimLeadership(ctx, oldEpoch+1, "new"); err != nil {
		t.Fatal(err)
	}
	taken, err := newer.TakeOverTransfer(ctx, oldEpoch+1, "new", id, oldEpoch)
	if err != nil {
		t.Fatalf("take over: %v", err)
	}
	if taken.SyncPoint.Number == 0 {
		t.Fatalf("taken over before any sync point: %+v", taken)
	}

	select {
	case err = <-pushErr:
	case <-time.After(30 * time.Second):
		t.Fatal("the old session went on after the takeover")
	}
	var te *client.TransferError
	if !errors.As(err, &te) {
		t.Fatalf("push after the takeover: %v, want the old session to end the transfer with a diagnostic", err)
	}
	t.Logf("old session ended with: %v", err)

	// The old session's writes were refused: the record is the new owner's.
	got, err := newer.GetTransfer(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if got.Node != "new" || got.Epoch != oldEpoch+1 || got.Status != store.StatusInProgress ||
		got.SyncPoint != taken.SyncPoint || got.RestartCount != 1 {
		t.Fatalf("record after the old session ended: %+v\nwant as taken over: %+v", got, taken)
	}
	testenv.Eventually(t, 5*time.Second, testenv.Awaiting("the old session's end in the log", func() bool {
		return strings.Contains(n.log.String(), "transfer finished")
	}))
	if !strings.Contains(n.log.String(), "transfer owned by a newer term") {
		t.Fatalf("the refusal is not logged as lost ownership:\n%s", n.log.String())
	}
	// The partial file still holds the source's bytes up to the new owner's
	// restart point, and nothing was delivered under the final name.
	part, err := os.ReadFile(got.TempPath)
	if err != nil {
		t.Fatalf("partial file: %v", err)
	}
	if int64(len(part)) < got.SyncPoint.Offset || !bytes.Equal(part[:got.SyncPoint.Offset], srcBytes[:got.SyncPoint.Offset]) {
		t.Fatalf("partial file (%d bytes) does not hold the source up to the restart point %d", len(part), got.SyncPoint.Offset)
	}
	if _, err := os.Stat(got.LocalPath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("final file %s exists (%v) though the transfer was taken over", got.LocalPath, err)
	}
}

// TestOldSendSessionEndedAfterTakeover: the same for a pull (this node
// sends): the refused sync point ends the session with IDT PI 19 = 4, and
// the record stays the new owner's.
func TestOldSendSessionEndedAfterTakeover(t *testing.T) {
	const (
		size = 6 << 20
		rate = 2 << 20
	)
	dir := t.TempDir()
	url := pgtest.Start(t)
	cfg := baseConfig(t, dir, "old")
	cfg.Store.Driver = "postgres"
	cfg.Store.URL = url
	n := startNode(t, cfg)
	svc := startServiceProxy(t, &serviceProxy{backends: []string{n.pesit}, rate: rate, down: true})
	src, _ := randomFile(t, dir, size)
	if err := os.MkdirAll(filepath.Join(dir, "out"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(src, filepath.Join(dir, "out", "OUTBOX")); err != nil {
		t.Fatal(err)
	}

	ctx := context.Background()
	newer, err := store.Open(ctx, store.Config{Driver: store.DriverPostgres, URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer newer.Close()

	pullErr := make(chan error, 1)
	third := make(chan struct{})
	var once bool
	go func() {
		_, err := client.Pull(ctx, clientConfig(svc.addr(), "CXCLIENT", "test123"), client.ReceiveRequest{
			VirtualFile: "OUTBOX", Dest: filepath.Join(dir, "pulled.bin"), StateDir: dir,
			Progress: func(p client.Progress) {
				if p.Bytes >= size/3 && !once {
					once = true
					close(third)
				}
			},
		}, client.Retry{})
		pullErr <- err
	}()
	select {
	case <-third:
	case err := <-pullErr:
		t.Fatalf("pull ended early: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("pull made no progress")
	}
	recs := listTransfers(t, n, "?status=in_progress")
	if len(recs) != 1 {
		t.Fatalf("in-progress records %+v, want one", recs)
	}
	id, oldEpoch := recs[0].ID, recs[0].Epoch
	if err := newer.ClaimLeadership(ctx, oldEpoch+1, "new"); err != nil {
		t.Fatal(err)
	}
	taken, err := newer.TakeOverTransfer(ctx, oldEpoch+1, "new", id, oldEpoch)
	if err != nil {
		t.Fatalf("take over: %v", err)
	}
	select {
	case err = <-pullErr:
	case <-time.After(30 * time.Second):
		t.Fatal("the old send session went on after the takeover")
	}
	var te *client.TransferError
	if !errors.As(err, &te) {
		t.Fatalf("pull after the takeover: %v, want the old session to end the transfer with a diagnostic", err)
	}
	t.Logf("old send session ended with: %v", err)
	got, err := newer.GetTransfer(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if got.Node != "new" || got.Epoch != oldEpoch+1 || got.Status != store.StatusInProgress ||
		got.SyncPoint != taken.SyncPoint {
		t.Fatalf("record after the old session ended: %+v\nwant as taken over: %+v", got, taken)
	}
	if te.Op != fpdu.IDT || te.EndCode != 4 {
		t.Fatalf("old send session ended with %v, want IDT with PI 19 = 4", err)
	}
	if !strings.Contains(n.log.String(), "transfer owned by a newer term") {
		t.Fatalf("the refusal is not logged as lost ownership:\n%s", n.log.String())
	}
}
