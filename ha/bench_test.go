package ha

import (
	"fmt"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/internal/testenv/etcdtest"
)

// BenchmarkGracefulHandover measures what
// TestThreeNodesOneLeaderAndGracefulHandover only logs: the time from a
// leader's graceful stop (SIGTERM: resign at once) to a standby serving,
// which the design puts at one etcd round trip. Each round stops the
// leader and starts a fresh standby in its place; handover-ms/op is the
// figure, ns/op also counts the restart.
func BenchmarkGracefulHandover(b *testing.B) {
	cluster := etcdtest.Start(b, etcdtest.Options{Size: 1})
	st := openStore(b)
	mon := &monitor{}
	const ttl = 2 * time.Second
	nodes := []*node{
		startNode(b, cluster.Endpoints(), st, mon, "n0", ttl),
		startNode(b, cluster.Endpoints(), st, mon, "n1", ttl),
	}
	leader := waitLeader(b, nodes, 15*time.Second)
	for _, n := range nodes {
		if n != leader {
			waitStandby(b, n)
		}
	}
	var handover time.Duration
	rounds := 0
	for b.Loop() {
		stopped := time.Now()
		leader.stop()
		next := waitLeaderOtherThan(b, leader, nodes, 10*time.Second)
		handover += time.Since(stopped)
		rounds++
		fresh := startNode(b, cluster.Endpoints(), st, mon, fmt.Sprintf("n%d", rounds+1), ttl)
		waitStandby(b, fresh)
		nodes = []*node{next, fresh}
		leader = next
	}
	if d, n := mon.overlap(); d > 0 || n > 1 {
		b.Errorf("two nodes accepted at once for %s", d)
	}
	b.ReportMetric(float64(handover.Microseconds())/1000/float64(rounds), "handover-ms/op")
}
