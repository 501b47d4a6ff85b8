package server

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/google/uuid"

	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// createFile answers CREATE: the server will receive a file (digest
// §8.1.5). On success s holds the transfer, whose side is a receiver.
func createFile(s *session, f *fpdu.FPDU) error {
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
	r := &receiver{s: s, x: x}
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
			x.restart, r.finalRel, r.tempRel = &rs, fr, tr
		} else {
			s.log.Warn("restart state does not match the receive directory; starting afresh", "path", rs.Path)
		}
	}
	if r.finalRel == "" {
		rel, err := expandName(vf.NamePattern, nameVars{Partner: s.partner.ID, File: name, TransferID: int64(x.pesitID), Now: srv.now(), UUID: uuid.NewString()})
		if err != nil {
			return s.refuseFile(fpdu.AckCreate, fpdu.DiagTransferRefused, "target name: %v", err)
		}
		r.finalRel = rel
		r.tempRel = tempNameFor(rel)
	}
	r.finalAbs = filepath.Join(vf.ReceiveDir, r.finalRel)
	if x.restart != nil && x.restart.Completed && !publishedBefore(root, r) {
		// Recorded completed, but the file is not (or no longer) under its
		// final name. Never write it again: a crash between the record and
		// the rename is finished by the leader's sweep, which publishes
		// the file, so that a later attempt confirms it. A file taken away
		// since cannot be confirmed.
		if _, err := root.Lstat(r.tempRel); err == nil {
			return s.refuseFile(fpdu.AckCreate, fpdu.DiagTemporaryNoResources,
				"transfer %d recorded completed, its file %s not yet published: retry the restart", x.pesitID, r.finalRel)
		}
		return s.refuseFile(fpdu.AckCreate, fpdu.DiagTransferRefused,
			"transfer %d was completed and its file %s is gone: it cannot be confirmed", x.pesitID, r.finalRel)
	}
	if x.restart != nil && publishedBefore(root, r) {
		// Not 2/204: the file is this transfer's own. The restart goes on
		// as usual and the data resent from its point is compared with the
		// file, so that the requester is told the transfer is done by an
		// ACK(TRANS.END) it knows, and no second copy is delivered.
		r.published = true
		s.log.Warn("restart of a transfer whose file was published already; the data resent is checked against it",
			"file", r.finalRel, "restart_of", x.restart.Transfer.ID, "sync", x.restart.Sync, "offset", x.restart.Offset)
	} else if _, err := root.Lstat(r.finalRel); err == nil && !vf.Overwrite {
		return s.refuseFile(fpdu.AckCreate, fpdu.DiagFileExists, "%s exists", r.finalRel)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return s.refuseFile(fpdu.AckCreate, fpdu.DiagTransferRefused, "%s: %v", r.finalRel, err)
	}
	if !srv.claimPath(r.finalAbs) {
		return s.refuseFile(fpdu.AckCreate, fpdu.DiagFileBusy, "%s is being received", r.finalRel)
	}
	t := Transfer{ServerID: srv.cfg.ID, Partner: s.partner.ID, VirtualFile: vf.ID, Direction: DirectionReceive,
		PeSITID: x.pesitID, Restart: restart == 1, Path: r.finalAbs, TempPath: filepath.Join(vf.ReceiveDir, r.tempRel),
		DeclaredSize: x.declared, FileCreated: created, Started: x.started}
	if x.restart != nil && !x.restart.Completed {
		// A completed record is not taken over: it stays as it is, and its
		// restart, which only checks the published file, gets a record of
		// its own.
		t.RestartOf = x.restart.Transfer
	}
	ref, err := srv.jnl.Begin(s.ctx, t)
	if err != nil {
		srv.unclaimPath(r.finalAbs)
		s.log.Error("journal begin failed", "err", err)
		return s.refuseFile(fpdu.AckCreate, fpdu.DiagTemporaryNoResources, "journal unavailable")
	}
	keep = true
	r.root, x.ref, x.side = root, ref, r
	s.beginTransfer(x)
	ack := fpdu.FPDU{Kind: fpdu.AckCreate, DstID: s.peerID}
	ack.Params.AddDiagnostic(fpdu.DiagOK)
	ack.Params.AddUint(fpdu.PIEntitySize, uint64(x.entity))
	return s.write(&ack)
}

// publishedBefore says whether the interrupted transfer that r restarts had
// published its file already: the node stopped between the publication
// (the rename of the temporary file) and the journal's record of it. Then
// the final file exists, the temporary one does not, and the file holds at
// least the data of the last sync point. Its content is checked by the
// data phase (verifySink): size and bytes after the sync point must match
// what the requester resends, and the SHA-256 of the whole file is recorded.
func publishedBefore(root *os.Root, r *receiver) bool {
	x := r.x
	fi, err := root.Lstat(r.finalRel)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() < x.restart.Offset {
		return false
	}
	if x.declared > 0 && !x.text && fi.Size() > x.declared {
		return false // larger than the requester announces (PI 42): another file
	}
	_, err = root.Lstat(r.tempRel)
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
