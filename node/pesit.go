package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/vectis-ft/vectis/config"
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

	mu       sync.Mutex
	running  map[string]*server.Server
	stopping []stopping
	lostWG   sync.WaitGroup // endLost calls in flight; Drain waits for them
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
	defs, err := m.st.ListServers(ctx)
	if err != nil {
		return fmt.Errorf("list servers: %w", err)
	}
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
		return err
	}
	srv, err := server.New(cfg, server.Deps{
		Directory: m.dir, Journal: m.journal, Metrics: m.metrics, Logger: m.log,
		Passwords: partnerPasswords{dir: m.dir, v: m.dir.v}, OnLogin: auditLogin(m.st, m.log),
		MayServe: m.mayServe,
	})
	if err != nil {
		return fmt.Errorf("pesit server %s: %w", d.ID, err)
	}
	if err := srv.Start(ctx); err != nil {
		return fmt.Errorf("start pesit server %s on %s: %w", d.ID, d.Listen, err)
	}
	m.mu.Lock()
	m.running[d.ID] = srv
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
		cert, err := tls.LoadX509KeyPair(d.TLS.CertFile, d.TLS.KeyFile)
		if err != nil {
			return cfg, fmt.Errorf("pesit server %s: TLS key pair: %w", d.ID, err)
		}
		tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
		if d.TLS.ClientCAFile != "" {
			pem, err := os.ReadFile(d.TLS.ClientCAFile)
			if err != nil {
				return cfg, fmt.Errorf("pesit server %s: client CA: %w", d.ID, err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return cfg, fmt.Errorf("pesit server %s: no certificate in %s", d.ID, d.TLS.ClientCAFile)
			}
			tc.ClientCAs = pool
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
	m.lostWG.Wait()
	m.epoch.Store(0)
	return nil
}

// StopServer implements api.ServerControl.Stop for one server.
func (m *pesitManager) StopServer(ctx context.Context, id string) error {
	m.mu.Lock()
	srv, ok := m.running[id]
	delete(m.running, id)
	m.mu.Unlock()
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, m.timers.Drain)
	defer cancel()
	return srv.Shutdown(ctx)
}

// Running implements api.ServerControl.
func (m *pesitManager) Running(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.running[id]
	return ok
}

// runningCount is the number of servers accepting.
func (m *pesitManager) runningCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.running)
}

// lost ends the session of transfer n, which a newer term took over: its
// writes are refused already, and its partner must not go on. It runs the
// cancellation apart, since it is called from that session's goroutine.
func (m *pesitManager) lost(n int64) {
	m.lostWG.Add(1)
	go func() {
		defer m.lostWG.Done()
		m.mu.Lock()
		servers := make([]*server.Server, 0, len(m.running)+len(m.stopping))
		for _, s := range m.running {
			servers = append(servers, s)
		}
		for _, s := range m.stopping {
			servers = append(servers, s.srv)
		}
		m.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, s := range servers {
			err := s.CancelTransfer(ctx, n)
			if err == nil {
				m.log.Warn("transfer taken over by a newer term; its session here is ended", "transfer", n)
				return
			}
			if !errors.Is(err, server.ErrNoSuchTransfer) {
				m.log.Warn("end the session of a transfer taken over", "transfer", n, "err", err)
				return
			}
		}
	}()
}

// Cancel implements api.TransferCanceller.
func (m *pesitManager) Cancel(ctx context.Context, transferID string) (bool, error) {
	m.journal.mu.Lock()
	n, ok := m.journal.byName[transferID]
	m.journal.mu.Unlock()
	if !ok {
		return false, nil
	}
	m.mu.Lock()
	servers := make([]*server.Server, 0, len(m.running))
	for _, s := range m.running {
		servers = append(servers, s)
	}
	m.mu.Unlock()
	for _, s := range servers {
		err := s.CancelTransfer(ctx, n)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, server.ErrNoSuchTransfer) {
			return false, err
		}
	}
	return false, nil
}

// restartChanged re-creates a running server whose definition changed, so
// that a new listen address or TLS setting applies without a node restart.
func (m *pesitManager) restartChanged(ctx context.Context, id string) {
	if !m.Running(id) || m.epoch.Load() == 0 {
		return
	}
	d, err := m.st.GetServer(ctx, id)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			_ = m.StopServer(ctx, id)
		}
		return
	}
	if err := m.StopServer(ctx, id); err != nil {
		m.log.Warn("stop changed server", "server", id, "err", err)
	}
	if err := m.start(ctx, d); err != nil {
		m.log.Error("restart changed server", "server", id, "err", err)
	}
}
