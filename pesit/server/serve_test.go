package server_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/server"
)

// TestServeAndTwoServers: two servers of one node share a Metrics and a
// journal; Serve returns when its context ends, aborting sessions 3/316.
func TestServeAndTwoServers(t *testing.T) {
	e := newEnv(t, nil)
	reg := prometheus.NewRegistry()
	met := server.NewMetrics(reg)
	var srvs []*server.Server
	for _, id := range []string{"SRVA", "SRVB"} {
		cfg := testConfig()
		cfg.ID = id
		s, err := server.New(cfg, server.Deps{Directory: e.dir, Journal: e.jnl, Metrics: met})
		if err != nil {
			t.Fatal(err)
		}
		srvs = append(srvs, s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	for _, s := range srvs {
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		go func() { done <- s.Serve(ctx) }()
	}
	for _, s := range srvs {
		p := dial(t, s.Addr())
		if f := p.connectWith(serverID, partnerID, password, 2, 2); f.Kind != fpdu.RConnect {
			t.Fatalf("%v for the wrong server id", f.Kind)
		}
	}
	a := dial(t, srvs[0].Addr())
	if f := a.connectWith("SRVA", partnerID, password, 2, 2); f.Kind != fpdu.AConnect {
		t.Fatalf("SRVA: %v", f.Kind)
	}
	b := dial(t, srvs[1].Addr())
	if f := b.connectWith("SRVB", partnerID, password, 2, 2); f.Kind != fpdu.AConnect {
		t.Fatalf("SRVB: %v", f.Kind)
	}
	cancel()
	a.expectDiag(fpdu.Abort, fpdu.DiagAdministrativeStop)
	b.expectDiag(fpdu.Abort, fpdu.DiagAdministrativeStop)
	for range srvs {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if err := srvs[0].Start(context.Background()); !errors.Is(err, server.ErrServerClosed) {
		t.Fatalf("Start after Shutdown: %v", err)
	}
	mfs, _ := reg.Gather()
	found := 0
	for _, mf := range mfs {
		if mf.GetName() == "vectis_pesit_connections_total" {
			found = len(mf.GetMetric())
		}
	}
	if found != 4 { // {SRVA,SRVB} x {accepted,refused}
		t.Fatalf("%d connection series, want 4", found)
	}
}

// TestJournalOutage: a sync point that cannot be persisted is not
// acknowledged; the transfer is interrupted for a restart (IDT PI 19 = 4).
func TestJournalOutage(t *testing.T) {
	e := newEnv(t, nil)
	p := dial(t, e.srv.Addr())
	p.connect()
	p.openForWrite(createOpts{file: "TESTFILE", pi13: 5})
	e.jnl.FailSyncPoints(errors.New("database down"))
	for i := 0; i < 32; i++ {
		p.send(&fpdu.FPDU{Kind: fpdu.DTF, DstID: p.srvID, Data: randomData(1024, uint64(i))})
	}
	p.sendKind(fpdu.Syn, uintParam(fpdu.PISyncNumber, 1))
	f := p.expectDiag(fpdu.IDT, fpdu.DiagSystemError)
	if c, _ := f.Params.Uint(fpdu.PIEndCode); c != 4 {
		t.Fatalf("PI 19 = %d", c)
	}
	p.sendKind(fpdu.AckIDT)
	p.closeFile()
	p.release()
	if _, err := os.Stat(filepath.Join(e.recvDir, "TESTFILE")); err == nil {
		t.Fatal("file delivered")
	}
	if r, _ := e.jnl.Last(); r.Outcome == nil || r.Outcome.Status != server.StatusInterrupted {
		t.Fatalf("outcome %+v", r.Outcome)
	}
}

// TestJournalErrorAfterCommit: a sync point whose journal write went
// through but reported an error (a context cancelled after the commit, as
// at the end of a drain) interrupts the transfer, and the partial file keeps
// the data of that point: the journal's restart point must always be in
// the file, or the restart falls back to 0.
func TestJournalErrorAfterCommit(t *testing.T) {
	e := newEnv(t, nil)
	p := dial(t, e.srv.Addr())
	p.connect()
	p.openForWrite(createOpts{file: "TESTFILE", pi13: 6})
	for i := 0; i < 32; i++ {
		p.send(&fpdu.FPDU{Kind: fpdu.DTF, DstID: p.srvID, Data: randomData(1024, uint64(i))})
	}
	p.sendKind(fpdu.Syn, uintParam(fpdu.PISyncNumber, 1))
	p.expect(fpdu.AckSyn)
	e.jnl.FailSyncPointsAfterRecording(context.Canceled)
	for i := 32; i < 64; i++ {
		p.send(&fpdu.FPDU{Kind: fpdu.DTF, DstID: p.srvID, Data: randomData(1024, uint64(i))})
	}
	p.sendKind(fpdu.Syn, uintParam(fpdu.PISyncNumber, 2))
	p.expectDiag(fpdu.IDT, fpdu.DiagSystemError)
	p.sendKind(fpdu.AckIDT)
	p.closeFile()
	p.release()
	r, _ := e.jnl.Last()
	if r.Outcome == nil || r.Outcome.Status != server.StatusInterrupted {
		t.Fatalf("outcome %+v", r.Outcome)
	}
	last := r.Syncs[len(r.Syncs)-1]
	if last.Number != 2 {
		t.Fatalf("journal holds points %+v, want 2 recorded", r.Syncs)
	}
	fi, err := os.Stat(r.Transfer.TempPath)
	if err != nil {
		t.Fatalf("partial file: %v", err)
	}
	if fi.Size() < last.Offset {
		t.Fatalf("partial file holds %d bytes, below the journaled restart point at %d", fi.Size(), last.Offset)
	}
}

// TestNamePattern: placeholders build the target path, subdirectories are
// created, and the name stays inside the receive directory.
func TestNamePattern(t *testing.T) {
	e := newEnv(t, nil)
	e.dir.AddFile(server.VirtualFile{ID: "PATTERNED", Direction: server.DirectionReceive, ReceiveDir: e.recvDir,
		NamePattern: "${partner}/${file}-${transferId}.dat", RecordLength: 1024})
	p := dial(t, e.srv.Addr())
	p.connect()
	p.openForWrite(createOpts{file: "PATTERNED", pi13: 321})
	pushArticles(t, p, []byte("hello"), 0)
	p.sendKind(fpdu.DTFEnd, diagParam(fpdu.DiagOK))
	p.transEnd(5, 1)
	p.closeFile()
	p.release()
	got, err := os.ReadFile(filepath.Join(e.recvDir, partnerID, "PATTERNED-321.dat"))
	if err != nil || string(got) != "hello" {
		t.Fatalf("%q, %v", got, err)
	}
}

// TestFileBusy: two pushes to the same target name at once: the second is
// refused with 2/207 and the first completes.
func TestFileBusy(t *testing.T) {
	e := newEnv(t, nil)
	a := dial(t, e.srv.Addr())
	a.connect()
	a.openForWrite(createOpts{file: "TESTFILE", pi13: 1})
	b := dial(t, e.srv.Addr())
	b.connect()
	b.raw(createFrame(b.srvID, createOpts{file: "TESTFILE", pi13: 2}))
	b.expectDiag(fpdu.AckCreate, fpdu.DiagFileBusy)
	b.release()
	pushArticles(t, a, []byte("first"), 0)
	a.sendKind(fpdu.DTFEnd, diagParam(fpdu.DiagOK))
	a.transEnd(5, 1)
	a.closeFile()
	a.release()
	if got, _ := os.ReadFile(filepath.Join(e.recvDir, "TESTFILE")); string(got) != "first" {
		t.Fatalf("%q", got)
	}
}
