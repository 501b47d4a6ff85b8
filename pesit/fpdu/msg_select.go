package fpdu

import "time"

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
	q.addFileID(p.FileType, p.FileName)
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

// AckSelectParams are the parameters of a positive ACK(SELECT) that Vectis
// sends: the transfer id and the attributes of the file it will send.
type AckSelectParams struct {
	FileType      uint16    // PI 11, in PGI 9
	FileName      string    // PI 12, in PGI 9
	TransferID    uint32    // PI 13
	DataCode      uint8     // PI 16
	EntitySize    int       // PI 25
	ArticleFormat byte      // PI 31, in PGI 30
	ArticleLength int       // PI 32, in PGI 30
	SpaceKB       int64     // PI 42 (PI 41 = 0: KiB), in PGI 40
	Created       time.Time // PI 51, in PGI 50
}

// NewAckSelect builds a positive ACK(SELECT) to dst (a refusal is NewDiag).
func NewAckSelect(dst byte, p AckSelectParams) *FPDU {
	f := NewDiag(AckSelect, dst, DiagOK)
	q := &f.Params
	q.addFileID(p.FileType, p.FileName)
	q.AddUint(PITransferID, uint64(p.TransferID))
	q.AddUint(PIDataCode, uint64(p.DataCode))
	q.AddUint(PIEntitySize, uint64(p.EntitySize))
	q.addFileAttributes(p.ArticleFormat, p.ArticleLength, p.SpaceKB, p.Created)
	return f
}
