package store

import (
	"context"
	"fmt"
	"time"
)

// ClaimLeadership records (epoch, member) as the cluster leader. It is one
// conditional UPDATE, so two processes claiming at once cannot both win with
// different epochs: the row lock serialises them and the loser's condition is
// re-evaluated against the winner's epoch.
func (s *Store) ClaimLeadership(ctx context.Context, epoch int64, member string) (err error) {
	defer s.observe("claim_leadership", &err)()
	if epoch <= 0 || member == "" {
		return fmt.Errorf("claim leadership: %w: epoch must be positive and member set", ErrInvalid)
	}
	n, err := s.db.exec(ctx, `UPDATE cluster_leader
		SET since = CASE WHEN epoch = $1 THEN since ELSE $3 END, epoch = $1, member = $2
		WHERE id = 1 AND ($1 > epoch OR ($1 = epoch AND member = $2))`, epoch, member, s.d.ts(now()))
	if err == nil && n == 0 {
		var cur Leadership
		if cur, err = s.Leadership(ctx); err == nil {
			err = fmt.Errorf("%w: epoch %d (member %s) does not supersede recorded epoch %d (member %s)",
				ErrStaleEpoch, epoch, member, cur.Epoch, cur.Member)
		}
	}
	return s.wrap("claim leadership", err)
}

// Leadership returns the recorded leader; epoch 0 means nobody claimed yet.
func (s *Store) Leadership(ctx context.Context) (_ Leadership, err error) {
	defer s.observe("leadership", &err)()
	var l Leadership
	err = s.db.queryRow(ctx, `SELECT epoch, member, since FROM cluster_leader WHERE id = 1`).
		Scan(&l.Epoch, &l.Member, tsScan{&l.Since})
	if l.Epoch == 0 {
		l.Since = time.Time{}
	}
	return l, s.wrap("read leadership", err)
}

// CheckEpoch returns ErrStaleEpoch unless epoch is the recorded epoch.
func (s *Store) CheckEpoch(ctx context.Context, epoch int64) (err error) {
	defer s.observe("check_epoch", &err)()
	return s.wrap("check epoch", s.checkEpoch(ctx, s.db, epoch))
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
