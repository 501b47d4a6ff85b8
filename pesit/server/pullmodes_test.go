package server_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/server"
)

// TestPullSyncModes: no sync points at all, and sync points that are not
// acknowledged (window 0); the pull must not wait for any ACK(SYN).
func TestPullSyncModes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		kb       uint16
		window   uint8
		wantSyns int
	}{
		{"no sync", 0, 0, 0},
		{"window 0", 16, 0, 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *server.Config) { c.SyncIntervalKB, c.SyncWindow = tc.kb, tc.window })
			data := randomData(150_000, 21)
			os.WriteFile(filepath.Join(e.sendDir, "TESTFILE"), data, 0o640)
			p := dial(t, e.srv.Addr())
			p.connect() // proposes 32 KB, window 2
			p.selectAndRead("TESTFILE", 0, false, 0)
			var got []byte
			syns := 0
			for done := false; !done; {
				f := p.expectAny()
				switch f.Kind {
				case fpdu.DTF:
					got = append(got, f.Data...)
				case fpdu.Syn:
					syns++ // never acknowledged
				case fpdu.DTFEnd:
					done = true
				default:
					t.Fatalf("%v", f.Kind)
				}
			}
			if !bytes.Equal(got, data) || syns != tc.wantSyns {
				t.Fatalf("%d bytes, %d SYNs (want %d)", len(got), syns, tc.wantSyns)
			}
			p.transEnd(len(data), (len(data)+1023)/1024)
			p.closeFile()
			p.release()
		})
	}
}

// TestPullInterruptedWithoutWindow: with no sync point to wait on, the
// server still notices the requester's IDT while it streams, long before
// the end of a large file.
func TestPullInterruptedWithoutWindow(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.SyncIntervalKB = 0; c.MaxEntitySize = 65535 })
	e.dir.AddFile(server.VirtualFile{ID: "TESTFILE", Direction: server.DirectionBoth, SendDir: e.sendDir, ReceiveDir: e.recvDir,
		RecordLength: 65000, DataCode: 2})
	const size = 64 << 20
	data := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	os.WriteFile(filepath.Join(e.sendDir, "TESTFILE"), data, 0o640)
	p := dial(t, e.srv.Addr())
	p.connect()
	p.selectAndRead("TESTFILE", 0, false, 0)
	got := 0
	for got < 1<<20 {
		got += len(p.expect(fpdu.DTF).Data)
	}
	p.sendKind(fpdu.IDT, diagParam(fpdu.DiagVoluntaryStop), uintParam(fpdu.PIEndCode, 16))
	for {
		f := p.expectAny()
		if f.Kind == fpdu.AckIDT {
			break
		}
		if f.Kind != fpdu.DTF {
			t.Fatalf("%v before ACK(IDT)", f.Kind)
		}
		got += len(f.Data)
	}
	if got >= size/2 {
		t.Fatalf("the server sent %d of %d bytes before answering IDT", got, size)
	}
	p.closeFile()
	p.release()
	if r, _ := e.jnl.Last(); r.Outcome == nil || r.Outcome.Status != server.StatusCancelled {
		t.Fatalf("outcome %+v", r.Outcome)
	}
}
