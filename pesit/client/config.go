package client

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/vectis-ft/vectis/internal/tlsfiles"
	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// AccessType is PI 22 of CONNECT. The zero value is AccessMixed, which is
// what Connect:Express sends and what lets one connection push and pull.
type AccessType uint8

// Access types.
const (
	AccessMixed AccessType = iota // PI 22 = 2
	AccessWrite                   // PI 22 = 0
	AccessRead                    // PI 22 = 1
)

func (a AccessType) wire() uint64 {
	switch a {
	case AccessWrite:
		return 0
	case AccessRead:
		return 1
	}
	return 2
}

// Config describes the connection to one PeSIT server.
type Config struct {
	// Addr is host:port of the server.
	Addr string
	// RequesterID (PI 3) is our partner name at the server; ServerID (PI 4)
	// is the server's PeSIT id.
	RequesterID string
	ServerID    string
	// Password is PI 5. It is never logged.
	Password string

	// TLS, when not nil, wraps the connection in TLS (1.2 minimum).
	TLS *tls.Config

	// PreConnection sends the 24-byte EBCDIC pre-connection message (framed)
	// before CONNECT and expects ACK0.
	PreConnection bool

	// SyncIntervalKB and SyncWindow are the PI 7 proposal: a sync point every
	// SyncIntervalKB KiB of data, at most SyncWindow unacknowledged. 0
	// interval proposes no sync. The server may lower both.
	SyncIntervalKB uint16
	SyncWindow     uint8
	// Resync proposes PI 23 = 1 (F.RESTART within a transfer). When the
	// server agrees, a RESYN{PI 18 = p} from it during a push (receiver-
	// initiated) is answered with ACK(RESYN){p} (or 0 for a point we no
	// longer know) and the data is resent from p, also when the RESYN
	// crosses our TRANS.END. During a pull, a RESYN{p} from the server
	// (sender-initiated) is answered with our last durable point if it is
	// >= p, else 0, and the data is received again from there. The client
	// never initiates RESYN.
	Resync bool
	// AccessType is PI 22.
	AccessType AccessType

	// ConnID is our connection id (header byte 5 of CONNECT); 0 means 1.
	ConnID byte

	// DialTimeout bounds TCP connect and the TLS handshake (default 30 s).
	DialTimeout time.Duration
	// Timeout is the peer inactivity timer Tp (default 30 s): the longest
	// wait for an answer or for the next data FPDU.
	Timeout time.Duration

	// Strict fails a transfer on a peer anomaly that Vectis otherwise
	// tolerates and reports (Result.Anomalies, docs/interop.md), such as a
	// PI 28 that miscounts while PI 27 and the data agree.
	Strict bool

	// Logger receives debug traces of the session; nil discards them.
	Logger *slog.Logger
}

func (c *Config) dialTimeout() time.Duration {
	if c.DialTimeout > 0 {
		return c.DialTimeout
	}
	return 30 * time.Second
}

func (c *Config) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return 30 * time.Second
}

func (c *Config) validate() error {
	if c.Addr == "" {
		return fmt.Errorf("server address is required")
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("server address %q: %w", c.Addr, err)
	}
	if c.RequesterID == "" || len(c.RequesterID) > 24 {
		return fmt.Errorf("requester id (PI 3) must be 1 to 24 characters")
	}
	if c.ServerID == "" || len(c.ServerID) > 24 {
		return fmt.Errorf("server id (PI 4) must be 1 to 24 characters")
	}
	if len(c.Password) > 16 {
		return fmt.Errorf("password (PI 5) longer than 16 characters")
	}
	if c.PreConnection && (len(c.RequesterID) > 8 || len(c.Password) > 8) {
		return fmt.Errorf("pre-connection needs a requester id and password of at most 8 characters")
	}
	if c.PreConnection {
		if _, err := fpdu.AppendPreConnection(nil, c.RequesterID, c.Password, true); err != nil {
			return err
		}
	}
	return nil
}

// TLSFiles names the PEM files of a TLS client configuration.
type TLSFiles struct {
	CA         string // CA bundle that signs the server certificate; empty: system roots
	Cert, Key  string // client certificate and key, for servers that require one
	ServerName string // name to verify in the server certificate; empty: the host of Addr
}

// LoadTLS builds a TLS 1.2+ client configuration from PEM files.
func LoadTLS(f TLSFiles) (*tls.Config, error) {
	if (f.Cert == "") != (f.Key == "") {
		return nil, fmt.Errorf("client certificate and key must be given together")
	}
	cfg, err := tlsfiles.Load(tlsfiles.Client, tlsfiles.Files{Cert: f.Cert, Key: f.Key, CA: f.CA})
	if err != nil {
		return nil, err
	}
	cfg.ServerName = f.ServerName
	return cfg, nil
}
