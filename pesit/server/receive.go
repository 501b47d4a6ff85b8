package server

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/fsm"
	"github.com/vectis-ft/vectis/pesit/internal/codepage"
)

// receiver is the side of a transfer the server receives (CREATE, WRITE):
// the temporary file, its sink, and the points made durable. It lives from
// the CREATE to the DESELECT; the session goroutine runs it.
type receiver struct {
	s *session
	x *transfer

	root     *os.Root
	finalRel string
	tempRel  string
	finalAbs string
	sink     *sink
	// published: this restart's file was published already (see
	// publishedBefore); its data is compared, not written (verifySink).
	published bool
	inSeg     bool
	segLen    int

	startPoint syncPoint // where this data phase began (counts after a restart)
	lastSync   syncPoint // the last point made durable and journaled
	// syncTried is the last point whose data was made durable and whose
	// journal write was attempted: the store may hold it even when the
	// write reported an error (a cancelled context after the commit), so
	// an interrupted file is never cut below it.
	syncTried  syncPoint
	dtfEndDiag fpdu.Diagnostic
}

// run handles WRITE and the data phase TDE02B..TDE07 (digest §4.1).
func (r *receiver) run(f *fpdu.FPDU) error {
	s, x := r.s, r.x
	srv := s.srv
	point := uint32(0)
	var err error
	if r.sink == nil && r.published {
		rs := x.restart
		if r.sink, err = verifySink(r.root, r.finalRel, srv.cfg.WriteBuffer, rs.Offset, rs.Articles); err != nil {
			// Never start the file again over its published copy.
			s.log.Error("cannot check the published file of a restart", "file", r.finalRel, "err", err)
			return s.writeAck(fpdu.AckWrite, fpdu.DiagIOError)
		}
		point = rs.Sync
		r.hookSink(x.ref)
	}
	if r.sink == nil && x.restart != nil {
		rs := x.restart
		r.sink, err = r.resumeReceive(srv.cfg.WriteBuffer) // may advance rs to the file's index
		if err == nil {
			point = rs.Sync
			r.hookSink(x.ref)
		} else {
			// 0 is always a legal restart point: start the file again.
			s.log.Warn("cannot resume, restarting from 0", "err", err)
			r.root.Remove(r.tempRel)
		}
	}
	if r.sink == nil {
		r.sink, err = createSink(r.root, r.tempRel, r.finalRel, srv.cfg.WriteBuffer)
		if err != nil {
			d := fpdu.DiagIOError
			if isNoSpace(err) {
				d = fpdu.DiagSpaceExhausted
			} else if errors.Is(err, fs.ErrExist) {
				d = fpdu.DiagFileBusy
			}
			s.log.Error("cannot create temporary file", "file", r.tempRel, "err", err)
			return s.writeAck(fpdu.AckWrite, d)
		}
		r.hookSink(x.ref)
		r.indexSink(x.ref, syncPoint{})
	}
	x.restartAt = point
	r.lastSync = syncPoint{num: point, offset: r.sink.bytes, articles: r.sink.articles, data: r.dataBytes(r.sink.bytes, r.sink.articles)}
	r.startPoint = r.lastSync
	r.inSeg = false
	x.dataStarted = true
	ack := fpdu.FPDU{Kind: fpdu.AckWrite, DstID: s.peerID}
	ack.Params.AddDiagnostic(fpdu.DiagOK)
	ack.Params.AddUint(fpdu.PIRestartPoint, uint64(point))
	defer s.dataPhase.Store(false)
	if err := s.enterDataPhase(&ack); err != nil {
		return err
	}
	s.log.Info("receiving", "id", x.ref.ID, "restart_point", point, "offset", r.sink.bytes)
	err = r.frames()
	// No ACK(SYN) from the sink's worker once the data phase is over, and
	// the receiver's state holds every point made durable.
	r.settle()
	return err
}

func (r *receiver) frames() error {
	s, x := r.s, r.x
	s.setReadDeadline(s.srv.cfg.InactivityTimeout)
	for {
		f, err := s.next()
		if err != nil {
			if v, ok := fsm.IsViolation(err); ok && v.Diag.Type() == 2 && !s.idtPending.Load() {
				// 2/217, 2/222: the transfer, not the connection, is at fault.
				// A failure of the file under way (a full disk) says better
				// why the sender ran out of acknowledgements.
				var cause error = v
				if r.sink != nil {
					if err := r.sink.flush(); err != nil {
						cause = err
					}
					r.collectDurable()
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
			if r.inSeg {
				return abortf(fpdu.DiagProtocolError, "DTF inside a segmented article")
			}
			if len(f.Data)+fpdu.HeaderLen > x.entity && r.entityExceeded(len(f.Data)+fpdu.HeaderLen) {
				return abortf(fpdu.DiagBadParameter, "DTF of %d bytes, PI 25 = %d (strict partner)", len(f.Data)+fpdu.HeaderLen, x.entity)
			}
			// The machine split the DTF when it checked it.
			for _, a := range s.articles() {
				if derr = r.article(a); derr != nil {
					break
				}
			}
		case fpdu.DTFDA:
			if r.inSeg {
				return abortf(fpdu.DiagProtocolError, "DTFDA inside a segmented article")
			}
			if len(f.Data)+fpdu.HeaderLen > x.entity && r.entityExceeded(len(f.Data)+fpdu.HeaderLen) {
				return abortf(fpdu.DiagBadParameter, "DTFDA of %d bytes, PI 25 = %d (strict partner)", len(f.Data)+fpdu.HeaderLen, x.entity)
			}
			r.inSeg, r.segLen = true, 0
			derr = r.segment(f.Data, false)
		case fpdu.DTFMA, fpdu.DTFFA:
			if len(f.Data)+fpdu.HeaderLen > x.entity && r.entityExceeded(len(f.Data)+fpdu.HeaderLen) {
				return abortf(fpdu.DiagBadParameter, "%v of %d bytes, PI 25 = %d (strict partner)", f.Kind, len(f.Data)+fpdu.HeaderLen, x.entity)
			}
			if !r.inSeg {
				return abortf(fpdu.DiagProtocolError, "%v without DTFDA", f.Kind)
			}
			derr = r.segment(f.Data, f.Kind == fpdu.DTFFA)
		case fpdu.Syn:
			if r.inSeg {
				return abortf(fpdu.DiagProtocolError, "SYN inside a segmented article")
			}
			r.syn(f)
		case fpdu.DTFEnd:
			if r.inSeg {
				return abortf(fpdu.DiagProtocolError, "DTF.END inside a segmented article")
			}
			r.dtfEndDiag, _ = f.Params.Diagnostic()
			// Every sync point answered before the data phase ends; a
			// failure to make one durable has sent IDT meanwhile.
			r.settle()
			if s.idtPending.Load() {
				return s.awaitAckIDT(nil)
			}
			return r.awaitTransEnd()
		case fpdu.IDT:
			return s.peerIDT(f)
		case fpdu.Resyn:
			if err := r.resyn(); err != nil {
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
func (r *receiver) entityExceeded(n int) bool {
	s, x := r.s, r.x
	if slices.Contains(x.anomalies, AnomalyEntityExceeded) {
		return s.partner.Strict // noted once: no formatting per FPDU
	}
	return s.anomaly(AnomalyEntityExceeded, fmt.Sprintf("data FPDU of %d bytes, PI 25 = %d", n, x.entity))
}

// article takes one complete article.
func (r *receiver) article(a []byte) error {
	if len(a) > r.x.recLen {
		return fmt.Errorf("article of %d bytes, PI 32 = %d: %w", len(a), r.x.recLen, fpdu.DiagArticleTooLong)
	}
	if err := r.data(a); err != nil {
		return err
	}
	return r.endArticle()
}

// endArticle counts a complete article; a text line gets its "\n".
func (r *receiver) endArticle() error {
	if r.x.text {
		if err := r.sink.write(newline); err != nil {
			return ioDiag(err)
		}
	}
	r.sink.articles++
	return nil
}

var newline = []byte{'\n'}

func (r *receiver) segment(p []byte, last bool) error {
	r.segLen += len(p)
	if r.segLen > r.x.recLen {
		return fmt.Errorf("segmented article over %d bytes, PI 32 = %d: %w", r.segLen, r.x.recLen, fpdu.DiagArticleTooLong)
	}
	if err := r.data(p); err != nil {
		return err
	}
	if last {
		r.inSeg = false
		return r.endArticle()
	}
	return nil
}

// data writes p; the machine has counted it against the sync interval.
func (r *receiver) data(p []byte) error {
	x := r.x
	if x.ebcdic != nil {
		codepage.Translate(p, &x.ebcdic.ToASCII) // p aliases the reader's buffer, ours until the next read
	}
	if x.vf.MaxSize > 0 && r.sink.bytes+int64(len(p)) > x.vf.MaxSize {
		return fmt.Errorf("file over its limit of %d bytes: %w", x.vf.MaxSize, fpdu.DiagFileLargerThanAnnounced)
	}
	if err := r.sink.write(p); err != nil {
		return ioDiag(err)
	}
	return nil
}

// dataBytes converts a receive position (file bytes, articles) to the data
// byte count of PI 27: in a text file every article was written with one
// "\n" that the wire did not carry.
func (r *receiver) dataBytes(fileBytes, articles int64) int64 {
	if r.x.text {
		return fileBytes - articles
	}
	return fileBytes
}

// syn takes sync point n, which the state machine numbered and checked
// against the negotiation, the window and the interval.
func (r *receiver) syn(f *fpdu.FPDU) {
	n, _ := f.Params.Uint(fpdu.PISyncNumber)
	// The point is made durable off the session goroutine: the sink's
	// worker fsyncs the data up to here, then the journal records the
	// point, then ACK(SYN) goes out; meanwhile we go on receiving the data
	// that the window lets the sender send. The ACK still follows both
	// fsyncs, in that order (a point is acknowledged only when the data
	// behind it and the way to find it again are durable), and a failure
	// interrupts the transfer with IDT from the worker, as the admin API
	// does from its own goroutine.
	pt := syncPoint{num: uint32(n), offset: r.sink.bytes, articles: r.sink.articles}
	r.syncTried = pt // the file holds it from now on; its journal write is under way
	r.x.syncCount++
	r.collectDurable()
	r.sink.syncAsync(pt)
}

// hookSink makes the sink's second goroutine journal and acknowledge the
// points made durable, and interrupt the transfer with IDT when one cannot
// be, as the admin API does from its own goroutine.
func (r *receiver) hookSink(ref TransferRef) {
	s, sk := r.s, r.sink
	sk.onDurable = func(pts []syncPoint, indexed bool) error { return r.pointsDurable(sk, ref, pts, indexed) }
	sk.onFail = func(err error) {
		if err := s.localIDT(err); err != nil {
			s.log.Debug("IDT not sent", "err", err)
		}
	}
}

// pointsDurable runs on the sink's second goroutine once the data up to
// the last of pts is durable: it journals that point (it supersedes the
// others as the restart point; without a flush of the journal's own when
// the file's index holds it, indexed), then acknowledges each.
func (r *receiver) pointsDurable(sk *sink, ref TransferRef, pts []syncPoint, indexed bool) error {
	s := r.s
	last := pts[len(pts)-1]
	if err := r.journalPoint(ref, last, indexed); err != nil {
		// Not acknowledged. Lost to another owner: IDT all the same (the
		// partner restarts, and finds the new owner), but the file is
		// left as it is (settle sets x.lost).
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
// receiver's state (session goroutine).
func (r *receiver) collectDurable() {
	if r.sink.isLost() {
		r.x.lost = true
	}
	// The sink's points come in the order they were taken, each at or
	// after the one before it in the file.
	pt, ok := r.sink.durable()
	if ok && (pt.offset > r.lastSync.offset || pt.offset == r.lastSync.offset && pt.num != r.lastSync.num) {
		pt.data = r.dataBytes(pt.offset, pt.articles)
		r.lastSync = pt
	}
}

// settle waits until every sync point handed to the sink's worker is
// durable and answered (or failed), and takes them into the receiver's
// state: before anything that reads that state or ends the data phase.
func (r *receiver) settle() {
	if r.sink == nil {
		return
	}
	_ = r.sink.wait()
	r.collectDurable()
}

// resyn: the sender asks to resume from a point; we resume from our last
// durable point, which is the last one we acknowledged (RESYN is only
// negotiated with sync points, and every SYN is made durable at once).
func (r *receiver) resyn() error {
	s := r.s
	r.settle()
	lp := r.lastSync
	if err := r.sink.truncate(lp.offset, lp.articles); err != nil {
		return abortf(fpdu.DiagResyncImpossible, "resync: %v", err)
	}
	r.inSeg, r.syncTried = false, lp
	ack := fpdu.FPDU{Kind: fpdu.AckResyn, DstID: s.peerID}
	ack.Params.AddUint(fpdu.PIRestartPoint, uint64(lp.num))
	return s.writeUnlessIDT(&ack)
}

// awaitTransEnd is TDE07: after DTF.END, TRANS.END ends the transfer.
func (r *receiver) awaitTransEnd() error {
	s := r.s
	s.dataPhase.Store(false)
	f, err := s.next()
	if err != nil {
		return s.readErr(err)
	}
	switch f.Kind {
	case fpdu.TransEnd:
		return r.transEnd(f)
	case fpdu.Abort:
		return s.peerAbort(f)
	case fpdu.IDT:
		return s.peerIDT(f)
	}
	return abortf(fpdu.DiagProtocolError, "%v after DTF.END", f.Kind)
}

func (r *receiver) transEnd(f *fpdu.FPDU) error {
	s, x := r.s, r.x
	sk := r.sink
	data := r.dataBytes(sk.bytes, sk.articles)
	if err := s.checkTransEnd(f, data, sk.articles, r.startPoint); err != nil {
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
	if !r.dtfEndDiag.OK() {
		return fail(r.dtfEndDiag, "sender ended the data with "+r.dtfEndDiag.String())
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
	// transfer confirms the file (createFile, RestartState.Completed).
	if err := sk.sync(); err != nil {
		s.log.Error("cannot make the file durable", "file", r.tempRel, "err", err)
		return fail(diagOf(ioDiag(err), fpdu.DiagIOError), err.Error())
	}
	o := s.outcome(StatusDone, fpdu.DiagOK, r.finalAbs)
	if err := s.record(o, s.srv.cfg.InactivityTimeout); err != nil {
		return s.notDurable(err)
	}
	if err := sk.commit(x.vf.Overwrite); err != nil {
		d := diagOf(ioDiag(err), fpdu.DiagIOError)
		if errors.Is(err, errFinalExists) {
			d = fpdu.DiagFileExists
		}
		s.log.Error("cannot deliver file", "file", r.finalRel, "err", err)
		// Overwrites the completed outcome just recorded.
		return fail(d, err.Error())
	}
	s.settle(o)
	return s.ackTransEnd(fpdu.DiagOK, data, sk.articles)
}

// keptPoint is where an interrupted receive's partial file is cut: the last
// point made durable whose journal write was attempted, so that the file
// always holds the restart point the store recorded, whichever of the two
// the store ended up with.
func (r *receiver) keptPoint() syncPoint {
	if r.syncTried.offset > r.lastSync.offset && (r.sink == nil || r.syncTried.offset <= r.sink.bytes) {
		return r.syncTried
	}
	return r.lastSync
}

func (r *receiver) counts() (bytes, articles int64) {
	if r.sink == nil {
		return 0, 0
	}
	return r.sink.bytes, r.sink.articles
}

// kept counts what the file keeps once cut back (release).
func (r *receiver) kept() (bytes, articles int64) {
	if r.sink == nil || r.sink.closed {
		return r.counts()
	}
	k := r.keptPoint()
	return k.offset, k.articles
}

func (r *receiver) sum() string {
	if r.sink == nil {
		return ""
	}
	return r.sink.sum()
}

// release ends an unfinished receive's temporary file: cut back to its
// kept point and kept for a restart when interrupted, else removed; only
// abandoned when the transfer was lost to another owner.
func (r *receiver) release(interrupted bool) {
	s := r.s
	switch {
	case r.sink == nil || r.sink.closed:
	case r.x.lost:
		r.sink.abandon()
	case interrupted:
		// Keep only what a sync point made durable.
		keep := r.keptPoint()
		if err := r.sink.truncate(keep.offset, keep.articles); err != nil {
			s.log.Warn("truncating interrupted file", "err", err)
		}
		if err := r.sink.close(); err != nil {
			s.log.Warn("closing interrupted file", "err", err)
		}
	default:
		r.sink.discard()
	}
}

func (r *receiver) close() {
	if r.root != nil {
		r.root.Close()
	}
	r.s.srv.unclaimPath(r.finalAbs)
}

func (r *receiver) paths() (path, temp string) {
	return r.finalAbs, filepath.Join(r.x.vf.ReceiveDir, r.tempRel)
}

// resumePoint is the last durable point; the next run reopens the
// temporary file there.
func (r *receiver) resumePoint() syncPoint {
	r.sink = nil
	return r.lastSync
}
