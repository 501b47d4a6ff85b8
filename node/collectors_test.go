package node

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestCallerCollectorsAreServed: a collector the command line hands over
// (the pod labeller's vectis_k8s_label_errors_total) is served on the
// node's /metrics next to the node's own metrics.
func TestCallerCollectorsAreServed(t *testing.T) {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "vectis_k8s_label_errors_total", Help: "test"})
	c.Add(3)
	n := startNode(t, baseConfig(t, t.TempDir(), "collectors"), c)
	fams := scrape(t, n.api)
	if got := value(fams, "vectis_k8s_label_errors_total", nil); got != 3 {
		t.Fatalf("vectis_k8s_label_errors_total = %v on /metrics, want 3", got)
	}
	if got := value(fams, "go_goroutines", nil); got <= 0 {
		t.Fatal("the node's own metrics are missing next to the caller's")
	}
}
