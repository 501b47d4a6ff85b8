package fpdu

import (
	"encoding/binary"
	"errors"
)

// ErrLoneEmpty is an empty article that no other article could accompany:
// PeSIT has no empty DTF, an empty article only exists inside a
// multi-article DTF, and a sender never sets byte 5 = 1 (digest §7).
var ErrLoneEmpty = errors.New("an empty article cannot travel alone: it needs a multi-article DTF with another article of at most the entity size - 12 bytes")

// TextSpare is what a text line must leave of the entity size so that
// [empty, line, empty] fits one DTF: the header and three length prefixes.
const TextSpare = HeaderLen + 6

// Packer groups the articles of a transfer into DTFs, the one home of the
// packing rules of the client and the server:
//
//   - Add (binary): with multi set, articles share a multi-article DTF up to
//     maxN articles or the entity size; an article too long to share one
//     goes alone.
//   - AddLine (text): an empty line is a zero-length article, which only
//     exists inside a multi-article DTF, so an empty line always shares a
//     DTF with the line before or after it, even when multi is not set
//     (a receiver must accept multi-article DTFs); without multi, non-empty
//     lines still go one per DTF. A line too long to leave room for an
//     empty one (TextSpare) goes alone; an empty line left alone next to
//     it, or a file of one empty line, is ErrLoneEmpty.
//
// Every data FPDU goes to emit with its kind, its data and its header byte
// 5: a multi-article DTF (byte 5 = its article count), a DTF of one bare
// article (byte 5 = 0, never 1), or the segments of an article longer than
// the entity size (DTFDA, DTFMA..., DTFFA). data is valid until emit
// returns. The zero Packer is unusable: call Reset.
type Packer struct {
	room  int // largest DTF data part: entity size - HeaderLen
	maxN  int
	multi bool
	emit  func(k Kind, data []byte, byte5 byte) error

	buf      []byte // the multi-article payload being built
	n        int    // articles in buf
	last     int    // offset in buf of the last article's length
	nonEmpty int    // non-empty articles in buf
}

// Reset sets p up for a transfer whose DTFs hold at most entity bytes and
// maxN (at most MaxArticles) articles, and drops anything buffered. The
// buffer is kept, so that a Packer reused across transfers allocates once.
func (p *Packer) Reset(entity, maxN int, multi bool, emit func(k Kind, data []byte, byte5 byte) error) {
	p.room, p.maxN, p.multi, p.emit = entity-HeaderLen, min(maxN, MaxArticles), multi, emit
	if cap(p.buf) < p.room {
		p.buf = make([]byte, 0, p.room)
	}
	p.Discard()
}

// Discard drops the articles buffered and not yet emitted (after a RESYN,
// the data is sent again from the sync point).
func (p *Packer) Discard() {
	p.buf, p.n, p.last, p.nonEmpty = p.buf[:0], 0, 0, 0
}

// Add packs one article of a binary (or fixed-format) file.
func (p *Packer) Add(a []byte) error {
	if !p.multi || 2+len(a) > p.room {
		if err := p.Flush(); err != nil {
			return err
		}
		return p.single(a)
	}
	if p.n >= p.maxN || len(p.buf)+2+len(a) > p.room {
		if err := p.Flush(); err != nil {
			return err
		}
	}
	p.append(a)
	return nil
}

// AddLine packs one line of a text file (without its end of line).
func (p *Packer) AddLine(a []byte) error {
	if 6+len(a) > p.room {
		if p.n == 1 && len(p.buf) == 2 {
			return ErrLoneEmpty
		}
		if err := p.Flush(); err != nil {
			return err
		}
		return p.single(a)
	}
	fits := p.n < p.maxN && len(p.buf)+2+len(a) <= p.room
	switch {
	case len(a) > 0:
		if !fits || (!p.multi && p.nonEmpty > 0) {
			if err := p.Flush(); err != nil {
				return err
			}
		}
	case !fits:
		// Send all but the last article, which keeps this empty line
		// company; the group sent holds at least two articles.
		keep := p.buf[p.last:]
		full := len(keep) > 2
		p.buf, p.n = p.buf[:p.last], p.n-1
		if full {
			p.nonEmpty--
		}
		if err := p.Flush(); err != nil {
			return err
		}
		p.buf = append(p.buf[:0], keep...)
		p.n, p.last = 1, 0
		if full {
			p.nonEmpty = 1
		}
	}
	p.append(a)
	return nil
}

// Flush emits the articles buffered, if any.
func (p *Packer) Flush() error {
	n := p.n
	if n == 0 {
		return nil
	}
	data := p.buf
	if n == 1 {
		data = data[2:] // never byte 5 = 1: a lone article goes bare
	}
	p.Discard()
	if n == 1 {
		return p.single(data)
	}
	return p.emit(DTF, data, byte(n))
}

// single emits one article alone: a DTF, or segments when it does not fit.
func (p *Packer) single(a []byte) error {
	if len(a) == 0 {
		return ErrLoneEmpty // an empty single-article DTF does not exist
	}
	if len(a) <= p.room {
		return p.emit(DTF, a, 0)
	}
	k := DTFDA
	for len(a) > 0 {
		n := min(p.room, len(a))
		if n == len(a) {
			k = DTFFA
		}
		if err := p.emit(k, a[:n], 0); err != nil {
			return err
		}
		a, k = a[n:], DTFMA
	}
	return nil
}

func (p *Packer) append(a []byte) {
	p.last = len(p.buf)
	p.buf = binary.BigEndian.AppendUint16(p.buf, uint16(len(a)))
	p.buf = append(p.buf, a...)
	p.n++
	if len(a) > 0 {
		p.nonEmpty++
	}
}
