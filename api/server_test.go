package api_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/api"
	"github.com/vectis-ft/vectis/store"
)

// TestEnsureAdmin: with no admin anywhere, a random password is generated,
// only its hash stored, and the password logged exactly once; it works
// against the API. A second start, or a configured admin, changes nothing.
func TestEnsureAdmin(t *testing.T) {
	backends(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		logs := &logBuffer{}
		log := slog.New(slog.NewJSONHandler(logs, nil))

		// A configured admin: nothing to do.
		created, err := api.EnsureAdmin(ctx, st, []api.StaticUser{{Name: "root", PasswordHash: "x", Role: store.RoleAdmin}}, log)
		if err != nil || created {
			t.Fatalf("with a configured admin: created=%v err=%v", created, err)
		}
		// A stored viewer is not an admin.
		if _, err := st.PutUser(ctx, store.User{Name: "watcher", Role: store.RoleViewer}, "x"); err != nil {
			t.Fatal(err)
		}
		created, err = api.EnsureAdmin(ctx, st, nil, log)
		if err != nil || !created {
			t.Fatalf("first start: created=%v err=%v", created, err)
		}
		var line struct {
			Msg, User            string
			InitialAdminPassword string `json:"initialAdminPassword"`
		}
		if n := strings.Count(logs.String(), "\n"); n != 1 {
			t.Fatalf("%d log lines, want 1: %s", n, logs)
		}
		if err := json.Unmarshal([]byte(logs.String()), &line); err != nil || len(line.InitialAdminPassword) < 20 || line.User != "admin" {
			t.Fatalf("log line %s (%v)", logs, err)
		}
		hash, err := st.UserPasswordHash(ctx, "admin")
		if err != nil || strings.Contains(hash, line.InitialAdminPassword) {
			t.Fatalf("stored hash %q, %v", hash, err)
		}
		if ok, _ := store.VerifyPassword(hash, line.InitialAdminPassword); !ok {
			t.Fatal("stored hash does not verify the logged password")
		}
		// The password logs in as admin through the API (no configured users).
		e := newEnv(t, st, func(c *api.Config) { c.Users = nil })
		var who api.Principal
		e.must(200, cred{user: "admin", password: line.InitialAdminPassword}, "GET", "/api/v1/whoami", nil).json(t, &who)
		if who.Role != store.RoleAdmin {
			t.Errorf("whoami %+v", who)
		}
		// Second start: no new password, no log line.
		created, err = api.EnsureAdmin(ctx, st, nil, log)
		if err != nil || created || strings.Count(logs.String(), "\n") != 1 {
			t.Errorf("second start: created=%v err=%v logs %s", created, err, logs)
		}
	})
}

func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "vectis-api"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestServeTLSAndTimeouts runs the API as the node does (NewHTTPServer and
// Serve on a real listener): over TLS, with a slowloris client cut off by
// ReadHeaderTimeout, and a graceful stop when the context ends.
func TestServeTLSAndTimeouts(t *testing.T) {
	st := openStore(t, store.DriverSQLite)
	e := newEnv(t, st)
	certFile, keyFile, pool := selfSigned(t)
	srv, err := api.NewHTTPServer(api.ServerConfig{Addr: "127.0.0.1:0", Handler: e.api, CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	if srv.ReadHeaderTimeout <= 0 || srv.ReadTimeout <= 0 || srv.WriteTimeout <= 0 || srv.IdleTimeout <= 0 || srv.MaxHeaderBytes <= 0 {
		t.Fatalf("server without timeouts: %+v", srv)
	}
	srv.ReadHeaderTimeout = 300 * time.Millisecond // keep the slowloris check short
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- api.Serve(ctx, srv, ln) }()

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, _ := http.NewRequest("GET", "https://"+ln.Addr().String()+"/api/cluster/status", nil)
	req.SetBasicAuth("viewer", viewerPW)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("TLS request: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 || !strings.Contains(string(body), `"clusterName":"vectis-cluster"`) {
		t.Fatalf("TLS status %d %s", resp.StatusCode, body)
	}
	// Plain HTTP on the TLS port gets no API answer.
	if resp, err := http.Get("http://" + ln.Addr().String() + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("plain HTTP served on the TLS listener")
		}
	}
	// Slowloris: a client that never finishes its headers is disconnected.
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = conn.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n"))
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	_, rerr := conn.Read(make([]byte, 1))
	conn.Close()
	// The server must have ended it (EOF or a reset), not the client's own
	// read deadline (a timeout).
	var ne net.Error
	if rerr == nil || errors.As(rerr, &ne) && ne.Timeout() {
		t.Errorf("slow client not cut off by ReadHeaderTimeout: err=%v after %v", rerr, time.Since(start))
	}
	t.Logf("slow client cut off after %v (ReadHeaderTimeout %v)", time.Since(start), srv.ReadHeaderTimeout)
	client.CloseIdleConnections()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after cancel: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if _, err := api.NewHTTPServer(api.ServerConfig{CertFile: certFile}); err == nil {
		t.Error("certFile without keyFile accepted")
	}
}
