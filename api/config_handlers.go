package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/vectis-ft/vectis/store"
)

// list is the body of an unpaginated list.
type list[T any] struct {
	Items []T `json:"items"`
	Total int `json:"total"`
}

func newList[T any](items []T) list[T] {
	return list[T]{Items: orEmpty(items), Total: len(items)}
}

// pathID reads and validates the {id} path value.
func pathID(r *http.Request, kind string, max int) (string, error) {
	id := r.PathValue("id")
	if err := checkID(kind, id, max); err != nil {
		return "", invalid("%v", err)
	}
	return id, nil
}

// bodyID reconciles the id in a PUT body with the one in the path.
func bodyID(pathID, bodyID, kind string) error {
	if bodyID != "" && bodyID != pathID {
		return invalid("%s id in the body (%q) differs from the one in the path (%q); ids cannot be renamed", kind, bodyID, pathID)
	}
	return nil
}

// ---- partners ----

// partnerInput is the body of POST and PUT /api/v1/partners. Password is
// accepted on create only.
type partnerInput struct {
	ID          string       `json:"id"`
	Description string       `json:"description"`
	Enabled     *bool        `json:"enabled"`
	Access      store.Access `json:"access"`
	Files       []string     `json:"files"`
	MaxSessions int          `json:"maxSessions"`
	CertCN      string       `json:"certCN"`
	CertSHA256  fingerprints `json:"certSHA256"`
	// MultiArticle, Segment and Strict reach the PeSIT server
	// (docs/configuration.md, docs/interop.md).
	MultiArticle bool    `json:"multiArticle"`
	Segment      bool    `json:"segment"`
	Strict       bool    `json:"strict"`
	Password     *string `json:"password"`
}

// fingerprints is certSHA256: one fingerprint (the original form) or a
// list of them.
type fingerprints []string

func (f *fingerprints) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*f = nil
		if one != "" {
			*f = fingerprints{one}
		}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("certSHA256: want a fingerprint or a list of them")
	}
	*f = many
	return nil
}

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// object builds the validated object under id, the path's or the body's.
func (in partnerInput) object(id string) (store.Partner, error) {
	in.ID = id
	p := store.Partner{
		ID: in.ID, Description: in.Description, Enabled: true, Access: in.Access,
		Files: in.Files, MaxSessions: in.MaxSessions, CertCN: in.CertCN,
		MultiArticle: in.MultiArticle, Segment: in.Segment, Strict: in.Strict,
	}
	for _, fp := range in.CertSHA256 {
		p.CertSHA256 = append(p.CertSHA256, strings.ToLower(strings.ReplaceAll(fp, ":", "")))
	}
	if in.Enabled != nil {
		p.Enabled = *in.Enabled
	}
	if p.Access == "" {
		p.Access = store.AccessBoth
	}
	if err := checkID("partner", p.ID, maxPartnerID); err != nil {
		return p, invalid("%v", err)
	}
	if err := checkDescription(p.Description); err != nil {
		return p, invalid("%v", err)
	}
	switch p.Access {
	case store.AccessRead, store.AccessWrite, store.AccessBoth:
	default:
		return p, invalid("access %q: want read, write or both", truncate(string(p.Access)))
	}
	if p.MaxSessions < 0 || p.MaxSessions > 100000 {
		return p, invalid("maxSessions must be from 0 (no limit) to 100000")
	}
	if len(p.Files) > 1000 {
		return p, invalid("files lists more than 1000 virtual files")
	}
	for _, f := range p.Files {
		if err := checkID("virtual file", f, maxFileID); err != nil {
			return p, invalid("files: %v", err)
		}
	}
	if len(p.CertCN) > 256 || strings.ContainsFunc(p.CertCN, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return p, invalid("certCN must be at most 256 printable characters")
	}
	if len(p.CertSHA256) > 100 {
		return p, invalid("certSHA256 lists more than 100 fingerprints")
	}
	for _, fp := range p.CertSHA256 {
		if !sha256Hex.MatchString(fp) {
			return p, invalid("certSHA256 must be the 64 hex digits of the certificate's SHA-256")
		}
	}
	return p, nil
}

func (in partnerInput) bodyID() string { return in.ID }

// partnerKind is the REST shape of partners. The password is set on create
// (hashed here, never stored or logged in clear) and afterwards only
// through PUT /api/v1/partners/{id}/password.
func (a *API) partnerKind() *objectKind[store.Partner, partnerInput] {
	return &objectKind[store.Partner, partnerInput]{
		api: a, name: "partner", plural: "partners", action: "partner",
		path: "/api/v1/partners", maxID: maxPartnerID,
		id:     func(p store.Partner) string { return p.ID },
		load:   a.store.ListPartners,
		fetch:  a.store.GetPartner,
		save:   a.store.UpdatePartner,
		remove: a.store.DeletePartner,
		checkInsert: func(in partnerInput, p store.Partner) error {
			if in.Password != nil {
				if err := checkPartnerPassword(*in.Password); err != nil {
					return invalid("%v", err)
				}
				return nil
			}
			if p.CertCN == "" && len(p.CertSHA256) == 0 {
				return invalid("password is required unless the partner authenticates by certificate (certCN or certSHA256)")
			}
			return nil
		},
		insert: func(ctx context.Context, in partnerInput, p store.Partner) (store.Partner, error) {
			hash := ""
			if in.Password != nil {
				var err error
				if hash, err = store.HashPassword(*in.Password); err != nil {
					return store.Partner{}, err
				}
			}
			return a.store.CreatePartner(ctx, p, hash)
		},
		checkSave: func(id string, in partnerInput) error {
			if in.Password != nil {
				return invalid("password is write-only and changed with PUT /api/v1/partners/%s/password", id)
			}
			return nil
		},
	}
}

func (a *API) setPartnerPassword(w http.ResponseWriter, r *http.Request, who *Principal) error {
	id, err := pathID(r, "partner", maxPartnerID)
	if err != nil {
		return err
	}
	var in struct {
		Password string `json:"password"`
	}
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	if err := checkPartnerPassword(in.Password); err != nil {
		return invalid("%v", err)
	}
	hash, err := store.HashPassword(in.Password)
	if err != nil {
		return err
	}
	if err := a.store.SetPartnerPassword(r.Context(), id, hash); err != nil {
		a.audit(r.Context(), who, "partner.password", id, store.OutcomeFailure, errDetail(err))
		return storeError(err, "partner "+quote(id))
	}
	a.audit(r.Context(), who, "partner.password", id, store.OutcomeSuccess, "")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// errDetail is the audit detail of a failed write: the error class, never
// the input.
func errDetail(err error) string {
	return storeError(err, "object").code
}

func quote(s string) string { return `"` + s + `"` }

// ---- virtual files ----

// fileInput is the body of POST and PUT /api/v1/files.
type fileInput struct {
	ID           string              `json:"id"`
	Description  string              `json:"description"`
	Direction    store.FileDirection `json:"direction"`
	ReceiveDir   string              `json:"receiveDir"`
	NamePattern  string              `json:"namePattern"`
	SendDir      string              `json:"sendDir"`
	Overwrite    bool                `json:"overwrite"`
	MaxSize      int64               `json:"maxSize"`
	RecordFormat store.RecordFormat  `json:"recordFormat"`
	RecordLength int                 `json:"recordLength"`
	DataCode     store.DataCode      `json:"dataCode"`
}

// object builds the validated object under id, the path's or the body's.
func (in fileInput) object(id string) (store.VirtualFile, error) {
	in.ID = id
	f := store.VirtualFile{
		ID: in.ID, Description: in.Description, Direction: in.Direction,
		ReceiveDir: in.ReceiveDir, NamePattern: in.NamePattern, SendDir: in.SendDir,
		Overwrite: in.Overwrite, MaxSize: in.MaxSize, RecordFormat: in.RecordFormat,
		RecordLength: in.RecordLength, DataCode: in.DataCode,
	}
	if f.RecordFormat == "" {
		f.RecordFormat = store.RecordVariable
	}
	if f.DataCode == "" {
		f.DataCode = store.DataBinary
	}
	if err := checkID("virtual file", f.ID, maxFileID); err != nil {
		return f, invalid("%v", err)
	}
	if err := checkDescription(f.Description); err != nil {
		return f, invalid("%v", err)
	}
	switch f.Direction {
	case store.FileReceive, store.FileSend, store.FileBoth:
	default:
		return f, invalid("direction %q: want receive, send or both", truncate(string(f.Direction)))
	}
	if f.Direction != store.FileSend && f.ReceiveDir == "" {
		return f, invalid("receiveDir is required for direction %s", f.Direction)
	}
	if f.Direction != store.FileReceive && f.SendDir == "" {
		return f, invalid("sendDir is required for direction %s", f.Direction)
	}
	for _, c := range []struct{ field, dir string }{{"receiveDir", f.ReceiveDir}, {"sendDir", f.SendDir}} {
		if err := checkDir(c.field, c.dir); err != nil {
			return f, invalid("%v", err)
		}
	}
	if err := checkNamePattern(f.NamePattern); err != nil {
		return f, invalid("%v", err)
	}
	switch f.RecordFormat {
	case store.RecordFixed, store.RecordVariable:
	default:
		return f, invalid("recordFormat %q: want fixed or variable", truncate(string(f.RecordFormat)))
	}
	switch f.DataCode {
	case store.DataASCII, store.DataEBCDIC, store.DataBinary:
	default:
		return f, invalid("dataCode %q: want ascii, ebcdic or binary", truncate(string(f.DataCode)))
	}
	if f.MaxSize < 0 {
		return f, invalid("maxSize must be 0 (no limit) or a positive number of bytes")
	}
	if f.RecordLength < 0 || f.RecordLength > 65535 {
		return f, invalid("recordLength must be from 0 (server default) to 65535")
	}
	return f, nil
}

// checkFileRoot refuses directories outside vectis.fileRoot: an admin
// account must not be enough to make the PeSIT server write to /etc or
// serve /root.
func (a *API) checkFileRoot(f store.VirtualFile) error {
	for _, c := range []struct{ field, dir string }{{"receiveDir", f.ReceiveDir}, {"sendDir", f.SendDir}} {
		if c.dir == "" {
			continue
		}
		if err := a.fileRoot.Check(c.dir); err != nil {
			return invalid("%s %q is outside the file root %s (vectis.fileRoot)", c.field, truncate(c.dir), a.fileRoot.Dir())
		}
	}
	return nil
}

func (in fileInput) bodyID() string { return in.ID }

// fileKind is the REST shape of virtual files; their directories must lie
// under the file root.
func (a *API) fileKind() *objectKind[store.VirtualFile, fileInput] {
	return &objectKind[store.VirtualFile, fileInput]{
		api: a, name: "virtual file", plural: "virtual files", action: "file",
		path: "/api/v1/files", maxID: maxFileID,
		id:     func(f store.VirtualFile) string { return f.ID },
		load:   a.store.ListFiles,
		fetch:  a.store.GetFile,
		insert: ignoreInput[fileInput](a.store.CreateFile),
		save:   a.store.UpdateFile,
		remove: a.store.DeleteFile,
		check:  a.checkFileRoot,
	}
}

// ---- servers ----

// serverInput is the body of POST and PUT /api/v1/servers.
type serverInput struct {
	ID          string          `json:"id"`
	Description string          `json:"description"`
	Listen      string          `json:"listen"`
	TLS         store.ServerTLS `json:"tls"`
	MaxSessions int             `json:"maxSessions"`
	AutoStart   *bool           `json:"autoStart"`
}

// object builds the validated object under id, the path's or the body's.
func (in serverInput) object(id string) (store.Server, error) {
	in.ID = id
	s := store.Server{
		ID: in.ID, Description: in.Description, Listen: in.Listen, TLS: in.TLS,
		MaxSessions: in.MaxSessions, AutoStart: true,
	}
	if in.AutoStart != nil {
		s.AutoStart = *in.AutoStart
	}
	if err := checkID("server", s.ID, maxServerID); err != nil {
		return s, invalid("%v", err)
	}
	if err := checkDescription(s.Description); err != nil {
		return s, invalid("%v", err)
	}
	if err := checkListen("listen", s.Listen); err != nil {
		return s, invalid("%v", err)
	}
	if s.TLS.Listen != "" {
		if err := checkListen("tls.listen", s.TLS.Listen); err != nil {
			return s, invalid("%v", err)
		}
		if s.TLS.CertFile == "" || s.TLS.KeyFile == "" {
			return s, invalid("tls.certFile and tls.keyFile are required with tls.listen")
		}
	}
	for _, c := range []struct{ field, p string }{{"tls.certFile", s.TLS.CertFile}, {"tls.keyFile", s.TLS.KeyFile}, {"tls.clientCAFile", s.TLS.ClientCAFile}} {
		if err := checkDir(c.field, c.p); err != nil {
			return s, invalid("%v", err)
		}
	}
	if s.MaxSessions < 0 || s.MaxSessions > 100000 {
		return s, invalid("maxSessions must be from 0 (no limit) to 100000")
	}
	return s, nil
}

func (in serverInput) bodyID() string { return in.ID }

// serverKind is the REST shape of server definitions, shown with their state
// on this node.
func (a *API) serverKind() *objectKind[store.Server, serverInput] {
	return &objectKind[store.Server, serverInput]{
		api: a, name: "server", plural: "servers", action: "server",
		path: "/api/v1/servers", maxID: maxServerID,
		id:     func(s store.Server) string { return s.ID },
		load:   a.store.ListServers,
		fetch:  a.store.GetServer,
		insert: ignoreInput[serverInput](a.store.CreateServer),
		save:   a.store.UpdateServer,
		remove: a.store.DeleteServer,
		view:   func(s store.Server) any { return a.view(s) },
		// The leader applies the change before it answers, so that the
		// answer says whether the listeners follow it (running,
		// listenError). The definition is saved either way: the store's
		// change feed applies it again (a no-op) and standbys ignore it.
		saved: func(ctx context.Context, id string) {
			if a.servers != nil && a.leader.IsLeader() {
				if err := a.servers.Apply(ctx, id); err != nil {
					a.log.WarnContext(ctx, "server change not applied", "server", id, "error", err)
				}
			}
		},
	}
}

// serverView is a server definition with its state on this node.
type serverView struct {
	store.Server
	// Running says whether this node listens by this definition (always
	// false on a standby).
	Running bool `json:"running"`
	// ListenError says why this node could not listen by this definition
	// (an address in use, unreadable TLS material); the listeners of the
	// previous definition, if any, go on (Listening).
	ListenError string `json:"listenError,omitempty"`
	// Listening holds the addresses this node's listeners are bound to.
	Listening *listening `json:"listening,omitempty"`
}

type listening struct {
	Addr    string `json:"addr,omitempty"`
	TLSAddr string `json:"tlsAddr,omitempty"`
}

func (a *API) view(s store.Server) serverView {
	v := serverView{Server: s}
	if a.servers == nil {
		return v
	}
	v.Running = a.servers.Running(s.ID)
	v.ListenError = a.servers.ListenError(s.ID)
	if addr, tlsAddr := a.servers.Listening(s.ID); addr != "" || tlsAddr != "" {
		v.Listening = &listening{Addr: addr, TLSAddr: tlsAddr}
	}
	return v
}

// startServer and stopServer act on this node's listeners, so they need the
// leader: a standby answers 409 naming it.
func (a *API) startServer(w http.ResponseWriter, r *http.Request, who *Principal) error {
	return a.controlServer(w, r, who, "start")
}

func (a *API) stopServer(w http.ResponseWriter, r *http.Request, who *Principal) error {
	return a.controlServer(w, r, who, "stop")
}

func (a *API) controlServer(w http.ResponseWriter, r *http.Request, who *Principal, action string) error {
	id, err := pathID(r, "server", maxServerID)
	if err != nil {
		return err
	}
	s, err := a.store.GetServer(r.Context(), id)
	if err != nil {
		return storeError(err, "server "+quote(id))
	}
	if !a.leader.IsLeader() {
		a.audit(r.Context(), who, "server."+action, id, store.OutcomeFailure, "not leader")
		return notLeader(a.leader.LeaderName(), action+" servers")
	}
	if a.servers == nil {
		return errorf(http.StatusServiceUnavailable, CodeUnavailable, "server control is not available on this node")
	}
	if action == "start" {
		err = a.servers.Start(r.Context(), id)
	} else {
		err = a.servers.Stop(r.Context(), id)
	}
	if err != nil {
		a.audit(r.Context(), who, "server."+action, id, store.OutcomeFailure, "")
		a.log.WarnContext(r.Context(), "server "+action+" failed", "server", id, "error", err)
		return errorf(http.StatusConflict, CodeConflict, "server %q could not %s: %v", id, action, err)
	}
	a.audit(r.Context(), who, "server."+action, id, store.OutcomeSuccess, "")
	writeJSON(w, http.StatusOK, a.view(s))
	return nil
}
