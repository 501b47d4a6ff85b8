package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Process is one external program that a test runs in the background (etcd,
// kube-apiserver, postgres), restartable with the same settings. Its output
// goes to a log file that survives restarts, for the tail a failed test
// prints. The owner stops it; Stop waits for the exit, so no process or
// goroutine outlives the test.
type Process struct {
	Name string   // in errors and log tails
	Bin  string   // the program
	Args []string // its arguments, read at each Start
	Log  string   // the file that receives stdout and stderr (appended)

	// Dir, Env and Credential, when set, are the process's working
	// directory, environment and user (postgres refuses to run as root).
	Dir        string
	Env        []string
	Credential *syscall.Credential

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd has been waited for
	paused bool
}

// Start starts the program. stdin, if not nil, is its standard input.
func (p *Process) Start(stdin io.Reader) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("start %s: already running", p.Name)
	}
	logf, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	cmd := exec.Command(p.Bin, p.Args...)
	cmd.Dir, cmd.Env = p.Dir, p.Env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, logf, logf
	// Own process group: a ^C on the test does not reach the program
	// first, and the test decides when it stops.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: p.Credential}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(exited)
	}()
	p.cmd, p.exited, p.paused = cmd, exited, false
	return nil
}

// Running reports whether the process is alive (paused counts as alive).
func (p *Process) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Exited is closed when the process started last has exited; nil when none
// was started.
func (p *Process) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exited
}

// Pause freezes the process with SIGSTOP: its sockets stay open but
// nothing answers, like a hung machine.
func (p *Process) Pause() error { return p.freeze(syscall.SIGSTOP, "pause", true) }

// Resume continues a paused process with SIGCONT.
func (p *Process) Resume() error { return p.freeze(syscall.SIGCONT, "resume", false) }

func (p *Process) freeze(sig syscall.Signal, verb string, paused bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return fmt.Errorf("%s %s: not running", verb, p.Name)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("%s %s: %w", verb, p.Name, err)
	}
	p.paused = paused
	return nil
}

// ErrKilled is returned by Stop when the process ignored its signal for
// the whole grace period and was killed.
var ErrKilled = errors.New("no exit within the grace period, killed")

// Stop sends sig and waits up to grace for the exit, then kills the
// process group (SIGKILL: the program and any child it left) and waits for
// that. A stopped process is a no-op.
func (p *Process) Stop(sig syscall.Signal, grace time.Duration) error {
	return p.StopWith(grace,
		func(cmd *exec.Cmd) { _ = cmd.Process.Signal(sig) },
		func(cmd *exec.Cmd) { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
}

// StopWith is Stop with the program's own ways to ask for an exit and to
// force one (postgres stops when its standard input closes, and its
// postmaster is killed by pid).
func (p *Process) StopWith(grace time.Duration, ask, force func(*exec.Cmd)) error {
	p.mu.Lock()
	cmd, exited, paused := p.cmd, p.exited, p.paused
	p.cmd, p.paused = nil, false
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	if paused {
		// A stopped process only acts on a signal other than SIGKILL
		// once continued.
		_ = cmd.Process.Signal(syscall.SIGCONT)
	}
	ask(cmd)
	select {
	case <-exited:
		return nil
	case <-time.After(grace):
		force(cmd)
		<-exited
		return fmt.Errorf("stop %s: %w (%v)", p.Name, ErrKilled, grace)
	}
}

// WaitReady calls ready every interval until it succeeds, the process
// exits, or ctx ends; the error then says which, with ready's last error.
func (p *Process) WaitReady(ctx context.Context, interval time.Duration, ready func(context.Context) error) error {
	exited := p.Exited()
	if exited == nil {
		return fmt.Errorf("%s: not started", p.Name)
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		last := ready(ctx)
		if last == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("%s exited (log %s): %w", p.Name, p.Log, last)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w (last error: %v)", p.Name, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// LogTail is the last max bytes of the log.
func (p *Process) LogTail(max int) string {
	b, err := os.ReadFile(p.Log)
	if err != nil {
		return ""
	}
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

// LogTailTo writes the last max bytes of the log to the test's output.
func (p *Process) LogTailTo(t testing.TB, max int) {
	t.Helper()
	if tail := p.LogTail(max); tail != "" {
		t.Logf("%s log tail:\n%s", p.Name, tail)
	}
}
