package server_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/server"
)

// TestRestartOfCompletedReceive: a receive was recorded done but the
// requester never got its ACK(TRANS.END), and restarts. While the file is
// still under its temporary name (the crash came between the record and the
// rename, and the leader's sweep has not published it yet) the restart is
// refused with a temporary 2/201, so that the requester retries, and nothing
// is written. Once published, the restart confirms the file (its data
// resent from the sync point is compared with it) and ends done, under a
// record of its own: the completed one is not taken over. A file taken away
// since cannot be confirmed: 2/226, and nothing is written either.
func TestRestartOfCompletedReceive(t *testing.T) {
	e := newEnv(t, nil)
	data := randomData(100_000, 11)
	final := filepath.Join(e.recvDir, "TESTFILE")
	temp := filepath.Join(e.recvDir, ".TESTFILE.part")
	articles := (len(data) + 1023) / 1024
	p := dial(t, e.srv.Addr())
	p.connect()
	p.openForWrite(createOpts{file: "TESTFILE", pi13: 0x0031AA})
	pushArticles(t, p, data, 0) // SYN 1, 2 and 3
	p.sendKind(fpdu.DTFEnd, diagParam(fpdu.DiagOK))
	p.transEnd(len(data), articles)
	p.closeFile()
	p.release()
	done, _ := e.jnl.Last()
	if done.Outcome == nil || done.Outcome.Status != server.StatusDone {
		t.Fatalf("first transfer: %+v", done.Outcome)
	}

	restart := func() *peer {
		q := dial(t, e.srv.Addr())
		q.connect()
		q.raw(createFrame(q.srvID, createOpts{file: "TESTFILE", pi13: 0x0031AA, restart: true}))
		return q
	}
	// The crash between the record and the rename.
	if err := os.Rename(final, temp); err != nil {
		t.Fatal(err)
	}
	q := restart()
	q.expectDiag(fpdu.AckCreate, fpdu.DiagTemporaryNoResources)
	q.release()
	if got := files(t, e.recvDir); len(got) != 1 || got[0] != ".TESTFILE.part" {
		t.Fatalf("after the refused restart: %v", got)
	}

	// The sweep published it.
	if err := os.Rename(temp, final); err != nil {
		t.Fatal(err)
	}
	q = restart()
	q.expectDiag(fpdu.AckCreate, fpdu.DiagOK)
	q.sendKind(fpdu.ORF)
	q.expectDiag(fpdu.AckORF, fpdu.DiagOK)
	q.sendKind(fpdu.Write)
	if pt, _ := q.expectDiag(fpdu.AckWrite, fpdu.DiagOK).Params.Uint(fpdu.PIRestartPoint); pt != 3 {
		t.Fatalf("ACK(WRITE) PI 18 = %d, want 3", pt)
	}
	pushArticles(t, q, data[3*32768:], 3)
	q.sendKind(fpdu.DTFEnd, diagParam(fpdu.DiagOK))
	q.transEnd(len(data), articles)
	q.closeFile()
	q.release()
	if got, err := os.ReadFile(final); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the published file changed (%d bytes, %v)", len(got), err)
	}
	if got := files(t, e.recvDir); len(got) != 1 {
		t.Fatalf("after the restart: %v", got)
	}
	recs := e.jnl.Records()
	last := recs[len(recs)-1]
	if last.ID == done.ID || last.Transfer.RestartOf.ID != "" || last.Outcome == nil || last.Outcome.Status != server.StatusDone ||
		last.Outcome.SHA256 != done.Outcome.SHA256 {
		t.Fatalf("record of the restart %+v %+v, want one of its own, done with the file's SHA-256 %s", last.Transfer, last.Outcome, done.Outcome.SHA256)
	}
	if first := recs[0]; first.ID != done.ID || first.Superseded || first.Outcome.Status != server.StatusDone {
		t.Fatalf("the completed record changed: %+v", first)
	}

	// Taken away by whoever consumes the files.
	if err := os.Remove(final); err != nil {
		t.Fatal(err)
	}
	q = restart()
	q.expectDiag(fpdu.AckCreate, fpdu.DiagTransferRefused)
	q.release()
	if got := files(t, e.recvDir); len(got) != 0 {
		t.Fatalf("after the refused restart: %v", got)
	}
}

// TestClaimPath: the node's sweep claims a final path as a receiving session
// does. While it holds it a CREATE for that file gets 2/205; while a session
// receives into it the claim is refused.
func TestClaimPath(t *testing.T) {
	e := newEnv(t, nil)
	final := filepath.Join(e.recvDir, "TESTFILE")
	if !e.srv.ClaimPath(final) {
		t.Fatal("claim of a free path refused")
	}
	p := dial(t, e.srv.Addr())
	p.connect()
	p.raw(createFrame(p.srvID, createOpts{file: "TESTFILE", pi13: 0x0031AB}))
	p.expectDiag(fpdu.AckCreate, fpdu.DiagFileBusy)
	e.srv.ReleasePath(final)
	p.openForWrite(createOpts{file: "TESTFILE", pi13: 0x0031AC})
	if e.srv.ClaimPath(final) {
		t.Fatal("claim of a path a session receives into granted")
	}
	p.sendKind(fpdu.DTFEnd, diagParam(fpdu.DiagOK))
	p.transEnd(0, 0)
	p.closeFile()
	p.release()
	if !e.srv.ClaimPath(final) {
		t.Fatal("claim refused after the session ended")
	}
	e.srv.ReleasePath(final)
}
