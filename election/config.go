package election

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/vectis-ft/vectis/internal/tlsfiles"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Defaults and limits.
const (
	DefaultTTL         = 5 * time.Second
	MinTTL             = 2 * time.Second
	DefaultDialTimeout = 5 * time.Second
	// DefaultConfirmWindow is the leader's confirmation window when fast
	// failover is on. It is the bulk of a crash failover (the next leader
	// waits it out), and a leader whose confirmation reads all stall for
	// four fifths of it refuses partners until one answers: 300 ms keeps a
	// crash, seen through a Kubernetes Service, under a second and
	// tolerates 240 ms etcd stalls.
	DefaultConfirmWindow = 300 * time.Millisecond
	// MinConfirmWindow bounds the read rate (one read every window/5).
	MinConfirmWindow = 100 * time.Millisecond
	// LegacyConfirmWindow is the window of members that do not publish
	// theirs (releases before it was configurable): the next leader waits
	// it out after revoking such a member.
	LegacyConfirmWindow = 500 * time.Millisecond
)

// Config says how a member reaches etcd and who it is.
type Config struct {
	Endpoints   []string
	DialTimeout time.Duration // default 5 s

	// TTL of the member's lease (whole seconds; default 5 s, minimum 2 s).
	// A leader that loses etcd stops serving within TTL.
	TTL time.Duration
	// Margin is how long before the server-side lease expiry the leader
	// gives up (default TTL/5). It covers clock rate drift and the time the
	// caller needs to stop serving.
	Margin time.Duration

	Cluster string // cluster name: keys live under /vectis/<Cluster>/
	Name    string // member name, the pod name in Kubernetes
	Address string // how peers/admins reach this member (published, not used here)
	// Liveness is the address of this member's liveness listener (package
	// ha/liveness), published in the member info. Empty: this member takes
	// no part in fast failover, and standbys never revoke its lease.
	Liveness string
	// ConfirmWindow, when positive, makes a leader confirm with a
	// linearizable read of its key every ConfirmWindow/5, and count itself
	// invalid (Leadership.Valid) once ConfirmWindow has passed since the
	// send time of the last confirmation. A standby that revokes this
	// leader's lease on the fast failover path lets the next leader start
	// only a ConfirmWindow after the revocation: by then this leader has
	// either seen its key gone or stopped counting itself valid.
	ConfirmWindow time.Duration

	// TLS towards etcd: CAFile alone for server verification, CertFile and
	// KeyFile for client certificates. Empty means plain TCP.
	CAFile, CertFile, KeyFile string
	// Username/Password for etcd auth. The password is never logged.
	Username, Password string

	Logger *slog.Logger // default slog.Default()
}

func (c Config) withDefaults() (Config, error) {
	if len(c.Endpoints) == 0 {
		return c, errors.New("election: no etcd endpoints")
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.TTL < MinTTL {
		return c, fmt.Errorf("election: TTL %v below the minimum %v", c.TTL, MinTTL)
	}
	if c.TTL%time.Second != 0 {
		return c, fmt.Errorf("election: TTL %v is not a whole number of seconds (etcd leases are)", c.TTL)
	}
	if c.Margin == 0 {
		c.Margin = c.TTL / 5
	}
	if c.ConfirmWindow < 0 || c.ConfirmWindow >= c.TTL/2 || (c.ConfirmWindow > 0 && c.ConfirmWindow < MinConfirmWindow) {
		return c, fmt.Errorf("election: confirm window %v must be 0 (off) or within %v..%v (TTL/2, excluded)", c.ConfirmWindow, MinConfirmWindow, c.TTL/2)
	}
	if c.Liveness != "" && c.ConfirmWindow == 0 {
		// Standbys revoke a member that advertises a liveness listener on
		// the word of a refused dial; only the window makes that safe.
		return c, errors.New("election: a liveness address needs a confirm window")
	}
	if c.Margin < 0 || c.Margin >= c.TTL/2 {
		return c, fmt.Errorf("election: margin %v must be positive and below TTL/2 (%v)", c.Margin, c.TTL/2)
	}
	if err := validName("cluster name", c.Cluster); err != nil {
		return c, err
	}
	if err := validName("member name", c.Name); err != nil {
		return c, err
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return c, errors.New("election: TLS cert and key must be given together")
	}
	if c.Password != "" && c.Username == "" {
		return c, errors.New("election: password without username")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

func validName(what, s string) error {
	if s == "" {
		return fmt.Errorf("election: empty %s", what)
	}
	if strings.ContainsAny(s, "/\x00") || strings.TrimSpace(s) != s {
		return fmt.Errorf("election: %s %q must not contain '/' or surrounding spaces", what, s)
	}
	return nil
}

// keepAliveInterval is how often the member renews its lease. Five
// renewals per TTL leave room for one renewal to hang on a dead etcd member
// and be retried on another before the deadline.
func (c Config) keepAliveInterval() time.Duration { return c.TTL / 5 }

// clientConfig builds the etcd client configuration. The gRPC keepalive
// detects a silent connection (a hung or partitioned etcd member) so the
// client reconnects elsewhere; grpc-go raises client pings below 10 s to
// 10 s, so within one TTL it is the member's own per-renewal timeout, with
// the round-robin balancer moving each retry to the next endpoint, that
// actually survives the loss of the member it talks to.
func (c Config) clientConfig() (clientv3.Config, error) {
	cc := clientv3.Config{
		Endpoints:            c.Endpoints,
		DialTimeout:          c.DialTimeout,
		DialKeepAliveTime:    c.TTL / 3,
		DialKeepAliveTimeout: c.TTL / 3,
		Username:             c.Username,
		Password:             c.Password,
		// The etcd client logs through zap; our callers log through slog.
		Logger: zap.NewNop(),
	}
	if c.CAFile != "" || c.CertFile != "" {
		tc, err := tlsfiles.Load(tlsfiles.Client, tlsfiles.Files{Cert: c.CertFile, Key: c.KeyFile, CA: c.CAFile})
		if err != nil {
			return cc, fmt.Errorf("election: etcd TLS: %w", err)
		}
		cc.TLS = tc
	}
	return cc, nil
}
