package server

import (
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/google/uuid"

	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// selectFile answers SELECT: the server will send a file (digest §8.1.6).
// On success s holds the transfer, whose side is a sender.
func selectFile(s *session, f *fpdu.FPDU) error {
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
	sd := &sender{s: s, x: x}
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
	sd.src, sd.srcPath, sd.size, sd.modTime = src, filepath.Join(vf.SendDir, rel), st.Size(), st.ModTime()
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
	if x.text && x.recLen > x.entity-fpdu.TextSpare {
		// Room for an empty line on each side of a longest line in one
		// DTF: an empty line never travels alone (package doc).
		x.recLen = max(x.entity-fpdu.TextSpare, 1)
	}
	if lim := s.syncLimit(); lim > 0 && int64(x.recLen) > lim {
		x.recLen = int(lim) // a SYN only goes between articles
	}
	t := Transfer{ServerID: srv.cfg.ID, Partner: s.partner.ID, VirtualFile: vf.ID, Direction: DirectionSend,
		PeSITID: x.pesitID, Restart: restart == 1, Path: sd.srcPath, DeclaredSize: sd.size, Started: x.started}
	if x.restart != nil {
		t.RestartOf = x.restart.Transfer
	}
	ref, err := srv.jnl.Begin(s.ctx, t)
	if err != nil {
		src.Close()
		s.log.Error("journal begin failed", "err", err)
		return s.refuseFile(fpdu.AckSelect, fpdu.DiagTemporaryNoResources, "journal unavailable")
	}
	x.ref, x.side = ref, sd
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
	g40.AddUint(fpdu.PISpaceMax, uint64((sd.size+1023)/1024))
	ack.Params.AddGroup(fpdu.PGIPhysical, g40)
	var g50 fpdu.Params
	g50.AddDate(fpdu.PICreated, sd.modTime)
	ack.Params.AddGroup(fpdu.PGIHistorical, g50)
	return s.write(&ack)
}
