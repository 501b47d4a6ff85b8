package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/vectis-ft/vectis/internal/tlsfiles"
)

// ServerConfig is the listener of the API.
type ServerConfig struct {
	Addr    string       // vectis.api.listen, default ":8080"
	Handler http.Handler // the *API, usually
	// CertFile and KeyFile enable TLS (vectis.api.tls); both or neither.
	CertFile, KeyFile string
	Logger            *slog.Logger
}

// NewHTTPServer returns an http.Server with the timeouts and limits the API
// needs against slow or abusive clients. TLS, when configured, is TLS 1.2+.
func NewHTTPServer(cfg ServerConfig) (*http.Server, error) {
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, errors.New("api: TLS needs both certFile and keyFile")
	}
	addr := cfg.Addr
	if addr == "" {
		addr = ":8080"
	}
	srv := &http.Server{
		Addr:              addr,
		Handler:           cfg.Handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	if cfg.Logger != nil {
		srv.ErrorLog = slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn)
	}
	if cfg.CertFile != "" {
		tc, err := tlsfiles.Load(tlsfiles.Server, tlsfiles.Files{Cert: cfg.CertFile, Key: cfg.KeyFile})
		if err != nil {
			return nil, fmt.Errorf("api: TLS: %w", err)
		}
		srv.TLSConfig = tc
	}
	return srv, nil
}

// Serve runs srv on ln until ctx is done, then shuts it down gracefully
// (in-flight requests get up to 10 s). It returns nil after a clean stop.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() {
		if srv.TLSConfig != nil {
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("api: serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("api: shutdown: %w", err)
	}
	return nil
}

// ListenAndServe listens on cfg.Addr and serves until ctx is done.
func ListenAndServe(ctx context.Context, cfg ServerConfig) error {
	srv, err := NewHTTPServer(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		return fmt.Errorf("api: listen %s: %w", srv.Addr, err)
	}
	return Serve(ctx, srv, ln)
}
