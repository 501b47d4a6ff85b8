// Package config loads the Vectis configuration: a YAML file, overridden by
// VECTIS_* environment variables, overridden by command-line flags. It owns
// the file's schema and its validation, nothing else.
package config

import (
	"k8s.io/apimachinery/pkg/util/validation"

	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vectis-ft/vectis/internal/fileroot"
)

// Config is the whole file; the YAML root key is "vectis".
type Config struct {
	Node    Node   `koanf:"node"`
	DataDir string `koanf:"dataDir"`
	// FileRoot confines the directories of virtual files, declared here or
	// through the API (docs/security.md); empty means DataDir.
	FileRoot  string    `koanf:"fileRoot"`
	Cluster   Cluster   `koanf:"cluster"`
	Store     Store     `koanf:"store"`
	API       API       `koanf:"api"`
	Telemetry Telemetry `koanf:"telemetry"`
	PeSIT     PeSIT     `koanf:"pesit"`
}

// Node identifies this process among the cluster members.
type Node struct {
	Name    string `koanf:"name"`
	Address string `koanf:"address"`
	// BindAddress is the host that listen addresses without one (":5000")
	// bind to: 127.0.0.1 by default, so that a node started without a
	// configuration is not reachable from the network; the Helm chart sets
	// 0.0.0.0. Empty binds every interface. A test harness running several
	// pods as processes on one machine gives each its own 127.0.0.x.
	BindAddress string `koanf:"bindAddress"`
}

// Cluster configures the etcd election and the pod label.
type Cluster struct {
	Enabled  bool          `koanf:"enabled"`
	Name     string        `koanf:"name"`
	TTL      time.Duration `koanf:"ttl"`
	LabelKey string        `koanf:"labelKey"`
	// PodSelector selects the pods of this release, from which a stale leader
	// label is stripped.
	PodSelector string `koanf:"podSelector"`
	Etcd        Etcd   `koanf:"etcd"`
	// Namespace and PodName come from the downward API (POD_NAMESPACE, POD_NAME).
	Namespace string `koanf:"namespace"`
	PodName   string `koanf:"podName"`
	// Kubernetes can be turned off for tests of the election without a
	// control plane; it is on whenever the cluster is enabled in production.
	Kubernetes KubernetesAccess `koanf:"kubernetes"`
	// FastFailover lets standbys take over within a second when the
	// leader's process dies (docs/ha.md, "Fast failover"). Default true.
	FastFailover bool `koanf:"fastFailover"`
	// ConfirmWindow is how long a leader with fast failover counts its
	// leadership valid after its last confirmation read (one every
	// window/5), and so how long the next leader waits after revoking it
	// (docs/ha.md). Default 300ms, within 100ms..TTL/2.
	ConfirmWindow time.Duration `koanf:"confirmWindow"`
	// LivenessListen is where this node serves liveness streams to standbys
	// (default ":7947"; a port alone binds node.bindAddress).
	LivenessListen string `koanf:"livenessListen"`
	// LivenessAdvertise is how standbys reach it (default: node.address
	// with the listen port).
	LivenessAdvertise string `koanf:"livenessAdvertise"`
	// ShutdownDelay keeps the process alive, listening on nothing, for this
	// long after a signalled stop has handed over and drained. A Service's
	// data path (kube-proxy) may still send new connections to this pod's
	// address for a moment: while the pod lives they are refused at once
	// and the partner retries onto the new leader; once its network is gone
	// they would vanish and hang until the partner's connect timeout.
	ShutdownDelay time.Duration `koanf:"shutdownDelay"`
}

// MaxShutdownDelay bounds cluster.shutdownDelay: it only needs to outlast
// the Service's propagation delay, and it adds to every pod's stop time.
const MaxShutdownDelay = time.Minute

// KubernetesAccess says how the pod labeller reaches the API server.
type KubernetesAccess struct {
	Enabled    bool   `koanf:"enabled"`
	Kubeconfig string `koanf:"kubeconfig"` // empty: in-cluster configuration
	// LeaderService names the Service that selects on the leader label.
	// When set, a new leader waits (at most 300 ms each) until that
	// Service's EndpointSlices mark a deleted leader terminating before
	// stripping its label, and list no other pod before labelling its own,
	// which spares the Service the EndpointSlice controller's one-second
	// retry (docs/kubernetes.md). Needs RBAC list on
	// endpointslices.discovery.k8s.io. Empty: no wait.
	LeaderService string `koanf:"leaderService"`
}

// Etcd is how the node reaches the etcd cluster.
type Etcd struct {
	Endpoints    []string `koanf:"endpoints"`
	Username     string   `koanf:"username"`
	Password     string   `koanf:"password"`
	PasswordFile string   `koanf:"passwordFile"`
	TLS          TLSFiles `koanf:"tls"`
}

// TLSFiles names PEM files.
type TLSFiles struct {
	CAFile       string `koanf:"caFile"`
	CertFile     string `koanf:"certFile"`
	KeyFile      string `koanf:"keyFile"`
	ClientCAFile string `koanf:"clientCAFile"`
}

// Enabled reports whether a certificate is configured.
func (t TLSFiles) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" }

// Store selects the database.
type Store struct {
	Driver    string        `koanf:"driver"`
	URL       string        `koanf:"url"`
	URLFile   string        `koanf:"urlFile"`
	Path      string        `koanf:"path"`
	Retention time.Duration `koanf:"retention"`
	// InterruptedExpiry fails an interrupted or restartable transfer that
	// no restart resumed for this long, and deletes its partial file
	// (72h); 0 keeps them until cancelled.
	InterruptedExpiry time.Duration `koanf:"interruptedExpiry"`
}

// API configures the admin REST API.
type API struct {
	Listen    string   `koanf:"listen"`
	TLS       TLSFiles `koanf:"tls"`
	UsersFile string   `koanf:"usersFile"`
	Users     []User   `koanf:"users"`
}

// User is an admin-API account. Password is accepted for development
// configurations only and is hashed at start-up; PasswordHash is preferred.
type User struct {
	Name         string `koanf:"name" yaml:"name"`
	Password     string `koanf:"password" yaml:"password"`
	PasswordHash string `koanf:"passwordHash" yaml:"passwordHash"`
	Role         string `koanf:"role" yaml:"role"`
}

// Telemetry configures logs; traces use the standard OTEL_* variables.
type Telemetry struct {
	LogFormat string `koanf:"logFormat"`
	LogLevel  string `koanf:"logLevel"`
	// DebugFPDUs logs every FPDU (PI 5 redacted).
	DebugFPDUs bool `koanf:"debugFPDUs"`
}

// PeSIT holds the declared servers, partners and virtual files. They are
// upserted into the store at start-up; the store is the source of truth.
type PeSIT struct {
	Servers  []Server      `koanf:"servers"`
	Partners []Partner     `koanf:"partners"`
	Files    []VirtualFile `koanf:"files"`
	Timers   Timers        `koanf:"timers"`
	Limits   Limits        `koanf:"limits"`
}

// Limits bound what an unauthenticated peer can make the node do
// (docs/security.md). Zero values take the defaults shown.
type Limits struct {
	// FirstFPDU: the first FPDU must arrive this soon after accept (10s).
	FirstFPDU time.Duration `koanf:"firstFPDU"`
	// MaxConnectionsPerAddress bounds the open PeSIT connections of one
	// peer IP (64); -1 = no bound.
	MaxConnectionsPerAddress int `koanf:"maxConnectionsPerAddress"`
	// LoginFailureBurst failed PeSIT logins per address and per partner
	// are allowed in a row (5), then one more per LoginFailureRefill (2s).
	LoginFailureBurst  int           `koanf:"loginFailureBurst"`
	LoginFailureRefill time.Duration `koanf:"loginFailureRefill"`
	// PasswordVerifications bounds the concurrent password derivations of
	// the node, PeSIT and API together (GOMAXPROCS, 2..8): each argon2id
	// one holds about 19 MiB.
	PasswordVerifications int `koanf:"passwordVerifications"`
}

// Timers are the PeSIT session timers (digest §4.8).
type Timers struct {
	Connect    time.Duration `koanf:"connect"`    // Tc: waiting for CONNECT after accept
	Inactivity time.Duration `koanf:"inactivity"` // Tp: peer inactivity within a phase
	Idle       time.Duration `koanf:"idle"`       // Td: idle between transfers
	Drain      time.Duration `koanf:"drain"`      // graceful stop before ABORT 3/316
}

// Server is one PeSIT listener.
type Server struct {
	ID          string    `koanf:"id"`
	Listen      string    `koanf:"listen"`
	TLS         ServerTLS `koanf:"tls"`
	MaxSessions int       `koanf:"maxSessions"`
	AutoStart   *bool     `koanf:"autoStart"`
}

// ServerTLS is the optional TLS listener of a server.
type ServerTLS struct {
	Listen       string `koanf:"listen"`
	CertFile     string `koanf:"certFile"`
	KeyFile      string `koanf:"keyFile"`
	ClientCAFile string `koanf:"clientCAFile"`
	// ClientAuth: request, verify-if-given, require-any or require
	// (docs/configuration.md); empty: verify-if-given with clientCAFile,
	// request without.
	ClientAuth string `koanf:"clientAuth"`
}

// Partner is a remote PeSIT requester.
type Partner struct {
	ID           string   `koanf:"id"`
	Description  string   `koanf:"description"`
	Password     string   `koanf:"password"`
	PasswordHash string   `koanf:"passwordHash"`
	Access       string   `koanf:"access"`
	Files        []string `koanf:"files"`
	MaxSessions  int      `koanf:"maxSessions"`
	CertSHA256   []string `koanf:"certSHA256"`
	// CertCN authenticates the partner by the subject CN of a client
	// certificate verified against the server's clientCAFile.
	CertCN   string `koanf:"certCN"`
	Disabled bool   `koanf:"disabled"`
	// MultiArticle and Segment say how Vectis sends to this partner: they are
	// not negotiated in Hors-SIT, so they need prior agreement.
	MultiArticle bool `koanf:"multiArticle"`
	Segment      bool `koanf:"segment"`
	// Strict fails transfers on peer anomalies that are otherwise
	// tolerated (docs/interop.md).
	Strict bool `koanf:"strict"`
}

// VirtualFile maps a PI 12 name to directories.
type VirtualFile struct {
	ID           string `koanf:"id"`
	Description  string `koanf:"description"`
	Direction    string `koanf:"direction"`
	ReceiveDir   string `koanf:"receiveDir"`
	NamePattern  string `koanf:"namePattern"`
	SendDir      string `koanf:"sendDir"`
	Overwrite    bool   `koanf:"overwrite"`
	MaxSize      int64  `koanf:"maxSize"`
	RecordFormat string `koanf:"recordFormat"`
	RecordLength int    `koanf:"recordLength"`
	DataCode     string `koanf:"dataCode"`
}

// Default returns the embedded defaults: a standalone node with SQLite under
// ./data, one PeSIT server on :5000 and the admin API on :8080, both bound to
// 127.0.0.1 (node.bindAddress). It declares
// no partner and no admin password: those come from a configuration file
// (see examples/vectis-dev.yaml), or the first start generates an admin
// password and prints it once.
func Default() Config {
	return Config{
		Node:    Node{BindAddress: "127.0.0.1"},
		DataDir: "./data",
		Cluster: Cluster{
			Name:        "vectis-cluster",
			TTL:         5 * time.Second,
			LabelKey:    "vectis-leader",
			PodSelector: "app=vectis-server",
			Etcd:        Etcd{Endpoints: []string{"http://127.0.0.1:2379"}},
			Kubernetes:  KubernetesAccess{Enabled: true},

			FastFailover:   true,
			ConfirmWindow:  DefaultConfirmWindow,
			LivenessListen: ":7947",
		},
		Store:     Store{Driver: "sqlite", Retention: 30 * 24 * time.Hour, InterruptedExpiry: 72 * time.Hour},
		API:       API{Listen: ":8080"},
		Telemetry: Telemetry{LogFormat: "auto", LogLevel: "info"},
		PeSIT: PeSIT{
			Servers: []Server{{ID: "PESITSRV", Listen: ":5000", MaxSessions: 200}},
			Timers: Timers{
				Connect:    30 * time.Second,
				Inactivity: 60 * time.Second,
				Idle:       5 * time.Minute,
				Drain:      20 * time.Second,
			},
		},
	}
}

// MinTTL is the shortest election session TTL accepted.
const MinTTL = 2 * time.Second

// The fast failover confirmation window: the default and the shortest
// accepted, the same as package election's (node checks they agree).
const (
	DefaultConfirmWindow = 300 * time.Millisecond
	MinConfirmWindow     = 100 * time.Millisecond
)

// Validate checks the whole configuration and returns every problem found,
// each naming its key.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("vectis.%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.DataDir == "" {
		bad("dataDir", "must not be empty")
	}
	switch c.Store.Driver {
	case "sqlite", "postgres":
	default:
		bad("store.driver", "must be sqlite or postgres, not %q", c.Store.Driver)
	}
	if c.Store.InterruptedExpiry < 0 {
		bad("store.interruptedExpiry", "must not be negative (0 keeps interrupted transfers until cancelled)")
	}
	if c.Store.Retention < 0 {
		bad("store.retention", "must not be negative (0 keeps history forever)")
	}
	if c.Store.Driver == "postgres" && c.Store.URL == "" {
		bad("store.url", "required with the postgres driver (or VECTIS_STORE_URL, or store.urlFile)")
	}
	if c.Cluster.Enabled {
		if c.Store.Driver != "postgres" {
			bad("store.driver", "must be postgres when the cluster is enabled: every pod shares one store")
		}
		if c.Cluster.FastFailover {
			if w := c.Cluster.ConfirmWindow; w < MinConfirmWindow || w >= c.Cluster.TTL/2 {
				bad("cluster.confirmWindow", "%s is outside %s..%s (half the TTL, excluded)", w, MinConfirmWindow, c.Cluster.TTL/2)
			}
			if _, _, err := net.SplitHostPort(c.Cluster.LivenessListen); err != nil {
				bad("cluster.livenessListen", "%q is not host:port: %v", c.Cluster.LivenessListen, err)
			}
			if a := c.Cluster.LivenessAdvertise; a != "" {
				if _, _, err := net.SplitHostPort(a); err != nil {
					bad("cluster.livenessAdvertise", "%q is not host:port: %v", a, err)
				}
			}
		}
		if c.Cluster.TTL < MinTTL {
			bad("cluster.ttl", "%s is below the minimum of %s", c.Cluster.TTL, MinTTL)
		}
		if c.Cluster.ShutdownDelay < 0 || c.Cluster.ShutdownDelay > MaxShutdownDelay {
			bad("cluster.shutdownDelay", "%s is outside 0s..%s", c.Cluster.ShutdownDelay, MaxShutdownDelay)
		}
		if len(c.Cluster.Etcd.Endpoints) == 0 {
			bad("cluster.etcd.endpoints", "at least one endpoint is required when the cluster is enabled")
		}
		if c.Cluster.Name == "" || strings.ContainsAny(c.Cluster.Name, "/ ") {
			bad("cluster.name", "must be non-empty without '/' or blanks, not %q", c.Cluster.Name)
		}
		if c.Cluster.Kubernetes.Enabled {
			if c.Cluster.PodName == "" {
				bad("cluster.podName", "POD_NAME is required when the cluster is enabled (downward API)")
			}
			if c.Cluster.Namespace == "" {
				bad("cluster.namespace", "POD_NAMESPACE is required when the cluster is enabled (downward API)")
			}
			if s := c.Cluster.Kubernetes.LeaderService; s != "" {
				if errs := validation.IsDNS1035Label(s); len(errs) > 0 {
					bad("cluster.kubernetes.leaderService", "%q is not a Service name: %s", s, strings.Join(errs, "; "))
				}
			}
		}
		if c.Cluster.LabelKey == "" {
			bad("cluster.labelKey", "must not be empty")
		}
	}
	if err := checkListen(c.API.Listen); err != nil {
		bad("api.listen", "%v", err)
	}
	for _, u := range c.API.Users {
		switch u.Role {
		case "viewer", "operator", "admin":
		default:
			bad("api.users", "user %q: role must be viewer, operator or admin, not %q", u.Name, u.Role)
		}
		if u.Password == "" && u.PasswordHash == "" {
			bad("api.users", "user %q: password or passwordHash is required", u.Name)
		}
	}
	ids := map[string]bool{}
	for i, s := range c.PeSIT.Servers {
		key := fmt.Sprintf("pesit.servers[%d]", i)
		if err := checkPeSITID(s.ID, 24); err != nil {
			bad(key+".id", "%v", err)
		}
		if ids[s.ID] {
			bad(key+".id", "duplicate server id %q", s.ID)
		}
		ids[s.ID] = true
		if err := checkListen(s.Listen); err != nil {
			bad(key+".listen", "%v", err)
		}
		if s.TLS.Listen != "" {
			if err := checkListen(s.TLS.Listen); err != nil {
				bad(key+".tls.listen", "%v", err)
			}
			if s.TLS.CertFile == "" || s.TLS.KeyFile == "" {
				bad(key+".tls", "certFile and keyFile are required with a TLS listener")
			}
		}
		switch s.TLS.ClientAuth {
		case "", "request", "require-any":
		case "verify-if-given", "require":
			if s.TLS.ClientCAFile == "" {
				bad(key+".tls.clientAuth", "%q needs clientCAFile", s.TLS.ClientAuth)
			}
		default:
			bad(key+".tls.clientAuth", "must be request, verify-if-given, require-any or require, not %q", s.TLS.ClientAuth)
		}
		if s.MaxSessions < 0 {
			bad(key+".maxSessions", "must not be negative")
		}
	}
	for i, p := range c.PeSIT.Partners {
		key := fmt.Sprintf("pesit.partners[%d]", i)
		if err := checkPeSITID(p.ID, 24); err != nil {
			bad(key+".id", "%v", err)
		}
		switch p.Access {
		case "", "read", "write", "both":
		default:
			bad(key+".access", "must be read, write or both, not %q", p.Access)
		}
		if p.Password == "" && p.PasswordHash == "" && p.CertCN == "" && len(p.CertSHA256) == 0 {
			bad(key, "partner %q: password or passwordHash is required unless certCN or certSHA256 authenticates it", p.ID)
		}
		if len(p.Password) > 8 {
			bad(key+".password", "partner %q: PI 5 carries at most 8 password characters", p.ID)
		}
	}
	root, rootErr := fileroot.New(c.FileRootDir())
	if rootErr != nil {
		bad("fileRoot", "%v", rootErr)
	}
	for i, f := range c.PeSIT.Files {
		key := fmt.Sprintf("pesit.files[%d]", i)
		for _, d := range []struct{ field, dir string }{{"receiveDir", f.ReceiveDir}, {"sendDir", f.SendDir}} {
			if d.dir == "" || rootErr != nil {
				continue
			}
			if err := root.Check(d.dir); err != nil {
				bad(key+"."+d.field, "%v (set vectis.fileRoot to allow it)", err)
			}
		}
		if err := checkPeSITID(f.ID, 76); err != nil {
			bad(key+".id", "%v", err)
		}
		switch f.Direction {
		case "receive", "send", "both":
		default:
			bad(key+".direction", "must be receive, send or both, not %q", f.Direction)
		}
		if f.NamePattern != "" && (filepath.IsAbs(f.NamePattern) || containsDotDot(f.NamePattern)) {
			bad(key+".namePattern", "must be relative and stay inside receiveDir, not %q", f.NamePattern)
		}
		switch f.RecordFormat {
		case "", "fixed", "variable":
		default:
			bad(key+".recordFormat", "must be fixed or variable, not %q", f.RecordFormat)
		}
		switch f.DataCode {
		case "", "binary", "ascii", "ebcdic":
		default:
			bad(key+".dataCode", "must be binary, ascii or ebcdic, not %q", f.DataCode)
		}
		if f.RecordLength < 0 || f.RecordLength > 65535-6 {
			bad(key+".recordLength", "must be between 0 and 65529")
		}
	}
	return errors.Join(errs...)
}

// FileRootDir is the directory virtual files are confined to: FileRoot, or
// DataDir when it is empty.
func (c *Config) FileRootDir() string {
	if c.FileRoot != "" {
		return c.FileRoot
	}
	return c.DataDir
}

func containsDotDot(p string) bool {
	for _, part := range strings.FieldsFunc(p, func(r rune) bool { return r == '/' || r == '\\' }) {
		if part == ".." {
			return true
		}
	}
	return false
}

// checkPeSITID enforces the PI 3/4/12 rules: 1..max printable ASCII
// characters without blanks.
func checkPeSITID(id string, max int) error {
	if id == "" || len(id) > max {
		return fmt.Errorf("%q must be 1 to %d characters", id, max)
	}
	for _, r := range id {
		if r <= ' ' || r > '~' {
			return fmt.Errorf("%q must be printable ASCII without blanks", id)
		}
	}
	if strings.Trim(id, ".") == "" {
		return fmt.Errorf("%q names a directory, not an id", id)
	}
	return nil
}

func checkListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", addr, err)
	}
	_ = host
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("listen address %q: port must be 0 to 65535", addr)
	}
	return nil
}

// readSecretFile reads a secret from a file, trimming the trailing newline
// that editors and kubectl add.
func readSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read secret file: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}
