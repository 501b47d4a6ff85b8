package store

import (
	"context"
	"fmt"
	"time"
)

// ClaimLeadership records (epoch, member) as the cluster leader. It runs
// under the leader row's lock, so two processes claiming at once are
// serialised and the loser is checked against the winner's epoch. A claim that
// changes the leader also appends a "leader.claim" audit event in the same
// transaction.
func (s *Store) ClaimLeadership(ctx context.Context, epoch int64, member string) (err error) {
	defer s.observe("claim_leadership", &err)()
	if epoch <= 0 || member == "" {
		return fmt.Errorf("claim leadership: %w: epoch must be positive and member set", ErrInvalid)
	}
	err = s.inTx(ctx, func(t tx) ([]Change, error) {
		var cur Leadership
		if err := t.queryRow(ctx, `SELECT epoch, member FROM cluster_leader WHERE id = 1`+s.d.forUpdate).
			Scan(&cur.Epoch, &cur.Member); err != nil {
			return nil, err
		}
		if epoch == cur.Epoch && member == cur.Member {
			return nil, nil // renewed claim: nothing changes, not even since
		}
		if epoch <= cur.Epoch {
			return nil, fmt.Errorf("%w: epoch %d (member %s) does not supersede recorded epoch %d (member %s)",
				ErrStaleEpoch, epoch, member, cur.Epoch, cur.Member)
		}
		ts := now()
		if _, err := t.exec(ctx, `UPDATE cluster_leader SET epoch = $1, member = $2, since = $3 WHERE id = 1`,
			epoch, member, s.d.ts(ts)); err != nil {
			return nil, err
		}
		_, err := t.exec(ctx, `INSERT INTO audit_events (at, actor, action, target, outcome, detail)
			VALUES ($1, $2, 'leader.claim', $3, 'success', $4)`, s.d.ts(ts), member, fmt.Sprintf("epoch %d", epoch),
			fmt.Sprintf("previous leader %q, epoch %d", cur.Member, cur.Epoch))
		return nil, err
	})
	return s.wrap("claim leadership", err)
}

// Leadership returns the recorded leader; epoch 0 means nobody claimed yet.
func (s *Store) Leadership(ctx context.Context) (_ Leadership, err error) {
	defer s.observe("leadership", &err)()
	var l Leadership
	err = s.rd.queryRow(ctx, `SELECT epoch, member, since FROM cluster_leader WHERE id = 1`).
		Scan(&l.Epoch, &l.Member, tsScan{&l.Since})
	if l.Epoch == 0 {
		l.Since = time.Time{}
	}
	return l, s.wrap("read leadership", err)
}

// CheckEpoch returns ErrStaleEpoch unless epoch is the recorded epoch.
func (s *Store) CheckEpoch(ctx context.Context, epoch int64) (err error) {
	defer s.observe("check_epoch", &err)()
	return s.wrap("check epoch", s.checkEpoch(ctx, s.rd, epoch))
}

func (s *Store) checkEpoch(ctx context.Context, q queryer, epoch int64) error {
	var cur int64
	if err := q.queryRow(ctx, `SELECT epoch FROM cluster_leader WHERE id = 1`).Scan(&cur); err != nil {
		return err
	}
	if cur != epoch {
		return fmt.Errorf("%w: caller epoch %d, recorded epoch %d", ErrStaleEpoch, epoch, cur)
	}
	return nil
}

// checkEpochLocked is checkEpoch inside a transaction, holding the leader row
// in share mode until commit (PostgreSQL; SQLite's transaction is exclusive).
func (s *Store) checkEpochLocked(ctx context.Context, q queryer, epoch int64) error {
	var cur int64
	if err := q.queryRow(ctx, `SELECT epoch FROM cluster_leader WHERE id = 1`+s.d.forShare).Scan(&cur); err != nil {
		return err
	}
	if cur != epoch {
		return fmt.Errorf("%w: caller epoch %d, recorded epoch %d", ErrStaleEpoch, epoch, cur)
	}
	return nil
}
