package server

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/fsm"
)

// errIDTSent stops the send loop once an IDT has gone out.
var errIDTSent = errors.New("IDT sent")

// sender streams the selected file in articles (TDL02B, digest §4.1).
type sender struct {
	s       *session
	x       *transfer
	br      *bufio.Reader
	art     []byte // one article
	payload []byte // multi-article DTF payload being built
	n       int    // articles in payload
	multi   bool
	maxSeg  int // largest DTF data part
	f       fpdu.FPDU
	// sincePoll counts data bytes since we last looked at what the
	// receiver sent: without a window to wait on, an IDT or RESYN would
	// otherwise only be seen after the whole file.
	sincePoll int
}

// pollEvery is how much data the sender streams between two looks at its
// input.
const pollEvery = 1 << 20

// poll handles, without blocking, what the receiver sent meanwhile
// (ACK(SYN), IDT, RESYN, ABORT). The reader keeps a partial frame across
// the timeout, so a frame cut by it is completed by the next read.
func (sd *sender) poll() error {
	s := sd.s
	if err := s.flush(); err != nil {
		return err
	}
	for {
		// A deadline already past would not even try the read.
		s.conn.SetReadDeadline(time.Now().Add(time.Millisecond))
		f, err := s.next()
		if err != nil {
			if _, v := fsm.IsViolation(err); !v && isTimeout(err) {
				return nil
			}
			return s.readErr(err)
		}
		if err := sd.incoming(f); err != nil {
			return err
		}
	}
}

// send handles READ{PI 18}: ACK(READ), then the data phase.
func (s *session) send(f *fpdu.FPDU) error {
	x := s.xfer
	p, _ := f.Params.Uint(fpdu.PIRestartPoint)
	start := syncPoint{}
	switch {
	case p == 0:
	case x.restart != nil && uint64(x.restart.Sync) == p && x.restart.Offset <= x.size:
		start = syncPoint{num: x.restart.Sync, offset: x.restart.Offset, articles: x.restart.Articles}
	default:
		s.log.Warn("unknown restart point", "point", p)
		return s.writeAck(fpdu.AckRead, fpdu.DiagRestartPointRefused)
	}
	sd := &sender{s: s, x: x, br: bufio.NewReaderSize(x.src, 64<<10), art: make([]byte, x.recLen), maxSeg: x.entity - fpdu.HeaderLen}
	sd.multi = s.partner.MultiArticle && x.recLen+2+fpdu.HeaderLen <= x.entity
	if sd.multi {
		sd.payload = make([]byte, 0, x.entity-fpdu.HeaderLen)
	}
	if err := sd.seek(start); err != nil {
		s.log.Error("cannot position the source file", "err", err)
		return s.writeAck(fpdu.AckRead, fpdu.DiagIOError)
	}
	x.restartAt = start.num
	if err := s.writeAck(fpdu.AckRead, fpdu.DiagOK); err != nil {
		return err
	}
	s.log.Info("sending", "id", x.id, "restart_point", start.num, "offset", start.offset, "size", x.size)
	s.wmu.Lock()
	s.w.SetEntitySize(x.entity)
	s.wmu.Unlock()
	s.dataPhase.Store(true)
	defer s.dataPhase.Store(false)
	return sd.run()
}

// seek positions the file at point p and rebuilds the hash of the prefix.
func (sd *sender) seek(p syncPoint) error {
	x := sd.x
	x.h = sha256.New()
	if _, err := io.Copy(x.h, io.NewSectionReader(x.src, 0, p.offset)); err != nil {
		return err
	}
	if _, err := x.src.Seek(p.offset, io.SeekStart); err != nil {
		return err
	}
	sd.br.Reset(x.src)
	sd.payload, sd.n = sd.payload[:0], 0
	x.bytes, x.articles = p.offset, p.articles
	x.syncNum, x.lastAck, x.sinceSync = p.num, p.num, 0
	x.lastSync = p
	x.points = x.points[:0]
	return nil
}

func (sd *sender) run() error {
	s, x := sd.s, sd.x
	for {
		err := sd.stream()
		switch {
		case errors.Is(err, errIDTSent):
			s.flush()
			return s.awaitAckIDT(nil)
		case errors.Is(err, errResynced):
			continue
		case errors.Is(err, errStop):
			return nil
		case err != nil:
			return err
		}
		// DTF.END is out: TDL07 waits for TRANS.END.
		s.setReadDeadline(s.srv.cfg.InactivityTimeout)
		for done := false; !done; {
			f, err := s.next()
			if err != nil {
				return s.readErr(err)
			}
			if f.Kind == fpdu.TransEnd {
				s.dataPhase.Store(false)
				if err := checkCounts(f, x.bytes, x.articles, x.restart); err != nil {
					s.finish(StatusFailed, fpdu.DiagCountMismatch, err.Error())
					return abortf(fpdu.DiagCountMismatch, "%v", err)
				}
				s.finish(StatusDone, fpdu.DiagOK, x.srcPath)
				return s.ackTransEnd(fpdu.DiagOK, x.bytes, x.articles)
			}
			err = sd.incoming(f)
			switch {
			case errors.Is(err, errResynced):
				done = true
			case errors.Is(err, errStop):
				return nil
			case err != nil:
				return err
			}
		}
	}
}

// maxSyncHistory bounds the sync points remembered for RESYN.
const maxSyncHistory = 1024

var (
	errResynced = errors.New("resynchronised")
	errStop     = errors.New("transfer interrupted")
)

// stream sends articles from the current position to DTF.END.
func (sd *sender) stream() error {
	s, x := sd.s, sd.x
	for {
		n, rerr := io.ReadFull(sd.br, sd.art)
		if rerr != nil && !errors.Is(rerr, io.EOF) && !errors.Is(rerr, io.ErrUnexpectedEOF) {
			if err := s.localIDT(ioDiag(rerr)); err != nil {
				return err
			}
			return errIDTSent
		}
		if n == 0 {
			break
		}
		a := sd.art[:n]
		if s.syncBytes > 0 && x.sinceSync+int64(n) > s.syncBytes {
			if err := sd.syn(); err != nil {
				return err
			}
		}
		if err := sd.article(a); err != nil {
			return err
		}
		x.h.Write(a)
		x.bytes += int64(n)
		x.articles++
		x.sinceSync += int64(n)
		if sd.sincePoll += n; sd.sincePoll >= pollEvery {
			sd.sincePoll = 0
			if err := sd.poll(); err != nil {
				return err
			}
		}
		if rerr != nil {
			break
		}
	}
	if err := sd.flushMulti(); err != nil {
		return err
	}
	end := fpdu.FPDU{Kind: fpdu.DTFEnd, DstID: s.peerID}
	end.Params.AddDiagnostic(fpdu.DiagOK)
	if err := sd.queue(&end); err != nil {
		return err
	}
	return s.flush()
}

// article emits one article: in a multi-article DTF, in its own DTF, or
// segmented when it does not fit the entity size.
func (sd *sender) article(a []byte) error {
	s := sd.s
	if sd.multi {
		if len(sd.payload)+2+len(a) > sd.maxSeg || sd.n == 255 {
			if err := sd.flushMulti(); err != nil {
				return err
			}
		}
		sd.payload = binary.BigEndian.AppendUint16(sd.payload, uint16(len(a)))
		sd.payload = append(sd.payload, a...)
		sd.n++
		return nil
	}
	if len(a) <= sd.maxSeg {
		sd.f = fpdu.FPDU{Kind: fpdu.DTF, DstID: s.peerID, Data: a}
		return sd.queue(&sd.f)
	}
	kind := fpdu.DTFDA
	for len(a) > 0 {
		k := min(len(a), sd.maxSeg)
		if k == len(a) {
			kind = fpdu.DTFFA
		}
		sd.f = fpdu.FPDU{Kind: kind, DstID: s.peerID, Data: a[:k]}
		if err := sd.queue(&sd.f); err != nil {
			return err
		}
		a, kind = a[k:], fpdu.DTFMA
	}
	return nil
}

func (sd *sender) flushMulti() error {
	if sd.n == 0 {
		return nil
	}
	s := sd.s
	if sd.n == 1 {
		// Never byte 5 = 1 (digest §7): a lone article goes bare.
		sd.f = fpdu.FPDU{Kind: fpdu.DTF, DstID: s.peerID, Data: sd.payload[2:]}
	} else {
		sd.f = fpdu.FPDU{Kind: fpdu.DTF, DstID: s.peerID, SrcID: byte(sd.n), Data: sd.payload}
	}
	err := sd.queue(&sd.f)
	sd.payload, sd.n = sd.payload[:0], 0
	return err
}

// queue adds a concatenable FPDU unless an IDT went out meanwhile.
func (sd *sender) queue(f *fpdu.FPDU) error {
	s := sd.s
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.idtPending.Load() {
		return errIDTSent
	}
	if s.closed {
		return fmt.Errorf("queue %v: connection closed", f.Kind)
	}
	if err := s.m.Sent(f); err != nil {
		s.log.Error("refusing to send an invalid FPDU", "err", err)
		return fmt.Errorf("queue %v: %w", f.Kind, err)
	}
	if err := s.w.Queue(f); err != nil {
		return fmt.Errorf("queue %v: %w", f.Kind, err)
	}
	return nil
}

func (s *session) flush() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed {
		return net.ErrClosed
	}
	s.renewWriteDeadline()
	return s.w.Flush()
}

// syn places sync point n+1 and honours the window (digest §4.3).
func (sd *sender) syn() error {
	s, x := sd.s, sd.x
	if err := sd.flushMulti(); err != nil {
		return err
	}
	x.syncNum++
	// Keep a bounded history: RESYN asks for a recent point.
	if len(x.points) == maxSyncHistory {
		x.points = append(x.points[:0], x.points[maxSyncHistory/2:]...)
	}
	x.points = append(x.points, syncPoint{num: x.syncNum, offset: x.bytes, articles: x.articles})
	syn := fpdu.FPDU{Kind: fpdu.Syn, DstID: s.peerID}
	syn.Params.AddUint(fpdu.PISyncNumber, uint64(x.syncNum))
	if err := sd.queue(&syn); err != nil {
		return err
	}
	x.sinceSync = 0
	x.syncCount++
	if s.syncWindow == 0 {
		// Nobody acknowledges: the point is as durable as it will get.
		return sd.acked(x.syncNum)
	}
	for x.syncNum-x.lastAck >= uint32(s.syncWindow) {
		if err := s.flush(); err != nil {
			return err
		}
		s.setReadDeadline(s.srv.cfg.InactivityTimeout)
		f, err := s.next()
		if err != nil {
			return s.readErr(err)
		}
		if err := sd.incoming(f); err != nil {
			return err
		}
	}
	return nil
}

// incoming handles what the receiver may send while we send.
func (sd *sender) incoming(f *fpdu.FPDU) error {
	s, x := sd.s, sd.x
	if s.idtPending.Load() {
		// The admin API sent IDT while we waited: wait for its ACK.
		if err := s.awaitAckIDT(f); err != nil {
			return err
		}
		return errStop
	}
	switch f.Kind {
	case fpdu.AckSyn:
		n, ok := f.Params.Uint(fpdu.PISyncNumber)
		if !ok || n > uint64(x.syncNum) {
			return abortf(fpdu.DiagBadParameter, "ACK(SYN) %d, sent %d, acknowledged %d", n, x.syncNum, x.lastAck)
		}
		if n <= uint64(x.lastAck) {
			return nil // a late duplicate, e.g. crossing a RESYN: harmless
		}
		return sd.acked(uint32(n))
	case fpdu.IDT:
		if err := s.peerIDT(f); err != nil {
			return err
		}
		return errStop
	case fpdu.Resyn:
		if !s.resync {
			return abortf(fpdu.DiagProtocolError, "RESYN without negotiated resynchronisation")
		}
		p, _ := f.Params.Uint(fpdu.PIRestartPoint)
		target := syncPoint{}
		if p == uint64(x.lastSync.num) {
			target = x.lastSync
		}
		for _, sp := range x.points {
			if uint64(sp.num) == p {
				target = sp
			}
		}
		if err := s.flush(); err != nil {
			return err
		}
		if err := sd.seek(target); err != nil {
			return abortf(fpdu.DiagResyncImpossible, "resync: %v", err)
		}
		ack := fpdu.FPDU{Kind: fpdu.AckResyn, DstID: s.peerID}
		ack.Params.AddUint(fpdu.PIRestartPoint, uint64(target.num))
		if err := s.write(&ack); err != nil {
			return err
		}
		return errResynced
	case fpdu.Abort:
		return s.peerAbort(f)
	}
	return abortf(fpdu.DiagProtocolError, "%v while sending data", f.Kind)
}

// acked records that the receiver holds everything up to sync point n.
func (sd *sender) acked(n uint32) error {
	s, x := sd.s, sd.x
	var p syncPoint
	found := false
	for _, sp := range x.points {
		if sp.num <= n {
			p, found = sp, true
		}
	}
	if !found {
		return nil
	}
	x.lastAck, x.lastSync = n, p
	if m := s.srv.met; m != nil {
		m.SyncPoints.Inc()
	}
	if err := s.srv.jnl.SyncPoint(s.ctx, x.id, p.num, p.offset, p.articles); err != nil {
		// The data is safe with the receiver; only our restart state lags.
		s.log.Warn("journal sync point failed", "id", x.id, "sync", p.num, "err", err)
	}
	return nil
}
