//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/vectis-ft/vectis/internal/testenv/pgtest"
	"github.com/vectis-ft/vectis/telemetry/otlptest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Shutdown()
	if code == 0 {
		// Every goroutine the harness started (kubelet, proxies, watches,
		// monitor) must be gone. Idle keep-alive connections of the HTTP
		// clients are the transport's, not ours.
		if err := goleak.Find(
			goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
			goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
			goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// TestLocalControlPlane runs the suite on the local control-plane backend
// and prints the summary table.
func TestLocalControlPlane(t *testing.T) {
	if b := os.Getenv("VECTIS_E2E_BACKEND"); b != "" && b != "local" {
		t.Skipf("SKIPPED, NOT PASSED: VECTIS_E2E_BACKEND=%s selects another backend", b)
	}
	lc := startLocal(t)
	rep := runSuite(t, lc)
	rep.print(os.Stdout)
}

// Traces is the OTLP receiver the pods export to.
func (lc *localCluster) Traces() *otlptest.Receiver { return lc.otlp }
