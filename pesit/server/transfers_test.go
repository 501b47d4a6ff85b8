package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/server"
)

// pull reads a server's data phase: it answers every SYN at once (or only
// up to stopAfter, then returns) and returns the data, the articles and the
// offset of each sync point.
type pulled struct {
	data     []byte
	articles int
	syncs    map[uint64]int // sync number -> data offset
	ended    bool
}

func (p *peer) pull(recLen int, stopAfterSync uint64) pulled {
	p.t.Helper()
	out := pulled{syncs: map[uint64]int{}}
	var seg []byte
	inSeg := false
	for {
		f, err := p.r.Next()
		if err != nil {
			p.t.Fatalf("pull: %v", err)
		}
		switch f.Kind {
		case fpdu.DTF:
			if err := f.ForEachArticle(func(a []byte) error {
				if len(a) > recLen {
					p.t.Fatalf("article of %d bytes, PI 32 = %d", len(a), recLen)
				}
				out.data = append(out.data, a...)
				out.articles++
				return nil
			}); err != nil {
				p.t.Fatal(err)
			}
		case fpdu.DTFDA, fpdu.DTFMA, fpdu.DTFFA:
			if (f.Kind == fpdu.DTFDA) == inSeg {
				p.t.Fatalf("%v out of sequence", f.Kind)
			}
			inSeg = f.Kind != fpdu.DTFFA
			seg = append(seg, f.Data...)
			if !inSeg {
				out.data = append(out.data, seg...)
				out.articles++
				seg = seg[:0]
			}
		case fpdu.Syn:
			n, _ := f.Params.Uint(fpdu.PISyncNumber)
			out.syncs[n] = len(out.data)
			p.sendKind(fpdu.AckSyn, uintParam(fpdu.PISyncNumber, n))
			if n == stopAfterSync {
				return out
			}
		case fpdu.DTFEnd:
			if d, _ := f.Params.Diagnostic(); !d.OK() {
				p.t.Fatalf("DTF.END %v", d)
			}
			out.ended = true
			return out
		default:
			p.t.Fatalf("%v during the data phase", f.Kind)
		}
	}
}

// selectFile runs SELECT, ORF and READ{point}; it returns ACK(SELECT)'s PI 13 and PI 32.
func (p *peer) selectAndRead(file string, pi13 uint32, restart bool, point uint64) (uint64, int) {
	p.t.Helper()
	p.raw(selectFrame(p.srvID, file, pi13, restart))
	ack := p.expectDiag(fpdu.AckSelect, fpdu.DiagOK)
	if err := fpdu.Validate(ack); err != nil {
		p.t.Fatalf("ACK(SELECT) invalid: %v", err)
	}
	id, _ := ack.Params.Uint(fpdu.PITransferID)
	recLen, _ := ack.Params.Uint(fpdu.PIArticleLength)
	if id == 0 || recLen == 0 {
		p.t.Fatalf("ACK(SELECT) PI 13 = %d, PI 32 = %d", id, recLen)
	}
	if name, _ := ack.Params.String(fpdu.PIFileName); name != file {
		p.t.Fatalf("ACK(SELECT) PI 12 = %q", name)
	}
	for _, id := range []fpdu.PI{fpdu.PIDataCode, fpdu.PIEntitySize, fpdu.PIArticleFormat, fpdu.PISpaceUnit, fpdu.PISpaceMax, fpdu.PICreated} {
		if !ack.Params.Has(id) {
			p.t.Fatalf("ACK(SELECT) without %v", id)
		}
	}
	p.sendKind(fpdu.ORF, fpdu.Param{ID: fpdu.PICompression, Value: []byte{0, 0}})
	p.expectDiag(fpdu.AckORF, fpdu.DiagOK)
	p.sendKind(fpdu.Read, uintParam(fpdu.PIRestartPoint, point))
	p.expectDiag(fpdu.AckRead, fpdu.DiagOK)
	return id, int(recLen)
}

func (p *peer) transEnd(bytes, articles int) {
	p.t.Helper()
	p.sendKind(fpdu.TransEnd, uintParam(fpdu.PIByteCount, uint64(bytes)), uintParam(fpdu.PIArticleCount, uint64(articles)))
	te := p.expectDiag(fpdu.AckTransEnd, fpdu.DiagOK)
	if b, _ := te.Params.Uint(fpdu.PIByteCount); int(b) != bytes {
		p.t.Fatalf("ACK(TRANS.END) PI 27 = %d, want %d", b, bytes)
	}
}

// TestPull: CX-like pull (digest 9.2) with sync points and window 2, in
// single-article, multi-article and segmented modes.
func TestPull(t *testing.T) {
	for _, tc := range []struct {
		name       string
		multi, seg bool
		recLen     int
		wantMaxArt int
	}{
		{"single", false, false, 1024, 1024},
		{"multi-article", true, false, 1024, 1024},
		{"segmented", false, true, 10000, 10000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.dir.AddPartner(server.Partner{ID: partnerID, Enabled: true, Access: server.AccessBoth,
				VerifyPassword: func(s string) bool { return s == password }, MultiArticle: tc.multi, Segmented: tc.seg})
			e.dir.AddFile(server.VirtualFile{ID: "TESTFILE", Direction: server.DirectionBoth, SendDir: e.sendDir, ReceiveDir: e.recvDir,
				RecordLength: tc.recLen, DataCode: 2, RecordFormat: server.RecordVariable})
			data := randomData(300_000, 7)
			if err := os.WriteFile(filepath.Join(e.sendDir, "TESTFILE"), data, 0o640); err != nil {
				t.Fatal(err)
			}
			p := dial(t, e.srv.Addr())
			p.connect()
			_, recLen := p.selectAndRead("TESTFILE", 0, false, 0)
			if recLen != tc.wantMaxArt {
				t.Fatalf("PI 32 = %d, want %d", recLen, tc.wantMaxArt)
			}
			p.r.SetMaxFrame(4096) // the negotiated entity size bounds every NSDU
			got := p.pull(recLen, 0)
			if !bytes.Equal(got.data, data) {
				t.Fatalf("pulled %d bytes, differ from the %d-byte file", len(got.data), len(data))
			}
			if len(got.syncs) != len(data)/32768 {
				t.Fatalf("%d sync points, want %d", len(got.syncs), len(data)/32768)
			}
			for n, off := range got.syncs {
				if off > int(n)*32768 {
					t.Fatalf("sync %d at offset %d: more than 32 KiB per interval", n, off)
				}
			}
			p.transEnd(len(data), got.articles)
			p.closeFile()
			p.release()
			rec, _ := e.jnl.Last()
			sum := sha256.Sum256(data)
			if rec.Outcome == nil || rec.Outcome.Status != server.StatusDone || rec.Outcome.SHA256 != hex.EncodeToString(sum[:]) {
				t.Fatalf("journal outcome %+v", rec.Outcome)
			}
		})
	}
}

// TestPullRestart: an interrupted pull resumes at READ PI 18 from the
// requester's last durable point, which may be before the last point the
// server sent and journaled; a point never sent gets 2/214.
func TestPullRestart(t *testing.T) {
	e := newEnv(t, nil)
	data := randomData(200_000, 3)
	os.WriteFile(filepath.Join(e.sendDir, "TESTFILE"), data, 0o640)
	p := dial(t, e.srv.Addr())
	p.connect()
	id, recLen := p.selectAndRead("TESTFILE", 0, false, 0)
	first := p.pull(recLen, 3)
	testenv.Eventually(t, 5*time.Second, testenv.Awaiting("sync point 3 journaled", func() bool {
		r, _ := e.jnl.Last()
		return len(r.Syncs) > 0 && r.Syncs[len(r.Syncs)-1].Number >= 3
	}))
	p.c.Close() // the line drops
	testenv.Eventually(t, 5*time.Second, testenv.Awaiting("session end", func() bool { return e.srv.ActiveSessions() == 0 }))
	r, _ := e.jnl.Last()
	sent := r.Syncs[len(r.Syncs)-1].Number

	q := dial(t, e.srv.Addr())
	q.connect()
	q.raw(selectFrame(q.srvID, "TESTFILE", uint32(id), true))
	ack := q.expectDiag(fpdu.AckSelect, fpdu.DiagOK)
	if got, _ := ack.Params.Uint(fpdu.PITransferID); got != id {
		t.Fatalf("restart ACK(SELECT) PI 13 = %d, want %d", got, id)
	}
	q.sendKind(fpdu.ORF)
	q.expectDiag(fpdu.AckORF, fpdu.DiagOK)
	q.sendKind(fpdu.Read, uintParam(fpdu.PIRestartPoint, uint64(sent)+1))
	q.expectDiag(fpdu.AckRead, fpdu.DiagRestartPointRefused)
	q.sendKind(fpdu.Read, uintParam(fpdu.PIRestartPoint, 3))
	q.expectDiag(fpdu.AckRead, fpdu.DiagOK)
	rest := q.pull(recLen, 0)
	if n := first.syncs[3]; !bytes.Equal(append(first.data[:n:n], rest.data...), data) {
		t.Fatalf("resumed data differs (prefix %d + %d bytes)", n, len(rest.data))
	}
	for n := range rest.syncs {
		if n <= 3 {
			t.Fatalf("sync %d after a restart from 3", n)
		}
	}
	q.transEnd(len(data), 0x7fffffff&(len(data)+recLen-1)/recLen)
	q.closeFile()
	q.release()
}

// TestPushRestart: a push interrupted by a dropped line or by IDT resumes
// from ACK(WRITE) PI 18 = the last durable sync point: on a new connection
// with CREATE PI 15 = 1, or in place after IDT PI 19 = 4. The partial file
// stays hidden until the end.
func TestPushRestart(t *testing.T) {
	for _, how := range []string{"drop", "drop, journal without temp path", "suspend", "in place"} {
		t.Run(how, func(t *testing.T) {
			e := newEnv(t, nil)
			e.jnl.ForgetTempPaths = strings.Contains(how, "without temp path")
			data := randomData(200_000, 5)
			final := filepath.Join(e.recvDir, "TESTFILE")
			p := dial(t, e.srv.Addr())
			p.connect()
			if pt := p.openForWrite(createOpts{file: "TESTFILE", pi13: 0x0024CA}); pt != 0 {
				t.Fatalf("new transfer restart point %d", pt)
			}
			pushArticles(t, p, data[:65536+10240], 0) // SYN 1 and 2 acknowledged, 10 KiB beyond
			q := p
			switch how {
			case "drop", "drop, journal without temp path":
				p.c.Close()
			case "suspend":
				p.sendKind(fpdu.IDT, diagParam(fpdu.DiagVoluntaryStop), uintParam(fpdu.PIEndCode, 8))
				p.expect(fpdu.AckIDT)
				p.sendKind(fpdu.Write) // `ab` is set: WRITE is invalid until DESELECT
				p.expectDiag(fpdu.Abort, fpdu.DiagProtocolError)
			case "in place":
				p.sendKind(fpdu.IDT, diagParam(fpdu.DiagTransmissionError), uintParam(fpdu.PIEndCode, 4))
				p.expect(fpdu.AckIDT)
			}
			if how != "in place" {
				testenv.Eventually(t, 5*time.Second, testenv.Awaiting("session end", func() bool { return e.srv.ActiveSessions() == 0 }))
				q = dial(t, e.srv.Addr())
				q.connect()
				q.raw(createFrame(q.srvID, createOpts{file: "TESTFILE", pi13: 0x0024CA, restart: true}))
				q.expectDiag(fpdu.AckCreate, fpdu.DiagOK)
				q.sendKind(fpdu.ORF)
				q.expectDiag(fpdu.AckORF, fpdu.DiagOK)
			}
			left := files(t, e.recvDir)
			if len(left) != 1 || !strings.HasPrefix(left[0], ".TESTFILE.") || !strings.HasSuffix(left[0], ".part") {
				t.Fatalf("after the interruption: %v, want one hidden .part", left)
			}
			if _, err := os.Stat(final); !errors.Is(err, fs.ErrNotExist) {
				t.Fatal("partial file visible under its final name")
			}
			q.sendKind(fpdu.Write)
			if pt, _ := q.expectDiag(fpdu.AckWrite, fpdu.DiagOK).Params.Uint(fpdu.PIRestartPoint); pt != 2 {
				t.Fatalf("ACK(WRITE) PI 18 = %d, want 2", pt)
			}
			pushArticles(t, q, data[65536:], 2)
			q.sendKind(fpdu.DTFEnd, diagParam(fpdu.DiagOK))
			q.transEnd(len(data), (len(data)+1023)/1024)
			q.closeFile()
			q.release()
			got, err := os.ReadFile(final)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("restarted file differs (%d bytes, %v)", len(got), err)
			}
			if left := files(t, e.recvDir); len(left) != 1 {
				t.Fatalf("after the restart: %v", left)
			}
			recs := e.jnl.Records()
			if len(recs) != 2 || recs[0].Outcome.Status != server.StatusInterrupted || recs[1].Transfer.RestartOf.ID != recs[0].ID ||
				recs[1].Outcome.Status != server.StatusDone || !recs[1].Transfer.Restart {
				t.Fatalf("journal: %+v", recs)
			}
		})
	}
}

// pushArticles sends 1024-byte articles with a SYN every 32 KiB (numbered
// after from), waiting for each ACK(SYN).
func pushArticles(t *testing.T, p *peer, data []byte, from uint64) {
	t.Helper()
	n := from
	for off := 0; off < len(data); off += 1024 {
		if off > 0 && off%32768 == 0 {
			n++
			p.sendKind(fpdu.Syn, uintParam(fpdu.PISyncNumber, n))
			if f := p.expect(fpdu.AckSyn); func() uint64 { v, _ := f.Params.Uint(fpdu.PISyncNumber); return v }() != n {
				t.Fatalf("ACK(SYN) for %d wrong", n)
			}
		}
		p.send(&fpdu.FPDU{Kind: fpdu.DTF, DstID: p.srvID, Data: data[off:min(off+1024, len(data))]})
	}
}

// TestCancelTransfer: the admin API interrupts a live transfer with IDT
// (PI 19 = 12) in both directions.
func TestCancelTransfer(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	if err := e.srv.CancelTransfer(ctx, "42"); !errors.Is(err, server.ErrNoSuchTransfer) {
		t.Fatalf("cancel unknown: %v", err)
	}
	t.Run("receive", func(t *testing.T) {
		p := dial(t, e.srv.Addr())
		p.connect()
		p.openForWrite(createOpts{file: "TESTFILE", pi13: 99})
		pushArticles(t, p, randomData(40000, 1), 0)
		rec, _ := e.jnl.Last()
		if err := e.srv.CancelTransfer(ctx, rec.ID); err != nil {
			t.Fatal(err)
		}
		f := p.expectDiag(fpdu.IDT, fpdu.DiagVoluntaryStop)
		if c, _ := f.Params.Uint(fpdu.PIEndCode); c != 12 {
			t.Fatalf("PI 19 = %d", c)
		}
		p.sendKind(fpdu.AckIDT)
		p.closeFile()
		p.release()
		if left := files(t, e.recvDir); len(left) != 0 {
			t.Fatalf("cancelled transfer left %v", left)
		}
		if r, _ := e.jnl.Last(); r.Outcome == nil || r.Outcome.Status != server.StatusCancelled {
			t.Fatalf("outcome %+v", r.Outcome)
		}
	})
	t.Run("send", func(t *testing.T) {
		os.WriteFile(filepath.Join(e.sendDir, "TESTFILE"), randomData(500_000, 2), 0o640)
		p := dial(t, e.srv.Addr())
		p.connect()
		p.selectAndRead("TESTFILE", 0, false, 0)
		// Do not acknowledge: the server stops at its window.
		for synced := 0; synced < 2; {
			f := p.expectAny()
			if f.Kind == fpdu.Syn {
				synced++
			}
		}
		rec, _ := e.jnl.Last()
		if err := e.srv.CancelTransfer(ctx, rec.ID); err != nil {
			t.Fatal(err)
		}
		for {
			f := p.expectAny()
			if f.Kind == fpdu.IDT {
				break
			}
		}
		p.sendKind(fpdu.AckIDT)
		p.closeFile()
		p.release()
		if r, _ := e.jnl.Last(); r.Outcome == nil || r.Outcome.Status != server.StatusCancelled {
			t.Fatalf("outcome %+v", r.Outcome)
		}
	})
}

func (p *peer) expectAny() *fpdu.FPDU {
	p.t.Helper()
	f, err := p.r.Next()
	if err != nil {
		p.t.Fatal(err)
	}
	return f
}

// TestMessage: MSG and MSGDM/MSGMM/MSGFM get ACK(MSG) and are journaled.
func TestMessage(t *testing.T) {
	e := newEnv(t, nil)
	p := dial(t, e.srv.Addr())
	p.connect()
	fileID := func() []byte {
		return pgi(fpdu.PGIFileID, pis(fpdu.PIRequesterID, partnerID), pis(fpdu.PIServerID, serverID), pi(fpdu.PIFileType, 0xFF, 0xFF), pis(fpdu.PIFileName, "NOTICE"))
	}
	p.raw(frame(fpdu.Msg, p.srvID, 0, fileID(), pi(fpdu.PITransferID, 5), pis(fpdu.PIMessage, "hello")))
	p.expectDiag(fpdu.AckMsg, fpdu.DiagOK)
	long := strings.Repeat("x", 300)
	p.raw(frame(fpdu.MsgDM, p.srvID, 0, fileID(), pi(fpdu.PITransferID, 6), pis(fpdu.PIMessage, "part1-")))
	p.raw(frame(fpdu.MsgMM, p.srvID, 0, append([]byte{byte(fpdu.PIMessage), 0xFF, 0x01, 0x2C}, long...)))
	p.raw(frame(fpdu.MsgFM, p.srvID, 0, pis(fpdu.PIMessage, "-end")))
	p.expectDiag(fpdu.AckMsg, fpdu.DiagOK)
	p.release()
	recs := e.jnl.Records()
	if len(recs) != 2 || !recs[0].Transfer.Message || recs[0].Transfer.Text != "hello" ||
		recs[1].Transfer.Text != "part1-"+long+"-end" || recs[1].Outcome.Status != server.StatusDone {
		t.Fatalf("journal: %+v", recs)
	}
}

// TestShutdown: a graceful shutdown drains until its deadline, then sends
// ABORT 3/316 to the stuck session. Its transfer has not begun its data
// phase (ACK(WRITE) and nothing since), so there is no IDT to send first
// beyond a Shutdown IDT that the peer does not answer.
func TestShutdown(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.IDTTimeout = 100 * time.Millisecond })
	p := dial(t, e.srv.Addr())
	p.connect()
	p.openForWrite(createOpts{file: "TESTFILE", pi13: 1})
	idle := dial(t, e.srv.Addr())
	idle.connect()
	const drain = time.Second
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- e.srv.Shutdown(ctx) }()
	// An idle session is not waited for; the one in a transfer is. The
	// order says so: the idle one is aborted before the drain deadline,
	// the other after it (and after IDTTimeout, less timer slack).
	idle.expectDiag(fpdu.Abort, fpdu.DiagAdministrativeStop)
	if ctx.Err() != nil {
		t.Fatalf("idle session aborted %v after the shutdown began, at the drain deadline: it was waited for", time.Since(start))
	}
	expectEndCode(t, p.expectDiag(fpdu.IDT, fpdu.DiagVoluntaryStop), 4)
	p.expectDiag(fpdu.Abort, fpdu.DiagAdministrativeStop)
	if d := time.Since(start); d < drain+50*time.Millisecond {
		t.Fatalf("aborted after %v, before the deadline", d)
	}
	p.expectClosed()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if e.srv.ActiveSessions() != 0 {
		t.Fatal("sessions left after shutdown")
	}
	if _, err := dialErr(e.srv.Addr()); err == nil {
		t.Fatal("still accepting after shutdown")
	}
	if left := files(t, e.recvDir); len(left) != 0 {
		t.Fatalf("files left: %v", left)
	}
}
