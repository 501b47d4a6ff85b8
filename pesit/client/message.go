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
	first := fpdu.MessageParams{RequesterID: s.cfg.RequesterID, ServerID: s.cfg.ServerID,
		FileType: 0xFFFF, FileName: "MESSAGE", TransferID: newTransferID(), Text: text} // 0xFFFF: outgoing message
	if len(text) <= maxMessageSegment {
		if err := s.write(fpdu.NewMessage(fpdu.Msg, s.peer, first)); err != nil {
			return err
		}
	} else {
		first.Text = text[:maxMessageSegment]
		if err := s.write(fpdu.NewMessage(fpdu.MsgDM, s.peer, first)); err != nil {
			return err
		}
		for rest := text[maxMessageSegment:]; len(rest) > 0; {
			n := min(len(rest), maxMessageSegment)
			kind := fpdu.MsgMM
			if n == len(rest) {
				kind = fpdu.MsgFM
			}
			if err := s.write(fpdu.NewMessageSegment(kind, s.peer, rest[:n])); err != nil {
				return err
			}
			rest = rest[n:]
		}
	}
	_, err := s.expectOK(fpdu.AckMsg)
	return err
}
