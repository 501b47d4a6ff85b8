package fpdu

import (
	"errors"
	"fmt"
	"io"
)

// Reader buffer bounds. A session starts with a small buffer (connection
// FPDUs are small, and an idle session should cost little) and grows it by
// doubling when a frame does not fit, up to one maximal frame (2 + 65535
// bytes). A peer's claimed length can only pick the next step within that
// protocol bound, so it never sizes an allocation beyond it; once a stream's
// frame size is reached there is no further allocation. A stream of small
// frames still costs one read per many frames (read-ahead in the buffer).
const (
	readerMinBuf = 4 << 10
	readerMaxBuf = 2 + MaxFPDULen
)

// Reader reads frames (2-byte length + NSDU) from a byte stream and returns
// the FPDUs they hold one at a time, splitting concatenated NSDUs on the
// inner lengths. It owns one buffer, grown in bounded steps up to one
// maximal frame (see readerMaxBuf). Not safe for concurrent use.
type Reader struct {
	r        io.Reader
	buf      []byte
	rpos     int // start of unread bytes in buf
	wpos     int // end of bytes read into buf
	nsdu     []byte
	maxFrame int
	started  bool
	f        FPDU
}

// NewReader returns a Reader on r with a frame limit of 65535 bytes.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: r, buf: make([]byte, readerMinBuf), maxFrame: MaxFPDULen}
}

// Reset makes r read from src as if new, keeping its buffer and frame limit
// (a server can recycle Readers across connections).
func (r *Reader) Reset(src io.Reader) {
	r.r, r.rpos, r.wpos, r.nsdu, r.started = src, 0, 0, nil, false
}

// SetMaxFrame bounds the NSDU size accepted from the peer (n <= 65535, at
// least one header). A larger frame is an error wrapping ErrFrameTooLarge.
// Leniency is the caller's choice: CX may exceed PI 25 by a segment.
func (r *Reader) SetMaxFrame(n int) {
	r.maxFrame = min(max(n, HeaderLen), MaxFPDULen)
}

// fill ensures that at least n unread bytes are buffered
// (n <= readerMaxBuf).
func (r *Reader) fill(n int) error {
	if r.wpos-r.rpos >= n {
		return nil
	}
	if n > len(r.buf) {
		r.grow(n)
	}
	if r.rpos+n > len(r.buf) {
		// Compact: the previous FPDU's slices are no longer valid anyway.
		r.wpos = copy(r.buf, r.buf[r.rpos:r.wpos])
		r.rpos = 0
	}
	for empty := 0; r.wpos-r.rpos < n; {
		m, err := r.r.Read(r.buf[r.wpos:])
		r.wpos += m
		if err != nil {
			if r.wpos-r.rpos >= n {
				return nil
			}
			if errors.Is(err, io.EOF) {
				if r.wpos == r.rpos {
					return io.EOF
				}
				return protoErr(ErrTruncated, "stream ended inside a frame (%d of %d bytes)", r.wpos-r.rpos, n)
			}
			return err
		}
		if m == 0 {
			if empty++; empty >= 100 {
				return io.ErrNoProgress
			}
			continue
		}
		empty = 0
	}
	return nil
}

// grow replaces the buffer by one of the next doubling step that holds n
// bytes, capped at readerMaxBuf, keeping the unread bytes.
func (r *Reader) grow(n int) {
	size := len(r.buf)
	for size < n {
		size *= 2
	}
	size = min(size, readerMaxBuf)
	buf := make([]byte, size)
	r.wpos = copy(buf, r.buf[r.rpos:r.wpos])
	r.rpos = 0
	r.buf = buf
}

// readFrame reads one frame and returns its NSDU, aliasing r.buf.
func (r *Reader) readFrame() ([]byte, error) {
	r.started = true
	if err := r.fill(2); err != nil {
		return nil, err
	}
	n := int(r.buf[r.rpos])<<8 | int(r.buf[r.rpos+1])
	if n > r.maxFrame {
		return nil, protoErr(ErrFrameTooLarge, "frame of %d bytes, limit %d", n, r.maxFrame)
	}
	if n < HeaderLen {
		return nil, protoErr(ErrBadLength, "frame of %d bytes cannot hold an FPDU", n)
	}
	if err := r.fill(2 + n); err != nil {
		if errors.Is(err, io.EOF) {
			err = protoErr(ErrTruncated, "stream ended after a frame prefix")
		}
		return nil, err
	}
	nsdu := r.buf[r.rpos+2 : r.rpos+2+n]
	r.rpos += 2 + n
	return nsdu, nil
}

// Next returns the next FPDU, reading a new frame when the current NSDU is
// exhausted. The FPDU and its slices are owned by r and valid until the next
// call. Data FPDUs are returned without allocating. At a clean end of stream
// (between frames) it returns io.EOF.
func (r *Reader) Next() (*FPDU, error) {
	if len(r.nsdu) == 0 {
		nsdu, err := r.readFrame()
		if err != nil {
			return nil, err
		}
		r.nsdu = nsdu
	}
	b := r.nsdu
	if len(b) < HeaderLen {
		r.nsdu = nil
		return nil, protoErr(ErrTruncated, "%d bytes left in the frame, an FPDU needs %d", len(b), HeaderLen)
	}
	n := int(b[0])<<8 | int(b[1])
	if n < HeaderLen || n > len(b) {
		r.nsdu = nil
		return nil, protoErr(ErrBadLength, "inner FPDU length %d, %d bytes left in the frame", n, len(b))
	}
	r.nsdu = b[n:]
	if err := decodeInto(&r.f, b[:n], true); err != nil {
		r.nsdu = nil
		return nil, err
	}
	return &r.f, nil
}

// Buffered reports whether FPDUs of the current frame remain to be read, so
// that a caller can tell concatenated FPDUs apart.
func (r *Reader) Buffered() bool { return len(r.nsdu) != 0 }

// ReadFrame returns the next whole NSDU without splitting it. It is meant
// for tools and tests; a session uses Next.
func (r *Reader) ReadFrame() ([]byte, error) {
	if len(r.nsdu) != 0 {
		return nil, fmt.Errorf("fpdu: ReadFrame inside a frame with %d bytes unread", len(r.nsdu))
	}
	return r.readFrame()
}

// Pending reports whether the reader holds bytes not returned yet: FPDUs of
// the current frame, or the start of the next frame.
func (r *Reader) Pending() bool { return len(r.nsdu) != 0 || r.wpos > r.rpos }
