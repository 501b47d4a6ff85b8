package fpdu

// The FPDUs of the transfer phases that carry a sync point number, a
// diagnostic or counts. Each builder returns a new FPDU for dst, the peer's
// connection id; each Read function is a view of a received FPDU.

// NewSyn builds SYN{PI 20 = n}.
func NewSyn(dst byte, n uint32) *FPDU { return withUint(Syn, dst, PISyncNumber, uint64(n)) }

// NewAckSyn builds ACK(SYN){PI 20 = n}.
func NewAckSyn(dst byte, n uint32) *FPDU { return withUint(AckSyn, dst, PISyncNumber, uint64(n)) }

// NewRead builds READ{PI 18 = p}: receive from sync point p (0: the start).
func NewRead(dst byte, p uint32) *FPDU { return withUint(Read, dst, PIRestartPoint, uint64(p)) }

// NewAckResyn builds ACK(RESYN){PI 18 = p}.
func NewAckResyn(dst byte, p uint32) *FPDU { return withUint(AckResyn, dst, PIRestartPoint, uint64(p)) }

// NewWrite builds WRITE (no parameters).
func NewWrite(dst byte) *FPDU { return &FPDU{Kind: Write, DstID: dst} }

// NewAckIDT builds ACK(IDT) (no parameters).
func NewAckIDT(dst byte) *FPDU { return &FPDU{Kind: AckIDT, DstID: dst} }

// NewORF builds ORF without compression (PI 21 = 0 0).
func NewORF(dst byte) *FPDU {
	f := &FPDU{Kind: ORF, DstID: dst}
	f.Params.Add(PICompression, []byte{0, 0})
	return f
}

// NewDiag builds an FPDU whose only parameter is PI 2: DTF.END, CRF,
// DESELECT, RELEASE, and the answers that need no more.
func NewDiag(k Kind, dst byte, d Diagnostic) *FPDU {
	f := &FPDU{Kind: k, DstID: dst}
	f.Params.AddDiagnostic(d)
	return f
}

// NewIDT builds IDT{PI 2 = d, PI 19 = endCode}.
func NewIDT(dst byte, d Diagnostic, endCode uint8) *FPDU {
	f := NewDiag(IDT, dst, d)
	f.Params.AddUint(PIEndCode, uint64(endCode))
	return f
}

// NewTransEnd builds TRANS.END{PI 27 = bytes, PI 28 = articles}.
func NewTransEnd(dst byte, bytes, articles int64) *FPDU {
	f := &FPDU{Kind: TransEnd, DstID: dst}
	f.Params.AddUint(PIByteCount, uint64(bytes))
	f.Params.AddUint(PIArticleCount, uint64(articles))
	return f
}

func withUint(k Kind, dst byte, id PI, v uint64) *FPDU {
	f := &FPDU{Kind: k, DstID: dst}
	f.Params.AddUint(id, v)
	return f
}

// IDTView is what an IDT says: why (PI 2) and what follows (PI 19: 4 error,
// a restart follows; 8 suspension; 12, 16 cancellation; 0 when absent).
type IDTView struct {
	Diag    Diagnostic
	EndCode uint8
}

// ReadIDT reads IDT.
func ReadIDT(f *FPDU) IDTView {
	d, _ := f.Params.Diagnostic()
	c, _ := f.Params.Uint(PIEndCode)
	return IDTView{Diag: d, EndCode: uint8(min(c, 0xFF))}
}

// CountsView is PI 2, PI 27 and PI 28 of TRANS.END or ACK(TRANS.END), with
// whether each count was present.
type CountsView struct {
	Diag                  Diagnostic
	Bytes, Articles       uint64
	HasBytes, HasArticles bool
}

// ReadCounts reads TRANS.END or ACK(TRANS.END).
func ReadCounts(f *FPDU) CountsView {
	var v CountsView
	v.Diag, _ = f.Params.Diagnostic()
	v.Bytes, v.HasBytes = f.Params.Uint(PIByteCount)
	v.Articles, v.HasArticles = f.Params.Uint(PIArticleCount)
	return v
}

// ReadPoint reads PI 18, the sync point of READ, ACK(WRITE), RESYN and
// ACK(RESYN), capped at 0xFFFFFF (pesit/fsm rejects larger ones).
func ReadPoint(f *FPDU) uint32 {
	p, _ := f.Params.Uint(PIRestartPoint)
	return uint32(min(p, 0xFFFFFF))
}

// ReadSyncNumber reads PI 20 of SYN or ACK(SYN).
func ReadSyncNumber(f *FPDU) uint32 {
	n, _ := f.Params.Uint(PISyncNumber)
	return uint32(min(n, 0xFFFFFF))
}
