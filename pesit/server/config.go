package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Config configures one PeSIT server (one server id, one or two listeners).
type Config struct {
	// ID is our server id, PI 4 (1..24 characters). CONNECT for another id
	// gets RCONNECT 3/301.
	ID string
	// Addr is the plain TCP listen address ("127.0.0.1:1761"); empty = none.
	Addr string
	// TLSAddr is the TLS listen address; empty = none. TLS must then hold at
	// least one certificate. Client certificates are requested when
	// TLS.ClientAuth asks for them; a certificate authenticates a partner by
	// SHA-256 fingerprint (Partner.CertFingerprints) or, when verified against
	// TLS.ClientCAs, by a common name equal to the partner id.
	TLSAddr string
	TLS     *tls.Config

	// MaxSessions bounds concurrent sessions (RCONNECT 3/303); 0 = 100.
	MaxSessions int

	// ConnectTimeout (Tc) bounds the wait for CONNECT after accept; 0 = 30s.
	ConnectTimeout time.Duration
	// InactivityTimeout (Tp) bounds peer silence inside a phase; 0 = 30s.
	InactivityTimeout time.Duration
	// IdleTimeout (Td) bounds idleness between transfers (ABORT 3/313); 0 = 5m.
	IdleTimeout time.Duration
	// IDTTimeout bounds the wait for ACK(IDT) when Shutdown's deadline
	// interrupts a transfer in its data phase (IDT 2/216, PI 19 = 4: the
	// partner restarts it elsewhere); sessions still open after it get
	// ABORT 3/316. 0 = 2s.
	IDTTimeout time.Duration
	// FirstFPDUTimeout bounds the wait for the first FPDU (CONNECT or a
	// pre-connection) after accept, TLS handshake included, when shorter
	// than ConnectTimeout: an idle socket holds a slot for no longer; 0 = 10s.
	FirstFPDUTimeout time.Duration

	// MaxConnsPerAddr bounds the open connections of one peer IP address,
	// so that one client cannot take every connection slot; 0 = 64, < 0 =
	// no bound.
	MaxConnsPerAddr int
	// LoginBurst failed password logins per address and per partner are
	// allowed in a row; then one more every LoginRefill. Beyond that a
	// login is refused (3/304) without any password work, its answer held
	// for up to MaxThrottleDelay. 0 = 5, 2s and 5s.
	LoginBurst       int
	LoginRefill      time.Duration
	MaxThrottleDelay time.Duration

	// SyncIntervalKB and SyncWindow are the largest sync interval (KB) and
	// acknowledgement window we accept; a proposal is lowered to them.
	// SyncIntervalKB = 0 refuses sync points (PI 7 = 00 00 00).
	SyncIntervalKB uint16
	SyncWindow     uint8
	// MaxEntitySize bounds PI 25 (bytes); 0 = 4096, as CX servers answer.
	MaxEntitySize int
	// DefaultRecordLength is PI 32 for files whose virtual file leaves it 0;
	// 0 = 4096.
	DefaultRecordLength int
	// AllowResync accepts PI 23 = 1 (RESYN) when the requester proposes it.
	AllowResync bool
	// AbortPIForm sends ABORT diagnostics as a PI 2 unit instead of the bare
	// 3-byte form that CX uses.
	AbortPIForm bool
	// WriteBuffer is the receive-side file buffer; 0 = 64 KiB (one buffer
	// per receiving session: 1,000 concurrent pushes hold 64 MiB of them).
	WriteBuffer int
	// DebugFPDU logs every FPDU but data at debug level, PI 5 redacted.
	DebugFPDU bool

	// TracerProvider creates pesit.session and pesit.transfer spans; nil = noop.
	TracerProvider trace.TracerProvider
}

// Deps are the collaborators of a server.
type Deps struct {
	Directory Directory
	Journal   Journal
	Metrics   *Metrics     // nil = no metrics
	Logger    *slog.Logger // nil = discard
	// Now is the clock for file-name placeholders and records; nil = time.Now.
	Now func() time.Time
	// Passwords verifies passwords with bounded work; nil = call
	// Partner.VerifyPassword directly (tests, benchmarks).
	Passwords PasswordChecker
	// OnLogin records password login decisions (audit); nil = none.
	OnLogin func(ctx context.Context, ev LoginEvent)
	// MayServe is asked right before ACONNECT is sent; false refuses the
	// CONNECT with RCONNECT 3/302 (server unavailable). A cluster node
	// answers whether its leadership is still valid at that instant, so
	// that a deposed leader never accepts a partner, even one whose CONNECT
	// waited in the listen backlog while the process was frozen. nil =
	// always.
	MayServe func() bool
}

func (c *Config) setDefaults() {
	if c.MaxSessions == 0 {
		c.MaxSessions = 100
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 30 * time.Second
	}
	if c.InactivityTimeout == 0 {
		c.InactivityTimeout = 30 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 5 * time.Minute
	}
	if c.IDTTimeout == 0 {
		c.IDTTimeout = 2 * time.Second
	}
	if c.FirstFPDUTimeout == 0 {
		c.FirstFPDUTimeout = 10 * time.Second
	}
	if c.MaxConnsPerAddr == 0 {
		c.MaxConnsPerAddr = 64
	}
	if c.LoginBurst == 0 {
		c.LoginBurst = 5
	}
	if c.LoginRefill == 0 {
		c.LoginRefill = 2 * time.Second
	}
	if c.MaxThrottleDelay == 0 {
		c.MaxThrottleDelay = 5 * time.Second
	}
	if c.MaxEntitySize == 0 {
		c.MaxEntitySize = 4096
	}
	if c.DefaultRecordLength == 0 {
		c.DefaultRecordLength = 4096
	}
	if c.WriteBuffer == 0 {
		c.WriteBuffer = 64 << 10
	}
	if c.TracerProvider == nil {
		c.TracerProvider = noop.NewTracerProvider()
	}
}

func (c *Config) validate() error {
	var errs []error
	if n := len(c.ID); n == 0 || n > 24 {
		errs = append(errs, fmt.Errorf("server id %q: want 1..24 characters", c.ID))
	}
	if c.Addr == "" && c.TLSAddr == "" {
		errs = append(errs, errors.New("no listen address (Addr or TLSAddr)"))
	}
	if c.TLSAddr != "" && (c.TLS == nil || (len(c.TLS.Certificates) == 0 && c.TLS.GetCertificate == nil && c.TLS.GetConfigForClient == nil)) {
		errs = append(errs, errors.New("TLSAddr set without a TLS certificate"))
	}
	if c.LoginBurst < 0 {
		errs = append(errs, fmt.Errorf("login burst %d < 0", c.LoginBurst))
	}
	if c.MaxSessions < 0 {
		errs = append(errs, fmt.Errorf("max sessions %d < 0", c.MaxSessions))
	}
	if c.MaxEntitySize < 64 || c.MaxEntitySize > 65535 {
		errs = append(errs, fmt.Errorf("max entity size %d: want 64..65535", c.MaxEntitySize))
	}
	if c.DefaultRecordLength < 1 || c.DefaultRecordLength > 65535 {
		errs = append(errs, fmt.Errorf("default record length %d: want 1..65535", c.DefaultRecordLength))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"connect timeout", c.ConnectTimeout}, {"inactivity timeout", c.InactivityTimeout}, {"idle timeout", c.IdleTimeout},
		{"first FPDU timeout", c.FirstFPDUTimeout}, {"login refill", c.LoginRefill}, {"max throttle delay", c.MaxThrottleDelay}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s %v < 0", d.name, d.v))
		}
	}
	return errors.Join(errs...)
}
