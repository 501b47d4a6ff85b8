package fpdu

import (
	"fmt"
	"io"
)

// Writer frames FPDUs onto a byte stream. Write sends one FPDU per frame;
// Queue packs data FPDUs, DTF.END and SYN into one NSDU up to the entity
// size (PI 25 bounds the whole NSDU, spec §4.5). Not safe for concurrent use.
type Writer struct {
	w      io.Writer
	buf    []byte // frame under construction: 2-byte prefix + queued FPDUs
	entity int
	sized  bool // SetEntitySize was called: size the buffer for data
	err    error
}

// writerMinBuf is the first buffer of a Writer that has not been given an
// entity size: connection FPDUs and acknowledgements are small, and a
// server that only receives never needs more (append grows it otherwise).
const writerMinBuf = 512

// NewWriter returns a Writer on w with an entity size of 65535. Its buffer
// is allocated at first use.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: w, entity: MaxFPDULen}
}

// SetEntitySize sets the negotiated PI 25, which bounds every queued NSDU.
// Values outside 6..65535 are clamped. The buffer is (re)sized at its next
// use for a full NSDU plus the FPDU that overflows it, so that queuing data
// does not allocate.
func (w *Writer) SetEntitySize(n int) {
	w.entity = min(max(n, HeaderLen), MaxFPDULen)
	w.sized = true
	if want := w.dataCap(); len(w.buf) <= 2 && (cap(w.buf) < want || cap(w.buf) > 2*want) {
		w.buf = nil
	}
}

func (w *Writer) dataCap() int { return 2 + 2*w.entity }

// frame returns the frame under construction, allocating it at first use.
func (w *Writer) frame() []byte {
	if w.buf == nil {
		c := writerMinBuf
		if w.sized {
			c = w.dataCap()
		}
		w.buf = make([]byte, 2, c)
	}
	return w.buf
}

// EntitySize returns the current NSDU bound.
func (w *Writer) EntitySize() int { return w.entity }

// Write sends queued FPDUs, then f alone in one frame, and flushes.
func (w *Writer) Write(f *FPDU) error {
	if err := w.Flush(); err != nil {
		return err
	}
	b, err := AppendEncode(w.frame()[:2], f)
	if err != nil {
		return err
	}
	w.buf = b
	return w.Flush()
}

// Queue appends f to the pending NSDU, first sending the pending NSDU if f
// would not fit in the entity size. Only DTF, DTFDA, DTFMA, DTFFA, DTF.END
// and SYN may share an NSDU; an FPDU larger than the entity size is an
// error. Call Flush to send what is queued.
func (w *Writer) Queue(f *FPDU) error {
	if w.err != nil {
		return w.err
	}
	if !f.Kind.Concatenable() {
		return fmt.Errorf("fpdu: queue %s: only DTF, DTFDA, DTFMA, DTFFA, DTF.END and SYN may be concatenated", f.Kind)
	}
	mark := len(w.frame())
	b, err := AppendEncode(w.buf, f)
	if err != nil {
		return err
	}
	return w.queued(f.Kind, mark, b)
}

// queued accepts the FPDU encoded at b[mark:] into the pending NSDU.
func (w *Writer) queued(k Kind, mark int, b []byte) error {
	n := len(b) - mark
	if n > w.entity {
		w.buf = b[:mark]
		return fmt.Errorf("fpdu: queue %s of %d bytes: entity size is %d: %w", k, n, w.entity, ErrFrameTooLarge)
	}
	if len(b)-2 <= w.entity {
		w.buf = b
		return nil
	}
	// It does not fit: send what was queued, then start a new NSDU with it.
	w.buf = b[:mark]
	if err := w.Flush(); err != nil {
		return err
	}
	w.buf = append(w.buf[:2], b[mark:mark+n]...)
	return nil
}

// QueueDTF queues a DTF holding articles (see AppendDTF).
func (w *Writer) QueueDTF(dstID byte, articles ...[]byte) error {
	if w.err != nil {
		return w.err
	}
	mark := len(w.frame())
	b, err := AppendDTF(w.buf, dstID, articles...)
	if err != nil {
		return err
	}
	return w.queued(DTF, mark, b)
}

// Pending returns the number of NSDU bytes queued and not yet sent.
func (w *Writer) Pending() int { return max(len(w.buf)-2, 0) }

// Flush sends the pending NSDU, if any, as one frame. After a write error
// the Writer is broken and returns that error forever.
func (w *Writer) Flush() error {
	if w.err != nil {
		return w.err
	}
	n := len(w.buf) - 2
	if n <= 0 {
		return nil
	}
	w.buf[0], w.buf[1] = byte(n>>8), byte(n)
	_, err := w.w.Write(w.buf)
	w.buf = w.buf[:2]
	if err != nil {
		w.err = fmt.Errorf("fpdu: write frame: %w", err)
		return w.err
	}
	return nil
}
