package server

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"

	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/fsm"
	"github.com/vectis-ft/vectis/pesit/internal/codepage"
)

// receive handles WRITE and the data phase TDE02B..TDE07 (digest §4.1).
func (s *session) receive(f *fpdu.FPDU) error {
	x := s.xfer
	srv := s.srv
	point := uint32(0)
	var err error
	if x.sink == nil && x.published {
		rs := x.restart
		if x.sink, err = verifySink(x.root, x.finalRel, srv.cfg.WriteBuffer, rs.Offset, rs.Articles); err != nil {
			// Never start the file again over its published copy.
			s.log.Error("cannot check the published file of a restart", "file", x.finalRel, "err", err)
			return s.writeAck(fpdu.AckWrite, fpdu.DiagIOError)
		}
		point = rs.Sync
		s.hookSink(x.sink, x.ref)
	}
	if x.sink == nil && x.restart != nil {
		rs := x.restart
		x.sink, err = resumeSink(x.root, x.tempRel, x.finalRel, srv.cfg.WriteBuffer, rs.Offset, rs.Articles)
		if err == nil {
			point = rs.Sync
			s.hookSink(x.sink, x.ref)
		} else {
			// 0 is always a legal restart point: start the file again.
			s.log.Warn("cannot resume, restarting from 0", "err", err)
			x.root.Remove(x.tempRel)
		}
	}
	if x.sink == nil {
		x.sink, err = createSink(x.root, x.tempRel, x.finalRel, srv.cfg.WriteBuffer)
		if err != nil {
			d := fpdu.DiagIOError
			if isNoSpace(err) {
				d = fpdu.DiagSpaceExhausted
			} else if errors.Is(err, fs.ErrExist) {
				d = fpdu.DiagFileBusy
			}
			s.log.Error("cannot create temporary file", "file", x.tempRel, "err", err)
			return s.writeAck(fpdu.AckWrite, d)
		}
		s.hookSink(x.sink, x.ref)
	}
	x.restartAt = point
	x.lastSync = syncPoint{num: point, offset: x.sink.bytes, articles: x.sink.articles, data: x.dataBytes(x.sink.bytes, x.sink.articles)}
	x.startPoint = x.lastSync
	x.inSeg = false
	x.dataStarted = true
	ack := fpdu.FPDU{Kind: fpdu.AckWrite, DstID: s.peerID}
	ack.Params.AddDiagnostic(fpdu.DiagOK)
	ack.Params.AddUint(fpdu.PIRestartPoint, uint64(point))
	if err := s.write(&ack); err != nil {
		return err
	}
	s.log.Info("receiving", "id", x.ref.ID, "restart_point", point, "offset", x.sink.bytes)
	s.dataPhase.Store(true)
	defer s.dataPhase.Store(false)
	return s.receiveLoop()
}

func (s *session) receiveLoop() error {
	err := s.receiveFrames()
	// No ACK(SYN) from the sink's worker once the data phase is over, and
	// the transfer's state holds every point made durable.
	s.settleSyncs()
	return err
}

func (s *session) receiveFrames() error {
	x := s.xfer
	s.setReadDeadline(s.srv.cfg.InactivityTimeout)
	for {
		f, err := s.next()
		if err != nil {
			if v, ok := fsm.IsViolation(err); ok && v.Diag.Type() == 2 && !s.idtPending.Load() {
				// 2/217, 2/222: the transfer, not the connection, is at fault.
				// A failure of the file under way (a full disk) says better
				// why the sender ran out of acknowledgements.
				var cause error = v
				if x.sink != nil {
					if err := x.sink.flush(); err != nil {
						cause = err
					}
					s.collectDurable()
				}
				if !s.idtPending.Load() {
					if err := s.localIDT(cause); err != nil {
						return err
					}
				}
				return s.awaitAckIDT(nil)
			}
			return s.readErr(err)
		}
		s.renewReadDeadline()
		if s.idtPending.Load() {
			return s.awaitAckIDT(f)
		}
		var derr error
		switch f.Kind {
		case fpdu.DTF:
			if x.inSeg {
				return abortf(fpdu.DiagProtocolError, "DTF inside a segmented article")
			}
			if len(f.Data)+fpdu.HeaderLen > x.entity && s.entityExceeded(len(f.Data)+fpdu.HeaderLen) {
				return abortf(fpdu.DiagBadParameter, "DTF of %d bytes, PI 25 = %d (strict partner)", len(f.Data)+fpdu.HeaderLen, x.entity)
			}
			// The machine split the DTF when it checked it; only data
			// FPDUs received here change what Articles holds.
			for _, a := range s.m.Articles() {
				if derr = s.receiveArticle(a); derr != nil {
					break
				}
			}
		case fpdu.DTFDA:
			if x.inSeg {
				return abortf(fpdu.DiagProtocolError, "DTFDA inside a segmented article")
			}
			if len(f.Data)+fpdu.HeaderLen > x.entity && s.entityExceeded(len(f.Data)+fpdu.HeaderLen) {
				return abortf(fpdu.DiagBadParameter, "DTFDA of %d bytes, PI 25 = %d (strict partner)", len(f.Data)+fpdu.HeaderLen, x.entity)
			}
			x.inSeg, x.segLen = true, 0
			derr = s.receiveSegment(f.Data, false)
		case fpdu.DTFMA, fpdu.DTFFA:
			if len(f.Data)+fpdu.HeaderLen > x.entity && s.entityExceeded(len(f.Data)+fpdu.HeaderLen) {
				return abortf(fpdu.DiagBadParameter, "%v of %d bytes, PI 25 = %d (strict partner)", f.Kind, len(f.Data)+fpdu.HeaderLen, x.entity)
			}
			if !x.inSeg {
				return abortf(fpdu.DiagProtocolError, "%v without DTFDA", f.Kind)
			}
			derr = s.receiveSegment(f.Data, f.Kind == fpdu.DTFFA)
		case fpdu.Syn:
			if x.inSeg {
				return abortf(fpdu.DiagProtocolError, "SYN inside a segmented article")
			}
			if err := s.receiveSyn(f); errors.Is(err, errStop) {
				return nil // interrupted: back in OF02
			} else if err != nil {
				return err
			}
		case fpdu.DTFEnd:
			if x.inSeg {
				return abortf(fpdu.DiagProtocolError, "DTF.END inside a segmented article")
			}
			x.dtfEndDiag, _ = f.Params.Diagnostic()
			// Every sync point answered before the data phase ends; a
			// failure to make one durable has sent IDT meanwhile.
			s.settleSyncs()
			if s.idtPending.Load() {
				return s.awaitAckIDT(nil)
			}
			return s.awaitTransEnd()
		case fpdu.IDT:
			return s.peerIDT(f)
		case fpdu.Resyn:
			if err := s.receiveResyn(f); err != nil {
				return err
			}
		case fpdu.Abort:
			return s.peerAbort(f)
		default:
			return abortf(fpdu.DiagProtocolError, "%v while receiving data", f.Kind)
		}
		if derr != nil {
			if d := diagOf(derr, 0); d.Type() == 3 {
				return abortf(d, "%v", derr) // malformed DTF
			}
			if err := s.localIDT(derr); err != nil {
				return err
			}
			return s.awaitAckIDT(nil)
		}
	}
}

// entityExceeded notes a data FPDU of n bytes over the negotiated PI 25.
// The reader takes frames up to 65535 bytes whatever PI 25 says: CX was
// seen to exceed it by a segment, and refusing costs an interoperable
// transfer while accepting costs no memory (the buffer is sized for the
// frame limit). Only a strict partner is held to PI 25.
func (s *session) entityExceeded(n int) bool {
	if slices.Contains(s.xfer.anomalies, AnomalyEntityExceeded) {
		return s.partner.Strict // noted once: no formatting per FPDU
	}
	return s.anomaly(AnomalyEntityExceeded, fmt.Sprintf("data FPDU of %d bytes, PI 25 = %d", n, s.xfer.entity))
}

// receiveArticle takes one complete article.
func (s *session) receiveArticle(a []byte) error {
	if len(a) > s.xfer.recLen {
		return fmt.Errorf("article of %d bytes, PI 32 = %d: %w", len(a), s.xfer.recLen, fpdu.DiagArticleTooLong)
	}
	if err := s.receiveData(a); err != nil {
		return err
	}
	return s.endArticle()
}

// endArticle counts a complete article; a text line gets its "\n".
func (s *session) endArticle() error {
	x := s.xfer
	if x.text {
		if err := x.sink.write(newline); err != nil {
			return ioDiag(err)
		}
	}
	x.sink.articles++
	return nil
}

var newline = []byte{'\n'}

func (s *session) receiveSegment(p []byte, last bool) error {
	x := s.xfer
	x.segLen += len(p)
	if x.segLen > x.recLen {
		return fmt.Errorf("segmented article over %d bytes, PI 32 = %d: %w", x.segLen, x.recLen, fpdu.DiagArticleTooLong)
	}
	if err := s.receiveData(p); err != nil {
		return err
	}
	if last {
		x.inSeg = false
		return s.endArticle()
	}
	return nil
}

func (s *session) receiveData(p []byte) error {
	x := s.xfer
	if x.ebcdic != nil {
		codepage.Translate(p, &x.ebcdic.ToASCII) // p aliases the reader's buffer, ours until the next read
	}
	if x.vf.MaxSize > 0 && x.sink.bytes+int64(len(p)) > x.vf.MaxSize {
		return fmt.Errorf("file over its limit of %d bytes: %w", x.vf.MaxSize, fpdu.DiagFileLargerThanAnnounced)
	}
	if err := x.sink.write(p); err != nil {
		return ioDiag(err)
	}
	return nil
}

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

// receiveSyn takes sync point n, which the state machine numbered and
// checked against the negotiation, the window and the interval.
func (s *session) receiveSyn(f *fpdu.FPDU) error {
	x := s.xfer
	n, _ := f.Params.Uint(fpdu.PISyncNumber)
	// The point is made durable off the session goroutine: the sink's
	// worker fsyncs the data up to here, then the journal records the
	// point, then ACK(SYN) goes out; meanwhile we go on receiving the data
	// that the window lets the sender send. The ACK still follows both
	// fsyncs, in that order (a point is acknowledged only when the data
	// behind it and the way to find it again are durable), and a failure
	// interrupts the transfer with IDT from the worker, as the admin API
	// does from its own goroutine.
	pt := syncPoint{num: uint32(n), offset: x.sink.bytes, articles: x.sink.articles}
	x.syncTried = pt // the file holds it from now on; its journal write is under way
	x.syncCount++
	s.collectDurable()
	x.sink.syncAsync(pt)
	return nil
}

// hookSink makes x.sink's second goroutine journal and acknowledge the
// points made durable, and interrupt the transfer with IDT when one cannot
// be, as the admin API does from its own goroutine.
func (s *session) hookSink(sk *sink, ref TransferRef) {
	sk.onDurable = func(pts []syncPoint) error { return s.pointsDurable(sk, ref, pts) }
	sk.onFail = func(err error) {
		if err := s.localIDT(err); err != nil {
			s.log.Debug("IDT not sent", "err", err)
		}
	}
}

// pointsDurable runs on the sink's second goroutine once the data up to
// the last of pts is durable: it journals that point (it supersedes the
// others as the restart point), then acknowledges each.
func (s *session) pointsDurable(sk *sink, ref TransferRef, pts []syncPoint) error {
	last := pts[len(pts)-1]
	if err := s.srv.jnl.SyncPoint(s.ctx, ref, last.num, last.offset, last.articles); err != nil {
		// Not acknowledged. Lost to another owner: IDT all the same (the
		// partner restarts, and finds the new owner), but the file is
		// left as it is (settleSyncs sets x.lost).
		if errors.Is(err, ErrTransferLost) {
			sk.markLost()
		}
		return fmt.Errorf("journal sync point: %w: %w", fpdu.DiagSystemError, err)
	}
	sk.markDurable(last)
	if m := s.srv.met; m != nil {
		m.SyncPoints.Add(float64(len(pts)))
	}
	if s.syncOption().Window == 0 {
		return nil // W = 0: sync points are not acknowledged
	}
	for _, pt := range pts {
		a := fpdu.FPDU{Kind: fpdu.AckSyn, DstID: s.peerID}
		a.Params.AddUint(fpdu.PISyncNumber, uint64(pt.num))
		// If our IDT (the admin API's) went out while this SYN was in
		// flight, the SYN goes unanswered: after IDT we only wait for
		// ACK(IDT) (TDE05) and the receive loop drops what follows. The
		// point stays durable; the requester knows every point it sent.
		// A write error is the session's to see, on its next read.
		if err := s.writeUnlessIDT(&a); err != nil {
			s.log.Debug("ACK(SYN) not sent", "sync", pt.num, "err", err)
			break
		}
	}
	return nil
}

// collectDurable takes the points the sink's worker made durable into the
// transfer's state (session goroutine).
func (s *session) collectDurable() {
	x := s.xfer
	if x.sink.isLost() {
		x.lost = true
	}
	// The sink's points come in the order they were taken, each at or
	// after the one before it in the file: a restart from p may number its
	// points from 1 again (fsm.SyncWindow.Syn), so the number is no guide.
	pt, ok := x.sink.durable()
	if ok && (pt.offset > x.lastSync.offset || pt.offset == x.lastSync.offset && pt.num != x.lastSync.num) {
		pt.data = x.dataBytes(pt.offset, pt.articles)
		x.lastSync = pt
	}
}

// settleSyncs waits until every sync point handed to the sink's worker is
// durable and answered (or failed), and takes them into the transfer's
// state: before anything that reads that state or ends the data phase.
func (s *session) settleSyncs() {
	x := s.xfer
	if x == nil || x.sink == nil {
		return
	}
	_ = x.sink.wait()
	s.collectDurable()
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

// receiveResyn: the sender asks to resume from point p; we resume from our
// last durable point, which is the last one we acknowledged (RESYN is only
// negotiated with sync points, and every SYN is made durable at once).
func (s *session) receiveResyn(f *fpdu.FPDU) error {
	x := s.xfer
	s.settleSyncs()
	lp := x.lastSync
	if err := x.sink.truncate(lp.offset, lp.articles); err != nil {
		return abortf(fpdu.DiagResyncImpossible, "resync: %v", err)
	}
	x.inSeg, x.syncTried = false, lp
	ack := fpdu.FPDU{Kind: fpdu.AckResyn, DstID: s.peerID}
	ack.Params.AddUint(fpdu.PIRestartPoint, uint64(lp.num))
	return s.writeUnlessIDT(&ack)
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
	s.settleSyncs()
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
	keep := syncPoint{}
	if x.sink != nil && !x.sink.closed && !x.lost {
		keep = x.keptPoint()
	}
	// The journal before the file: a transfer lost to another owner
	// leaves its file as it is (releaseFile).
	switch {
	case x.finished:
	case x.lost:
		s.settle(s.outcome(st, d, detail))
	default:
		s.finish(st, d, detail)
	}
	s.releaseFile(st == StatusInterrupted, keep)
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

// awaitTransEnd is TDE07: after DTF.END, TRANS.END ends the transfer.
func (s *session) awaitTransEnd() error {
	s.dataPhase.Store(false)
	f, err := s.next()
	if err != nil {
		return s.readErr(err)
	}
	switch f.Kind {
	case fpdu.TransEnd:
		return s.receiveTransEnd(f)
	case fpdu.Abort:
		return s.peerAbort(f)
	case fpdu.IDT:
		return s.peerIDT(f)
	}
	return abortf(fpdu.DiagProtocolError, "%v after DTF.END", f.Kind)
}

func (s *session) receiveTransEnd(f *fpdu.FPDU) error {
	x := s.xfer
	sk := x.sink
	data := x.dataBytes(sk.bytes, sk.articles)
	if err := s.checkTransEnd(f, data, sk.articles); err != nil {
		if s.finish(StatusFailed, fpdu.DiagCountMismatch, err.Error()); x.lost {
			sk.abandon()
		} else {
			sk.discard()
		}
		return abortf(fpdu.DiagCountMismatch, "%v", err)
	}
	fail := func(d fpdu.Diagnostic, detail string) error {
		if s.finish(StatusFailed, d, detail); x.lost {
			sk.abandon()
		} else {
			sk.discard()
		}
		return s.ackTransEnd(d, data, sk.articles)
	}
	if !x.dtfEndDiag.OK() {
		return fail(x.dtfEndDiag, "sender ended the data with "+x.dtfEndDiag.String())
	}
	// PI 42 announces the data, not our local file: a text file gets a
	// "\n" per article that never travelled.
	if x.declared > 0 && data > x.declared {
		return fail(fpdu.DiagFileLargerThanAnnounced, fmt.Sprintf("%d bytes received, %d announced", data, x.declared))
	}
	// The data is made durable, then the outcome, then the file is
	// published, and only then is TRANS.END acknowledged: the record is
	// the authority, so the file appears under its final name only once
	// the record says completed, and by this owner (a session whose
	// transfer was taken over is refused here and publishes nothing). A
	// crash between the record and the rename is finished by the leader's
	// sweep (node/publish.go), and the requester's restart of a completed
	// transfer confirms the file (create, RestartState.Completed).
	if err := sk.sync(); err != nil {
		s.log.Error("cannot make the file durable", "file", x.tempRel, "err", err)
		return fail(diagOf(ioDiag(err), fpdu.DiagIOError), err.Error())
	}
	o := s.outcome(StatusDone, fpdu.DiagOK, x.finalAbs)
	if err := s.record(o, s.srv.cfg.InactivityTimeout); err != nil {
		return s.notDurable(err)
	}
	if err := sk.commit(x.vf.Overwrite); err != nil {
		d := diagOf(ioDiag(err), fpdu.DiagIOError)
		if errors.Is(err, errFinalExists) {
			d = fpdu.DiagFileExists
		}
		s.log.Error("cannot deliver file", "file", x.finalRel, "err", err)
		// Overwrites the completed outcome just recorded.
		return fail(d, err.Error())
	}
	s.settle(o)
	return s.ackTransEnd(fpdu.DiagOK, data, sk.articles)
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

// checkTransEnd checks the requester's TRANS.END counts against ours.
func (s *session) checkTransEnd(f *fpdu.FPDU, bytes, articles int64) error {
	b, okb := f.Params.Uint(fpdu.PIByteCount)
	a, oka := f.Params.Uint(fpdu.PIArticleCount)
	return s.checkCounts(bytes, articles, s.xfer.startPoint, b, a, okb, oka)
}

func (s *session) ackTransEnd(d fpdu.Diagnostic, bytes, articles int64) error {
	s.srv.countDiag(d)
	a := fpdu.FPDU{Kind: fpdu.AckTransEnd, DstID: s.peerID}
	a.Params.AddDiagnostic(d)
	a.Params.AddUint(fpdu.PIByteCount, uint64(bytes))
	a.Params.AddUint(fpdu.PIArticleCount, uint64(articles))
	return s.write(&a)
}
