//go:build linux

package server_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/server"
)

// TestDiskFull: a real full file system (a 128 KiB tmpfs) makes the server
// interrupt with IDT 2/219 and PI 19 = 4 (a restart may follow).
func TestDiskFull(t *testing.T) {
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=128k"); err != nil {
		t.Skipf("cannot mount a tmpfs here (needs CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, 0) })
	e := newEnv(t, func(c *server.Config) { c.WriteBuffer = 16 << 10 })
	e.dir.AddFile(server.VirtualFile{ID: "FULL", Direction: server.DirectionReceive, ReceiveDir: mnt, RecordLength: 1024})
	p := dial(t, e.srv.Addr())
	p.connect()
	p.openForWrite(createOpts{file: "FULL", pi13: 77})
	data := randomData(1<<20, 4)
	var f *fpdu.FPDU
	// Push until the server interrupts; its IDT may cross our SYN. The
	// window of 2 is kept: the server acknowledges a point once it is
	// durable, off its read loop, and takes data past the window for the
	// protocol error it is (2/217).
	// acks carries the latest acknowledged point to the writer, which
	// waits on it while its window is full.
	acks := make(chan uint64, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		defer func() { recover() }()
		var acked uint64
		for off, n := 0, uint64(0); off < len(data); off += 1024 {
			if off > 0 && off%32768 == 0 {
				n++
				if p.w.Write(fpdu.New(fpdu.Syn, p.srvID, 0, uintParam(fpdu.PISyncNumber, n))) != nil {
					return
				}
				for n-acked >= 2 {
					select {
					case <-stop:
						return
					case acked = <-acks:
					}
				}
			}
			if p.w.Write(&fpdu.FPDU{Kind: fpdu.DTF, DstID: p.srvID, Data: data[off : off+1024]}) != nil {
				return
			}
		}
	}()
	for {
		f = p.expectAny()
		if f.Kind == fpdu.IDT {
			break
		}
		if f.Kind != fpdu.AckSyn {
			t.Fatalf("got %v before IDT", f.Kind)
		}
		n, _ := f.Params.Uint(fpdu.PISyncNumber)
		select { // the writer wants only the latest
		case <-acks:
		default:
		}
		acks <- n
	}
	if d, _ := f.Params.Diagnostic(); d != fpdu.DiagSpaceExhausted {
		t.Fatalf("IDT %v, want 2/219", d)
	}
	if c, _ := f.Params.Uint(fpdu.PIEndCode); c != 4 {
		t.Fatalf("IDT PI 19 = %d, want 4", c)
	}
	p.c.Close() // stops the writer goroutine
	testenv.Eventually(t, 5*time.Second, testenv.Awaiting("session end", func() bool { return e.srv.ActiveSessions() == 0 }))
	if _, err := os.Stat(filepath.Join(mnt, "FULL")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("partial file under its final name")
	}
	if r, _ := e.jnl.Last(); r.Outcome == nil || r.Outcome.Diagnostic != fpdu.DiagSpaceExhausted {
		t.Fatalf("outcome %+v", r.Outcome)
	}
}
