package fpdu

// AbortOption adjusts NewAbort.
type AbortOption func(*FPDU)

// WithAbortPIForm sends the diagnostic as a PI unit (02 03 tt rr rr), the
// form some implementations use, instead of the bare 3 bytes.
func WithAbortPIForm() AbortOption { return func(f *FPDU) { f.AbortPIForm = true } }

// WithFreeMessage adds PI 99 (free text, at most 254 bytes); it implies the
// PI form.
func WithFreeMessage(msg string) AbortOption {
	return func(f *FPDU) {
		f.AbortPIForm = true
		f.Params.AddString(PIFreeMessage, msg)
	}
}

// NewAbort builds an ABORT (dst = the peer's id, 0 if not yet known; src =
// our id) carrying d. It is encoded bare (the 3 diagnostic bytes only, as
// the specification and Connect:Express do) unless an option says otherwise.
func NewAbort(dstID, srcID byte, d Diagnostic, opts ...AbortOption) *FPDU {
	f := &FPDU{Kind: Abort, DstID: dstID, SrcID: srcID}
	f.Params.AddDiagnostic(d)
	for _, o := range opts {
		o(f)
	}
	return f
}

// New builds an FPDU of kind k with the given ids and parameters.
func New(k Kind, dstID, srcID byte, params ...Param) *FPDU {
	return &FPDU{Kind: k, DstID: dstID, SrcID: srcID, Params: params}
}
