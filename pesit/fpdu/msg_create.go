package fpdu

import "time"

// CreateParams are the parameters of CREATE (a push) that Vectis sends.
type CreateParams struct {
	FileType   uint16 // PI 11, in PGI 9
	FileName   string // PI 12, in PGI 9
	TransferID uint32 // PI 13
	Restart    bool   // PI 15 = 1, sent only when set
	DataCode   uint8  // PI 16: 0 ASCII, 1 EBCDIC, 2 binary
	Priority   uint8  // PI 17
	EntitySize int    // PI 25
	// ArticleFormat (PI 31: 0x00 fixed, 0x80 variable) and ArticleLength
	// (PI 32) go in PGI 30.
	ArticleFormat byte
	ArticleLength int
	// SpaceKB is PI 42 (PI 41 = 0: KiB), in PGI 40.
	SpaceKB int64
	// Created is PI 51, in PGI 50.
	Created time.Time
}

// NewCreate builds CREATE to the server's connection id dst.
func NewCreate(dst byte, p CreateParams) *FPDU {
	f := &FPDU{Kind: Create, DstID: dst}
	q := &f.Params
	var id Params
	id.AddUint(PIFileType, uint64(p.FileType))
	id.AddString(PIFileName, p.FileName)
	q.AddGroup(PGIFileID, id)
	q.AddUint(PITransferID, uint64(p.TransferID))
	if p.Restart {
		q.AddUint(PIRestart, 1)
	}
	q.AddUint(PIDataCode, uint64(p.DataCode))
	q.AddUint(PIPriority, uint64(p.Priority))
	q.AddUint(PIEntitySize, uint64(p.EntitySize))
	var logical Params
	logical.Add(PIArticleFormat, []byte{p.ArticleFormat})
	logical.AddUint(PIArticleLength, uint64(p.ArticleLength))
	q.AddGroup(PGILogical, logical)
	var physical Params
	physical.AddUint(PISpaceUnit, 0)
	physical.AddUint(PISpaceMax, uint64(p.SpaceKB))
	q.AddGroup(PGIPhysical, physical)
	var hist Params
	hist.AddDate(PICreated, p.Created)
	q.AddGroup(PGIHistorical, hist)
	return f
}

// NewAckCreate builds ACK(CREATE){PI 2 = d, PI 25 = entity}: entity is the
// entity size the responder agrees to, at most the requester's.
func NewAckCreate(dst byte, d Diagnostic, entity int) *FPDU {
	f := NewDiag(AckCreate, dst, d)
	f.Params.AddUint(PIEntitySize, uint64(entity))
	return f
}
