package ha

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the cluster metrics of one node. A nil *Metrics records nothing.
type Metrics struct {
	members       prometheus.Gauge
	isLeader      prometheus.Gauge
	leaderChanges prometheus.Counter
	failover      prometheus.Histogram
	stepdowns     *prometheus.CounterVec
	fast          *prometheus.CounterVec
	following     prometheus.Gauge
}

// NewMetrics creates and registers the cluster metrics.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		members: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vectis_cluster_members", Help: "Cluster members registered in etcd, as seen by this node.",
		}),
		isLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vectis_cluster_is_leader", Help: "1 while this node leads and serves PeSIT, else 0.",
		}),
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vectis_cluster_leader_changes_total", Help: "Leader changes observed by this node.",
		}),
		failover: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "vectis_cluster_failover_seconds",
			Help: "On the node that took over: from the best known time the old leader stopped serving " +
				"(its resignation, or its last lease renewal = expiry - TTL) to PeSIT accepting.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		stepdowns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vectis_cluster_stepdowns_total", Help: "Leader step-downs on this node, by reason.",
		}, []string{"reason"}),
	}
	m.fast = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vectis_cluster_fast_failover_decisions_total",
		Help: "Decisions of this node, as a standby, after the liveness stream to the leader broke.",
	}, []string{"decision"})
	for _, d := range decisions {
		m.fast.WithLabelValues(d)
	}
	m.following = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "vectis_cluster_liveness_following",
		Help: "1 while this standby holds a verified liveness stream to the leader, else 0.",
	})
	for r := range modes {
		m.stepdowns.WithLabelValues(string(r)) // every reason is exported, at 0 until it happens
	}
	for _, c := range []prometheus.Collector{m.members, m.isLeader, m.leaderChanges, m.failover, m.stepdowns, m.fast, m.following} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) setMembers(n int) {
	if m != nil {
		m.members.Set(float64(n))
	}
}

func (m *Metrics) setLeader(b bool) {
	if m == nil {
		return
	}
	if b {
		m.isLeader.Set(1)
	} else {
		m.isLeader.Set(0)
	}
}

func (m *Metrics) leaderChanged() {
	if m != nil {
		m.leaderChanges.Inc()
	}
}

func (m *Metrics) observeFailover(d time.Duration) {
	if m != nil {
		m.failover.Observe(d.Seconds())
	}
}

func (m *Metrics) steppedDown(r Reason) {
	if m != nil {
		m.stepdowns.WithLabelValues(string(r)).Inc()
	}
}

func (m *Metrics) fastDecision(d string) {
	if m != nil {
		m.fast.WithLabelValues(d).Inc()
	}
}

func (m *Metrics) setFollowing(b bool) {
	if m == nil {
		return
	}
	if b {
		m.following.Set(1)
	} else {
		m.following.Set(0)
	}
}
