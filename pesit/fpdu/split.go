package fpdu

// SplitData checks a data FPDU as Validate does (ids, no parameters, not
// empty, a DTF's article layout) in one pass over its article headers, and
// appends its articles to dst: one for a single-article DTF or a piece of a
// segmented article (DTFDA, DTFMA, DTFFA), N for a multi-article DTF. They
// alias f.Data. bytes is the data they hold, length prefixes excluded (the
// unit of PI 27 and of the sync interval). On error dst is returned as it
// came. It does not allocate when dst has room.
func SplitData(f *FPDU, dst [][]byte) (articles [][]byte, bytes int, err error) {
	if !f.Kind.IsData() {
		return dst, 0, protoErr(ErrNotData, "SplitData on %s", f.Kind)
	}
	if err := checkIDs(f); err != nil {
		return dst, 0, err
	}
	if len(f.Params) != 0 {
		return dst, 0, protoErr(ErrArticleLayout, "%s with parameters", f.Kind)
	}
	d := f.Data
	if len(d) == 0 {
		return dst, 0, protoErr(ErrArticleLayout, "empty %s", f.Kind)
	}
	if f.Kind != DTF || f.SrcID == 0 {
		return append(dst, d), len(d), nil
	}
	if f.SrcID == 1 {
		// Byte 5 = 1: a prefixed single article, or a bare one (see
		// ForEachArticle).
		if len(d) >= 2 && int(d[0])<<8|int(d[1]) == len(d)-2 {
			d = d[2:]
		}
		return append(dst, d), len(d), nil
	}
	start, n := len(dst), int(f.SrcID)
	for i := range n {
		if len(d) < 2 {
			return dst[:start], 0, protoErr(ErrArticleLayout, "multi-article DTF: article %d of %d has no length (%d bytes left)", i+1, n, len(d))
		}
		l := int(d[0])<<8 | int(d[1])
		if l > len(d)-2 {
			return dst[:start], 0, protoErr(ErrArticleLayout, "multi-article DTF: article %d of %d claims %d bytes, %d left", i+1, n, l, len(d)-2)
		}
		dst = append(dst, d[2:2+l])
		bytes += l
		d = d[2+l:]
	}
	if len(d) != 0 {
		return dst[:start], 0, protoErr(ErrArticleLayout, "multi-article DTF: %d bytes after the %d articles announced", len(d), n)
	}
	return dst, bytes, nil
}
