package server

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the PeSIT server collectors of the Vectis catalogue. One
// Metrics serves every server of a node; the server id is a label.
type Metrics struct {
	SessionsActive   *prometheus.GaugeVec     // {server}
	Connections      *prometheus.CounterVec   // {server,result}
	Transfers        *prometheus.CounterVec   // {server,direction,result}
	TransferBytes    *prometheus.CounterVec   // {direction}
	TransferDuration *prometheus.HistogramVec // {direction}
	SyncPoints       prometheus.Counter
	Restarts         prometheus.Counter
	Diagnostics      *prometheus.CounterVec // {code}
	Logins           *prometheus.CounterVec // {server,result}
	PeerAnomalies    *prometheus.CounterVec // {kind}: closed set, see Anomalies
}

// NewMetrics creates the collectors and registers them on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		SessionsActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vectis_pesit_sessions_active", Help: "PeSIT sessions currently open.",
		}, []string{"server"}),
		Connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vectis_pesit_connections_total", Help: "PeSIT connections by result (accepted, refused, error).",
		}, []string{"server", "result"}),
		Transfers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vectis_pesit_transfers_total", Help: "PeSIT transfers by direction and result.",
		}, []string{"server", "direction", "result"}),
		TransferBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vectis_pesit_transfer_bytes_total", Help: "File bytes transferred.",
		}, []string{"direction"}),
		TransferDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "vectis_pesit_transfer_duration_seconds", Help: "Duration of transfers.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 10),
		}, []string{"direction"}),
		SyncPoints: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vectis_pesit_sync_points_total", Help: "Sync points acknowledged.",
		}),
		Restarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vectis_pesit_restarts_total", Help: "Transfers restarted (PI 15 = 1).",
		}),
		Diagnostics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vectis_pesit_diagnostics_total", Help: "Non-zero diagnostics sent or received.",
		}, []string{"code"}),
		Logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vectis_pesit_logins_total", Help: "PeSIT password logins by result (success, failure, throttled, busy).",
		}, []string{"server", "result"}),
		PeerAnomalies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vectis_pesit_peer_anomalies_total", Help: "Peer deviations from the spec that were tolerated (docs/interop.md), by kind.",
		}, []string{"kind"}),
	}
	for _, a := range Anomalies {
		m.PeerAnomalies.WithLabelValues(string(a)) // exported at 0: the kinds are known
	}
	if reg != nil {
		reg.MustRegister(m.SessionsActive, m.Connections, m.Transfers, m.TransferBytes,
			m.TransferDuration, m.SyncPoints, m.Restarts, m.Diagnostics, m.Logins, m.PeerAnomalies)
	}
	return m
}
