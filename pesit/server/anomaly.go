package server

import (
	"fmt"
	"slices"
)

// Anomaly is a requester behaviour outside the spec that the server
// tolerates: strict on output, liberal on input (docs/interop.md). It is
// logged, counted in vectis_pesit_peer_anomalies_total{kind}, kept on the
// transfer record, and fails the transfer only for a Partner.Strict
// partner. The set of kinds is closed, so that the metric stays bounded.
type Anomaly string

// Anomaly kinds.
const (
	// AnomalyArticleCount: TRANS.END PI 28 differs from the articles
	// received or sent while PI 27 and the data agree (a peer counting
	// DTFs or segments).
	AnomalyArticleCount Anomaly = "article_count"
	// AnomalyEntityExceeded: a data FPDU longer than the negotiated PI 25
	// (accepted up to the 65535-byte frame limit).
	AnomalyEntityExceeded Anomaly = "entity_exceeded"
)

// Anomalies is the closed set, for documentation and metric
// initialisation.
var Anomalies = []Anomaly{AnomalyArticleCount, AnomalyEntityExceeded}

// anomaly records a on the current transfer (once) and reports whether it
// must fail it (strict partner).
func (s *session) anomaly(a Anomaly, detail string) bool {
	x := s.xfer
	if x != nil && !slices.Contains(x.anomalies, a) {
		x.anomalies = append(x.anomalies, a)
		if m := s.srv.met; m != nil && m.PeerAnomalies != nil {
			m.PeerAnomalies.WithLabelValues(string(a)).Inc()
		}
		s.log.Warn("peer anomaly tolerated", "kind", string(a), "detail", detail, "strict", s.partner.Strict)
	}
	return s.partner.Strict
}

// checkCounts compares PI 27/28 with ours. After a restart the requester
// may count the whole file or only this session's part: both are
// accepted. A wrong PI 27 is a data disagreement and fails; a wrong PI 28
// with a right PI 27 is an anomaly.
func (s *session) checkCounts(bytes, articles int64, start syncPoint, pi27, pi28 uint64, ok27, ok28 bool) error {
	b0, a0 := start.data, start.articles
	if ok27 && int64(pi27) != bytes && int64(pi27) != bytes-b0 {
		return fmt.Errorf("PI 27 = %d, counted %d bytes", pi27, bytes)
	}
	if ok28 && int64(pi28) != articles && int64(pi28) != articles-a0 {
		detail := fmt.Sprintf("PI 28 = %d, counted %d articles (%d in this session)", pi28, articles, articles-a0)
		if s.anomaly(AnomalyArticleCount, detail) {
			return fmt.Errorf("%s (strict partner)", detail)
		}
	}
	return nil
}
