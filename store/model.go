package store

import (
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"
)

// Access is what a partner may do with virtual files.
type Access string

// Partner access rights.
const (
	AccessRead  Access = "read"  // the partner may only receive (we send)
	AccessWrite Access = "write" // the partner may only send (we receive)
	AccessBoth  Access = "both"
)

// FileDirection says which way a virtual file may be transferred, seen from
// this server.
type FileDirection string

// Virtual file directions.
const (
	FileReceive FileDirection = "receive"
	FileSend    FileDirection = "send"
	FileBoth    FileDirection = "both"
)

// RecordFormat is the PeSIT article format of a virtual file (PI 31).
type RecordFormat string

// Record formats.
const (
	RecordFixed    RecordFormat = "fixed"
	RecordVariable RecordFormat = "variable"
)

// DataCode is the PeSIT data code of a virtual file (PI 16).
type DataCode string

// Data codes.
const (
	DataASCII  DataCode = "ascii"
	DataEBCDIC DataCode = "ebcdic"
	DataBinary DataCode = "binary"
)

// TransferDirection is the direction of one transfer, seen from this server.
type TransferDirection string

// Transfer directions.
const (
	DirReceive TransferDirection = "receive"
	DirSend    TransferDirection = "send"
	DirMessage TransferDirection = "message"
)

// TransferStatus is the life-cycle state of a transfer record.
type TransferStatus string

// Transfer statuses. Completed, failed and cancelled are final: the store sets
// FinishedAt when a transfer enters one of them, and Purge only removes final
// transfers.
const (
	StatusInProgress  TransferStatus = "in_progress"
	StatusCompleted   TransferStatus = "completed"
	StatusFailed      TransferStatus = "failed"
	StatusInterrupted TransferStatus = "interrupted"
	StatusRestartable TransferStatus = "restartable"
	StatusCancelled   TransferStatus = "cancelled"
)

// Final reports whether s is a terminal status.
func (s TransferStatus) Final() bool {
	return s == StatusCompleted || s == StatusFailed || s == StatusCancelled
}

// Valid reports whether s is a known status.
func (s TransferStatus) Valid() bool {
	switch s {
	case StatusInProgress, StatusCompleted, StatusFailed, StatusInterrupted, StatusRestartable, StatusCancelled:
		return true
	}
	return false
}

// Role is an admin API user's or token's authority.
type Role string

// Admin API roles, weakest first.
const (
	RoleViewer   Role = "viewer"
	RoleOperator Role = "operator"
	RoleAdmin    Role = "admin"
)

// Partner is a PeSIT partner (PI 3) as shown and edited through the API.
// The password hash is deliberately NOT a field: it is written with
// CreatePartner/SetPartnerPassword and read only by PartnerPasswordHash, so a
// Partner value can be returned to a display without leaking it.
type Partner struct {
	ID          string   `json:"id"`
	Description string   `json:"description,omitempty"`
	Enabled     bool     `json:"enabled"`
	Access      Access   `json:"access"`
	Files       []string `json:"files,omitempty"` // allowed virtual files; empty means all
	MaxSessions int      `json:"maxSessions"`     // 0 means unlimited
	// TLS client-certificate mapping: a session whose client certificate has
	// this subject CN (verified against the server's client CAs) or one of
	// these SHA-256 fingerprints (lowercase hex of the DER) is this partner,
	// and a partner with either set must present such a certificate. Both
	// empty: no mapping.
	CertCN     string   `json:"certCN,omitempty"`
	CertSHA256 []string `json:"certSHA256,omitempty"`
	// MultiArticle and Segment let the server send multi-article DTFs and
	// segmented articles to this partner (Hors-SIT: agreed beforehand).
	MultiArticle bool `json:"multiArticle"`
	Segment      bool `json:"segment"`
	// Strict fails transfers on peer anomalies that are otherwise
	// tolerated (docs/interop.md).
	Strict    bool      `json:"strict"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// MayUse reports whether the partner may use the virtual file id.
func (p Partner) MayUse(fileID string) bool {
	if len(p.Files) == 0 {
		return true
	}
	for _, f := range p.Files {
		if f == fileID {
			return true
		}
	}
	return false
}

// VirtualFile is a PeSIT virtual file (PI 12): where received data lands and
// where sent data comes from.
type VirtualFile struct {
	ID           string        `json:"id"`
	Description  string        `json:"description,omitempty"`
	Direction    FileDirection `json:"direction"`
	ReceiveDir   string        `json:"receiveDir,omitempty"`
	NamePattern  string        `json:"namePattern,omitempty"` // e.g. ${partner}/${file}-${transferId}
	SendDir      string        `json:"sendDir,omitempty"`
	Overwrite    bool          `json:"overwrite"` // replace an existing target file instead of failing
	MaxSize      int64         `json:"maxSize"`   // bytes, 0 means unlimited
	RecordFormat RecordFormat  `json:"recordFormat"`
	RecordLength int           `json:"recordLength"`
	DataCode     DataCode      `json:"dataCode"`
	CreatedAt    time.Time     `json:"createdAt"`
	UpdatedAt    time.Time     `json:"updatedAt"`
}

// Server is a PeSIT server definition (PI 4): one listener, optionally with a
// TLS listener.
type Server struct {
	ID          string    `json:"id"`
	Description string    `json:"description,omitempty"`
	Listen      string    `json:"listen"` // host:port, host may be empty
	TLS         ServerTLS `json:"tls"`
	MaxSessions int       `json:"maxSessions"` // 0 means unlimited
	AutoStart   bool      `json:"autoStart"`
	CreatedAt   time.Time `json:"createdAt"`
	UpdatedAt   time.Time `json:"updatedAt"`
}

// ServerTLS holds file references, never key material.
type ServerTLS struct {
	Listen       string `json:"listen,omitempty"` // host:port; empty means no TLS listener
	CertFile     string `json:"certFile,omitempty"`
	KeyFile      string `json:"keyFile,omitempty"`
	ClientCAFile string `json:"clientCAFile,omitempty"`
	// ClientAuth says what a TLS client must show (docs/configuration.md):
	// "request" (default without clientCAFile: a certificate is asked for,
	// not verified, and only a pinned fingerprint authenticates with it),
	// "verify-if-given" (default with clientCAFile), "require-any" (a
	// certificate is required, not verified), "require" (a certificate
	// verified against clientCAFile is required: no TLS session without
	// one, whatever the password).
	ClientAuth string `json:"clientAuth,omitempty"`
}

// Client authentication modes of ServerTLS.ClientAuth.
const (
	ClientAuthRequest       = "request"
	ClientAuthVerifyIfGiven = "verify-if-given"
	ClientAuthRequireAny    = "require-any"
	ClientAuthRequire       = "require"
)

// SyncPoint is the last sync point acknowledged for a transfer: the restart
// state. Offset is the byte offset in the file and Articles the article count
// at that point.
type SyncPoint struct {
	Number   int64 `json:"number"`
	Offset   int64 `json:"offset"`
	Articles int64 `json:"articles"`
}

// Transfer is one file transfer record.
type Transfer struct {
	ID           string            `json:"id"` // assigned by CreateTransfer when empty
	ServerID     string            `json:"serverId"`
	PartnerID    string            `json:"partnerId"`
	FileID       string            `json:"fileId"`
	Direction    TransferDirection `json:"direction"`
	PesitID      int64             `json:"pesitId"` // PI 13
	Status       TransferStatus    `json:"status"`
	Bytes        int64             `json:"bytes"`
	Articles     int64             `json:"articles"`
	SyncPoint    SyncPoint         `json:"syncPoint"`
	RestartCount int               `json:"restartCount"`
	SHA256       string            `json:"sha256,omitempty"`
	Diagnostic   string            `json:"diagnostic,omitempty"`
	LocalPath    string            `json:"localPath,omitempty"`
	// TempPath is the partial file of a receive until it completes; a
	// restart on any node resumes into it.
	TempPath string `json:"-"`
	// FileCreated is PI 51 of a received file: a restart must repeat it.
	FileCreated string `json:"fileCreated,omitempty"`
	// Anomalies are the peer's tolerated deviations from the spec
	// (docs/interop.md), such as a miscounted PI 28.
	Anomalies []string `json:"anomalies,omitempty"`
	// Node and Epoch are the transfer's owner: the node and the leader term
	// whose session runs it (or ran it last). Sync points and the outcome
	// are written only by the owner, so a draining old leader may finish
	// what it owns; a restart on a new leader takes ownership atomically.
	Node       string    `json:"node,omitempty"`
	Epoch      int64     `json:"epoch"`
	CreatedAt  time.Time `json:"createdAt"`
	UpdatedAt  time.Time `json:"updatedAt"`
	FinishedAt time.Time `json:"finishedAt,omitzero"` // zero until a final status
}

// RestartKey finds the transfer a PeSIT restart refers to.
type RestartKey struct {
	PartnerID string
	Direction TransferDirection
	PesitID   int64
	FileID    string
}

// TransferResult is what FinishTransfer records.
type TransferResult struct {
	Status     TransferStatus
	Bytes      int64
	Articles   int64
	SHA256     string
	Diagnostic string
	Anomalies  []string // tolerated peer anomalies (docs/interop.md)
}

// TransferFilter selects transfers for ListTransfers. Zero fields do not
// filter. Results are ordered newest first (CreatedAt, then ID).
type TransferFilter struct {
	Status    TransferStatus
	PartnerID string
	ServerID  string
	FileID    string
	Direction TransferDirection
	Since     time.Time // CreatedAt >= Since
	Until     time.Time // CreatedAt < Until
	Limit     int       // default 100, max 1000
	Cursor    string    // from the previous page's Next
}

// TransferPage is one page of transfers; Next is empty on the last page.
type TransferPage struct {
	Items []Transfer `json:"items"`
	Next  string     `json:"next,omitempty"`
}

// Outcome of an audited action.
type Outcome string

// Audit outcomes.
const (
	OutcomeSuccess Outcome = "success"
	OutcomeFailure Outcome = "failure"
	OutcomeDenied  Outcome = "denied"
)

// AuditEvent records an API change, an authentication failure or a leadership
// change. Detail must never hold a secret.
type AuditEvent struct {
	ID      int64     `json:"id"` // assigned by AppendAudit
	Time    time.Time `json:"time"`
	Actor   string    `json:"actor"`
	Action  string    `json:"action"` // e.g. partner.update, pesit.auth, api.auth, leader.claim
	Target  string    `json:"target,omitempty"`
	Outcome Outcome   `json:"outcome"`
	Detail  string    `json:"detail,omitempty"`
}

// AuditFilter selects audit events, newest first.
type AuditFilter struct {
	Actor   string
	Action  string
	Target  string
	Outcome Outcome
	Since   time.Time
	Until   time.Time
	Limit   int
	Cursor  string
	// ExcludeActions leaves out events with these actions; an entry ending
	// in "." leaves out every action it starts (e.g. "user." for a viewer,
	// who may not read them).
	ExcludeActions []string
}

// AuditPage is one page of audit events.
type AuditPage struct {
	Items []AuditEvent `json:"items"`
	Next  string       `json:"next,omitempty"`
}

// Leadership is the cluster_leader record used for fencing.
type Leadership struct {
	Epoch  int64     `json:"epoch"`
	Member string    `json:"member"`
	Since  time.Time `json:"since"`
}

// User is an admin API user. As with Partner, the password hash is not a
// field; read it with UserPasswordHash.
type User struct {
	Name      string    `json:"name"`
	Role      Role      `json:"role"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// Token is an admin API bearer token. Only the SHA-256 of the token is
// stored (see HashToken).
type Token struct {
	ID        string    `json:"id"`
	User      string    `json:"user,omitempty"`
	Role      Role      `json:"role"`
	ExpiresAt time.Time `json:"expiresAt,omitzero"` // zero: never
	CreatedAt time.Time `json:"createdAt"`
}

// ChangeKind names the configuration aggregate that changed.
type ChangeKind string

// Change kinds.
const (
	KindPartner ChangeKind = "partner"
	KindFile    ChangeKind = "file"
	KindServer  ChangeKind = "server"
	// KindAll comes with OpResync: notifications may have been missed (the
	// PostgreSQL listener reconnected), reload everything.
	KindAll ChangeKind = "all"
)

// ChangeOp is what happened.
type ChangeOp string

// Change operations.
const (
	OpCreate ChangeOp = "create"
	OpUpdate ChangeOp = "update"
	OpDelete ChangeOp = "delete"
	OpResync ChangeOp = "resync"
)

// Change is a configuration change notification.
type Change struct {
	Kind ChangeKind `json:"kind"`
	ID   string     `json:"id"`
	Op   ChangeOp   `json:"op"`
}

// Declared is the configuration declared in the config file, applied at
// start-up by ApplyDeclared.
type Declared struct {
	Partners []DeclaredPartner
	Files    []VirtualFile
	Servers  []Server
}

// DeclaredPartner is a partner from the config file with its secret: either a
// plaintext password (hashed by the store, and re-hashed only when it no longer
// verifies, so re-applying changes nothing) or a ready hash.
type DeclaredPartner struct {
	Partner
	Password     string
	PasswordHash string
}

// identifier lengths from the PeSIT E spec.
const (
	maxPartnerID = 24 // PI 3
	maxServerID  = 24 // PI 4
	maxFileID    = 76 // PI 12
)

var idPattern = regexp.MustCompile(`^[A-Za-z0-9_.\-]+$`)

func validID(what, id string, max int) error {
	if id == "" {
		return fmt.Errorf("%w: %s id is empty", ErrInvalid, what)
	}
	if len(id) > max {
		return fmt.Errorf("%w: %s id %q longer than %d characters", ErrInvalid, what, id, max)
	}
	if !idPattern.MatchString(id) {
		return fmt.Errorf("%w: %s id %q: only letters, digits, '_', '.', '-' are allowed", ErrInvalid, what, id)
	}
	// "." and ".." name directories, not files or partners: a name pattern
	// such as ${partner}/${file} would resolve them.
	if strings.Trim(id, ".") == "" {
		return fmt.Errorf("%w: %s id %q: an id made only of dots is not allowed", ErrInvalid, what, id)
	}
	return nil
}

var hex64 = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Validate checks a partner before it is written.
func (p Partner) Validate() error {
	if err := validID("partner", p.ID, maxPartnerID); err != nil {
		return err
	}
	switch p.Access {
	case AccessRead, AccessWrite, AccessBoth:
	default:
		return fmt.Errorf("%w: partner %s: access %q is not read, write or both", ErrInvalid, p.ID, p.Access)
	}
	if p.MaxSessions < 0 {
		return fmt.Errorf("%w: partner %s: negative maxSessions", ErrInvalid, p.ID)
	}
	for _, f := range p.Files {
		if err := validID("virtual file", f, maxFileID); err != nil {
			return fmt.Errorf("partner %s: %w", p.ID, err)
		}
	}
	for _, fp := range p.CertSHA256 {
		if !hex64.MatchString(fp) {
			return fmt.Errorf("%w: partner %s: certSHA256 must be 64 lowercase hex digits", ErrInvalid, p.ID)
		}
	}
	return nil
}

// Validate checks a virtual file before it is written.
func (f VirtualFile) Validate() error {
	if err := validID("virtual file", f.ID, maxFileID); err != nil {
		return err
	}
	switch f.Direction {
	case FileReceive, FileSend, FileBoth:
	default:
		return fmt.Errorf("%w: file %s: direction %q is not receive, send or both", ErrInvalid, f.ID, f.Direction)
	}
	if f.Direction != FileSend && f.ReceiveDir == "" {
		return fmt.Errorf("%w: file %s: receiveDir is required for direction %s", ErrInvalid, f.ID, f.Direction)
	}
	if f.Direction != FileReceive && f.SendDir == "" {
		return fmt.Errorf("%w: file %s: sendDir is required for direction %s", ErrInvalid, f.ID, f.Direction)
	}
	switch f.RecordFormat {
	case RecordFixed, RecordVariable:
	default:
		return fmt.Errorf("%w: file %s: recordFormat %q is not fixed or variable", ErrInvalid, f.ID, f.RecordFormat)
	}
	switch f.DataCode {
	case DataASCII, DataEBCDIC, DataBinary:
	default:
		return fmt.Errorf("%w: file %s: dataCode %q is not ascii, ebcdic or binary", ErrInvalid, f.ID, f.DataCode)
	}
	if f.MaxSize < 0 || f.RecordLength < 0 || f.RecordLength > 65535 {
		return fmt.Errorf("%w: file %s: maxSize or recordLength out of range", ErrInvalid, f.ID)
	}
	return nil
}

// Validate checks a server definition before it is written.
func (s Server) Validate() error {
	if err := validID("server", s.ID, maxServerID); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(s.Listen); err != nil {
		return fmt.Errorf("%w: server %s: listen %q: %v", ErrInvalid, s.ID, s.Listen, err)
	}
	if s.TLS.Listen != "" {
		if _, _, err := net.SplitHostPort(s.TLS.Listen); err != nil {
			return fmt.Errorf("%w: server %s: tls listen %q: %v", ErrInvalid, s.ID, s.TLS.Listen, err)
		}
		if s.TLS.CertFile == "" || s.TLS.KeyFile == "" {
			return fmt.Errorf("%w: server %s: tls listen needs certFile and keyFile", ErrInvalid, s.ID)
		}
	}
	switch s.TLS.ClientAuth {
	case "", ClientAuthRequest, ClientAuthRequireAny:
	case ClientAuthVerifyIfGiven, ClientAuthRequire:
		if s.TLS.ClientCAFile == "" {
			return fmt.Errorf("%w: server %s: tls clientAuth %q needs clientCAFile", ErrInvalid, s.ID, s.TLS.ClientAuth)
		}
	default:
		return fmt.Errorf("%w: server %s: tls clientAuth %q: want request, verify-if-given, require-any or require", ErrInvalid, s.ID, s.TLS.ClientAuth)
	}
	if s.MaxSessions < 0 {
		return fmt.Errorf("%w: server %s: negative maxSessions", ErrInvalid, s.ID)
	}
	return nil
}

func validRole(r Role) bool { return r == RoleViewer || r == RoleOperator || r == RoleAdmin }
