package server

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"time"

	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/fsm"
	"github.com/vectis-ft/vectis/pesit/internal/codepage"
)

// errIDTSent stops the send loop once an IDT has gone out.
var errIDTSent = errors.New("IDT sent")

// sender is the side of a transfer the server sends (SELECT, READ): the
// source file, what was sent of it, and the sync points placed. It lives
// from the SELECT to the DESELECT and streams the file in articles
// (TDL02B, digest §4.1) on the session goroutine.
type sender struct {
	s *session
	x *transfer

	src      *os.File
	srcPath  string
	size     int64
	modTime  time.Time
	off      int64 // file position (bytes differs for a text file)
	bytes    int64 // PI 27: data bytes sent
	articles int64
	h        hash.Hash

	startPoint syncPoint   // where this data phase began (counts after a restart)
	points     []syncPoint // recent points sent (RESYN targets)
	lastSync   syncPoint   // the last point acknowledged
	lastSent   syncPoint   // the last point sent, journaled for a restart

	// Buffers and state of one data phase (run).
	br   *bufio.Reader
	art  []byte      // one article
	pack fpdu.Packer // groups articles into DTFs
	f    fpdu.FPDU
	tail *sendTail // hash and journal, off this goroutine
	// limit is the negotiated sync interval in bytes (0: no bound) and
	// since the data bytes since the last SYN placed: the placement of
	// sync points, which replay repeats. Their numbering and the window
	// are the state machine's.
	limit int64
	since int64
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
// the timeout, so a frame cut by it is completed by the next read. It only
// reads when there is input: a read with a deadline always waited that
// deadline out when there was none, 1 ms per MiB sent, which was what
// limited a pull without sync points (issue 17).
func (sd *sender) poll() error {
	s := sd.s
	if err := s.flush(); err != nil {
		return err
	}
	for s.r.Pending() || readable(s.conn) {
		// A deadline already past would not even try the read.
		s.conn.SetReadDeadline(time.Now().Add(time.Millisecond))
		f, err := s.next()
		if err != nil {
			if _, v := fsm.IsViolation(err); !v && isDeadline(err) {
				return nil
			}
			return s.readErr(err)
		}
		if err := sd.incoming(f); err != nil {
			return err
		}
	}
	return nil
}

// run handles READ{PI 18}: ACK(READ), then the data phase.
func (sd *sender) run(f *fpdu.FPDU) error {
	s, x := sd.s, sd.x
	p, _ := f.Params.Uint(fpdu.PIRestartPoint)
	if sd.br == nil {
		sd.br = bufio.NewReaderSize(sd.src, max(64<<10, x.recLen+2))
		sd.art = make([]byte, x.recLen)
		sd.pack.Reset(x.entity, fpdu.MaxArticles, s.partner.MultiArticle && x.recLen+2+fpdu.HeaderLen <= x.entity, sd.dtf)
	}
	sd.limit, sd.sincePoll = s.syncLimit(), 0
	start, ok, err := sd.restartPoint(p)
	if err != nil {
		s.log.Error("cannot read the source file", "err", err)
		return s.writeAck(fpdu.AckRead, fpdu.DiagIOError)
	}
	if !ok {
		s.log.Warn("unknown restart point", "point", p)
		x.pointRefused = p
		return s.writeAck(fpdu.AckRead, fpdu.DiagRestartPointRefused)
	}
	if err := sd.seek(start); err != nil {
		s.log.Error("cannot position the source file", "err", err)
		return s.writeAck(fpdu.AckRead, fpdu.DiagIOError)
	}
	x.restartAt, sd.startPoint, sd.lastSent = start.num, start, start
	x.dataStarted = true
	defer s.dataPhase.Store(false)
	s.srv.countDiag(fpdu.DiagOK)
	ack := fpdu.FPDU{Kind: fpdu.AckRead, DstID: s.peerID}
	ack.Params.AddDiagnostic(fpdu.DiagOK)
	if err := s.enterDataPhase(&ack); err != nil {
		return err
	}
	s.log.Info("sending", "id", x.ref.ID, "restart_point", start.num, "offset", start.offset, "size", sd.size, "text", x.text)
	s.setEntitySize(x.entity)
	sd.startTail()
	defer func() { sd.tail.stop() }()
	return sd.phase()
}

// startTail hands the hash (of the file up to sd.off) to a new sendTail.
func (sd *sender) startTail() {
	s := sd.s
	sd.tail = startSendTail(s.ctx, s.srv.jnl, sd.x.ref, sd.src, sd.h, sd.off, s.log)
}

// restartPoint resolves READ PI 18 = p. Sync points are placed
// deterministically (before the article that would exceed the interval,
// never before an empty line), so any point the interrupted transfer SENT
// can be found again by replaying the placement over the file, as long as
// the interval and article length are the same: the journal's point (the
// last one sent) checks that the replay agrees, and p may be any point up
// to it, acknowledged or not.
func (sd *sender) restartPoint(p uint64) (syncPoint, bool, error) {
	rs := sd.x.restart
	if p == 0 {
		return syncPoint{}, true, nil
	}
	if rs == nil || p > uint64(rs.Sync) || rs.Offset > sd.size {
		return syncPoint{}, false, nil
	}
	known := syncPoint{num: rs.Sync, offset: rs.Offset, articles: rs.Articles}
	return sd.replay(uint32(p), known)
}

// replay re-runs the sync point placement from the start of the file up
// to known.num and returns point p, or false when the placement does not
// reach known where the journal says (other interval or article length).
func (sd *sender) replay(p uint32, known syncPoint) (syncPoint, bool, error) {
	s := sd.s
	if _, err := sd.src.Seek(0, io.SeekStart); err != nil {
		return syncPoint{}, false, err
	}
	sd.br.Reset(sd.src)
	var cur, found syncPoint
	var since int64
	limit := s.syncLimit()
	for cur.num < known.num {
		art, raw, err := sd.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return syncPoint{}, false, err
		}
		n := int64(len(art))
		if n > 0 && limit > 0 && since+n > limit {
			cur.num++
			since = 0
			if cur.num == p {
				found = cur
			}
			if cur.num == known.num {
				break
			}
		}
		since += n
		cur.offset += int64(len(raw))
		cur.data += n
		cur.articles++
	}
	if cur.num != known.num || cur.offset != known.offset || cur.articles != known.articles {
		s.log.Warn("sync point placement differs from the interrupted transfer", "replayed", cur.num, "offset", cur.offset, "journal", known.num, "journal_offset", known.offset)
		return syncPoint{}, false, nil
	}
	return found, found.num == p, nil
}

// next returns the next article of the file and the file bytes it came
// from: a fixed slice of PI 32 bytes for a binary file, a line without its
// "\n" (and a "\r" before it) for a text file. io.EOF at the end.
func (sd *sender) next() (art, raw []byte, err error) {
	if !sd.x.text {
		n, err := io.ReadFull(sd.br, sd.art)
		if n == 0 {
			if err == nil || errors.Is(err, io.ErrUnexpectedEOF) {
				err = io.EOF
			}
			return nil, nil, err
		}
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, nil, err
		}
		return sd.art[:n], sd.art[:n], nil
	}
	line, err := sd.br.ReadSlice('\n')
	switch {
	case err == nil:
		art = line[:len(line)-1]
		if len(art) > 0 && art[len(art)-1] == '\r' {
			art = art[:len(art)-1]
		}
	case errors.Is(err, io.EOF) && len(line) > 0:
		art = line // a last line without "\n"
	case errors.Is(err, bufio.ErrBufferFull):
		art = line
	default:
		return nil, nil, err
	}
	if len(art) > sd.x.recLen {
		return nil, nil, fmt.Errorf("line of more than %d bytes at article %d: %w", sd.x.recLen, sd.articles+1, fpdu.DiagArticleTooLong)
	}
	return art, line, nil
}

// seek positions the file at point p and rebuilds the hash of the prefix.
func (sd *sender) seek(p syncPoint) error {
	sd.h = sha256.New()
	if _, err := io.Copy(sd.h, io.NewSectionReader(sd.src, 0, p.offset)); err != nil {
		return err
	}
	if _, err := sd.src.Seek(p.offset, io.SeekStart); err != nil {
		return err
	}
	sd.br.Reset(sd.src)
	sd.pack.Discard()
	sd.off, sd.bytes, sd.articles = p.offset, p.data, p.articles
	sd.since = 0
	sd.lastSync = p
	sd.points = sd.points[:0]
	return nil
}

// phase streams from the point seek set to TRANS.END, resuming after
// each RESYN.
func (sd *sender) phase() error {
	s := sd.s
	for {
		err := sd.stream()
		// The hash and the journal are complete before anything reads
		// them or finishes the transfer.
		sd.tail.wait()
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
				if err := s.checkTransEnd(f, sd.bytes, sd.articles, sd.startPoint); err != nil {
					s.finish(StatusFailed, fpdu.DiagCountMismatch, err.Error())
					return abortf(fpdu.DiagCountMismatch, "%v", err)
				}
				// Acknowledged only once recorded (see receiver.transEnd).
				o := s.outcome(StatusDone, fpdu.DiagOK, sd.srcPath)
				if err := s.record(o, s.srv.cfg.InactivityTimeout); err != nil {
					return s.notDurable(err)
				}
				s.settle(o)
				return s.ackTransEnd(fpdu.DiagOK, sd.bytes, sd.articles)
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
		a, raw, rerr := sd.next()
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			d := ioDiag(rerr)
			if errors.Is(rerr, fpdu.DiagArticleTooLong) {
				d = rerr
			}
			if err := s.localIDT(d); err != nil {
				return err
			}
			return errIDTSent
		}
		n := len(a)
		// Empty lines never take a sync point: placement stays a function
		// of the data (replay) and an empty line keeps its neighbour.
		if n > 0 && sd.limit > 0 && sd.since+int64(n) > sd.limit {
			if err := sd.syn(); err != nil {
				return err
			}
		}
		var err error
		if x.text {
			if x.ebcdic != nil {
				codepage.Translate(a, &x.ebcdic.ToEBCDIC) // a aliases our read buffer
			}
			err = sd.pack.AddLine(a)
		} else {
			err = sd.pack.Add(a)
		}
		if err != nil {
			return err
		}
		sd.off += int64(len(raw))
		sd.bytes += int64(n)
		sd.articles++
		sd.since += int64(n)
		if sd.sincePoll += n; sd.sincePoll >= pollEvery {
			sd.sincePoll = 0
			sd.tail.hashTo(sd.off) // the file as it is, before any conversion
			if err := sd.poll(); err != nil {
				return err
			}
		}
	}
	sd.tail.hashTo(sd.off)
	if err := sd.pack.Flush(); err != nil {
		if errors.Is(err, fpdu.ErrLoneEmpty) {
			if err := s.localIDT(fmt.Errorf("%w: %w", fpdu.DiagFileOther, err)); err != nil {
				return err
			}
			return errIDTSent
		}
		return err
	}
	end := fpdu.FPDU{Kind: fpdu.DTFEnd, DstID: s.peerID}
	end.Params.AddDiagnostic(fpdu.DiagOK)
	if err := sd.s.queue(&end); err != nil {
		return err
	}
	return s.flush()
}

// dtf queues one data FPDU of the Packer.
func (sd *sender) dtf(k fpdu.Kind, data []byte, byte5 byte) error {
	sd.f = fpdu.FPDU{Kind: k, DstID: sd.s.peerID, SrcID: byte5, Data: data}
	return sd.s.queue(&sd.f)
}

// syn places sync point n+1 and honours the window (digest §4.3).
func (sd *sender) syn() error {
	s, x := sd.s, sd.x
	if err := sd.pack.Flush(); err != nil {
		return err
	}
	num := s.window().Next()
	sp := syncPoint{num: num, offset: sd.off, articles: sd.articles, data: sd.bytes}
	// Keep a bounded history: RESYN asks for a recent point.
	if len(sd.points) == maxSyncHistory {
		sd.points = append(sd.points[:0], sd.points[maxSyncHistory/2:]...)
	}
	sd.points = append(sd.points, sp)
	syn := fpdu.FPDU{Kind: fpdu.Syn, DstID: s.peerID}
	syn.Params.AddUint(fpdu.PISyncNumber, uint64(num))
	if err := sd.s.queue(&syn); err != nil {
		return err
	}
	sd.since = 0
	x.syncCount++
	// Journal the point as SENT, acknowledged or not: a restart may ask for
	// any point up to it (the receiver's ACK can be lost, or there is none
	// with a window of 0), and replay finds the earlier ones. The write is
	// the tail's, so that the data goes on meanwhile; it is done before the
	// transfer ends (run waits for it).
	sd.lastSent = sp
	sd.tail.sent(sp)
	if sd.tail.lost.Load() {
		// A newer owner runs this transfer (the journal refused an
		// earlier point): this session must not go on. IDT with PI 19 =
		// 4: the partner's restart finds the new owner.
		x.lost = true
		if err := s.localIDT(fmt.Errorf("%w: %w", fpdu.DiagSystemError, sd.tail.lostErr)); err != nil {
			return err
		}
		return errIDTSent
	}
	if s.syncOption().Window == 0 {
		// Nobody acknowledges: the point is as durable as it will get.
		return sd.acked(num)
	}
	for s.window().Blocked() {
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
	s := sd.s
	if f.Kind != fpdu.AckSyn {
		sd.tail.wait() // what follows may end the transfer
	}
	if s.idtPending.Load() {
		// The admin API sent IDT while we waited: wait for its ACK.
		if err := s.awaitAckIDT(f); err != nil {
			return err
		}
		return errStop
	}
	switch f.Kind {
	case fpdu.AckSyn:
		// The machine checked it acknowledges a point sent and not yet
		// acknowledged (one crossing our RESYN it ignored).
		n, _ := f.Params.Uint(fpdu.PISyncNumber)
		return sd.acked(uint32(n))
	case fpdu.IDT:
		if err := s.peerIDT(f); err != nil {
			return err
		}
		return errStop
	case fpdu.Resyn:
		p, _ := f.Params.Uint(fpdu.PIRestartPoint)
		target := syncPoint{}
		if p == uint64(sd.lastSync.num) {
			target = sd.lastSync
		}
		for _, sp := range sd.points {
			if uint64(sp.num) == p {
				target = sp
			}
		}
		if err := s.flush(); err != nil {
			return err
		}
		sd.tail.stop() // seek rebuilds the hash
		err := sd.seek(target)
		sd.startTail()
		if err != nil {
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
	s := sd.s
	var p syncPoint
	found := false
	for _, sp := range sd.points {
		if sp.num <= n {
			p, found = sp, true
		}
	}
	if !found {
		return nil
	}
	sd.lastSync = p
	if m := s.srv.met; m != nil {
		m.SyncPoints.Inc()
	}
	return nil
}

func (sd *sender) counts() (bytes, articles int64) { return sd.bytes, sd.articles }

// kept: a send keeps nothing of its own; the partner holds what it got.
func (sd *sender) kept() (bytes, articles int64) { return sd.counts() }

func (sd *sender) sum() string {
	if sd.h == nil {
		return ""
	}
	return hex.EncodeToString(sd.h.Sum(nil))
}

// settle: the tail is waited for within the data phase (phase).
func (sd *sender) settle() {}

// release: the source file is the sender's to read, never to change.
func (sd *sender) release(bool) {}

func (sd *sender) close() {
	if sd.src != nil {
		sd.src.Close()
	}
}

func (sd *sender) paths() (path, temp string) { return sd.srcPath, "" }

// resumePoint is the last point sent: any of them can be resumed (replay).
func (sd *sender) resumePoint() syncPoint { return sd.lastSent }
