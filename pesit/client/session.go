package client

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
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
	m      *fsm.Machine // the requester's protocol state: every FPDU passes through it
	log    *slog.Logger
	id     byte // our connection id (X)
	peer   byte // the server's connection id (Y)
	tp     time.Duration
	broken bool // the connection is unusable: ABORT sent or received, transport error

	// Negotiated in ACONNECT (kept after RELEASE resets the machine).
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
		m:    fsm.NewRequester(),
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
	start := time.Now()
	if err := s.write(fpdu.NewConnect(s.id, fpdu.ConnectParams{
		RequesterID: s.cfg.RequesterID, ServerID: s.cfg.ServerID, Password: s.cfg.Password,
		SyncIntervalKB: s.cfg.SyncIntervalKB, SyncWindow: s.cfg.SyncWindow,
		AccessType: uint8(s.cfg.AccessType.wire()), Resync: s.cfg.Resync,
	})); err != nil {
		return err
	}
	// The machine checks the answer: the server may lower our PI 7
	// proposal or turn sync off, never raise it, nor grant an unasked PI 23.
	f, err := s.next()
	if err != nil {
		return err
	}
	if f.Kind == fpdu.RConnect {
		d, text := fpdu.ReadRConnect(f)
		s.broken = true
		_ = s.conn.Close()
		return &RejectedError{Diagnostic: d, Text: text}
	}
	s.connectLatency = time.Since(start)
	s.peer = f.SrcID
	if s.peer == 0 {
		return s.protocolError(fpdu.DiagProtocolError, "ACONNECT with a zero server connection id")
	}
	if v, ok := f.Params.Bytes(fpdu.PIVersion); ok {
		if _, err := fsm.NegotiateVersion(v, ok); err != nil {
			d := fpdu.DiagNegotiationFailure
			_ = errors.As(err, &d)
			return s.protocolError(d, "ACONNECT: %v", err)
		}
	}
	opt := s.m.SyncOption()
	s.syncKB, s.syncWindow, s.resync = opt.IntervalKB, opt.Window, s.m.Resync()
	s.log.Debug("pesit connected", "addr", s.cfg.Addr, "server", s.cfg.ServerID,
		"sync_kb", s.syncKB, "window", s.syncWindow, "latency", s.connectLatency)
	return nil
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
	rel := fpdu.NewDiag(fpdu.Release, s.peer, fpdu.DiagOK)
	rel.SrcID = s.id
	err := s.write(rel)
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
		a := fpdu.NewAbort(s.peer, s.id, d)
		_ = s.m.Sent(a) // an ABORT goes out whatever the state
		_ = s.w.Write(a)
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
