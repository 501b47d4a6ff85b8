package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/trace"

	"github.com/vectis-ft/vectis/config"
	"github.com/vectis-ft/vectis/internal/tlsfiles"
	"github.com/vectis-ft/vectis/pesit/server"
	"github.com/vectis-ft/vectis/store"
)

// errNotLeader refuses to start a PeSIT server on a node that does not lead.
var errNotLeader = errors.New("this node is not the leader")

// pesitManager runs this node's PeSIT servers, built from the server
// definitions in the store. It is the leader's Serving for the HA loop and
// the API's ServerControl and TransferCanceller.
type pesitManager struct {
	st      *store.Store
	timers  config.Timers
	limits  config.Limits
	bind    string // node.bindAddress for port-only listen addresses
	debug   bool
	metrics *server.Metrics
	tracer  trace.TracerProvider
	log     *slog.Logger
	journal *journal
	dir     directory

	epoch atomic.Int64 // current term; 0 when not leading
	// mayServe says whether the leadership is valid right now (nil: always,
	// standalone); every server asks it before ACONNECT.
	mayServe func() bool

	mu      sync.Mutex
	running map[string]*server.Server
	// applied is the definition each running server listens by; listenErr
	// says why a server's definition could not be applied here (a start or
	// a change that failed to bind). See applyChange.
	applied   map[string]store.Server
	listenErr map[string]string
	// applyMu orders definition changes: the API's PUT and the store's
	// change feed both apply the same change, the second as a no-op.
	applyMu  sync.Mutex
	stopping []stopping
}

// stopping is a server whose listeners are closed and whose sessions drain
// until cancel.
type stopping struct {
	srv    *server.Server
	cancel context.CancelFunc
	done   chan struct{}
}

// Start implements ha.Serving: it starts every auto-start server for the
// term. On error every server it started is stopped again.
func (m *pesitManager) Start(ctx context.Context, epoch int64) error {
	m.epoch.Store(epoch)
	m.mu.Lock()
	clear(m.listenErr) // a new term reports its own failures
	m.mu.Unlock()
	defs, err := m.st.ListServers(ctx)
	if err != nil {
		return fmt.Errorf("list servers: %w", err)
	}
	m.applyMu.Lock() // no definition change applies half-way through
	defer m.applyMu.Unlock()
	for _, d := range defs {
		if !d.AutoStart {
			continue
		}
		if err := m.start(ctx, d); err != nil {
			m.StopAccepting()
			_ = m.Drain(ctx)
			return err
		}
	}
	return nil
}

// StartServer implements api.ServerControl.Start.
func (m *pesitManager) StartServer(ctx context.Context, id string) error {
	if m.epoch.Load() == 0 {
		return errNotLeader
	}
	m.applyMu.Lock() // a PUT's applyChange may start the same server
	defer m.applyMu.Unlock()
	d, err := m.st.GetServer(ctx, id)
	if err != nil {
		return err
	}
	return m.start(ctx, d)
}

func (m *pesitManager) start(ctx context.Context, d store.Server) error {
	m.mu.Lock()
	if _, ok := m.running[d.ID]; ok {
		m.mu.Unlock()
		return nil
	}
	m.mu.Unlock()
	cfg, err := m.serverConfig(d)
	if err != nil {
		m.setListenErr(d.ID, err)
		return err
	}
	srv, err := server.New(cfg, server.Deps{
		Directory: m.dir, Journal: m.journal, Metrics: m.metrics, Logger: m.log,
		Passwords: partnerPasswords{dir: m.dir, v: m.dir.v}, OnLogin: auditLogin(m.st, m.log),
		MayServe: m.mayServe,
	})
	if err != nil {
		m.setListenErr(d.ID, err)
		return fmt.Errorf("pesit server %s: %w", d.ID, err)
	}
	if err := srv.Start(ctx); err != nil {
		err = fmt.Errorf("start pesit server %s on %s: %w", d.ID, d.Listen, err)
		m.setListenErr(d.ID, err)
		return err
	}
	m.mu.Lock()
	m.running[d.ID] = srv
	m.applied[d.ID] = d
	delete(m.listenErr, d.ID)
	m.mu.Unlock()
	m.log.Info("pesit server accepting", "server", d.ID, "addr", srv.Addr(), "tls", srv.TLSAddr())
	return nil
}

func (m *pesitManager) serverConfig(d store.Server) (server.Config, error) {
	cfg := server.Config{
		ID:                d.ID,
		Addr:              config.BindHost(d.Listen, m.bind),
		MaxSessions:       d.MaxSessions,
		ConnectTimeout:    m.timers.Connect,
		InactivityTimeout: m.timers.Inactivity,
		IdleTimeout:       m.timers.Idle,
		FirstFPDUTimeout:  m.limits.FirstFPDU,
		MaxConnsPerAddr:   m.limits.MaxConnectionsPerAddress,
		LoginBurst:        m.limits.LoginFailureBurst,
		LoginRefill:       m.limits.LoginFailureRefill,
		SyncIntervalKB:    1024,
		SyncWindow:        4,
		MaxEntitySize:     65535,
		DebugFPDU:         m.debug,
		TracerProvider:    m.tracer,
	}
	if d.TLS.Listen != "" {
		// A TLS listener always presents a certificate: an empty CertFile
		// must fail here as it did before the shared loader.
		if d.TLS.CertFile == "" {
			return cfg, fmt.Errorf("pesit server %s: TLS key pair: no certificate file", d.ID)
		}
		tc, err := tlsfiles.Load(tlsfiles.Server, tlsfiles.Files{Cert: d.TLS.CertFile, Key: d.TLS.KeyFile, CA: d.TLS.ClientCAFile})
		if err != nil {
			return cfg, fmt.Errorf("pesit server %s: %w", d.ID, err)
		}
		if tc.ClientAuth, err = clientAuth(d.TLS); err != nil {
			return cfg, fmt.Errorf("pesit server %s: %w", d.ID, err)
		}
		cfg.TLSAddr, cfg.TLS = config.BindHost(d.TLS.Listen, m.bind), tc
	}
	return cfg, nil
}

// StopAccepting implements ha.Serving: every listener closes now; live
// sessions go on until Drain.
// clientAuth maps the configured mode to crypto/tls. Without a mode the
// former behaviour holds: verify a certificate if given when client CAs
// are configured, else only request one (fingerprints).
func clientAuth(t store.ServerTLS) (tls.ClientAuthType, error) {
	switch t.ClientAuth {
	case "":
		if t.ClientCAFile != "" {
			return tls.VerifyClientCertIfGiven, nil
		}
		return tls.RequestClientCert, nil
	case store.ClientAuthRequest:
		return tls.RequestClientCert, nil
	case store.ClientAuthRequireAny:
		return tls.RequireAnyClientCert, nil
	case store.ClientAuthVerifyIfGiven, store.ClientAuthRequire:
		if t.ClientCAFile == "" {
			return 0, fmt.Errorf("tls clientAuth %q needs clientCAFile", t.ClientAuth)
		}
		if t.ClientAuth == store.ClientAuthRequire {
			return tls.RequireAndVerifyClientCert, nil
		}
		return tls.VerifyClientCertIfGiven, nil
	}
	return 0, fmt.Errorf("tls clientAuth %q: want request, verify-if-given, require-any or require", t.ClientAuth)
}

func (m *pesitManager) StopAccepting() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, srv := range m.running {
		// Listeners close before this returns, so that the HA loop can
		// resign right after without two nodes ever accepting at once.
		srv.StopAccepting()
		ctx, cancel := context.WithCancel(context.Background())
		s := stopping{srv: srv, cancel: cancel, done: make(chan struct{})}
		go func() { defer close(s.done); _ = srv.Shutdown(ctx) }()
		m.stopping = append(m.stopping, s)
		delete(m.running, id)
	}
}

// Drain implements ha.Serving: it waits for the stopping servers' sessions,
// and when ctx ends first, aborts them (ABORT 3/316).
func (m *pesitManager) Drain(ctx context.Context) error {
	m.mu.Lock()
	list := m.stopping
	m.stopping = nil
	m.mu.Unlock()
	for _, s := range list {
		select {
		case <-s.done:
		case <-ctx.Done():
			s.cancel()
			<-s.done
		}
		s.cancel()
	}
	m.epoch.Store(0)
	return nil
}

// StopServer implements api.ServerControl.Stop for one server.
func (m *pesitManager) StopServer(ctx context.Context, id string) error {
	m.mu.Lock()
	srv, ok := m.running[id]
	delete(m.running, id)
	delete(m.listenErr, id) // stopped on purpose: no failure to report
	m.mu.Unlock()
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, m.timers.Drain)
	defer cancel()
	return srv.Shutdown(ctx)
}

// Running implements api.ServerControl: the server listens here by its
// current definition. One whose changed definition could not be applied
// (ListenError) is not running it, even though its old listeners go on.
func (m *pesitManager) Running(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.running[id]
	_, failed := m.listenErr[id]
	return ok && !failed
}

// ListenError implements api.ServerControl: why the server's definition
// could not be applied on this node during this term, or "".
func (m *pesitManager) ListenError(id string) string {
	if m.epoch.Load() == 0 {
		return ""
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.listenErr[id]
}

// Listening implements api.ServerControl: the addresses the server's
// listeners are bound to here, which after a failed change are the old ones.
func (m *pesitManager) Listening(id string) (addr, tlsAddr string) {
	m.mu.Lock()
	srv := m.running[id]
	m.mu.Unlock()
	if srv == nil {
		return "", ""
	}
	if a := srv.Addr(); a != nil {
		addr = a.String()
	}
	if a := srv.TLSAddr(); a != nil {
		tlsAddr = a.String()
	}
	return addr, tlsAddr
}

func (m *pesitManager) setListenErr(id string, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.listenErr[id] = err.Error()
}

// runningCount is the number of servers accepting.
func (m *pesitManager) runningCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.running)
}

// servers are this node's servers that may hold sessions: the running ones
// and those still draining.
func (m *pesitManager) servers() []*server.Server {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*server.Server, 0, len(m.running)+len(m.stopping))
	for _, s := range m.running {
		out = append(out, s)
	}
	for _, s := range m.stopping {
		out = append(out, s.srv)
	}
	return out
}

// claimPath reserves the final path p on every server of this node, as a
// receiving session does (see server.ClaimPath); false, with nothing held,
// when one of them is receiving into p. release ends the claim.
func (m *pesitManager) claimPath(p string) (release func(), ok bool) {
	servers := m.servers()
	var held []*server.Server
	release = func() {
		for _, s := range held {
			s.ReleasePath(p)
		}
	}
	for _, s := range servers {
		if !s.ClaimPath(p) {
			release()
			return nil, false
		}
		held = append(held, s)
	}
	return release, true
}

// live says whether a session of this node runs the transfer with store id.
func (m *pesitManager) live(id string) bool {
	for _, s := range m.servers() {
		if s.HasTransfer(id) {
			return true
		}
	}
	return false
}

// sessionCanceller is what Cancel asks of a PeSIT server: to interrupt
// the transfer with a store id if one of its sessions runs it, or to say
// server.ErrNoSuchTransfer.
type sessionCanceller interface {
	CancelTransfer(ctx context.Context, id string) error
}

// Cancel implements api.TransferCanceller. It asks every server that may
// hold sessions, draining ones included: the same list live reads.
func (m *pesitManager) Cancel(ctx context.Context, transferID string) (bool, error) {
	for _, s := range m.servers() {
		err := sessionCanceller(s).CancelTransfer(ctx, transferID)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, server.ErrNoSuchTransfer) {
			return false, err
		}
	}
	return false, nil
}

// applyChange brings server id on this node in line with its stored
// definition. Only a change of the listening definition (addresses, TLS
// material, client authentication) touches the listeners, and then without
// ending a session: the server binds the new address before it releases the
// old one (server.Relisten). A description or autoStart change does
// nothing, a maxSessions change applies in place. A change that cannot be
// applied leaves the old listeners up and is reported by ListenError and
// Running; the next change, or the same definition again, is tried anew. A
// server that failed to start here is started by its next change; one an
// operator stopped stays stopped.
func (m *pesitManager) applyChange(ctx context.Context, id string) error {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	if m.epoch.Load() == 0 {
		return nil
	}
	d, err := m.st.GetServer(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return m.StopServer(ctx, id)
	}
	if err != nil {
		return fmt.Errorf("read server %s: %w", id, err)
	}
	m.mu.Lock()
	srv, running := m.running[id]
	old := m.applied[id]
	_, failed := m.listenErr[id]
	m.mu.Unlock()
	if !running {
		if failed && d.AutoStart {
			return m.start(ctx, d)
		}
		return nil
	}
	if !sameListening(old, d) {
		cfg, err := m.serverConfig(d)
		if err == nil {
			err = srv.Relisten(ctx, cfg.Addr, cfg.TLSAddr, cfg.TLS)
		}
		if errors.Is(err, server.ErrServerClosed) {
			return nil // stopped meanwhile (API stop, end of term): nothing to apply
		}
		if err != nil {
			err = fmt.Errorf("pesit server %s: new definition not applied, old listeners kept: %w", id, err)
			m.setListenErr(id, err)
			m.log.Error("apply server change", "server", id, "err", err)
			return err
		}
		m.log.Info("pesit server listening by its new definition", "server", id, "addr", srv.Addr(), "tls", srv.TLSAddr())
	}
	if old.MaxSessions != d.MaxSessions {
		srv.SetMaxSessions(d.MaxSessions)
	}
	m.mu.Lock()
	m.applied[id] = d
	delete(m.listenErr, id)
	m.mu.Unlock()
	return nil
}

// sameListening says whether two definitions listen alike. The TLS files
// are compared by name: new material under the same names is read by a
// stop and a start, or by the next change of the listening definition.
func sameListening(a, b store.Server) bool {
	return a.Listen == b.Listen && a.TLS == b.TLS
}
