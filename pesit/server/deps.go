package server

import (
	"context"
	"errors"
	"time"

	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// ErrNotFound is returned by a Directory when a partner or virtual file does
// not exist. Any other error is treated as a temporary failure.
var ErrNotFound = errors.New("not found")

// ErrTransferLost is wrapped by a Journal error when another owner took the
// transfer over (a restart on a newer leader; see docs/ha.md). The session
// must end the transfer without recording anything and without touching
// its file: no truncation, no removal, no publication, because the new
// owner resumes into that very file.
var ErrTransferLost = errors.New("transfer taken over by another owner")

// Directory gives the server the partners and virtual files it serves.
// The lead's adapter implements it over the store.
type Directory interface {
	// Partner returns the partner named by PI 3, or an error wrapping ErrNotFound.
	Partner(ctx context.Context, id string) (Partner, error)
	// VirtualFile returns the virtual file named by PI 12, or an error wrapping ErrNotFound.
	VirtualFile(ctx context.Context, id string) (VirtualFile, error)
}

// Access says which transfers a partner may request.
type Access uint8

// Access values. The zero value allows nothing.
const (
	AccessNone  Access = 0
	AccessWrite Access = 1 // partner may push (CREATE): we receive
	AccessRead  Access = 2 // partner may pull (SELECT): we send
	AccessBoth  Access = AccessWrite | AccessRead
)

// Partner is a remote PeSIT requester allowed to connect.
type Partner struct {
	ID      string
	Enabled bool
	Access  Access
	// Files lists the virtual file ids the partner may use; empty means any.
	Files []string
	// MaxSessions bounds the partner's concurrent sessions (3/309); 0 = no limit.
	MaxSessions int
	// CertFingerprints are hex SHA-256 fingerprints of client certificates that
	// authenticate this partner. When non-empty, a matching certificate is
	// required on a TLS connection and the password becomes optional.
	CertFingerprints []string
	// CertCN authenticates the partner by the subject CN of a client
	// certificate verified against the server's client CAs; empty: the CN
	// must equal the partner id. When set, such a certificate is required.
	CertCN string
	// VerifyPassword checks PI 5 (blank-trimmed) against the stored hash. Nil
	// means no password is accepted (certificate only).
	VerifyPassword func(password string) bool
	// MultiArticle and Segmented allow the server to send multi-article DTFs
	// and segmented articles to this partner (Hors-SIT: agreed beforehand).
	MultiArticle bool
	Segmented    bool
	// Strict fails a transfer on a peer anomaly that is otherwise
	// tolerated, logged and counted (docs/interop.md).
	Strict bool
}

// Direction of a transfer, seen from the server.
type Direction uint8

// Directions. DirectionBoth is only meaningful for a VirtualFile.
const (
	DirectionReceive Direction = 1 // partner pushes: CREATE
	DirectionSend    Direction = 2 // partner pulls: SELECT
	DirectionBoth    Direction = DirectionReceive | DirectionSend
)

func (d Direction) String() string {
	switch d {
	case DirectionReceive:
		return "receive"
	case DirectionSend:
		return "send"
	case DirectionBoth:
		return "both"
	}
	return "none"
}

// RecordFormat is PI 31.
type RecordFormat uint8

// Record formats (PI 31 bit mask, b1 = 0x80 = variable).
const (
	RecordVariable RecordFormat = 0x80
	RecordFixed    RecordFormat = 0x00
)

// VirtualFile maps a PI 12 identifier to directories and rules.
type VirtualFile struct {
	ID        string
	Direction Direction
	// ReceiveDir is where pushed files land; NamePattern builds the file
	// name inside it from ${partner} ${file} ${transferId} ${date} ${time}
	// ${uuid} (default "${file}"). The result may name a subdirectory but
	// can never leave ReceiveDir.
	ReceiveDir  string
	NamePattern string
	// SendDir holds files offered for SELECT; SendName (default "${file}")
	// names the file inside it.
	SendDir  string
	SendName string
	// Overwrite allows a pushed file to replace an existing one (else 2/204).
	Overwrite bool
	// MaxSize bounds a received file in bytes (2/206 at CREATE, IDT 2/224
	// during the transfer); 0 = no limit.
	MaxSize      int64
	RecordFormat RecordFormat
	// RecordLength is PI 32: maximum (variable) or exact (fixed) article
	// length. 0 = the server default.
	RecordLength int
	// DataCode is PI 16: 0 ASCII, 1 EBCDIC, 2 binary.
	DataCode uint8
}

// Transfer describes one transfer or message when it begins.
type Transfer struct {
	ServerID     string
	Partner      string
	VirtualFile  string
	Direction    Direction
	Message      bool        // a MSG exchange, not a file transfer
	PeSITID      uint32      // PI 13
	Restart      bool        // PI 15 = 1
	RestartOf    TransferRef // the interrupted transfer this one resumes, if any (ID "" otherwise)
	Path         string      // final path (receive) or source path (send)
	TempPath     string      // temporary file (receive)
	DeclaredSize int64       // bytes announced by PI 42, 0 if unknown
	// FileCreated is PI 51 as the requester sent it in CREATE: part of
	// the file's identity, which a restart must repeat (digest §4.4).
	FileCreated string
	Text        string // message text (MSG)
	Started     time.Time
}

// Status is the outcome of a transfer.
type Status string

// Transfer statuses.
const (
	StatusDone        Status = "done"
	StatusFailed      Status = "failed"      // not restartable
	StatusInterrupted Status = "interrupted" // restartable: state kept
	StatusCancelled   Status = "cancelled"
)

// Outcome is recorded when a transfer ends.
type Outcome struct {
	Status     Status
	Bytes      int64
	Articles   int64
	SHA256     string // hex, receive and send of a complete file
	Diagnostic fpdu.Diagnostic
	Detail     string
	Finished   time.Time
	// Anomalies are the peer's tolerated deviations (docs/interop.md).
	Anomalies []Anomaly
}

// RestartKey identifies the transfer a PI 15 = 1 request resumes (digest §4.4).
type RestartKey struct {
	Partner   string
	Direction Direction
	PeSITID   uint32 // PI 13
	File      string // PI 12
}

// RestartState is what a restart resumes from: the last durable sync point.
type RestartState struct {
	Transfer TransferRef // the interrupted (or completed) transfer
	Path     string
	TempPath string
	// FileCreated is the interrupted transfer's PI 51 ("" when unknown).
	FileCreated string
	Sync        uint32
	Offset      int64
	Articles    int64
	// Completed: the transfer was recorded completed (receive only); the
	// requester never got its ACK(TRANS.END). Its restart may only confirm
	// the published file, never write it again (see createFile).
	Completed bool
}

// TransferRef is how a session holds a transfer in the journal. ID is the
// transfer's one identity from the session to the store (the store's own
// id); PI 13 is not it, that is the partner's wire number, 24 bits and
// reused. Owner is the fencing token under which this node holds the
// transfer (the store's owner epoch), which the journal's writes for it
// carry, so that a newer owner's takeover refuses them (ErrTransferLost).
// The journal issues a TransferRef and the session keeps it as long as the
// transfer runs: nothing outside the session needs to remember either.
type TransferRef struct {
	ID    string
	Owner int64
}

// Journal records transfers and their restart state. It is touched at
// session edges and at sync points only, never per DTF.
type Journal interface {
	// Begin records a new transfer, or takes t.RestartOf over, and returns
	// the reference the transfer's later writes carry.
	Begin(ctx context.Context, t Transfer) (TransferRef, error)
	// SyncPoint persists a sync point; it must be durable when it returns,
	// because an ACK(SYN) follows.
	SyncPoint(ctx context.Context, ref TransferRef, sync uint32, offset int64, articles int64) error
	// Finish records the outcome. An interrupted transfer stays restartable.
	// The server calls it before it publishes a received file and before
	// it acknowledges TRANS.END, and retries it within Tp; an error wrapping
	// ErrTransferLost is final.
	Finish(ctx context.Context, ref TransferRef, o Outcome) error
	// FindRestart returns the latest interrupted transfer for key or,
	// when there is none, a receive recently recorded completed
	// (RestartState.Completed).
	FindRestart(ctx context.Context, key RestartKey) (RestartState, bool, error)
}
