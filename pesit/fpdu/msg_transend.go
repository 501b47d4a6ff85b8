package fpdu

// NewTransEnd builds TRANS.END{PI 27 = bytes, PI 28 = articles}: the data
// bytes and articles of the whole file.
func NewTransEnd(dst byte, bytes, articles int64) *FPDU {
	f := &FPDU{Kind: TransEnd, DstID: dst}
	f.Params.AddUint(PIByteCount, uint64(bytes))
	f.Params.AddUint(PIArticleCount, uint64(articles))
	return f
}

// NewAckTransEnd builds ACK(TRANS.END){PI 2 = d, PI 27, PI 28}.
func NewAckTransEnd(dst byte, d Diagnostic, bytes, articles int64) *FPDU {
	f := NewDiag(AckTransEnd, dst, d)
	f.Params.AddUint(PIByteCount, uint64(bytes))
	f.Params.AddUint(PIArticleCount, uint64(articles))
	return f
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
