package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"time"

	"github.com/vectis-ft/vectis/api"
	"github.com/vectis-ft/vectis/config"
	"github.com/vectis-ft/vectis/store"
	"github.com/vectis-ft/vectis/telemetry"
)

// Start-up backoff while PostgreSQL is unreachable.
const (
	storeRetryFirst = time.Second
	storeRetryMax   = 30 * time.Second
)

// errStoppedWaiting is the end of a start-up that was stopped (SIGTERM)
// while the store was still unreachable: not a failure of the node.
var errStoppedWaiting = errors.New("stopped while waiting for the store")

// openStoreWaiting opens the store. When PostgreSQL is unreachable it does
// not exit (Kubernetes would restart the pod in a crash loop, with growing
// delays, long after the database is back): it retries with backoff and
// meanwhile answers on the API address /healthz 200 (alive, so the startup
// and liveness probes keep the pod) and /readyz 503 (not ready, so no
// Service sends it traffic), until the store opens or ctx ends.
func openStoreWaiting(ctx context.Context, cfg *config.Config, tel *telemetry.Telemetry, log *slog.Logger) (*store.Store, error) {
	st, err := openStore(ctx, cfg, tel, log)
	if err == nil || cfg.Store.Driver != store.DriverPostgres || !errors.Is(err, store.ErrUnavailable) {
		return st, err
	}
	log.Warn("store unreachable at start-up; retrying with backoff, /readyz answers 503 meanwhile", "err", err)
	srv, serr := api.NewHTTPServer(api.ServerConfig{
		Addr: cfg.API.Listen, Handler: waitingHandler(), Logger: log,
		CertFile: cfg.API.TLS.CertFile, KeyFile: cfg.API.TLS.KeyFile,
	})
	if serr != nil {
		return nil, serr
	}
	ln, serr := net.Listen("tcp", cfg.API.Listen)
	if serr != nil {
		return nil, fmt.Errorf("admin API listen %s: %w", cfg.API.Listen, serr)
	}
	wctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- api.Serve(wctx, srv, ln) }()
	// The listener is released before the node's API binds the address.
	defer func() { stop(); <-served }()

	delay := storeRetryFirst
	for attempt := 2; ; attempt++ {
		// Full jitter keeps the pods of a cluster from retrying in step.
		wait := delay/2 + rand.N(delay/2+1)
		select {
		case <-ctx.Done():
			return nil, errStoppedWaiting
		case err := <-served:
			return nil, fmt.Errorf("start-up API: %w", err)
		case <-time.After(wait):
		}
		st, err = openStore(ctx, cfg, tel, log)
		switch {
		case err == nil:
			log.Info("store reachable; starting", "attempts", attempt)
			return st, nil
		case ctx.Err() != nil:
			return nil, errStoppedWaiting
		case !errors.Is(err, store.ErrUnavailable):
			return nil, err
		}
		log.Warn("store still unreachable", "attempt", attempt, "retryIn", min(2*delay, storeRetryMax).String(), "err", err)
		delay = min(2*delay, storeRetryMax)
	}
}

// waitingHandler is the API while the store is unreachable: alive, not
// ready, nothing else. It names no host: /readyz needs no login.
func waitingHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	unavailable := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "5")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"error":"unavailable","message":"starting: the database is unreachable; retrying"}` + "\n"))
	}
	mux.HandleFunc("/", unavailable)
	return mux
}
