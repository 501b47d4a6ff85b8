package store

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

const transferCols = `id, server_id, partner_id, file_id, direction, pesit_id, status, bytes, articles,
	sync_number, sync_offset, sync_articles, restart_count, sha256, diagnostic, local_path, node, epoch,
	created_at, updated_at, finished_at, temp_path, file_created, anomalies`

func (s *Store) scanTransfer(r row) (Transfer, error) {
	var t Transfer
	var anomalies string
	err := r.Scan(&t.ID, &t.ServerID, &t.PartnerID, &t.FileID, &t.Direction, &t.PesitID, &t.Status, &t.Bytes,
		&t.Articles, &t.SyncPoint.Number, &t.SyncPoint.Offset, &t.SyncPoint.Articles, &t.RestartCount, &t.SHA256,
		&t.Diagnostic, &t.LocalPath, &t.Node, &t.Epoch, tsScan{&t.CreatedAt}, tsScan{&t.UpdatedAt},
		tsScan{&t.FinishedAt}, &t.TempPath, &t.FileCreated, &anomalies)
	t.Anomalies = splitAnomalies(anomalies)
	return t, err
}

// splitAnomalies reads the comma-separated anomalies column.
func splitAnomalies(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func isNoRows(err error) bool {
	return errors.Is(err, pgx.ErrNoRows) || errors.Is(err, sql.ErrNoRows) || errors.Is(err, ErrNotFound)
}

// notOwnerOrMissing explains an owner-only write that matched no row.
func (s *Store) notOwnerOrMissing(ctx context.Context, q queryer, epoch int64, id string) error {
	var owner int64
	var node string
	err := q.queryRow(ctx, `SELECT epoch, node FROM transfers WHERE id = $1`, id).Scan(&owner, &node)
	if isNoRows(err) {
		return fmt.Errorf("transfer %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("transfer %s: %w: caller epoch %d, owner %s at epoch %d", id, ErrNotOwner, epoch, node, owner)
}

func validTransfer(t Transfer) error {
	switch t.Direction {
	case DirReceive, DirSend, DirMessage:
	default:
		return fmt.Errorf("%w: transfer direction %q is not receive, send or message", ErrInvalid, t.Direction)
	}
	if !t.Status.Valid() {
		return fmt.Errorf("%w: transfer status %q", ErrInvalid, t.Status)
	}
	if t.PartnerID == "" || t.ServerID == "" {
		return fmt.Errorf("%w: transfer needs a server and a partner", ErrInvalid)
	}
	if t.Bytes < 0 || t.Articles < 0 || t.SyncPoint.Offset < 0 || t.SyncPoint.Articles < 0 {
		return fmt.Errorf("%w: negative transfer counters", ErrInvalid)
	}
	return nil
}

// CreateTransfer records a new transfer (status in_progress unless set) and
// returns it with its ID and timestamps.
func (s *Store) CreateTransfer(ctx context.Context, epoch int64, t Transfer) (_ Transfer, err error) {
	defer s.observe("create_transfer", &err)()
	if t.ID == "" {
		t.ID = uuid.NewString()
	}
	if t.Status == "" {
		t.Status = StatusInProgress
	}
	if err := validTransfer(t); err != nil {
		return Transfer{}, err
	}
	t.Epoch = epoch
	ts := now()
	t.CreatedAt, t.UpdatedAt = ts, ts
	t.FinishedAt = time.Time{}
	if t.Status.Final() {
		t.FinishedAt = t.UpdatedAt
	}
	err = s.inTx(ctx, func(q tx) ([]Change, error) {
		if err := s.checkEpochLocked(ctx, q, epoch); err != nil {
			return nil, err
		}
		_, err := q.exec(ctx, `INSERT INTO transfers (`+transferCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7,
			$8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)`,
			t.ID, t.ServerID, t.PartnerID, t.FileID, string(t.Direction), t.PesitID, string(t.Status), t.Bytes,
			t.Articles, t.SyncPoint.Number, t.SyncPoint.Offset, t.SyncPoint.Articles, t.RestartCount, t.SHA256,
			t.Diagnostic, t.LocalPath, t.Node, t.Epoch, s.d.ts(t.CreatedAt), s.d.ts(t.UpdatedAt), s.d.nts(t.FinishedAt),
			t.TempPath, t.FileCreated, strings.Join(t.Anomalies, ","))
		return nil, err
	})
	return t, s.wrap("create transfer", err)
}

// Owner-only writes (sync points, progress, outcome) match the row only
// while its epoch is the caller's. A takeover changes the epoch under the row
// lock, so on PostgreSQL a write queued behind it re-reads the row and
// matches nothing, and on SQLite the two are serialised: once
// TakeOverTransfer has returned, no write of the old owner can commit. These
// writes do not read the leader row, so that a stepped-down leader may still
// finish the transfers it owns while it drains.

// RecordSyncPoint persists the restart state acknowledged at a sync point.
func (s *Store) RecordSyncPoint(ctx context.Context, epoch int64, id string, sp SyncPoint) (err error) {
	defer s.observe("record_sync_point", &err)()
	return s.recordSyncPoint(ctx, s.db.exec, epoch, id, sp)
}

// RecordSyncPointDeferred is RecordSyncPoint without the store's own flush
// to stable storage: the record is visible to every reader and survives the
// process when it returns, and reaches the disk with the next durable write
// or checkpoint. A power loss may take it back to an earlier point. It is
// for a caller that has made the point durable elsewhere, with the data it
// describes (the receiving server's restart index on the file), so that a
// sync point costs one fsync, not two.
func (s *Store) RecordSyncPointDeferred(ctx context.Context, epoch int64, id string, sp SyncPoint) (err error) {
	defer s.observe("record_sync_point_deferred", &err)()
	return s.recordSyncPoint(ctx, s.db.execDeferred, epoch, id, sp)
}

func (s *Store) recordSyncPoint(ctx context.Context, exec func(context.Context, string, ...any) (int64, error), epoch int64, id string, sp SyncPoint) error {
	if sp.Offset < 0 || sp.Articles < 0 || sp.Number < 0 {
		return fmt.Errorf("record sync point: %w: negative value", ErrInvalid)
	}
	n, err := exec(ctx, `UPDATE transfers SET sync_number = $2, sync_offset = $3, sync_articles = $4,
		bytes = $3, articles = $4, updated_at = $6 WHERE id = $1 AND epoch = $5`,
		id, sp.Number, sp.Offset, sp.Articles, epoch, s.d.ts(now()))
	if err == nil && n == 0 {
		err = s.notOwnerOrMissing(ctx, s.db, epoch, id)
	}
	return s.wrap("record sync point", err)
}

// AddTransferProgress adds bytes and articles in one atomic statement.
func (s *Store) AddTransferProgress(ctx context.Context, epoch int64, id string, bytes, articles int64) (err error) {
	defer s.observe("add_transfer_progress", &err)()
	n, err := s.db.exec(ctx, `UPDATE transfers SET bytes = bytes + $2, articles = articles + $3,
		updated_at = $5 WHERE id = $1 AND epoch = $4`,
		id, bytes, articles, epoch, s.d.ts(now()))
	if err == nil && n == 0 {
		err = s.notOwnerOrMissing(ctx, s.db, epoch, id)
	}
	return s.wrap("add transfer progress", err)
}

// FinishTransfer records the outcome of a transfer.
func (s *Store) FinishTransfer(ctx context.Context, epoch int64, id string, r TransferResult) (err error) {
	defer s.observe("finish_transfer", &err)()
	if !r.Status.Valid() {
		return fmt.Errorf("finish transfer: %w: status %q", ErrInvalid, r.Status)
	}
	ts := now()
	var finished time.Time
	if r.Status.Final() {
		finished = ts
	}
	n, err := s.db.exec(ctx, `UPDATE transfers SET status = $2, bytes = $3, articles = $4, sha256 = $5,
		diagnostic = $6, updated_at = $8, finished_at = $9, anomalies = $10 WHERE id = $1 AND epoch = $7`,
		id, string(r.Status), r.Bytes, r.Articles, r.SHA256, r.Diagnostic, epoch, s.d.ts(ts), s.d.nts(finished),
		strings.Join(r.Anomalies, ","))
	if err == nil && n == 0 {
		err = s.notOwnerOrMissing(ctx, s.db, epoch, id)
	}
	return s.wrap("finish transfer", err)
}

// UpdateTransfer applies mutate to the current record under a row lock.
func (s *Store) UpdateTransfer(ctx context.Context, epoch int64, id string, mutate func(*Transfer) error) (_ Transfer, err error) {
	defer s.observe("update_transfer", &err)()
	var out Transfer
	err = s.inTx(ctx, func(t tx) ([]Change, error) {
		// Check (and on PostgreSQL share-lock) the epoch first, so a stale
		// caller gets ErrStaleEpoch rather than a lock wait.
		if err := s.checkEpochLocked(ctx, t, epoch); err != nil {
			return nil, err
		}
		cur, err := s.scanTransfer(t.queryRow(ctx, `SELECT `+transferCols+` FROM transfers WHERE id = $1`+s.d.forUpdate, id))
		if err != nil {
			return nil, err
		}
		next := cur
		if err := mutate(&next); err != nil {
			return nil, err
		}
		next.ID, next.CreatedAt = cur.ID, cur.CreatedAt
		if err := validTransfer(next); err != nil {
			return nil, err
		}
		next.Epoch, next.UpdatedAt = epoch, now()
		switch {
		case next.Status.Final() && !cur.Status.Final():
			next.FinishedAt = next.UpdatedAt
		case !next.Status.Final():
			next.FinishedAt = time.Time{}
		}
		_, err = t.exec(ctx, `UPDATE transfers SET server_id = $2, partner_id = $3, file_id = $4, direction = $5,
			pesit_id = $6, status = $7, bytes = $8, articles = $9, sync_number = $10, sync_offset = $11,
			sync_articles = $12, restart_count = $13, sha256 = $14, diagnostic = $15, local_path = $16, node = $17,
			epoch = $18, updated_at = $19, finished_at = $20, temp_path = $21,
			file_created = $22, anomalies = $23 WHERE id = $1`,
			next.ID, next.ServerID, next.PartnerID, next.FileID, string(next.Direction), next.PesitID,
			string(next.Status), next.Bytes, next.Articles, next.SyncPoint.Number, next.SyncPoint.Offset,
			next.SyncPoint.Articles, next.RestartCount, next.SHA256, next.Diagnostic, next.LocalPath, next.Node,
			next.Epoch, s.d.ts(next.UpdatedAt), s.d.nts(next.FinishedAt), next.TempPath, next.FileCreated,
			strings.Join(next.Anomalies, ","))
		out = next
		return nil, err
	})
	return out, s.wrap("update transfer "+id, err)
}

// TakeOverTransfer moves a transfer to (node, epoch) if its owner epoch is
// still from: a compare-and-set under the leader guard, so that a node that
// is no longer the leader cannot take anything over.
func (s *Store) TakeOverTransfer(ctx context.Context, epoch int64, node, id string, from int64) (_ Transfer, err error) {
	defer s.observe("take_over_transfer", &err)()
	var out Transfer
	err = s.inTx(ctx, func(t tx) ([]Change, error) {
		if err := s.checkEpochLocked(ctx, t, epoch); err != nil {
			return nil, err
		}
		n, err := t.exec(ctx, `UPDATE transfers SET epoch = $2, node = $3, status = 'in_progress',
			restart_count = restart_count + 1, updated_at = $4, finished_at = NULL
			WHERE id = $1 AND epoch = $5 AND status IN ('in_progress', 'interrupted', 'restartable')`,
			id, epoch, node, s.d.ts(now()), from)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, s.notOwnerOrMissing(ctx, t, from, id)
		}
		out, err = s.scanTransfer(t.queryRow(ctx, `SELECT `+transferCols+` FROM transfers WHERE id = $1`, id))
		return nil, err
	})
	return out, s.wrap("take over transfer "+id, err)
}

// InterruptOrphans is the new leader's sweep: every in_progress transfer
// whose owner is gone (gone decides; the store knows nothing of etcd) is
// marked interrupted with its sync point kept, so that the partner's restart
// resumes it, and (node, epoch) becomes its owner, so that a late write of
// the gone session is refused. Each row is a compare-and-set on its owner
// epoch: a transfer that finished or was taken over meanwhile is left alone.
func (s *Store) InterruptOrphans(ctx context.Context, epoch int64, node string, gone func(Transfer) bool) (_ []Transfer, err error) {
	defer s.observe("interrupt_orphans", &err)()
	if err := s.checkEpoch(ctx, s.rd, epoch); err != nil {
		return nil, s.wrap("interrupt orphans", err)
	}
	live, err := listAll(ctx, s.rd, `SELECT `+transferCols+` FROM transfers
		WHERE status = 'in_progress' AND NOT (epoch = $1 AND node = $2)`,
		s.scanTransfer, epoch, node)
	if err != nil {
		return nil, s.wrap("interrupt orphans: list", err)
	}
	var out []Transfer
	for _, t := range live {
		if !gone(t) {
			continue
		}
		diag := fmt.Sprintf("owner %s (epoch %d) gone; interrupted by %s (epoch %d)", t.Node, t.Epoch, node, epoch)
		ts := now()
		var n int64
		err := s.inTx(ctx, func(q tx) ([]Change, error) {
			if err := s.checkEpochLocked(ctx, q, epoch); err != nil {
				return nil, err
			}
			var err error
			n, err = q.exec(ctx, `UPDATE transfers SET status = 'interrupted', diagnostic = $2, epoch = $3, node = $4,
				updated_at = $5 WHERE id = $1 AND epoch = $6 AND status = 'in_progress'`,
				t.ID, diag, epoch, node, s.d.ts(ts), t.Epoch)
			return nil, err
		})
		if err != nil {
			return out, s.wrap("interrupt orphan "+t.ID, err)
		}
		if n == 1 {
			t.Status, t.Diagnostic, t.Epoch, t.Node, t.UpdatedAt = StatusInterrupted, diag, epoch, node, ts
			out = append(out, t)
		}
	}
	return out, nil
}

// ListUnpublished lists the completed receives whose publication the sweep
// has not confirmed yet (temp_path set), through the partial index
// transfers_unpublished.
func (s *Store) ListUnpublished(ctx context.Context, epoch int64, limit int) (_ []Transfer, err error) {
	defer s.observe("list_unpublished", &err)()
	if err := s.checkEpoch(ctx, s.rd, epoch); err != nil {
		return nil, s.wrap("list unpublished", err)
	}
	out, err := listAll(ctx, s.rd, `SELECT `+transferCols+` FROM transfers
		WHERE status = 'completed' AND temp_path <> '' AND direction = 'receive'
		ORDER BY updated_at, id LIMIT `+strconv.Itoa(pageSize(limit)), s.scanTransfer)
	return out, s.wrap("list unpublished", err)
}

// SettlePublished forgets the temporary file of a completed receive once its
// file is known to be published. The owner epoch is not checked (a completed
// record has no session left to fence) but the leader's is, so that a
// stepped-down leader's sweep writes nothing.
func (s *Store) SettlePublished(ctx context.Context, epoch int64, id, temp, diagnostic string) (_ bool, err error) {
	defer s.observe("settle_published", &err)()
	if temp == "" {
		return false, fmt.Errorf("settle published %s: %w: empty temporary path", id, ErrInvalid)
	}
	var n int64
	err = s.inTx(ctx, func(q tx) ([]Change, error) {
		if err := s.checkEpochLocked(ctx, q, epoch); err != nil {
			return nil, err
		}
		var err error
		n, err = q.exec(ctx, `UPDATE transfers SET temp_path = '',
			diagnostic = CASE WHEN $3 = '' THEN diagnostic ELSE $3 END, updated_at = $4
			WHERE id = $1 AND temp_path = $2 AND status = 'completed'`,
			id, temp, diagnostic, s.d.ts(now()))
		return nil, err
	})
	return n == 1, s.wrap("settle published "+id, err)
}

// GetTransfer returns one transfer.
func (s *Store) GetTransfer(ctx context.Context, id string) (_ Transfer, err error) {
	defer s.observe("get_transfer", &err)()
	t, err := s.scanTransfer(s.rd.queryRow(ctx, `SELECT `+transferCols+` FROM transfers WHERE id = $1`, id))
	return t, s.wrap("get transfer "+id, err)
}

// FindRestartable returns the newest restartable transfer for key.
func (s *Store) FindRestartable(ctx context.Context, k RestartKey) (_ Transfer, err error) {
	defer s.observe("find_restartable", &err)()
	t, err := s.scanTransfer(s.rd.queryRow(ctx, `SELECT `+transferCols+` FROM transfers
		WHERE partner_id = $1 AND direction = $2 AND pesit_id = $3 AND file_id = $4
		AND status IN ('in_progress', 'interrupted', 'restartable')
		ORDER BY created_at DESC, id DESC LIMIT 1`, k.PartnerID, string(k.Direction), k.PesitID, k.FileID))
	return t, s.wrap(fmt.Sprintf("find restartable transfer %s/%s/%d/%s", k.PartnerID, k.Direction, k.PesitID, k.FileID), err)
}

// FindCompletedReceive returns the newest completed receive for key
// finished since since (the index transfers_restart serves it).
func (s *Store) FindCompletedReceive(ctx context.Context, k RestartKey, since time.Time) (_ Transfer, err error) {
	defer s.observe("find_completed_receive", &err)()
	t, err := s.scanTransfer(s.rd.queryRow(ctx, `SELECT `+transferCols+` FROM transfers
		WHERE partner_id = $1 AND direction = 'receive' AND pesit_id = $2 AND file_id = $3
		AND status = 'completed' AND finished_at >= $4
		ORDER BY created_at DESC, id DESC LIMIT 1`, k.PartnerID, k.PesitID, k.FileID, s.d.ts(since)))
	return t, s.wrap(fmt.Sprintf("find completed receive %s/%d/%s", k.PartnerID, k.PesitID, k.FileID), err)
}

const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

func pageSize(n int) int {
	switch {
	case n <= 0:
		return defaultPageSize
	case n > maxPageSize:
		return maxPageSize
	}
	return n
}

// cursor is an opaque keyset position: the (time, id) of the last item.
func encodeCursor(t time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(t.UnixMicro(), 10) + ":" + id))
}

func decodeCursor(c string) (time.Time, string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err == nil {
		ts, id, ok := strings.Cut(string(b), ":")
		if us, perr := strconv.ParseInt(ts, 10, 64); ok && perr == nil {
			return time.UnixMicro(us).UTC(), id, nil
		}
	}
	return time.Time{}, "", fmt.Errorf("%w: malformed cursor", ErrInvalid)
}

// where accumulates filter conditions with numbered parameters.
type where struct {
	conds []string
	args  []any
}

func (w *where) add(cond string, arg any) {
	w.args = append(w.args, arg)
	w.conds = append(w.conds, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(w.args))))
}

func (w *where) sql() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}

// ListTransfers returns a page of transfers, newest first.
func (s *Store) ListTransfers(ctx context.Context, f TransferFilter) (_ TransferPage, err error) {
	defer s.observe("list_transfers", &err)()
	w, err := s.transferWhere(f)
	if err != nil {
		return TransferPage{}, fmt.Errorf("list transfers: %w", err)
	}
	limit := pageSize(f.Limit)
	items, err := listAll(ctx, s.rd, `SELECT `+transferCols+` FROM transfers`+w.sql()+
		fmt.Sprintf(` ORDER BY created_at DESC, id DESC LIMIT %d`, limit+1), s.scanTransfer, w.args...)
	if err != nil {
		return TransferPage{}, s.wrap("list transfers", err)
	}
	page := TransferPage{Items: items}
	if len(items) > limit {
		page.Items = items[:limit]
		last := page.Items[limit-1]
		page.Next = encodeCursor(last.CreatedAt, last.ID)
	}
	return page, nil
}
