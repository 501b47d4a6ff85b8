package fpdu

// NewIDT builds IDT{PI 2 = d, PI 19 = endCode}: the transfer is
// interrupted (end code 4: error, a restart follows; 8: suspension; 12, 16:
// cancellation).
func NewIDT(dst byte, d Diagnostic, endCode uint8) *FPDU {
	f := NewDiag(IDT, dst, d)
	f.Params.AddUint(PIEndCode, uint64(endCode))
	return f
}

// NewAckIDT builds ACK(IDT) (no parameters).
func NewAckIDT(dst byte) *FPDU { return &FPDU{Kind: AckIDT, DstID: dst} }

// IDTView is what an IDT says: why (PI 2) and what follows (PI 19; 0 when
// absent).
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
