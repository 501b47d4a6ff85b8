package fpdu

// MessageParams are the parameters of MSG, or of MSGDM that starts a
// message sent in segments.
type MessageParams struct {
	RequesterID, ServerID string // PI 3, PI 4, in PGI 9
	FileType              uint16 // PI 11, in PGI 9 (0xFFFF: an outgoing message)
	FileName              string // PI 12, in PGI 9
	TransferID            uint32 // PI 13
	Text                  string // PI 91: the message, or its first segment
}

// NewMessage builds MSG (k = Msg) or MSGDM (k = MsgDM) with PI 14 = 0: no
// reply expected.
func NewMessage(k Kind, dst byte, p MessageParams) *FPDU {
	f := &FPDU{Kind: k, DstID: dst}
	var id Params
	id.AddString(PIRequesterID, p.RequesterID)
	id.AddString(PIServerID, p.ServerID)
	id.AddUint(PIFileType, uint64(p.FileType))
	id.AddString(PIFileName, p.FileName)
	f.Params.AddGroup(PGIFileID, id)
	f.Params.AddUint(PITransferID, uint64(p.TransferID))
	f.Params.Add(PIAttributes, []byte{0})
	f.Params.AddString(PIMessage, p.Text)
	return f
}

// NewMessageSegment builds MSGMM or MSGFM (k) carrying the next segment.
func NewMessageSegment(k Kind, dst byte, text string) *FPDU {
	f := &FPDU{Kind: k, DstID: dst}
	f.Params.AddString(PIMessage, text)
	return f
}
