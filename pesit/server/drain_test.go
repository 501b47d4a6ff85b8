package server_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/server"
)

// pushKB sends n 1 KiB articles of data from offset off (in KiB).
func (p *peer) pushKB(data []byte, off, n int) {
	p.t.Helper()
	for i := off; i < off+n; i++ {
		p.send(&fpdu.FPDU{Kind: fpdu.DTF, DstID: p.srvID, Data: data[i<<10 : (i+1)<<10]})
	}
}

// syncAcked sends SYN n and waits for its ACK.
func (p *peer) syncAcked(n uint64) {
	p.t.Helper()
	p.sendKind(fpdu.Syn, uintParam(fpdu.PISyncNumber, n))
	if f := p.expect(fpdu.AckSyn); !f.Params.Has(fpdu.PISyncNumber) {
		p.t.Fatal("ACK(SYN) without PI 20")
	}
}

// endData sends DTF.END and TRANS.END for kb KiB in kb articles.
func (p *peer) endData(kb int) {
	p.t.Helper()
	p.sendKind(fpdu.DTFEnd, diagParam(fpdu.DiagOK))
	p.sendKind(fpdu.TransEnd, uintParam(fpdu.PIByteCount, uint64(kb<<10)), uintParam(fpdu.PIArticleCount, uint64(kb)))
}

func expectEndCode(t *testing.T, f *fpdu.FPDU, want uint64) {
	t.Helper()
	if c, _ := f.Params.Uint(fpdu.PIEndCode); c != want {
		t.Fatalf("IDT PI 19 = %d, want %d", c, want)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return fi.Size()
}

// TestShutdownDeadlineInterruptsWithIDT: a push still in its data phase at
// the drain deadline gets IDT 2/216 with PI 19 = 4, not ABORT. Once the
// partner answers ACK(IDT), its record is interrupted at its last
// acknowledged sync point, the partial file is cut back to that point and
// kept, and the restart the partner then asks for on this stopping server
// is refused with ABORT 3/316 (it belongs on the next leader).
func TestShutdownDeadlineInterruptsWithIDT(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.IDTTimeout = 2 * time.Second })
	p := dial(t, e.srv.Addr())
	p.connect()
	p.openForWrite(createOpts{file: "TESTFILE", pi13: 7})
	data := randomData(64<<10, 7)
	p.pushKB(data, 0, 32)
	p.syncAcked(1)
	p.pushKB(data, 32, 10)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- e.srv.Shutdown(ctx) }()
	f := p.expectDiag(fpdu.IDT, fpdu.DiagVoluntaryStop)
	expectEndCode(t, f, 4)
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("IDT %v after the shutdown began, before the drain deadline", d)
	}
	p.sendKind(fpdu.AckIDT)
	testenv.Eventually(t, 5*time.Second, testenv.Awaiting("the interrupted outcome", func() bool {
		r, _ := e.jnl.Last()
		return r.Outcome != nil
	}))
	r, _ := e.jnl.Last()
	if r.Outcome.Status != server.StatusInterrupted || r.Outcome.Bytes != 32<<10 {
		t.Fatalf("outcome %+v, want interrupted at the 32 KiB of sync point 1", r.Outcome)
	}
	if got := fileSize(t, r.Transfer.TempPath); got != 32<<10 {
		t.Fatalf("partial file holds %d bytes, want the 32 KiB of sync point 1", got)
	}
	// A resumption in place (new WRITE) is refused on a stopping server.
	p.sendKind(fpdu.Write)
	p.expectDiag(fpdu.Abort, fpdu.DiagAdministrativeStop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(e.recvDir, "TESTFILE")); err == nil {
		t.Fatal("file delivered")
	}
	if got := fileSize(t, r.Transfer.TempPath); got != 32<<10 {
		t.Fatalf("partial file holds %d bytes after the shutdown, want 32 KiB", got)
	}
}

// TestShutdownIDTUnanswered: a partner that does not answer the drain's IDT
// gets ABORT 3/316 IDTTimeout later; the record is interrupted all the same.
func TestShutdownIDTUnanswered(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.IDTTimeout = 300 * time.Millisecond })
	p := dial(t, e.srv.Addr())
	p.connect()
	p.openForWrite(createOpts{file: "TESTFILE", pi13: 8})
	data := randomData(64<<10, 8)
	p.pushKB(data, 0, 32)
	p.syncAcked(1)
	p.pushKB(data, 32, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- e.srv.Shutdown(ctx) }()
	expectEndCode(t, p.expectDiag(fpdu.IDT, fpdu.DiagVoluntaryStop), 4)
	p.expectDiag(fpdu.Abort, fpdu.DiagAdministrativeStop)
	if d := time.Since(start); d < 350*time.Millisecond {
		t.Fatalf("ABORT %v after the shutdown began, before deadline + IDTTimeout", d)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	r, _ := e.jnl.Last()
	if r.Outcome == nil || r.Outcome.Status != server.StatusInterrupted || r.Outcome.Bytes != 32<<10 {
		t.Fatalf("outcome %+v, want interrupted at sync point 1", r.Outcome)
	}
}

// TestTransEndNotAckedUntilRecorded (issue 16, defect 6): with the journal
// down at TRANS.END, the server retries the finish for Tp, then answers IDT
// 2/215 with PI 19 = 4 instead of ACK(TRANS.END). Nothing is published; the
// partial file keeps the last acknowledged sync point, and the partner's
// restart, once the journal is back, completes the transfer from there.
func TestTransEndNotAckedUntilRecorded(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.InactivityTimeout = time.Second })
	p := dial(t, e.srv.Addr())
	p.connect()
	p.openForWrite(createOpts{file: "TESTFILE", pi13: 9})
	data := randomData(48<<10, 9)
	p.pushKB(data, 0, 32)
	p.syncAcked(1)
	p.pushKB(data, 32, 16)
	e.jnl.FailFinishes(errors.New("database down"))
	start := time.Now()
	p.endData(48)
	f := p.expectDiag(fpdu.IDT, fpdu.DiagSystemError)
	expectEndCode(t, f, 4)
	if d := time.Since(start); d < 800*time.Millisecond {
		t.Fatalf("IDT after %v: the finish was not retried for Tp", d)
	}
	p.sendKind(fpdu.AckIDT)
	p.closeFile()
	final := filepath.Join(e.recvDir, "TESTFILE")
	if _, err := os.Stat(final); err == nil {
		t.Fatal("file published though its end was not recorded")
	}
	r, _ := e.jnl.Last()
	if r.Outcome != nil {
		t.Fatalf("outcome %+v recorded through a journal that was down", r.Outcome)
	}
	if got := fileSize(t, r.Transfer.TempPath); got != 32<<10 {
		t.Fatalf("partial file holds %d bytes, want the 32 KiB of sync point 1", got)
	}

	// The journal is back: the restart resumes from point 1 and completes.
	e.jnl.FailFinishes(nil)
	p.raw(createFrame(p.srvID, createOpts{file: "TESTFILE", pi13: 9, restart: true}))
	p.expectDiag(fpdu.AckCreate, fpdu.DiagOK)
	p.sendKind(fpdu.ORF, fpdu.Param{ID: fpdu.PICompression, Value: []byte{0, 0}})
	p.expectDiag(fpdu.AckORF, fpdu.DiagOK)
	p.sendKind(fpdu.Write)
	if n, _ := p.expectDiag(fpdu.AckWrite, fpdu.DiagOK).Params.Uint(fpdu.PIRestartPoint); n != 1 {
		t.Fatalf("restart point %d, want 1", n)
	}
	p.pushKB(data, 32, 16)
	p.endData(16)
	p.expectDiag(fpdu.AckTransEnd, fpdu.DiagOK)
	p.closeFile()
	p.release()
	got, err := os.ReadFile(final)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("delivered file (%d bytes, %v) differs from the data", len(got), err)
	}
	if r, _ := e.jnl.Last(); r.Outcome == nil || r.Outcome.Status != server.StatusDone {
		t.Fatalf("restart outcome %+v, want done", r.Outcome)
	}
}

// TestTransEndFinishRetried: a journal that fails for less than Tp costs
// nothing: the finish is retried and TRANS.END acknowledged.
func TestTransEndFinishRetried(t *testing.T) {
	e := newEnv(t, nil)
	p := dial(t, e.srv.Addr())
	p.connect()
	p.openForWrite(createOpts{file: "TESTFILE", pi13: 10})
	data := randomData(8<<10, 10)
	p.pushKB(data, 0, 8)
	e.jnl.FailFinishes(errors.New("database failing over"))
	time.AfterFunc(500*time.Millisecond, func() { e.jnl.FailFinishes(nil) })
	p.endData(8)
	p.expectDiag(fpdu.AckTransEnd, fpdu.DiagOK)
	p.closeFile()
	p.release()
	if got, err := os.ReadFile(filepath.Join(e.recvDir, "TESTFILE")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("delivered file: %v", err)
	}
	if r, _ := e.jnl.Last(); r.Outcome == nil || r.Outcome.Status != server.StatusDone {
		t.Fatalf("outcome %+v, want done", r.Outcome)
	}
}

// TestLostTransferLeavesFile: once the journal says another owner took the
// transfer over, the session ends it (IDT, PI 19 = 4) and leaves its file
// exactly as it is: not cut back to a sync point, not removed, not
// published, and records nothing.
func TestLostTransferLeavesFile(t *testing.T) {
	lost := fmt.Errorf("%w: owner at a newer epoch", server.ErrTransferLost)
	t.Run("AtSyncPoint", func(t *testing.T) {
		e := newEnv(t, nil)
		p := dial(t, e.srv.Addr())
		p.connect()
		p.openForWrite(createOpts{file: "TESTFILE", pi13: 11})
		data := randomData(64<<10, 11)
		p.pushKB(data, 0, 32)
		p.syncAcked(1)
		e.jnl.FailSyncPoints(lost)
		p.pushKB(data, 32, 32)
		p.sendKind(fpdu.Syn, uintParam(fpdu.PISyncNumber, 2))
		expectEndCode(t, p.expectDiag(fpdu.IDT, fpdu.DiagSystemError), 4)
		// The new owner resumes into the same file meanwhile, from its
		// restart point (1), and has written past where this session was.
		r, _ := e.jnl.Last()
		f, err := os.OpenFile(r.Transfer.TempPath, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(data, 32<<10); err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(data[:16<<10], 96<<10); err != nil {
			t.Fatal(err)
		}
		f.Close()
		p.sendKind(fpdu.AckIDT)
		p.closeFile()
		p.release()
		// The old session left the file alone: not cut back to a point.
		if got := fileSize(t, r.Transfer.TempPath); got != 112<<10 {
			t.Errorf("partial file holds %d bytes, want the 112 KiB the new owner wrote: it was cut", got)
		}
		r, _ = e.jnl.Last()
		if r.Outcome != nil {
			t.Fatalf("outcome %+v recorded for a lost transfer", r.Outcome)
		}
	})
	t.Run("AtTransEnd", func(t *testing.T) {
		e := newEnv(t, nil)
		p := dial(t, e.srv.Addr())
		p.connect()
		p.openForWrite(createOpts{file: "TESTFILE", pi13: 12})
		data := randomData(40<<10, 12)
		p.pushKB(data, 0, 32)
		p.syncAcked(1)
		p.pushKB(data, 32, 8)
		e.jnl.FailFinishes(lost)
		p.endData(40)
		expectEndCode(t, p.expectDiag(fpdu.IDT, fpdu.DiagSystemError), 4)
		if logs := e.logs.String(); strings.Contains(logs, "journal finish failed; retrying") {
			t.Fatalf("a lost transfer's finish was retried:\n%s", logs)
		}
		p.sendKind(fpdu.AckIDT)
		p.closeFile()
		p.release()
		if _, err := os.Stat(filepath.Join(e.recvDir, "TESTFILE")); err == nil {
			t.Fatal("a lost transfer's file was published")
		}
		r, _ := e.jnl.Last()
		if got := fileSize(t, r.Transfer.TempPath); got != 40<<10 {
			t.Fatalf("partial file holds %d bytes, want the 40 KiB it had", got)
		}
	})
}

// TestPullTransEndNotAckedUntilRecorded: the same rule when the server
// sends: TRANS.END of a pull whose outcome cannot be recorded within Tp is
// answered with IDT 2/215, PI 19 = 4, and nothing is recorded done.
func TestPullTransEndNotAckedUntilRecorded(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.InactivityTimeout = time.Second })
	data := randomData(100_000, 13)
	if err := os.WriteFile(filepath.Join(e.sendDir, "TESTFILE"), data, 0o640); err != nil {
		t.Fatal(err)
	}
	p := dial(t, e.srv.Addr())
	p.connect()
	_, recLen := p.selectAndRead("TESTFILE", 0, false, 0)
	got := p.pull(recLen, 0)
	if !got.ended {
		t.Fatal("pull did not reach DTF.END")
	}
	e.jnl.FailFinishes(errors.New("database down"))
	p.sendKind(fpdu.TransEnd, uintParam(fpdu.PIByteCount, uint64(len(data))), uintParam(fpdu.PIArticleCount, uint64(got.articles)))
	expectEndCode(t, p.expectDiag(fpdu.IDT, fpdu.DiagSystemError), 4)
	p.sendKind(fpdu.AckIDT)
	p.closeFile()
	p.release()
	if r, _ := e.jnl.Last(); r.Outcome != nil {
		t.Fatalf("outcome %+v recorded through a journal that was down", r.Outcome)
	}
}
