package fpdu

// HeaderLen is the size of the FPDU header: length(2) phase type dst src.
const HeaderLen = 6

// MaxFPDULen is the largest FPDU (and the largest NSDU) a 2-byte length can
// describe.
const MaxFPDULen = 65535

// FPDU is one decoded FPDU. For data FPDUs (DTF, DTFDA, DTFMA, DTFFA) Params
// is empty and Data holds the payload after the 6-byte header; for a
// multi-article DTF, SrcID = N and Data holds N x (2-byte length + article).
// Slices returned by Reader.Next alias the reader's buffer and are valid
// until the next call.
type FPDU struct {
	Kind   Kind
	DstID  byte // header byte 4
	SrcID  byte // header byte 5: sender id (connection FPDUs), article count N (DTF), else 0
	Params Params
	Data   []byte

	// Repeated lists the codes of parameters that occurred more than once:
	// the decoder keeps the first occurrence (spec §4.7.2.1 h) and records
	// the code here so that Validate can flag the error.
	Repeated []PI

	// AbortPIForm makes an ABORT carry its diagnostic as a PI unit
	// (02 03 tt rr rr) instead of the bare 3 bytes that the specification
	// and Connect:Express use. Decode sets it when the ABORT body was not
	// exactly 3 bytes.
	AbortPIForm bool
}

// Param is a PI or PGI unit. For a PGI, Group holds its PIs and Value is nil.
type Param struct {
	ID    PI
	Value []byte
	Group Params
}

// Params is the parameter list of an FPDU or of a PGI.
type Params []Param

// Unknown lists the parameter codes of f that are not in the Hors-SIT table;
// they were kept by the decoder and will be re-encoded.
func (f *FPDU) Unknown() []PI { return f.Params.Unknown() }

// Clone returns a deep copy of f, safe to keep after the Reader that
// returned f moves on.
func (f *FPDU) Clone() *FPDU {
	g := *f
	g.Params = f.Params.Clone()
	if f.Data != nil {
		g.Data = append([]byte{}, f.Data...)
	}
	if f.Repeated != nil {
		g.Repeated = append([]PI{}, f.Repeated...)
	}
	return &g
}
