package fpdu

// SelectParams are the parameters of SELECT (a pull) that Vectis sends.
type SelectParams struct {
	FileType   uint16 // PI 11, in PGI 9
	FileName   string // PI 12, in PGI 9
	TransferID uint32 // PI 13 (0: the server chooses)
	Restart    bool   // PI 15 = 1, sent only when set
	Priority   uint8  // PI 17
	EntitySize int    // PI 25
}

// NewSelect builds SELECT to dst. PI 14 (attributes) is 0xE0: the file's
// attributes are asked for in ACK(SELECT).
func NewSelect(dst byte, p SelectParams) *FPDU {
	f := &FPDU{Kind: Select, DstID: dst}
	q := &f.Params
	var id Params
	id.AddUint(PIFileType, uint64(p.FileType))
	id.AddString(PIFileName, p.FileName)
	q.AddGroup(PGIFileID, id)
	q.AddUint(PITransferID, uint64(p.TransferID))
	q.Add(PIAttributes, []byte{0xE0})
	if p.Restart {
		q.AddUint(PIRestart, 1)
	}
	q.AddUint(PIPriority, uint64(p.Priority))
	q.AddUint(PIEntitySize, uint64(p.EntitySize))
	return f
}

// AckSelectView is what a requester reads of ACK(SELECT): the transfer id
// and the attributes of the file it will receive.
type AckSelectView struct {
	TransferID    uint64 // PI 13
	DataCode      uint64 // PI 16; 2 (binary) when absent
	ArticleFormat []byte // PI 31
	ArticleLength uint64 // PI 32; HasArticleLength when present
	SpaceKB       uint64 // PI 42; HasSpace when present
	Created       string // PI 51, as sent

	HasArticleLength, HasSpace bool
}

// ReadAckSelect reads ACK(SELECT). The view aliases f.
func ReadAckSelect(f *FPDU) AckSelectView {
	p := f.Params
	var v AckSelectView
	v.TransferID, _ = p.Uint(PITransferID)
	var ok bool
	if v.DataCode, ok = p.Uint(PIDataCode); !ok {
		v.DataCode = 2
	}
	v.ArticleFormat, _ = p.Bytes(PIArticleFormat)
	v.ArticleLength, v.HasArticleLength = p.Uint(PIArticleLength)
	v.SpaceKB, v.HasSpace = p.Uint(PISpaceMax)
	v.Created, _ = p.String(PICreated)
	return v
}
