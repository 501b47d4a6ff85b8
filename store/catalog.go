// The catalog: create, read, update and delete of partners, virtual files and
// server definitions. It is data, not the process configuration (see
// store.Config and the declared configuration in declared.go).

package store

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
)

// ---- partners ----

const partnerCols = `id, description, enabled, access, files, max_sessions, cert_cn, cert_sha256, created_at, updated_at,
	multi_article, segment, strict`

func (s *Store) scanPartner(r row) (Partner, error) {
	var p Partner
	var files, fps string
	err := r.Scan(&p.ID, &p.Description, &p.Enabled, &p.Access, &files, &p.MaxSessions, &p.CertCN, &fps,
		tsScan{&p.CreatedAt}, tsScan{&p.UpdatedAt}, &p.MultiArticle, &p.Segment, &p.Strict)
	if err != nil {
		return Partner{}, err
	}
	if fps != "" {
		p.CertSHA256 = strings.Split(fps, ",")
	}
	if err := json.Unmarshal([]byte(files), &p.Files); err != nil {
		return Partner{}, fmt.Errorf("partner %s: files column: %w", p.ID, err)
	}
	return normPartner(p), nil
}

func filesJSON(files []string) string {
	if len(files) == 0 {
		return "[]"
	}
	b, _ := json.Marshal(files)
	return string(b)
}

func normPartner(p Partner) Partner {
	if len(p.Files) == 0 {
		p.Files = nil
	}
	if len(p.CertSHA256) == 0 {
		p.CertSHA256 = nil
	}
	return p
}

// partnerArgs are the values of partnerCols, in order.
func (s *Store) partnerArgs(p Partner) []any {
	return []any{p.ID, p.Description, p.Enabled, string(p.Access), filesJSON(p.Files), p.MaxSessions, p.CertCN,
		strings.Join(p.CertSHA256, ","), s.d.ts(p.CreatedAt), s.d.ts(p.UpdatedAt), p.MultiArticle, p.Segment, p.Strict}
}

// CreatePartner adds a partner; ErrConflict if the id exists.
func (s *Store) CreatePartner(ctx context.Context, p Partner, passwordHash string) (_ Partner, err error) {
	defer s.observe("create_partner", &err)()
	p = normPartner(p)
	if err := p.Validate(); err != nil {
		return Partner{}, err
	}
	ts := now()
	p.CreatedAt, p.UpdatedAt = ts, ts
	err = s.inTx(ctx, func(t tx) ([]Change, error) {
		return []Change{{KindPartner, p.ID, OpCreate}}, s.insertPartner(ctx, t, p, passwordHash)
	})
	return p, s.wrap("create partner "+p.ID, err)
}

func (s *Store) insertPartner(ctx context.Context, q queryer, p Partner, hash string) error {
	_, err := q.exec(ctx, `INSERT INTO partners (`+partnerCols+`, password_hash)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
		append(s.partnerArgs(p), hash)...)
	return err
}

// UpdatePartner replaces a partner's settings (not its password).
func (s *Store) UpdatePartner(ctx context.Context, p Partner) (_ Partner, err error) {
	defer s.observe("update_partner", &err)()
	p = normPartner(p)
	if err := p.Validate(); err != nil {
		return Partner{}, err
	}
	var out Partner
	err = s.inTx(ctx, func(t tx) ([]Change, error) {
		cur, err := s.scanPartner(t.queryRow(ctx, `SELECT `+partnerCols+` FROM partners WHERE id = $1`+s.d.forUpdate, p.ID))
		if err != nil {
			return nil, err
		}
		p.CreatedAt, p.UpdatedAt = cur.CreatedAt, cur.UpdatedAt
		if partnerEqual(cur, p) {
			out = cur
			return nil, nil
		}
		p.UpdatedAt = now()
		if err := s.updatePartner(ctx, t, p); err != nil {
			return nil, err
		}
		out = p
		return []Change{{KindPartner, p.ID, OpUpdate}}, nil
	})
	return out, s.wrap("update partner "+p.ID, err)
}

func (s *Store) updatePartner(ctx context.Context, q queryer, p Partner) error {
	n, err := q.exec(ctx, `UPDATE partners SET description = $2, enabled = $3, access = $4, files = $5,
		max_sessions = $6, cert_cn = $7, cert_sha256 = $8, created_at = $9, updated_at = $10,
		multi_article = $11, segment = $12, strict = $13 WHERE id = $1`,
		s.partnerArgs(p)...)
	if err == nil && n == 0 {
		err = ErrNotFound
	}
	return err
}

// partnerEqual compares the settings, not the bookkeeping timestamps. It
// compares every field, so that a new one cannot be forgotten.
func partnerEqual(a, b Partner) bool {
	a.CreatedAt, a.UpdatedAt = b.CreatedAt, b.UpdatedAt
	return reflect.DeepEqual(normPartner(a), normPartner(b))
}

// SetPartnerPassword replaces a partner's password hash (see HashPassword).
func (s *Store) SetPartnerPassword(ctx context.Context, id, passwordHash string) (err error) {
	defer s.observe("set_partner_password", &err)()
	err = s.inTx(ctx, func(t tx) ([]Change, error) {
		n, err := t.exec(ctx, `UPDATE partners SET password_hash = $2, updated_at = $3 WHERE id = $1`,
			id, passwordHash, s.d.ts(now()))
		if err == nil && n == 0 {
			err = ErrNotFound
		}
		return []Change{{KindPartner, id, OpUpdate}}, err
	})
	return s.wrap("set partner password "+id, err)
}

// DeletePartner removes a partner; its transfer history stays.
func (s *Store) DeletePartner(ctx context.Context, id string) (err error) {
	defer s.observe("delete_partner", &err)()
	return s.wrap("delete partner "+id, s.deleteCatalogEntry(ctx, "partners", KindPartner, id))
}

func (s *Store) deleteCatalogEntry(ctx context.Context, table string, kind ChangeKind, id string) error {
	return s.inTx(ctx, func(t tx) ([]Change, error) {
		n, err := t.exec(ctx, `DELETE FROM `+table+` WHERE id = $1`, id)
		if err == nil && n == 0 {
			err = ErrNotFound
		}
		return []Change{{kind, id, OpDelete}}, err
	})
}

// GetPartner returns one partner.
func (s *Store) GetPartner(ctx context.Context, id string) (_ Partner, err error) {
	defer s.observe("get_partner", &err)()
	p, err := s.scanPartner(s.rd.queryRow(ctx, `SELECT `+partnerCols+` FROM partners WHERE id = $1`, id))
	return p, s.wrap("get partner "+id, err)
}

// ListPartners returns every partner ordered by id.
func (s *Store) ListPartners(ctx context.Context) (_ []Partner, err error) {
	defer s.observe("list_partners", &err)()
	out, err := listAll(ctx, s.rd, `SELECT `+partnerCols+` FROM partners ORDER BY id`, s.scanPartner)
	return out, s.wrap("list partners", err)
}

// PartnerPasswordHash returns the stored hash, for VerifyPassword only.
func (s *Store) PartnerPasswordHash(ctx context.Context, id string) (_ string, err error) {
	defer s.observe("partner_password_hash", &err)()
	var h string
	err = s.rd.queryRow(ctx, `SELECT password_hash FROM partners WHERE id = $1`, id).Scan(&h)
	return h, s.wrap("partner password "+id, err)
}

// PartnerByCert maps a client certificate to a partner.
func (s *Store) PartnerByCert(ctx context.Context, cn, sha256hex string) (_ Partner, err error) {
	defer s.observe("partner_by_cert", &err)()
	if sha256hex != "" {
		// cert_sha256 holds a comma-separated list of hex fingerprints;
		// hex has no LIKE wildcard.
		p, err := s.scanPartner(s.rd.queryRow(ctx,
			`SELECT `+partnerCols+` FROM partners WHERE ',' || cert_sha256 || ',' LIKE $1 ORDER BY id LIMIT 1`,
			"%,"+strings.ToLower(sha256hex)+",%"))
		if err == nil || !isNoRows(err) {
			return p, s.wrap("partner by certificate", err)
		}
	}
	if cn == "" {
		return Partner{}, s.wrap("partner by certificate", ErrNotFound)
	}
	p, err := s.scanPartner(s.rd.queryRow(ctx,
		`SELECT `+partnerCols+` FROM partners WHERE cert_cn = $1 ORDER BY id LIMIT 1`, cn))
	return p, s.wrap("partner by certificate", err)
}

// ---- virtual files ----

const fileCols = `id, description, direction, receive_dir, name_pattern, send_dir, overwrite, max_size,
	record_format, record_length, data_code, created_at, updated_at`

func (s *Store) scanFile(r row) (VirtualFile, error) {
	var f VirtualFile
	err := r.Scan(&f.ID, &f.Description, &f.Direction, &f.ReceiveDir, &f.NamePattern, &f.SendDir, &f.Overwrite,
		&f.MaxSize, &f.RecordFormat, &f.RecordLength, &f.DataCode, tsScan{&f.CreatedAt}, tsScan{&f.UpdatedAt})
	return f, err
}

func (s *Store) fileArgs(f VirtualFile) []any {
	return []any{f.ID, f.Description, string(f.Direction), f.ReceiveDir, f.NamePattern, f.SendDir, f.Overwrite,
		f.MaxSize, string(f.RecordFormat), f.RecordLength, string(f.DataCode), s.d.ts(f.CreatedAt), s.d.ts(f.UpdatedAt)}
}

// fileEqual compares the settings, not the bookkeeping timestamps.
func fileEqual(a, b VirtualFile) bool {
	a.CreatedAt, a.UpdatedAt = b.CreatedAt, b.UpdatedAt
	return a == b
}

// CreateFile adds a virtual file; ErrConflict if the id exists.
func (s *Store) CreateFile(ctx context.Context, f VirtualFile) (_ VirtualFile, err error) {
	defer s.observe("create_file", &err)()
	if err := f.Validate(); err != nil {
		return VirtualFile{}, err
	}
	ts := now()
	f.CreatedAt, f.UpdatedAt = ts, ts
	err = s.inTx(ctx, func(t tx) ([]Change, error) {
		_, err := t.exec(ctx, `INSERT INTO virtual_files (`+fileCols+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`, s.fileArgs(f)...)
		return []Change{{KindFile, f.ID, OpCreate}}, err
	})
	return f, s.wrap("create file "+f.ID, err)
}

// UpdateFile replaces a virtual file.
func (s *Store) UpdateFile(ctx context.Context, f VirtualFile) (_ VirtualFile, err error) {
	defer s.observe("update_file", &err)()
	if err := f.Validate(); err != nil {
		return VirtualFile{}, err
	}
	var out VirtualFile
	err = s.inTx(ctx, func(t tx) ([]Change, error) {
		cur, err := s.scanFile(t.queryRow(ctx, `SELECT `+fileCols+` FROM virtual_files WHERE id = $1`+s.d.forUpdate, f.ID))
		if err != nil {
			return nil, err
		}
		if fileEqual(cur, f) {
			out = cur
			return nil, nil
		}
		f.CreatedAt, f.UpdatedAt = cur.CreatedAt, now()
		if err := s.updateFile(ctx, t, f); err != nil {
			return nil, err
		}
		out = f
		return []Change{{KindFile, f.ID, OpUpdate}}, nil
	})
	return out, s.wrap("update file "+f.ID, err)
}

func (s *Store) updateFile(ctx context.Context, q queryer, f VirtualFile) error {
	n, err := q.exec(ctx, `UPDATE virtual_files SET description = $2, direction = $3, receive_dir = $4,
		name_pattern = $5, send_dir = $6, overwrite = $7, max_size = $8, record_format = $9, record_length = $10,
		data_code = $11, created_at = $12, updated_at = $13 WHERE id = $1`, s.fileArgs(f)...)
	if err == nil && n == 0 {
		err = ErrNotFound
	}
	return err
}

// DeleteFile removes a virtual file.
func (s *Store) DeleteFile(ctx context.Context, id string) (err error) {
	defer s.observe("delete_file", &err)()
	return s.wrap("delete file "+id, s.deleteCatalogEntry(ctx, "virtual_files", KindFile, id))
}

// GetFile returns one virtual file.
func (s *Store) GetFile(ctx context.Context, id string) (_ VirtualFile, err error) {
	defer s.observe("get_file", &err)()
	f, err := s.scanFile(s.rd.queryRow(ctx, `SELECT `+fileCols+` FROM virtual_files WHERE id = $1`, id))
	return f, s.wrap("get file "+id, err)
}

// ListFiles returns every virtual file ordered by id.
func (s *Store) ListFiles(ctx context.Context) (_ []VirtualFile, err error) {
	defer s.observe("list_files", &err)()
	out, err := listAll(ctx, s.rd, `SELECT `+fileCols+` FROM virtual_files ORDER BY id`, s.scanFile)
	return out, s.wrap("list files", err)
}

// ---- servers ----

const serverCols = `id, description, listen, tls_listen, tls_cert_file, tls_key_file, tls_client_ca_file,
	max_sessions, auto_start, created_at, updated_at, tls_client_auth`

func (s *Store) scanServer(r row) (Server, error) {
	var v Server
	err := r.Scan(&v.ID, &v.Description, &v.Listen, &v.TLS.Listen, &v.TLS.CertFile, &v.TLS.KeyFile,
		&v.TLS.ClientCAFile, &v.MaxSessions, &v.AutoStart, tsScan{&v.CreatedAt}, tsScan{&v.UpdatedAt}, &v.TLS.ClientAuth)
	return v, err
}

func (s *Store) serverArgs(v Server) []any {
	return []any{v.ID, v.Description, v.Listen, v.TLS.Listen, v.TLS.CertFile, v.TLS.KeyFile, v.TLS.ClientCAFile,
		v.MaxSessions, v.AutoStart, s.d.ts(v.CreatedAt), s.d.ts(v.UpdatedAt), v.TLS.ClientAuth}
}

// serverEqual compares the settings, not the bookkeeping timestamps.
func serverEqual(a, b Server) bool {
	a.CreatedAt, a.UpdatedAt = b.CreatedAt, b.UpdatedAt
	return a == b
}

// CreateServer adds a server definition; ErrConflict if the id exists.
func (s *Store) CreateServer(ctx context.Context, v Server) (_ Server, err error) {
	defer s.observe("create_server", &err)()
	if err := v.Validate(); err != nil {
		return Server{}, err
	}
	ts := now()
	v.CreatedAt, v.UpdatedAt = ts, ts
	err = s.inTx(ctx, func(t tx) ([]Change, error) {
		_, err := t.exec(ctx, `INSERT INTO servers (`+serverCols+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`, s.serverArgs(v)...)
		return []Change{{KindServer, v.ID, OpCreate}}, err
	})
	return v, s.wrap("create server "+v.ID, err)
}

// UpdateServer replaces a server definition.
func (s *Store) UpdateServer(ctx context.Context, v Server) (_ Server, err error) {
	defer s.observe("update_server", &err)()
	if err := v.Validate(); err != nil {
		return Server{}, err
	}
	var out Server
	err = s.inTx(ctx, func(t tx) ([]Change, error) {
		cur, err := s.scanServer(t.queryRow(ctx, `SELECT `+serverCols+` FROM servers WHERE id = $1`+s.d.forUpdate, v.ID))
		if err != nil {
			return nil, err
		}
		if serverEqual(cur, v) {
			out = cur
			return nil, nil
		}
		v.CreatedAt, v.UpdatedAt = cur.CreatedAt, now()
		if err := s.updateServer(ctx, t, v); err != nil {
			return nil, err
		}
		out = v
		return []Change{{KindServer, v.ID, OpUpdate}}, nil
	})
	return out, s.wrap("update server "+v.ID, err)
}

func (s *Store) updateServer(ctx context.Context, q queryer, v Server) error {
	n, err := q.exec(ctx, `UPDATE servers SET description = $2, listen = $3, tls_listen = $4, tls_cert_file = $5,
		tls_key_file = $6, tls_client_ca_file = $7, max_sessions = $8, auto_start = $9, created_at = $10,
		updated_at = $11, tls_client_auth = $12 WHERE id = $1`, s.serverArgs(v)...)
	if err == nil && n == 0 {
		err = ErrNotFound
	}
	return err
}

// DeleteServer removes a server definition.
func (s *Store) DeleteServer(ctx context.Context, id string) (err error) {
	defer s.observe("delete_server", &err)()
	return s.wrap("delete server "+id, s.deleteCatalogEntry(ctx, "servers", KindServer, id))
}

// GetServer returns one server definition.
func (s *Store) GetServer(ctx context.Context, id string) (_ Server, err error) {
	defer s.observe("get_server", &err)()
	v, err := s.scanServer(s.rd.queryRow(ctx, `SELECT `+serverCols+` FROM servers WHERE id = $1`, id))
	return v, s.wrap("get server "+id, err)
}

// ListServers returns every server definition ordered by id.
func (s *Store) ListServers(ctx context.Context) (_ []Server, err error) {
	defer s.observe("list_servers", &err)()
	out, err := listAll(ctx, s.rd, `SELECT `+serverCols+` FROM servers ORDER BY id`, s.scanServer)
	return out, s.wrap("list servers", err)
}

// ---- helpers ----

func listAll[T any](ctx context.Context, q queryer, query string, scan func(row) (T, error), args ...any) ([]T, error) {
	r, err := q.query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	out := []T{}
	for r.Next() {
		v, err := scan(r)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, r.Err()
}
