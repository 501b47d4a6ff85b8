package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaultsAreValidStandalone(t *testing.T) {
	cfg, err := Load(Source{})
	if err != nil {
		t.Fatalf("Load(defaults): %v", err)
	}
	// Loopback only by default (issue 16, defect 13).
	if cfg.Cluster.Enabled || cfg.Store.Driver != "sqlite" || cfg.API.Listen != "127.0.0.1:8080" || cfg.Node.BindAddress != "127.0.0.1" {
		t.Fatalf("defaults: cluster=%v driver=%q api=%q", cfg.Cluster.Enabled, cfg.Store.Driver, cfg.API.Listen)
	}
	if len(cfg.PeSIT.Servers) != 1 || cfg.PeSIT.Servers[0].Listen != ":5000" {
		t.Fatalf("default servers: %+v", cfg.PeSIT.Servers)
	}
	if cfg.Node.Name == "" {
		t.Fatal("node name not defaulted from the host name")
	}
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "vectis.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPrecedenceFileEnvSet(t *testing.T) {
	p := writeFile(t, `
vectis:
  cluster:
    name: from-file
    ttl: 7s
    etcd:
      endpoints: [http://127.0.0.1:1]
  store:
    driver: postgres
    url: postgres://file
`)
	cfg, err := Load(Source{
		File: p,
		Environ: []string{
			"VECTIS_CLUSTER_ENABLED=true",
			"VECTIS_CLUSTER_ETCD_ENDPOINTS=http://127.0.0.1:2,http://127.0.0.1:3",
			"VECTIS_STORE_URL=postgres://env",
			"VECTIS_CLUSTER_LABELKEY=example.com/leader",
			"VECTIS_PASSWORD=client-secret-not-config",
			"POD_NAME=vectis-0", "POD_NAMESPACE=prod", "POD_IP=10.1.2.3",
		},
		Sets: []string{"cluster.name=from-flag"},
	})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if !cfg.Cluster.Enabled {
		t.Error("VECTIS_CLUSTER_ENABLED not applied")
	}
	if got := cfg.Cluster.Name; got != "from-flag" {
		t.Errorf("cluster.name = %q, want the flag's value", got)
	}
	if cfg.Cluster.TTL != 7*time.Second {
		t.Errorf("ttl = %s, want the file's 7s", cfg.Cluster.TTL)
	}
	if got := strings.Join(cfg.Cluster.Etcd.Endpoints, " "); got != "http://127.0.0.1:2 http://127.0.0.1:3" {
		t.Errorf("endpoints = %q, want the environment's list", got)
	}
	if cfg.Store.URL != "postgres://env" {
		t.Errorf("store.url = %q, want the environment's", cfg.Store.URL)
	}
	if cfg.Cluster.LabelKey != "example.com/leader" {
		t.Errorf("labelKey = %q", cfg.Cluster.LabelKey)
	}
	if cfg.Node.Name != "vectis-0" || cfg.Cluster.Namespace != "prod" || cfg.Node.Address != "10.1.2.3" {
		t.Errorf("downward API not applied: %+v %+v", cfg.Node, cfg.Cluster)
	}
}

func TestValidationNamesEachBadKey(t *testing.T) {
	p := writeFile(t, `
vectis:
  cluster:
    enabled: true
    ttl: 1s
    kubernetes: {leaderService: "Vectis_PeSIT"}
  store:
    driver: sqlite
  api:
    listen: "localhost:99999"
  pesit:
    servers:
      - {id: "THIS-SERVER-ID-IS-FAR-TOO-LONG", listen: ":5000"}
    partners:
      - {id: P1, access: sometimes, password: x}
    files:
      - {id: F1, direction: receive, namePattern: "../../etc/${file}"}
`)
	_, err := Load(Source{File: p})
	if err == nil {
		t.Fatal("invalid configuration accepted")
	}
	for _, want := range []string{
		"vectis.store.driver", "vectis.cluster.ttl", "POD_NAME", "POD_NAMESPACE",
		"vectis.api.listen", "vectis.pesit.servers[0].id", "vectis.pesit.partners[0].access",
		"vectis.pesit.files[0].namePattern", "vectis.cluster.kubernetes.leaderService",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
}

func TestRejectsUnknownSetAndTopLevel(t *testing.T) {
	if _, err := Load(Source{Sets: []string{"cluster.nope=1"}}); err == nil {
		t.Error("unknown --set key accepted")
	}
	p := writeFile(t, "cluster:\n  enabled: true\n")
	if _, err := Load(Source{File: p}); err == nil || !strings.Contains(err.Error(), "top-level") {
		t.Errorf("file without the vectis root accepted: %v", err)
	}
}

func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	urlFile := filepath.Join(dir, "url")
	if err := os.WriteFile(urlFile, []byte("postgres://secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(Source{Sets: []string{"store.driver=postgres", "store.urlFile=" + urlFile}})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if cfg.Store.URL != "postgres://secret" {
		t.Errorf("url from file = %q", cfg.Store.URL)
	}
}

func TestSampleDevConfigIsValid(t *testing.T) {
	cfg, err := Load(Source{File: filepath.Join("..", "examples", "vectis-dev.yaml")})
	if err != nil {
		t.Fatalf("examples/vectis-dev.yaml: %v", err)
	}
	if len(cfg.PeSIT.Partners) != 1 || len(cfg.PeSIT.Files) != 2 || len(cfg.API.Users) != 1 {
		t.Fatalf("sample declares %d partners, %d files, %d users", len(cfg.PeSIT.Partners), len(cfg.PeSIT.Files), len(cfg.API.Users))
	}
}

func TestBindAddressFillsPortOnlyListens(t *testing.T) {
	cfg, err := Load(Source{Environ: []string{"VECTIS_NODE_BINDADDRESS=127.0.0.7"}, Sets: []string{"api.listen=127.0.0.1:9"}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.API.Listen != "127.0.0.1:9" {
		t.Errorf("an explicit host was replaced: %q", cfg.API.Listen)
	}
	cfg, err = Load(Source{Environ: []string{"VECTIS_NODE_BINDADDRESS=127.0.0.7"}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.API.Listen != "127.0.0.7:8080" {
		t.Errorf("api listen = %q, want the bind address", cfg.API.Listen)
	}
	if cfg.PeSIT.Servers[0].Listen != ":5000" {
		t.Errorf("server listen = %q: PeSIT addresses are shared through the store and bound by each node", cfg.PeSIT.Servers[0].Listen)
	}
	if got := BindHost(":5000", "127.0.0.7"); got != "127.0.0.7:5000" {
		t.Errorf("BindHost = %q", got)
	}
}

func TestMisspeltKeyIsRejected(t *testing.T) {
	p := writeFile(t, "vectis:\n  cluster:\n    enabeld: true\n")
	_, err := Load(Source{File: p})
	if err == nil || !strings.Contains(err.Error(), "enabeld") {
		t.Fatalf("misspelt key: %v, want an error naming it", err)
	}
}

func TestUsersFileFromASecret(t *testing.T) {
	f := filepath.Join(t.TempDir(), "users.yaml")
	body := "- name: ops\n  passwordHash: \"$2a$10$abcdefghijklmnopqrstuuJ6vVY8s0oHcWlcX1l0c1mFf3zJ8Q1zW\"\n  role: operator\n"
	if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(Source{Sets: []string{"api.usersFile=" + f}})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.API.Users) != 1 || cfg.API.Users[0].Name != "ops" || cfg.API.Users[0].Role != "operator" {
		t.Fatalf("users = %+v", cfg.API.Users)
	}
	if err := os.WriteFile(f, []byte("- name: x\n  rol: admin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(Source{Sets: []string{"api.usersFile=" + f}}); err == nil {
		t.Fatal("a misspelt key in the users file was accepted")
	}
}

// TestDirectoriesConfinedToFileRoot: a virtual file cannot point at /etc
// unless vectis.fileRoot allows it; the root defaults to dataDir (issue 16,
// defect 13).
func TestDirectoriesConfinedToFileRoot(t *testing.T) {
	dir := t.TempDir()
	file := func(extra, recv string) string {
		return writeFile(t, `
vectis:
  dataDir: `+dir+`/data
`+extra+`
  pesit:
    files:
      - {id: INBOX, direction: receive, receiveDir: `+recv+`}
`)
	}
	if _, err := Load(Source{File: file("", dir+"/data/in")}); err != nil {
		t.Fatalf("receiveDir under dataDir: %v", err)
	}
	for _, recv := range []string{"/etc", dir + "/in", dir + "/data/../in"} {
		_, err := Load(Source{File: file("", recv)})
		if err == nil || !strings.Contains(err.Error(), "pesit.files[0].receiveDir") || !strings.Contains(err.Error(), "outside the file root") {
			t.Errorf("receiveDir %s: %v", recv, err)
		}
	}
	if _, err := Load(Source{File: file("  fileRoot: "+dir, dir+"/in")}); err != nil {
		t.Fatalf("receiveDir under an explicit fileRoot: %v", err)
	}
	if _, err := Load(Source{File: file("  fileRoot: "+dir+"/data", "/etc")}); err == nil {
		t.Fatal("/etc accepted under an explicit fileRoot")
	}
}

func TestDotIDsAreRejected(t *testing.T) {
	for _, id := range []string{".", ".."} {
		p := writeFile(t, "vectis:\n  pesit:\n    partners:\n      - {id: \""+id+"\", password: pw}\n    files:\n      - {id: \""+id+"\", direction: send, sendDir: ./data/out}\n")
		_, err := Load(Source{File: p})
		if err == nil || !strings.Contains(err.Error(), "pesit.partners[0].id") || !strings.Contains(err.Error(), "pesit.files[0].id") {
			t.Errorf("id %q: %v", id, err)
		}
	}
}

func TestNegativeInterruptedExpiryIsRejected(t *testing.T) {
	_, err := Load(Source{Sets: []string{"store.interruptedExpiry=-1h"}})
	if err == nil || !strings.Contains(err.Error(), "store.interruptedExpiry") {
		t.Fatalf("negative interruptedExpiry: %v", err)
	}
	cfg, err := Load(Source{})
	if err != nil || cfg.Store.InterruptedExpiry != 72*time.Hour {
		t.Fatalf("default interruptedExpiry: %v, %v", cfg, err)
	}
}

func TestShutdownDelayBounds(t *testing.T) {
	base := []string{"cluster.enabled=true", "store.driver=postgres", "store.url=postgres://x", "cluster.kubernetes.enabled=false"}
	cfg, err := Load(Source{Sets: append(base, "cluster.shutdownDelay=3s")})
	if err != nil {
		t.Fatalf("shutdownDelay 3s refused: %v", err)
	}
	if cfg.Cluster.ShutdownDelay != 3*time.Second {
		t.Errorf("shutdownDelay = %v, want 3s", cfg.Cluster.ShutdownDelay)
	}
	for _, bad := range []string{"-1s", "2m"} {
		_, err := Load(Source{Sets: append(base, "cluster.shutdownDelay="+bad)})
		if err == nil || !strings.Contains(err.Error(), "cluster.shutdownDelay") {
			t.Errorf("shutdownDelay %s: %v, want an error naming cluster.shutdownDelay", bad, err)
		}
	}
}

func TestConfirmWindowBounds(t *testing.T) {
	base := []string{"cluster.enabled=true", "store.driver=postgres", "store.url=postgres://x", "cluster.kubernetes.enabled=false"}
	cfg, err := Load(Source{Sets: base})
	if err != nil || cfg.Cluster.ConfirmWindow != DefaultConfirmWindow {
		t.Fatalf("default confirmWindow = %v (%v), want %v", cfg.Cluster.ConfirmWindow, err, DefaultConfirmWindow)
	}
	cfg, err = Load(Source{Sets: append(base, "cluster.confirmWindow=1s")})
	if err != nil || cfg.Cluster.ConfirmWindow != time.Second {
		t.Fatalf("confirmWindow 1s: %v, %v", cfg.Cluster.ConfirmWindow, err)
	}
	// Below the minimum, at half the TTL (5s by default), and negative.
	for _, bad := range []string{"50ms", "2500ms", "-1s"} {
		_, err := Load(Source{Sets: append(base, "cluster.confirmWindow="+bad)})
		if err == nil || !strings.Contains(err.Error(), "cluster.confirmWindow") {
			t.Errorf("confirmWindow %s: %v, want an error naming cluster.confirmWindow", bad, err)
		}
	}
	// Without fast failover the window is not used, whatever it says.
	if _, err := Load(Source{Sets: append(base, "cluster.fastFailover=false", "cluster.confirmWindow=0s")}); err != nil {
		t.Errorf("fastFailover off with confirmWindow 0s refused: %v", err)
	}
}

func TestLeaderServiceName(t *testing.T) {
	for name, ok := range map[string]bool{
		"vectis-pesit": true, "a": true, "p0": true,
		"Vectis": false, "0pesit": false, "pesit-": false, "ves.pesit": false,
		strings.Repeat("a", 63): true, strings.Repeat("a", 64): false,
	} {
		cfg := Default()
		cfg.Cluster.Enabled, cfg.Cluster.PodName, cfg.Cluster.Namespace = true, "vectis-0", "vectis"
		cfg.Cluster.Kubernetes.LeaderService = name
		err := cfg.Validate()
		if got := err == nil || !strings.Contains(err.Error(), "leaderService"); got != ok {
			t.Errorf("leaderService %q accepted %v, want %v (%v)", name, got, ok, err)
		}
	}
}
