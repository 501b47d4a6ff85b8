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

	mu        sync.Mutex
	started   bool
	closing   bool
	refusing  bool // StopAccepting: listeners closed, sessions go on
	listeners []net.Listener
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
	var lc net.ListenConfig
	var lns []net.Listener
	fail := func(err error) error {
		for _, l := range lns {
			l.Close()
		}
		return err
	}
	if s.cfg.Addr != "" {
		l, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
		if err != nil {
			return fail(fmt.Errorf("listen %s: %w", s.cfg.Addr, err))
		}
		lns = append(lns, l)
	}
	if s.cfg.TLSAddr != "" {
		l, err := lc.Listen(ctx, "tcp", s.cfg.TLSAddr)
		if err != nil {
			return fail(fmt.Errorf("listen tls %s: %w", s.cfg.TLSAddr, err))
		}
		tc := s.cfg.TLS.Clone()
		if tc.MinVersion < tls.VersionTLS12 {
			tc.MinVersion = tls.VersionTLS12
		}
		lns = append(lns, tls.NewListener(l, tc))
	}
	s.listeners = lns
	s.started = true
	for _, l := range lns {
		s.wg.Add(1)
		go s.acceptLoop(l)
	}
	return nil
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
	i := 0
	if wantTLS {
		if s.cfg.TLSAddr == "" {
			return nil
		}
		if s.cfg.Addr != "" {
			i = 1
		}
	} else if s.cfg.Addr == "" {
		return nil
	}
	if i >= len(s.listeners) {
		return nil
	}
	return s.listeners[i].Addr()
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
	for _, l := range s.listeners {
		l.Close()
	}
}

// Shutdown stops accepting, lets sessions finish until ctx is done, then
// sends ABORT 3/316 to those still open and waits for them to end.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		<-s.done
		return nil
	}
	s.closing = true
	for _, l := range s.listeners {
		l.Close()
	}
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
		s.cancelBase()
		s.mu.Lock()
		live := make([]*session, 0, len(s.sessions))
		for ss := range s.sessions {
			live = append(live, ss)
		}
		s.mu.Unlock()
		for _, ss := range live {
			ss.abort(fpdu.DiagAdministrativeStop, "server shutdown")
		}
		<-drained
	}
	s.cancelBase()
	close(s.done)
	s.log.Info("pesit server stopped")
	return nil
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
