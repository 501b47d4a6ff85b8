package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/fsm"
)

// The connection layer: every FPDU the session sends or receives passes
// through the requester's protocol machine (pesit/fsm), the one authority
// on what is valid when. A received FPDU the machine refuses ends the
// session with ABORT and the machine's diagnostic, as the server does; one
// we would send and it refuses is a bug here, and never reaches the wire.

// watch forces the connection deadline into the past when ctx is done, so
// that a blocked read or write returns at once; during the data phase of a
// push (graceful) it leaves cancelGrace to the transfer to end with IDT
// first. The returned function stops watching.
func (s *Session) watch(ctx context.Context) func() {
	s.canceled.Store(false)
	var mu sync.Mutex
	var grace *time.Timer
	stopped := false
	force := func() {
		s.graceful.Store(false)
		_ = s.conn.SetDeadline(time.Unix(1, 0))
	}
	stop := context.AfterFunc(ctx, func() {
		s.canceled.Store(true)
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		if s.graceful.Load() {
			grace = time.AfterFunc(cancelGrace, func() {
				mu.Lock()
				defer mu.Unlock()
				if !stopped {
					force()
				}
			})
			return
		}
		force()
	})
	return func() {
		stop()
		mu.Lock()
		stopped = true
		if grace != nil {
			grace.Stop()
		}
		mu.Unlock()
	}
}

// cancelGrace bounds the orderly end (IDT, ACK(IDT), CRF, DESELECT) of a
// cancelled push.
const cancelGrace = 2 * time.Second

// cancelNow reports a cancellation that must cut the connection now.
func (s *Session) cancelNow() bool { return s.canceled.Load() && !s.graceful.Load() }

// arm sets the inactivity deadline Tp for the next exchange.
func (s *Session) arm() {
	_ = s.conn.SetDeadline(time.Now().Add(s.tp))
	if s.cancelNow() {
		_ = s.conn.SetDeadline(time.Unix(1, 0))
	}
}

// sent records f with the protocol machine before f goes on the wire.
func (s *Session) sent(f *fpdu.FPDU) error {
	if err := s.m.Sent(f); err != nil {
		s.log.Error("refusing to send an FPDU the protocol does not allow", "err", err)
		_ = s.Abort(fpdu.DiagProtocolError)
		return fmt.Errorf("send %s: %w", f.Kind, err)
	}
	return nil
}

// write sends f at once.
func (s *Session) write(f *fpdu.FPDU) error {
	if s.broken {
		return &ConnectionError{Op: "send " + f.Kind.String(), Err: net.ErrClosed}
	}
	if err := s.sent(f); err != nil {
		return err
	}
	s.arm()
	if err := s.w.Write(f); err != nil {
		return s.ioError("send "+f.Kind.String(), err)
	}
	return nil
}

// queue adds f to the write buffer (data phase: DTFs go out concatenated).
func (s *Session) queue(f *fpdu.FPDU) error {
	if err := s.sent(f); err != nil {
		return err
	}
	if err := s.w.Queue(f); err != nil {
		return s.ioError("send "+f.Kind.String(), err)
	}
	return nil
}

// maxIgnored bounds the FPDUs in a row that the machine ignores (data the
// server sent before it saw our IDT): a server that never acknowledges
// would otherwise keep the session reading forever.
const maxIgnored = 1 << 20

// next reads the next FPDU the machine does not ignore, re-arming the
// inactivity deadline. An ABORT becomes an *AbortError.
func (s *Session) next() (*fpdu.FPDU, error) { return s.read(true) }

// read is next, re-arming the deadline only when arm is set (the hot path
// of a pull re-arms every Tp/8, not per DTF).
func (s *Session) read(arm bool) (*fpdu.FPDU, error) {
	for range maxIgnored {
		if s.broken {
			return nil, &ConnectionError{Op: "read", Err: net.ErrClosed}
		}
		if arm {
			s.arm()
		}
		f, err := s.r.Next()
		if err != nil {
			return nil, s.readError(err)
		}
		act, err := s.received(f)
		if err != nil {
			return nil, err
		}
		if act != fsm.Ignore {
			return f, nil
		}
		s.log.Debug("pesit FPDU ignored (collision)", "kind", f.Kind.String(), "state", s.m.State().String())
	}
	return nil, s.protocolError(fpdu.DiagProtocolError, "%d FPDUs in a row ignored while waiting for an answer", maxIgnored)
}

// received hands a received FPDU to the machine: a refusal aborts the
// session with the machine's diagnostic, an ABORT closes it.
func (s *Session) received(f *fpdu.FPDU) (fsm.Action, error) {
	act, err := s.m.Received(f)
	if err != nil { // fsm.IsViolation allocates: not on the data path
		d := fpdu.DiagProtocolError
		if v, ok := fsm.IsViolation(err); ok {
			d = v.Diag
		}
		return 0, s.protocolError(d, "%v", err)
	}
	if f.Kind == fpdu.Abort {
		d, _ := f.Params.Diagnostic()
		s.broken = true
		_ = s.conn.Close()
		return 0, &AbortError{Diagnostic: d}
	}
	return act, nil
}

// expect reads the next FPDU and checks its kind. A server IDT (valid where
// the machine allows it) is acknowledged and returned as a *TransferError.
func (s *Session) expect(kind fpdu.Kind) (*fpdu.FPDU, error) {
	f, err := s.next()
	if err != nil {
		return nil, err
	}
	if f.Kind == kind {
		return f, nil
	}
	if f.Kind == fpdu.IDT {
		return nil, s.answerIDT(f)
	}
	return nil, s.protocolError(fpdu.DiagProtocolError, "expected %s, got %s", kind, f.Kind)
}

// expectOK is expect plus a check of PI 2.
func (s *Session) expectOK(kind fpdu.Kind) (*fpdu.FPDU, error) {
	f, err := s.expect(kind)
	if err != nil {
		return nil, err
	}
	if d, ok := f.Params.Diagnostic(); ok && !d.OK() {
		text, _ := f.Params.String(fpdu.PIDiagComplement)
		if text == "" {
			text, _ = f.Params.String(fpdu.PIFreeMessage)
		}
		return f, &TransferError{Op: kind, Diagnostic: d, Text: text}
	}
	return f, nil
}

// answerIDT acknowledges a server IDT and turns it into an error.
func (s *Session) answerIDT(f *fpdu.FPDU) error {
	idt := fpdu.ReadIDT(f)
	te := &TransferError{Op: fpdu.IDT, Diagnostic: idt.Diag, EndCode: idt.EndCode}
	if err := s.write(fpdu.NewAckIDT(s.peer)); err != nil {
		return errors.Join(te, err)
	}
	return te
}

// protocolError aborts the connection with d and returns a *ProtocolError.
func (s *Session) protocolError(d fpdu.Diagnostic, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	s.log.Debug("pesit protocol error", "diag", d.String(), "msg", msg)
	_ = s.Abort(d)
	return &ProtocolError{Diagnostic: d, Msg: msg}
}

// readError classifies a read failure: a stream cut inside a frame is a
// transport failure; anything else the codec rejects is the server's
// protocol error, answered with ABORT.
func (s *Session) readError(err error) error {
	var d fpdu.Diagnostic
	if errors.As(err, &d) && !errors.Is(err, fpdu.ErrTruncated) && !s.canceled.Load() {
		return s.protocolError(d, "decode: %v", err)
	}
	return s.ioError("read", err)
}

// ioError marks the session broken and classifies err: a cancellation of the
// caller's context, or a transport failure.
func (s *Session) ioError(op string, err error) error {
	s.log.Debug("pesit connection failed", "op", op, "err", err)
	s.broken = true
	_ = s.conn.Close()
	if s.canceled.Load() {
		return fmt.Errorf("%s: %w", op, context.Canceled)
	}
	return &ConnectionError{Op: op, Err: err}
}
