package client

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// rawServer is a minimal PeSIT responder written against the codec only, to
// exercise the client before (and independently of) pesit/server. It serves
// files from dir: a push to VFILE lands in dir/VFILE, a pull of VFILE reads
// dir/VFILE. Names ending in ".txt" are variable-format ASCII text, ".ebc"
// EBCDIC text (stored as received: EBCDIC lines, each ended by "\n").
type rawServer struct {
	t        testing.TB
	ln       net.Listener
	dir      string
	password string
	syncKB   uint16
	window   uint8
	entity   int
	// resynAt, when set, makes a push receive answer PI 23 = 1 and, at sync
	// point resynAt, send RESYN{1/100, PI 18 = resynAt-1} instead of
	// ACK(SYN): the client must resume from that point.
	resynAt uint32
	resyns  atomic.Int32
	// resynAtEnd answers the first TRANS.END of a push with RESYN{PI 18 =
	// the last sync point} (RESYN wins over TRANS.END, digest §4.5).
	resynAtEnd bool

	// Third-party behaviours met in interop tests (issue 14):
	// sessionCounts: ACK(TRANS.END) PI 27/28 count only the data of this
	// session after a restart. articleSkew is added to PI 28 there (a
	// server counting DTFs or segments). renumber: after READ PI 18 = p
	// the SYNs start again from 1, while a restart point still names the
	// offset of the first numbering. zeroSelectID: ACK(SELECT) PI 13 = 0.
	sessionCounts bool
	articleSkew   int64
	renumber      bool
	zeroSelectID  bool
	// pullResynAt, when set, makes a pull send RESYN{PI 18 = n-1} right
	// after SYN n, once, and resume from the point ACK(RESYN) names.
	pullResynAt uint32
	// ackEachSyn: a pull waits for the ACK(SYN) of each point before
	// sending more, whatever the window (a sender need not use it all).
	ackEachSyn bool
	// refuseRestarts: the first n READs with PI 18 > 0 get 2/214.
	refuseRestarts atomic.Int32
	lastSelectID   atomic.Uint32 // PI 13 of the last SELECT
	// refuseRestartCreate, when set, answers every CREATE with PI 15 = 1;
	// freshCreates counts the CREATEs without it.
	refuseRestartCreate atomic.Uint32 // an fpdu.Diagnostic
	freshCreates        atomic.Int32
	// failTransEnd: the next n pushes get ACK(TRANS.END) 2/215 and stay
	// restartable, as a server whose journal could not record the end.
	failTransEnd atomic.Int32
	// Protocol violations the requester's machine must refuse:
	// grantResync answers PI 23 = 1 to a CONNECT that did not propose
	// it; ackSynTwice acknowledges sync point 1 twice.
	grantResync bool
	ackSynTwice bool
	// aborted is the diagnostic of the last ABORT received.
	aborted atomic.Uint32

	mu       sync.Mutex
	restarts map[uint32]*rawRestart // by PI 13
	nextID   uint32
	wg       sync.WaitGroup
	conns    map[net.Conn]bool
}

type rawRestart struct {
	points map[uint32][3]int64 // sync -> offset, articles, bytes
	last   uint32
}

func newRawServer(t testing.TB, syncKB uint16, window uint8) *rawServer {
	return newRawServerTLS(t, syncKB, window, nil)
}

// newRawServerTLS is newRawServer behind TLS when tc is not nil.
func newRawServerTLS(t testing.TB, syncKB uint16, window uint8, tc *tls.Config) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if tc != nil {
		ln = tls.NewListener(ln, tc)
	}
	s := &rawServer{t: t, ln: ln, dir: t.TempDir(), password: "secret", syncKB: syncKB, window: window,
		entity: 65535, restarts: map[uint32]*rawRestart{}, nextID: 100, conns: map[net.Conn]bool{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = true
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() { s.mu.Lock(); delete(s.conns, c); s.mu.Unlock(); c.Close() }()
				if err := s.serve(c); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
					t.Logf("raw server: %v", err)
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *rawServer) addr() string { return s.ln.Addr().String() }

// drain reads until the client's ABORT or the end of the connection.
func (rc *rawConn) drain() error {
	for {
		f, err := rc.r.Next()
		if err != nil {
			return err
		}
		if f.Kind == fpdu.Abort {
			rc.s.noteAbort(f)
			return io.EOF
		}
	}
}

// noteAbort records the diagnostic of an ABORT.
func (s *rawServer) noteAbort(f *fpdu.FPDU) {
	if f.Kind == fpdu.Abort {
		d, _ := f.Params.Diagnostic()
		s.aborted.Store(uint32(d))
	}
}

type rawConn struct {
	s      *rawServer
	r      *fpdu.Reader
	w      *fpdu.Writer
	peer   byte
	syncKB uint16
	window uint8
	// current file
	name   string
	id     uint32
	text   bool
	create bool
	p      uint32
}

func (s *rawServer) serve(c net.Conn) error {
	rc := &rawConn{s: s, r: fpdu.NewReader(c), w: fpdu.NewWriter(c)}
	f, err := rc.r.Next()
	if err != nil {
		return err
	}
	if f.Kind != fpdu.Connect {
		return errors.New("expected CONNECT")
	}
	rc.peer = f.SrcID
	pw, _ := f.Params.String(fpdu.PIAccessControl)
	if pw != s.password {
		var p fpdu.Params
		p.AddDiagnostic(fpdu.DiagNotAuthorised)
		return rc.w.Write(&fpdu.FPDU{Kind: fpdu.RConnect, DstID: rc.peer, Params: p})
	}
	iv, win, ok := f.Params.SyncOption()
	if ok && iv > 0 && s.syncKB > 0 {
		rc.syncKB, rc.window = min(iv, s.syncKB), min(win, s.window)
	}
	var p fpdu.Params
	p.AddUint(fpdu.PIVersion, 2)
	p.AddSyncOption(rc.syncKB, rc.window)
	if v, _ := f.Params.Uint(fpdu.PIResync); v == 1 && (s.resynAt > 0 || s.pullResynAt > 0 || s.resynAtEnd) || s.grantResync {
		p.AddUint(fpdu.PIResync, 1)
	}
	if err := rc.w.Write(&fpdu.FPDU{Kind: fpdu.AConnect, DstID: rc.peer, SrcID: 0x61, Params: p}); err != nil {
		return err
	}
	for {
		f, err := rc.r.Next()
		if err != nil {
			return err
		}
		switch f.Kind {
		case fpdu.Release:
			return rc.w.Write(&fpdu.FPDU{Kind: fpdu.RelConf, DstID: rc.peer, SrcID: 0x61})
		case fpdu.Create, fpdu.Select:
			if err := rc.open(f); err != nil {
				return err
			}
		case fpdu.ORF:
			if err := rc.ack(fpdu.AckORF, fpdu.DiagOK); err != nil {
				return err
			}
		case fpdu.Write:
			if err := rc.receive(); err != nil {
				return err
			}
		case fpdu.Read:
			pt, _ := f.Params.Uint(fpdu.PIRestartPoint)
			if err := rc.send(uint32(pt)); err != nil {
				return err
			}
		case fpdu.CRF:
			if err := rc.ack(fpdu.AckCRF, fpdu.DiagOK); err != nil {
				return err
			}
		case fpdu.Deselect:
			if err := rc.ack(fpdu.AckDeselect, fpdu.DiagOK); err != nil {
				return err
			}
		case fpdu.Msg, fpdu.MsgFM:
			txt, _ := f.Params.String(fpdu.PIMessage)
			_ = txt
			if err := rc.ack(fpdu.AckMsg, fpdu.DiagOK); err != nil {
				return err
			}
		case fpdu.MsgDM, fpdu.MsgMM:
		default:
			s.noteAbort(f)
			return errors.New("unexpected " + f.Kind.String())
		}
	}
}

func (rc *rawConn) ack(k fpdu.Kind, d fpdu.Diagnostic, extra ...fpdu.Param) error {
	var p fpdu.Params
	p.AddDiagnostic(d)
	p = append(p, extra...)
	return rc.w.Write(&fpdu.FPDU{Kind: k, DstID: rc.peer, Params: p})
}

func (rc *rawConn) open(f *fpdu.FPDU) error {
	s := rc.s
	rc.name, _ = f.Params.String(fpdu.PIFileName)
	rc.create = f.Kind == fpdu.Create
	rc.text = strings.HasSuffix(rc.name, ".txt") || strings.HasSuffix(rc.name, ".ebc")
	id, _ := f.Params.Uint(fpdu.PITransferID)
	if !rc.create {
		s.lastSelectID.Store(uint32(id))
	}
	restart, _ := f.Params.Uint(fpdu.PIRestart)
	if d := fpdu.Diagnostic(s.refuseRestartCreate.Load()); rc.create && restart == 1 && d != 0 {
		return rc.ack(fpdu.AckCreate, d)
	}
	if rc.create && restart != 1 {
		s.freshCreates.Add(1)
	}
	rc.id = uint32(id)
	s.mu.Lock()
	rs := s.restarts[rc.id]
	if restart != 1 || rs == nil {
		if !rc.create {
			s.nextID++
			rc.id = s.nextID
		}
		rs = &rawRestart{points: map[uint32][3]int64{}}
		s.restarts[rc.id] = rs
	}
	rc.p = rs.last
	s.mu.Unlock()
	if rc.create {
		var e fpdu.Params
		e.AddUint(fpdu.PIEntitySize, uint64(s.entity))
		return rc.ack(fpdu.AckCreate, fpdu.DiagOK, e...)
	}
	fi, err := os.Stat(filepath.Join(s.dir, rc.name))
	if err != nil {
		return rc.ack(fpdu.AckSelect, fpdu.DiagFileNotFound)
	}
	var q fpdu.Params
	var g fpdu.Params
	g.AddUint(fpdu.PIFileType, 0)
	g.AddString(fpdu.PIFileName, rc.name)
	q.AddGroup(fpdu.PGIFileID, g)
	if s.zeroSelectID {
		q.AddUint(fpdu.PITransferID, 0)
	} else {
		q.AddUint(fpdu.PITransferID, uint64(rc.id))
	}
	var l fpdu.Params
	if rc.text {
		code := uint64(0)
		if strings.HasSuffix(rc.name, ".ebc") {
			code = 1
		}
		q.AddUint(fpdu.PIDataCode, code)
		l.Add(fpdu.PIArticleFormat, []byte{0x80})
	} else {
		q.AddUint(fpdu.PIDataCode, 2)
		l.Add(fpdu.PIArticleFormat, []byte{0x00})
	}
	l.AddUint(fpdu.PIArticleLength, 4096)
	q.AddUint(fpdu.PIEntitySize, uint64(s.entity))
	q.AddGroup(fpdu.PGILogical, l)
	var ph fpdu.Params
	ph.AddUint(fpdu.PISpaceMax, uint64(fi.Size()/1024+1))
	q.AddGroup(fpdu.PGIPhysical, ph)
	return rc.ack(fpdu.AckSelect, fpdu.DiagOK, q...)
}

// receive handles a push after WRITE.
func (rc *rawConn) receive() error {
	s := rc.s
	path := filepath.Join(s.dir, rc.name)
	s.mu.Lock()
	rs := s.restarts[rc.id]
	pt := rs.points[rc.p]
	s.mu.Unlock()
	out, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	if err := out.Truncate(pt[0]); err != nil {
		return err
	}
	if _, err := out.Seek(pt[0], 0); err != nil {
		return err
	}
	off, arts, bytes := pt[0], pt[1], pt[2]
	arts0, bytes0 := arts, bytes
	var q fpdu.Params
	q.AddUint(fpdu.PIRestartPoint, uint64(rc.p))
	if err := rc.ack(fpdu.AckWrite, fpdu.DiagOK, q...); err != nil {
		return err
	}
	bw := bufio.NewWriterSize(out, 256<<10)
	put := func(a []byte) error {
		bw.Write(a)
		off += int64(len(a))
		if rc.text {
			bw.WriteByte('\n')
			off++
		}
		arts++
		bytes += int64(len(a))
		return nil
	}
	// resynTo sends RESYN{1/100, PI 18 = back}, drops what follows the
	// point and ignores the client until ACK(RESYN).
	resynTo := func(back uint32) error {
		var p fpdu.Params
		p.AddDiagnostic(fpdu.DiagTransmissionError)
		p.AddUint(fpdu.PIRestartPoint, uint64(back))
		if err := rc.w.Write(&fpdu.FPDU{Kind: fpdu.Resyn, DstID: rc.peer, Params: p}); err != nil {
			return err
		}
		for {
			g, err := rc.r.Next()
			if err != nil {
				return err
			}
			if g.Kind == fpdu.AckResyn {
				if v, _ := g.Params.Uint(fpdu.PIRestartPoint); uint32(v) != back {
					return fmt.Errorf("ACK(RESYN) %d, asked %d", v, back)
				}
				break
			}
		}
		s.mu.Lock()
		bp := rs.points[back]
		s.mu.Unlock()
		off, arts, bytes = bp[0], bp[1], bp[2]
		if err := out.Truncate(off); err != nil {
			return err
		}
		if _, err := out.Seek(off, 0); err != nil {
			return err
		}
		bw.Reset(out)
		return nil
	}
	for {
		f, err := rc.r.Next()
		if err != nil {
			return err
		}
		switch f.Kind {
		case fpdu.DTF:
			if f.SrcID == 1 {
				// Never sent (digest §7): empty lines go in N >= 2 DTFs.
				rc.s.t.Errorf("the client sent a DTF with byte 5 = 1")
			}
			if err := f.ForEachArticle(put); err != nil {
				return err
			}
		case fpdu.DTFDA, fpdu.DTFMA:
			bw.Write(f.Data)
			off += int64(len(f.Data))
			bytes += int64(len(f.Data))
		case fpdu.DTFFA:
			bw.Write(f.Data)
			off += int64(len(f.Data))
			bytes += int64(len(f.Data))
			arts++
			if rc.text {
				bw.WriteByte('\n')
				off++
			}
		case fpdu.Syn:
			n, _ := f.Params.Uint(fpdu.PISyncNumber)
			bw.Flush()
			out.Sync()
			s.mu.Lock()
			rs.points[uint32(n)] = [3]int64{off, arts, bytes}
			rs.last = uint32(n)
			s.mu.Unlock()
			if uint32(n) == s.resynAt && s.resyns.CompareAndSwap(0, 1) {
				// Ask to resume from the previous point.
				if err := resynTo(uint32(n) - 1); err != nil {
					return err
				}
				continue
			}
			if rc.window > 0 {
				var p fpdu.Params
				p.AddUint(fpdu.PISyncNumber, n)
				if err := rc.w.Write(&fpdu.FPDU{Kind: fpdu.AckSyn, DstID: rc.peer, Params: p}); err != nil {
					return err
				}
				if s.ackSynTwice && n == 1 {
					if err := rc.w.Write(&fpdu.FPDU{Kind: fpdu.AckSyn, DstID: rc.peer, Params: p}); err != nil {
						return err
					}
					return rc.drain() // write no more: the client's ABORT must not race a write
				}
			}
		case fpdu.DTFEnd:
			bw.Flush()
			out.Sync()
			t, err := rc.r.Next()
			if err != nil {
				return err
			}
			if t.Kind != fpdu.TransEnd {
				return errors.New("expected TRANS.END")
			}
			if s.resynAtEnd && rs.last > 0 && s.resyns.CompareAndSwap(0, 1) {
				// RESYN wins over TRANS.END: the client sends again.
				if err := resynTo(rs.last); err != nil {
					return err
				}
				continue
			}
			var q fpdu.Params
			rb, ra := bytes, arts
			if s.sessionCounts {
				rb, ra = bytes-bytes0, arts-arts0
			}
			q.AddUint(fpdu.PIByteCount, uint64(rb))
			q.AddUint(fpdu.PIArticleCount, uint64(ra+s.articleSkew))
			if s.failTransEnd.Add(-1) >= 0 {
				return rc.ack(fpdu.AckTransEnd, fpdu.DiagSystemError, q...)
			}
			s.mu.Lock()
			delete(s.restarts, rc.id)
			s.mu.Unlock()
			return rc.ack(fpdu.AckTransEnd, fpdu.DiagOK, q...)
		default:
			s.noteAbort(f)
			return errors.New("unexpected in receive: " + f.Kind.String())
		}
	}
}

// send handles a pull after READ{p}.
func (rc *rawConn) send(p uint32) error {
	s := rc.s
	s.mu.Lock()
	rs := s.restarts[rc.id]
	pt, ok := rs.points[p]
	s.mu.Unlock()
	if p > 0 && (!ok || s.refuseRestarts.Add(-1) >= 0) {
		return rc.ack(fpdu.AckRead, fpdu.DiagRestartPointRefused)
	}
	in, err := os.Open(filepath.Join(s.dir, rc.name))
	if err != nil {
		return err
	}
	defer in.Close()
	if _, err := in.Seek(pt[0], 0); err != nil {
		return err
	}
	if err := rc.ack(fpdu.AckRead, fpdu.DiagOK); err != nil {
		return err
	}
	off, arts, bytes := pt[0], pt[1], pt[2]
	arts0, bytes0 := arts, bytes
	sent, acked := p, p
	if s.renumber {
		sent, acked = 0, 0
	}
	var since int64
	limit := int64(rc.syncKB) * 1024
	br := bufio.NewReaderSize(in, 64<<10)
	buf := make([]byte, 4096)
	waitAck := func() error {
		f, err := rc.r.Next()
		if err != nil {
			return err
		}
		if f.Kind != fpdu.AckSyn {
			return errors.New("expected ACK(SYN), got " + f.Kind.String())
		}
		n, _ := f.Params.Uint(fpdu.PISyncNumber)
		acked = uint32(n)
		return nil
	}
	for {
		var art []byte
		var raw int
		if rc.text {
			line, err := br.ReadSlice('\n')
			if len(line) == 0 && err != nil {
				break
			}
			raw = len(line)
			art = line
			if line[len(line)-1] == '\n' {
				art = line[:len(line)-1]
			}
		} else {
			n, err := io.ReadFull(br, buf)
			if n == 0 && err != nil {
				break
			}
			art, raw = buf[:n], n
		}
		if limit > 0 && since > 0 && since+int64(len(art)) > limit {
			sent++
			var q fpdu.Params
			q.AddUint(fpdu.PISyncNumber, uint64(sent))
			if err := rc.w.Write(&fpdu.FPDU{Kind: fpdu.Syn, DstID: rc.peer, Params: q}); err != nil {
				return err
			}
			s.mu.Lock()
			if _, known := rs.points[sent]; !known || !s.renumber {
				rs.points[sent] = [3]int64{off, arts, bytes}
			}
			s.mu.Unlock()
			since = 0
			for rc.window > 0 && (sent-acked >= uint32(rc.window) || s.ackEachSyn && sent > acked) {
				if err := waitAck(); err != nil {
					return err
				}
			}
		}
		if len(art) == 0 {
			if err := rc.w.Queue(&fpdu.FPDU{Kind: fpdu.DTF, DstID: rc.peer, SrcID: 1, Data: []byte{0, 0}}); err != nil {
				return err
			}
		} else if err := rc.w.Queue(&fpdu.FPDU{Kind: fpdu.DTF, DstID: rc.peer, Data: art}); err != nil {
			return err
		}
		off += int64(raw)
		arts++
		bytes += int64(len(art))
		since += int64(len(art))
		// Data after the point is in flight, not durable: the client
		// must drop it.
		if s.pullResynAt > 0 && sent == s.pullResynAt && since >= 3*4096 && s.resyns.CompareAndSwap(0, 1) {
			var q fpdu.Params
			q.AddDiagnostic(fpdu.DiagTransmissionError)
			q.AddUint(fpdu.PIRestartPoint, uint64(sent-1))
			if err := rc.w.Write(&fpdu.FPDU{Kind: fpdu.Resyn, DstID: rc.peer, Params: q}); err != nil {
				return err
			}
			var back uint32
			for {
				g, err := rc.r.Next()
				if err != nil {
					return err
				}
				if g.Kind == fpdu.AckResyn {
					v, _ := g.Params.Uint(fpdu.PIRestartPoint)
					back = uint32(v)
					break
				}
				if g.Kind != fpdu.AckSyn {
					return errors.New("expected ACK(RESYN), got " + g.Kind.String())
				}
			}
			if back != 0 && back < sent-1 {
				return fmt.Errorf("ACK(RESYN) %d, asked at least %d", back, sent-1)
			}
			s.mu.Lock()
			bp := rs.points[back]
			s.mu.Unlock()
			off, arts, bytes = bp[0], bp[1], bp[2]
			sent, acked, since = back, back, 0
			if _, err := in.Seek(off, 0); err != nil {
				return err
			}
			br.Reset(in)
			continue
		}
	}
	var q fpdu.Params
	q.AddDiagnostic(fpdu.DiagOK)
	if err := rc.w.Write(&fpdu.FPDU{Kind: fpdu.DTFEnd, DstID: rc.peer, Params: q}); err != nil {
		return err
	}
	for {
		f, err := rc.r.Next()
		if err != nil {
			return err
		}
		if f.Kind == fpdu.AckSyn {
			continue
		}
		if f.Kind != fpdu.TransEnd {
			return errors.New("expected TRANS.END, got " + f.Kind.String())
		}
		b, _ := f.Params.Uint(fpdu.PIByteCount)
		a, _ := f.Params.Uint(fpdu.PIArticleCount)
		d := fpdu.DiagOK
		if int64(b) != bytes || int64(a) != arts {
			d = fpdu.DiagCountMismatch
		}
		rb, ra := bytes, arts
		if s.sessionCounts {
			rb, ra = bytes-bytes0, arts-arts0
		}
		var e fpdu.Params
		e.AddUint(fpdu.PIByteCount, uint64(rb))
		e.AddUint(fpdu.PIArticleCount, uint64(ra+s.articleSkew))
		return rc.ack(fpdu.AckTransEnd, d, e...)
	}
}
