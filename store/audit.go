package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// AppendAudit records an event and returns it with its ID (and Time, if it
// was zero). Detail must not hold secrets; the caller redacts.
func (s *Store) AppendAudit(ctx context.Context, e AuditEvent) (_ AuditEvent, err error) {
	defer s.observe("append_audit", &err)()
	if e.Actor == "" || e.Action == "" {
		return AuditEvent{}, fmt.Errorf("append audit: %w: actor and action are required", ErrInvalid)
	}
	if e.Outcome == "" {
		e.Outcome = OutcomeSuccess
	}
	if e.Time.IsZero() {
		e.Time = now()
	}
	e.Time = e.Time.UTC().Truncate(time.Microsecond)
	err = s.db.queryRow(ctx, `INSERT INTO audit_events (at, actor, action, target, outcome, detail)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`,
		s.d.ts(e.Time), e.Actor, e.Action, e.Target, string(e.Outcome), e.Detail).Scan(&e.ID)
	return e, s.wrap("append audit", err)
}

func scanAudit(r row) (AuditEvent, error) {
	var e AuditEvent
	err := r.Scan(&e.ID, tsScan{&e.Time}, &e.Actor, &e.Action, &e.Target, &e.Outcome, &e.Detail)
	return e, err
}

// ListAudit returns a page of audit events, newest first.
func (s *Store) ListAudit(ctx context.Context, f AuditFilter) (_ AuditPage, err error) {
	defer s.observe("list_audit", &err)()
	var w where
	if f.Actor != "" {
		w.add("actor = ?", f.Actor)
	}
	if f.Action != "" {
		w.add("action = ?", f.Action)
	}
	if f.Target != "" {
		w.add("target = ?", f.Target)
	}
	if f.Outcome != "" {
		w.add("outcome = ?", string(f.Outcome))
	}
	for _, p := range f.ExcludeActions {
		switch {
		case p == "" || strings.ContainsAny(p, `%_\`):
			return AuditPage{}, fmt.Errorf("list audit: %w: excluded action %q", ErrInvalid, p)
		case strings.HasSuffix(p, "."):
			w.add("action NOT LIKE ?", p+"%")
		default:
			w.add("action <> ?", p)
		}
	}
	if !f.Since.IsZero() {
		w.add("at >= ?", s.d.ts(f.Since))
	}
	if !f.Until.IsZero() {
		w.add("at < ?", s.d.ts(f.Until))
	}
	if f.Cursor != "" {
		ct, cid, err := decodeCursor(f.Cursor)
		id, perr := strconv.ParseInt(cid, 10, 64)
		if err != nil || perr != nil {
			return AuditPage{}, fmt.Errorf("list audit: %w: malformed cursor", ErrInvalid)
		}
		w.add("(at < ?", s.d.ts(ct))
		w.args = append(w.args, s.d.ts(ct), id)
		n := len(w.args)
		w.conds[len(w.conds)-1] += fmt.Sprintf(" OR (at = $%d AND id < $%d))", n-1, n)
	}
	limit := pageSize(f.Limit)
	items, err := listAll(ctx, s.rd, `SELECT id, at, actor, action, target, outcome, detail FROM audit_events`+
		w.sql()+fmt.Sprintf(` ORDER BY at DESC, id DESC LIMIT %d`, limit+1), scanAudit, w.args...)
	if err != nil {
		return AuditPage{}, s.wrap("list audit", err)
	}
	page := AuditPage{Items: items}
	if len(items) > limit {
		page.Items = items[:limit]
		last := page.Items[limit-1]
		page.Next = encodeCursor(last.Time, strconv.FormatInt(last.ID, 10))
	}
	return page, nil
}

// PurgeResult counts what Purge deleted.
type PurgeResult struct {
	Transfers   int64 `json:"transfers"`
	AuditEvents int64 `json:"auditEvents"`
}

// Purge deletes final transfers finished, and audit events recorded, more
// than olderThan ago. It is a leader-only write: the epoch is checked (and
// share-locked) in the same transaction.
func (s *Store) Purge(ctx context.Context, epoch int64, olderThan time.Duration) (_ PurgeResult, err error) {
	defer s.observe("purge", &err)()
	if olderThan <= 0 {
		return PurgeResult{}, fmt.Errorf("purge: %w: olderThan must be positive", ErrInvalid)
	}
	cutoff := s.d.ts(now().Add(-olderThan))
	var res PurgeResult
	err = s.inTx(ctx, func(t tx) ([]Change, error) {
		if err := s.checkEpochLocked(ctx, t, epoch); err != nil {
			return nil, err
		}
		var err error
		res.Transfers, err = t.exec(ctx, `DELETE FROM transfers WHERE finished_at IS NOT NULL AND finished_at < $1
			AND status IN ('completed', 'failed', 'cancelled')`, cutoff)
		if err != nil {
			return nil, err
		}
		res.AuditEvents, err = t.exec(ctx, `DELETE FROM audit_events WHERE at < $1`, cutoff)
		return nil, err
	})
	if err != nil {
		return PurgeResult{}, s.wrap("purge", err)
	}
	return res, nil
}
