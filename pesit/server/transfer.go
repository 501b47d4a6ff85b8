package server

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/fsm"
	"github.com/vectis-ft/vectis/pesit/internal/codepage"
)

// syncPoint maps a sync number to the position it marks.
type syncPoint struct {
	num      uint32
	offset   int64 // in the local file
	articles int64
	data     int64 // PI 27 bytes: offset less the line ends of a text file
}

// transfer is the file selected by CREATE or SELECT, until DESELECT.
type transfer struct {
	ref      TransferRef // the journal's: id and owner token
	dir      Direction
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

	// Receive.
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

	// Send.
	src      *os.File
	srcPath  string
	size     int64
	modTime  time.Time
	off      int64 // file position (bytes differs for a text file)
	bytes    int64 // PI 27: data bytes sent
	articles int64
	h        hash.Hash

	syncCount  int
	restartAt  uint32
	startPoint syncPoint   // where this data phase began (counts after a restart)
	points     []syncPoint // send: recent points sent (RESYN targets)
	lastSync   syncPoint   // receive: last durable point; send: last acknowledged
	lastSent   syncPoint   // send: last point sent, journaled for a restart
	// syncTried is the last receive point whose data was made durable and
	// whose journal write was attempted: the store may hold it even when
	// the write reported an error (a cancelled context after the commit),
	// so an interrupted file is never cut below it.
	syncTried  syncPoint
	dtfEndDiag fpdu.Diagnostic

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

// dataBytes converts a receive position (file bytes, articles) to the data
// byte count of PI 27: in a text file every article was written with one
// "\n" that the wire did not carry.
func (x *transfer) dataBytes(fileBytes, articles int64) int64 {
	if x.text {
		return fileBytes - articles
	}
	return fileBytes
}

func (x *transfer) counts() (bytes, articles int64) {
	if x.sink != nil {
		return x.sink.bytes, x.sink.articles
	}
	return x.bytes, x.articles
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

// create handles CREATE: the server will receive a file (digest §8.1.5).
func (s *session) create(f *fpdu.FPDU) error {
	srv := s.srv
	vf, name, ok, err := s.fileCommon(f, fpdu.AckCreate, DirectionReceive)
	if !ok || err != nil {
		return err
	}
	pi13, _ := f.Params.Uint(fpdu.PITransferID)
	if pi13 == 0 || pi13 > 0xFFFFFF {
		return abortf(fpdu.DiagBadParameter, "CREATE PI 13 = %d", pi13)
	}
	x := &transfer{dir: DirectionReceive, vf: vf, file: name, pesitID: uint32(pi13), started: srv.now()}
	x.fileType, _ = f.Params.Uint(fpdu.PIFileType)
	code, ok := f.Params.Uint(fpdu.PIDataCode)
	if !ok {
		code = 2 // absent: binary (digest §10)
	}
	var format byte
	if b, ok := f.Params.Bytes(fpdu.PIArticleFormat); ok && len(b) == 1 {
		format = b[0]
	}
	x.setText(code, format)
	x.recLen = vf.RecordLength
	if x.recLen == 0 {
		x.recLen = srv.cfg.DefaultRecordLength
	}
	if l, ok := f.Params.Uint(fpdu.PIArticleLength); ok && l > 0 && l <= 65535 {
		// The requester announces its articles; more than that is 2/220.
		x.recLen = int(l)
	}
	// We accept segmented articles whatever their length (Hors-SIT: always
	// on receipt), so any entity that holds a header and a byte will do.
	if x.entity, err = s.negotiateEntity(f, x.recLen, true); err != nil {
		return s.refuseFile(fpdu.AckCreate, diagOf(err, fpdu.DiagInsufficientCharacteristics), "%v", err)
	}
	if v, ok := f.Params.Uint(fpdu.PISpaceMax); ok {
		unit, _ := f.Params.Uint(fpdu.PISpaceUnit)
		if unit == 1 {
			x.declared = int64(v) * int64(x.recLen)
		} else {
			x.declared = int64(v) * 1024
		}
	}
	if vf.MaxSize > 0 && x.declared > vf.MaxSize {
		return s.refuseFile(fpdu.AckCreate, fpdu.DiagQuotaExceeded, "announced %d bytes, limit %d", x.declared, vf.MaxSize)
	}
	restart, _ := f.Params.Uint(fpdu.PIRestart)
	created, _ := f.Params.String(fpdu.PICreated)
	x.created = created
	var rs RestartState
	found := false
	if restart == 1 {
		rs, found, err = srv.jnl.FindRestart(s.ctx, RestartKey{Partner: s.partner.ID, Direction: DirectionReceive, PeSITID: x.pesitID, File: name})
		if err != nil {
			s.log.Error("restart lookup failed", "err", err)
			return s.refuseFile(fpdu.AckCreate, fpdu.DiagTemporaryNoResources, "restart lookup failed")
		}
		// A restart resends the file's identity unchanged (spec: "les
		// mêmes paramètres que ceux utilisés lors du transfert initial"):
		// another PI 51 is another file, whose end must not be spliced
		// onto this one's beginning. The spec has no code of its own for
		// it; 2/226 (transfer refused) is its F.CREATE refusal.
		if found && rs.FileCreated != "" && created != rs.FileCreated {
			return s.refuseFile(fpdu.AckCreate, fpdu.DiagTransferRefused, "restart of a different file: PI 51 = %q, the interrupted transfer had %q", created, rs.FileCreated)
		}
	}
	root, err := os.OpenRoot(vf.ReceiveDir)
	if err != nil {
		s.log.Error("receive directory unusable", "dir", vf.ReceiveDir, "err", err)
		return s.refuseFile(fpdu.AckCreate, fpdu.DiagTemporaryNoResources, "receive directory %s: %v", vf.ReceiveDir, err)
	}
	keep := false
	defer func() {
		if !keep {
			root.Close()
		}
	}()
	if found {
		fr, err1 := relIn(vf.ReceiveDir, rs.Path)
		tr, err2 := tempNameFor(fr), error(nil)
		if rs.TempPath != "" {
			tr, err2 = relIn(vf.ReceiveDir, rs.TempPath)
		}
		if err1 == nil && err2 == nil {
			x.restart, x.finalRel, x.tempRel = &rs, fr, tr
		} else {
			s.log.Warn("restart state does not match the receive directory; starting afresh", "path", rs.Path)
		}
	}
	if x.finalRel == "" {
		rel, err := expandName(vf.NamePattern, nameVars{Partner: s.partner.ID, File: name, TransferID: int64(x.pesitID), Now: srv.now(), UUID: uuid.NewString()})
		if err != nil {
			return s.refuseFile(fpdu.AckCreate, fpdu.DiagTransferRefused, "target name: %v", err)
		}
		x.finalRel = rel
		x.tempRel = tempNameFor(rel)
	}
	x.finalAbs = filepath.Join(vf.ReceiveDir, x.finalRel)
	if x.restart != nil && x.restart.Completed && !publishedBefore(root, x) {
		// Recorded completed, but the file is not (or no longer) under its
		// final name. Never write it again: a crash between the record and
		// the rename is finished by the leader's sweep, which publishes
		// the file, so that a later attempt confirms it. A file taken away
		// since cannot be confirmed.
		if _, err := root.Lstat(x.tempRel); err == nil {
			return s.refuseFile(fpdu.AckCreate, fpdu.DiagTemporaryNoResources,
				"transfer %d recorded completed, its file %s not yet published: retry the restart", x.pesitID, x.finalRel)
		}
		return s.refuseFile(fpdu.AckCreate, fpdu.DiagTransferRefused,
			"transfer %d was completed and its file %s is gone: it cannot be confirmed", x.pesitID, x.finalRel)
	}
	if x.restart != nil && publishedBefore(root, x) {
		// Not 2/204: the file is this transfer's own. The restart goes on
		// as usual and the data resent from its point is compared with the
		// file, so that the requester is told the transfer is done by an
		// ACK(TRANS.END) it knows, and no second copy is delivered.
		x.published = true
		s.log.Warn("restart of a transfer whose file was published already; the data resent is checked against it",
			"file", x.finalRel, "restart_of", x.restart.Transfer.ID, "sync", x.restart.Sync, "offset", x.restart.Offset)
	} else if _, err := root.Lstat(x.finalRel); err == nil && !vf.Overwrite {
		return s.refuseFile(fpdu.AckCreate, fpdu.DiagFileExists, "%s exists", x.finalRel)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return s.refuseFile(fpdu.AckCreate, fpdu.DiagTransferRefused, "%s: %v", x.finalRel, err)
	}
	if !srv.claimPath(x.finalAbs) {
		return s.refuseFile(fpdu.AckCreate, fpdu.DiagFileBusy, "%s is being received", x.finalRel)
	}
	t := Transfer{ServerID: srv.cfg.ID, Partner: s.partner.ID, VirtualFile: vf.ID, Direction: DirectionReceive,
		PeSITID: x.pesitID, Restart: restart == 1, Path: x.finalAbs, TempPath: filepath.Join(vf.ReceiveDir, x.tempRel),
		DeclaredSize: x.declared, FileCreated: created, Started: x.started}
	if x.restart != nil && !x.restart.Completed {
		// A completed record is not taken over: it stays as it is, and its
		// restart, which only checks the published file, gets a record of
		// its own.
		t.RestartOf = x.restart.Transfer
	}
	ref, err := srv.jnl.Begin(s.ctx, t)
	if err != nil {
		srv.unclaimPath(x.finalAbs)
		s.log.Error("journal begin failed", "err", err)
		return s.refuseFile(fpdu.AckCreate, fpdu.DiagTemporaryNoResources, "journal unavailable")
	}
	keep = true
	x.root, x.ref = root, ref
	s.beginTransfer(x)
	ack := fpdu.FPDU{Kind: fpdu.AckCreate, DstID: s.peerID}
	ack.Params.AddDiagnostic(fpdu.DiagOK)
	ack.Params.AddUint(fpdu.PIEntitySize, uint64(x.entity))
	return s.write(&ack)
}

// publishedBefore says whether the interrupted transfer that x restarts had
// published its file already: the node stopped between the publication
// (the rename of the temporary file) and the journal's record of it. Then
// the final file exists, the temporary one does not, and the file holds at
// least the data of the last sync point. Its content is checked by the
// data phase (verifySink): size and bytes after the sync point must match
// what the requester resends, and the SHA-256 of the whole file is recorded.
func publishedBefore(root *os.Root, x *transfer) bool {
	fi, err := root.Lstat(x.finalRel)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() < x.restart.Offset {
		return false
	}
	if x.declared > 0 && !x.text && fi.Size() > x.declared {
		return false // larger than the requester announces (PI 42): another file
	}
	_, err = root.Lstat(x.tempRel)
	return errors.Is(err, fs.ErrNotExist)
}

// relIn returns p relative to dir, refusing anything outside it.
func relIn(dir, p string) (string, error) {
	rel, err := filepath.Rel(dir, p)
	if err != nil {
		return "", err
	}
	if !filepath.IsLocal(rel) {
		return "", fmt.Errorf("%s is outside %s", p, dir)
	}
	return rel, nil
}

// selectFile handles SELECT: the server will send a file (digest §8.1.6).
func (s *session) selectFile(f *fpdu.FPDU) error {
	srv := s.srv
	vf, name, ok, err := s.fileCommon(f, fpdu.AckSelect, DirectionSend)
	if !ok || err != nil {
		return err
	}
	pi13, _ := f.Params.Uint(fpdu.PITransferID)
	if pi13 > 0xFFFFFF {
		return abortf(fpdu.DiagBadParameter, "SELECT PI 13 = %d", pi13)
	}
	restart, _ := f.Params.Uint(fpdu.PIRestart)
	x := &transfer{dir: DirectionSend, vf: vf, file: name, pesitID: uint32(pi13), started: srv.now()}
	x.fileType, _ = f.Params.Uint(fpdu.PIFileType)
	if x.pesitID == 0 {
		x.pesitID = rand.Uint32N(0xFFFFFF) + 1
	}
	if restart == 1 && pi13 != 0 {
		rs, found, err := srv.jnl.FindRestart(s.ctx, RestartKey{Partner: s.partner.ID, Direction: DirectionSend, PeSITID: x.pesitID, File: name})
		if err != nil {
			s.log.Error("restart lookup failed", "err", err)
			return s.refuseFile(fpdu.AckSelect, fpdu.DiagTemporaryNoResources, "restart lookup failed")
		}
		if found {
			x.restart = &rs
		}
	}
	root, err := os.OpenRoot(vf.SendDir)
	if err != nil {
		return s.refuseFile(fpdu.AckSelect, fpdu.DiagFileNotFound, "send directory %s: %v", vf.SendDir, err)
	}
	defer root.Close()
	rel, err := expandName(vf.SendName, nameVars{Partner: s.partner.ID, File: name, TransferID: int64(x.pesitID), Now: srv.now(), UUID: uuid.NewString()})
	if err != nil {
		return s.refuseFile(fpdu.AckSelect, fpdu.DiagFileNotFound, "source name: %v", err)
	}
	src, err := root.Open(rel)
	if err != nil {
		return s.refuseFile(fpdu.AckSelect, fpdu.DiagFileNotFound, "%s: %v", rel, err)
	}
	st, err := src.Stat()
	if err != nil || !st.Mode().IsRegular() {
		src.Close()
		return s.refuseFile(fpdu.AckSelect, fpdu.DiagFileNotFound, "%s is not a regular file", rel)
	}
	x.src, x.srcPath, x.size, x.modTime = src, filepath.Join(vf.SendDir, rel), st.Size(), st.ModTime()
	x.setText(uint64(vf.DataCode), byte(vf.RecordFormat))
	if x.entity, err = s.negotiateEntity(f, 1, true); err != nil {
		src.Close()
		return s.refuseFile(fpdu.AckSelect, diagOf(err, fpdu.DiagInsufficientCharacteristics), "%v", err)
	}
	x.recLen = vf.RecordLength
	if x.recLen == 0 {
		x.recLen = srv.cfg.DefaultRecordLength
	}
	if !s.partner.Segmented && x.recLen > x.entity-6 {
		x.recLen = x.entity - 6
	}
	if x.text && x.recLen > x.entity-textSpare {
		// Room for an empty line on each side of a longest line in one
		// DTF: an empty line never travels alone (package doc).
		x.recLen = max(x.entity-textSpare, 1)
	}
	if lim := s.syncLimit(); lim > 0 && int64(x.recLen) > lim {
		x.recLen = int(lim) // a SYN only goes between articles
	}
	t := Transfer{ServerID: srv.cfg.ID, Partner: s.partner.ID, VirtualFile: vf.ID, Direction: DirectionSend,
		PeSITID: x.pesitID, Restart: restart == 1, Path: x.srcPath, DeclaredSize: x.size, Started: x.started}
	if x.restart != nil {
		t.RestartOf = x.restart.Transfer
	}
	ref, err := srv.jnl.Begin(s.ctx, t)
	if err != nil {
		src.Close()
		s.log.Error("journal begin failed", "err", err)
		return s.refuseFile(fpdu.AckSelect, fpdu.DiagTemporaryNoResources, "journal unavailable")
	}
	x.ref = ref
	s.beginTransfer(x)

	ack := fpdu.FPDU{Kind: fpdu.AckSelect, DstID: s.peerID}
	ack.Params.AddDiagnostic(fpdu.DiagOK)
	var g9 fpdu.Params
	g9.AddUint(fpdu.PIFileType, x.fileType)
	g9.AddString(fpdu.PIFileName, name)
	ack.Params.AddGroup(fpdu.PGIFileID, g9)
	ack.Params.AddUint(fpdu.PITransferID, uint64(x.pesitID))
	ack.Params.AddUint(fpdu.PIDataCode, uint64(vf.DataCode))
	ack.Params.AddUint(fpdu.PIEntitySize, uint64(x.entity))
	var g30 fpdu.Params
	g30.Add(fpdu.PIArticleFormat, []byte{byte(vf.RecordFormat)})
	g30.AddUint(fpdu.PIArticleLength, uint64(x.recLen))
	ack.Params.AddGroup(fpdu.PGILogical, g30)
	var g40 fpdu.Params
	g40.AddUint(fpdu.PISpaceUnit, 0)
	g40.AddUint(fpdu.PISpaceMax, uint64((x.size+1023)/1024))
	ack.Params.AddGroup(fpdu.PGIPhysical, g40)
	var g50 fpdu.Params
	g50.AddString(fpdu.PICreated, x.modTime.Format("060102150405"))
	ack.Params.AddGroup(fpdu.PGIHistorical, g50)
	return s.write(&ack)
}

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
	b, a := x.counts()
	if st == StatusInterrupted && x.sink != nil && !x.sink.closed {
		k := x.keptPoint()
		b, a = k.offset, k.articles
	}
	o := Outcome{Status: st, Bytes: b, Articles: a, Diagnostic: d, Detail: detail, Finished: s.srv.now(), Anomalies: x.anomalies}
	if st == StatusDone {
		if x.sink != nil {
			o.SHA256 = x.sink.sum()
		} else if x.h != nil {
			o.SHA256 = hex.EncodeToString(x.h.Sum(nil))
		}
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
// temporary file for a restart.
func (s *session) endTransfer(cause error) {
	x := s.xfer
	if x == nil {
		return
	}
	s.dataPhase.Store(false)
	if !x.finished {
		b, _ := x.counts()
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
		keep := syncPoint{}
		if x.sink != nil && !x.lost {
			keep = x.keptPoint()
		}
		if x.lost {
			s.settle(s.outcome(st, d, detail))
		} else {
			s.finish(st, d, detail)
		}
		s.releaseFile(st == StatusInterrupted, keep)
	} else if x.sink != nil && !x.sink.closed {
		if x.lost {
			x.sink.abandon()
		} else {
			x.sink.discard()
		}
	}
	if x.src != nil {
		x.src.Close()
	}
	if x.root != nil {
		x.root.Close()
	}
	if x.dir == DirectionReceive {
		s.srv.unclaimPath(x.finalAbs)
	}
	s.srv.trackTransfer(x.ref.ID, nil)
	s.setCurrentTransfer("")
	x.span.End()
	s.xfer = nil
}

// releaseFile ends an unfinished receive's temporary file: cut back to keep
// and kept for a restart when interrupted, else removed; only abandoned
// when the transfer was lost to another owner.
func (s *session) releaseFile(interrupted bool, keep syncPoint) {
	x := s.xfer
	switch {
	case x.sink == nil || x.sink.closed:
	case x.lost:
		x.sink.abandon()
	case interrupted:
		// Keep only what a sync point made durable.
		if err := x.sink.truncate(keep.offset, keep.articles); err != nil {
			s.log.Warn("truncating interrupted file", "err", err)
		}
		if err := x.sink.close(); err != nil {
			s.log.Warn("closing interrupted file", "err", err)
		}
	default:
		x.sink.discard()
	}
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

// message handles MSG and MSGDM..MSGFM (digest §4.7).
func (s *session) message(f *fpdu.FPDU) error {
	name, _ := f.Params.String(fpdu.PIFileName)
	pi13, _ := f.Params.Uint(fpdu.PITransferID)
	text, _ := f.Params.Bytes(fpdu.PIMessage)
	buf := append([]byte(nil), text...)
	const maxMessage = 1 << 20
	if f.Kind == fpdu.MsgDM {
		for done := false; !done; {
			s.setReadDeadline(s.srv.cfg.InactivityTimeout)
			g, err := s.next()
			if err != nil {
				return s.readErr(err)
			}
			switch g.Kind {
			case fpdu.MsgMM, fpdu.MsgFM:
				part, _ := g.Params.Bytes(fpdu.PIMessage)
				buf = append(buf, part...)
				done = g.Kind == fpdu.MsgFM
				if len(buf) > maxMessage {
					return abortf(fpdu.DiagBadParameter, "segmented message over %d bytes", maxMessage)
				}
			case fpdu.Abort:
				return s.peerAbort(g)
			default:
				return abortf(fpdu.DiagProtocolError, "%v inside a segmented message", g.Kind)
			}
		}
	}
	srv := s.srv
	now := srv.now()
	ref, err := srv.jnl.Begin(s.ctx, Transfer{ServerID: srv.cfg.ID, Partner: s.partner.ID, VirtualFile: name,
		Direction: DirectionReceive, Message: true, PeSITID: uint32(pi13), Text: string(buf), Started: now})
	d := fpdu.DiagOK
	if err != nil {
		s.log.Error("journal begin failed", "err", err)
		d = fpdu.DiagTemporaryNoResources
	} else if err := srv.jnl.Finish(s.ctx, ref, Outcome{Status: StatusDone, Bytes: int64(len(buf)), Articles: 1, Finished: now}); err != nil {
		s.log.Error("journal finish failed", "err", err)
		d = fpdu.DiagTemporaryNoResources
	}
	if m := srv.met; m != nil {
		res := string(StatusDone)
		if !d.OK() {
			res = string(StatusFailed)
		}
		m.Transfers.WithLabelValues(srv.cfg.ID, "message", res).Inc()
	}
	s.log.Info("message received", "file", name, "bytes", len(buf), "diag", d.String())
	srv.countDiag(d)
	ack := fpdu.FPDU{Kind: fpdu.AckMsg, DstID: s.peerID}
	ack.Params.AddDiagnostic(d)
	if pi13 != 0 {
		ack.Params.AddUint(fpdu.PITransferID, pi13)
	}
	return s.write(&ack)
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
	if x.dir == DirectionReceive {
		t.Path, t.TempPath = x.finalAbs, filepath.Join(x.vf.ReceiveDir, x.tempRel)
	} else {
		t.Path = x.srcPath
	}
	ref, err := srv.jnl.Begin(s.ctx, t)
	if err != nil {
		return abortf(fpdu.DiagCongestion, "journal unavailable: %v", err)
	}
	srv.trackTransfer(x.ref.ID, nil)
	p := x.lastSync
	if x.dir == DirectionSend {
		p = x.lastSent // any point sent can be resumed (send.go, replay)
	}
	x.restart = &RestartState{Transfer: x.ref, Path: t.Path, TempPath: t.TempPath,
		Sync: p.num, Offset: p.offset, Articles: p.articles}
	x.ref, x.started, x.finished, x.resumable = ref, t.Started, false, false
	x.sink = nil // receive reopens the temporary file at the point
	s.setCurrentTransfer(x.ref.ID)
	srv.trackTransfer(x.ref.ID, s)
	if srv.met != nil {
		srv.met.Restarts.Inc()
	}
	s.log.Info("transfer resumed in place", "id", x.ref.ID, "restart_of", t.RestartOf.ID, "point", x.lastSync.num)
	return nil
}

// keptPoint is where an interrupted receive's partial file is cut: the last
// point made durable whose journal write was attempted, so that the file
// always holds the restart point the store recorded, whichever of the two
// the store ended up with.
func (x *transfer) keptPoint() syncPoint {
	if x.syncTried.offset > x.lastSync.offset && (x.sink == nil || x.syncTried.offset <= x.sink.bytes) {
		return x.syncTried
	}
	return x.lastSync
}
