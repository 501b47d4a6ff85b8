package server_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/server"
)

// TestNegative drives each refusal with raw FPDUs: the peer gets the
// diagnostic, the server keeps serving, and no partial file is left.
func TestNegative(t *testing.T) {
	e := newEnv(t, func(c *server.Config) {
		c.ConnectTimeout = 300 * time.Millisecond
		c.InactivityTimeout = 300 * time.Millisecond
		c.IdleTimeout = 400 * time.Millisecond
	})
	e.dir.AddFile(server.VirtualFile{ID: "INONLY", Direction: server.DirectionReceive, ReceiveDir: e.recvDir, RecordLength: 1024})
	e.dir.AddFile(server.VirtualFile{ID: "SMALL", Direction: server.DirectionReceive, ReceiveDir: e.recvDir, RecordLength: 1024, MaxSize: 10000})
	e.dir.AddPartner(server.Partner{ID: "READER", Enabled: true, Access: server.AccessRead, VerifyPassword: func(s string) bool { return s == "pw" }})

	// refusedData runs CREATE..WRITE, then send, then expects IDT d and
	// answers ACK(IDT), CRF, DESELECT, RELEASE.
	idt := func(t *testing.T, p *peer, o createOpts, d fpdu.Diagnostic, send func()) {
		p.connect()
		p.openForWrite(o)
		send()
		f := p.expectDiag(fpdu.IDT, d)
		if c, _ := f.Params.Uint(fpdu.PIEndCode); c != 12 {
			t.Fatalf("IDT PI 19 = %d, want 12", c)
		}
		p.sendKind(fpdu.AckIDT)
		p.closeFile()
		p.release()
	}
	dtf := func(p *peer, a []byte) {
		p.send(&fpdu.FPDU{Kind: fpdu.DTF, DstID: p.srvID, Data: a})
	}

	cases := []struct {
		name string
		run  func(t *testing.T, p *peer)
	}{
		{"wrong server id 3/301", func(t *testing.T, p *peer) {
			f := p.connectWith("OTHERSRV", partnerID, password, 2, 2)
			checkRefused(t, p, f, fpdu.DiagUnknownServer)
		}},
		{"unknown partner 3/304", func(t *testing.T, p *peer) {
			checkRefused(t, p, p.connectWith(serverID, "NOBODY", password, 2, 2), fpdu.DiagNotAuthorised)
		}},
		{"bad password 3/304", func(t *testing.T, p *peer) {
			checkRefused(t, p, p.connectWith(serverID, partnerID, "wrong", 2, 2), fpdu.DiagNotAuthorised)
		}},
		{"no password 3/304", func(t *testing.T, p *peer) {
			checkRefused(t, p, p.connectWith(serverID, partnerID, "", 2, 2), fpdu.DiagNotAuthorised)
		}},
		{"version D 3/308", func(t *testing.T, p *peer) {
			checkRefused(t, p, p.connectWith(serverID, partnerID, password, 1, 2), fpdu.DiagVersionUnsupported)
		}},
		{"missing file 2/205", func(t *testing.T, p *peer) {
			p.connect()
			p.raw(selectFrame(p.srvID, "TESTFILE", 0, false))
			p.expectDiag(fpdu.AckSelect, fpdu.DiagFileNotFound)
			p.release() // CX releases straight after a refusal
		}},
		{"unknown virtual file 2/205", func(t *testing.T, p *peer) {
			p.connect()
			p.raw(selectFrame(p.srvID, "NOSUCH", 0, false))
			p.expectDiag(fpdu.AckSelect, fpdu.DiagFileNotFound)
			p.release()
		}},
		{"refused direction 2/226", func(t *testing.T, p *peer) {
			p.connect()
			os.WriteFile(filepath.Join(e.sendDir, "INONLY"), []byte("x"), 0o640)
			defer os.Remove(filepath.Join(e.sendDir, "INONLY"))
			p.raw(selectFrame(p.srvID, "INONLY", 0, false))
			p.expectDiag(fpdu.AckSelect, fpdu.DiagTransferRefused)
			p.release()
		}},
		{"partner may not push 2/226", func(t *testing.T, p *peer) {
			if f := p.connectWith(serverID, "READER", "pw", 2, 2); f.Kind != fpdu.AConnect {
				t.Fatalf("CONNECT: %v", f.Kind)
			}
			p.raw(createFrame(p.srvID, createOpts{file: "TESTFILE", pi13: 7}))
			p.expectDiag(fpdu.AckCreate, fpdu.DiagTransferRefused)
			p.release()
		}},
		{"file exists 2/204", func(t *testing.T, p *peer) {
			existing := filepath.Join(e.recvDir, "TESTFILE")
			os.WriteFile(existing, []byte("old"), 0o640)
			defer os.Remove(existing)
			p.connect()
			p.raw(createFrame(p.srvID, createOpts{file: "TESTFILE", pi13: 8}))
			p.expectDiag(fpdu.AckCreate, fpdu.DiagFileExists)
			p.release()
			if b, _ := os.ReadFile(existing); string(b) != "old" {
				t.Fatalf("existing file changed: %q", b)
			}
		}},
		{"announced too big 2/206", func(t *testing.T, p *peer) {
			p.connect()
			p.raw(createFrame(p.srvID, createOpts{file: "SMALL", pi13: 9, spaceKB: 100}))
			p.expectDiag(fpdu.AckCreate, fpdu.DiagQuotaExceeded)
			p.release()
		}},
		{"over max size 2/224", func(t *testing.T, p *peer) {
			idt(t, p, createOpts{file: "SMALL", pi13: 10, spaceKB: 5}, fpdu.DiagFileLargerThanAnnounced, func() {
				for i := range 10 {
					dtf(p, randomData(1024, uint64(i)))
				}
			})
		}},
		{"larger than announced 2/224", func(t *testing.T, p *peer) {
			p.connect()
			p.openForWrite(createOpts{file: "TESTFILE", pi13: 11, spaceKB: 1})
			dtf(p, randomData(1024, 1))
			dtf(p, randomData(10, 2))
			p.sendKind(fpdu.DTFEnd, diagParam(fpdu.DiagOK))
			p.sendKind(fpdu.TransEnd)
			p.expectDiag(fpdu.AckTransEnd, fpdu.DiagFileLargerThanAnnounced)
			p.closeFile()
			p.release()
		}},
		{"wrong counts in TRANS.END 3/319", func(t *testing.T, p *peer) {
			p.connect()
			p.openForWrite(createOpts{file: "TESTFILE", pi13: 19})
			dtf(p, randomData(1024, 1))
			p.sendKind(fpdu.DTFEnd, diagParam(fpdu.DiagOK))
			p.sendKind(fpdu.TransEnd, uintParam(fpdu.PIByteCount, 2048), uintParam(fpdu.PIArticleCount, 2))
			p.expectDiag(fpdu.Abort, fpdu.DiagCountMismatch)
			p.expectClosed()
		}},
		{"article too long 2/220", func(t *testing.T, p *peer) {
			idt(t, p, createOpts{file: "TESTFILE", pi13: 12}, fpdu.DiagArticleTooLong, func() {
				dtf(p, randomData(1000, 1))
				dtf(p, randomData(1025, 2))
			})
		}},
		{"segmented article too long 2/220", func(t *testing.T, p *peer) {
			idt(t, p, createOpts{file: "TESTFILE", pi13: 13}, fpdu.DiagArticleTooLong, func() {
				p.send(&fpdu.FPDU{Kind: fpdu.DTFDA, DstID: p.srvID, Data: randomData(600, 1)})
				p.send(&fpdu.FPDU{Kind: fpdu.DTFFA, DstID: p.srvID, Data: randomData(600, 2)})
			})
		}},
		{"too much data without a SYN 2/222", func(t *testing.T, p *peer) {
			idt(t, p, createOpts{file: "TESTFILE", pi13: 14}, fpdu.DiagTooMuchDataWithoutSync, func() {
				for i := range 33 {
					dtf(p, randomData(1024, uint64(i)))
				}
			})
		}},
		{"path traversal in PI 12", func(t *testing.T, p *peer) {
			p.connect()
			for _, name := range []string{"../TESTFILE", "a/b", "..", "x\\..\\y"} {
				p.raw(createFrame(p.srvID, createOpts{file: name, pi13: 15}))
				p.expectDiag(fpdu.AckCreate, fpdu.DiagTransferRefused)
			}
			p.release()
		}},
		{"entity size too small 2/200", func(t *testing.T, p *peer) {
			p.connect()
			p.raw(createFrame(p.srvID, createOpts{file: "TESTFILE", pi13: 18, entity: 6}))
			p.expectDiag(fpdu.AckCreate, fpdu.DiagInsufficientCharacteristics)
			p.release()
		}},
		{"1-byte PI 7 3/318", func(t *testing.T, p *peer) {
			p.raw(frame(fpdu.Connect, 0, 0x62, pis(fpdu.PIRequesterID, partnerID), pis(fpdu.PIServerID, serverID),
				pis(fpdu.PIAccessControl, password), pi(fpdu.PIVersion, 2), pi(fpdu.PISyncOption, 32), pi(fpdu.PIAccessType, 2)))
			f := p.expectAny()
			if d, _ := f.Params.Diagnostic(); (f.Kind != fpdu.RConnect && f.Kind != fpdu.Abort) || d != fpdu.DiagBadParameter {
				t.Fatalf("got %v %v, want a 3/318 refusal", f.Kind, d)
			}
			p.expectClosed()
		}},
		{"malformed FPDU 3/311", func(t *testing.T, p *peer) {
			p.connect()
			p.raw([]byte{0, 6, 0, 6, 0xC0, 0x77, p.srvID, 0}) // unknown kind
			p.expectDiag(fpdu.Abort, fpdu.DiagProtocolError)
			p.expectClosed()
		}},
		{"bad inner length 3/311", func(t *testing.T, p *peer) {
			p.connect()
			p.raw([]byte{0, 8, 0, 9, 0xC0, 0x14, p.srvID, 0, 0x15, 0})
			p.expectDiag(fpdu.Abort, fpdu.DiagProtocolError)
			p.expectClosed()
		}},
		{"FPDU out of state 3/311", func(t *testing.T, p *peer) {
			p.connect()
			p.sendKind(fpdu.Write)
			p.expectDiag(fpdu.Abort, fpdu.DiagProtocolError)
			p.expectClosed()
		}},
		{"CREATE without PI 13 3/318", func(t *testing.T, p *peer) {
			p.connect()
			p.raw(frame(fpdu.Create, p.srvID, 0, pgi(fpdu.PGIFileID, pi(fpdu.PIFileType, 0), pis(fpdu.PIFileName, "TESTFILE"))))
			p.expectDiag(fpdu.Abort, fpdu.DiagBadParameter)
			p.expectClosed()
		}},
		{"silent before CONNECT: Tc", func(t *testing.T, p *peer) {
			start := time.Now()
			p.expectDiag(fpdu.Abort, fpdu.DiagTimerExpired)
			p.expectClosed()
			if d := time.Since(start); d < 250*time.Millisecond {
				t.Fatalf("dropped after %v, before Tc", d)
			}
		}},
		{"idle between transfers: Td 3/313", func(t *testing.T, p *peer) {
			p.connect()
			p.expectDiag(fpdu.Abort, fpdu.DiagIdleTimeout)
			p.expectClosed()
		}},
		{"silent during transfer: Tp 3/317", func(t *testing.T, p *peer) {
			p.connect()
			p.openForWrite(createOpts{file: "TESTFILE", pi13: 16})
			p.expectDiag(fpdu.Abort, fpdu.DiagTimerExpired)
			p.expectClosed()
		}},
		{"slow frame: Tp 3/317", func(t *testing.T, p *peer) {
			p.connect()
			p.openForWrite(createOpts{file: "TESTFILE", pi13: 17})
			p.raw([]byte{0x04, 0x06, 0x04, 0x06, 0, 0, p.srvID, 0, 1, 2, 3}) // a frame that never completes
			p.expectDiag(fpdu.Abort, fpdu.DiagTimerExpired)
			p.expectClosed()
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := dial(t, e.srv.Addr())
			tc.run(t, p)
			testenv.Eventually(t, 5*time.Second, testenv.Awaiting("session end", func() bool { return e.srv.ActiveSessions() == 0 }))
			if left := files(t, e.recvDir); len(left) != 0 {
				t.Fatalf("files left in the receive directory: %v", left)
			}
			// Still serving.
			q := dial(t, e.srv.Addr())
			q.connect()
			q.release()
		})
	}
	// Every refusal was journaled as such; nothing was delivered.
	for _, r := range e.jnl.Records() {
		if r.Outcome != nil && r.Outcome.Status == server.StatusDone {
			t.Errorf("transfer %s recorded as done: %+v", r.ID, r.Transfer)
		}
	}
}

func checkRefused(t *testing.T, p *peer, f *fpdu.FPDU, want fpdu.Diagnostic) {
	t.Helper()
	if f.Kind != fpdu.RConnect {
		t.Fatalf("got %v, want RCONNECT", f.Kind)
	}
	if d, _ := f.Params.Diagnostic(); d != want {
		t.Fatalf("RCONNECT %v, want %v", d, want)
	}
	if f.DstID != 0x62 {
		t.Fatalf("RCONNECT dst %#x", f.DstID)
	}
	p.expectClosed()
}
