package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/internal/codepage"
	"github.com/vectis-ft/vectis/pesit/internal/netpeek"
)

// ReceiveRequest describes a pull: SELECT, READ, DTFs.
type ReceiveRequest struct {
	// VirtualFile is PI 12; FileType PI 11.
	VirtualFile string
	FileType    uint16
	// Dest is the local file to create or replace. The data goes to a
	// temporary file beside it, fsynced and renamed into place once complete.
	Dest string
	// EntitySize is the PI 25 proposal (0: DefaultEntitySize).
	EntitySize int
	Priority   uint8 // PI 17
	// TransferID is PI 13 of a new SELECT (0: let the server choose, as
	// the spec says; some servers want a non-zero one, as CX sends). A
	// restart sends the server's id from the restart state.
	TransferID uint32

	// StateDir holds the restart state; empty: a hidden file beside Dest.
	StateDir string
	// NoRestart disables the restart state: every attempt starts over.
	NoRestart bool

	// Progress, when set, is called at most every 100 ms and at the end.
	Progress func(Progress)
}

// receiver is the state of one pull on a session.
type receiver struct {
	s       *Session
	req     *ReceiveRequest
	tmp     *os.File
	tmpPath string
	bw      *bufio.Writer
	text    bool
	maxArt  int
	position
	window   uint8
	lastSync uint32
	lastArm  time.Time
	meter    progressMeter
	article  func([]byte) error
	ebcdic   *codepage.EBCDIC037 // EBCDIC text: translate to the local code
	start    syncPoint           // where this session's data began
	from     syncPoint           // the restart point asked for (N = 0: the start)
	cands    []syncPoint         // restart points, latest first, to try when the server refuses one
	anoms    []Anomaly
	resyncs  int
	// pend is the sync point whose fsync runs while the data after it
	// arrives; it is recorded and acknowledged once durable (settle).
	pend *pendingSync
}

// pendingSync is a sync point received whose fsync is under way.
type pendingSync struct {
	pt       syncPoint
	done     chan error // the fsync's result
	finished bool       // err is the fsync's result
	err      error
}

// wait returns the fsync's result.
func (p *pendingSync) wait() error {
	if !p.finished {
		p.err, p.finished = <-p.done, true
	}
	return p.err
}

// ready reports, without waiting, whether the fsync is done.
func (p *pendingSync) ready() bool {
	if !p.finished {
		select {
		case p.err = <-p.done:
			p.finished = true
		default:
		}
	}
	return p.finished
}

// Receive pulls req.VirtualFile from the server into req.Dest. With restart
// state from an interrupted attempt it asks for a restart (SELECT PI 15 = 1
// with the server's PI 13, READ PI 18 = last acknowledged sync point).
func (s *Session) Receive(ctx context.Context, req ReceiveRequest) (res Result, err error) {
	start := time.Now()
	x, key, err := s.newReceiver(&req)
	if err != nil {
		return res, err
	}
	x.loadState(key)
	defer x.sf.close()
	defer func() {
		if x.tmp != nil {
			_ = x.tmp.Close()
			if err != nil && (x.sf == nil || x.st.TransferID == 0) {
				_ = os.Remove(x.tmpPath) // nothing to resume from
			}
		}
	}()
	defer s.watch(ctx)()
	ack, err := x.selectRestart(key)
	if err != nil {
		return res, err
	}
	if err := x.agreeSelect(ack, key); err != nil {
		return res, err
	}
	res.TransferID = x.st.TransferID
	if err := x.openTemp(x.from); err != nil {
		return res, x.s.deselect(err)
	}
	if err := s.openFile(); err != nil {
		return res, s.deselect(err)
	}
	p, err := x.read(x.from.N, x.cands)
	if err != nil {
		return res, err
	}
	x.start = syncPoint{N: x.lastSync, Offset: x.fileOff, Articles: x.articles, Bytes: x.bytes}
	res.Restarted, res.RestartPoint = p > 0, p
	s.log.Debug("pesit read", "transfer", x.st.TransferID, "restart_point", p, "offset", x.fileOff, "text", x.text)

	err = x.data()
	res.Anomalies = x.anoms
	if err != nil {
		return res, err
	}
	if err := x.deliver(key.Local); err != nil {
		return res, err
	}
	x.progress(true)
	res.FileBytes, res.DataBytes, res.Articles = x.fileOff, x.bytes, x.articles
	res.SyncPoints = x.lastSync
	res.Duration = time.Since(start)
	return res, nil
}

// newReceiver checks req and returns the receiver of a pull and the key
// of its restart state.
func (s *Session) newReceiver(req *ReceiveRequest) (*receiver, *transferState, error) {
	if s.broken {
		return nil, nil, &ConnectionError{Op: "receive", Err: errors.New("session is closed")}
	}
	if req.VirtualFile == "" {
		return nil, nil, fmt.Errorf("virtual file name (PI 12) is required")
	}
	if req.Dest == "" {
		req.Dest = filepath.Base(req.VirtualFile)
	}
	if req.TransferID > 0xFFFFFF {
		return nil, nil, fmt.Errorf("transfer id (PI 13) %d does not fit 24 bits", req.TransferID)
	}
	abs, err := filepath.Abs(req.Dest)
	if err != nil {
		return nil, nil, &LocalError{Op: "resolve", Path: req.Dest, Err: err}
	}
	x := &receiver{s: s, req: req, window: s.syncWindow, meter: progressMeter{fn: req.Progress},
		tmpPath: filepath.Join(filepath.Dir(abs), "."+filepath.Base(abs)+".vectis-part")}
	x.article = x.writeArticle
	key := &transferState{Version: stateVersion, Direction: "receive", Addr: s.cfg.Addr, ServerID: s.cfg.ServerID,
		Partner: s.cfg.RequesterID, VirtualFile: req.VirtualFile, Local: abs,
		Options: fmt.Sprintf("type=%d entity=%d sync=%d/%d", req.FileType, req.EntitySize, s.syncKB, s.syncWindow)}
	return x, key, nil
}

// loadState finds the restart state of an interrupted pull of the same file
// and the points it may resume from (x.from, then x.cands, latest first:
// the server may only know an older point than our last one if our last
// ACK(SYN) was lost in the cut); x.st is that state, or key.
func (x *receiver) loadState(key *transferState) {
	s, req := x.s, x.req
	x.st = key
	if req.NoRestart {
		return
	}
	sf, prev, err := openState(statePath(req.StateDir, key), key)
	if err != nil {
		s.log.Warn("restart state unavailable; a failed transfer will start over", "err", err)
		return
	}
	x.sf = sf
	if prev == nil {
		return
	}
	fi, err := os.Stat(x.tmpPath)
	var cands []syncPoint
	if err == nil {
		cands, err = restartCandidates(prev, fi.Size())
	}
	if err != nil {
		s.log.Warn("restart state dropped; the transfer starts over", "state", x.sf.path, "reason", err)
		return
	}
	if len(cands) > 0 {
		x.from, x.cands, x.st = cands[0], cands, prev
	}
}

// startOver gives up the restart: the transfer goes from the start of the
// file under key, keeping the transfer id known so far.
func (x *receiver) startOver(key *transferState) {
	key.TransferID = x.st.TransferID
	x.from, x.cands, x.st = syncPoint{}, nil, key
}

// selectRestart sends SELECT, asking for a restart when there is a point to
// resume from, and again without when the server refuses the restart.
func (x *receiver) selectRestart(key *transferState) (*fpdu.FPDU, error) {
	ack, err := x.selectFile(x.from.N)
	var te *TransferError
	if x.from.N > 0 && errors.As(err, &te) && te.Op == fpdu.AckSelect {
		x.s.log.Info("restart refused by server; starting over", "diag", te.Diagnostic.String())
		x.startOver(key)
		ack, err = x.selectFile(0)
	}
	return ack, err
}

// agreeSelect reads ACK(SELECT): the transfer id and the file's attributes,
// and whether the restart state still describes this file.
func (x *receiver) agreeSelect(ack *fpdu.FPDU, key *transferState) error {
	s := x.s
	attrs := fpdu.ReadAckSelect(ack)
	id := attrs.TransferID
	if id > 0xFFFFFF {
		return s.protocolError(fpdu.DiagBadParameter, "ACK(SELECT) transfer id %d", id)
	}
	if id == 0 {
		// PI 13 is mandatory in ACK(SELECT), but the data can still flow;
		// only a restart by id is impossible.
		if s.noteAnomaly(&x.anoms, AnomalyZeroTransferID, "ACK(SELECT) PI 13 = 0") {
			return s.deselect(&ProtocolError{Diagnostic: fpdu.DiagBadParameter, Msg: "ACK(SELECT) PI 13 = 0 (strict mode)"})
		}
		x.dropState("ACK(SELECT) PI 13 = 0: the pull cannot be restarted")
	}
	if x.from.N > 0 && uint32(id) != x.st.TransferID {
		s.log.Info("server started a new transfer instead of restarting", "old", x.st.TransferID, "new", id)
		x.startOver(key)
	}
	x.st.TransferID = uint32(id)
	format, code := attrs.ArticleFormat, dataCodeFromWire(attrs.DataCode)
	x.text = len(format) == 1 && format[0]&0x80 != 0 && code.text()
	if x.text && code == DataEBCDIC {
		x.ebcdic = codepage.NewEBCDIC037()
	}
	if attrs.HasArticleLength {
		x.maxArt = int(attrs.ArticleLength)
	}
	if attrs.HasSpace && attrs.SpaceKB < 1<<40 {
		x.total = int64(attrs.SpaceKB) * 1024
	}
	source := fmt.Sprintf("created=%s kb=%d", attrs.Created, attrs.SpaceKB)
	var why string
	switch p, pt := x.from.N, x.from; {
	case p == 0:
	case x.total > 0 && pt.Bytes > x.total:
		why = fmt.Sprintf("restart point %d at %d data bytes, file announced at %d bytes", p, pt.Bytes, x.total)
	case x.st.Source != "" && x.st.Source != source:
		why = fmt.Sprintf("the server's file changed (%s, was %s)", source, x.st.Source)
	}
	if why != "" {
		// The state belongs to another content: resuming would splice
		// two files. READ PI 18 = 0 is always legal.
		s.log.Warn("restart state dropped; the transfer starts over", "reason", why)
		x.startOver(key)
	}
	x.st.Source = source
	return nil
}

// deliver puts the complete file (fsynced before TRANS.END) under its final
// name, then closes the transfer.
func (x *receiver) deliver(dest string) error {
	s := x.s
	if err := x.tmp.Close(); err != nil {
		x.tmp = nil
		return s.closeFile(&LocalError{Op: "close", Path: x.tmpPath, Err: err})
	}
	x.tmp = nil
	if err := os.Rename(x.tmpPath, dest); err != nil {
		return s.closeFile(&LocalError{Op: "rename", Path: dest, Err: err})
	}
	if err := syncDir(filepath.Dir(dest)); err != nil {
		return s.closeFile(&LocalError{Op: "sync directory of", Path: dest, Err: err})
	}
	x.sf.remove()
	x.sf = nil
	return s.closeFile(nil)
}

func (x *receiver) selectFile(p uint32) (*fpdu.FPDU, error) {
	s, req := x.s, x.req
	entity := req.EntitySize
	if entity <= fpdu.HeaderLen || entity > fpdu.MaxFPDULen {
		entity = DefaultEntitySize
	}
	id := req.TransferID
	if p > 0 {
		id = x.st.TransferID
	}
	if err := s.write(fpdu.NewSelect(s.peer, fpdu.SelectParams{FileType: req.FileType, FileName: req.VirtualFile,
		TransferID: id, Restart: p > 0, Priority: req.Priority, EntitySize: entity})); err != nil {
		return nil, err
	}
	return s.expectOK(fpdu.AckSelect)
}

// dropState forgets the restart state of this pull: an interruption now
// starts over from the beginning.
func (x *receiver) dropState(why string) {
	if x.sf == nil {
		return
	}
	x.s.log.Warn("restart state dropped; an interruption will start over", "reason", why)
	x.sf.remove()
	x.sf = nil
}

// restartCandidates returns the points of prev a pull may resume from,
// latest first, or an error when the state contradicts itself or the
// partial file: numbers and offsets must grow together, every point must be
// acknowledged and within the partial file, and data bytes never exceed
// file bytes.
func restartCandidates(prev *transferState, partial int64) ([]syncPoint, error) {
	var out []syncPoint
	for i, q := range prev.Points {
		switch {
		case q.N == 0 || q.N > prev.Acked:
			return nil, fmt.Errorf("point %d not acknowledged (last %d)", q.N, prev.Acked)
		case q.Offset > partial:
			return nil, fmt.Errorf("point %d at offset %d beyond the partial file (%d bytes)", q.N, q.Offset, partial)
		case q.Bytes > q.Offset || q.Articles < 0 || q.Bytes < 0:
			return nil, fmt.Errorf("point %d: %d data bytes, %d articles at offset %d", q.N, q.Bytes, q.Articles, q.Offset)
		case i > 0 && (q.N <= prev.Points[i-1].N || q.Offset < prev.Points[i-1].Offset):
			return nil, fmt.Errorf("point %d at %d follows point %d at %d", q.N, q.Offset, prev.Points[i-1].N, prev.Points[i-1].Offset)
		}
		out = append(out, q)
	}
	slices.Reverse(out)
	return out, nil
}

// openTemp opens the temporary file, cut back to the restart point.
func (x *receiver) openTemp(pt syncPoint) error {
	if err := os.MkdirAll(filepath.Dir(x.tmpPath), 0o755); err != nil {
		return &LocalError{Op: "create directory", Path: filepath.Dir(x.tmpPath), Err: err}
	}
	f, err := os.OpenFile(x.tmpPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return &LocalError{Op: "create", Path: x.tmpPath, Err: err}
	}
	x.tmp = f
	return x.rewind(pt)
}

func (x *receiver) rewind(pt syncPoint) error {
	if err := x.tmp.Truncate(pt.Offset); err != nil {
		return &LocalError{Op: "truncate", Path: x.tmpPath, Err: err}
	}
	if _, err := x.tmp.Seek(pt.Offset, 0); err != nil {
		return &LocalError{Op: "seek", Path: x.tmpPath, Err: err}
	}
	x.fileOff, x.bytes, x.articles, x.lastSync = pt.Offset, pt.Bytes, pt.Articles, pt.N
	x.st.Acked = pt.N
	kept := x.st.Points[:0]
	for _, q := range x.st.Points {
		if q.N <= pt.N {
			kept = append(kept, q)
		}
	}
	x.st.Points = kept
	if x.bw == nil {
		x.bw = bufio.NewWriterSize(x.tmp, 256<<10)
	} else {
		x.bw.Reset(x.tmp)
	}
	if err := x.sf.save(x.st); err != nil {
		x.s.log.Warn("cannot save restart state", "err", err)
	}
	return nil
}

// read sends READ{PI 18 = p}; when the server cannot resume there it tries
// the older points we kept, then the start of the file.
func (x *receiver) read(p uint32, cands []syncPoint) (uint32, error) {
	s := x.s
	for {
		if err := s.write(fpdu.NewRead(s.peer, p)); err != nil {
			return p, err
		}
		_, err := s.expectOK(fpdu.AckRead)
		var te *TransferError
		if p > 0 && errors.As(err, &te) && te.Op == fpdu.AckRead {
			s.log.Info("server refused the restart point", "point", p, "diag", te.Diagnostic.String())
			next := syncPoint{}
			for len(cands) > 0 && cands[0].N >= p {
				cands = cands[1:]
			}
			if len(cands) > 0 {
				next = cands[0]
			}
			p = next.N
			if err := x.rewind(next); err != nil {
				return p, s.closeFile(err)
			}
			continue
		}
		if err != nil {
			if te != nil {
				return p, s.closeFile(err)
			}
			return p, err
		}
		return p, nil
	}
}

func (x *receiver) writeArticle(a []byte) error {
	if x.ebcdic != nil {
		codepage.Translate(a, &x.ebcdic.ToASCII) // a aliases the reader's buffer, which is ours until the next read
	}
	if _, err := x.bw.Write(a); err != nil {
		return err
	}
	n := len(a)
	if x.text {
		if err := x.bw.WriteByte('\n'); err != nil {
			return err
		}
		n++
	}
	x.fileOff += int64(n)
	x.bytes += int64(len(a))
	x.articles++
	return nil
}

// nextData reads the next FPDU of the data phase, re-arming the inactivity
// deadline only every Tp/8 to keep the hot path free of timer updates.
func (x *receiver) nextData() (*fpdu.FPDU, error) {
	now := time.Now()
	arm := now.Sub(x.lastArm) > x.s.tp/8
	if arm {
		x.lastArm = now
	}
	return x.s.read(arm)
}

// data receives DTFs and SYNs until DTF.END, then sends TRANS.END.
func (x *receiver) data() error {
	s := x.s
	// A cancelled pull ends with IDT (PI 19 = 16) and CRF, DESELECT, not a
	// closed connection; watch forces the deadline if the server does not
	// answer within cancelGrace.
	s.graceful.Store(true)
	defer s.graceful.Store(false)
	defer x.drain()
	for {
		if s.canceled.Load() {
			return x.cancel()
		}
		if x.pend != nil && (x.pend.ready() || !x.inputWaiting()) {
			// Durable already, or the server may be waiting for the
			// acknowledgement before it sends more (it need not use
			// the whole window): acknowledge before reading on.
			if err := x.settle(); err != nil {
				return err
			}
		}
		f, err := x.nextData()
		if err != nil {
			return err
		}
		// The machine has checked that f is valid here: segments in
		// order, SYN and DTF.END between articles, RESYN negotiated.
		if f.Kind == fpdu.DTFEnd {
			d, _ := f.Params.Diagnostic()
			return x.end(d)
		}
		if err := x.handle(f); err != nil {
			return err
		}
		if x.req.Progress != nil && x.articles&63 == 0 {
			x.progress(false)
		}
	}
}

// handle applies one FPDU of the data phase before DTF.END.
func (x *receiver) handle(f *fpdu.FPDU) error {
	s := x.s
	switch f.Kind {
	case fpdu.DTF:
		if err := f.ForEachArticle(x.article); err != nil {
			var d fpdu.Diagnostic
			if errors.As(err, &d) {
				return s.protocolError(d, "DTF: %v", err)
			}
			return x.localFailure(err)
		}
	case fpdu.DTFDA, fpdu.DTFMA, fpdu.DTFFA:
		if err := x.segment(f); err != nil {
			return x.localFailure(err)
		}
	case fpdu.Syn:
		return x.sync(fpdu.ReadSyncNumber(f))
	case fpdu.IDT:
		return s.closeFile(s.answerIDT(f))
	case fpdu.Resyn:
		return x.resyn(fpdu.ReadPoint(f))
	default:
		return s.protocolError(fpdu.DiagProtocolError, "unexpected %s during data transfer", f.Kind)
	}
	return nil
}

// segment writes one segment of an article (DTFDA, DTFMA*, DTFFA).
func (x *receiver) segment(f *fpdu.FPDU) error {
	if x.ebcdic != nil {
		codepage.Translate(f.Data, &x.ebcdic.ToASCII)
	}
	if _, err := x.bw.Write(f.Data); err != nil {
		return err
	}
	x.fileOff += int64(len(f.Data))
	x.bytes += int64(len(f.Data))
	if f.Kind == fpdu.DTFFA {
		x.articles++
		if x.text {
			if err := x.bw.WriteByte('\n'); err != nil {
				return err
			}
			x.fileOff++
		}
	}
	return nil
}

// resyn answers a sender-initiated RESYN{p} (digest §4.5): the receiver
// picks a point >= p that it holds durably, or 0, and the data resumes from
// there. Every acknowledged point is on disk (fsync before ACK(SYN)), so our
// last one qualifies when it is >= p; otherwise the start of the file.
func (x *receiver) resyn(p uint32) error {
	s := x.s
	if x.resyncs++; x.resyncs > maxResyncs {
		return s.protocolError(fpdu.DiagTooManyResyncs, "%d RESYNs in one transfer", x.resyncs)
	}
	// The last point, durable, is one we may resume from.
	if _, err := x.complete(); err != nil {
		return x.localFailure(err)
	}
	var pt syncPoint
	if x.lastSync >= p {
		if q, ok := x.st.point(x.lastSync); ok {
			pt = q
		}
	}
	if err := x.rewind(pt); err != nil {
		return x.localFailure(err)
	}
	if pt.N < x.start.N {
		x.start = pt // counts of this session now start there
	}
	s.log.Info("resynchronised by the server", "asked", p, "point", pt.N, "offset", pt.Offset)
	return s.write(fpdu.NewAckResyn(s.peer, pt.N))
}

// sync takes sync point n: everything received so far is written out and
// its fsync started, and the point is recorded and acknowledged once the
// fsync is done, at the next point or the end of the data at the latest
// (settle), so that the fsync overlaps the reception of the next MiB
// instead of stopping it (issue 17: the pull's client waited out one
// fsync per point, in series with its reads). The point is acknowledged
// as soon as the data loop sees the fsync done, and before any read that
// would wait for the server, which may be waiting for this
// acknowledgement: a server need not use its whole window. At most one
// point waits: the next SYN settles it first. With a window of 1 the
// server may send no data before ACK(SYN n), so the point is
// acknowledged at once, as before.
func (x *receiver) sync(n uint32) error {
	s := x.s
	if err := x.settle(); err != nil {
		return err
	}
	if err := x.bw.Flush(); err != nil {
		return x.localFailure(err)
	}
	if n <= x.lastSync {
		// After READ PI 18 = p the numbering goes on from p (digest §4.3);
		// a server that starts again from 1 gives numbers that no longer
		// name the offsets we would store under them: storing them would
		// poison every later restart. Keep receiving, keep no state.
		detail := fmt.Sprintf("SYN %d after sync point %d", n, x.lastSync)
		if s.noteAnomaly(&x.anoms, AnomalySyncRenumbered, detail) {
			return s.protocolError(fpdu.DiagBadParameter, "%s (strict mode)", detail)
		}
		x.dropState("the server renumbered its sync points")
	}
	x.lastSync = n
	p := &pendingSync{pt: syncPoint{N: n, Offset: x.fileOff, Articles: x.articles, Bytes: x.bytes}, done: make(chan error, 1)}
	// Owned by x: every path out of the data phase receives its result
	// (settle, or drain).
	go func(f *os.File) { p.done <- f.Sync() }(x.tmp)
	x.pend = p
	if x.window == 1 {
		return x.settle()
	}
	return nil
}

// settle waits for the fsync of the pending point, if any, then records
// the point in the restart state and acknowledges it (unless the window
// is 0: no acknowledgements).
func (x *receiver) settle() error {
	p, err := x.complete()
	if err != nil {
		return x.localFailure(err)
	}
	if p == nil || x.window == 0 {
		return nil
	}
	s := x.s
	return s.write(fpdu.NewAckSyn(s.peer, p.N))
}

// complete waits for the fsync of the pending point, if any, and records
// the point, durable now, in the restart state; it returns the point.
func (x *receiver) complete() (*syncPoint, error) {
	p := x.pend
	if p == nil {
		return nil, nil
	}
	x.pend = nil
	if err := p.wait(); err != nil {
		return nil, err
	}
	x.st.Acked = p.pt.N
	// Keep the points the server may still restart from: those not yet
	// known to be acknowledged on its side (up to the window), plus one.
	if keep := int(x.window) + 1; len(x.st.Points) >= keep {
		x.st.Points = append(x.st.Points[:0], x.st.Points[len(x.st.Points)-keep+1:]...)
	}
	x.st.Points = append(x.st.Points, p.pt)
	if err := x.sf.save(x.st); err != nil {
		x.s.log.Warn("cannot save restart state", "err", err)
	}
	x.progress(false)
	return &p.pt, nil
}

// inputWaiting reports whether the next read has input to return without
// waiting for the server; false when it cannot tell (TLS).
func (x *receiver) inputWaiting() bool {
	if x.s.r.Pending() {
		return true
	}
	ready, known := netpeek.Readable(x.s.conn)
	return ready && known
}

// drain ends the data phase with the pending point, if any, durable and
// in the restart state but not acknowledged: after an IDT or a RESYN, or
// on a failure, ACK(SYN) is no longer what the server expects. A restart
// may ask for it; a server that did not journal it refuses it, and the
// points before it are tried (read).
func (x *receiver) drain() {
	if _, err := x.complete(); err != nil {
		x.s.log.Warn("sync point not made durable", "err", err)
	}
}

func (x *receiver) flush() error {
	if err := x.bw.Flush(); err != nil {
		return err
	}
	return x.tmp.Sync()
}

// end handles DTF.END: flush, fsync, TRANS.END{27, 28}, ACK(TRANS.END).
func (x *receiver) end(d fpdu.Diagnostic) error {
	s := x.s
	if err := x.settle(); err != nil {
		return err
	}
	if err := x.flush(); err != nil {
		return x.localFailure(err)
	}
	if err := s.write(fpdu.NewTransEnd(s.peer, x.bytes, x.articles)); err != nil {
		return err
	}
	f, err := s.expectOK(fpdu.AckTransEnd)
	var te *TransferError
	if err == nil || errors.As(err, &te) && te.Op != fpdu.IDT {
		// The exchange is complete, whatever its outcome: there is
		// nothing left to resume, and the next attempt starts over. An
		// IDT instead of ACK(TRANS.END) (the server could not record the
		// end) keeps the state: PI 19 says whether a restart follows.
		x.sf.remove()
		x.sf = nil
	}
	if err != nil {
		if te != nil {
			return s.closeFile(err)
		}
		return err
	}
	if !d.OK() {
		return s.closeFile(&TransferError{Op: fpdu.DTFEnd, Diagnostic: d})
	}
	c := fpdu.ReadCounts(f)
	if err := s.checkPeerCounts(&x.anoms, c.Bytes, c.Articles, c.HasBytes, c.HasArticles, x.bytes, x.articles, x.start.Bytes, x.start.Articles); err != nil {
		return s.protocolError(fpdu.DiagCountMismatch, "ACK(TRANS.END): %v", err)
	}
	return nil
}

// cancel ends a pull whose context was cancelled: IDT 2/216 with end code
// 16 (cancelled by the requester, no restart), then CRF and DESELECT. The
// restart state goes: nothing is to be resumed.
func (x *receiver) cancel() error {
	x.dropState("the pull was cancelled")
	return x.interrupt(16, fpdu.DiagVoluntaryStop, fmt.Errorf("pull of %s: %w", x.req.VirtualFile, context.Canceled))
}

// localFailure interrupts the transfer for a local write error: IDT with end
// code 4 (a restart may follow) and 2/213, then CRF and DESELECT.
func (x *receiver) localFailure(cause error) error {
	return x.interrupt(4, fpdu.DiagIOError, &LocalError{Op: "write", Path: x.tmpPath, Err: cause})
}

// interrupt sends IDT{d, PI 19 = code}, waits for ACK(IDT) (the machine
// ignores the data in flight and a crossing IDT: the requester wins), then
// closes the file; it returns cause.
func (x *receiver) interrupt(code uint8, d fpdu.Diagnostic, cause error) error {
	s := x.s
	if err := s.write(fpdu.NewIDT(s.peer, d, code)); err != nil {
		return cause
	}
	if _, err := s.expect(fpdu.AckIDT); err != nil {
		return cause
	}
	return s.closeFile(cause)
}

func (x *receiver) progress(final bool) {
	total := x.total
	if final {
		total = x.fileOff
	}
	x.meter.report(Progress{Bytes: x.fileOff, Total: total}, final)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
