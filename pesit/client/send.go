package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/internal/codepage"
)

// SendRequest describes a push: CREATE, WRITE, DTFs.
type SendRequest struct {
	// Source is the local file.
	Source string
	// VirtualFile is PI 12 (default: the base name of Source); FileType PI 11.
	VirtualFile string
	FileType    uint16
	// TransferID is PI 13 (non-zero); 0 draws one. A restart reuses the id
	// saved in the restart state, which must then be this one: restart
	// state of another transfer id fails the push (RestartRefusedError)
	// unless StartOver.
	TransferID uint32

	Format        ArticleFormat
	ArticleLength int // PI 32; 0: DefaultArticleLength, lowered to the sync interval
	DataCode      DataCode
	// MultiArticle > 1 packs up to that many articles in one DTF (byte 5 = N),
	// within the entity size. Use it only with servers that agreed to it.
	MultiArticle int
	// Segment allows DTFDA/DTFMA/DTFFA for articles longer than the entity
	// size allows.
	Segment bool
	// EntitySize is the PI 25 proposal (0: DefaultEntitySize).
	EntitySize int
	Priority   uint8 // PI 17

	// StateDir holds the restart state; empty: a hidden file beside Source.
	StateDir string
	// NoRestart disables the restart state: every attempt starts over.
	NoRestart bool
	// StartOver allows a push with restart state to send the file again as
	// a new transfer when the interrupted one cannot be resumed: the server
	// refuses the restart, or the state is of another TransferID. Without
	// it the push fails with a RestartRefusedError and the state is kept,
	// since the server may hold the whole file already: a silent fresh
	// start would deliver it twice. A fresh start is reported in
	// Result.Abandoned.
	StartOver bool

	// Progress, when set, is called from the transfer goroutine at most
	// every 100 ms and at the end.
	Progress func(Progress)
}

// sendEvent is what the reader goroutine of a push reports: one FPDU from
// the server, reduced to values so that no buffer outlives Reader.Next.
type sendEvent struct {
	kind     fpdu.Kind
	n        uint64 // PI 20 of ACK(SYN)
	point    uint64 // PI 18 of RESYN
	diag     fpdu.Diagnostic
	endCode  uint8
	bytes    int64
	articles int64
	// okBytes, okArticles: PI 27 and PI 28 were present.
	okBytes, okArticles bool
	err                 error
}

func (e sendEvent) terminal() bool {
	return e.err != nil || e.kind != fpdu.AckSyn
}

// sender is the state of one push on a session.
type sender struct {
	s        *Session
	req      *SendRequest
	entity   int
	artLen   int
	autoLen  bool  // artLen was not configured
	limit    int64 // sync interval in data bytes; 0: no sync points
	window   uint32
	syncSent uint32
	acked    uint32
	since    int64 // data bytes since the last sync point
	fileOff  int64
	bytes    int64
	articles int64
	total    int64
	st       *transferState
	sf       *stateFile

	events  chan sendEvent
	done    chan struct{}
	term    sendEvent // terminal event already received, when hasTerm
	hasTerm bool
	timer   *time.Timer

	resyncs      int
	text         bool
	lastProgress time.Time
	lastArm      time.Time
	ebcdic       *codepage.EBCDIC037 // text in EBCDIC: translate each line
	start        syncPoint           // where this session's data began
	anoms        []Anomaly
}

// Send pushes req.Source to the server. With restart state from an earlier
// interrupted attempt it asks for a restart (PI 15 = 1, same PI 13) and
// resumes from the sync point the server chooses.
func (s *Session) Send(ctx context.Context, req SendRequest) (res Result, err error) {
	start := time.Now()
	if s.broken {
		return res, &ConnectionError{Op: "send", Err: errors.New("session is closed")}
	}
	if req.VirtualFile == "" {
		req.VirtualFile = filepath.Base(req.Source)
	}
	abs, err := filepath.Abs(req.Source)
	if err != nil {
		return res, &LocalError{Op: "open", Path: req.Source, Err: err}
	}
	src, err := os.Open(abs)
	if err != nil {
		return res, &LocalError{Op: "open", Path: req.Source, Err: err}
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return res, &LocalError{Op: "stat", Path: req.Source, Err: err}
	}
	if !fi.Mode().IsRegular() {
		return res, &LocalError{Op: "open", Path: req.Source, Err: errors.New("not a regular file")}
	}
	x := &sender{s: s, req: &req, total: fi.Size()}
	if err := x.plan(); err != nil {
		return res, err
	}

	// Restart state.
	key := &transferState{Version: stateVersion, Direction: "send", Addr: s.cfg.Addr, ServerID: s.cfg.ServerID,
		Partner: s.cfg.RequesterID, VirtualFile: req.VirtualFile, Local: abs, Size: fi.Size(),
		ModTime: fi.ModTime().UnixNano(), Options: x.options()}
	var prev *transferState
	if !req.NoRestart {
		sf, st, err := openState(statePath(req.StateDir, key), key)
		if err != nil {
			s.log.Warn("restart state unavailable; a failed transfer will start over", "err", err)
		} else {
			x.sf, prev = sf, st
			defer sf.close()
		}
	}
	x.st = key
	restart := prev != nil
	if restart && req.TransferID != 0 && prev.TransferID != req.TransferID {
		// The state is of another transfer: resuming it would change the
		// identity asked for, starting over could deliver its file twice.
		if !req.StartOver {
			res.TransferID = prev.TransferID
			return res, &RestartRefusedError{TransferID: prev.TransferID, Requested: req.TransferID}
		}
		s.log.Warn("restart state of another transfer abandoned; starting over (StartOver)",
			"abandoned", prev.TransferID, "transfer", req.TransferID)
		res.Abandoned = prev.TransferID
		restart = false
	}
	if restart {
		x.st = prev
	} else {
		x.st.TransferID = req.TransferID
		if x.st.TransferID == 0 {
			x.st.TransferID = newTransferID()
		}
	}
	res.TransferID = x.st.TransferID

	defer s.watch(ctx)()
	ack, err := x.create(restart)
	var te *TransferError
	if restart && errors.As(err, &te) && te.Op == fpdu.AckCreate {
		// The server does not resume the interrupted transfer. It may hold
		// its file already (2/204), so sending it again under a new id is
		// the caller's decision, never ours.
		if !req.StartOver {
			return res, &RestartRefusedError{TransferID: x.st.TransferID, Diagnostic: te.Diagnostic, Text: te.Text}
		}
		s.log.Warn("restart refused by server; starting over as a new transfer (StartOver)",
			"abandoned", x.st.TransferID, "diag", te.Diagnostic.String())
		res.Abandoned = x.st.TransferID
		restart = false
		x.st = key
		x.st.TransferID = req.TransferID // honoured, even when it is the abandoned one's
		if x.st.TransferID == 0 {
			x.st.TransferID = newTransferID()
		}
		res.TransferID = x.st.TransferID
		x.st.Points, x.st.Acked = nil, 0
		ack, err = x.create(false)
	}
	if err != nil {
		return res, err
	}
	if e, ok := ack.Params.Uint(fpdu.PIEntitySize); ok && e > 0 && int(e) < x.entity {
		x.entity = int(e)
	}
	if x.entity < fpdu.HeaderLen+1 {
		return res, s.protocolError(fpdu.DiagBadParameter, "entity size %d too small", x.entity)
	}
	if x.autoLen && req.Format == FormatVariable {
		// Variable format: PI 32 is only a maximum, so shorter articles
		// that fit the server's entity size are fine. A text line leaves
		// room for an empty line on each side ([empty, line, empty] in one
		// DTF: an empty article never travels alone).
		room := x.entity - fpdu.HeaderLen
		if req.DataCode.text() {
			room -= 6
		}
		if x.artLen > room {
			x.artLen = max(room, 1)
		}
	}
	if x.artLen+fpdu.HeaderLen > x.entity && !req.Segment {
		return res, x.endFile(&RefusedLocallyError{Op: fpdu.AckCreate, Diagnostic: fpdu.DiagInsufficientCharacteristics,
			Text: fmt.Sprintf("the server lowered the entity size to %d, below article length %d + 6: enable segmentation or lower the article length",
				x.entity, x.artLen)})
	}
	s.w.SetEntitySize(x.entity)
	if err := x.sf.save(x.st); err != nil {
		s.log.Warn("cannot save restart state", "err", err)
	}

	// ORF, WRITE.
	if err := s.openFile(); err != nil {
		return res, x.endFile(err)
	}
	if err := s.write(&fpdu.FPDU{Kind: fpdu.Write, DstID: s.peer}); err != nil {
		return res, err
	}
	aw, err := s.expectOK(fpdu.AckWrite)
	if err != nil {
		return res, x.closeFile(err)
	}
	p64, _ := aw.Params.Uint(fpdu.PIRestartPoint)
	if p64 > 0xFFFFFF {
		return res, s.protocolError(fpdu.DiagBadParameter, "ACK(WRITE) restart point %d", p64)
	}
	p := uint32(p64)
	pt, ok := x.st.point(p)
	if !ok || (p > 0 && !restart) {
		// We cannot resume there: forget the state so that the next attempt
		// starts over, and interrupt this one.
		x.st.Points, x.st.Acked = nil, 0
		x.st.TransferID = 0
		if x.sf != nil {
			x.sf.remove()
			x.sf = nil
		}
		return res, x.interrupt(ctx, 16, fpdu.DiagRestartPointRefused,
			&RefusedLocallyError{Op: fpdu.AckWrite, Diagnostic: fpdu.DiagRestartPointRefused,
				Text: fmt.Sprintf("the server asked to restart from sync point %d, which we do not know; the next attempt starts over", p)})
	}
	res.Restarted, res.RestartPoint = restart, p
	x.syncSent, x.acked = p, p
	x.fileOff, x.articles, x.bytes = pt.Offset, pt.Articles, pt.Bytes
	if _, err := src.Seek(pt.Offset, io.SeekStart); err != nil {
		return res, x.interrupt(ctx, 4, fpdu.DiagIOError, &LocalError{Op: "seek", Path: req.Source, Err: err})
	}
	s.log.Debug("pesit write", "transfer", x.st.TransferID, "restart_point", p, "offset", pt.Offset,
		"entity", x.entity, "article", x.artLen, "sync_bytes", x.limit, "window", x.window)

	x.start = pt
	err = x.data(ctx, src)
	res.Anomalies = x.anoms
	if err != nil {
		return res, err
	}
	if err := x.closeFile(nil); err != nil {
		return res, err
	}
	if x.sf != nil {
		x.sf.remove()
		x.sf = nil
	}
	x.progress(true)
	res.FileBytes, res.DataBytes, res.Articles = x.fileOff, x.bytes, x.articles
	res.SyncPoints = x.syncSent
	res.Duration = time.Since(start)
	return res, nil
}

// options names what shapes the pushed data; a restart state written with
// other options is not resumed.
func (x *sender) options() string {
	r := x.req
	return fmt.Sprintf("type=%d format=%d len=%d code=%d multi=%d seg=%v entity=%d sync=%d/%d",
		r.FileType, r.Format.wire(), x.artLen, r.DataCode.wire(), r.MultiArticle, r.Segment, x.entity, x.limit, x.window)
}

// plan fixes the entity size proposal and the article length.
func (x *sender) plan() error {
	req := x.req
	x.entity = req.EntitySize
	if x.entity <= 0 || x.entity > fpdu.MaxFPDULen {
		x.entity = DefaultEntitySize
	}
	if x.entity < fpdu.HeaderLen+1 {
		return fmt.Errorf("entity size %d is too small", x.entity)
	}
	x.limit = int64(x.s.syncKB) * 1024
	x.window = uint32(x.s.syncWindow)
	x.artLen = req.ArticleLength
	if x.artLen < 0 || x.artLen > maxArticleLength {
		return fmt.Errorf("article length %d out of range 1..%d", x.artLen, maxArticleLength)
	}
	if x.artLen == 0 {
		x.autoLen = true
		x.artLen = DefaultArticleLength
		room := x.entity - fpdu.HeaderLen
		if req.Format == FormatVariable && req.DataCode.text() {
			room -= 6 // [empty, line, empty] fits one DTF
		}
		if !req.Segment && x.artLen > room {
			x.artLen = max(room, 1)
		}
		if x.limit > 0 && int64(x.artLen) > x.limit {
			x.artLen = int(x.limit)
		}
	}
	if x.limit > 0 && int64(x.artLen) > x.limit {
		return fmt.Errorf("article length %d exceeds the sync interval of %d bytes (sync points go between articles)",
			x.artLen, x.limit)
	}
	if !req.Segment && x.artLen+fpdu.HeaderLen > x.entity {
		return fmt.Errorf("article length %d does not fit the entity size %d without segmentation", x.artLen, x.entity)
	}
	if req.MultiArticle > 255 {
		req.MultiArticle = 255
	}
	return nil
}

// create sends CREATE and waits for ACK(CREATE).
func (x *sender) create(restart bool) (*fpdu.FPDU, error) {
	req, s := x.req, x.s
	var id fpdu.Params
	id.AddUint(fpdu.PIFileType, uint64(req.FileType))
	id.AddString(fpdu.PIFileName, req.VirtualFile)
	var logical fpdu.Params
	logical.Add(fpdu.PIArticleFormat, []byte{req.Format.wire()})
	logical.AddUint(fpdu.PIArticleLength, uint64(x.artLen))
	var physical fpdu.Params
	physical.AddUint(fpdu.PISpaceUnit, 0)
	physical.AddUint(fpdu.PISpaceMax, uint64((x.total+1023)/1024))
	var hist fpdu.Params
	mtime := time.Unix(0, x.st.ModTime)
	if x.st.ModTime == 0 {
		mtime = time.Now()
	}
	hist.AddDate(fpdu.PICreated, mtime)

	var p fpdu.Params
	p.AddGroup(fpdu.PGIFileID, id)
	p.AddUint(fpdu.PITransferID, uint64(x.st.TransferID))
	if restart {
		p.AddUint(fpdu.PIRestart, 1)
	}
	p.AddUint(fpdu.PIDataCode, req.DataCode.wire())
	p.AddUint(fpdu.PIPriority, uint64(req.Priority))
	p.AddUint(fpdu.PIEntitySize, uint64(x.entity))
	p.AddGroup(fpdu.PGILogical, logical)
	p.AddGroup(fpdu.PGIPhysical, physical)
	p.AddGroup(fpdu.PGIHistorical, hist)
	if err := s.write(&fpdu.FPDU{Kind: fpdu.Create, DstID: s.peer, Params: p}); err != nil {
		return nil, err
	}
	return s.expectOK(fpdu.AckCreate)
}

// openFile sends ORF (no compression) and waits for ACK(ORF).
func (s *Session) openFile() error {
	var p fpdu.Params
	p.Add(fpdu.PICompression, []byte{0, 0})
	if err := s.write(&fpdu.FPDU{Kind: fpdu.ORF, DstID: s.peer, Params: p}); err != nil {
		return err
	}
	f, err := s.expectOK(fpdu.AckORF)
	if err != nil {
		return err
	}
	if b, ok := f.Params.Bytes(fpdu.PICompression); ok && len(b) > 0 && b[0] != 0 {
		return s.protocolError(fpdu.DiagCompressionRefused, "server imposed compression we did not propose")
	}
	return nil
}

// closeFile sends CRF and DESELECT (which cannot be refused) after a
// transfer, whatever its outcome; cause, when not nil, is the error that
// ended the transfer and is returned in preference to a later one.
func (x *sender) closeFile(cause error) error {
	return x.s.closeFile(cause)
}

// endFile sends DESELECT after a CREATE or SELECT that succeeded but whose
// transfer will not happen.
func (x *sender) endFile(cause error) error {
	return x.s.deselect(cause)
}

func (s *Session) closeFile(cause error) error {
	if s.broken {
		return cause
	}
	var p fpdu.Params
	p.AddDiagnostic(fpdu.DiagOK)
	err := s.write(&fpdu.FPDU{Kind: fpdu.CRF, DstID: s.peer, Params: p})
	for err == nil {
		// After an interruption the server may still have ACK(SYN)s or data
		// in flight that it sent before it saw our ACK(IDT) or IDT.
		var f *fpdu.FPDU
		f, err = s.next()
		if err != nil || f.Kind == fpdu.AckCRF {
			break
		}
		if f.Kind != fpdu.AckSyn && f.Kind != fpdu.Syn && f.Kind != fpdu.DTFEnd && !f.Kind.IsData() {
			err = s.protocolError(fpdu.DiagProtocolError, "expected ACK(CRF), got %s", f.Kind)
		}
	}
	if err != nil {
		if cause != nil {
			return cause
		}
		return err
	}
	return s.deselect(cause)
}

func (s *Session) deselect(cause error) error {
	if s.broken {
		return cause
	}
	var p fpdu.Params
	p.AddDiagnostic(fpdu.DiagOK)
	err := s.write(&fpdu.FPDU{Kind: fpdu.Deselect, DstID: s.peer, Params: p})
	if err == nil {
		_, err = s.expect(fpdu.AckDeselect)
	}
	if cause != nil {
		return cause
	}
	return err
}

// data sends the file from the current offset, with sync points, then
// DTF.END and TRANS.END, and checks ACK(TRANS.END).
func (x *sender) data(ctx context.Context, src *os.File) (err error) {
	s := x.s
	x.text = x.req.Format == FormatVariable && x.req.DataCode.text()
	if x.text && x.req.DataCode == DataEBCDIC {
		// Lines are split on the local "\n" first, then translated.
		x.ebcdic = codepage.NewEBCDIC037()
	}
	source := func() func() ([]byte, int, error) {
		if x.text {
			return newLineSource(src, x.artLen).next
		}
		return newFixedSource(src, x.artLen, &s.dataBuf).next
	}
	next := source()
	// resynced resumes from the point a RESYN asked for (see resync).
	resynced := func(err error) error {
		var rq *resynRequest
		if !errors.As(err, &rq) {
			return err
		}
		if err := x.resync(rq.point); err != nil {
			return err
		}
		if _, err := src.Seek(x.fileOff, io.SeekStart); err != nil {
			return x.interrupt(ctx, 4, fpdu.DiagIOError, &LocalError{Op: "seek", Path: x.req.Source, Err: err})
		}
		next = source()
		return nil
	}
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
	// points, interrupt or abort; a goroutine reads it so that the write
	// loop never blocks on a read it does not need.
	_ = s.conn.SetReadDeadline(time.Time{})
	x.armWrite(time.Now())
	s.graceful.Store(true)
	defer s.graceful.Store(false)
	x.events = make(chan sendEvent, 8)
	x.done = make(chan struct{})
	go x.readLoop()
	defer func() {
		if x.done != nil {
			// Still running: the connection is unusable anyway.
			s.broken = true
			_ = s.conn.Close()
			<-x.done
		}
	}()

	var ev sendEvent
again:
	for {
		for {
			if s.canceled.Load() {
				return x.cancel(ctx)
			}
			art, raw, rerr := next()
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				return x.interrupt(ctx, 4, fpdu.DiagIOError, &LocalError{Op: "read", Path: x.req.Source, Err: rerr})
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
					if err := resynced(err); err != nil {
						return err
					}
					continue
				}
			}
			add := s.pack.Add
			if x.text {
				add = s.pack.AddLine
			}
			if err := add(art); err != nil {
				return x.loneEmpty(ctx, err)
			}
			x.since += int64(len(art))
			x.bytes += int64(len(art))
			x.articles++
			x.fileOff += int64(raw)
			if err := x.poll(); err != nil {
				if err := resynced(err); err != nil {
					return err
				}
				continue
			}
			if x.articles&15 == 0 {
				now := time.Now()
				if now.Sub(x.lastArm) > s.tp/8 {
					x.armWrite(now)
				}
				x.progress(false)
			}
		}
		if err := x.s.pack.Flush(); err != nil {
			return x.loneEmpty(ctx, err)
		}

		// DTF.END, TRANS.END.
		var p fpdu.Params
		p.AddDiagnostic(fpdu.DiagOK)
		if err := x.queue(&fpdu.FPDU{Kind: fpdu.DTFEnd, DstID: s.peer, Params: p}); err != nil {
			return err
		}
		var q fpdu.Params
		q.AddUint(fpdu.PIByteCount, uint64(x.bytes))
		q.AddUint(fpdu.PIArticleCount, uint64(x.articles))
		if err := s.w.Flush(); err != nil {
			return s.ioError("send DTF.END", err)
		}
		if err := s.write(&fpdu.FPDU{Kind: fpdu.TransEnd, DstID: s.peer, Params: q}); err != nil {
			return err
		}
		ev, err = x.waitTerminal()
		if err != nil {
			return err
		}
		switch ev.kind {
		case fpdu.AckTransEnd:
			// Success or a final refusal completes the exchange: nothing is
			// left to resume. A temporary failure (the server could not
			// record the end, issue 16) keeps the state, so that the retry
			// restarts this transfer under its PI 13: the server resumes
			// it, or recognises it as done if it published the file. A
			// fresh start could deliver the file twice.
			if ev.diag.OK() || !retryableDiag(ev.diag) {
				x.sf.remove()
				x.sf = nil
			}
			break again
		case fpdu.Resyn:
			// RESYN wins over TRANS.END (digest §4.5): resend from its point.
			if !s.resync {
				return s.protocolError(fpdu.DiagProtocolError, "RESYN without negotiated resynchronisation")
			}
			if err := resynced(&resynRequest{point: uint32(min(ev.point, 0xFFFFFF))}); err != nil {
				return err
			}
			continue again
		case fpdu.IDT:
			return x.s.closeFile(x.ackIDT(ev))
		default:
			return s.protocolError(fpdu.DiagProtocolError, "expected ACK(TRANS.END), got %s", ev.kind)
		}
	}
	if !ev.diag.OK() {
		return x.closeFile(&TransferError{Op: fpdu.AckTransEnd, Diagnostic: ev.diag})
	}
	if err := s.checkPeerCounts(&x.anoms, uint64(ev.bytes), uint64(ev.articles), ev.okBytes, ev.okArticles,
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

// readLoop reads the server's FPDUs during the data phase until a terminal
// one (anything but ACK(SYN)) or an error.
func (x *sender) readLoop() {
	defer close(x.done)
	for {
		f, err := x.s.r.Next()
		var ev sendEvent
		if err != nil {
			ev.err = err
		} else {
			ev.kind = f.Kind
			ev.n, _ = f.Params.Uint(fpdu.PISyncNumber)
			ev.point, _ = f.Params.Uint(fpdu.PIRestartPoint)
			if d, ok := f.Params.Diagnostic(); ok {
				ev.diag = d
			}
			if c, ok := f.Params.Uint(fpdu.PIEndCode); ok {
				ev.endCode = uint8(c)
			}
			b, okb := f.Params.Uint(fpdu.PIByteCount)
			a, oka := f.Params.Uint(fpdu.PIArticleCount)
			ev.bytes, ev.articles, ev.okBytes, ev.okArticles = int64(b), int64(a), okb, oka
		}
		x.events <- ev
		if ev.terminal() {
			return
		}
	}
}

// handle applies a non-terminal event, or records a terminal one and turns it
// into the error that ends the data loop.
func (x *sender) handle(ev sendEvent) error {
	if !ev.terminal() {
		n := uint32(ev.n)
		if n > x.syncSent {
			return x.s.protocolError(fpdu.DiagProtocolError, "ACK(SYN) %d for a sync point not sent (last %d)", n, x.syncSent)
		}
		if n > x.acked {
			x.acked = n
			x.st.Acked = n
		}
		return nil
	}
	x.term, x.hasTerm = ev, true
	<-x.done
	x.done = nil
	if ev.err == nil && ev.kind == fpdu.Resyn && x.s.resync {
		x.hasTerm = false
		return &resynRequest{point: uint32(min(ev.point, 0xFFFFFF))}
	}
	return x.terminalError(ev)
}

// resynRequest is a RESYN from the server (receiver-initiated
// resynchronisation, digest §4.5), negotiated with PI 23 = 1.
type resynRequest struct{ point uint32 }

func (r *resynRequest) Error() string { return fmt.Sprintf("RESYN to sync point %d", r.point) }

// maxResyncs bounds the RESYNs of one transfer (then 3/320).
const maxResyncs = 16

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
	if !ok || p > x.syncSent {
		p, pt = 0, syncPoint{}
	}
	s.pack.Discard()
	if err := s.w.Flush(); err != nil {
		return s.ioError("send data", err)
	}
	var q fpdu.Params
	q.AddUint(fpdu.PIRestartPoint, uint64(p))
	if err := s.write(&fpdu.FPDU{Kind: fpdu.AckResyn, DstID: s.peer, Params: q}); err != nil {
		return err
	}
	s.log.Info("pesit resynchronised", "point", p, "offset", pt.Offset)
	x.syncSent, x.acked = p, min(x.acked, p)
	x.fileOff, x.articles, x.bytes, x.since = pt.Offset, pt.Articles, pt.Bytes, 0
	x.st.Points = slices.DeleteFunc(x.st.Points, func(sp syncPoint) bool { return sp.N > p })
	// The reader stopped at the RESYN (a terminal event): start it again,
	// with no read deadline, as at the start of the data phase.
	_ = s.conn.SetReadDeadline(time.Time{})
	x.armWrite(time.Now())
	x.events = make(chan sendEvent, 8)
	x.done = make(chan struct{})
	go x.readLoop()
	return nil
}

func (x *sender) terminalError(ev sendEvent) error {
	s := x.s
	switch {
	case ev.err != nil:
		return s.readError(ev.err)
	case ev.kind == fpdu.Abort:
		s.broken = true
		_ = s.conn.Close()
		return &AbortError{Diagnostic: ev.diag}
	case ev.kind == fpdu.IDT:
		return x.s.closeFile(x.ackIDT(ev))
	}
	return s.protocolError(fpdu.DiagProtocolError, "unexpected %s during data transfer", ev.kind)
}

func (x *sender) ackIDT(ev sendEvent) error {
	te := &TransferError{Op: fpdu.IDT, Diagnostic: ev.diag, EndCode: ev.endCode}
	if err := x.s.write(&fpdu.FPDU{Kind: fpdu.AckIDT, DstID: x.s.peer}); err != nil {
		return errors.Join(te, err)
	}
	return te
}

// poll applies the events that are already there, without blocking.
func (x *sender) poll() error {
	for {
		select {
		case ev := <-x.events:
			if err := x.handle(ev); err != nil {
				return err
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

// waitTerminal waits for the terminal event, applying ACK(SYN)s on the way.
func (x *sender) waitTerminal() (sendEvent, error) {
	if x.hasTerm {
		return x.term, nil
	}
	for {
		ev, err := x.waitEvent(context.Background(), "wait for ACK(TRANS.END)")
		if err != nil {
			return ev, err
		}
		if !ev.terminal() {
			if err := x.handle(ev); err != nil {
				return ev, err
			}
			continue
		}
		<-x.done
		x.done = nil
		if ev.err != nil {
			return ev, x.terminalError(ev)
		}
		if ev.kind == fpdu.Abort {
			return ev, x.terminalError(ev)
		}
		return ev, nil
	}
}

// sync sends the next SYN, records the sync point and honours the window.
func (x *sender) sync(ctx context.Context) error {
	if err := x.s.pack.Flush(); err != nil {
		return err
	}
	s := x.s
	x.syncSent++
	var p fpdu.Params
	p.AddUint(fpdu.PISyncNumber, uint64(x.syncSent))
	if err := x.queue(&fpdu.FPDU{Kind: fpdu.Syn, DstID: s.peer, Params: p}); err != nil {
		return err
	}
	if err := s.w.Flush(); err != nil {
		return s.ioError("send SYN", err)
	}
	x.since = 0
	// The server restarts from a point at or after its last acknowledged
	// one, which is at or after ours: older points are of no use.
	if i := slices.IndexFunc(x.st.Points, func(p syncPoint) bool { return p.N >= x.acked }); i > 0 {
		x.st.Points = append(x.st.Points[:0], x.st.Points[i:]...)
	}
	x.st.addPoint(syncPoint{N: x.syncSent, Offset: x.fileOff, Articles: x.articles, Bytes: x.bytes})
	if err := x.sf.save(x.st); err != nil {
		s.log.Warn("cannot save restart state", "err", err)
	}
	x.progress(false)
	for x.window > 0 && x.syncSent-x.acked >= x.window {
		ev, err := x.waitEvent(ctx, "wait for ACK(SYN)")
		if errors.Is(err, errCancelled) {
			return x.cancel(ctx)
		}
		if err != nil {
			return err
		}
		if err := x.handle(ev); err != nil {
			return err
		}
	}
	x.armWrite(time.Now())
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

// dtf sends one DTF of the Packer: a multi-article payload (n > 1), or one
// article alone, segmented (DTFDA, DTFMA*, DTFFA) when it exceeds the entity
// size.
func (x *sender) dtf(data []byte, n int) error {
	s := x.s
	if n > 1 {
		s.out = fpdu.FPDU{Kind: fpdu.DTF, DstID: s.peer, SrcID: byte(n), Data: data}
		return x.queue(&s.out)
	}
	return x.single(data)
}

func (x *sender) single(art []byte) error {
	s := x.s
	room := x.entity - fpdu.HeaderLen
	if len(art) <= room {
		s.out = fpdu.FPDU{Kind: fpdu.DTF, DstID: s.peer, Data: art}
		return x.queue(&s.out)
	}
	// Segmented: DTFDA, DTFMA*, DTFFA, each filling the entity size.
	kind := fpdu.DTFDA
	for len(art) > 0 {
		n := min(room, len(art))
		if n == len(art) {
			kind = fpdu.DTFFA
		}
		s.out = fpdu.FPDU{Kind: kind, DstID: s.peer, Data: art[:n]}
		if err := x.queue(&s.out); err != nil {
			return err
		}
		art = art[n:]
		kind = fpdu.DTFMA
	}
	return nil
}

func (x *sender) queue(f *fpdu.FPDU) error {
	if err := x.s.w.Queue(f); err != nil {
		return x.s.ioError("send "+f.Kind.String(), err)
	}
	return nil
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
func (x *sender) interrupt(ctx context.Context, code uint8, d fpdu.Diagnostic, cause error) error {
	s := x.s
	if s.broken {
		return cause
	}
	if x.done == nil {
		// Before the data phase: no reader goroutine yet.
		var p fpdu.Params
		p.AddDiagnostic(d)
		p.AddUint(fpdu.PIEndCode, uint64(code))
		if err := s.write(&fpdu.FPDU{Kind: fpdu.IDT, DstID: s.peer, Params: p}); err != nil {
			return cause
		}
		for {
			f, err := s.next()
			if err != nil {
				return cause
			}
			if f.Kind == fpdu.AckIDT {
				return s.closeFile(cause)
			}
		}
	}
	_ = x.s.pack.Flush()
	var p fpdu.Params
	p.AddDiagnostic(d)
	p.AddUint(fpdu.PIEndCode, uint64(code))
	if err := s.w.Flush(); err != nil {
		return cause
	}
	if err := s.write(&fpdu.FPDU{Kind: fpdu.IDT, DstID: s.peer, Params: p}); err != nil {
		return cause
	}
	ev, err := x.waitTerminal()
	if err != nil {
		return cause
	}
	if ev.kind != fpdu.AckIDT {
		// Collision with the server's own IDT: the requester's wins, but
		// acknowledge politely if it asks.
		if ev.kind == fpdu.IDT {
			_ = s.write(&fpdu.FPDU{Kind: fpdu.AckIDT, DstID: s.peer})
		}
		_ = s.Abort(fpdu.DiagProtocolError)
		return cause
	}
	return s.closeFile(cause)
}

func (x *sender) progress(final bool) {
	if x.req.Progress == nil {
		return
	}
	now := time.Now()
	if !final && now.Sub(x.lastProgress) < 100*time.Millisecond {
		return
	}
	x.lastProgress = now
	x.req.Progress(Progress{Bytes: x.fileOff, Total: x.total})
}

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
