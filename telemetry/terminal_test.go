//go:build linux

package telemetry_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vectis-ft/vectis/telemetry"
)

// openPTY returns the two ends of a fresh pseudo-terminal.
func openPTY(t *testing.T) (ptm, pts *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal on this machine: %v", err)
	}
	fd := int(m.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		t.Skipf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		m.Close()
		t.Skipf("pty number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Skipf("open pty slave: %v", err)
	}
	t.Cleanup(func() { s.Close(); m.Close() })
	return m, s
}

// TestAutoFormatOnTerminal: "auto" writes readable text to a terminal and
// JSON to anything else (a file, a pipe to a log collector).
func TestAutoFormatOnTerminal(t *testing.T) {
	ptm, pts := openPTY(t)
	h, err := telemetry.NewLogHandler(pts, telemetry.LogFormatAuto, slog.LevelInfo)
	if err != nil {
		t.Fatal(err)
	}
	slog.New(h).Info("hello terminal", "k", "v")
	_ = ptm.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	var got bytes.Buffer
	for !strings.Contains(got.String(), "\n") {
		n, err := ptm.Read(buf)
		if err != nil {
			t.Fatalf("read terminal: %v (so far %q)", err, got.String())
		}
		got.Write(buf[:n])
	}
	if line := got.String(); !strings.Contains(line, `level=INFO msg="hello terminal" k=v`) || strings.HasPrefix(line, "{") {
		t.Errorf("terminal output %q, want text", line)
	}

	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, _ = telemetry.NewLogHandler(f, telemetry.LogFormatAuto, slog.LevelInfo)
	slog.New(h).Info("hello file")
	b, _ := os.ReadFile(f.Name())
	if !bytes.HasPrefix(b, []byte(`{"time":`)) {
		t.Errorf("file output %q, want JSON", b)
	}
}
