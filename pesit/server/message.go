package server

import (
	"github.com/vectis-ft/vectis/pesit/fpdu"
)

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
