package store

import (
	"context"
	"fmt"
)

// TransferStats aggregates the transfers a TransferFilter selects.
type TransferStats struct {
	Total            int64                       `json:"total"`
	ByStatus         map[TransferStatus]int64    `json:"byStatus"`
	ByDirection      map[TransferDirection]int64 `json:"byDirection"`
	Bytes            int64                       `json:"bytes"`
	BytesByDirection map[TransferDirection]int64 `json:"bytesByDirection"`
}

// TransferStats counts the transfers f selects (Limit and Cursor are
// ignored) by status and direction, and sums their bytes. It is one
// GROUP BY query over every matching row, so the database does the work
// and nothing is capped: the result has at most one row per
// (direction, status) pair, whatever the history's length.
func (s *Store) TransferStats(ctx context.Context, f TransferFilter) (_ TransferStats, err error) {
	defer s.observe("transfer_stats", &err)()
	f.Cursor = ""
	w, err := s.transferWhere(f)
	if err != nil {
		return TransferStats{}, fmt.Errorf("transfer stats: %w", err)
	}
	r, err := s.rd.query(ctx, `SELECT direction, status, COUNT(*), CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM transfers`+
		w.sql()+` GROUP BY direction, status`, w.args...)
	if err != nil {
		return TransferStats{}, s.wrap("transfer stats", err)
	}
	defer r.Close()
	st := TransferStats{
		ByStatus:         map[TransferStatus]int64{},
		ByDirection:      map[TransferDirection]int64{},
		BytesByDirection: map[TransferDirection]int64{},
	}
	for r.Next() {
		var (
			dir, status string
			n, bytes    int64
		)
		if err := r.Scan(&dir, &status, &n, &bytes); err != nil {
			return TransferStats{}, s.wrap("transfer stats", err)
		}
		st.Total += n
		st.Bytes += bytes
		st.ByStatus[TransferStatus(status)] += n
		st.ByDirection[TransferDirection(dir)] += n
		st.BytesByDirection[TransferDirection(dir)] += bytes
	}
	if err := r.Err(); err != nil {
		return TransferStats{}, s.wrap("transfer stats", err)
	}
	return st, nil
}

// transferWhere turns a TransferFilter into SQL conditions, shared by
// ListTransfers and TransferStats so that both select the same rows.
func (s *Store) transferWhere(f TransferFilter) (where, error) {
	var w where
	if f.Status != "" {
		w.add("status = ?", string(f.Status))
	}
	if f.PartnerID != "" {
		w.add("partner_id = ?", f.PartnerID)
	}
	if f.ServerID != "" {
		w.add("server_id = ?", f.ServerID)
	}
	if f.FileID != "" {
		w.add("file_id = ?", f.FileID)
	}
	if f.Direction != "" {
		w.add("direction = ?", string(f.Direction))
	}
	if !f.Since.IsZero() {
		w.add("created_at >= ?", s.d.ts(f.Since))
	}
	if !f.Until.IsZero() {
		w.add("created_at < ?", s.d.ts(f.Until))
	}
	if f.Cursor != "" {
		ct, cid, err := decodeCursor(f.Cursor)
		if err != nil {
			return where{}, err
		}
		w.add("(created_at < ?", s.d.ts(ct))
		w.args = append(w.args, s.d.ts(ct), cid)
		n := len(w.args)
		w.conds[len(w.conds)-1] += fmt.Sprintf(" OR (created_at = $%d AND id < $%d))", n-1, n)
	}
	return w, nil
}
