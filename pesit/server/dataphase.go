package server

import (
	"fmt"
	"net"

	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// This file is what the receive and the send data phases share: the
// interruption (IDT) either side may make or answer, the end of the
// transfer (TRANS.END), the writes of the data phase. Both reach it through
// the session; neither reaches into the other.

// ioDiag wraps a file error in the diagnostic the peer sees.
func ioDiag(err error) error {
	if isNoSpace(err) {
		return fmt.Errorf("%w: %w", fpdu.DiagSpaceExhausted, err)
	}
	return fmt.Errorf("%w: %w", fpdu.DiagIOError, err)
}

// restartable says whether an interruption for d may be followed by a
// restart (PI 19 = 4) or is final (PI 19 = 12).
func restartable(d fpdu.Diagnostic) bool {
	return d == fpdu.DiagSpaceExhausted || d == fpdu.DiagIOError || d == fpdu.DiagSystemError
}

// localIDT sends IDT for a local error during the data phase.
func (s *session) localIDT(cause error) error {
	d := diagOf(cause, fpdu.DiagSystemError)
	code := uint64(endCancelledByServer)
	if restartable(d) {
		code = endRestart
	}
	s.log.Warn("interrupting transfer", "diag", d.String(), "err", cause)
	if x := s.xfer; x != nil {
		x.span.RecordError(cause)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.idtPending.Load() {
		return nil // the admin API got there first
	}
	return s.writeIDTLocked(d, code)
}

// writeUnlessIDT sends an answer to what the peer sent during the data
// phase, unless an IDT of ours went out meanwhile (another goroutine may
// send one): the peer's FPDU crossed it and gets no answer.
func (s *session) writeUnlessIDT(f *fpdu.FPDU) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.idtPending.Load() {
		return nil
	}
	return s.writeLocked(f)
}

// peerIDT answers an IDT from the requester (digest §4.6).
func (s *session) peerIDT(f *fpdu.FPDU) error {
	d, _ := f.Params.Diagnostic()
	code, _ := f.Params.Uint(fpdu.PIEndCode)
	if err := s.write(&fpdu.FPDU{Kind: fpdu.AckIDT, DstID: s.peerID}); err != nil {
		return err
	}
	s.srv.countDiag(d)
	s.interrupted(d, code, "interrupted by the requester")
	return nil
}

// interrupted records an IDT exchange (the state machine keeps the ab
// flag): the transfer is kept for a restart (PI 19 = 4, 8 or absent) or
// dropped (12, 16).
func (s *session) interrupted(d fpdu.Diagnostic, code uint64, why string) {
	x := s.xfer
	x.side.settle()
	s.dataPhase.Store(false)
	s.idtPending.Store(false)
	st := StatusCancelled
	if code == 0 || code == endRestart || code == endSuspended {
		st = StatusInterrupted
	}
	if d.OK() {
		d = fpdu.DiagVoluntaryStop
	}
	detail := fmt.Sprintf("%s (PI 19 = %d)", why, code)
	// The journal before the file: a transfer lost to another owner
	// leaves its file as it is (side.release).
	switch {
	case x.finished:
	case x.lost:
		s.settle(s.outcome(st, d, detail))
	default:
		s.finish(st, d, detail)
	}
	x.side.release(st == StatusInterrupted)
	x.resumable = st == StatusInterrupted && !x.lost
}

// awaitAckIDT waits for ACK(IDT) after we sent IDT, dropping the data that
// was in flight. An IDT from the requester at the same time wins.
func (s *session) awaitAckIDT(f *fpdu.FPDU) error {
	d := fpdu.Diagnostic(s.idtDiag.Load())
	code := uint64(s.idtCode.Load())
	s.setReadDeadline(s.srv.cfg.InactivityTimeout)
	for {
		if f == nil {
			var err error
			if f, err = s.next(); err != nil {
				return s.readErr(err)
			}
		}
		switch f.Kind {
		case fpdu.AckIDT:
			s.interrupted(d, code, "interrupted by the server")
			return nil
		case fpdu.IDT:
			return s.peerIDT(f)
		case fpdu.Abort:
			return s.peerAbort(f)
		}
		f = nil
	}
}

// notDurable answers a TRANS.END whose outcome the journal did not take
// within Tp (or refused: the transfer was taken over). TRANS.END is not
// acknowledged: IDT 2/215 with PI 19 = 4 (restart will follow) keeps the
// partner's restart state, where a negative ACK(TRANS.END) would end the
// exchange for good (digest §4.6; docs/interop.md). The record keeps its
// last sync point, from which the restart resumes; ACK(IDT) is awaited for
// at most Tp, as any IDT of ours.
func (s *session) notDurable(cause error) error {
	s.wmu.Lock()
	err := s.writeIDTLocked(fpdu.DiagSystemError, endRestart)
	s.wmu.Unlock()
	if err != nil {
		return err
	}
	if x := s.xfer; x != nil {
		x.span.RecordError(cause)
	}
	return s.awaitAckIDT(nil)
}

// checkTransEnd checks the requester's TRANS.END counts against ours, of
// a data phase that began at start.
func (s *session) checkTransEnd(f *fpdu.FPDU, bytes, articles int64, start syncPoint) error {
	b, okb := f.Params.Uint(fpdu.PIByteCount)
	a, oka := f.Params.Uint(fpdu.PIArticleCount)
	return s.checkCounts(bytes, articles, start, b, a, okb, oka)
}

func (s *session) ackTransEnd(d fpdu.Diagnostic, bytes, articles int64) error {
	s.srv.countDiag(d)
	a := fpdu.FPDU{Kind: fpdu.AckTransEnd, DstID: s.peerID}
	a.Params.AddDiagnostic(d)
	a.Params.AddUint(fpdu.PIByteCount, uint64(bytes))
	a.Params.AddUint(fpdu.PIArticleCount, uint64(articles))
	return s.write(&a)
}

// flush writes out what queue queued.
func (s *session) flush() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed {
		return net.ErrClosed
	}
	s.renewWriteDeadline()
	return s.w.Flush()
}

// queue adds a concatenable FPDU unless an IDT went out meanwhile.
func (s *session) queue(f *fpdu.FPDU) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.idtPending.Load() {
		return errIDTSent
	}
	if s.closed {
		return fmt.Errorf("queue %v: connection closed", f.Kind)
	}
	if err := s.m.Sent(f); err != nil {
		s.log.Error("refusing to send an invalid FPDU", "err", err)
		return fmt.Errorf("queue %v: %w", f.Kind, err)
	}
	if err := s.w.Queue(f); err != nil {
		return fmt.Errorf("queue %v: %w", f.Kind, err)
	}
	return nil
}

// setEntitySize bounds the concatenation of queued FPDUs to the negotiated
// PI 25 (a send).
func (s *session) setEntitySize(n int) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.w.SetEntitySize(n)
}

// articles are those of the data FPDU the machine let through last, as it
// split them (fsm.Machine.Articles): the DTF's headers are walked once. Only
// the session goroutine's own reads change them.
func (s *session) articles() [][]byte { return s.m.Articles() }
