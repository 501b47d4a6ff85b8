package store

import (
	"context"
	"fmt"
	"time"
)

// Leftovers is the end of life of transfers that no session will finish:
// interrupted and restartable ones whose partner never came back, and
// in_progress ones whose owner is gone. Their partial files are the
// caller's (the store knows no file system): each method returns the
// records, TempPath included, so that the caller deletes the files.
type Leftovers interface {
	// ExpireInterrupted fails every interrupted or restartable transfer
	// not updated for olderThan, with a diagnostic saying so; leader-only.
	ExpireInterrupted(ctx context.Context, epoch int64, node string, olderThan time.Duration) ([]Transfer, error)
	// CancelResting cancels a transfer that no live session carries: an
	// interrupted or restartable one, or an in_progress one whose owner
	// gone reports true. ErrConflict for a final transfer or one whose
	// owner is alive; leader-only.
	CancelResting(ctx context.Context, epoch int64, node, id string, gone func(Transfer) bool) (Transfer, error)
	// PartialFiles lists the unfinished transfers that hold a partial file.
	PartialFiles(ctx context.Context) ([]Transfer, error)
}

var _ Leftovers = (*Store)(nil)

// ExpireInterrupted is a compare-and-set per row on (status, updated_at), so
// that a transfer resumed meanwhile (TakeOverTransfer sets in_progress and a
// new updated_at) is left alone.
func (s *Store) ExpireInterrupted(ctx context.Context, epoch int64, node string, olderThan time.Duration) (_ []Transfer, err error) {
	defer s.observe("expire_interrupted", &err)()
	if olderThan <= 0 {
		return nil, fmt.Errorf("expire interrupted: %w: olderThan must be positive", ErrInvalid)
	}
	if err := s.checkEpoch(ctx, s.rd, epoch); err != nil {
		return nil, s.wrap("expire interrupted", err)
	}
	cutoff := now().Add(-olderThan)
	stale, err := listAll(ctx, s.rd, `SELECT `+transferCols+` FROM transfers
		WHERE status IN ('interrupted', 'restartable') AND updated_at < $1`, s.scanTransfer, s.d.ts(cutoff))
	if err != nil {
		return nil, s.wrap("expire interrupted: list", err)
	}
	var out []Transfer
	for _, t := range stale {
		diag := fmt.Sprintf("expired: %s since %s, more than %s; its partial file is deleted", t.Status,
			t.UpdatedAt.Format(time.RFC3339), olderThan)
		ts := now()
		var n int64
		err := s.inTx(ctx, func(q tx) ([]Change, error) {
			if err := s.checkEpochLocked(ctx, q, epoch); err != nil {
				return nil, err
			}
			var err error
			n, err = q.exec(ctx, `UPDATE transfers SET status = 'failed', diagnostic = $2, epoch = $3, node = $4,
				updated_at = $5, finished_at = $5 WHERE id = $1 AND status = $6 AND updated_at = $7`,
				t.ID, diag, epoch, node, s.d.ts(ts), string(t.Status), s.d.ts(t.UpdatedAt))
			return nil, err
		})
		if err != nil {
			return out, s.wrap("expire interrupted "+t.ID, err)
		}
		if n == 1 {
			t.Status, t.Diagnostic, t.Epoch, t.Node, t.UpdatedAt, t.FinishedAt = StatusFailed, diag, epoch, node, ts, ts
			out = append(out, t)
		}
	}
	return out, nil
}

// CancelResting cancels under the row lock (UpdateTransfer), so that a
// restart taking the transfer over at the same time either wins (and the
// cancel is refused) or finds it cancelled.
func (s *Store) CancelResting(ctx context.Context, epoch int64, node, id string, gone func(Transfer) bool) (Transfer, error) {
	return s.UpdateTransfer(ctx, epoch, id, func(t *Transfer) error {
		switch {
		case t.Status.Final():
			return fmt.Errorf("%w: transfer is already %s", ErrConflict, t.Status)
		case t.Status == StatusInProgress && (gone == nil || !gone(*t)):
			return fmt.Errorf("%w: transfer is in progress on %s (epoch %d), whose session may still finish it", ErrConflict, t.Node, t.Epoch)
		}
		t.Diagnostic = fmt.Sprintf("cancelled while %s; no session carried it", t.Status)
		t.Status, t.Node = StatusCancelled, node
		return nil
	})
}

// PartialFiles lists the receives whose partial file may still be on disk.
func (s *Store) PartialFiles(ctx context.Context) (_ []Transfer, err error) {
	defer s.observe("partial_files", &err)()
	out, err := listAll(ctx, s.rd, `SELECT `+transferCols+` FROM transfers
		WHERE temp_path <> '' AND status IN ('in_progress', 'interrupted', 'restartable')`, s.scanTransfer)
	return out, s.wrap("partial files", err)
}
