package fpdu

import (
	"errors"
	"fmt"
)

// Article errors. They wrap the diagnostic to send: a malformed DTF is a
// protocol error (3/311); an article over the negotiated length is 2/220.
var (
	ErrArticleLayout   = errors.New("bad article layout")
	ErrArticleTooLong  = errors.New("article too long")
	ErrSegmentSequence = errors.New("bad segment sequence")
)

// MaxArticles is the largest N of a multi-article DTF (header byte 5).
const MaxArticles = 255

// ForEachArticle calls fn with each article of a DTF, in order:
//   - byte 5 = 0: the whole payload is one article;
//   - byte 5 = N > 1: N x (2-byte length + article), checked to sum exactly
//     to the payload; zero-length articles are allowed;
//   - byte 5 = 1 (seen from CX as a server): if the first 2 bytes equal the
//     payload length - 2 it is one prefixed article, otherwise raw.
//
// The layout is checked before fn is first called, so fn never sees part of
// a malformed DTF. Articles alias f.Data. For DTFDA, DTFMA and DTFFA use a
// Reassembler. An error returned by fn stops the walk and is returned as is.
func (f *FPDU) ForEachArticle(fn func(article []byte) error) error {
	if f.Kind != DTF {
		return protoErr(ErrNotData, "ForEachArticle on %s", f.Kind)
	}
	d := f.Data
	switch f.SrcID {
	case 0:
		if len(d) == 0 {
			return protoErr(ErrArticleLayout, "empty single-article DTF")
		}
		return fn(d)
	case 1:
		if len(d) >= 2 && int(d[0])<<8|int(d[1]) == len(d)-2 {
			return fn(d[2:])
		}
		if len(d) == 0 {
			return protoErr(ErrArticleLayout, "empty DTF")
		}
		return fn(d)
	}
	if err := checkMulti(d, int(f.SrcID)); err != nil {
		return err
	}
	for len(d) > 0 {
		n := int(d[0])<<8 | int(d[1])
		if err := fn(d[2 : 2+n]); err != nil {
			return err
		}
		d = d[2+n:]
	}
	return nil
}

// checkMulti checks that d holds exactly n prefixed articles.
func checkMulti(d []byte, n int) error {
	for i := range n {
		if len(d) < 2 {
			return protoErr(ErrArticleLayout, "multi-article DTF: article %d of %d has no length (%d bytes left)", i+1, n, len(d))
		}
		l := int(d[0])<<8 | int(d[1])
		if l > len(d)-2 {
			return protoErr(ErrArticleLayout, "multi-article DTF: article %d of %d claims %d bytes, %d left", i+1, n, l, len(d)-2)
		}
		d = d[2+l:]
	}
	if len(d) != 0 {
		return protoErr(ErrArticleLayout, "multi-article DTF: %d bytes after the %d articles announced", len(d), n)
	}
	return nil
}

// ArticleCount returns how many articles a DTF holds (1 for a DTFFA, which
// completes a segmented article, 0 for DTFDA and DTFMA) and how many data
// bytes, length prefixes excluded: the units of PI 28 and PI 27.
func (f *FPDU) ArticleCount() (articles, bytes int, err error) {
	switch f.Kind {
	case DTFDA, DTFMA:
		return 0, len(f.Data), nil
	case DTFFA:
		return 1, len(f.Data), nil
	case DTF:
		err = f.ForEachArticle(func(a []byte) error {
			articles++
			bytes += len(a)
			return nil
		})
		return articles, bytes, err
	}
	return 0, 0, protoErr(ErrNotData, "ArticleCount on %s", f.Kind)
}

// AppendDTF appends one DTF FPDU holding articles: a single-article DTF
// (byte 5 = 0) for one article, a multi-article DTF (byte 5 = N) for
// several. It never produces byte 5 = 1. A lone empty article cannot be
// sent (an empty DTF does not exist).
func AppendDTF(dst []byte, dstID byte, articles ...[]byte) ([]byte, error) {
	switch n := len(articles); {
	case n == 0:
		return dst, fmt.Errorf("fpdu: DTF without articles")
	case n > MaxArticles:
		return dst, fmt.Errorf("fpdu: DTF with %d articles, at most %d", n, MaxArticles)
	case n == 1:
		if len(articles[0]) == 0 {
			return dst, fmt.Errorf("fpdu: single-article DTF with an empty article")
		}
		size := HeaderLen + len(articles[0])
		if size > MaxFPDULen {
			return dst, fmt.Errorf("fpdu: DTF of %d bytes: %w", size, ErrFrameTooLarge)
		}
		dst = append(dst, byte(size>>8), byte(size), PhaseData, DTF.Type(), dstID, 0)
		return append(dst, articles[0]...), nil
	}
	size := HeaderLen
	for _, a := range articles {
		size += 2 + len(a)
	}
	if size > MaxFPDULen {
		return dst, fmt.Errorf("fpdu: DTF of %d bytes: %w", size, ErrFrameTooLarge)
	}
	dst = append(dst, byte(size>>8), byte(size), PhaseData, DTF.Type(), dstID, byte(len(articles)))
	for _, a := range articles {
		dst = append(dst, byte(len(a)>>8), byte(len(a)))
		dst = append(dst, a...)
	}
	return dst, nil
}

// AppendSegment appends a DTFDA, DTFMA or DTFFA carrying frag.
func AppendSegment(dst []byte, k Kind, dstID byte, frag []byte) ([]byte, error) {
	if k != DTFDA && k != DTFMA && k != DTFFA {
		return dst, fmt.Errorf("fpdu: %s is not a segment kind", k)
	}
	if len(frag) == 0 {
		return dst, fmt.Errorf("fpdu: empty %s", k)
	}
	size := HeaderLen + len(frag)
	if size > MaxFPDULen {
		return dst, fmt.Errorf("fpdu: %s of %d bytes: %w", k, size, ErrFrameTooLarge)
	}
	dst = append(dst, byte(size>>8), byte(size), PhaseData, k.Type(), dstID, 0)
	return append(dst, frag...), nil
}

// Reassembler joins DTFDA + DTFMA* + DTFFA into one article, bounded by a
// maximum article length, and passes whole DTFs through ForEachArticle, so
// that a receiver sees a plain stream of articles. The zero value is not
// usable; call NewReassembler.
type Reassembler struct {
	max    int
	buf    []byte
	active bool
}

// NewReassembler returns a Reassembler that refuses articles longer than
// maxArticle bytes (the negotiated PI 32) with 2/220. PI 32 has 2 bytes, so
// a value <= 0 or above 65535 means 65535: the buffer stays bounded.
func NewReassembler(maxArticle int) *Reassembler {
	if maxArticle <= 0 || maxArticle > MaxFPDULen {
		maxArticle = MaxFPDULen
	}
	return &Reassembler{max: maxArticle}
}

// InProgress reports whether a segmented article has begun and not ended.
// A SYN or DTF.END arriving then is a protocol error.
func (r *Reassembler) InProgress() bool { return r.active }

// Reset drops a partial article (after IDT, RESYN or an error).
func (r *Reassembler) Reset() { r.active, r.buf = false, r.buf[:0] }

// Add takes one data FPDU and calls fn with every article it completes: each
// article of a DTF, or the reassembled article at DTFFA. The article passed
// to fn is valid only during the call. A DTF or DTFDA inside a segmented
// article, a DTFMA or DTFFA outside one, or an article over the maximum are
// errors (3/311, 2/220) after which the Reassembler is reset.
func (r *Reassembler) Add(f *FPDU, fn func(article []byte) error) error {
	switch f.Kind {
	case DTF:
		if r.active {
			r.Reset()
			return protoErr(ErrSegmentSequence, "DTF inside a segmented article")
		}
		if err := f.ForEachArticle(r.checkLen); err != nil {
			return err
		}
		return f.ForEachArticle(fn)
	case DTFDA:
		if r.active {
			r.Reset()
			return protoErr(ErrSegmentSequence, "DTFDA inside a segmented article")
		}
		r.active, r.buf = true, r.buf[:0]
		return r.append(f.Data)
	case DTFMA:
		if !r.active {
			return protoErr(ErrSegmentSequence, "DTFMA without DTFDA")
		}
		return r.append(f.Data)
	case DTFFA:
		if !r.active {
			return protoErr(ErrSegmentSequence, "DTFFA without DTFDA")
		}
		if err := r.append(f.Data); err != nil {
			return err
		}
		r.active = false
		return fn(r.buf)
	}
	return protoErr(ErrNotData, "Reassembler.Add of %s", f.Kind)
}

func (r *Reassembler) checkLen(a []byte) error {
	if len(a) > r.max {
		return tooLong(len(a), r.max)
	}
	return nil
}

func (r *Reassembler) append(frag []byte) error {
	if len(r.buf)+len(frag) > r.max {
		n := len(r.buf) + len(frag)
		r.Reset()
		return tooLong(n, r.max)
	}
	r.buf = append(r.buf, frag...)
	return nil
}

func tooLong(n, limit int) error {
	return &codecError{diag: DiagArticleTooLong, sentinel: ErrArticleTooLong, msg: fmt.Sprintf("article of at least %d bytes, limit %d", n, limit)}
}

// Counter accumulates the data byte count (PI 27: length prefixes excluded)
// and article count (PI 28: a DTFDA...DTFFA sequence is one article) of the
// data FPDUs given to Add.
type Counter struct {
	Bytes    uint64
	Articles uint64
}

// Add counts one data FPDU. A malformed DTF is not counted.
func (c *Counter) Add(f *FPDU) error {
	a, b, err := f.ArticleCount()
	if err != nil {
		return err
	}
	c.Articles += uint64(a)
	c.Bytes += uint64(b)
	return nil
}
