package client

import (
	"context"
	"errors"

	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// maxMessageSegment is the largest PI 91 we put in one MSG FPDU: PI 91 allows
// 4096 bytes and no PI 25 applies to messages.
const maxMessageSegment = 4000

// Message sends text to the server with MSG (or MSGDM, MSGMM..., MSGFM when
// it is longer than one segment) and waits for ACK(MSG).
func (s *Session) Message(ctx context.Context, text string) error {
	if s.broken {
		return &ConnectionError{Op: "message", Err: errors.New("session is closed")}
	}
	defer s.watch(ctx)()
	var id fpdu.Params
	id.AddString(fpdu.PIRequesterID, s.cfg.RequesterID)
	id.AddString(fpdu.PIServerID, s.cfg.ServerID)
	id.AddUint(fpdu.PIFileType, 0xFFFF) // outgoing message
	id.AddString(fpdu.PIFileName, "MESSAGE")
	first := func(kind fpdu.Kind, part string) *fpdu.FPDU {
		var p fpdu.Params
		p.AddGroup(fpdu.PGIFileID, id)
		p.AddUint(fpdu.PITransferID, uint64(newTransferID()))
		p.Add(fpdu.PIAttributes, []byte{0}) // no reply expected
		p.AddString(fpdu.PIMessage, part)
		return &fpdu.FPDU{Kind: kind, DstID: s.peer, Params: p}
	}
	if len(text) <= maxMessageSegment {
		if err := s.write(first(fpdu.Msg, text)); err != nil {
			return err
		}
	} else {
		if err := s.write(first(fpdu.MsgDM, text[:maxMessageSegment])); err != nil {
			return err
		}
		for rest := text[maxMessageSegment:]; len(rest) > 0; {
			n := min(len(rest), maxMessageSegment)
			kind := fpdu.MsgMM
			if n == len(rest) {
				kind = fpdu.MsgFM
			}
			var p fpdu.Params
			p.AddString(fpdu.PIMessage, rest[:n])
			if err := s.write(&fpdu.FPDU{Kind: kind, DstID: s.peer, Params: p}); err != nil {
				return err
			}
			rest = rest[n:]
		}
	}
	_, err := s.expectOK(fpdu.AckMsg)
	return err
}
