package node

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/internal/testenv/etcdtest"
	"github.com/vectis-ft/vectis/internal/testenv/pgtest"
)

// TestShutdownDelay: a clustered node stopped by its signal hands over,
// drains, then stays alive for cluster.shutdownDelay with its PeSIT port
// closed, so that a connection a Service still routes to it is refused at
// once (docs/kubernetes.md, "How fast the Service follows a handover").
func TestShutdownDelay(t *testing.T) {
	const delay = 2 * time.Second
	etcd := etcdtest.Start(t, etcdtest.Options{Size: 1})
	cfg := baseConfig(t, t.TempDir(), "node-a")
	cfg.Cluster.Enabled = true
	cfg.Cluster.TTL = 2 * time.Second
	cfg.Cluster.Etcd.Endpoints = etcd.Endpoints()
	cfg.Cluster.Kubernetes.Enabled = false
	cfg.Cluster.ShutdownDelay = delay
	cfg.Store.Driver, cfg.Store.URL = "postgres", pgtest.Start(t)
	n := startNode(t, cfg)
	testenv.Eventually(t, 15*time.Second, testenv.Awaiting("node-a to lead", func() bool {
		st, ok := statusOf(t, n)
		return ok && st.IsLeader
	}))
	waitServing(t, n.pesit, 10*time.Second)

	cancel := n.cancel
	n.cancel = nil
	stoppedAt := time.Now()
	cancel()
	refused := func() bool {
		c, err := net.DialTimeout("tcp", n.pesit, time.Second)
		if err == nil {
			c.Close()
		}
		return errors.Is(err, syscall.ECONNREFUSED)
	}
	var refusedAt time.Time
	testenv.Eventually(t, 10*time.Second, testenv.Awaiting("the PeSIT port to refuse", func() bool {
		if refused() {
			refusedAt = time.Now()
			return true
		}
		return false
	}))
	// Halfway through the delay the process is still there, and still
	// refuses. The hold for a duration is what is under test, hence a
	// sleep into it; the checks below are lower bounds, which a slow
	// machine cannot break.
	time.Sleep(delay / 2)
	select {
	case err := <-n.done:
		t.Fatalf("the node exited %v after its port closed, before shutdownDelay %v: %v", time.Since(refusedAt), delay, err)
	default:
	}
	if !refused() {
		t.Error("the PeSIT port of the stopping node does not refuse during shutdownDelay")
	}
	select {
	case err := <-n.done:
		if err != nil {
			t.Fatalf("node: %v", err)
		}
	case <-time.After(delay + 10*time.Second):
		t.Fatalf("the node did not exit within shutdownDelay + 10s")
	}
	// The delay runs after the handover and the drain, which follow the
	// signal: the process cannot end sooner than delay after it.
	if lived := time.Since(stoppedAt); lived < delay {
		t.Errorf("the node exited %v after its stop signal, want at least shutdownDelay %v", lived, delay)
	}
}
