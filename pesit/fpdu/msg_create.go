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
	q.addFileID(p.FileType, p.FileName)
	q.AddUint(PITransferID, uint64(p.TransferID))
	if p.Restart {
		q.AddUint(PIRestart, 1)
	}
	q.AddUint(PIDataCode, uint64(p.DataCode))
	q.AddUint(PIPriority, uint64(p.Priority))
	q.AddUint(PIEntitySize, uint64(p.EntitySize))
	q.addFileAttributes(p.ArticleFormat, p.ArticleLength, p.SpaceKB, p.Created)
	return f
}

// addFileID appends PGI 9 with PI 11 and PI 12.
func (p *Params) addFileID(fileType uint16, name string) {
	var id Params
	id.AddUint(PIFileType, uint64(fileType))
	id.AddString(PIFileName, name)
	p.AddGroup(PGIFileID, id)
}

// addFileAttributes appends the attributes of a file as CREATE and
// ACK(SELECT) carry them: PGI 30 {PI 31, PI 32}, PGI 40 {PI 41 = 0 (KiB),
// PI 42}, PGI 50 {PI 51}.
func (p *Params) addFileAttributes(format byte, articleLength int, spaceKB int64, created time.Time) {
	var logical Params
	logical.Add(PIArticleFormat, []byte{format})
	logical.AddUint(PIArticleLength, uint64(articleLength))
	p.AddGroup(PGILogical, logical)
	var physical Params
	physical.AddUint(PISpaceUnit, 0)
	physical.AddUint(PISpaceMax, uint64(spaceKB))
	p.AddGroup(PGIPhysical, physical)
	var hist Params
	hist.AddDate(PICreated, created)
	p.AddGroup(PGIHistorical, hist)
}

// NewAckCreate builds ACK(CREATE){PI 2 = d, PI 25 = entity}: entity is the
// entity size the responder agrees to, at most the requester's.
func NewAckCreate(dst byte, d Diagnostic, entity int) *FPDU {
	f := NewDiag(AckCreate, dst, d)
	f.Params.AddUint(PIEntitySize, uint64(entity))
	return f
}
