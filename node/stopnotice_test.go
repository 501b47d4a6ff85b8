package node

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/config"
	"github.com/vectis-ft/vectis/internal/testenv"
)

// TestStopNoticeHandsOverBeforeTheSignal: a leader whose StopNotice fires
// (in Kubernetes: its pod is being deleted, k8s.AwaitDeletion) stops as on
// its signal, without the signal: it hands over (the standby serves), closes
// its PeSIT port, waits cluster.shutdownDelay and returns. A StopNotice
// that fails (no RBAC right to watch) leaves a node running.
func TestStopNoticeHandsOverBeforeTheSignal(t *testing.T) {
	const delay = time.Second
	notice := make(chan struct{})
	leader, standby := startClusterWith(t, t.TempDir(), 2*time.Second, func(cfg *config.Config) Options {
		cfg.Cluster.ShutdownDelay = delay
		if cfg.Node.Name == "node-a" {
			return Options{StopNotice: func(ctx context.Context, _ *slog.Logger) error {
				select {
				case <-notice:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			}}
		}
		return Options{StopNotice: func(context.Context, *slog.Logger) error {
			return errors.New("no right to watch the own pod")
		}}
	})
	waitServing(t, leader.pesit, 10*time.Second)

	noticed := time.Now()
	close(notice)
	testenv.Eventually(t, 10*time.Second, testenv.Awaiting("node-b to lead", func() bool {
		st, ok := statusOf(t, standby)
		return ok && st.IsLeader
	}))
	testenv.Eventually(t, 10*time.Second, testenv.Awaiting("node-a's PeSIT port to refuse", func() bool {
		c, err := net.DialTimeout("tcp", leader.pesit, time.Second)
		if err == nil {
			c.Close()
		}
		return errors.Is(err, syscall.ECONNREFUSED)
	}))
	select {
	case err := <-leader.done:
		if err != nil {
			t.Fatalf("node-a: %v", err)
		}
	case <-time.After(delay + 20*time.Second):
		t.Fatal("node-a did not stop after its stop notice (its context was never cancelled)")
	}
	cancel := leader.cancel // it returned by itself; the cleanup has nothing to wait for
	leader.cancel = nil
	cancel()
	if lived := time.Since(noticed); lived < delay {
		t.Errorf("node-a returned %v after its notice, before shutdownDelay %v", lived, delay)
	}
	if !strings.Contains(leader.log.String(), "own pod is being deleted") {
		t.Error("node-a did not log why it stopped")
	}
	if !strings.Contains(standby.log.String(), "no early stop notice") {
		t.Error("node-b did not log that it has no stop notice")
	}
	select {
	case err := <-standby.done:
		t.Fatalf("node-b stopped on a failed stop notice: %v", err)
	default:
	}
}
