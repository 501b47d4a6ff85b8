package server_test

import (
	"net"
	"testing"
	"time"
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
