package server_test

import (
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/server"
)

// TestStopAcceptingKeepsLiveSessions: after StopAccepting no new TCP
// connection is accepted, while a session already connected goes on and can
// still release cleanly.
func TestStopAcceptingKeepsLiveSessions(t *testing.T) {
	e := newEnv(t, nil)
	addr := e.srv.Addr()
	p := dial(t, addr)
	p.connect()

	e.srv.StopAccepting()
	if c, err := net.DialTimeout("tcp", addr.String(), time.Second); err == nil {
		c.Close()
		t.Fatal("a new connection was accepted after StopAccepting")
	}
	if n := e.srv.ActiveSessions(); n != 1 {
		t.Fatalf("active sessions after StopAccepting = %d, want the live one", n)
	}
	p.release()
}

// TestMayServeRefusesCONNECT: a server whose node no longer leads answers
// CONNECT with RCONNECT 3/302 instead of ACONNECT, frees the slot it
// reserved, and accepts again once leadership is valid. This is what a
// leader frozen past its lease deadline does with a CONNECT that waited in
// its backlog (e2e TestHA/LeaderSIGSTOP).
func TestMayServeRefusesCONNECT(t *testing.T) {
	var leading atomic.Bool
	e := newEnvDeps(t, func(c *server.Config) { c.MaxSessions = 1 }, func(d *server.Deps) { d.MayServe = leading.Load })
	p := dial(t, e.srv.Addr())
	f := p.connectWith(serverID, partnerID, password, 2, 2)
	if f.Kind != fpdu.RConnect {
		t.Fatalf("CONNECT to a node that does not lead answered %v, want RCONNECT", f.Kind)
	}
	if d, _ := f.Params.Diagnostic(); d != fpdu.DiagServerUnavailable {
		t.Fatalf("RCONNECT diagnostic %v, want %v", d, fpdu.DiagServerUnavailable)
	}
	p.expectClosed()

	leading.Store(true)
	// MaxSessions is 1: the refused session must have given its slot back.
	q := dial(t, e.srv.Addr())
	q.connect()
	q.release()
}
