package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/pesit/client"
)

// TestPushRestartAfterKill: `vectis serve` is killed (SIGKILL) in the
// middle of a push with sync points; a new `vectis serve` on the same
// directory and store resumes the push from the last point it acknowledged
// (or a later one it had made durable), and delivers the file whole. A
// sync point costs one fsync (the file's restart index with its data) and
// a store write without a flush of its own: neither may lose an
// acknowledged point to a crash of the process.
func TestPushRestartAfterKill(t *testing.T) {
	dir := t.TempDir()
	const size = 128 << 20
	data := make([]byte, size)
	_, _ = rand.Read(data)
	src := filepath.Join(t.TempDir(), "src.bin")
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	opts := serveOpts{maxSessions: 10, partners: []string{"BENCH"}, dir: dir}
	push := func(s *served) (client.Result, error) {
		return client.Push(context.Background(), realConfig(s.pesit, "BENCH", pw("BENCH"), "PESITSRV", true),
			client.SendRequest{Source: src, VirtualFile: "INBOX", EntitySize: entitySize, StateDir: state, TransferID: 0x1717}, client.Retry{})
	}

	first := startServe(t, opts)
	done := make(chan error, 1)
	go func() { _, err := push(first); done <- err }()
	// Kill it once a good part of the file is on its disk.
	testenv.Eventually(t, time.Minute, func() error {
		m, _ := filepath.Glob(filepath.Join(dir, "in", "BENCH", ".*.part"))
		if len(m) != 1 {
			return fmt.Errorf("partial files %v, want one", m)
		}
		st, err := os.Stat(m[0])
		if err != nil {
			return err
		}
		if st.Size() < 16<<20 {
			return fmt.Errorf("partial file of %d bytes, want 16 MiB", st.Size())
		}
		return nil
	})
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.done <- <-first.done // stop() waits on it at cleanup
	if err := <-done; err == nil {
		t.Fatal("the push completed before the server was killed; make the file larger")
	}
	acked := ackedPoint(t, state)
	if acked == 0 {
		t.Fatal("no sync point acknowledged before the kill")
	}

	second := startServe(t, opts)
	res, err := push(second)
	if err != nil {
		t.Fatalf("restarted push: %v", err)
	}
	t.Logf("killed after sync point %d was acknowledged; resumed from %d of %d", acked, res.RestartPoint, res.SyncPoints)
	if !res.Restarted || res.RestartPoint < acked {
		t.Fatalf("restart %+v: resumed from point %d, the server had acknowledged %d", res, res.RestartPoint, acked)
	}
	got, err := filepath.Glob(filepath.Join(dir, "in", "BENCH", "INBOX-*"))
	if err != nil || len(got) != 1 {
		t.Fatalf("delivered files %v (%v)", got, err)
	}
	b, err := os.ReadFile(got[0])
	if err != nil || !bytes.Equal(b, data) {
		t.Fatalf("delivered file differs from the source (%d bytes, %v)", len(b), err)
	}
}

// ackedPoint reads the last acknowledged sync point from the client's
// restart state (its one file in dir).
func ackedPoint(t *testing.T, dir string) uint32 {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if len(names) != 1 {
		t.Fatalf("client restart state: %v, want one file", names)
	}
	b, err := os.ReadFile(filepath.Join(dir, names[0]))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Acked uint32 `json:"acked"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("client restart state %s: %v", strings.TrimSpace(string(b)), err)
	}
	return st.Acked
}
