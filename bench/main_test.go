package bench

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that every server, exporter and receiver a benchmark
// starts is stopped with it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { removeBuild() }))
}
