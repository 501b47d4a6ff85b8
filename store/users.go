package store

import (
	"context"
	"fmt"
	"time"
)

const userCols = `name, role, created_at, updated_at`

func scanUser(r row) (User, error) {
	var u User
	err := r.Scan(&u.Name, &u.Role, tsScan{&u.CreatedAt}, tsScan{&u.UpdatedAt})
	return u, err
}

// PutUser creates or replaces an admin API user.
func (s *Store) PutUser(ctx context.Context, u User, passwordHash string) (_ User, err error) {
	defer s.observe("put_user", &err)()
	if u.Name == "" || len(u.Name) > 128 || !validRole(u.Role) {
		return User{}, fmt.Errorf("put user: %w: name required, role viewer|operator|admin", ErrInvalid)
	}
	ts := now()
	err = s.inTx(ctx, func(t tx) ([]Change, error) {
		cur, err := scanUser(t.queryRow(ctx, `SELECT `+userCols+` FROM api_users WHERE name = $1`+s.d.forUpdate, u.Name))
		switch {
		case err == nil:
			var oldHash string
			if err := t.queryRow(ctx, `SELECT password_hash FROM api_users WHERE name = $1`, u.Name).Scan(&oldHash); err != nil {
				return nil, err
			}
			u.CreatedAt, u.UpdatedAt = cur.CreatedAt, cur.UpdatedAt
			if cur.Role == u.Role && oldHash == passwordHash {
				return nil, nil
			}
			u.UpdatedAt = ts
			_, err = t.exec(ctx, `UPDATE api_users SET role = $2, password_hash = $3, updated_at = $4 WHERE name = $1`,
				u.Name, string(u.Role), passwordHash, s.d.ts(ts))
			return nil, err
		case isNoRows(err):
			u.CreatedAt, u.UpdatedAt = ts, ts
			_, err = t.exec(ctx, `INSERT INTO api_users (name, role, password_hash, created_at, updated_at)
				VALUES ($1, $2, $3, $4, $5)`, u.Name, string(u.Role), passwordHash, s.d.ts(ts), s.d.ts(ts))
			return nil, err
		default:
			return nil, err
		}
	})
	return u, s.wrap("put user "+u.Name, err)
}

// GetUser returns one user.
func (s *Store) GetUser(ctx context.Context, name string) (_ User, err error) {
	defer s.observe("get_user", &err)()
	u, err := scanUser(s.rd.queryRow(ctx, `SELECT `+userCols+` FROM api_users WHERE name = $1`, name))
	return u, s.wrap("get user "+name, err)
}

// ListUsers returns every user ordered by name.
func (s *Store) ListUsers(ctx context.Context) (_ []User, err error) {
	defer s.observe("list_users", &err)()
	out, err := listAll(ctx, s.rd, `SELECT `+userCols+` FROM api_users ORDER BY name`, scanUser)
	return out, s.wrap("list users", err)
}

// DeleteUser removes a user and the tokens issued to it.
func (s *Store) DeleteUser(ctx context.Context, name string) (err error) {
	defer s.observe("delete_user", &err)()
	err = s.inTx(ctx, func(t tx) ([]Change, error) {
		n, err := t.exec(ctx, `DELETE FROM api_users WHERE name = $1`, name)
		if err == nil && n == 0 {
			return nil, ErrNotFound
		}
		if err == nil {
			_, err = t.exec(ctx, `DELETE FROM api_tokens WHERE user_name = $1`, name)
		}
		return nil, err
	})
	return s.wrap("delete user "+name, err)
}

// UserPasswordHash returns the stored hash, for VerifyPassword only.
func (s *Store) UserPasswordHash(ctx context.Context, name string) (_ string, err error) {
	defer s.observe("user_password_hash", &err)()
	var h string
	err = s.rd.queryRow(ctx, `SELECT password_hash FROM api_users WHERE name = $1`, name).Scan(&h)
	return h, s.wrap("user password "+name, err)
}

const tokenCols = `id, user_name, role, expires_at, created_at`

func scanToken(r row) (Token, error) {
	var t Token
	err := r.Scan(&t.ID, &t.User, &t.Role, tsScan{&t.ExpiresAt}, tsScan{&t.CreatedAt})
	return t, err
}

// CreateToken stores a token by its hash (HashToken). The ID is chosen by the
// caller (e.g. a short random name shown in listings); ErrConflict if taken.
func (s *Store) CreateToken(ctx context.Context, t Token, tokenHash string) (_ Token, err error) {
	defer s.observe("create_token", &err)()
	if t.ID == "" || len(tokenHash) != 64 || !validRole(t.Role) {
		return Token{}, fmt.Errorf("create token: %w: id, 64-hex hash and a valid role are required", ErrInvalid)
	}
	// A token that never expires outlives every rotation policy and every
	// forgotten CI job: an expiry is required (docs/security.md).
	if t.ExpiresAt.IsZero() {
		return Token{}, fmt.Errorf("create token: %w: an expiry is required", ErrInvalid)
	}
	t.CreatedAt = now()
	t.ExpiresAt = t.ExpiresAt.UTC().Truncate(time.Microsecond)
	_, err = s.db.exec(ctx, `INSERT INTO api_tokens (id, token_hash, user_name, role, expires_at, created_at)
		VALUES ($1, $2, $3, $4, $5, $6)`, t.ID, tokenHash, t.User, string(t.Role), s.d.nts(t.ExpiresAt), s.d.ts(t.CreatedAt))
	return t, s.wrap("create token "+t.ID, err)
}

// LegacyTokenLifetime is how long a token stored without an expiry (by a
// version that allowed it) stays valid after its creation.
const LegacyTokenLifetime = 30 * 24 * time.Hour

// unexpiredToken selects live tokens; $n is the current time and $n+1 the
// creation time before which a token without expiry is dead.
const unexpiredToken = `(expires_at > $%d OR (expires_at IS NULL AND created_at > $%d))`

// LookupToken finds an unexpired token by hash.
func (s *Store) LookupToken(ctx context.Context, tokenHash string) (_ Token, err error) {
	defer s.observe("lookup_token", &err)()
	ts := now()
	t, err := scanToken(s.rd.queryRow(ctx, `SELECT `+tokenCols+` FROM api_tokens
		WHERE token_hash = $1 AND `+fmt.Sprintf(unexpiredToken, 2, 3), tokenHash, s.d.ts(ts), s.d.ts(ts.Add(-LegacyTokenLifetime))))
	return t, s.wrap("lookup token", err)
}

// ListTokens returns every unexpired token (never its hash), ordered by id:
// an expired token can no longer be used, and listing it would only hide
// the live ones.
func (s *Store) ListTokens(ctx context.Context) (_ []Token, err error) {
	defer s.observe("list_tokens", &err)()
	ts := now()
	out, err := listAll(ctx, s.rd, `SELECT `+tokenCols+` FROM api_tokens WHERE `+fmt.Sprintf(unexpiredToken, 1, 2)+` ORDER BY id`,
		scanToken, s.d.ts(ts), s.d.ts(ts.Add(-LegacyTokenLifetime)))
	return out, s.wrap("list tokens", err)
}

// DeleteToken revokes a token.
func (s *Store) DeleteToken(ctx context.Context, id string) (err error) {
	defer s.observe("delete_token", &err)()
	n, err := s.db.exec(ctx, `DELETE FROM api_tokens WHERE id = $1`, id)
	if err == nil && n == 0 {
		err = ErrNotFound
	}
	return s.wrap("delete token "+id, err)
}
