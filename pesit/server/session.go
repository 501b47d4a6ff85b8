package server

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/fsm"
)

// ourConnID is the connection id (ID.SRC) we use in connection FPDUs.
const ourConnID = 0x01

// errPeerAbort ends a session after the peer sent ABORT.
var errPeerAbort = errors.New("peer aborted")

// errClosed ends a session normally (RELEASE, RCONNECT).
var errClosed = errors.New("session closed")

// abortError ends a session: ABORT d has been (or must be) sent.
type abortError struct {
	diag   fpdu.Diagnostic
	detail string
}

func (e *abortError) Error() string {
	return "abort " + e.diag.String() + ": " + e.detail
}

func abortf(d fpdu.Diagnostic, format string, args ...any) error {
	return &abortError{diag: d, detail: fmt.Sprintf(format, args...)}
}

// session is one connection. Its goroutine owns every field except those
// documented as shared; other goroutines (Shutdown, CancelTransfer) only
// write through wmu and flip the atomics.
type session struct {
	srv  *Server
	conn net.Conn
	addr string // peer IP: the key of per-address limits
	log  *slog.Logger
	span trace.Span
	ctx  context.Context
	// requested is the PI 12 of the CREATE or SELECT being answered, for
	// the span of a refusal.
	requested string

	r *fpdu.Reader

	wmu    sync.Mutex // guards w and the connection's write side
	w      *fpdu.Writer
	closed bool // under wmu: ABORT sent or connection closed

	peerID     byte
	partner    Partner
	admitted   bool
	accessType uint64 // PI 22
	certFP     string
	certCN     string
	certOK     bool // chain verified by TLS

	// m is the responder state machine: the authority on which FPDU is
	// valid where, the flags (ab) and the sync window. Guarded by wmu, since
	// the admin API may send an IDT while the session goroutine reads.
	m    *fsm.Machine
	xfer *transfer

	// Shared with other goroutines.
	dataPhase  atomic.Bool            // in TDE02B/TDL02B: IDT is possible
	idtPending atomic.Bool            // we sent IDT and wait for ACK(IDT)
	xferID     atomic.Pointer[string] // journal id of the current transfer; nil between transfers
	killed     atomic.Uint32          // diagnostic of a local abort (Shutdown, cancel)
	idle       atomic.Bool            // before CONNECT or between transfers: Shutdown need not wait
	idtDiag    atomic.Uint32
	idtCode    atomic.Uint32

	deadlineRenew time.Time
	writeRenew    time.Time // under wmu
	outcomeDiag   fpdu.Diagnostic
}

func newSession(srv *Server, c net.Conn) *session {
	ss := &session{srv: srv, conn: c, m: fsm.NewResponder()}
	ss.idle.Store(true)
	ss.log = srv.log.With("peer", c.RemoteAddr().String())
	return ss
}

func (s *session) run() {
	srv := s.srv
	ctx, span := srv.tracer.Start(srv.base, "pesit.session",
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(
			attribute.String("net.peer.address", s.conn.RemoteAddr().String()),
			attribute.String("pesit.server_id", srv.cfg.ID)))
	s.ctx, s.span = ctx, span
	defer span.End()
	defer s.closeConn()

	err := s.serve()
	s.endTransfer(err)
	if s.admitted {
		srv.release(s.partner)
	}
	var ae *abortError
	switch {
	case errors.As(err, &ae):
		s.outcomeDiag = ae.diag
		s.sendAbort(ae.diag)
		s.log.Warn("session aborted", "diag", ae.diag.String(), "detail", ae.detail)
		span.SetStatus(codes.Error, ae.Error())
	case err == nil || errors.Is(err, errClosed):
		s.log.Debug("session closed")
	case errors.Is(err, errPeerAbort):
		s.log.Info("session aborted by peer", "diag", s.outcomeDiag.String())
	default:
		if d := fpdu.Diagnostic(s.killed.Load()); d != 0 {
			s.outcomeDiag = d
			s.log.Info("session aborted locally", "diag", d.String())
		} else {
			s.log.Info("session ended", "err", err)
			span.RecordError(err)
		}
	}
	span.SetAttributes(attribute.String("pesit.partner", s.partner.ID),
		attribute.String("pesit.diagnostic", s.outcomeDiag.String()))
}

// serve runs the connection phase, then the connected loop.
func (s *session) serve() error {
	cfg := &s.srv.cfg
	// An idle socket holds a connection slot: the first FPDU must come
	// soon, whatever Tc allows for the CONNECT.
	firstFPDU := min(cfg.FirstFPDUTimeout, cfg.ConnectTimeout)
	s.setReadDeadline(firstFPDU)
	if tc, ok := s.conn.(*tls.Conn); ok {
		s.conn.SetWriteDeadline(time.Now().Add(cfg.ConnectTimeout))
		if err := tc.HandshakeContext(s.ctx); err != nil {
			s.srv.countConn("tls_error")
			return fmt.Errorf("tls handshake: %w", err)
		}
		st := tc.ConnectionState()
		if len(st.PeerCertificates) > 0 {
			c := st.PeerCertificates[0]
			sum := sha256.Sum256(c.Raw)
			s.certFP = hex.EncodeToString(sum[:])
			s.certCN = c.Subject.CommonName
			s.certOK = len(st.VerifiedChains) > 0
		}
		s.span.SetAttributes(attribute.String("tls.version", tls.VersionName(st.Version)))
	}
	s.r = fpdu.NewReader(s.conn)
	s.wmu.Lock() // Shutdown may abort concurrently
	s.w = fpdu.NewWriter(s.conn)
	s.wmu.Unlock()

	pre, err := s.r.ReadPreConnection()
	if err != nil {
		s.srv.countConn("error")
		return s.readErr(err)
	}
	if pre != nil {
		if err := s.preConnection(pre); err != nil {
			return err
		}
		s.setReadDeadline(firstFPDU)
	}
	f, err := s.next()
	if err != nil {
		s.srv.countConn("error")
		return s.readErr(err)
	}
	if f.Kind != fpdu.Connect {
		s.srv.countConn("error")
		return abortf(fpdu.DiagProtocolError, "%v before CONNECT", f.Kind)
	}
	s.idle.Store(false)
	if err := s.connect(f); err != nil {
		return err
	}
	return s.connected()
}

func (s *session) preConnection(pre *fpdu.PreConnection) error {
	ok := s.checkPreConnection(pre)
	s.wmu.Lock()
	s.conn.SetWriteDeadline(time.Now().Add(s.srv.cfg.InactivityTimeout))
	_, err := s.conn.Write(pre.AppendReply(nil, ok))
	s.wmu.Unlock()
	if err != nil {
		return fmt.Errorf("pre-connection reply: %w", err)
	}
	if !ok {
		s.srv.countConn("refused")
		s.log.Warn("pre-connection refused", "requester", pre.RequesterID)
		return errClosed
	}
	return nil
}

func (s *session) checkPreConnection(pre *fpdu.PreConnection) bool {
	id := strings.TrimRight(pre.RequesterID, " ")
	p, err := s.srv.dir.Partner(s.ctx, id)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return false
	}
	v, _ := s.authenticate(p, id, err == nil && p.Enabled, strings.TrimRight(pre.Password, " "))
	return v == PasswordAccepted || v == PasswordCached
}

// authenticate accepts a matching client certificate or a good password.
// A partner pinned to certificate fingerprints must present one of them.
// known is false for an unknown or disabled partner: its password is still
// checked (against a dummy, through the same bounded checker and throttle),
// so that it costs what a wrong password costs. A throttled login has its
// answer held here. The reason is for the log and the audit. A partner with a
// certCN is matched on that CN, otherwise on its id.
func (s *session) authenticate(p Partner, id string, known bool, password string) (PasswordVerdict, string) {
	if known {
		cn := p.CertCN
		if cn == "" {
			cn = p.ID
		}
		certMatch := s.certFP != "" && (slices.ContainsFunc(p.CertFingerprints, func(fp string) bool {
			return strings.EqualFold(strings.ReplaceAll(fp, ":", ""), s.certFP)
		}) || (s.certOK && s.certCN == cn))
		if (len(p.CertFingerprints) > 0 || p.CertCN != "") && !certMatch {
			return PasswordRejected, "certificate required"
		}
		if certMatch {
			return PasswordAccepted, "" // no password work, no throttle: not a login to audit
		}
	}
	if password == "" {
		return PasswordRejected, "no password"
	}
	reason := "bad credentials"
	if !known {
		reason = "unknown or disabled partner"
	}
	v := s.checkPassword(p, id, known, password)
	switch v {
	case PasswordAccepted, PasswordCached:
		reason = ""
	case PasswordThrottled:
		reason = "throttled"
	case PasswordBusy:
		reason = "password verification busy"
	}
	s.login(id, v, reason)
	if v == PasswordThrottled {
		s.holdThrottled(id)
	}
	return v, reason
}

// connect answers ACONNECT or RCONNECT (digest §8.1.3). The state machine
// has checked f's parameters (next): what is left is the server's, the
// partner, its rights and the negotiation.
func (s *session) connect(f *fpdu.FPDU) error {
	srv := s.srv
	cfg := &srv.cfg
	s.wmu.Lock()
	s.peerID = f.SrcID
	s.wmu.Unlock()
	refuse := func(d fpdu.Diagnostic, detail string, args ...any) error {
		srv.countConn("refused")
		srv.countDiag(d)
		s.outcomeDiag = d
		s.log.Warn("connection refused", "diag", d.String(), "detail", fmt.Sprintf(detail, args...))
		// A refused connection is an error of the session in a trace backend.
		s.span.SetStatus(codes.Error, "RCONNECT "+d.String()+" "+d.Text())
		rc := fpdu.FPDU{Kind: fpdu.RConnect, DstID: s.peerID}
		rc.Params.AddDiagnostic(d)
		if err := s.write(&rc); err != nil {
			return err
		}
		return errClosed
	}
	if id, _ := f.Params.String(fpdu.PIServerID); id != cfg.ID {
		return refuse(fpdu.DiagUnknownServer, "called id %q", id)
	}
	if _, err := fsm.NegotiateVersion(f.Params.Bytes(fpdu.PIVersion)); err != nil {
		return refuse(diagOf(err, fpdu.DiagVersionUnsupported), "%v", err)
	}
	if crc, _ := f.Params.Uint(fpdu.PICRC); crc != 0 {
		return refuse(fpdu.DiagConnectionOther, "CRC requested")
	}
	reqID, _ := f.Params.String(fpdu.PIRequesterID)
	s.span.SetAttributes(attribute.String("pesit.requester", reqID))
	var password string
	if pw, ok := f.Params.Bytes(fpdu.PIAccessControl); ok {
		if len(pw) > 8 {
			pw = pw[:8] // bytes 9-16 are a new password, which we do not accept
		}
		password = strings.TrimRight(string(pw), " ")
	}
	// Cheap refusals first: a full server answers 3/303 before any lookup
	// or password work, whoever asks.
	if srv.full() {
		return refuse(fpdu.DiagTooManyConnections, "session limit")
	}
	p, err := srv.dir.Partner(s.ctx, reqID)
	if err != nil && !errors.Is(err, ErrNotFound) {
		s.log.Error("partner lookup failed", "requester", reqID, "err", err)
		return refuse(fpdu.DiagCongestion, "partner lookup failed")
	}
	known := err == nil && p.Enabled
	if known {
		// A CONNECT the limits would refuse costs no password work. The
		// slot is only reserved once authenticated (admit, below), so that
		// a guesser cannot hold a partner's slots while its answers wait.
		if d := srv.mayAdmit(p); !d.OK() {
			return refuse(d, "session limit for %q", p.ID)
		}
	}
	switch v, reason := s.authenticate(p, reqID, known, password); v {
	case PasswordAccepted, PasswordCached:
	case PasswordBusy:
		return refuse(fpdu.DiagCongestion, "requester %q: %s", reqID, reason)
	default:
		return refuse(fpdu.DiagNotAuthorised, "requester %q: %s", reqID, reason)
	}
	s.accessType = 2
	if at, ok := f.Params.Uint(fpdu.PIAccessType); ok {
		if at > 2 {
			return refuse(fpdu.DiagBadParameter, "access type %d", at)
		}
		s.accessType = at
	}
	if (s.accessType == 0 && p.Access&AccessWrite == 0) || (s.accessType == 1 && p.Access&AccessRead == 0) || p.Access == AccessNone {
		return refuse(fpdu.DiagNotAuthorised, "access type %d not allowed for %q", s.accessType, p.ID)
	}
	// Sync points and resync (digest §4.3, §4.5): the smaller wins.
	sv, ok := f.Params.Bytes(fpdu.PISyncOption)
	opt, err := fsm.NegotiateSync(sv, ok, fsm.SyncOption{IntervalKB: cfg.SyncIntervalKB, Window: cfg.SyncWindow})
	if err != nil {
		return refuse(diagOf(err, fpdu.DiagBadParameter), "%v", err)
	}
	rv, ok := f.Params.Bytes(fpdu.PIResync)
	resync, err := fsm.NegotiateResync(rv, ok, cfg.AllowResync && opt.Enabled())
	if err != nil {
		return refuse(diagOf(err, fpdu.DiagBadParameter), "%v", err)
	}
	if d := srv.admit(p); !d.OK() {
		return refuse(d, "session limit for %q", p.ID)
	}
	s.partner, s.admitted = p, true
	s.wmu.Lock() // other goroutines log under wmu
	s.log = s.log.With("partner", p.ID)
	s.wmu.Unlock()

	ac := fpdu.FPDU{Kind: fpdu.AConnect, DstID: s.peerID, SrcID: ourConnID}
	ac.Params.AddUint(fpdu.PIVersion, fsm.VersionE)
	b := opt.Bytes()
	ac.Params.Add(fpdu.PISyncOption, b[:]) // always, 3 bytes: CX expects it
	if ok {
		ac.Params.AddUint(fpdu.PIResync, uint64(resync))
	}
	// Last, right before the answer: the lookups and the password check
	// above may take long enough for leadership to end meanwhile.
	// The slot reserved above is released when the session ends.
	if srv.mayServe != nil && !srv.mayServe() {
		return refuse(fpdu.DiagServerUnavailable, "this node no longer leads")
	}
	if err := s.write(&ac); err != nil {
		return err
	}
	srv.countConn("accepted")
	s.log.Info("partner connected", "sync", opt.String(), "resync", resync == 1)
	return nil
}

// connected is state CN03: between transfers, guarded by Td.
func (s *session) connected() error {
	for {
		if s.srv.isClosing() {
			// A drain waits for transfers, not for idle sessions.
			return abortf(fpdu.DiagAdministrativeStop, "server shutting down")
		}
		s.setReadDeadline(s.srv.cfg.IdleTimeout)
		s.idle.Store(true)
		f, err := s.next()
		s.idle.Store(false)
		if err != nil {
			return s.idleReadErr(err, s.srv.cfg.IdleTimeout)
		}
		switch f.Kind {
		case fpdu.Create:
			if err := createFile(s, f); err != nil {
				return err
			}
		case fpdu.Select:
			if err := selectFile(s, f); err != nil {
				return err
			}
		case fpdu.Msg, fpdu.MsgDM:
			if err := s.message(f); err != nil {
				return err
			}
		case fpdu.Release:
			rc := fpdu.FPDU{Kind: fpdu.RelConf, DstID: s.peerID, SrcID: ourConnID}
			if err := s.write(&rc); err != nil {
				return err
			}
			return errClosed
		case fpdu.Abort:
			return s.peerAbort(f)
		default:
			return abortf(fpdu.DiagProtocolError, "%v in state connected", f.Kind)
		}
		if s.xfer != nil {
			if err := s.fileSelected(); err != nil {
				return err
			}
		}
	}
}

// fileSelected runs states SF03 (selected) and OF02 (open) until DESELECT.
func (s *session) fileSelected() error {
	open := false
	for {
		s.setReadDeadline(s.srv.cfg.InactivityTimeout)
		f, err := s.next()
		if err != nil {
			return s.readErr(err)
		}
		switch {
		case f.Kind == fpdu.Abort:
			return s.peerAbort(f)
		case f.Kind == fpdu.ORF && !open:
			ack := fpdu.FPDU{Kind: fpdu.AckORF, DstID: s.peerID}
			ack.Params.AddDiagnostic(fpdu.DiagOK)
			// Compression is refused by answering "none" (digest §7).
			ack.Params.Add(fpdu.PICompression, []byte{0, 0})
			if err := s.write(&ack); err != nil {
				return err
			}
			open = true
		case f.Kind == fpdu.CRF && open:
			if err := s.writeAck(fpdu.AckCRF, fpdu.DiagOK); err != nil {
				return err
			}
			open = false
		case f.Kind == fpdu.Deselect && !open:
			// The transfer is released (its final path unclaimed) before
			// the answer: a requester that pushes the same file again
			// right after must not find it still busy (2/207).
			s.endTransfer(nil)
			return s.writeAck(fpdu.AckDeselect, fpdu.DiagOK)
		case (f.Kind == fpdu.Write || f.Kind == fpdu.Read) && open:
			// The machine let WRITE through only for a file created, READ
			// only for one selected: the side is the right one.
			if err := s.resumeInPlace(); err != nil {
				return err
			}
			if err := s.xfer.side.run(f); err != nil {
				return err
			}
		default:
			return abortf(fpdu.DiagProtocolError, "%v with the file %s", f.Kind, stateName(open))
		}
	}
}

func stateName(open bool) string {
	if open {
		return "open"
	}
	return "selected"
}

// next reads the next FPDU that the state machine accepts. FPDUs it says
// to ignore (collisions with our IDT or RESYN) are dropped; an invalid one
// is an error wrapping a *fsm.Violation. Data FPDUs are not logged.
func (s *session) next() (*fpdu.FPDU, error) {
	for {
		f, err := s.r.Next()
		if err != nil {
			return nil, err
		}
		if s.srv.cfg.DebugFPDU && !f.Kind.IsData() {
			s.log.Debug("fpdu received", "fpdu", f.String())
		}
		s.wmu.Lock()
		act, err := s.m.Received(f)
		s.wmu.Unlock()
		if err != nil {
			return f, err
		}
		if act != fsm.Ignore {
			return f, nil
		}
	}
}

// syncOption is the negotiated PI 7, as the state machine holds it.
func (s *session) syncOption() fsm.SyncOption {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.m.SyncOption()
}

// syncLimit is the negotiated sync interval in bytes, 0 when unbounded.
func (s *session) syncLimit() int64 {
	lim, _ := s.syncOption().LimitBytes()
	return int64(lim)
}

// window is the sync-point accounting of the transfer under way, which the
// state machine keeps from the FPDUs it sees (a copy).
func (s *session) window() fsm.SyncWindow {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.m.Window()
}

// setReadDeadline arms the timer for the next read.
func (s *session) setReadDeadline(d time.Duration) {
	now := time.Now()
	s.conn.SetReadDeadline(now.Add(d))
	s.deadlineRenew = now.Add(d / 8)
}

// renewReadDeadline re-arms Tp at most every Tp/8 on the data path, so that
// a stream of DTFs costs no timer update per frame.
func (s *session) renewReadDeadline() {
	if now := time.Now(); now.After(s.deadlineRenew) {
		d := s.srv.cfg.InactivityTimeout
		s.conn.SetReadDeadline(now.Add(d))
		s.deadlineRenew = now.Add(d / 8)
	}
}

// renewWriteDeadline re-arms Tp for writes, at most every Tp/8. Under wmu.
func (s *session) renewWriteDeadline() {
	if now := time.Now(); now.After(s.writeRenew) {
		d := s.srv.cfg.InactivityTimeout
		s.conn.SetWriteDeadline(now.Add(d))
		s.writeRenew = now.Add(d / 8)
	}
}

// readErr maps a read failure to the session's end.
func (s *session) readErr(err error) error {
	if d := fpdu.Diagnostic(s.killed.Load()); d != 0 {
		return fmt.Errorf("aborted locally (%v): %w", d, err)
	}
	if v, ok := fsm.IsViolation(err); ok {
		return abortf(v.Diag, "%v", v)
	}
	if isDeadline(err) {
		return abortf(fpdu.DiagTimerExpired, "peer silent: %v", err)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("connection lost: %w", err)
	}
	var d fpdu.Diagnostic
	if errors.As(err, &d) {
		return abortf(d, "malformed input: %v", err)
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return fmt.Errorf("read: %w", err)
	}
	return abortf(fpdu.DiagProtocolError, "malformed input: %v", err)
}

// idleReadErr maps a read failure between transfers (CN03): only our own
// idle deadline is 3/313; anything else, a transport timeout included, is
// what readErr says.
func (s *session) idleReadErr(err error, idle time.Duration) error {
	if d := fpdu.Diagnostic(s.killed.Load()); d == 0 && isDeadline(err) {
		return abortf(fpdu.DiagIdleTimeout, "idle for %v", idle)
	}
	return s.readErr(err)
}

// isDeadline reports that a read or write ran into a deadline we set.
// net.Error.Timeout() would also be true for a transport timeout (ETIMEDOUT
// from TCP keep-alive or retransmissions): that is a lost connection, not a
// silent peer, and must not be reported as one.
func isDeadline(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

func diagOf(err error, def fpdu.Diagnostic) fpdu.Diagnostic {
	var d fpdu.Diagnostic
	if errors.As(err, &d) && !d.OK() {
		return d
	}
	return def
}

func (s *session) peerAbort(f *fpdu.FPDU) error {
	d, _ := f.Params.Diagnostic()
	s.outcomeDiag = d
	s.srv.countDiag(d)
	s.wmu.Lock()
	s.closed = true // never answer an ABORT
	s.wmu.Unlock()
	return errPeerAbort
}

// write sends one FPDU in its own frame.
func (s *session) write(f *fpdu.FPDU) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.writeLocked(f)
}

func (s *session) writeLocked(f *fpdu.FPDU) error {
	if s.closed {
		return fmt.Errorf("write %v: %w", f.Kind, net.ErrClosed)
	}
	if err := s.m.Sent(f); err != nil {
		// The machine refuses what we may not send: a bug here, not the peer.
		s.log.Error("refusing to send an invalid FPDU", "err", err)
		return fmt.Errorf("send %v: %w", f.Kind, err)
	}
	if s.srv.cfg.DebugFPDU && !f.Kind.IsData() {
		s.log.Debug("fpdu sent", "fpdu", f.String())
	}
	s.renewWriteDeadline()
	if err := s.w.Write(f); err != nil {
		return fmt.Errorf("write %v: %w", f.Kind, err)
	}
	return nil
}

func (s *session) writeAck(k fpdu.Kind, d fpdu.Diagnostic) error {
	s.srv.countDiag(d)
	a := fpdu.FPDU{Kind: k, DstID: s.peerID}
	a.Params.AddDiagnostic(d)
	return s.write(&a)
}

// enterDataPhase sends f, the ACK(WRITE) or ACK(READ) that opens the data
// phase, and marks the phase open under the same write lock. A cancellation
// (cancelTransfer takes that lock) then finds the phase open exactly when
// the partner may have the ACK, and answers with IDT; marked after the
// write, a partner already sending data could be cancelled with an ABORT.
func (s *session) enterDataPhase(f *fpdu.FPDU) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.writeLocked(f); err != nil {
		return err
	}
	s.dataPhase.Store(true)
	return nil
}

// sendAbort sends ABORT d once and closes the connection.
func (s *session) sendAbort(d fpdu.Diagnostic) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed {
		return
	}
	s.srv.countDiag(d)
	if s.w != nil {
		a := fpdu.NewAbort(s.peerID, ourConnID, d)
		a.AbortPIForm = s.srv.cfg.AbortPIForm
		s.m.Sent(a) // an ABORT goes out whatever the state
		s.conn.SetWriteDeadline(time.Now().Add(time.Second))
		if err := s.w.Write(a); err != nil {
			s.log.Debug("abort not delivered", "err", err)
		}
	}
	s.closed = true
	s.conn.Close()
}

// abort is called by other goroutines (Shutdown, CancelTransfer).
func (s *session) abort(d fpdu.Diagnostic, why string) {
	s.killed.CompareAndSwap(0, uint32(d))
	s.srv.log.Warn("aborting session", "peer", s.conn.RemoteAddr().String(), "diag", d.String(), "reason", why)
	s.sendAbort(d)
}

func (s *session) closeConn() {
	s.wmu.Lock()
	s.closed = true
	s.wmu.Unlock()
	s.conn.Close()
}

// interruptForShutdown sends IDT 2/216 with PI 19 = 4 when the session is
// in its data phase: the transfer is kept for a restart, which the partner
// makes on the next leader. The session goroutine takes ACK(IDT) as for any
// IDT of ours (awaitAckIDT).
func (s *session) interruptForShutdown(deadline time.Time) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if !s.dataPhase.Load() || s.idtPending.Load() || s.closed || time.Now().After(deadline) {
		return
	}
	// Bounded by the wait for ACK(IDT): past it the session is aborted.
	s.conn.SetWriteDeadline(deadline)
	s.writeRenew = deadline
	if err := s.writeIDTLocked(fpdu.DiagVoluntaryStop, endRestart); err != nil {
		s.log.Debug("shutdown IDT not sent", "err", err)
		return
	}
	s.log.Info("transfer interrupted by the shutdown; the partner may restart it", "id", s.currentTransfer())
}

// setCurrentTransfer publishes the journal id of the transfer under way
// ("" for none) to the goroutines that cancel or interrupt it.
func (s *session) setCurrentTransfer(id string) {
	if id == "" {
		s.xferID.Store(nil)
		return
	}
	s.xferID.Store(&id)
}

// currentTransfer is the journal id of the transfer under way, or "".
func (s *session) currentTransfer() string {
	if p := s.xferID.Load(); p != nil {
		return *p
	}
	return ""
}

// cancelTransfer interrupts transfer id for the admin API.
func (s *session) cancelTransfer(ctx context.Context, id string) error {
	if s.currentTransfer() != id {
		return fmt.Errorf("cancel transfer %s: %w", id, ErrNoSuchTransfer)
	}
	s.wmu.Lock()
	if s.dataPhase.Load() && !s.idtPending.Load() && !s.closed {
		err := s.writeIDTLocked(fpdu.DiagVoluntaryStop, endCancelledByServer)
		s.wmu.Unlock()
		return err
	}
	s.wmu.Unlock()
	if s.idtPending.Load() {
		return nil
	}
	s.abort(fpdu.DiagClosedByUser, fmt.Sprintf("transfer %s cancelled", id))
	return ctx.Err()
}

// PI 19 end-of-transfer codes.
const (
	endRestart           = 4
	endSuspended         = 8
	endCancelledByServer = 12 // 16 is "cancelled by the requester"
)

func (s *session) writeIDTLocked(d fpdu.Diagnostic, code uint64) error {
	s.srv.countDiag(d)
	idt := fpdu.FPDU{Kind: fpdu.IDT, DstID: s.peerID}
	idt.Params.AddDiagnostic(d)
	idt.Params.AddUint(fpdu.PIEndCode, code)
	if err := s.writeLocked(&idt); err != nil {
		return err
	}
	// The session goroutine reads these once it sees idtPending.
	s.idtDiag.Store(uint32(d))
	s.idtCode.Store(uint32(code))
	s.idtPending.Store(true)
	return nil
}
