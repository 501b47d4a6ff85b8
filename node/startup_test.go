package node

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/internal/testenv/pgtest"
)

func probe(t *testing.T, url string) int {
	t.Helper()
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestStartWhilePostgresDown: a node started while PostgreSQL is down
// stays up, alive (/healthz 200) and not ready (/readyz 503), and starts
// serving once the database is back, instead of exiting (issue 16,
// defect 13).
func TestStartWhilePostgresDown(t *testing.T) {
	pg := pgtest.NewServer(t)
	url := pg.NewDatabase(t)
	pg.Stop(t)

	dir := t.TempDir()
	cfg := baseConfig(t, dir, "patient")
	cfg.Store.Driver, cfg.Store.URL = "postgres", url
	// The PeSIT port is bound only once the store is up, seconds after
	// baseConfig found it free: another test may have taken it meanwhile.
	// This test never dials it, so let the kernel choose.
	cfg.PeSIT.Servers[0].Listen = "127.0.0.1:0"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &testNode{cfg: cfg, api: "http://" + cfg.API.Listen, log: &syncBuffer{}, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- Run(ctx, &n.cfg, Options{Version: "test", LogOutput: n.log}) }()
	t.Cleanup(func() {
		n.stop(t)
		if t.Failed() {
			t.Logf("log:\n%s", n.log.String())
		}
	})

	testenv.Eventually(t, 10*time.Second, testenv.Awaiting("/healthz while the store is down", func() bool {
		select {
		case err := <-n.done:
			t.Fatalf("node exited while PostgreSQL was down: %v", err)
		default:
		}
		return probe(t, n.api+"/healthz") == http.StatusOK
	}))
	unready := func(when string) {
		t.Helper()
		if code := probe(t, n.api+"/readyz"); code != http.StatusServiceUnavailable {
			t.Fatalf("/readyz while the store is down, %s: %d, want 503", when, code)
		}
		if code := probe(t, n.api+"/api/v1/partners"); code != http.StatusServiceUnavailable {
			t.Fatalf("API while the store is down, %s: %d, want 503", when, code)
		}
	}
	unready("before a retry")
	// A retry that fails too leaves the node up and still not ready.
	testenv.Eventually(t, 10*time.Second, testenv.Awaiting("a failed retry in the log", func() bool {
		return strings.Contains(n.log.String(), "store still unreachable")
	}))
	select {
	case err := <-n.done:
		n.done <- err
		t.Fatalf("node exited after a failed retry: %v", err)
	default:
	}
	unready("after a failed retry")

	pg.Start(t)
	testenv.Eventually(t, 45*time.Second, testenv.Awaiting("/readyz once PostgreSQL is back", func() bool {
		return probe(t, n.api+"/readyz") == http.StatusOK
	}))
	if code, body := n.do(t, "GET", "/api/v1/partners/CXCLIENT", nil); code != http.StatusOK {
		t.Fatalf("declared partner after a late start: %d %s", code, body)
	}
}

// TestStopWhileWaitingForPostgres: SIGTERM during the wait ends the node
// cleanly and at once.
func TestStopWhileWaitingForPostgres(t *testing.T) {
	pg := pgtest.NewServer(t)
	url := pg.NewDatabase(t)
	pg.Stop(t)
	cfg := baseConfig(t, t.TempDir(), "stopped")
	cfg.Store.Driver, cfg.Store.URL = "postgres", url
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, &cfg, Options{Version: "test", LogOutput: &syncBuffer{}}) }()
	testenv.Eventually(t, 10*time.Second, testenv.Awaiting("/healthz", func() bool { return probe(t, "http://"+cfg.API.Listen+"/healthz") == http.StatusOK }))
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after a stop while waiting: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the node did not stop while waiting for the store")
	}
}
