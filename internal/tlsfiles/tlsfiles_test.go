package tlsfiles_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/internal/tlsfiles"
)

// writePKI writes a CA and one leaf it signs (valid for 127.0.0.1, usable by
// a client and a server), and returns the paths.
func writePKI(t *testing.T) (ca, cert, key string) {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "leaf"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caTmpl, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("leaf.pem", "CERTIFICATE", leafDER), write("leaf.key", "PRIVATE KEY", keyDER)
}

// TestLoadServerAndClientHandshake loads both ends from files and completes
// a mutually authenticated handshake over loopback TCP: the CA lands in
// ClientCAs on the server side and in RootCAs on the client side.
func TestLoadServerAndClientHandshake(t *testing.T) {
	ca, cert, key := writePKI(t)
	files := tlsfiles.Files{Cert: cert, Key: key, CA: ca}
	sc, err := tlsfiles.Load(tlsfiles.Server, files)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := tlsfiles.Load(tlsfiles.Client, files)
	if err != nil {
		t.Fatal(err)
	}
	if sc.ClientCAs == nil || sc.RootCAs != nil || cc.RootCAs == nil || cc.ClientCAs != nil {
		t.Fatalf("CA pool on the wrong side: server ClientCAs=%v RootCAs=%v, client RootCAs=%v ClientCAs=%v",
			sc.ClientCAs != nil, sc.RootCAs != nil, cc.RootCAs != nil, cc.ClientCAs != nil)
	}
	if sc.MinVersion != tls.VersionTLS12 || cc.MinVersion != tls.VersionTLS12 {
		t.Fatalf("MinVersion server %x client %x, want TLS 1.2", sc.MinVersion, cc.MinVersion)
	}
	sc.ClientAuth = tls.RequireAndVerifyClientCert

	ln, err := tls.Listen("tcp", "127.0.0.1:0", sc)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		done <- c.(*tls.Conn).Handshake()
	}()
	d := &net.Dialer{Timeout: 10 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", ln.Addr().String(), cc)
	if err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	c.Close()
	if err := <-done; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
}

func TestLoadEmpty(t *testing.T) {
	c, err := tlsfiles.Load(tlsfiles.Client, tlsfiles.Files{})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Certificates) != 0 || c.RootCAs != nil {
		t.Fatalf("no files gave certificates %d, RootCAs %v", len(c.Certificates), c.RootCAs != nil)
	}
}

func TestLoadBadFiles(t *testing.T) {
	ca, cert, key := writePKI(t)
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing.pem")
	for name, f := range map[string]tlsfiles.Files{
		"missing cert":  {Cert: missing, Key: key},
		"key not given": {Cert: cert},
		"cert as key":   {Cert: cert, Key: ca},
		"missing CA":    {CA: missing},
		"CA not PEM":    {CA: notPEM},
	} {
		for _, side := range []tlsfiles.Side{tlsfiles.Server, tlsfiles.Client} {
			if c, err := tlsfiles.Load(side, f); err == nil {
				t.Errorf("%s (side %d): no error, config %+v", name, side, c)
			}
		}
	}
}
