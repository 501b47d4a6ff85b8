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
	connected int                 // sessions past CONNECT
	byPartner map[string]int      // sessions per partner (3/309)
	transfers map[string]*session // by journal id; an entry lives as long as its transfer
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
		transfers:  make(map[string]*session),
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
func (srv *Server) Start(ctx context.Context) error {
	if err := srv.listen(ctx); err != nil {
		return err
	}
	srv.log.Info("pesit server listening", "addr", srv.Addr(), "tls_addr", srv.TLSAddr())
	return nil
}

func (srv *Server) listen(ctx context.Context) error {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.closing {
		return ErrServerClosed
	}
	if srv.started {
		return errors.New("pesit server already started")
	}
	plain, secure, err := srv.bind(ctx, srv.cfg.Addr, srv.cfg.TLSAddr)
	if err != nil {
		return err
	}
	srv.setTLS(srv.cfg.TLS)
	srv.plain, srv.secure = plain, secure
	srv.started = true
	srv.acceptOn(plain)
	srv.acceptOn(secure)
	return nil
}

// bind opens the listeners for addr and tlsAddr (either may be empty), or
// none of them.
func (srv *Server) bind(ctx context.Context, addr, tlsAddr string) (plain, secure net.Listener, err error) {
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
			return srv.tlsCfg.Load(), nil
		}})
	}
	return plain, secure, nil
}

func (srv *Server) setTLS(tc *tls.Config) {
	if tc == nil {
		return
	}
	tc = tc.Clone()
	if tc.MinVersion < tls.VersionTLS12 {
		tc.MinVersion = tls.VersionTLS12
	}
	srv.tlsCfg.Store(tc)
}

// acceptOn starts an accept loop on l, if any; srv.mu is held.
func (srv *Server) acceptOn(l net.Listener) {
	if l == nil {
		return
	}
	srv.wg.Add(1)
	go srv.acceptLoop(l)
}

// Relisten moves a started server to new listen addresses and TLS material
// without ending any session. A listener whose address is unchanged is kept
// (its socket never closes, so no connection is refused meanwhile) and
// takes tc for its next handshakes; a changed one is bound before the old
// one is closed. On error nothing changed: the old listeners still accept.
// An address held by the old listener under another spelling (":5000" and
// "127.0.0.1:5000") cannot be bound before it is released: that change
// needs a stop and a start.
func (srv *Server) Relisten(ctx context.Context, addr, tlsAddr string, tc *tls.Config) error {
	if addr == "" && tlsAddr == "" {
		return errors.New("relisten: no listen address")
	}
	if tlsAddr != "" && (tc == nil || (len(tc.Certificates) == 0 && tc.GetCertificate == nil && tc.GetConfigForClient == nil)) {
		return errors.New("relisten: a TLS address needs a certificate")
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.closing || srv.refusing {
		return ErrServerClosed
	}
	if !srv.started {
		return errors.New("relisten: pesit server not started")
	}
	bindAddr, bindTLS := "", ""
	if addr != srv.cfg.Addr {
		bindAddr = addr
	}
	if tlsAddr != srv.cfg.TLSAddr {
		bindTLS = tlsAddr
	}
	plain, secure, err := srv.bind(ctx, bindAddr, bindTLS)
	if err != nil {
		return err
	}
	srv.setTLS(tc)
	if addr != srv.cfg.Addr {
		if srv.plain != nil {
			srv.plain.Close() // its accept loop ends on net.ErrClosed
		}
		srv.plain = plain
		srv.acceptOn(plain)
	}
	if tlsAddr != srv.cfg.TLSAddr {
		if srv.secure != nil {
			srv.secure.Close()
		}
		srv.secure = secure
		srv.acceptOn(secure)
	}
	srv.cfg.Addr, srv.cfg.TLSAddr, srv.cfg.TLS = addr, tlsAddr, tc
	srv.log.Info("pesit server listening", "addr", addrOf(srv.plain), "tls_addr", addrOf(srv.secure))
	return nil
}

// SetMaxSessions changes the session bound (3/303) of a running server;
// sessions beyond a lowered bound go on, new ones wait for room.
func (srv *Server) SetMaxSessions(n int) {
	if n <= 0 {
		n = 100 // as Config
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	srv.cfg.MaxSessions = n
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
func (srv *Server) Serve(ctx context.Context) error {
	srv.mu.Lock()
	started := srv.started
	srv.mu.Unlock()
	if !started {
		if err := srv.Start(ctx); err != nil {
			return err
		}
	}
	select {
	case <-ctx.Done():
		expired, cancel := context.WithCancel(context.Background())
		cancel()
		return srv.Shutdown(expired)
	case <-srv.done:
		return nil
	}
}

// Addr is the address of the plain listener, or nil.
func (srv *Server) Addr() net.Addr { return srv.listenerAddr(false) }

// TLSAddr is the address of the TLS listener, or nil.
func (srv *Server) TLSAddr() net.Addr { return srv.listenerAddr(true) }

func (srv *Server) listenerAddr(wantTLS bool) net.Addr {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if wantTLS {
		return addrOf(srv.secure)
	}
	return addrOf(srv.plain)
}

// ActiveSessions is the number of open connections (before and after CONNECT).
func (srv *Server) ActiveSessions() int {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return len(srv.sessions)
}

// StopAccepting closes the listeners at once and returns; live sessions go
// on until Shutdown. The HA loop calls it before it resigns, so that a new
// leader never accepts while this node still does.
func (srv *Server) StopAccepting() {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	srv.refusing = true
	srv.closeListeners()
}

// closeListeners closes both listeners; srv.mu is held.
func (srv *Server) closeListeners() {
	for _, l := range []net.Listener{srv.plain, srv.secure} {
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
func (srv *Server) Shutdown(ctx context.Context) error {
	srv.mu.Lock()
	if srv.closing {
		srv.mu.Unlock()
		<-srv.done
		return nil
	}
	srv.closing = true
	srv.closeListeners()
	var idle []*session
	for ss := range srv.sessions {
		if ss.idle.Load() {
			idle = append(idle, ss)
		}
	}
	srv.mu.Unlock()
	// Sessions with no transfer under way are not worth waiting for.
	for _, ss := range idle {
		ss.abort(fpdu.DiagAdministrativeStop, "server shutdown")
	}

	drained := make(chan struct{})
	go func() {
		srv.wg.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-ctx.Done():
		srv.interruptTransfers(drained)
		srv.cancelBase()
		for _, ss := range srv.liveSessions() {
			ss.abort(fpdu.DiagAdministrativeStop, "server shutdown")
		}
		<-drained
	}
	srv.cancelBase()
	close(srv.done)
	srv.log.Info("pesit server stopped")
	return nil
}

// HasTransfer reports whether a session of this server runs the transfer
// with journal id.
func (srv *Server) HasTransfer(id string) bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	_, ok := srv.transfers[id]
	return ok
}

func (srv *Server) liveSessions() []*session {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	live := make([]*session, 0, len(srv.sessions))
	for ss := range srv.sessions {
		live = append(live, ss)
	}
	return live
}

// interruptTransfers sends IDT 2/216, PI 19 = 4 to every session in its
// data phase and waits until drained or IDTTimeout, whichever comes first.
// A session blocked writing to a slow partner holds its write lock: its
// IDT is sent from a goroutine of its own, and the abort that follows the
// timeout (which breaks the write) lets that goroutine go.
func (srv *Server) interruptTransfers(drained <-chan struct{}) {
	var wg sync.WaitGroup
	defer wg.Wait()
	deadline := time.Now().Add(srv.cfg.IDTTimeout)
	n := 0
	for _, ss := range srv.liveSessions() {
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
	srv.log.Info("drain timeout: interrupting transfers for a restart", "transfers", n, "ack_wait", srv.cfg.IDTTimeout)
	t := time.NewTimer(srv.cfg.IDTTimeout)
	defer t.Stop()
	select {
	case <-drained:
	case <-t.C:
	}
	if !isClosed(drained) {
		// Break the writes still stuck on a partner that does not read,
		// so that the IDT writers, bounded by deadline, let go.
		for _, ss := range srv.liveSessions() {
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
func (srv *Server) CancelTransfer(ctx context.Context, id string) error {
	srv.mu.Lock()
	ss := srv.transfers[id]
	srv.mu.Unlock()
	if ss == nil {
		return fmt.Errorf("cancel transfer %s: %w", id, ErrNoSuchTransfer)
	}
	return ss.cancelTransfer(ctx, id)
}

func (srv *Server) acceptLoop(l net.Listener) {
	defer srv.wg.Done()
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			srv.mu.Lock()
			closing := srv.closing
			srv.mu.Unlock()
			if closing || srv.isRefusing() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Temporary failure (EMFILE...): back off as net/http does.
			if delay == 0 {
				delay = 5 * time.Millisecond
			} else if delay *= 2; delay > time.Second {
				delay = time.Second
			}
			srv.log.Warn("accept failed", "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		srv.mu.Lock()
		// Hard bound on raw connections: the CONNECT-level refusal (3/303)
		// needs a session, but a flood must not get unbounded goroutines.
		if srv.closing || srv.refusing || len(srv.sessions) >= 2*srv.cfg.MaxSessions+16 {
			srv.mu.Unlock()
			srv.countConn("dropped")
			c.Close()
			continue
		}
		// One address may not hold every slot (idle sockets, a guesser's
		// parallel CONNECTs): its excess connections are closed at once,
		// before any goroutine, buffer or byte read is spent on them.
		host := hostOf(c.RemoteAddr())
		if srv.cfg.MaxConnsPerAddr > 0 && srv.perAddr[host] >= srv.cfg.MaxConnsPerAddr {
			srv.mu.Unlock()
			srv.countConn("dropped_per_address")
			c.Close()
			continue
		}
		srv.perAddr[host]++
		ss := newSession(srv, c)
		ss.addr = host
		srv.sessions[ss] = struct{}{}
		srv.wg.Add(1)
		srv.mu.Unlock()
		go func() {
			defer srv.wg.Done()
			ss.run()
			srv.mu.Lock()
			delete(srv.sessions, ss)
			if srv.perAddr[host]--; srv.perAddr[host] <= 0 {
				delete(srv.perAddr, host)
			}
			srv.mu.Unlock()
		}()
	}
}

// admit reserves a session slot for partner after CONNECT was validated.
func (srv *Server) admit(p Partner) fpdu.Diagnostic {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.closing {
		return fpdu.DiagServerUnavailable
	}
	if srv.connected >= srv.cfg.MaxSessions {
		return fpdu.DiagTooManyConnections
	}
	if p.MaxSessions > 0 && srv.byPartner[p.ID] >= p.MaxSessions {
		return fpdu.DiagTooManyForPartner
	}
	srv.connected++
	srv.byPartner[p.ID]++
	if srv.met != nil {
		srv.met.SessionsActive.WithLabelValues(srv.cfg.ID).Inc()
	}
	return fpdu.DiagOK
}

func (srv *Server) release(p Partner) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	srv.connected--
	if srv.byPartner[p.ID]--; srv.byPartner[p.ID] <= 0 {
		delete(srv.byPartner, p.ID)
	}
	if srv.met != nil {
		srv.met.SessionsActive.WithLabelValues(srv.cfg.ID).Dec()
	}
}

func (srv *Server) trackTransfer(id string, ss *session) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if ss == nil {
		delete(srv.transfers, id)
	} else {
		srv.transfers[id] = ss
	}
}

// claimPath marks a final path as being received, so that two sessions do
// not write the same file (2/207).
func (srv *Server) claimPath(p string) bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if _, busy := srv.receiving[p]; busy {
		return false
	}
	srv.receiving[p] = struct{}{}
	return true
}

func (srv *Server) unclaimPath(p string) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	delete(srv.receiving, p)
}

// ClaimPath reserves the final path p of a received file as a receiving
// session does from its CREATE to its end (a CREATE for p meanwhile gets
// 2/205); false when a session holds it. The node's sweep holds it while it
// publishes a file whose session a crash ended, so that no new transfer
// reuses the temporary file under it.
func (srv *Server) ClaimPath(p string) bool { return srv.claimPath(p) }

// ReleasePath ends a ClaimPath.
func (srv *Server) ReleasePath(p string) { srv.unclaimPath(p) }

func (srv *Server) isRefusing() bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return srv.refusing
}

func (srv *Server) isClosing() bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return srv.closing
}

func (srv *Server) countConn(result string) {
	if srv.met != nil {
		srv.met.Connections.WithLabelValues(srv.cfg.ID, result).Inc()
	}
}

func (srv *Server) countDiag(d fpdu.Diagnostic) {
	if srv.met != nil && !d.OK() {
		// A peer's ABORT or IDT may carry any code: the label set must stay
		// closed, or a peer could grow /metrics without bound.
		code := "other"
		if d.Known() {
			code = d.String()
		}
		srv.met.Diagnostics.WithLabelValues(code).Inc()
	}
}
