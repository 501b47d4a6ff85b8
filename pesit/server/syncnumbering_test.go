package server_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// TestRestartRenumberedRefused: after a restart from point p the server's
// state machine, the one authority on sync numbering, takes p+1 only; a
// SYN 1 is ABORT 3/318 (docs/interop.md: the journal names restart points
// by number, and a later "point 1" would not say which). The transfer stays
// resumable, and a restart that numbers on from its point completes it.
func TestRestartRenumberedRefused(t *testing.T) {
	e := newEnv(t, nil)
	data := randomData(200_000, 11)
	const pi13 = 0x0024CB
	restart := func() (*peer, uint64) {
		testenv.Eventually(t, 5*time.Second, testenv.Awaiting("session end", func() bool { return e.srv.ActiveSessions() == 0 }))
		q := dial(t, e.srv.Addr())
		q.connect()
		q.raw(createFrame(q.srvID, createOpts{file: "TESTFILE", pi13: pi13, restart: true}))
		q.expectDiag(fpdu.AckCreate, fpdu.DiagOK)
		q.sendKind(fpdu.ORF)
		q.expectDiag(fpdu.AckORF, fpdu.DiagOK)
		q.sendKind(fpdu.Write)
		pt, _ := q.expectDiag(fpdu.AckWrite, fpdu.DiagOK).Params.Uint(fpdu.PIRestartPoint)
		return q, pt
	}

	p := dial(t, e.srv.Addr())
	p.connect()
	p.openForWrite(createOpts{file: "TESTFILE", pi13: pi13})
	pushArticles(t, p, data[:65536+10240], 0) // points 1 and 2, at 32 and 64 KiB
	p.c.Close()

	q, pt := restart()
	if pt != 2 {
		t.Fatalf("restart from point %d, want 2", pt)
	}
	for off := 65536; off < 65536+32768; off += 1024 {
		q.send(&fpdu.FPDU{Kind: fpdu.DTF, DstID: q.srvID, Data: data[off : off+1024]})
	}
	q.sendKind(fpdu.Syn, uintParam(fpdu.PISyncNumber, 1))
	q.expectDiag(fpdu.Abort, fpdu.DiagBadParameter)
	testenv.Eventually(t, 5*time.Second, testenv.Awaiting("the machine's refusal in the log", func() bool {
		return strings.Contains(e.logs.String(), "pesit responder in TDE02B: SYN received")
	}))

	// The refused attempt journaled no point of its own: the journal
	// (memjournal keeps the points per attempt) says where to resume.
	r, pt := restart()
	if pt != 0 && pt != 2 {
		t.Fatalf("restart after the refusal from point %d, want 2 or 0", pt)
	}
	pushArticles(t, r, data[pt*32768:], pt)
	r.sendKind(fpdu.DTFEnd, diagParam(fpdu.DiagOK))
	r.transEnd(len(data), (len(data)+1023)/1024)
	r.closeFile()
	r.release()
	got, err := os.ReadFile(filepath.Join(e.recvDir, "TESTFILE"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("file after the refused renumbering and a restart differs (%d bytes, %v)", len(got), err)
	}
}
