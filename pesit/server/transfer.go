package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/fsm"
	"github.com/vectis-ft/vectis/pesit/internal/codepage"
)

// This file is the connection's side of a transfer: what a receive and a
// send share from the CREATE or SELECT to the DESELECT (the journal record,
// the outcome, the span, a resumption in place). The data phase is the
// receiver's (receive.go, create.go, sink.go) or the sender's (send.go,
// select.go, sendtail.go); the connection reaches it through side.

// syncPoint maps a sync number to the position it marks.
type syncPoint struct {
	num      uint32
	offset   int64 // in the local file
	articles int64
	data     int64 // PI 27 bytes: offset less the line ends of a text file
}

// side is the receiver or the sender of the file selected: the state and
// the files of one direction, behind what the connection asks of them.
type side interface {
	// run answers WRITE or READ f and runs the data phase to its end
	// (TRANS.END answered), its interruption or an error.
	run(f *fpdu.FPDU) error
	// counts is the data so far: file bytes and articles.
	counts() (bytes, articles int64)
	// kept is what an interrupted transfer keeps (a receive is cut back
	// to its last durable point).
	kept() (bytes, articles int64)
	// sum is the SHA-256 (hex) of the file of a transfer done.
	sum() string
	// settle waits for the work on sync points under way off the session
	// goroutine, and takes its results into the side's state.
	settle()
	// release ends the file of a transfer that ends: kept for a restart
	// when interrupted, else dropped (a partial receive); left as it is
	// when the transfer was lost to another owner.
	release(interrupted bool)
	// close frees what the side holds (files, the claim on a path) once
	// the transfer is over.
	close()
	// paths are the file's paths for the journal: final and temporary
	// (receive) or source (send).
	paths() (path, temp string)
	// resumePoint is where a resumption in place restarts from; the side
	// is ready for a new run from it.
	resumePoint() syncPoint
}

// transfer is the file selected by CREATE or SELECT, until DESELECT: what
// both directions share. side holds the rest.
type transfer struct {
	ref      TransferRef // the journal's: id and owner token
	dir      Direction
	side     side
	vf       VirtualFile
	file     string // PI 12
	fileType uint64 // PI 11
	pesitID  uint32 // PI 13
	restart  *RestartState
	entity   int    // negotiated PI 25
	recLen   int    // PI 32: maximum article length
	declared int64  // bytes announced by PGI 40, 0 = unknown
	created  string // PI 51 of CREATE
	started  time.Time
	// text: a variable-format file with data code ASCII or EBCDIC, one
	// article per line without its end of line (see the package doc).
	text   bool
	ebcdic *codepage.EBCDIC037 // EBCDIC text: translate at the edge
	span   trace.Span

	syncCount int
	restartAt uint32

	anomalies []Anomaly // tolerated peer anomalies, kept on the record
	finished  bool      // outcome recorded
	// lost: the journal refused a write with ErrTransferLost. The file
	// is the new owner's from then on: it is only ever abandoned.
	lost      bool
	resumable bool // interrupted by IDT code 4: a new WRITE/READ may resume
	// dataStarted: a WRITE or READ was accepted. A restart that ends
	// before (READ PI 18 refused with 2/214, DESELECT without WRITE) has
	// changed nothing, so it keeps the interrupted transfer's point.
	dataStarted  bool
	pointRefused uint64 // last READ PI 18 refused with 2/214, 0 = none
}

// setText applies the data code (PI 16) and article format (PI 31) of
// the transfer: text files are converted line by line.
func (x *transfer) setText(code uint64, format byte) {
	x.text = format&0x80 != 0 && code <= 1
	if x.text && code == 1 {
		x.ebcdic = codepage.NewEBCDIC037()
	}
}

// refuseFile answers CREATE or SELECT with a diagnostic; the session
// stays connected (digest §4.1).
func (s *session) refuseFile(k fpdu.Kind, d fpdu.Diagnostic, detail string, args ...any) error {
	text := fmt.Sprintf(detail, args...)
	s.log.Warn("file request refused", "fpdu", k.String(), "diag", d.String(), "detail", text)
	// A refused request is a transfer that failed at once: it gets its own
	// pesit.transfer span in error, so that "which partner failed, with
	// which diagnostic" is answered from traces too.
	dir := DirectionReceive
	if k == fpdu.AckSelect {
		dir = DirectionSend
	}
	_, span := s.srv.tracer.Start(s.ctx, "pesit.transfer", trace.WithAttributes(
		attribute.String("pesit.virtual_file", s.requested),
		attribute.String("pesit.direction", dir.String()),
		attribute.String("pesit.diagnostic", d.String())))
	span.SetStatus(codes.Error, d.String()+" "+text)
	span.End()
	return s.writeAck(k, d)
}

// fileCommon checks what CREATE and SELECT share and returns the virtual
// file. The parameters were checked by the state machine (next).
func (s *session) fileCommon(f *fpdu.FPDU, ack fpdu.Kind, want Direction) (VirtualFile, string, bool, error) {
	name, _ := f.Params.String(fpdu.PIFileName)
	s.requested = name
	if err := checkFileID(name); err != nil {
		return VirtualFile{}, "", false, s.refuseFile(ack, fpdu.DiagTransferRefused, "PI 12: %v", err)
	}
	okAccess := want == DirectionReceive && s.accessType != 1 && s.partner.Access&AccessWrite != 0 ||
		want == DirectionSend && s.accessType != 0 && s.partner.Access&AccessRead != 0
	if !okAccess {
		return VirtualFile{}, "", false, s.refuseFile(ack, fpdu.DiagTransferRefused, "direction %v not allowed (PI 22 = %d)", want, s.accessType)
	}
	if len(s.partner.Files) > 0 && !slices.Contains(s.partner.Files, name) {
		return VirtualFile{}, "", false, s.refuseFile(ack, fpdu.DiagTransferRefused, "file %q not allowed for partner", name)
	}
	vf, err := s.srv.dir.VirtualFile(s.ctx, name)
	switch {
	case errors.Is(err, ErrNotFound):
		d := fpdu.DiagTransferRefused
		if want == DirectionSend {
			d = fpdu.DiagFileNotFound
		}
		return vf, name, false, s.refuseFile(ack, d, "unknown virtual file %q", name)
	case err != nil:
		s.log.Error("virtual file lookup failed", "file", name, "err", err)
		return vf, name, false, s.refuseFile(ack, fpdu.DiagTemporaryNoResources, "virtual file lookup failed")
	case vf.Direction&want == 0:
		return vf, name, false, s.refuseFile(ack, fpdu.DiagTransferRefused, "virtual file %q does not allow %v", name, want)
	}
	return vf, name, true, nil
}

// negotiateEntity answers PI 25: the proposal lowered to our bound, large
// enough for one article unless segments may carry it.
func (s *session) negotiateEntity(f *fpdu.FPDU, maxArticle int, segmentation bool) (int, error) {
	p, _ := f.Params.Uint(fpdu.PIEntitySize)
	return fsm.NegotiateEntitySize(p, s.srv.cfg.MaxEntitySize, maxArticle, segmentation)
}

// beginTransfer makes x the session's transfer, with its span.
func (s *session) beginTransfer(x *transfer) {
	_, x.span = s.srv.tracer.Start(s.ctx, "pesit.transfer", trace.WithAttributes(
		attribute.String("pesit.virtual_file", x.vf.ID),
		attribute.String("pesit.direction", x.dir.String()),
		attribute.Int64("pesit.transfer_id", int64(x.pesitID)),
		attribute.String("vectis.transfer_id", x.ref.ID)))
	s.xfer = x
	s.setCurrentTransfer(x.ref.ID)
	s.srv.trackTransfer(x.ref.ID, s)
	if x.restart != nil && s.srv.met != nil {
		s.srv.met.Restarts.Inc()
	}
	s.log.Info("transfer selected", "id", x.ref.ID, "file", x.file, "direction", x.dir.String(), "pi13", x.pesitID, "restart", x.restart != nil)
}

// outcome is what finish records for the current transfer. An interrupted
// receive counts what its file keeps: the point it is cut back to.
func (s *session) outcome(st Status, d fpdu.Diagnostic, detail string) Outcome {
	x := s.xfer
	b, a := x.side.counts()
	if st == StatusInterrupted {
		b, a = x.side.kept()
	}
	o := Outcome{Status: st, Bytes: b, Articles: a, Diagnostic: d, Detail: detail, Finished: s.srv.now(), Anomalies: x.anomalies}
	if st == StatusDone {
		o.SHA256 = x.side.sum()
	}
	return o
}

// finishRetries is the pause between two attempts of a durable finish.
const finishRetries = 200 * time.Millisecond

// record journals o, retrying for up to within (one attempt when 0): the
// end of a transfer is acknowledged only once it is durable, and a short
// store outage (a failover of PostgreSQL) should not cost the partner a
// restart. A lost transfer is not retried.
func (s *session) record(o Outcome, within time.Duration) error {
	x := s.xfer
	deadline := time.Now().Add(within)
	for {
		// A last record (within = 0) must go through after the drain gave
		// up (base cancelled); a retried one gives way to the drain's end.
		// One context per attempt, each cancelled: an unused one would
		// hold its timer for its whole 10 s.
		var ctx context.Context
		var cancel context.CancelFunc
		if within > 0 {
			ctx, cancel = context.WithDeadline(s.srv.base, deadline)
		} else {
			ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
		}
		err := s.srv.jnl.Finish(ctx, x.ref, o)
		cancel()
		switch {
		case err == nil:
			return nil
		case errors.Is(err, ErrTransferLost):
			x.lost = true
			s.log.Warn("transfer taken over by another owner; its outcome here is not recorded", "id", x.ref.ID, "err", err)
			return err
		case within <= 0 || time.Until(deadline) < finishRetries:
			s.log.Error("journal finish failed", "id", x.ref.ID, "status", o.Status, "err", err)
			return err
		}
		s.log.Warn("journal finish failed; retrying", "id", x.ref.ID, "err", err)
		select {
		case <-time.After(finishRetries):
		case <-s.srv.base.Done():
			return err
		}
	}
}

// finish records the outcome of the current transfer once, in one attempt,
// and returns the journal's error.
func (s *session) finish(st Status, d fpdu.Diagnostic, detail string) error {
	x := s.xfer
	if x == nil || x.finished {
		return nil
	}
	o := s.outcome(st, d, detail)
	err := s.record(o, 0)
	s.settle(o)
	return err
}

// settle marks the current transfer finished with o (recorded or not) and
// counts, traces and logs it.
func (s *session) settle(o Outcome) {
	x := s.xfer
	x.finished = true
	srv := s.srv
	st, d, detail, b, a := o.Status, o.Diagnostic, o.Detail, o.Bytes, o.Articles
	dur := srv.now().Sub(x.started)
	if m := srv.met; m != nil {
		m.Transfers.WithLabelValues(srv.cfg.ID, x.dir.String(), string(st)).Inc()
		m.TransferBytes.WithLabelValues(x.dir.String()).Add(float64(b))
		m.TransferDuration.WithLabelValues(x.dir.String()).Observe(dur.Seconds())
	}
	x.span.SetAttributes(attribute.Int64("pesit.bytes", b), attribute.Int64("pesit.articles", a),
		attribute.Int("pesit.sync_points", x.syncCount), attribute.Int64("pesit.restart_point", int64(x.restartAt)),
		attribute.String("pesit.diagnostic", d.String()), attribute.String("pesit.status", string(st)))
	if st != StatusDone {
		x.span.SetStatus(codes.Error, d.String()+" "+detail)
		x.span.RecordError(errors.New(detail))
	}
	s.log.Info("transfer finished", "id", x.ref.ID, "status", st, "bytes", b, "articles", a, "diag", d.String(), "detail", detail, "duration", dur)
}

// endTransfer releases the current transfer at DESELECT (cause nil) or when
// the session ends. A receive that got data and was not finished keeps its
// temporary file for a restart (side.release).
func (s *session) endTransfer(cause error) {
	x := s.xfer
	if x == nil {
		return
	}
	s.dataPhase.Store(false)
	interrupted := false
	if !x.finished {
		b, _ := x.side.counts()
		st, d, detail := StatusFailed, fpdu.DiagAbnormalEnd, "deselected before the end of the transfer"
		var ae *abortError
		switch {
		case errors.As(cause, &ae):
			d, detail = ae.diag, ae.detail
			if b > 0 && ae.diag != fpdu.DiagCountMismatch {
				st = StatusInterrupted
			}
		case cause != nil:
			d, detail = fpdu.DiagNetworkIncident, cause.Error()
			if k := fpdu.Diagnostic(s.killed.Load()); k != 0 {
				d = k
			}
			if b > 0 {
				st = StatusInterrupted
			}
		}
		if x.restart != nil && !x.dataStarted && st != StatusCancelled {
			st = s.keepRestartPoint(x)
			if x.pointRefused != 0 && cause == nil {
				d, detail = fpdu.DiagRestartPointRefused, fmt.Sprintf("restart point %d refused; the transfer stays resumable from %d", x.pointRefused, x.restart.Sync)
			}
		}
		if s.idtPending.Load() {
			// Our IDT went out and the line dropped before its ACK: the
			// IDT says what happened.
			d = fpdu.Diagnostic(s.idtDiag.Load())
			if c := s.idtCode.Load(); c != endRestart && c != endSuspended {
				st = StatusCancelled
			}
		}
		// The journal first: a refusal (ErrTransferLost) means the file
		// is the new owner's and must be left alone.
		if x.lost {
			s.settle(s.outcome(st, d, detail))
		} else {
			s.finish(st, d, detail)
		}
		interrupted = st == StatusInterrupted
	}
	x.side.release(interrupted)
	x.side.close()
	s.srv.trackTransfer(x.ref.ID, nil)
	s.setCurrentTransfer("")
	x.span.End()
	s.xfer = nil
}

// keepRestartPoint carries the interrupted transfer's point over to x, a
// restart that ended before its data phase: without it the journal's
// newest record for the key would be a failure and the transfer could
// never be resumed (a refused READ PI 18 would be final).
func (s *session) keepRestartPoint(x *transfer) Status {
	rs := x.restart
	if rs.Sync == 0 {
		return StatusInterrupted
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.srv.jnl.SyncPoint(ctx, x.ref, rs.Sync, rs.Offset, rs.Articles); err != nil {
		x.lost = x.lost || errors.Is(err, ErrTransferLost)
		s.log.Warn("journal restart point failed", "id", x.ref.ID, "sync", rs.Sync, "err", err)
		return StatusFailed
	}
	return StatusInterrupted
}

// resumeInPlace prepares a new WRITE or READ in the same selection after an
// IDT with PI 19 = 4 (the state machine refuses one after 8, 12 or 16): the
// transfer restarts from its last durable sync point, journaled as a
// restart of the interrupted record.
func (s *session) resumeInPlace() error {
	x := s.xfer
	if !x.finished {
		return nil
	}
	if !x.resumable {
		return abortf(fpdu.DiagProtocolError, "new data phase after the transfer ended")
	}
	srv := s.srv
	if srv.isClosing() {
		// Interrupted by the drain (or before it began): the restart
		// belongs on the next leader, not on this stopping node.
		return abortf(fpdu.DiagAdministrativeStop, "server shutting down: restart the transfer")
	}
	t := Transfer{ServerID: srv.cfg.ID, Partner: s.partner.ID, VirtualFile: x.vf.ID, Direction: x.dir,
		PeSITID: x.pesitID, Restart: true, RestartOf: x.ref, DeclaredSize: x.declared, FileCreated: x.created, Started: srv.now()}
	t.Path, t.TempPath = x.side.paths()
	ref, err := srv.jnl.Begin(s.ctx, t)
	if err != nil {
		return abortf(fpdu.DiagCongestion, "journal unavailable: %v", err)
	}
	srv.trackTransfer(x.ref.ID, nil)
	p := x.side.resumePoint()
	x.restart = &RestartState{Transfer: x.ref, Path: t.Path, TempPath: t.TempPath,
		Sync: p.num, Offset: p.offset, Articles: p.articles}
	x.ref, x.started, x.finished, x.resumable = ref, t.Started, false, false
	s.setCurrentTransfer(x.ref.ID)
	srv.trackTransfer(x.ref.ID, s)
	if srv.met != nil {
		srv.met.Restarts.Inc()
	}
	s.log.Info("transfer resumed in place", "id", x.ref.ID, "restart_of", t.RestartOf.ID, "point", p.num)
	return nil
}
