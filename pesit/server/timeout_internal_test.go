package server

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// TestTransportTimeoutIsNotIdle: a read that fails with ETIMEDOUT (TCP
// keep-alive or retransmissions gave up) is a lost connection. It used to be
// reported as ABORT 3/313 "idle for 1h0m0s" between transfers, and as 3/317
// "peer silent" elsewhere, because net.Error.Timeout() is true for both it
// and our own deadline. The error is built by hand: loopback cannot lose
// segments, so the real socket never produces ETIMEDOUT here.
func TestTransportTimeoutIsNotIdle(t *testing.T) {
	etimedout := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ETIMEDOUT)}
	if ne := net.Error(etimedout); !ne.Timeout() {
		t.Fatal("premise: ETIMEDOUT is a net.Error timeout")
	}
	deadline := &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	s := &session{}
	for _, tc := range []struct {
		name string
		err  error
		want fpdu.Diagnostic // 0: no ABORT, the connection is lost
	}{
		{"idle deadline", deadline, fpdu.DiagIdleTimeout},
		{"wrapped idle deadline", fmt.Errorf("next: %w", deadline), fpdu.DiagIdleTimeout},
		{"transport timeout", etimedout, 0},
		{"wrapped transport timeout", fmt.Errorf("next: %w", etimedout), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.idleReadErr(tc.err, time.Hour)
			var ae *abortError
			switch {
			case tc.want == 0 && errors.As(err, &ae):
				t.Errorf("%v reported as ABORT %v (%s)", tc.err, ae.diag, ae.detail)
			case tc.want != 0 && (!errors.As(err, &ae) || ae.diag != tc.want):
				t.Errorf("%v: got %v, want ABORT %v", tc.err, err, tc.want)
			}
		})
	}
	// During a transfer the same holds: only our deadline is "peer silent".
	if err := s.readErr(etimedout); errors.As(err, new(*abortError)) {
		t.Errorf("readErr(ETIMEDOUT) = %v, want a lost connection", err)
	}
	var ae *abortError
	if err := s.readErr(deadline); !errors.As(err, &ae) || ae.diag != fpdu.DiagTimerExpired {
		t.Errorf("readErr(deadline) = %v, want ABORT 3/317", err)
	}
}
