// Package node assembles one Vectis process from its parts: telemetry, the
// store, the PeSIT servers, the admin API, and either the HA loop (cluster
// mode) or a standalone leadership. It holds the glue between packages that
// must not know each other (pesit/server knows nothing of SQL, api nothing
// of etcd), and no protocol, storage or election logic of its own.
package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vectis-ft/vectis/api"
	"github.com/vectis-ft/vectis/config"
	"github.com/vectis-ft/vectis/election"
	"github.com/vectis-ft/vectis/ha"
	"github.com/vectis-ft/vectis/internal/credential"
	"github.com/vectis-ft/vectis/internal/fileroot"
	"github.com/vectis-ft/vectis/pesit/server"
	"github.com/vectis-ft/vectis/store"
	"github.com/vectis-ft/vectis/telemetry"
)

// Options are what the command line adds to the configuration.
type Options struct {
	Version   string
	LogOutput io.Writer // default os.Stderr
	// Labeler sets the leader pod label in cluster mode; nil runs without
	// Kubernetes (the caller builds it from the k8s package).
	Labeler ha.Labeler
	// Collectors are the caller's own metrics (e.g. the labeller's error
	// counter), registered with the node's registry at start.
	Collectors []prometheus.Collector
	// StopNotice, if set, blocks until the platform announces that this
	// node is about to be stopped (its Kubernetes pod is being deleted:
	// k8s.AwaitDeletion), returning nil, or until ctx ends. The node then
	// stops as if ctx had ended (hand over, drain, shutdown delay) without
	// waiting for the signal that follows. Any other error leaves the
	// node to that signal.
	StopNotice func(ctx context.Context, log *slog.Logger) error
}

// Run starts the node and blocks until ctx ends, then stops in order: PeSIT
// first (resigning leadership at once in cluster mode), then the API, then
// the store.
func Run(ctx context.Context, cfg *config.Config, opts Options) error {
	if opts.LogOutput == nil {
		opts.LogOutput = os.Stderr
	}
	tel, err := telemetry.Setup(ctx, telemetry.Config{
		ServiceVersion: opts.Version,
		InstanceID:     cfg.Node.Name,
		PodName:        cfg.Cluster.PodName,
		PodNamespace:   cfg.Cluster.Namespace,
		LogFormat:      cfg.Telemetry.LogFormat,
		LogLevel:       cfg.Telemetry.LogLevel,
		LogOutput:      opts.LogOutput,
	})
	if err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(sctx)
	}()
	log := tel.Logger.With("node", cfg.Node.Name)
	for _, c := range opts.Collectors {
		if err := tel.Registry.Register(c); err != nil {
			return fmt.Errorf("register metrics: %w", err)
		}
	}

	st, err := openStoreWaiting(ctx, cfg, tel, log)
	if errors.Is(err, errStoppedWaiting) {
		log.Info("node stopped before the store was reachable")
		return nil
	}
	if err != nil {
		return err
	}
	defer st.Close()

	for _, f := range cfg.PeSIT.Files {
		for _, dir := range []string{f.ReceiveDir, f.SendDir} {
			if dir == "" {
				continue
			}
			if err := os.MkdirAll(dir, 0o750); err != nil {
				return fmt.Errorf("virtual file %s: %w", f.ID, err)
			}
		}
	}
	res, err := st.ApplyDeclared(ctx, declared(cfg))
	if err != nil {
		return fmt.Errorf("apply declared configuration: %w", err)
	}
	log.Info("declared configuration applied", "result", fmt.Sprintf("%+v", res))

	// One verifier for the PeSIT servers and the API: the bound on password
	// derivations (about 19 MiB each) holds for the whole process.
	verifier, err := credential.New(credential.Config{Slots: cfg.PeSIT.Limits.PasswordVerifications, Registerer: tel.Registry})
	if err != nil {
		return err
	}
	roots, err := fileroot.New(cfg.FileRootDir())
	if err != nil {
		return err
	}
	leftovers, err := newLeftoverMetrics(tel.Registry)
	if err != nil {
		return err
	}
	pm, err := newPublishMetrics(tel.Registry)
	if err != nil {
		return err
	}
	n := &node{cfg: cfg, st: st, tel: tel, log: log, verifier: verifier, roots: roots, leftovers: leftovers, publishMet: pm,
		primer: newCredentialPrimer(st, verifier, cfg.PeSIT.Partners, log.With("component", "pesit"))}
	n.pesit = &pesitManager{
		st: st, timers: cfg.PeSIT.Timers, limits: cfg.PeSIT.Limits, bind: cfg.Node.BindAddress, debug: cfg.Telemetry.DebugFPDUs,
		metrics: server.NewMetrics(tel.Registry), tracer: tel.TracerProvider,
		log: log.With("component", "pesit"), running: map[string]*server.Server{},
		applied: map[string]store.Server{}, listenErr: map[string]string{},
		dir: directory{
			st: st, v: verifier, root: roots,
			partners: newPartnerView(st, log.With("component", "pesit")),
			files:    newFileView(st, log.With("component", "pesit")),
		},
	}
	return n.run(ctx, opts)
}

type node struct {
	cfg   *config.Config
	st    *store.Store
	tel   *telemetry.Telemetry
	log   *slog.Logger
	pesit *pesitManager
	loop  *ha.Loop
	// verifier checks every password of the process (PeSIT and API).
	verifier *credential.Verifier
	// primer pins the partner passwords declared in plain text.
	primer *credentialPrimer
	// roots confines virtual file directories and the partial files the
	// node deletes (vectis.fileRoot).
	roots     fileroot.Root
	leftovers *leftoverMetrics
	// publishMet counts the sweep of unpublished receives (publish.go).
	publishMet *publishMetrics
}

func (n *node) run(ctx context.Context, opts Options) error {
	var (
		view       api.ClusterView
		leadership api.Leadership
	)
	if n.cfg.Cluster.Enabled {
		metrics, err := ha.NewMetrics(n.tel.Registry)
		if err != nil {
			return fmt.Errorf("cluster metrics: %w", err)
		}
		n.pesit.journal = newJournal(n.st, n.cfg.Node.Name, n.pesit.epoch.Load, func(err error) {
			if n.loop != nil {
				n.loop.Demote(ha.ReasonStaleEpoch, err.Error())
			}
		})
		var (
			livenessLn   net.Listener
			livenessAddr string
			window       time.Duration
		)
		if n.cfg.Cluster.FastFailover {
			addr := config.BindHost(n.cfg.Cluster.LivenessListen, n.cfg.Node.BindAddress)
			if livenessLn, err = net.Listen("tcp", addr); err != nil {
				return fmt.Errorf("cluster.livenessListen %s: %w", addr, err)
			}
			livenessAddr = n.livenessAdvertised(livenessLn.Addr())
			window = n.cfg.Cluster.ConfirmWindow
			n.log.Info("liveness listener up; fast failover on", "addr", livenessLn.Addr().String(), "advertised", livenessAddr)
		}
		if l, ok := opts.Labeler.(interface{ UseLogger(*slog.Logger) }); ok {
			// Its lines then carry the node's format, name and millisecond
			// times, like the handover they belong to.
			l.UseLogger(n.log.With("component", "k8s"))
		}
		loop, err := ha.New(ha.Config{
			Election: election.Config{
				Endpoints: n.cfg.Cluster.Etcd.Endpoints,
				TTL:       n.cfg.Cluster.TTL,
				Cluster:   n.cfg.Cluster.Name,
				Name:      n.cfg.Node.Name,
				Address:   n.advertised(),
				Liveness:  livenessAddr,
				// The window is what lets a standby revoke this node's
				// lease without waiting for the TTL; see docs/ha.md.
				ConfirmWindow: window,
				CAFile:        n.cfg.Cluster.Etcd.TLS.CAFile,
				CertFile:      n.cfg.Cluster.Etcd.TLS.CertFile,
				KeyFile:       n.cfg.Cluster.Etcd.TLS.KeyFile,
				Username:      n.cfg.Cluster.Etcd.Username,
				Password:      n.cfg.Cluster.Etcd.Password,
				Logger:        n.log,
			},
			Serving:          n.pesit,
			Fence:            n.st,
			Labeler:          opts.Labeler,
			LeaderJobs:       n.leaderJobs,
			DrainTimeout:     n.cfg.PeSIT.Timers.Drain,
			FastFailover:     n.cfg.Cluster.FastFailover,
			LivenessListener: livenessLn,
			Metrics:          metrics,
			TracerProvider:   n.tel.TracerProvider,
			Logger:           n.log,
		})
		if err != nil {
			if livenessLn != nil {
				livenessLn.Close()
			}
			return err
		}
		n.loop = loop
		n.pesit.mayServe = loop.MayServe
		view, leadership = clusterView{loop}, loop
	} else {
		n.pesit.journal = newJournal(n.st, n.cfg.Node.Name, n.pesit.epoch.Load, nil)
		sa := api.Standalone{ClusterName: n.cfg.Cluster.Name, Name: n.cfg.Node.Name, Address: n.advertised(), Since: time.Now()}
		view, leadership = sa, sa
	}

	handler, err := api.New(api.Config{
		Store:          n.st,
		Cluster:        view,
		Leadership:     leadership,
		Servers:        serverControl{n.pesit},
		Canceller:      transferCanceller{n},
		FileRoot:       n.roots,
		Readiness:      api.ReadinessFunc(n.ready),
		Users:          staticUsers(n.cfg.API.Users),
		Verifier:       n.verifier,
		Metrics:        n.tel.Registry,
		TracerProvider: n.tel.TracerProvider,
		Logger:         n.log.With("component", "api"),
	})
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	if _, err := api.EnsureAdmin(ctx, n.st, staticUsers(n.cfg.API.Users), n.log); err != nil {
		return fmt.Errorf("admin user: %w", err)
	}
	httpSrv, err := api.NewHTTPServer(api.ServerConfig{
		Addr: n.cfg.API.Listen, Handler: handler,
		CertFile: n.cfg.API.TLS.CertFile, KeyFile: n.cfg.API.TLS.KeyFile, Logger: n.log,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", n.cfg.API.Listen)
	if err != nil {
		return fmt.Errorf("admin API listen %s: %w", n.cfg.API.Listen, err)
	}
	n.log.Info("admin API listening", "addr", ln.Addr().String())

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	wg.Add(4)
	go func() { defer wg.Done(); errc <- api.Serve(runCtx, httpSrv, ln) }()
	go func() { defer wg.Done(); n.followChanges(runCtx) }()
	go func() { defer wg.Done(); n.pesit.dir.partners.run(runCtx) }()
	go func() { defer wg.Done(); n.pesit.dir.files.run(runCtx) }()
	wg.Add(1)
	go func() { defer wg.Done(); n.primer.run(runCtx) }()
	if w, ok := opts.Labeler.(interface{ Watch(context.Context) error }); ok && n.loop != nil {
		// The labeller's copy of the pods, warm on standbys too: a new
		// leader's label then starts without a list.
		wg.Add(1)
		go func() { defer wg.Done(); _ = w.Watch(runCtx) }()
	}

	noticed := make(chan struct{})
	if opts.StopNotice != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch err := opts.StopNotice(runCtx, n.log.With("component", "k8s")); {
			case err == nil:
				close(noticed)
			case runCtx.Err() == nil:
				n.log.Warn("no early stop notice; stopping on the signal only", "err", err)
			}
		}()
	}

	if n.loop != nil {
		wg.Add(1)
		go func() { defer wg.Done(); errc <- n.loop.Run(runCtx) }()
	} else if err := n.leadStandalone(runCtx); err != nil {
		stop()
		wg.Wait()
		return err
	}

	stopping := false // a signalled stop, or its notice: hand over, drain, delay
	select {
	case <-ctx.Done():
		stopping = true
	case <-noticed:
		// What the signal would do, a few hundred milliseconds sooner.
		n.log.Info("own pod is being deleted: handing over now, before the kubelet's signal")
		stopping = true
	case err = <-errc:
		if err != nil {
			n.log.Error("component failed; stopping", "err", err)
		}
	}
	stop()
	if n.loop == nil {
		n.pesit.StopAccepting()
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), n.cfg.PeSIT.Timers.Drain)
		_ = n.pesit.Drain(dctx)
		cancel()
	}
	wg.Wait()
	if d := n.cfg.Cluster.ShutdownDelay; n.loop != nil && stopping && d > 0 {
		// Handed over and drained on a signal: stay alive a moment, so
		// that connections the Service still routes here are refused
		// rather than lost (see config.Cluster.ShutdownDelay).
		n.log.Info("handed over and drained; waiting before exit so that late connections are refused", "shutdownDelay", d)
		time.Sleep(d)
	}
	n.log.Info("node stopped")
	return err
}

// leadStandalone makes this node the leader of a cluster of one: it records
// a new term (so that records carry an epoch like in a cluster) and starts
// the auto-start servers.
func (n *node) leadStandalone(ctx context.Context) error {
	prev, err := n.st.Leadership(ctx)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("read leadership: %w", err)
	}
	epoch := prev.Epoch + 1
	if err := n.st.ClaimLeadership(ctx, epoch, n.cfg.Node.Name); err != nil {
		return fmt.Errorf("claim leadership: %w", err)
	}
	if err := n.pesit.Start(ctx, epoch); err != nil {
		return err
	}
	go n.leaderJobs(ctx, epoch)
	return nil
}

// leaderJobs runs the leader-only housekeeping until the term ends: the
// orphan and unpublished files sweeps and the partial-file gauge at once
// and then every cluster TTL, the expiry of interrupted transfers and
// retention every hour.
func (n *node) leaderJobs(ctx context.Context, epoch int64) {
	sweep := n.cfg.Cluster.TTL
	if sweep <= 0 {
		sweep = 5 * time.Second
	}
	orphans := time.NewTicker(sweep)
	defer orphans.Stop()
	retention := time.NewTicker(time.Hour)
	defer retention.Stop()
	// Only the leader reports partial files: the sum over pods is the total.
	defer n.leftovers.partialBytes.Set(0)
	n.sweep(ctx, epoch)
	n.expireLeftovers(ctx, epoch)
	n.purge(ctx, epoch)
	n.measurePartials(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-orphans.C:
			n.sweep(ctx, epoch)
			n.sweepUnrecorded(ctx, epoch, sweep)
			n.measurePartials(ctx)
		case <-retention.C:
			n.expireLeftovers(ctx, epoch)
			n.purge(ctx, epoch)
		}
	}
}

func (n *node) purge(ctx context.Context, epoch int64) {
	if n.cfg.Store.Retention <= 0 {
		return
	}
	res, err := n.st.Purge(ctx, epoch, n.cfg.Store.Retention)
	if err != nil && ctx.Err() == nil {
		n.log.Warn("retention purge", "err", err)
	} else if err == nil {
		n.log.Debug("retention purge", "result", fmt.Sprintf("%+v", res))
	}
}

// sweep runs the sweeps that need to know which owners are gone: orphans
// first, then the completed receives whose file was not published.
func (n *node) sweep(ctx context.Context, epoch int64) {
	gone, err := n.goneFunc(ctx, epoch)
	if err != nil {
		if ctx.Err() == nil {
			n.log.Warn("orphan sweep", "err", err)
		}
		return
	}
	n.sweepOrphans(ctx, epoch, gone)
	n.sweepUnpublished(ctx, epoch, gone)
}

// sweepOrphans marks interrupted the in_progress transfers whose owner is
// gone, keeping their sync points, so that the partner's restart resumes
// them here. See ownerGone for who counts as gone.
func (n *node) sweepOrphans(ctx context.Context, epoch int64, gone func(store.Transfer) bool) {
	out, err := n.st.InterruptOrphans(ctx, epoch, n.cfg.Node.Name, gone)
	if err != nil && ctx.Err() == nil {
		n.log.Warn("orphan sweep", "err", err)
	}
	for _, t := range out {
		n.log.Warn("orphan transfer interrupted; a restart resumes it", "transfer", t.ID, "partner", t.PartnerID,
			"sync", t.SyncPoint.Number, "offset", t.SyncPoint.Offset, "diag", t.Diagnostic)
	}
}

// errSkip leaves a record as it is in an UpdateTransfer.
var errSkip = errors.New("record changed since listed")

// sweepUnrecorded marks interrupted this term's own in_progress transfers
// that no session here runs any longer, untouched for at least grace: their
// session ended without recording its outcome, because the store was down
// at their end (TRANS.END is then answered with IDT, docs/interop.md). Their
// sync point is kept, so that a restart still resumes them; without this
// they would stay in_progress for as long as this node leads when no restart
// comes. The orphan sweep covers the transfers of other owners.
func (n *node) sweepUnrecorded(ctx context.Context, epoch int64, grace time.Duration) {
	page, err := n.st.ListTransfers(ctx, store.TransferFilter{Status: store.StatusInProgress, Limit: 1000})
	if err != nil {
		if ctx.Err() == nil {
			n.log.Warn("unrecorded transfers sweep", "err", err)
		}
		return
	}
	self := n.cfg.Node.Name
	for _, t := range page.Items {
		if t.Node != self || t.Epoch != epoch || time.Since(t.UpdatedAt) < grace || n.pesit.live(t.ID) {
			continue
		}
		_, err := n.st.UpdateTransfer(ctx, epoch, t.ID, func(cur *store.Transfer) error {
			// A compare-and-set on what was listed: a sync point or a
			// restart since then (which updates the row) leaves it alone.
			if cur.Status != store.StatusInProgress || cur.Epoch != epoch || cur.Node != self ||
				cur.RestartCount != t.RestartCount || !cur.UpdatedAt.Equal(t.UpdatedAt) || n.pesit.live(t.ID) {
				return errSkip
			}
			cur.Status = store.StatusInterrupted
			cur.Diagnostic = "session ended without recording its outcome; interrupted by the sweep"
			return nil
		})
		switch {
		case errors.Is(err, errSkip):
		case err != nil:
			if ctx.Err() == nil {
				n.log.Warn("unrecorded transfers sweep", "transfer", t.ID, "err", err)
			}
		default:
			n.log.Warn("transfer whose outcome was not recorded interrupted; a restart resumes it", "transfer", t.ID,
				"partner", t.PartnerID, "sync", t.SyncPoint.Number, "offset", t.SyncPoint.Offset)
		}
	}
}

// ownerGone decides whether the owner of an in_progress transfer is gone.
// This node's older terms are gone: a term ends only after its sessions did.
// Without a cluster every other owner is gone (an earlier process). In a
// cluster, an owner is alive while its member key is (its lease lives) and
// it registered before the transfer's last write: a member that registered
// since is a new session of that node, which drained or aborted everything
// of the old one first. An old leader that drains after a handover keeps its
// key, so its transfers are left to it; if it dies, its key goes within a
// TTL and the next sweep takes them.
func ownerGone(self string, epoch int64, standalone bool, members []election.MemberInfo) func(store.Transfer) bool {
	started := make(map[string]time.Time, len(members))
	for _, m := range members {
		started[m.Name] = m.StartedAt
	}
	return func(t store.Transfer) bool {
		if t.Node == self && t.Epoch < epoch {
			return true
		}
		if standalone {
			return true
		}
		since, ok := started[t.Node]
		return !ok || since.After(t.UpdatedAt)
	}
}

// followChanges applies server definition changes made through any node's
// API to the servers running here; partner and file changes reach the
// sessions through the directory's views (catalogview.go).
func (n *node) followChanges(ctx context.Context) {
	for ch := range n.st.Subscribe(ctx) {
		if ch.Kind == store.KindServer {
			// Errors are kept for the API (ListenError) and logged there.
			_ = n.pesit.applyChange(ctx, ch.ID)
		}
		if ch.Kind == store.KindPartner {
			// A disabled, deleted or re-keyed partner is checked against the
			// store again at its next CONNECT, not let in from the cache.
			n.verifier.Forget("partner:" + ch.ID)
			n.primer.changed(ch.ID)
		}
		n.log.Debug("configuration change", "kind", ch.Kind, "id", ch.ID, "op", ch.Op)
	}
}

// ready backs /readyz: the store answers, and a leader accepts PeSIT.
func (n *node) ready(ctx context.Context) error {
	if err := n.st.Ping(ctx); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	leading := n.loop == nil || n.loop.IsLeader()
	if leading && n.pesit.runningCount() == 0 {
		defs, err := n.st.ListServers(ctx)
		if err != nil {
			return fmt.Errorf("store: %w", err)
		}
		for _, d := range defs {
			if d.AutoStart {
				return errors.New("leader has no PeSIT listener up")
			}
		}
	}
	return nil
}

// livenessAdvertised is how standbys reach the liveness listener bound at
// bound: cluster.livenessAdvertise, else the node's address with the port.
func (n *node) livenessAdvertised(bound net.Addr) string {
	if a := n.cfg.Cluster.LivenessAdvertise; a != "" {
		return a
	}
	_, port, err := net.SplitHostPort(bound.String())
	if err != nil {
		return bound.String()
	}
	return net.JoinHostPort(n.advertised(), port)
}

func (n *node) advertised() string {
	if n.cfg.Node.Address != "" {
		return n.cfg.Node.Address
	}
	return "127.0.0.1"
}

func openStore(ctx context.Context, cfg *config.Config, tel *telemetry.Telemetry, log *slog.Logger) (*store.Store, error) {
	sc := store.Config{Driver: cfg.Store.Driver, URL: cfg.Store.URL, Path: cfg.Store.Path, Registerer: tel.Registry, Logger: log.With("component", "store")}
	if sc.Driver == store.DriverSQLite {
		if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
			return nil, fmt.Errorf("data directory: %w", err)
		}
		if sc.Path == "" {
			sc.Path = filepath.Join(cfg.DataDir, "vectis.db")
		}
	}
	st, err := store.Open(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	return st, nil
}

// serverControl adapts the manager to api.ServerControl.
type serverControl struct{ m *pesitManager }

func (c serverControl) Start(ctx context.Context, id string) error { return c.m.StartServer(ctx, id) }
func (c serverControl) Stop(ctx context.Context, id string) error  { return c.m.StopServer(ctx, id) }
func (c serverControl) Running(id string) bool                     { return c.m.Running(id) }
func (c serverControl) Apply(ctx context.Context, id string) error { return c.m.applyChange(ctx, id) }
func (c serverControl) ListenError(id string) string               { return c.m.ListenError(id) }
func (c serverControl) Listening(id string) (string, string)       { return c.m.Listening(id) }

// clusterView adapts the HA loop's status to the API's contract.
type clusterView struct{ loop *ha.Loop }

func (v clusterView) Status(ctx context.Context) (api.ClusterStatus, error) {
	s, err := v.loop.Status(ctx)
	if err != nil {
		return api.ClusterStatus{}, err
	}
	out := api.ClusterStatus{
		ClusterName: s.ClusterName, IsLeader: s.IsLeader, Node: s.Self, Leader: s.Leader,
		Epoch: s.Epoch, LeaderSince: s.LeaderSince, Members: []api.Member{},
	}
	for _, m := range s.Members {
		out.Members = append(out.Members, api.Member{Name: m.Name, Address: m.Address, IsLeader: m.IsLeader})
	}
	out.MemberCount = len(out.Members)
	return out, nil
}
