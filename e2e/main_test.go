//go:build e2e

package e2e

import (
	"os"
	"testing"

	"github.com/vectis-ft/vectis/internal/testenv/pgtest"
	"github.com/vectis-ft/vectis/telemetry/otlptest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Shutdown()
	os.Exit(code)
}

// TestLocalControlPlane runs the suite on the local control-plane backend
// and prints the summary table.
func TestLocalControlPlane(t *testing.T) {
	lc := startLocal(t)
	rep := runSuite(t, lc)
	rep.print(os.Stdout)
}

// Traces is the OTLP receiver the pods export to.
func (lc *localCluster) Traces() *otlptest.Receiver { return lc.otlp }
