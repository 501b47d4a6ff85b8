package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/vectis-ft/vectis/pesit/fpdu"
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
	src, abs, fi, err := openSource(req.Source)
	if err != nil {
		return res, err
	}
	defer src.Close()
	x := &sender{s: s, req: &req, position: position{total: fi.Size()}, meter: progressMeter{fn: req.Progress}}
	if err := x.plan(); err != nil {
		return res, err
	}
	key := &transferState{Version: stateVersion, Direction: "send", Addr: s.cfg.Addr, ServerID: s.cfg.ServerID,
		Partner: s.cfg.RequesterID, VirtualFile: req.VirtualFile, Local: abs, Size: fi.Size(),
		ModTime: fi.ModTime().UnixNano(), Options: x.options()}
	restart, err := x.loadState(key, &res)
	defer x.sf.close()
	if err != nil {
		return res, err
	}
	defer s.watch(ctx)()
	ack, restart, err := x.createFile(key, restart, &res)
	if err != nil {
		return res, err
	}
	if err := x.agreeEntity(ack); err != nil {
		return res, err
	}
	if err := x.openWrite(ctx, src, restart, &res); err != nil {
		return res, err
	}
	err = x.data(ctx, src)
	res.Anomalies, res.SyncPoints = x.anoms, s.m.Window().LastSent()
	if err != nil {
		return res, err
	}
	if err := x.s.closeFile(nil); err != nil {
		return res, err
	}
	x.sf.remove()
	x.sf = nil
	x.progress(true)
	res.FileBytes, res.DataBytes, res.Articles = x.fileOff, x.bytes, x.articles
	res.Duration = time.Since(start)
	return res, nil
}

// openSource opens the regular file path for reading.
func openSource(path string) (*os.File, string, os.FileInfo, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, "", nil, &LocalError{Op: "open", Path: path, Err: err}
	}
	src, err := os.Open(abs)
	if err != nil {
		return nil, "", nil, &LocalError{Op: "open", Path: path, Err: err}
	}
	fi, err := src.Stat()
	if err != nil {
		_ = src.Close()
		return nil, "", nil, &LocalError{Op: "stat", Path: path, Err: err}
	}
	if !fi.Mode().IsRegular() {
		_ = src.Close()
		return nil, "", nil, &LocalError{Op: "open", Path: path, Err: errors.New("not a regular file")}
	}
	return src, abs, fi, nil
}

// loadState finds the restart state of an interrupted push of the same
// file and sets x.st: that state (restart) or key with a transfer id.
func (x *sender) loadState(key *transferState, res *Result) (restart bool, err error) {
	s, req := x.s, x.req
	var prev *transferState
	if !req.NoRestart {
		sf, st, err := openState(statePath(req.StateDir, key), key)
		if err != nil {
			s.log.Warn("restart state unavailable; a failed transfer will start over", "err", err)
		} else {
			x.sf, prev = sf, st
		}
	}
	restart = prev != nil
	if restart && req.TransferID != 0 && prev.TransferID != req.TransferID {
		// The state is of another transfer: resuming it would change the
		// identity asked for, starting over could deliver its file twice.
		if !req.StartOver {
			res.TransferID = prev.TransferID
			return false, &RestartRefusedError{TransferID: prev.TransferID, Requested: req.TransferID}
		}
		s.log.Warn("restart state of another transfer abandoned; starting over (StartOver)",
			"abandoned", prev.TransferID, "transfer", req.TransferID)
		res.Abandoned = prev.TransferID
		restart = false
	}
	if restart {
		x.st = prev
	} else {
		x.st = key
		x.newTransferID()
	}
	res.TransferID = x.st.TransferID
	return restart, nil
}

// newTransferID gives x.st the requested PI 13, or draws one.
func (x *sender) newTransferID() {
	x.st.TransferID = x.req.TransferID
	if x.st.TransferID == 0 {
		x.st.TransferID = newTransferID()
	}
}

// createFile sends CREATE and waits for a positive ACK(CREATE). A refused
// restart starts over as a new transfer only with StartOver: the server
// may hold the file already (2/204), so sending it again under a new id is
// the caller's decision, never ours.
func (x *sender) createFile(key *transferState, restart bool, res *Result) (*fpdu.FPDU, bool, error) {
	s := x.s
	ack, err := x.create(restart)
	var te *TransferError
	if !restart || !errors.As(err, &te) || te.Op != fpdu.AckCreate {
		return ack, restart, err
	}
	if !x.req.StartOver {
		return nil, false, &RestartRefusedError{TransferID: x.st.TransferID, Diagnostic: te.Diagnostic, Text: te.Text}
	}
	s.log.Warn("restart refused by server; starting over as a new transfer (StartOver)",
		"abandoned", x.st.TransferID, "diag", te.Diagnostic.String())
	res.Abandoned = x.st.TransferID
	x.st = key
	x.newTransferID() // honoured, even when it is the abandoned one's
	res.TransferID = x.st.TransferID
	x.st.Points, x.st.Acked = nil, 0
	ack, err = x.create(false)
	return ack, false, err
}

// agreeEntity applies the server's PI 25 (never above our proposal) to the
// entity size and article length, and saves the restart state.
func (x *sender) agreeEntity(ack *fpdu.FPDU) error {
	s, req := x.s, x.req
	if e, ok := ack.Params.Uint(fpdu.PIEntitySize); ok && e > 0 && int(e) < x.entity {
		x.entity = int(e)
	}
	if x.entity < fpdu.HeaderLen+1 {
		return s.protocolError(fpdu.DiagBadParameter, "entity size %d too small", x.entity)
	}
	if x.autoLen && req.Format == FormatVariable {
		// Variable format: PI 32 is only a maximum, so shorter articles
		// that fit the server's entity size are fine. A text line leaves
		// room for an empty line on each side (fpdu.Packer).
		room := x.entity - fpdu.HeaderLen
		if req.DataCode.text() {
			room = x.entity - fpdu.TextSpare
		}
		if x.artLen > room {
			x.artLen = max(room, 1)
		}
	}
	if x.artLen+fpdu.HeaderLen > x.entity && !req.Segment {
		return s.deselect(&RefusedLocallyError{Op: fpdu.AckCreate, Diagnostic: fpdu.DiagInsufficientCharacteristics,
			Text: fmt.Sprintf("the server lowered the entity size to %d, below article length %d + 6: enable segmentation or lower the article length",
				x.entity, x.artLen)})
	}
	s.w.SetEntitySize(x.entity)
	if err := x.sf.save(x.st); err != nil {
		s.log.Warn("cannot save restart state", "err", err)
	}
	return nil
}

// openWrite sends ORF and WRITE, and positions src at the sync point the
// server restarts from (ACK(WRITE) PI 18).
func (x *sender) openWrite(ctx context.Context, src *os.File, restart bool, res *Result) error {
	s := x.s
	if err := s.openFile(); err != nil {
		return s.deselect(err)
	}
	if err := s.write(fpdu.NewWrite(s.peer)); err != nil {
		return err
	}
	aw, err := s.expectOK(fpdu.AckWrite)
	if err != nil {
		return s.closeFile(err)
	}
	p := fpdu.ReadPoint(aw) // the machine checked its range
	pt, ok := x.st.point(p)
	if !ok || (p > 0 && !restart) {
		// We cannot resume there: forget the state so that the next attempt
		// starts over, and interrupt this one.
		x.st.Points, x.st.Acked = nil, 0
		x.st.TransferID = 0
		x.sf.remove()
		x.sf = nil
		return x.interrupt(ctx, 16, fpdu.DiagRestartPointRefused,
			&RefusedLocallyError{Op: fpdu.AckWrite, Diagnostic: fpdu.DiagRestartPointRefused,
				Text: fmt.Sprintf("the server asked to restart from sync point %d, which we do not know; the next attempt starts over", p)})
	}
	res.Restarted, res.RestartPoint = restart, p
	x.fileOff, x.articles, x.bytes = pt.Offset, pt.Articles, pt.Bytes
	if _, err := src.Seek(pt.Offset, io.SeekStart); err != nil {
		return x.interrupt(ctx, 4, fpdu.DiagIOError, &LocalError{Op: "seek", Path: x.req.Source, Err: err})
	}
	s.log.Debug("pesit write", "transfer", x.st.TransferID, "restart_point", p, "offset", pt.Offset,
		"entity", x.entity, "article", x.artLen, "sync_bytes", x.limit, "window", x.window)
	x.start = pt
	return nil
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
	mtime := time.Unix(0, x.st.ModTime)
	if x.st.ModTime == 0 {
		mtime = time.Now()
	}
	if err := s.write(fpdu.NewCreate(s.peer, fpdu.CreateParams{
		FileType: req.FileType, FileName: req.VirtualFile, TransferID: x.st.TransferID, Restart: restart,
		DataCode: uint8(req.DataCode.wire()), Priority: req.Priority, EntitySize: x.entity,
		ArticleFormat: req.Format.wire(), ArticleLength: x.artLen,
		SpaceKB: (x.total + 1023) / 1024, Created: mtime,
	})); err != nil {
		return nil, err
	}
	return s.expectOK(fpdu.AckCreate)
}
