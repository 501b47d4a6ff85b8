package server_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// TestRestartNumberingFromOne: after a restart from point p the requester
// may number its sync points from 1 again, which the state machine accepts
// (fsm.SyncWindow.Syn) and the server follows: such a point is made durable
// and acknowledged, and a second restart resumes from it, at its offset in
// the file, not from the higher number of the first attempt.
func TestRestartNumberingFromOne(t *testing.T) {
	e := newEnv(t, nil)
	data := randomData(200_000, 11)
	const pi13 = 0x0024CB
	restart := func() *peer {
		waitFor(t, "session end", func() bool { return e.srv.ActiveSessions() == 0 })
		q := dial(t, e.srv.Addr())
		q.connect()
		q.raw(createFrame(q.srvID, createOpts{file: "TESTFILE", pi13: pi13, restart: true}))
		q.expectDiag(fpdu.AckCreate, fpdu.DiagOK)
		q.sendKind(fpdu.ORF)
		q.expectDiag(fpdu.AckORF, fpdu.DiagOK)
		q.sendKind(fpdu.Write)
		return q
	}
	point := func(q *peer) uint64 {
		pt, _ := q.expectDiag(fpdu.AckWrite, fpdu.DiagOK).Params.Uint(fpdu.PIRestartPoint)
		return pt
	}

	p := dial(t, e.srv.Addr())
	p.connect()
	p.openForWrite(createOpts{file: "TESTFILE", pi13: pi13})
	pushArticles(t, p, data[:65536+10240], 0) // points 1 and 2, at 32 and 64 KiB
	p.c.Close()

	q := restart()
	if pt := point(q); pt != 2 {
		t.Fatalf("first restart from point %d, want 2", pt)
	}
	pushArticles(t, q, data[65536:65536+32768+10240], 0) // point 1 again, at 96 KiB
	q.c.Close()

	r := restart()
	if pt := point(r); pt != 1 {
		t.Fatalf("second restart from point %d, want 1 (the last one acknowledged)", pt)
	}
	pushArticles(t, r, data[65536+32768:], 1)
	r.sendKind(fpdu.DTFEnd, diagParam(fpdu.DiagOK))
	r.transEnd(len(data), (len(data)+1023)/1024)
	r.closeFile()
	r.release()
	got, err := os.ReadFile(filepath.Join(e.recvDir, "TESTFILE"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("file after two restarts differs (%d bytes, %v)", len(got), err)
	}
}
