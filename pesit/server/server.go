package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// ErrServerClosed is returned by Start and Serve after Shutdown.
var ErrServerClosed = errors.New("pesit server closed")

// ErrNoSuchTransfer is returned by CancelTransfer when no live session runs
// the transfer.
var ErrNoSuchTransfer = errors.New("no such active transfer")

// Server is one PeSIT responder: a server id with its listeners and sessions.
type Server struct {
	cfg    Config
	dir    Directory
	jnl    Journal
	met    *Metrics
	log    *slog.Logger
	tracer trace.Tracer
	now    func() time.Time

	mu       sync.Mutex
	started  bool
	closing  bool
	refusing bool         // StopAccepting: listeners closed, sessions go on
	plain    net.Listener // nil when cfg.Addr is empty
	secure   net.Listener // TLS; nil when cfg.TLSAddr is empty
	// tlsCfg is read at every handshake, so that Relisten can change the
	// TLS material of a listener it keeps.
	tlsCfg    atomic.Pointer[tls.Config]
	sessions  map[*session]struct{}
	connected int            // sessions past CONNECT
	byPartner map[string]int // sessions per partner (3/309)
	transfers map[int64]*session
	receiving map[string]struct{} // final paths being received (2/207)
	perAddr   map[string]int      // open connections per peer IP
	turns     map[string]*turn    // password checks per peer IP (one at a time)
	throttle  *loginThrottle
	passwords PasswordChecker
	onLogin   func(ctx context.Context, ev LoginEvent)
	mayServe  func() bool
	wg        sync.WaitGroup // accept loops and sessions
	done      chan struct{}  // closed when Shutdown has finished

	// base parents every session's context; cancelled when Shutdown gives
	// up draining, so that a session blocked on the journal lets go too.
	base       context.Context
	cancelBase context.CancelFunc
}

// New checks cfg and returns a server that is not yet listening.
func New(cfg Config, deps Deps) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("pesit server config: %w", err)
	}
	if deps.Directory == nil || deps.Journal == nil {
		return nil, errors.New("pesit server: Directory and Journal are required")
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	now := deps.Now
	if now == nil {
		now = time.Now
	}
	base, cancelBase := context.WithCancel(context.Background())
	return &Server{
		base:       base,
		cancelBase: cancelBase,
		cfg:        cfg,
		dir:        deps.Directory,
		jnl:        deps.Journal,
		met:        deps.Metrics,
		log:        log.With("server", cfg.ID),
		tracer:     cfg.TracerProvider.Tracer("github.com/vectis-ft/vectis/pesit/server"),
		now:        now,
		sessions:   make(map[*session]struct{}),
		byPartner:  make(map[string]int),
		transfers:  make(map[int64]*session),
		receiving:  make(map[string]struct{}),
		perAddr:    make(map[string]int),
		turns:      make(map[string]*turn),
		throttle:   newLoginThrottle(cfg.LoginBurst, cfg.LoginRefill, 100000),
		passwords:  deps.Passwords,
		onLogin:    deps.OnLogin,
		mayServe:   deps.MayServe,
		done:       make(chan struct{}),
	}, nil
}

// Start binds the listeners and accepts in the background. Sessions live
// until Shutdown; ctx only bounds the binding.
func (s *Server) Start(ctx context.Context) error {
	if err := s.listen(ctx); err != nil {
		return err
	}
	s.log.Info("pesit server listening", "addr", s.Addr(), "tls_addr", s.TLSAddr())
	return nil
}

func (s *Server) listen(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return ErrServerClosed
	}
	if s.started {
		return errors.New("pesit server already started")
	}
	plain, secure, err := s.bind(ctx, s.cfg.Addr, s.cfg.TLSAddr)
	if err != nil {
		return err
	}
	s.setTLS(s.cfg.TLS)
	s.plain, s.secure = plain, secure
	s.started = true
	s.acceptOn(plain)
	s.acceptOn(secure)
	return nil
}

// bind opens the listeners for addr and tlsAddr (either may be empty), or
// none of them.
func (s *Server) bind(ctx context.Context, addr, tlsAddr string) (plain, secure net.Listener, err error) {
	var lc net.ListenConfig
	if addr != "" {
		if plain, err = lc.Listen(ctx, "tcp", addr); err != nil {
			return nil, nil, fmt.Errorf("listen %s: %w", addr, err)
		}
	}
	if tlsAddr != "" {
		l, err := lc.Listen(ctx, "tcp", tlsAddr)
		if err != nil {
			if plain != nil {
				plain.Close()
			}
			return nil, nil, fmt.Errorf("listen tls %s: %w", tlsAddr, err)
		}
		// Every handshake reads the current configuration: Relisten may
		// change the certificate of a listener it keeps.
		secure = tls.NewListener(l, &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.tlsCfg.Load(), nil
		}})
	}
	return plain, secure, nil
}

func (s *Server) setTLS(tc *tls.Config) {
	if tc == nil {
		return
	}
	tc = tc.Clone()
	if tc.MinVersion < tls.VersionTLS12 {
		tc.MinVersion = tls.VersionTLS12
	}
	s.tlsCfg.Store(tc)
}

// acceptOn starts an accept loop on l, if any; s.mu is held.
func (s *Server) acceptOn(l net.Listener) {
	if l == nil {
		return
	}
	s.wg.Add(1)
	go s.acceptLoop(l)
}

// Relisten moves a started server to new listen addresses and TLS material
// without ending any session. A listener whose address is unchanged is kept
// (its socket never closes, so no connection is refused meanwhile) and
// takes tc for its next handshakes; a changed one is bound before the old
// one is closed. On error nothing changed: the old listeners still accept.
// An address held by the old listener under another spelling (":5000" and
// "127.0.0.1:5000") cannot be bound before it is released: that change
// needs a stop and a start.
func (s *Server) Relisten(ctx context.Context, addr, tlsAddr string, tc *tls.Config) error {
	if addr == "" && tlsAddr == "" {
		return errors.New("relisten: no listen address")
	}
	if tlsAddr != "" && (tc == nil || (len(tc.Certificates) == 0 && tc.GetCertificate == nil && tc.GetConfigForClient == nil)) {
		return errors.New("relisten: a TLS address needs a certificate")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing || s.refusing {
		return ErrServerClosed
	}
	if !s.started {
		return errors.New("relisten: pesit server not started")
	}
	bindAddr, bindTLS := "", ""
	if addr != s.cfg.Addr {
		bindAddr = addr
	}
	if tlsAddr != s.cfg.TLSAddr {
		bindTLS = tlsAddr
	}
	plain, secure, err := s.bind(ctx, bindAddr, bindTLS)
	if err != nil {
		return err
	}
	s.setTLS(tc)
	if addr != s.cfg.Addr {
		if s.plain != nil {
			s.plain.Close() // its accept loop ends on net.ErrClosed
		}
		s.plain = plain
		s.acceptOn(plain)
	}
	if tlsAddr != s.cfg.TLSAddr {
		if s.secure != nil {
			s.secure.Close()
		}
		s.secure = secure
		s.acceptOn(secure)
	}
	s.cfg.Addr, s.cfg.TLSAddr, s.cfg.TLS = addr, tlsAddr, tc
	s.log.Info("pesit server listening", "addr", addrOf(s.plain), "tls_addr", addrOf(s.secure))
	return nil
}

// SetMaxSessions changes the session bound (3/303) of a running server;
// sessions beyond a lowered bound go on, new ones wait for room.
func (s *Server) SetMaxSessions(n int) {
	if n <= 0 {
		n = 100 // as Config
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg.MaxSessions = n
}

func addrOf(l net.Listener) net.Addr {
	if l == nil {
		return nil
	}
	return l.Addr()
}

// Serve starts the server if needed and blocks until ctx is cancelled or
// Shutdown has finished. On cancellation it aborts the remaining sessions at
// once (ABORT 3/316); call Shutdown with a deadline for a graceful drain.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	started := s.started
	s.mu.Unlock()
	if !started {
		if err := s.Start(ctx); err != nil {
			return err
		}
	}
	select {
	case <-ctx.Done():
		expired, cancel := context.WithCancel(context.Background())
		cancel()
		return s.Shutdown(expired)
	case <-s.done:
		return nil
	}
}

// Addr is the address of the plain listener, or nil.
func (s *Server) Addr() net.Addr { return s.listenerAddr(false) }

// TLSAddr is the address of the TLS listener, or nil.
func (s *Server) TLSAddr() net.Addr { return s.listenerAddr(true) }

func (s *Server) listenerAddr(wantTLS bool) net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if wantTLS {
		return addrOf(s.secure)
	}
	return addrOf(s.plain)
}

// ActiveSessions is the number of open connections (before and after CONNECT).
func (s *Server) ActiveSessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// StopAccepting closes the listeners at once and returns; live sessions go
// on until Shutdown. The HA loop calls it before it resigns, so that a new
// leader never accepts while this node still does.
func (s *Server) StopAccepting() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refusing = true
	s.closeListeners()
}

// closeListeners closes both listeners; s.mu is held.
func (s *Server) closeListeners() {
	for _, l := range []net.Listener{s.plain, s.secure} {
		if l != nil {
			l.Close()
		}
	}
}

// Shutdown stops accepting and lets sessions finish until ctx is done. Then
// each transfer still in its data phase is interrupted with IDT 2/216, PI 19
// = 4 (restart will follow): its record becomes interrupted at its last
// acknowledged sync point once ACK(IDT) comes back, and the partner's
// restart resumes it on the next leader. Sessions still open IDTTimeout
// later get ABORT 3/316 (their records are interrupted too when data was
// received). Shutdown returns when every session has ended.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		<-s.done
		return nil
	}
	s.closing = true
	s.closeListeners()
	var idle []*session
	for ss := range s.sessions {
		if ss.idle.Load() {
			idle = append(idle, ss)
		}
	}
	s.mu.Unlock()
	// Sessions with no transfer under way are not worth waiting for.
	for _, ss := range idle {
		ss.abort(fpdu.DiagAdministrativeStop, "server shutdown")
	}

	drained := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-ctx.Done():
		s.interruptTransfers(drained)
		s.cancelBase()
		for _, ss := range s.liveSessions() {
			ss.abort(fpdu.DiagAdministrativeStop, "server shutdown")
		}
		<-drained
	}
	s.cancelBase()
	close(s.done)
	s.log.Info("pesit server stopped")
	return nil
}

// HasTransfer reports whether a session of this server runs the transfer
// with journal id.
func (s *Server) HasTransfer(id int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.transfers[id]
	return ok
}

func (s *Server) liveSessions() []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	live := make([]*session, 0, len(s.sessions))
	for ss := range s.sessions {
		live = append(live, ss)
	}
	return live
}

// interruptTransfers sends IDT 2/216, PI 19 = 4 to every session in its
// data phase and waits until drained or IDTTimeout, whichever comes first.
// A session blocked writing to a slow partner holds its write lock: its
// IDT is sent from a goroutine of its own, and the abort that follows the
// timeout (which breaks the write) lets that goroutine go.
func (s *Server) interruptTransfers(drained <-chan struct{}) {
	var wg sync.WaitGroup
	defer wg.Wait()
	deadline := time.Now().Add(s.cfg.IDTTimeout)
	n := 0
	for _, ss := range s.liveSessions() {
		if !ss.dataPhase.Load() {
			continue
		}
		n++
		wg.Add(1)
		go func() {
			defer wg.Done()
			ss.interruptForShutdown(deadline)
		}()
	}
	if n == 0 {
		return
	}
	s.log.Info("drain timeout: interrupting transfers for a restart", "transfers", n, "ack_wait", s.cfg.IDTTimeout)
	t := time.NewTimer(s.cfg.IDTTimeout)
	defer t.Stop()
	select {
	case <-drained:
	case <-t.C:
	}
	if !isClosed(drained) {
		// Break the writes still stuck on a partner that does not read,
		// so that the IDT writers, bounded by deadline, let go.
		for _, ss := range s.liveSessions() {
			ss.conn.SetWriteDeadline(time.Now())
		}
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// CancelTransfer interrupts the live transfer with journal id: during data
// transfer with IDT (PI 19 = 12, cancelled by the server), otherwise by
// aborting its session (3/312).
func (s *Server) CancelTransfer(ctx context.Context, id int64) error {
	s.mu.Lock()
	ss := s.transfers[id]
	s.mu.Unlock()
	if ss == nil {
		return fmt.Errorf("cancel transfer %d: %w", id, ErrNoSuchTransfer)
	}
	return ss.cancelTransfer(ctx, id)
}

func (s *Server) acceptLoop(l net.Listener) {
	defer s.wg.Done()
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing || s.isRefusing() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Temporary failure (EMFILE...): back off as net/http does.
			if delay == 0 {
				delay = 5 * time.Millisecond
			} else if delay *= 2; delay > time.Second {
				delay = time.Second
			}
			s.log.Warn("accept failed", "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		s.mu.Lock()
		// Hard bound on raw connections: the CONNECT-level refusal (3/303)
		// needs a session, but a flood must not get unbounded goroutines.
		if s.closing || s.refusing || len(s.sessions) >= 2*s.cfg.MaxSessions+16 {
			s.mu.Unlock()
			s.countConn("dropped")
			c.Close()
			continue
		}
		// One address may not hold every slot (idle sockets, a guesser's
		// parallel CONNECTs): its excess connections are closed at once,
		// before any goroutine, buffer or byte read is spent on them.
		host := hostOf(c.RemoteAddr())
		if s.cfg.MaxConnsPerAddr > 0 && s.perAddr[host] >= s.cfg.MaxConnsPerAddr {
			s.mu.Unlock()
			s.countConn("dropped_per_address")
			c.Close()
			continue
		}
		s.perAddr[host]++
		ss := newSession(s, c)
		ss.addr = host
		s.sessions[ss] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			ss.run()
			s.mu.Lock()
			delete(s.sessions, ss)
			if s.perAddr[host]--; s.perAddr[host] <= 0 {
				delete(s.perAddr, host)
			}
			s.mu.Unlock()
		}()
	}
}

// admit reserves a session slot for partner after CONNECT was validated.
func (s *Server) admit(p Partner) fpdu.Diagnostic {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return fpdu.DiagServerUnavailable
	}
	if s.connected >= s.cfg.MaxSessions {
		return fpdu.DiagTooManyConnections
	}
	if p.MaxSessions > 0 && s.byPartner[p.ID] >= p.MaxSessions {
		return fpdu.DiagTooManyForPartner
	}
	s.connected++
	s.byPartner[p.ID]++
	if s.met != nil {
		s.met.SessionsActive.WithLabelValues(s.cfg.ID).Inc()
	}
	return fpdu.DiagOK
}

func (s *Server) release(p Partner) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.connected--
	if s.byPartner[p.ID]--; s.byPartner[p.ID] <= 0 {
		delete(s.byPartner, p.ID)
	}
	if s.met != nil {
		s.met.SessionsActive.WithLabelValues(s.cfg.ID).Dec()
	}
}

func (s *Server) trackTransfer(id int64, ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss == nil {
		delete(s.transfers, id)
	} else {
		s.transfers[id] = ss
	}
}

// claimPath marks a final path as being received, so that two sessions do
// not write the same file (2/207).
func (s *Server) claimPath(p string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, busy := s.receiving[p]; busy {
		return false
	}
	s.receiving[p] = struct{}{}
	return true
}

func (s *Server) unclaimPath(p string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.receiving, p)
}

// ClaimPath reserves the final path p of a received file as a receiving
// session does from its CREATE to its end (a CREATE for p meanwhile gets
// 2/205); false when a session holds it. The node's sweep holds it while it
// publishes a file whose session a crash ended, so that no new transfer
// reuses the temporary file under it.
func (s *Server) ClaimPath(p string) bool { return s.claimPath(p) }

// ReleasePath ends a ClaimPath.
func (s *Server) ReleasePath(p string) { s.unclaimPath(p) }

func (s *Server) isRefusing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refusing
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

func (s *Server) countConn(result string) {
	if s.met != nil {
		s.met.Connections.WithLabelValues(s.cfg.ID, result).Inc()
	}
}

func (s *Server) countDiag(d fpdu.Diagnostic) {
	if s.met != nil && !d.OK() {
		// A peer's ABORT or IDT may carry any code: the label set must stay
		// closed, or a peer could grow /metrics without bound.
		code := "other"
		if d.Known() {
			code = d.String()
		}
		s.met.Diagnostics.WithLabelValues(code).Inc()
	}
}
