package etcdtest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vectis-ft/vectis/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestClusterFaults checks that the helpers do what they claim on a real
// 3-member cluster: a paused or stopped member leaves a working quorum, a
// restarted member rejoins with its data, and etcdctl reaches the cluster.
func TestClusterFaults(t *testing.T) {
	c := Start(t, Options{Size: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli := c.Client(t)
	if _, err := cli.Put(ctx, "k", "v1"); err != nil {
		t.Fatal(err)
	}

	if err := c.Member(0).Pause(); err != nil {
		t.Fatal(err)
	}
	two := c.Client(t, c.Member(1).ClientURL, c.Member(2).ClientURL)
	// If the paused member was the raft leader, a first write may time out
	// while the others elect a new one; the cluster must accept writes again
	// within a few election timeouts.
	putEventually := func(val string) {
		t.Helper()
		testenv.Eventually(t, 10*ElectionTimeout, func() error {
			pctx, pcancel := context.WithTimeout(ctx, 2*ElectionTimeout)
			defer pcancel()
			if _, err := two.Put(pctx, "k", val); err != nil {
				return fmt.Errorf("put %s with one member down: %w", val, err)
			}
			return nil
		})
	}
	putEventually("v2")
	if err := c.Member(0).Resume(); err != nil {
		t.Fatal(err)
	}

	if err := c.Member(1).Stop(); err != nil {
		t.Fatal(err)
	}
	if c.Member(1).Running() {
		t.Fatal("stopped member still running")
	}
	putEventually("v3")
	if err := c.Member(1).Start(); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	one := c.Client(t, c.Member(1).ClientURL)
	resp, err := one.Get(ctx, "k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v3" {
		t.Fatalf("restarted member get = %v, %v; want v3", resp, err)
	}

	out, err := c.Ctl(ctx, "get", "k", "--print-value-only")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != "v3" {
		t.Fatalf("etcdctl get = %q, want v3", out)
	}
}
