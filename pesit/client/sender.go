package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/fsm"
	"github.com/vectis-ft/vectis/pesit/internal/codepage"
)

// The data phase of a push (TDE02A .. TDE08A). The sync numbering and the
// acknowledgement window are the protocol machine's (Session.m.Window());
// the sender keeps what maps sync points to the file and the counts.

// sender is the state of one push on a session.
type sender struct {
	s       *Session
	req     *SendRequest
	entity  int
	artLen  int
	autoLen bool  // artLen was not configured
	limit   int64 // sync interval in data bytes; 0: no sync points
	window  uint32
	since   int64 // data bytes since the last sync point, packed or sent
	position

	src  *os.File
	next func() (art []byte, raw int, err error) // the next article of src

	events chan sendEvent
	done   chan struct{} // closed when the reader goroutine has stopped; nil when none runs
	timer  *time.Timer

	resyncs int
	text    bool
	meter   progressMeter
	lastArm time.Time
	ebcdic  *codepage.EBCDIC037 // text in EBCDIC: translate each line
	start   syncPoint           // where this session's data began
	anoms   []Anomaly
}

// sendEvent is one FPDU from the server during the data phase, copied off
// the reader's buffer, or the read error that stopped the reader.
type sendEvent struct {
	f   *fpdu.FPDU
	err error
}

// terminal reports whether the reader stops after this event: it reads on
// only past ACK(SYN)s, so that anything else is answered synchronously.
func (e sendEvent) terminal() bool { return e.err != nil || e.f.Kind != fpdu.AckSyn }

// data sends the file from the current offset, with sync points, then
// DTF.END and TRANS.END, and checks ACK(TRANS.END).
func (x *sender) data(ctx context.Context, src *os.File) error {
	s := x.s
	x.src = src
	x.text = x.req.Format == FormatVariable && x.req.DataCode.text()
	if x.text && x.req.DataCode == DataEBCDIC {
		// Lines are split on the local "\n" first, then translated.
		x.ebcdic = codepage.NewEBCDIC037()
	}
	x.next = x.source()
	// Text lines follow the packing rule of empty lines (fpdu.Packer);
	// with MultiArticle, [empty, line, empty] must still fit one DTF.
	maxN, multi := x.req.MultiArticle, x.req.MultiArticle > 1
	switch {
	case x.text && multi:
		maxN = max(maxN, 3)
	case x.text:
		maxN = fpdu.MaxArticles
	}
	s.pack.Reset(x.entity, maxN, multi, x.dtf)

	// The server talks during the data phase only to acknowledge sync
	// points, resynchronise, interrupt or abort; a goroutine reads it so
	// that the write loop never blocks on a read it does not need.
	_ = s.conn.SetReadDeadline(time.Time{})
	x.armWrite(time.Now())
	s.graceful.Store(true)
	defer s.graceful.Store(false)
	x.startReader()
	defer x.stopReader()
	for {
		err := x.stream(ctx)
		var ack *fpdu.FPDU
		if err == nil {
			ack, err = x.end()
		}
		if err != nil {
			if err := x.resynced(ctx, err); err != nil {
				return err
			}
			continue // RESYN: send again from its point
		}
		return x.checkAck(ack)
	}
}

// source returns the article source of x.src from its current offset.
func (x *sender) source() func() ([]byte, int, error) {
	if x.text {
		return newLineSource(x.src, x.artLen).next
	}
	return newFixedSource(x.src, x.artLen, &x.s.dataBuf).next
}

// stream sends the articles from the current offset to the end of the file,
// with sync points. A RESYN from the server ends it with a *resynRequest.
func (x *sender) stream(ctx context.Context) error {
	s := x.s
	add := s.pack.Add
	if x.text {
		add = s.pack.AddLine
	}
	for {
		if s.canceled.Load() {
			return x.cancel(ctx)
		}
		art, raw, err := x.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return x.interrupt(ctx, 4, fpdu.DiagIOError, &LocalError{Op: "read", Path: x.req.Source, Err: err})
		}
		if x.ebcdic != nil {
			codepage.Translate(art, &x.ebcdic.ToEBCDIC)
		}
		if len(art) > x.artLen {
			return x.interrupt(ctx, 16, fpdu.DiagArticleTooLong, &LocalError{Op: "read", Path: x.req.Source,
				Err: fmt.Errorf("line of %d bytes at offset %d is longer than the article length %d", len(art), x.fileOff, x.artLen)})
		}
		if x.limit > 0 && x.since > 0 && x.since+int64(len(art)) > x.limit {
			if err := x.sync(ctx); err != nil {
				return err
			}
		}
		if err := add(art); err != nil {
			return x.loneEmpty(ctx, err)
		}
		x.since += int64(len(art))
		x.bytes += int64(len(art))
		x.articles++
		x.fileOff += int64(raw)
		if err := x.poll(); err != nil {
			return err
		}
		if x.articles&15 == 0 {
			if now := time.Now(); now.Sub(x.lastArm) > s.tp/8 {
				x.armWrite(now)
			}
			x.progress(false)
		}
	}
	if err := s.pack.Flush(); err != nil {
		return x.loneEmpty(ctx, err)
	}
	return nil
}

// end sends DTF.END and TRANS.END and waits for the server's answer:
// ACK(TRANS.END), or a RESYN that crossed them (it wins, digest §4.5).
func (x *sender) end() (*fpdu.FPDU, error) {
	s := x.s
	if err := s.queue(fpdu.NewDiag(fpdu.DTFEnd, s.peer, fpdu.DiagOK)); err != nil {
		return nil, err
	}
	if err := s.w.Flush(); err != nil {
		return nil, s.ioError("send DTF.END", err)
	}
	if err := s.write(fpdu.NewTransEnd(s.peer, x.bytes, x.articles)); err != nil {
		return nil, err
	}
	f, err := x.waitTerminal()
	if err != nil {
		return nil, err
	}
	if f.Kind != fpdu.AckTransEnd {
		return nil, x.onTerminal(f)
	}
	// Success or a final refusal completes the exchange: nothing is left
	// to resume. A temporary failure (the server could not record the end,
	// issue 16) keeps the state, so that the retry restarts this transfer
	// under its PI 13: the server resumes it, or recognises it as done if
	// it published the file. A fresh start could deliver the file twice.
	if d := fpdu.ReadCounts(f).Diag; d.OK() || !retryableDiag(d) {
		x.sf.remove()
		x.sf = nil
	}
	return f, nil
}

// checkAck checks ACK(TRANS.END): its diagnostic, then the server's counts
// against ours.
func (x *sender) checkAck(ack *fpdu.FPDU) error {
	s := x.s
	c := fpdu.ReadCounts(ack)
	if !c.Diag.OK() {
		return s.closeFile(&TransferError{Op: fpdu.AckTransEnd, Diagnostic: c.Diag})
	}
	if err := s.checkPeerCounts(&x.anoms, c.Bytes, c.Articles, c.HasBytes, c.HasArticles,
		x.bytes, x.articles, x.start.Bytes, x.start.Articles); err != nil {
		return s.protocolError(fpdu.DiagCountMismatch, "ACK(TRANS.END): %v", err)
	}
	return nil
}

// armWrite pushes the write deadline Tp ahead: a server that stops reading
// for Tp fails the transfer, however long the transfer is.
func (x *sender) armWrite(now time.Time) {
	x.lastArm = now
	_ = x.s.conn.SetWriteDeadline(now.Add(x.s.tp))
	if x.s.cancelNow() {
		_ = x.s.conn.SetDeadline(time.Unix(1, 0))
	}
}

// startReader starts the goroutine that reads the server during the data
// phase; it stops after a terminal event, or when stopReader closes the
// connection.
func (x *sender) startReader() {
	events, done := make(chan sendEvent, 8), make(chan struct{})
	x.events, x.done = events, done
	go func() {
		defer close(done)
		for {
			f, err := x.s.r.Next()
			ev := sendEvent{err: err}
			if err == nil {
				ev.f = f.Clone() // rare (a sync point, the end): the buffer is the reader's
			}
			events <- ev
			if ev.terminal() {
				return
			}
		}
	}()
}

// stopReader stops a reader still running: the connection is unusable then
// anyway.
func (x *sender) stopReader() {
	if x.done == nil {
		return
	}
	x.s.broken = true
	_ = x.s.conn.Close()
	for {
		select {
		case <-x.events:
		case <-x.done:
			x.done = nil
			return
		}
	}
}

// apply hands an event to the protocol machine. It returns the terminal
// FPDU the caller must act on, or nil after an ACK(SYN) (the restart
// state's acknowledged point moves) or an FPDU the machine ignores.
func (x *sender) apply(ev sendEvent) (*fpdu.FPDU, error) {
	s := x.s
	if ev.terminal() {
		<-x.done
		x.done = nil
	}
	if ev.err != nil {
		return nil, s.readError(ev.err)
	}
	act, err := s.received(ev.f)
	switch {
	case err != nil:
		return nil, err
	case act == fsm.Ignore:
		s.log.Debug("pesit FPDU ignored (collision)", "kind", ev.f.Kind.String(), "state", s.m.State().String())
		if x.done == nil {
			x.startReader() // it stopped at the ignored FPDU
		}
		return nil, nil
	case ev.f.Kind == fpdu.AckSyn:
		x.st.Acked = s.m.Window().LastAcked()
		return nil, nil
	}
	return ev.f, nil
}

// onTerminal turns what the server sent instead of an ACK(SYN) into the
// error that ends the data loop: a *resynRequest, a *TransferError (IDT).
func (x *sender) onTerminal(f *fpdu.FPDU) error {
	s := x.s
	switch f.Kind {
	case fpdu.Resyn:
		return &resynRequest{point: fpdu.ReadPoint(f)}
	case fpdu.IDT:
		return s.closeFile(s.answerIDT(f))
	}
	return s.protocolError(fpdu.DiagProtocolError, "unexpected %s during data transfer", f.Kind)
}

// poll applies the events that are already there, without blocking.
func (x *sender) poll() error {
	for {
		select {
		case ev := <-x.events:
			f, err := x.apply(ev)
			if err != nil {
				return err
			}
			if f != nil {
				return x.onTerminal(f)
			}
		default:
			return nil
		}
	}
}

// waitEvent blocks for the next event, at most Tp.
func (x *sender) waitEvent(ctx context.Context, what string) (sendEvent, error) {
	if x.timer == nil {
		x.timer = time.NewTimer(x.s.tp)
	} else {
		x.timer.Reset(x.s.tp)
	}
	defer x.timer.Stop()
	select {
	case ev := <-x.events:
		return ev, nil
	case <-x.timer.C:
		x.s.broken = true
		_ = x.s.conn.Close()
		return sendEvent{}, &ConnectionError{Op: what, Err: fmt.Errorf("no answer from the server in %s", x.s.tp)}
	case <-ctx.Done():
		if x.s.graceful.Load() {
			return sendEvent{}, errCancelled
		}
		x.s.broken = true
		_ = x.s.conn.Close()
		return sendEvent{}, fmt.Errorf("%s: %w", what, context.Cause(ctx))
	}
}

// waitTerminal waits for the server's answer that ends a phase (ACK(IDT),
// ACK(TRANS.END), RESYN, IDT), applying ACK(SYN)s on the way.
func (x *sender) waitTerminal() (*fpdu.FPDU, error) {
	for {
		ev, err := x.waitEvent(context.Background(), "wait for the server's answer")
		if err != nil {
			return nil, err
		}
		f, err := x.apply(ev)
		if err != nil || f != nil {
			return f, err
		}
	}
}

// sync sends the next SYN, records the sync point and honours the window.
func (x *sender) sync(ctx context.Context) error {
	s := x.s
	if err := s.pack.Flush(); err != nil {
		return err
	}
	n := s.m.Window().Next()
	if err := s.queue(fpdu.NewSyn(s.peer, n)); err != nil {
		return err
	}
	if err := s.w.Flush(); err != nil {
		return s.ioError("send SYN", err)
	}
	x.since = 0
	// The server restarts from a point at or after its last acknowledged
	// one, which is at or after ours: older points are of no use.
	acked := s.m.Window().LastAcked()
	if i := slices.IndexFunc(x.st.Points, func(p syncPoint) bool { return p.N >= acked }); i > 0 {
		x.st.Points = append(x.st.Points[:0], x.st.Points[i:]...)
	}
	x.st.addPoint(syncPoint{N: n, Offset: x.fileOff, Articles: x.articles, Bytes: x.bytes})
	if err := x.sf.save(x.st); err != nil {
		s.log.Warn("cannot save restart state", "err", err)
	}
	x.progress(false)
	for s.m.Window().Blocked() {
		ev, err := x.waitEvent(ctx, "wait for ACK(SYN)")
		if errors.Is(err, errCancelled) {
			return x.cancel(ctx)
		}
		if err != nil {
			return err
		}
		f, err := x.apply(ev)
		if err != nil {
			return err
		}
		if f != nil {
			return x.onTerminal(f)
		}
	}
	x.armWrite(time.Now())
	return nil
}

// resynRequest is a RESYN from the server (receiver-initiated
// resynchronisation, digest §4.5), negotiated with PI 23 = 1.
type resynRequest struct{ point uint32 }

func (r *resynRequest) Error() string { return fmt.Sprintf("RESYN to sync point %d", r.point) }

// maxResyncs bounds the RESYNs of one transfer (then 3/320).
const maxResyncs = 16

// resynced resumes from the point a RESYN asked for; any other error
// passes.
func (x *sender) resynced(ctx context.Context, err error) error {
	var rq *resynRequest
	if !errors.As(err, &rq) {
		return err
	}
	if err := x.resync(rq.point); err != nil {
		return err
	}
	if _, err := x.src.Seek(x.fileOff, io.SeekStart); err != nil {
		return x.interrupt(ctx, 4, fpdu.DiagIOError, &LocalError{Op: "seek", Path: x.req.Source, Err: err})
	}
	x.next = x.source()
	return nil
}

// resync answers RESYN{p}: ACK(RESYN){p} and the counts of point p, or 0
// (the start of the file) for a point we do not know. Data sent after the
// RESYN crossed it and is dropped by the server until our ACK(RESYN). The
// caller repositions the file at x.fileOff.
func (x *sender) resync(p uint32) error {
	s := x.s
	if x.resyncs++; x.resyncs > maxResyncs {
		return s.protocolError(fpdu.DiagTooManyResyncs, "%d RESYNs in one transfer", x.resyncs)
	}
	pt, ok := x.st.point(p)
	if !ok || p > s.m.Window().LastSent() {
		p, pt = 0, syncPoint{}
	}
	s.pack.Discard()
	if err := s.w.Flush(); err != nil {
		return s.ioError("send data", err)
	}
	if err := s.write(fpdu.NewAckResyn(s.peer, p)); err != nil {
		return err
	}
	s.log.Info("pesit resynchronised", "point", p, "offset", pt.Offset)
	x.fileOff, x.articles, x.bytes, x.since = pt.Offset, pt.Articles, pt.Bytes, 0
	x.st.Points = slices.DeleteFunc(x.st.Points, func(sp syncPoint) bool { return sp.N > p })
	// The reader stopped at the RESYN (a terminal event): start it again,
	// with no read deadline, as at the start of the data phase.
	_ = s.conn.SetReadDeadline(time.Time{})
	x.armWrite(time.Now())
	x.startReader()
	return nil
}

// loneEmpty turns fpdu.ErrLoneEmpty (an empty line that could not share a
// DTF) into an interruption (IDT 2/299, PI 19 = 16); other errors pass.
func (x *sender) loneEmpty(ctx context.Context, err error) error {
	if !errors.Is(err, fpdu.ErrLoneEmpty) {
		return err
	}
	return x.interrupt(ctx, 16, fpdu.DiagFileOther, &LocalError{Op: "send", Path: x.req.Source, Err: err})
}

// dtf queues one data FPDU of the Packer.
func (x *sender) dtf(k fpdu.Kind, data []byte, byte5 byte) error {
	s := x.s
	s.out = fpdu.FPDU{Kind: k, DstID: s.peer, SrcID: byte5, Data: data}
	return s.queue(&s.out)
}

// errCancelled: the context was cancelled during the data phase of a push,
// which then ends with IDT (see cancel).
var errCancelled = errors.New("push cancelled")

// cancel ends a cancelled push in order: IDT with PI 19 = 16 (cancelled by
// the requester) and 2/216 (voluntary stop), ACK(IDT), CRF, DESELECT,
// within cancelGrace. It returns an error wrapping context.Canceled (or the
// context's error).
func (x *sender) cancel(ctx context.Context) error {
	cause := ctx.Err()
	if cause == nil {
		cause = context.Canceled
	}
	return x.interrupt(ctx, 16, fpdu.DiagVoluntaryStop, fmt.Errorf("push of %s: %w", x.req.Source, cause))
}

// interrupt sends IDT with end code and diagnostic d for a local failure
// (cause), waits for ACK(IDT), then closes the file. It returns cause.
// What the server sent before it saw the IDT, its own IDT included (the
// requester wins a collision), the machine ignores.
func (x *sender) interrupt(_ context.Context, code uint8, d fpdu.Diagnostic, cause error) error {
	s := x.s
	if s.broken {
		return cause
	}
	if x.done == nil {
		// Before the data phase: no reader goroutine yet.
		if err := s.write(fpdu.NewIDT(s.peer, d, code)); err != nil {
			return cause
		}
		if _, err := s.expect(fpdu.AckIDT); err != nil {
			return cause
		}
		return s.closeFile(cause)
	}
	_ = s.pack.Flush()
	if err := s.w.Flush(); err != nil {
		return cause
	}
	if err := s.write(fpdu.NewIDT(s.peer, d, code)); err != nil {
		return cause
	}
	if _, err := x.waitTerminal(); err != nil {
		return cause
	}
	return s.closeFile(cause)
}

func (x *sender) progress(final bool) {
	x.meter.report(Progress{Bytes: x.fileOff, Total: x.total}, final)
}
