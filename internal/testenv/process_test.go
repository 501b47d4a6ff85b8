package testenv

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func shell(t *testing.T, script string) *Process {
	t.Helper()
	p := &Process{Name: "sh", Bin: "/bin/sh", Args: []string{"-c", script}, Log: filepath.Join(t.TempDir(), "sh.log")}
	if err := p.Start(nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(syscall.SIGKILL, time.Second) })
	return p
}

// TestWaitReadyReportsExit: a program that dies during start-up ends the
// wait at once, with its last words in the log.
func TestWaitReadyReportsExit(t *testing.T) {
	p := shell(t, "echo bad flag; exit 3")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := p.WaitReady(ctx, 10*time.Millisecond, func(context.Context) error { return errors.New("refused") })
	if err == nil || !strings.Contains(err.Error(), "exited") || ctx.Err() != nil {
		t.Fatalf("WaitReady = %v (ctx %v); want an exit before the deadline", err, ctx.Err())
	}
	if tail := p.LogTail(100); tail != "bad flag\n" {
		t.Fatalf("log tail %q", tail)
	}
	if p.Running() {
		t.Fatal("running after exit")
	}
}

// TestStopKillsAfterGrace: a program that ignores its signal is killed
// once the grace period is over, and Stop says so.
func TestStopKillsAfterGrace(t *testing.T) {
	p := shell(t, `trap "" TERM; echo up; while :; do sleep 1; done`)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.WaitReady(ctx, 10*time.Millisecond, func(context.Context) error {
		if p.LogTail(10) != "up\n" {
			return errors.New("no trap yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(syscall.SIGTERM, 100*time.Millisecond); !errors.Is(err, ErrKilled) {
		t.Fatalf("Stop = %v; want ErrKilled", err)
	}
	if p.Running() {
		t.Fatal("running after Stop")
	}
	if err := p.Start(nil); err != nil {
		t.Fatalf("restart after Stop: %v", err)
	}
}

// TestPollReturnsLastError: a condition that never holds ends the poll
// with its own last words; one that comes true ends it at once.
func TestPollReturnsLastError(t *testing.T) {
	calls := 0
	err := Poll(20*time.Millisecond, func() error { calls++; return fmt.Errorf("call %d", calls) })
	if err == nil || err.Error() != fmt.Sprintf("call %d", calls) || calls < 2 {
		t.Fatalf("Poll = %v after %d calls; want the last call's error", err, calls)
	}
	calls = 0
	if err := Poll(time.Hour, Until(func() bool { calls++; return calls == 3 })); err != nil || calls != 3 {
		t.Fatalf("Poll = %v after %d calls; want nil after 3", err, calls)
	}
}

// TestAwaitingNamesTheWait: a condition that stays false fails with what
// the test waited for, so the failure reads without the source at hand.
func TestAwaitingNamesTheWait(t *testing.T) {
	err := Poll(10*time.Millisecond, Awaiting("session end", func() bool { return false }))
	if err == nil || err.Error() != "still waiting for session end" {
		t.Fatalf("Poll = %v; want it to name the wait", err)
	}
	if err := Poll(time.Hour, Awaiting("nothing", func() bool { return true })); err != nil {
		t.Fatalf("Poll = %v on a true condition", err)
	}
}
