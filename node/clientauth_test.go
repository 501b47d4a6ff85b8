package node

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/store"
)

// pki writes a CA, a server key pair and returns a client certificate
// signed by the CA.
func pki(t *testing.T, dir string) (caFile, certFile, keyFile string, client tls.Certificate, roots *x509.CertPool) {
	t.Helper()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey := key()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	roots = x509.NewCertPool()
	roots.AddCert(ca)
	issue := func(n int64, cn string, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
		k := key()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(n), Subject: pkix.Name{CommonName: cn}, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, k
	}
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caFile = write("ca.pem", "CERTIFICATE", caDER)
	srvDER, srvKey := issue(2, "server", x509.ExtKeyUsageServerAuth)
	kb, _ := x509.MarshalECPrivateKey(srvKey)
	certFile, keyFile = write("srv.pem", "CERTIFICATE", srvDER), write("srv.key", "EC PRIVATE KEY", kb)
	cliDER, cliKey := issue(3, "ACME", x509.ExtKeyUsageClientAuth)
	client = tls.Certificate{Certificate: [][]byte{cliDER}, PrivateKey: cliKey}
	return caFile, certFile, keyFile, client, roots
}

// TestTLSClientAuthModes (issue 14, item 6): the server's clientAuth mode
// decides, in a real handshake, whether a client without a certificate
// gets a TLS session at all.
func TestTLSClientAuthModes(t *testing.T) {
	caFile, certFile, keyFile, client, roots := pki(t, t.TempDir())
	for _, tc := range []struct {
		mode, ca         string
		noCertOK, certOK bool
	}{
		{"", "", true, true},
		{"", caFile, true, true},
		{"request", "", true, true},
		{"verify-if-given", caFile, true, true},
		{"require-any", "", false, true},
		{"require", caFile, false, true},
	} {
		t.Run(tc.mode+"/ca="+map[bool]string{true: "yes", false: "no"}[tc.ca != ""], func(t *testing.T) {
			m := &pesitManager{}
			cfg, err := m.serverConfig(store.Server{ID: "S", Listen: "127.0.0.1:0",
				TLS: store.ServerTLS{Listen: "127.0.0.1:0", CertFile: certFile, KeyFile: keyFile, ClientCAFile: tc.ca, ClientAuth: tc.mode}})
			if err != nil {
				t.Fatal(err)
			}
			ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg.TLS)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			done := make(chan error, 1)
			go func() {
				for range 2 {
					c, err := ln.Accept()
					if err != nil {
						done <- err
						return
					}
					c.SetDeadline(time.Now().Add(5 * time.Second))
					_ = c.(*tls.Conn).Handshake()
					// Read so that a TLS 1.3 client sees the server's
					// verdict on its certificate.
					_, _ = c.Read(make([]byte, 1))
					c.Close()
				}
				done <- nil
			}()
			try := func(cert *tls.Certificate) bool {
				cc := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
				if cert != nil {
					cc.Certificates = []tls.Certificate{*cert}
				}
				c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), cc)
				if err != nil {
					return false
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Write([]byte{0}); err != nil {
					return false
				}
				// A refused certificate shows on the next read in TLS 1.3.
				_, err = c.Read(make([]byte, 1))
				return err == nil || !isTLSAlert(err)
			}
			if got := try(nil); got != tc.noCertOK {
				t.Errorf("without a certificate: session %v, want %v", got, tc.noCertOK)
			}
			if got := try(&client); got != tc.certOK {
				t.Errorf("with a CA-signed certificate: session %v, want %v", got, tc.certOK)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
	// A mode that needs a CA is refused without one.
	if _, err := (&pesitManager{}).serverConfig(store.Server{ID: "S", Listen: "127.0.0.1:0",
		TLS: store.ServerTLS{Listen: "127.0.0.1:0", CertFile: certFile, KeyFile: keyFile, ClientAuth: "require"}}); err == nil {
		t.Fatal("clientAuth require without clientCAFile accepted")
	}
}

// isTLSAlert tells a TLS alert from the peer (a refusal) from a plain EOF
// (the server closed after a successful handshake).
func isTLSAlert(err error) bool {
	var ae tls.AlertError
	if errors.As(err, &ae) {
		return true
	}
	return err != nil && containsAny(err.Error(), "certificate required", "bad certificate", "alert")
}

func containsAny(s string, subs ...string) bool {
	for _, x := range subs {
		if strings.Contains(s, x) {
			return true
		}
	}
	return false
}
