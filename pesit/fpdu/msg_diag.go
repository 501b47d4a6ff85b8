package fpdu

// NewDiag builds an FPDU whose only parameter is PI 2: DTF.END, CRF,
// DESELECT, RELEASE, RCONNECT, and the answers that need no more (ACK(CRF),
// ACK(DESELECT), ACK(READ), a negative ACK(CREATE) ...). RELEASE and
// RCONNECT also carry the sender's id: set SrcID.
func NewDiag(k Kind, dst byte, d Diagnostic) *FPDU {
	f := &FPDU{Kind: k, DstID: dst}
	f.Params.AddDiagnostic(d)
	return f
}

// NewORF builds ORF without compression (PI 21 = 0 0).
func NewORF(dst byte) *FPDU {
	f := &FPDU{Kind: ORF, DstID: dst}
	f.Params.Add(PICompression, []byte{0, 0})
	return f
}
