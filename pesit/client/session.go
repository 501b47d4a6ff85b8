package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/fsm"
)

// Session is one PeSIT connection in state CN03 (connected). It is not safe
// for concurrent use: transfers on one connection are sequential by protocol.
type Session struct {
	cfg    Config
	conn   net.Conn
	r      *fpdu.Reader
	w      *fpdu.Writer
	log    *slog.Logger
	id     byte // our connection id (X)
	peer   byte // the server's connection id (Y)
	tp     time.Duration
	broken bool // the connection is unusable: ABORT sent or received, transport error

	// Negotiated in ACONNECT.
	syncKB     uint16
	syncWindow uint8
	resync     bool

	// canceled is set (before the deadline is forced into the past) when the
	// context of the running operation is done, so that a later re-arming of
	// the deadline cannot hide the cancellation.
	canceled atomic.Bool
	// graceful is set during the data phase of a push: a cancellation then
	// interrupts the transfer with IDT (PI 19 = 16) and closes the file, so
	// the server records a cancellation and the session stays usable; the
	// deadline is forced only if that takes longer than cancelGrace.
	graceful atomic.Bool

	// ConnectLatency is the time from sending CONNECT to receiving ACONNECT.
	connectLatency time.Duration

	// Reused by the data path so that a transfer does not allocate per DTF.
	out     fpdu.FPDU
	dataBuf []byte
	pack    fpdu.Packer
}

// Negotiated reports the sync options agreed in ACONNECT: interval in KiB (0:
// no sync points), acknowledgement window, and resync.
func (s *Session) Negotiated() (syncIntervalKB uint16, window uint8, resync bool) {
	return s.syncKB, s.syncWindow, s.resync
}

// ConnectLatency is the time between sending CONNECT and receiving ACONNECT.
func (s *Session) ConnectLatency() time.Duration { return s.connectLatency }

// Dial connects to the server, over TLS when cfg.TLS is set, sends the
// optional pre-connection message and CONNECT, and returns the session once
// the server has accepted it. A refusal is a *RejectedError carrying the
// server's diagnostic.
func Dial(ctx context.Context, cfg Config) (*Session, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: cfg.dialTimeout(), KeepAlive: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, &ConnectionError{Op: "dial " + cfg.Addr, Err: err}
	}
	if cfg.TLS != nil {
		tc := cfg.TLS.Clone()
		if tc.MinVersion < tls.VersionTLS12 {
			tc.MinVersion = tls.VersionTLS12
		}
		if tc.ServerName == "" && !tc.InsecureSkipVerify {
			host, _, _ := net.SplitHostPort(cfg.Addr)
			tc.ServerName = host
		}
		tlsConn := tls.Client(conn, tc)
		hctx, cancel := context.WithTimeout(ctx, cfg.dialTimeout())
		err := tlsConn.HandshakeContext(hctx)
		cancel()
		if err != nil {
			_ = conn.Close()
			return nil, &ConnectionError{Op: "TLS handshake with " + cfg.Addr, Err: err}
		}
		conn = tlsConn
	}
	s := &Session{
		cfg:  cfg,
		conn: conn,
		r:    fpdu.NewReader(conn),
		w:    fpdu.NewWriter(conn),
		log:  cfg.Logger,
		id:   cfg.ConnID,
		tp:   cfg.timeout(),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.id == 0 {
		s.id = 1
	}
	if err := s.connect(ctx); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return s, nil
}

func (s *Session) connect(ctx context.Context) error {
	defer s.watch(ctx)()
	if s.cfg.PreConnection {
		if err := s.preConnect(); err != nil {
			return err
		}
	}
	var p fpdu.Params
	p.AddString(fpdu.PIRequesterID, s.cfg.RequesterID)
	p.AddString(fpdu.PIServerID, s.cfg.ServerID)
	if s.cfg.Password != "" {
		pw := s.cfg.Password
		if len(pw) < 8 {
			pw += strings.Repeat(" ", 8-len(pw))
		}
		p.AddString(fpdu.PIAccessControl, pw)
	}
	p.AddUint(fpdu.PIVersion, 2)
	if s.cfg.SyncIntervalKB > 0 {
		p.AddSyncOption(s.cfg.SyncIntervalKB, s.cfg.SyncWindow)
	}
	p.AddUint(fpdu.PIAccessType, s.cfg.AccessType.wire())
	if s.cfg.Resync {
		p.AddUint(fpdu.PIResync, 1)
	}
	start := time.Now()
	if err := s.write(&fpdu.FPDU{Kind: fpdu.Connect, DstID: 0, SrcID: s.id, Params: p}); err != nil {
		return err
	}
	f, err := s.next()
	if err != nil {
		return err
	}
	switch f.Kind {
	case fpdu.AConnect:
	case fpdu.RConnect:
		d, _ := f.Params.Diagnostic()
		text, _ := f.Params.String(fpdu.PIFreeMessage)
		s.broken = true
		return &RejectedError{Diagnostic: d, Text: text}
	default:
		return s.protocolError(fpdu.DiagProtocolError, "expected ACONNECT, got %s", f.Kind)
	}
	s.connectLatency = time.Since(start)
	s.peer = f.SrcID
	if s.peer == 0 {
		return s.protocolError(fpdu.DiagProtocolError, "ACONNECT with a zero server connection id")
	}
	if v, ok := f.Params.Bytes(fpdu.PIVersion); ok {
		if _, err := fsm.NegotiateVersion(v, ok); err != nil {
			return s.negotiationError(err)
		}
	}
	// The server may lower our PI 7 proposal or turn sync off, never raise
	// it (pesit/fsm holds the rule for both sides).
	if v, ok := f.Params.Bytes(fpdu.PISyncOption); ok {
		answer, err := fsm.ParseSyncOption(v)
		if err == nil {
			err = fsm.CheckSyncAnswer(fsm.SyncOption{IntervalKB: s.cfg.SyncIntervalKB, Window: s.cfg.SyncWindow}, answer)
		}
		if err != nil {
			return s.negotiationError(err)
		}
		s.syncKB, s.syncWindow = answer.IntervalKB, answer.Window
	}
	if v, ok := f.Params.Uint(fpdu.PIResync); ok && v == 1 && s.cfg.Resync {
		s.resync = true
	}
	s.log.Debug("pesit connected", "addr", s.cfg.Addr, "server", s.cfg.ServerID,
		"sync_kb", s.syncKB, "window", s.syncWindow, "latency", s.connectLatency)
	return nil
}

// negotiationError aborts after a bad ACONNECT, with the diagnostic the
// negotiation rule chose.
func (s *Session) negotiationError(err error) error {
	d := fpdu.DiagNegotiationFailure
	_ = errors.As(err, &d)
	return s.protocolError(d, "ACONNECT: %v", err)
}

// preConnect sends the 24-byte EBCDIC pre-connection message, framed as
// pesitwizard and CX do, and waits for ACK0.
func (s *Session) preConnect() error {
	msg, err := fpdu.AppendPreConnection(make([]byte, 0, 2+fpdu.PreConnLen), s.cfg.RequesterID, s.cfg.Password, true)
	if err != nil {
		return err // Config.validate ruled it out
	}
	s.arm()
	if _, err := s.conn.Write(msg); err != nil {
		return s.ioError("send pre-connection", err)
	}
	ok, err := s.r.ReadPreConnectionReply()
	switch {
	case errors.Is(err, fpdu.ErrPreConnection):
		s.broken = true
		return &ProtocolError{Diagnostic: fpdu.DiagProtocolError, Msg: err.Error()}
	case err != nil:
		return s.ioError("read pre-connection reply", err)
	case !ok:
		s.broken = true
		return &RejectedError{Diagnostic: fpdu.DiagNotAuthorised, Text: "pre-connection refused (NAK0)"}
	}
	return nil
}

// Release ends the connection with RELEASE/RELCONF and closes it. It is
// valid only between transfers.
func (s *Session) Release(ctx context.Context) error {
	if s.broken {
		return s.Close()
	}
	defer s.watch(ctx)()
	var p fpdu.Params
	p.AddDiagnostic(fpdu.DiagOK)
	err := s.write(&fpdu.FPDU{Kind: fpdu.Release, DstID: s.peer, SrcID: s.id, Params: p})
	if err == nil {
		_, err = s.expect(fpdu.RelConf)
	}
	s.broken = true
	if cerr := s.conn.Close(); err == nil && cerr != nil && !errors.Is(cerr, net.ErrClosed) {
		err = &ConnectionError{Op: "close", Err: cerr}
	}
	return err
}

// Abort sends ABORT with diagnostic d and closes the connection.
func (s *Session) Abort(d fpdu.Diagnostic) error {
	if !s.broken {
		s.broken = true
		_ = s.conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
		_ = s.w.Write(fpdu.NewAbort(s.peer, s.id, d))
	}
	return s.Close()
}

// Close closes the connection without any PeSIT exchange.
func (s *Session) Close() error {
	s.broken = true
	err := s.conn.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// watch forces the connection deadline into the past when ctx is done, so
// that a blocked read or write returns at once; during the data phase of a
// push (graceful) it leaves cancelGrace to the transfer to end with IDT
// first. The returned function stops watching.
func (s *Session) watch(ctx context.Context) func() {
	s.canceled.Store(false)
	var mu sync.Mutex
	var grace *time.Timer
	stopped := false
	force := func() {
		s.graceful.Store(false)
		_ = s.conn.SetDeadline(time.Unix(1, 0))
	}
	stop := context.AfterFunc(ctx, func() {
		s.canceled.Store(true)
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		if s.graceful.Load() {
			grace = time.AfterFunc(cancelGrace, func() {
				mu.Lock()
				defer mu.Unlock()
				if !stopped {
					force()
				}
			})
			return
		}
		force()
	})
	return func() {
		stop()
		mu.Lock()
		stopped = true
		if grace != nil {
			grace.Stop()
		}
		mu.Unlock()
	}
}

// cancelGrace bounds the orderly end (IDT, ACK(IDT), CRF, DESELECT) of a
// cancelled push.
const cancelGrace = 2 * time.Second

// cancelNow reports a cancellation that must cut the connection now.
func (s *Session) cancelNow() bool { return s.canceled.Load() && !s.graceful.Load() }

// arm sets the inactivity deadline Tp for the next exchange.
func (s *Session) arm() {
	_ = s.conn.SetDeadline(time.Now().Add(s.tp))
	if s.cancelNow() {
		_ = s.conn.SetDeadline(time.Unix(1, 0))
	}
}

func (s *Session) write(f *fpdu.FPDU) error {
	if s.broken {
		return &ConnectionError{Op: "send " + f.Kind.String(), Err: net.ErrClosed}
	}
	s.arm()
	if err := s.w.Write(f); err != nil {
		return s.ioError("send "+f.Kind.String(), err)
	}
	return nil
}

// next reads the next FPDU. An ABORT becomes an *AbortError.
func (s *Session) next() (*fpdu.FPDU, error) {
	if s.broken {
		return nil, &ConnectionError{Op: "read", Err: net.ErrClosed}
	}
	s.arm()
	f, err := s.r.Next()
	if err != nil {
		return nil, s.readError(err)
	}
	if f.Kind == fpdu.Abort {
		d, _ := f.Params.Diagnostic()
		s.broken = true
		_ = s.conn.Close()
		return nil, &AbortError{Diagnostic: d}
	}
	return f, nil
}

// expect reads the next FPDU and checks its kind. A server IDT is
// acknowledged and returned as a *TransferError.
func (s *Session) expect(kind fpdu.Kind) (*fpdu.FPDU, error) {
	f, err := s.next()
	if err != nil {
		return nil, err
	}
	if f.Kind == kind {
		return f, nil
	}
	if f.Kind == fpdu.IDT {
		return nil, s.answerIDT(f)
	}
	return nil, s.protocolError(fpdu.DiagProtocolError, "expected %s, got %s", kind, f.Kind)
}

// expectOK is expect plus a check of PI 2.
func (s *Session) expectOK(kind fpdu.Kind) (*fpdu.FPDU, error) {
	f, err := s.expect(kind)
	if err != nil {
		return nil, err
	}
	if d, ok := f.Params.Diagnostic(); ok && !d.OK() {
		text, _ := f.Params.String(fpdu.PIDiagComplement)
		if text == "" {
			text, _ = f.Params.String(fpdu.PIFreeMessage)
		}
		return f, &TransferError{Op: kind, Diagnostic: d, Text: text}
	}
	return f, nil
}

// answerIDT acknowledges a server IDT and turns it into an error.
func (s *Session) answerIDT(f *fpdu.FPDU) error {
	d, _ := f.Params.Diagnostic()
	code, _ := f.Params.Uint(fpdu.PIEndCode)
	te := &TransferError{Op: fpdu.IDT, Diagnostic: d, EndCode: uint8(code)}
	if err := s.write(&fpdu.FPDU{Kind: fpdu.AckIDT, DstID: s.peer}); err != nil {
		return errors.Join(te, err)
	}
	return te
}

// protocolError aborts the connection with d and returns a *ProtocolError.
func (s *Session) protocolError(d fpdu.Diagnostic, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	s.log.Debug("pesit protocol error", "diag", d.String(), "msg", msg)
	_ = s.Abort(d)
	return &ProtocolError{Diagnostic: d, Msg: msg}
}

// readError classifies a read failure: a stream cut inside a frame is a
// transport failure; anything else the codec rejects is the server's
// protocol error, answered with ABORT.
func (s *Session) readError(err error) error {
	var d fpdu.Diagnostic
	if errors.As(err, &d) && !errors.Is(err, fpdu.ErrTruncated) && !s.canceled.Load() {
		return s.protocolError(d, "decode: %v", err)
	}
	return s.ioError("read", err)
}

// ioError marks the session broken and classifies err: a cancellation of the
// caller's context, or a transport failure.
func (s *Session) ioError(op string, err error) error {
	s.log.Debug("pesit connection failed", "op", op, "err", err)
	s.broken = true
	_ = s.conn.Close()
	if s.canceled.Load() {
		return fmt.Errorf("%s: %w", op, context.Canceled)
	}
	return &ConnectionError{Op: op, Err: err}
}
