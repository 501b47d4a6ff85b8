package client

import (
	"bufio"
	"errors"
	"io"
)

// The sources of a push: a file cut into articles.

// fixedSource cuts a file into articles of n bytes (the last one may be
// shorter), reading large blocks into a reused buffer.
type fixedSource struct {
	r          io.Reader
	n          int
	buf        []byte
	start, end int
	eof        bool
}

func newFixedSource(r io.Reader, n int, buf *[]byte) *fixedSource {
	size := max(64<<10, 2*n)
	if cap(*buf) < size {
		*buf = make([]byte, size)
	}
	return &fixedSource{r: r, n: n, buf: (*buf)[:cap(*buf)]}
}

func (f *fixedSource) next() ([]byte, int, error) {
	if f.end-f.start < f.n && !f.eof {
		copy(f.buf, f.buf[f.start:f.end])
		f.end -= f.start
		f.start = 0
		for f.end < f.n && !f.eof {
			k, err := f.r.Read(f.buf[f.end:])
			f.end += k
			if err == io.EOF {
				f.eof = true
			} else if err != nil {
				return nil, 0, err
			}
		}
	}
	if f.start == f.end {
		return nil, 0, io.EOF
	}
	k := min(f.n, f.end-f.start)
	a := f.buf[f.start : f.start+k]
	f.start += k
	return a, k, nil
}

// lineSource yields one article per line, without its "\n".
type lineSource struct {
	br  *bufio.Reader
	max int
}

func newLineSource(r io.Reader, maxLen int) *lineSource {
	return &lineSource{br: bufio.NewReaderSize(r, max(64<<10, maxLen+1)), max: maxLen}
}

func (l *lineSource) next() ([]byte, int, error) {
	line, err := l.br.ReadSlice('\n')
	switch {
	case err == nil:
		// The end of line is not data: "\n", or "\r\n" from a CRLF file
		// (the receiver re-adds its own, so CRLF comes back as LF).
		art := line[:len(line)-1]
		if len(art) > 0 && art[len(art)-1] == '\r' {
			art = art[:len(art)-1]
		}
		return art, len(line), nil
	case errors.Is(err, bufio.ErrBufferFull):
		return line, len(line), nil // too long; the caller reports it
	case err == io.EOF && len(line) > 0:
		// A last line without "\n": sent as an article, so the receiver
		// will end it with "\n".
		return line, len(line), nil
	}
	return nil, 0, err
}
