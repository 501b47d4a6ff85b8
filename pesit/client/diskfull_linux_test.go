//go:build linux

package client

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestPullDiskFull pulls into a real full file system (a 256 KiB tmpfs): the
// client interrupts with IDT (2/213, PI 19 = 4), closes the file, reports a
// *LocalError, leaves nothing under the final name, and the session stays
// usable.
func TestPullDiskFull(t *testing.T) {
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=256k"); err != nil {
		t.Skipf("cannot mount a tmpfs here (needs CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(mnt, 0) })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ts := startServer(t, serverOpts{syncKB: 64, window: 2, entity: 4096})
	writeRandom(t, ts.out, "BIG", 4<<20, 9)
	s, err := Dial(ctx, ts.config(false, 64, 2))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	dst := filepath.Join(mnt, "big.bin")
	_, err = s.Receive(ctx, ReceiveRequest{VirtualFile: "BIG", Dest: dst, StateDir: t.TempDir()})
	var le *LocalError
	if !errors.As(err, &le) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("pull into a full file system: %v, want a *LocalError wrapping ENOSPC", err)
	}
	if Retryable(err) {
		t.Error("a local I/O error must not be retried")
	}
	if _, err := os.Stat(dst); err == nil {
		t.Fatal("a partial file appeared under the final name")
	}
	if err := s.Message(ctx, "still here"); err != nil {
		t.Fatalf("session unusable after our IDT: %v", err)
	}
	if err := s.Release(ctx); err != nil {
		t.Fatal(err)
	}
	ts.jnl.mu.Lock()
	defer ts.jnl.mu.Unlock()
	if o := ts.jnl.recs[0].outcome; o == nil || o.Status == "done" {
		t.Fatalf("server outcome %+v, want an interrupted transfer", o)
	}
}
