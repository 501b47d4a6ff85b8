package server_test

import (
	"context"
	"crypto/tls"
	"net"
	"testing"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/server"
)

// TestRelisten: a TLS listener whose address is unchanged keeps its
// socket and serves the new certificate at the next handshake; a plain
// listener moves to a new address, bound before the old one is closed; an
// address in use changes nothing; sessions go on through all of it; a
// lowered maxSessions refuses the next CONNECT with 3/303.
func TestRelisten(t *testing.T) {
	ca := newCA(t)
	first := ca.issue(t, "first", true)
	e := newEnv(t, func(c *server.Config) {
		c.TLSAddr = "127.0.0.1:0"
		c.TLS = &tls.Config{Certificates: []tls.Certificate{first}}
	})
	ctx := context.Background()
	const tlsCfgAddr = "127.0.0.1:0" // as configured: unchanged, the listener is kept
	tlsAddr := e.srv.TLSAddr().String()
	live := dial(t, e.srv.Addr())
	live.connect()

	second := ca.issue(t, "second", true)
	newAddr := testenv.FreeAddr(t)
	if err := e.srv.Relisten(ctx, newAddr, tlsCfgAddr, &tls.Config{Certificates: []tls.Certificate{second}}); err != nil {
		t.Fatal(err)
	}
	if got := e.srv.Addr().String(); got != newAddr {
		t.Fatalf("plain listener on %s, want %s", got, newAddr)
	}
	if got := e.srv.TLSAddr().String(); got != tlsAddr {
		t.Fatalf("TLS listener moved to %s", got)
	}
	_, st := dialTLS(t, e, ca, tls.VersionTLS13, nil)
	if cn := st.PeerCertificates[0].Subject.CommonName; cn != "second" {
		t.Fatalf("TLS handshake after Relisten shows %q, want the new certificate", cn)
	}
	p := dial(t, e.srv.Addr())
	p.connect()
	p.release()

	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if err := e.srv.Relisten(ctx, busy.Addr().String(), tlsCfgAddr, &tls.Config{Certificates: []tls.Certificate{first}}); err == nil {
		t.Fatal("Relisten to an address in use succeeded")
	}
	if got := e.srv.Addr().String(); got != newAddr {
		t.Fatalf("after a failed Relisten the plain listener is on %s, want %s", got, newAddr)
	}
	if _, st := dialTLS(t, e, ca, tls.VersionTLS13, nil); st.PeerCertificates[0].Subject.CommonName != "second" {
		t.Fatal("a failed Relisten changed the TLS certificate")
	}

	e.srv.SetMaxSessions(1) // the live session holds it
	q := dial(t, e.srv.Addr())
	f := q.connectWith(serverID, partnerID, password, 2, 2)
	if d, _ := f.Params.Diagnostic(); f.Kind != fpdu.RConnect || d != fpdu.DiagTooManyConnections {
		t.Fatalf("CONNECT beyond a lowered maxSessions: %v %v, want RCONNECT 3/303", f.Kind, d)
	}

	live.release() // the session connected before every change
}
