package server_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/server"
)

// TestCXPush replays the shape of digest 9.1: Connect:Express pushes 1 MiB
// as 32 blocks of 8 x [DTF(3 articles) + DTFDA + DTFFA], SYN after blocks
// 1..31, window 2; the file must arrive byte-identical and only at the end.
func TestCXPush(t *testing.T) {
	e := newEnv(t, nil)
	p := dial(t, e.srv.Addr())
	p.raw(cxConnect)
	ac := p.expect(fpdu.AConnect)
	if ac.DstID != 0x62 || ac.SrcID == 0 {
		t.Fatalf("ACONNECT ids dst=%#x src=%#x", ac.DstID, ac.SrcID)
	}
	// Byte for byte what CX accepted in digest 9.1, but for our own id.
	if b, err := fpdu.AppendEncode(nil, ac); err != nil || !bytes.Equal(b, []byte{0, 0x0E, 0x40, 0x21, 0x62, ac.SrcID, 6, 1, 2, 7, 3, 0, 0x20, 2}) {
		t.Fatalf("ACONNECT % x (%v)", b, err)
	}
	if v, _ := ac.Params.Bytes(fpdu.PIVersion); !bytes.Equal(v, []byte{2}) {
		t.Fatalf("ACONNECT PI 6 = % x", v)
	}
	if v, _ := ac.Params.Bytes(fpdu.PISyncOption); !bytes.Equal(v, []byte{0, 0x20, 2}) {
		t.Fatalf("ACONNECT PI 7 = % x, want 00 20 02", v)
	}
	p.srvID = ac.SrcID

	p.raw(createFrame(p.srvID, createOpts{file: "TESTFILE", pi13: 0x0024C9}))
	ack := p.expectDiag(fpdu.AckCreate, fpdu.DiagOK)
	if v, _ := ack.Params.Uint(fpdu.PIEntitySize); v != 4096 {
		t.Fatalf("ACK(CREATE) PI 25 = %d, want 4096", v)
	}
	p.raw(frame(fpdu.ORF, p.srvID, 0, pi(fpdu.PICompression, 0, 0)))
	orf := p.expectDiag(fpdu.AckORF, fpdu.DiagOK)
	if v, _ := orf.Params.Bytes(fpdu.PICompression); !bytes.Equal(v, []byte{0, 0}) {
		t.Fatalf("ACK(ORF) PI 21 = % x", v)
	}
	p.raw(frame(fpdu.Write, p.srvID, 0))
	if f := p.expectDiag(fpdu.AckWrite, fpdu.DiagOK); !f.Params.Has(fpdu.PIRestartPoint) {
		t.Fatal("ACK(WRITE) without PI 18")
	}

	data := randomData(1<<20, 1)
	p.w.SetEntitySize(4096)
	final := filepath.Join(e.recvDir, "TESTFILE")
	off, acked := 0, 0
	art := func() []byte { a := data[off : off+1024]; off += 1024; return a }
	for block := 1; block <= 32; block++ {
		for range 8 {
			if err := p.w.QueueDTF(p.srvID, art(), art(), art()); err != nil {
				t.Fatal(err)
			}
			a4 := art()
			for _, seg := range []struct {
				k fpdu.Kind
				b []byte
			}{{fpdu.DTFDA, a4[:1006]}, {fpdu.DTFFA, a4[1006:]}} {
				if err := p.w.Queue(&fpdu.FPDU{Kind: seg.k, DstID: p.srvID, Data: seg.b}); err != nil {
					t.Fatal(err)
				}
			}
		}
		if block == 32 {
			break
		}
		syn := fpdu.New(fpdu.Syn, p.srvID, 0, uintParam(fpdu.PISyncNumber, uint64(block)))
		if err := p.w.Queue(syn); err != nil {
			t.Fatal(err)
		}
		if err := p.w.Flush(); err != nil {
			t.Fatal(err)
		}
		// Window 2: at most two SYNs outstanding.
		for block-acked >= 2 {
			f := p.expect(fpdu.AckSyn)
			if n, _ := f.Params.Uint(fpdu.PISyncNumber); int(n) != acked+1 {
				t.Fatalf("ACK(SYN) %d, want %d", n, acked+1)
			}
			acked++
		}
	}
	for acked < 31 {
		f := p.expect(fpdu.AckSyn)
		if n, _ := f.Params.Uint(fpdu.PISyncNumber); int(n) != acked+1 {
			t.Fatalf("ACK(SYN) %d, want %d", n, acked+1)
		}
		acked++
	}
	if err := p.w.Queue(fpdu.New(fpdu.DTFEnd, p.srvID, 0, diagParam(fpdu.DiagOK))); err != nil {
		t.Fatal(err)
	}
	if err := p.w.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(final); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("final file visible before TRANS.END: %v", err)
	}
	p.raw(frame(fpdu.TransEnd, p.srvID, 0, pi(fpdu.PIByteCount, 0x10, 0, 0), pi(fpdu.PIArticleCount, 4, 0)))
	te := p.expectDiag(fpdu.AckTransEnd, fpdu.DiagOK)
	if v, _ := te.Params.Uint(fpdu.PIArticleCount); v != 1024 {
		t.Fatalf("ACK(TRANS.END) PI 28 = %d, want 1024", v)
	}
	if v, _ := te.Params.Uint(fpdu.PIByteCount); v != 1<<20 {
		t.Fatalf("ACK(TRANS.END) PI 27 = %d, want 1048576", v)
	}
	got, err := os.ReadFile(final)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("received file differs (%d bytes)", len(got))
	}
	p.closeFile()
	p.raw(frame(fpdu.Release, p.srvID, 0x62, pi(fpdu.PIDiagnostic, 0, 0, 0)))
	p.expect(fpdu.RelConf)
	p.expectClosed()

	if fs := files(t, e.recvDir); len(fs) != 1 {
		t.Fatalf("receive dir holds %v, want only TESTFILE", fs)
	}
	rec, _ := e.jnl.Last()
	sum := sha256.Sum256(data)
	if rec.Outcome == nil || rec.Outcome.Status != server.StatusDone || rec.Outcome.SHA256 != hex.EncodeToString(sum[:]) ||
		rec.Outcome.Articles != 1024 || rec.Outcome.Bytes != 1<<20 {
		t.Fatalf("journal outcome %+v", rec.Outcome)
	}
	// Points made durable while the journal was busy are recorded in one
	// write, as the last of them: the journal holds the restart point, not
	// every point.
	last := rec.Syncs[len(rec.Syncs)-1]
	if last.Number != 31 || last.Offset != 31*32768 || rec.Transfer.PeSITID != 0x24C9 {
		t.Fatalf("journal: %d sync points (last %+v), PI 13 %#x", len(rec.Syncs), last, rec.Transfer.PeSITID)
	}
	for i, sp := range rec.Syncs {
		if sp.Offset != int64(sp.Number)*32768 || (i > 0 && sp.Number <= rec.Syncs[i-1].Number) {
			t.Fatalf("journal sync point %d: %+v after %+v", i, sp, rec.Syncs[max(i-1, 0)])
		}
	}
	testenv.Eventually(t, 5*time.Second, testenv.Awaiting("session end", func() bool { return e.srv.ActiveSessions() == 0 }))
}
