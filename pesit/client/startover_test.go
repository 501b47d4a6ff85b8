package client

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// TestRefusedRestartNeverStartsOverSilently is the client half of issue 16
// defect 7: a push whose restart the server refuses (2/204: it may hold the
// file already) fails with a RestartRefusedError, keeps its restart state
// and sends no new CREATE, where it used to start over under a new random
// transfer id and deliver a second copy. Restart state of another transfer
// id than the one asked for is refused the same way. Only StartOver sends
// the file again, under the transfer id asked for, and says so in
// Result.Abandoned.
func TestRefusedRestartNeverStartsOverSilently(t *testing.T) {
	const size = 1 << 20
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := newRawServer(t, 64, 2)
	proxy := newCutProxy(t, srv.addr(), size/2)
	local := t.TempDir()
	src := writeRandom(t, local, "f.bin", size, 21)
	state := filepath.Join(local, "state")
	cut, direct := rawConfig(proxy.addr()), rawConfig(srv.addr())
	for _, c := range []*Config{&cut, &direct} {
		c.SyncIntervalKB, c.SyncWindow = 64, 2
	}
	const id = 0x1234
	req := SendRequest{Source: src, VirtualFile: "f.bin", TransferID: id, StateDir: state, ArticleLength: 4096}
	if _, err := Push(ctx, cut, req, Retry{}); err == nil || !Retryable(err) {
		t.Fatalf("first attempt through the cutting proxy: %v, want a retryable failure", err)
	}
	stateFiles := func() int {
		m, _ := filepath.Glob(filepath.Join(state, "*.json"))
		return len(m)
	}
	if stateFiles() != 1 {
		t.Fatal("no restart state after the cut")
	}
	fresh := srv.freshCreates.Load()

	srv.refuseRestartCreate.Store(uint32(fpdu.DiagFileExists))
	res, err := Push(ctx, direct, req, Retry{Retries: 2, Backoff: 10 * time.Millisecond})
	var rr *RestartRefusedError
	if !errors.As(err, &rr) || rr.TransferID != id || rr.Diagnostic != fpdu.DiagFileExists {
		t.Fatalf("push after a refused restart: %v (%+v), want a RestartRefusedError for transfer %d with 2/204", err, res, id)
	}
	if Retryable(err) || res.Attempts != 1 {
		t.Errorf("a refused restart was retried (%d attempts)", res.Attempts)
	}
	if n := srv.freshCreates.Load(); n != fresh {
		t.Fatalf("%d new CREATEs after the refused restart: the client started over on its own", n-fresh)
	}
	if stateFiles() != 1 {
		t.Fatal("the restart state was dropped")
	}

	other := req
	other.TransferID = 0x4321
	_, err = Push(ctx, direct, other, Retry{})
	if !errors.As(err, &rr) || rr.TransferID != id || rr.Requested != 0x4321 || rr.Diagnostic != 0 {
		t.Fatalf("push with another --transfer-id over restart state: %v, want a RestartRefusedError", err)
	}
	if n := srv.freshCreates.Load(); n != fresh {
		t.Fatal("a push with another transfer id started over on its own")
	}

	startOver := req
	startOver.StartOver = true
	res, err = Push(ctx, direct, startOver, Retry{})
	if err != nil {
		t.Fatalf("push with StartOver: %v", err)
	}
	if res.Restarted || res.Abandoned != id || res.TransferID != id {
		t.Fatalf("StartOver result %+v: want a fresh transfer %d reporting the abandoned one", res, id)
	}
	sameFile(t, src, filepath.Join(srv.dir, "f.bin"))
	if stateFiles() != 0 {
		t.Fatal("restart state left after success")
	}
}

// TestTemporaryTransEndFailureRestarts: a server that answers ACK(TRANS.END)
// with a temporary failure (2/215: its journal could not record the end,
// issue 16 defect 6) keeps the transfer restartable; the retry must restart
// it under the same PI 13, which a server that published the file already
// recognises as done (defect 7), not start over under a new one.
func TestTemporaryTransEndFailureRestarts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := newRawServer(t, 64, 2)
	srv.failTransEnd.Store(1)
	local := t.TempDir()
	src := writeRandom(t, local, "g.bin", 300_000, 22)
	cfg := rawConfig(srv.addr())
	cfg.SyncIntervalKB, cfg.SyncWindow = 64, 2
	req := SendRequest{Source: src, VirtualFile: "g.bin", TransferID: 0x777, StateDir: filepath.Join(local, "state"), ArticleLength: 4096}
	res, err := Push(ctx, cfg, req, Retry{Retries: 1, Backoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatalf("push: %v", err)
	}
	if res.Attempts != 2 || !res.Restarted || res.TransferID != 0x777 || srv.freshCreates.Load() != 1 {
		t.Fatalf("result %+v, %d new CREATEs: want the second attempt to restart transfer 0x777", res, srv.freshCreates.Load())
	}
	sameFile(t, src, filepath.Join(srv.dir, "g.bin"))
}
