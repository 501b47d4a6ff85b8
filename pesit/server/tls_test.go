package server_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/server"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "vectis test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

var serial int64 = 10

func (ca *testCA) issue(t *testing.T, cn string, server bool) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func fingerprint(c tls.Certificate) string {
	sum := sha256.Sum256(c.Certificate[0])
	return hex.EncodeToString(sum[:])
}

func tlsEnv(t *testing.T, ca *testCA, auth tls.ClientAuthType) *env {
	return newEnv(t, func(c *server.Config) {
		c.Addr = ""
		c.TLSAddr = "127.0.0.1:0"
		c.TLS = &tls.Config{Certificates: []tls.Certificate{ca.issue(t, "pesit server", true)}, ClientAuth: auth, ClientCAs: ca.pool}
	})
}

func dialTLS(t *testing.T, e *env, ca *testCA, version uint16, cert *tls.Certificate) (*peer, tls.ConnectionState) {
	t.Helper()
	cfg := &tls.Config{RootCAs: ca.pool, MinVersion: version, MaxVersion: version, ServerName: "127.0.0.1"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", e.srv.TLSAddr().String(), cfg)
	if err != nil {
		t.Fatalf("TLS dial: %v", err)
	}
	return newPeer(t, c), c.ConnectionState()
}

// TestTLSPush: TLS 1.2 and 1.3 handshakes, then a push.
func TestTLSPush(t *testing.T) {
	ca := newCA(t)
	e := tlsEnv(t, ca, tls.NoClientCert)
	if e.srv.Addr() != nil {
		t.Fatal("plain listener without Addr")
	}
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			p, st := dialTLS(t, e, ca, v, nil)
			if st.Version != v {
				t.Fatalf("negotiated %s", tls.VersionName(st.Version))
			}
			p.connect()
			data := randomData(100_000, uint64(v))
			p.openForWrite(createOpts{file: "TESTFILE", pi13: uint32(v)})
			pushArticles(t, p, data, 0)
			p.sendKind(fpdu.DTFEnd, diagParam(fpdu.DiagOK))
			p.transEnd(len(data), (len(data)+1023)/1024)
			p.closeFile()
			p.release()
			final := filepath.Join(e.recvDir, "TESTFILE")
			got, _ := os.ReadFile(final)
			if !bytes.Equal(got, data) {
				t.Fatal("file differs")
			}
			os.Remove(final)
		})
	}
	t.Run("pull over TLS 1.3", func(t *testing.T) {
		// Over 1 MiB, so the sender polls its input through TLS records.
		data := randomData(3<<20, 13)
		os.WriteFile(filepath.Join(e.sendDir, "TESTFILE"), data, 0o640)
		p, _ := dialTLS(t, e, ca, tls.VersionTLS13, nil)
		p.connect()
		_, recLen := p.selectAndRead("TESTFILE", 0, false, 0)
		got := p.pull(recLen, 0)
		if !bytes.Equal(got.data, data) {
			t.Fatal("pulled data differs")
		}
		p.transEnd(len(data), got.articles)
		p.closeFile()
		p.release()
	})
	t.Run("TLS 1.1 refused", func(t *testing.T) {
		cfg := &tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11, ServerName: "127.0.0.1"}
		if c, err := tls.Dial("tcp", e.srv.TLSAddr().String(), cfg); err == nil {
			c.Close()
			t.Fatal("TLS 1.1 handshake succeeded")
		}
	})
}

// TestTLSClientCert: a client certificate authenticates a partner by
// fingerprint, or by CN when its chain was verified; a pinned partner
// cannot log in with a password alone.
func TestTLSClientCert(t *testing.T) {
	ca := newCA(t)
	e := tlsEnv(t, ca, tls.VerifyClientCertIfGiven)
	pinned := ca.issue(t, "some-cn", false)
	byCN := ca.issue(t, "CNPART", false)
	other := ca.issue(t, "other", false)
	e.dir.AddPartner(server.Partner{ID: "FPPART", Enabled: true, Access: server.AccessBoth,
		CertFingerprints: []string{fingerprint(pinned)}, VerifyPassword: func(s string) bool { return s == "pw" }})
	e.dir.AddPartner(server.Partner{ID: "CNPART", Enabled: true, Access: server.AccessBoth})

	for _, tc := range []struct {
		name      string
		cert      *tls.Certificate
		requester string
		pw        string
		ok        bool
	}{
		{"fingerprint, no password", &pinned, "FPPART", "", true},
		{"pinned partner without certificate", nil, "FPPART", "pw", false},
		{"pinned partner, wrong certificate", &other, "FPPART", "pw", false},
		{"verified CN, no password", &byCN, "CNPART", "", true},
		{"CN of another partner", &other, "CNPART", "", false},
		{"no certificate, no password", nil, "CNPART", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := dialTLS(t, e, ca, tls.VersionTLS13, tc.cert)
			f := p.connectWith(serverID, tc.requester, tc.pw, 2, 2)
			if tc.ok {
				if f.Kind != fpdu.AConnect {
					t.Fatalf("got %v", f.Kind)
				}
				p.release()
				return
			}
			checkRefused(t, p, f, fpdu.DiagNotAuthorised)
		})
	}
}

// TestTLSCNNeedsVerifiedChain: when the server only requests certificates
// without verifying them, a CN proves nothing.
func TestTLSCNNeedsVerifiedChain(t *testing.T) {
	ca := newCA(t)
	e := tlsEnv(t, ca, tls.RequestClientCert)
	e.dir.AddPartner(server.Partner{ID: "CNPART", Enabled: true, Access: server.AccessBoth})
	rogue := newCA(t).issue(t, "CNPART", false)
	p, _ := dialTLS(t, e, ca, tls.VersionTLS13, &rogue)
	checkRefused(t, p, p.connectWith(serverID, "CNPART", "", 2, 2), fpdu.DiagNotAuthorised)
}

// TestTLSCertCNPartner (issue 14, item 4): a partner declared with certCN
// connects with a verified certificate of that CN, whatever its id, and is
// refused with any other certificate, even with a good password; every
// declared fingerprint authenticates.
func TestTLSCertCNPartner(t *testing.T) {
	ca := newCA(t)
	e := tlsEnv(t, ca, tls.VerifyClientCertIfGiven)
	mapped := ca.issue(t, "acme-pesit.example", false)
	other := ca.issue(t, "ACME", false) // CN equal to the id: not the declared CN
	fp1, fp2 := ca.issue(t, "fp-one", false), ca.issue(t, "fp-two", false)
	e.dir.AddPartner(server.Partner{ID: "ACME", Enabled: true, Access: server.AccessBoth, CertCN: "acme-pesit.example",
		VerifyPassword: func(s string) bool { return s == "pw" }})
	e.dir.AddPartner(server.Partner{ID: "TWOFP", Enabled: true, Access: server.AccessBoth,
		CertFingerprints: []string{fingerprint(fp1), fingerprint(fp2)}})
	for _, tc := range []struct {
		name      string
		cert      *tls.Certificate
		requester string
		pw        string
		ok        bool
	}{
		{"declared CN", &mapped, "ACME", "", true},
		{"CN equal to the id only", &other, "ACME", "pw", false},
		{"no certificate, good password", nil, "ACME", "pw", false},
		{"first fingerprint", &fp1, "TWOFP", "", true},
		{"second fingerprint", &fp2, "TWOFP", "", true},
		{"CN-mapped certificate for the other partner", &mapped, "TWOFP", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := dialTLS(t, e, ca, tls.VersionTLS13, tc.cert)
			f := p.connectWith(serverID, tc.requester, tc.pw, 2, 2)
			if tc.ok {
				if f.Kind != fpdu.AConnect {
					d, _ := f.Params.Diagnostic()
					t.Fatalf("got %v %v", f.Kind, d)
				}
				p.release()
				return
			}
			checkRefused(t, p, f, fpdu.DiagNotAuthorised)
		})
	}
}
