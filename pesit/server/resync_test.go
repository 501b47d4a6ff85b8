package server_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/server"
)

func (p *peer) connectResync() {
	p.t.Helper()
	p.raw(frame(fpdu.Connect, 0, 0x62, pis(fpdu.PIRequesterID, partnerID), pis(fpdu.PIServerID, serverID),
		pis(fpdu.PIAccessControl, password), pi(fpdu.PIVersion, 2), pi(fpdu.PISyncOption, 0, 32, 2),
		pi(fpdu.PIAccessType, 2), pi(fpdu.PIResync, 1)))
	ac := p.expect(fpdu.AConnect)
	if v, _ := ac.Params.Uint(fpdu.PIResync); v != 1 {
		p.t.Fatalf("ACONNECT PI 23 = %d, want 1", v)
	}
	p.srvID = ac.SrcID
}

// TestResync: RESYN in both directions resumes from the last sync point
// with the file kept open (digest §4.5).
func TestResync(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.AllowResync = true })
	t.Run("refused by default", func(t *testing.T) {
		e2 := newEnv(t, nil)
		p := dial(t, e2.srv.Addr())
		p.raw(frame(fpdu.Connect, 0, 0x62, pis(fpdu.PIRequesterID, partnerID), pis(fpdu.PIServerID, serverID),
			pis(fpdu.PIAccessControl, password), pi(fpdu.PIVersion, 2), pi(fpdu.PISyncOption, 0, 32, 2),
			pi(fpdu.PIAccessType, 2), pi(fpdu.PIResync, 1)))
		if v, ok := p.expect(fpdu.AConnect).Params.Uint(fpdu.PIResync); !ok || v != 0 {
			t.Fatalf("ACONNECT PI 23 = %d (%v), want 0", v, ok)
		}
	})
	t.Run("receive", func(t *testing.T) {
		p := dial(t, e.srv.Addr())
		p.connectResync()
		data := randomData(100_000, 11)
		p.openForWrite(createOpts{file: "TESTFILE", pi13: 3})
		pushArticles(t, p, data[:40960], 0) // SYN 1 at 32 KiB, then 8 KiB more
		p.send(&fpdu.FPDU{Kind: fpdu.DTF, DstID: p.srvID, Data: bytes.Repeat([]byte{0xEE}, 1000)})
		p.sendKind(fpdu.Resyn, diagParam(fpdu.DiagTransmissionError), uintParam(fpdu.PIRestartPoint, 1))
		if n, _ := p.expect(fpdu.AckResyn).Params.Uint(fpdu.PIRestartPoint); n != 1 {
			t.Fatalf("ACK(RESYN) PI 18 = %d, want 1", n)
		}
		pushArticles(t, p, data[32768:], 1)
		p.sendKind(fpdu.DTFEnd, diagParam(fpdu.DiagOK))
		p.transEnd(len(data), (len(data)+1023)/1024)
		p.closeFile()
		p.release()
		got, _ := os.ReadFile(filepath.Join(e.recvDir, "TESTFILE"))
		if !bytes.Equal(got, data) {
			t.Fatalf("file after RESYN differs (%d bytes)", len(got))
		}
	})
	t.Run("send", func(t *testing.T) {
		data := randomData(300_000, 12)
		os.WriteFile(filepath.Join(e.sendDir, "TESTFILE"), data, 0o640)
		p := dial(t, e.srv.Addr())
		p.connectResync()
		_, recLen := p.selectAndRead("TESTFILE", 0, false, 0)
		first := p.pull(recLen, 2)
		p.sendKind(fpdu.Resyn, diagParam(fpdu.DiagTransmissionError), uintParam(fpdu.PIRestartPoint, 1))
		for {
			f := p.expectAny()
			if f.Kind == fpdu.AckResyn {
				if n, _ := f.Params.Uint(fpdu.PIRestartPoint); n != 1 {
					t.Fatalf("ACK(RESYN) PI 18 = %d", n)
				}
				break
			}
			// Data and SYNs in flight before our RESYN are dropped, not acknowledged.
		}
		rest := p.pull(recLen, 0)
		n := first.syncs[1]
		if !bytes.Equal(append(first.data[:n:n], rest.data...), data) {
			t.Fatal("data after RESYN differs")
		}
		p.transEnd(len(data), (len(data)+recLen-1)/recLen)
		p.closeFile()
		p.release()
		// The hash, computed behind the sender, was rebuilt at the point.
		sum := sha256.Sum256(data)
		if rec, _ := e.jnl.Last(); rec.Outcome == nil || rec.Outcome.SHA256 != hex.EncodeToString(sum[:]) {
			t.Fatalf("journal outcome %+v, want SHA-256 %x", rec.Outcome, sum)
		}
	})
}
