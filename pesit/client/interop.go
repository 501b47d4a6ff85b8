package client

import (
	"fmt"
	"slices"
)

// Anomaly is a peer behaviour outside the spec that Vectis tolerates
// ("strict on output, liberal on input", docs/interop.md): the transfer
// goes on, the anomaly is logged and reported in Result.Anomalies, and it
// fails the transfer only with Config.Strict. The set is closed.
type Anomaly string

// Anomaly kinds.
const (
	// AnomalyArticleCount: PI 28 differs from the articles exchanged while
	// PI 27 and the data agree (a peer counting DTFs or segments).
	AnomalyArticleCount Anomaly = "article_count"
	// AnomalySyncRenumbered: after a restart from point p the server
	// numbered its sync points from 1 again instead of p+1.
	AnomalySyncRenumbered Anomaly = "sync_renumbered"
	// AnomalyZeroTransferID: ACK(SELECT) carried PI 13 = 0 (the pull cannot
	// be restarted by id).
	AnomalyZeroTransferID Anomaly = "zero_transfer_id"
)

// noteAnomaly records a once per transfer and says whether it must fail
// the transfer (strict mode).
func (s *Session) noteAnomaly(res *[]Anomaly, a Anomaly, detail string) bool {
	if !slices.Contains(*res, a) {
		*res = append(*res, a)
	}
	s.log.Warn("peer anomaly tolerated", "kind", string(a), "detail", detail, "strict", s.cfg.Strict)
	return s.cfg.Strict
}

// countReading says how a peer's PI 27 or PI 28 reads against ours: the
// whole file, or only this session after a restart from start (the spec
// is silent; third-party servers count the session).
func countReading(got, total, start int64) bool {
	return got == total || (start > 0 && got == total-start)
}

// checkPeerCounts compares the peer's PI 27/28 (present when ok*) with
// ours. A PI 27 that matches neither reading is a data disagreement and
// always fails; a wrong PI 28 with a right PI 27 is an anomaly.
func (s *Session) checkPeerCounts(anoms *[]Anomaly, b, a uint64, okb, oka bool, bytes, articles, b0, a0 int64) error {
	if okb && !countReading(int64(b), bytes, b0) {
		return fmt.Errorf("PI 27 = %d, we counted %d data bytes (%d in this session)", b, bytes, bytes-b0)
	}
	if oka && !countReading(int64(a), articles, a0) {
		detail := fmt.Sprintf("PI 28 = %d, we counted %d articles (%d in this session)", a, articles, articles-a0)
		if s.noteAnomaly(anoms, AnomalyArticleCount, detail) {
			return fmt.Errorf("%s (strict mode)", detail)
		}
	}
	return nil
}
