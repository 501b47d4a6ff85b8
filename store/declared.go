package store

import (
	"context"
	"fmt"
)

// declaredLockKey serialises ApplyDeclared across processes ("vdecl").
const declaredLockKey = 0x7664656300

// ApplyResult counts the rows ApplyDeclared created or changed.
type ApplyResult struct {
	Created int `json:"created"`
	Updated int `json:"updated"`
}

// Changes is Created + Updated.
func (r ApplyResult) Changes() int { return r.Created + r.Updated }

// ApplyDeclared upserts the partners, virtual files and servers declared in
// the configuration, in one transaction. A record whose settings already match
// is not written, so applying the same declaration twice changes no row and
// sends no change notification. Records absent from the declaration are left
// alone (they may have been created through the API).
func (s *Store) ApplyDeclared(ctx context.Context, d Declared) (_ ApplyResult, err error) {
	defer s.observe("apply_declared", &err)()
	if err := validateDeclared(d); err != nil {
		return ApplyResult{}, fmt.Errorf("apply declared configuration: %w", err)
	}
	// Hash plaintext passwords outside the transaction (argon2 is slow) but
	// only for partners whose stored hash does not already verify.
	hashes := make([]string, len(d.Partners))
	for i, p := range d.Partners {
		switch {
		case p.PasswordHash != "":
			hashes[i] = p.PasswordHash
		case p.Password != "":
			stored, err := s.PartnerPasswordHash(ctx, p.ID)
			if err == nil {
				if ok, _ := VerifyPassword(stored, p.Password); ok && isCurrentHash(stored) {
					hashes[i] = stored
					continue
				}
			} else if !isNoRows(err) {
				return ApplyResult{}, err
			}
			if hashes[i], err = HashPassword(p.Password); err != nil {
				return ApplyResult{}, err
			}
		}
	}
	var res ApplyResult
	err = s.inTx(ctx, func(t tx) ([]Change, error) {
		res = ApplyResult{}
		if s.d.name == DriverPostgres {
			// Pods starting together would otherwise both see a new
			// partner as missing and collide on INSERT (SELECT ... FOR
			// UPDATE cannot lock a row that does not exist yet).
			if _, err := t.exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(declaredLockKey)); err != nil {
				return nil, err
			}
		}
		var changes []Change
		note := func(kind ChangeKind, id string, op ChangeOp) {
			changes = append(changes, Change{kind, id, op})
			if op == OpCreate {
				res.Created++
			} else {
				res.Updated++
			}
		}
		ts := now()
		for i, dp := range d.Partners {
			p := normPartner(dp.Partner)
			cur, err := s.scanPartner(t.queryRow(ctx, `SELECT `+partnerCols+` FROM partners WHERE id = $1`+s.d.forUpdate, p.ID))
			if isNoRows(err) {
				p.CreatedAt, p.UpdatedAt = ts, ts
				if err := s.insertPartner(ctx, t, p, hashes[i]); err != nil {
					return nil, err
				}
				note(KindPartner, p.ID, OpCreate)
				continue
			}
			if err != nil {
				return nil, err
			}
			var curHash string
			if err := t.queryRow(ctx, `SELECT password_hash FROM partners WHERE id = $1`, p.ID).Scan(&curHash); err != nil {
				return nil, err
			}
			hashChanged := hashes[i] != "" && hashes[i] != curHash
			if hashChanged && dp.PasswordHash == "" && dp.Password != "" && isCurrentHash(curHash) {
				// Another process stored its own salted hash of the same
				// password meanwhile: that is no change.
				if ok, _ := VerifyPassword(curHash, dp.Password); ok {
					hashChanged = false
				}
			}
			if partnerEqual(cur, p) && !hashChanged {
				continue
			}
			p.CreatedAt, p.UpdatedAt = cur.CreatedAt, ts
			if err := s.updatePartner(ctx, t, p); err != nil {
				return nil, err
			}
			if hashChanged {
				if _, err := t.exec(ctx, `UPDATE partners SET password_hash = $2 WHERE id = $1`, p.ID, hashes[i]); err != nil {
					return nil, err
				}
			}
			note(KindPartner, p.ID, OpUpdate)
		}
		for _, f := range d.Files {
			cur, err := s.scanFile(t.queryRow(ctx, `SELECT `+fileCols+` FROM virtual_files WHERE id = $1`+s.d.forUpdate, f.ID))
			if isNoRows(err) {
				f.CreatedAt, f.UpdatedAt = ts, ts
				if _, err := t.exec(ctx, `INSERT INTO virtual_files (`+fileCols+`)
					VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`, s.fileArgs(f)...); err != nil {
					return nil, err
				}
				note(KindFile, f.ID, OpCreate)
				continue
			}
			if err != nil {
				return nil, err
			}
			if fileEqual(cur, f) {
				continue
			}
			f.CreatedAt, f.UpdatedAt = cur.CreatedAt, ts
			if err := s.updateFile(ctx, t, f); err != nil {
				return nil, err
			}
			note(KindFile, f.ID, OpUpdate)
		}
		for _, v := range d.Servers {
			cur, err := s.scanServer(t.queryRow(ctx, `SELECT `+serverCols+` FROM servers WHERE id = $1`+s.d.forUpdate, v.ID))
			if isNoRows(err) {
				v.CreatedAt, v.UpdatedAt = ts, ts
				if _, err := t.exec(ctx, `INSERT INTO servers (`+serverCols+`)
					VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`, s.serverArgs(v)...); err != nil {
					return nil, err
				}
				note(KindServer, v.ID, OpCreate)
				continue
			}
			if err != nil {
				return nil, err
			}
			if serverEqual(cur, v) {
				continue
			}
			v.CreatedAt, v.UpdatedAt = cur.CreatedAt, ts
			if err := s.updateServer(ctx, t, v); err != nil {
				return nil, err
			}
			note(KindServer, v.ID, OpUpdate)
		}
		return changes, nil
	})
	if err != nil {
		return ApplyResult{}, s.wrap("apply declared configuration", err)
	}
	if res.Changes() > 0 {
		s.log.Info("applied declared configuration", "created", res.Created, "updated", res.Updated)
	}
	return res, nil
}

func validateDeclared(d Declared) error {
	seen := map[string]bool{}
	for _, p := range d.Partners {
		if err := normPartner(p.Partner).Validate(); err != nil {
			return err
		}
		if seen["p/"+p.ID] {
			return fmt.Errorf("%w: partner %s declared twice", ErrInvalid, p.ID)
		}
		seen["p/"+p.ID] = true
	}
	for _, f := range d.Files {
		if err := f.Validate(); err != nil {
			return err
		}
		if seen["f/"+f.ID] {
			return fmt.Errorf("%w: virtual file %s declared twice", ErrInvalid, f.ID)
		}
		seen["f/"+f.ID] = true
	}
	for _, v := range d.Servers {
		if err := v.Validate(); err != nil {
			return err
		}
		if seen["s/"+v.ID] {
			return fmt.Errorf("%w: server %s declared twice", ErrInvalid, v.ID)
		}
		seen["s/"+v.ID] = true
	}
	return nil
}
