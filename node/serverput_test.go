package node

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/pesit/client"
)

type serverState struct {
	Listen      string `json:"listen"`
	Description string `json:"description"`
	Running     bool   `json:"running"`
	ListenError string `json:"listenError"`
	Listening   struct {
		Addr string `json:"addr"`
	} `json:"listening"`
}

func (n *testNode) putServer(t *testing.T, body map[string]any) serverState {
	t.Helper()
	code, out := n.do(t, "PUT", "/api/v1/servers/PESITSRV", body)
	if code != 200 {
		t.Fatalf("PUT server: %d %s", code, out)
	}
	var s serverState
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func (n *testNode) getServer(t *testing.T) serverState {
	t.Helper()
	code, out := n.do(t, "GET", "/api/v1/servers/PESITSRV", nil)
	if code != 200 {
		t.Fatalf("GET server: %d %s", code, out)
	}
	var s serverState
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestServerPutKeepsSessionsAndReportsBindFailures is the regression test
// of issue 16 defect 5. A PUT that changes only the description leaves the
// listener and the live sessions alone; a new listen address is bound
// before the answer and before the old one is released, and live sessions
// go on; an address in use is reported (running false, listenError) while
// the old listener keeps serving, and a correcting PUT applies.
func TestServerPutKeepsSessionsAndReportsBindFailures(t *testing.T) {
	dir := t.TempDir()
	cfg := baseConfig(t, dir, "solo")
	cfg.Telemetry.LogLevel = "debug" // for the change feed's "configuration change" line
	n := startNode(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	src, _ := randomFile(t, dir, 200<<10)
	push := func(addr string) error {
		_, err := client.Push(ctx, clientConfig(addr, "CXCLIENT", "test123"),
			client.SendRequest{Source: src, VirtualFile: "INBOX", NoRestart: true}, client.Retry{})
		return err
	}

	// A session connected before the changes, idle between transfers: a
	// restart of the listener aborted it with 3/316.
	live, err := client.Dial(ctx, clientConfig(n.pesit, "CXCLIENT", "test123"))
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()

	// The store's change feed applies the change again after the PUT; the
	// session must survive that too, so wait until the feed has handled it
	// (it logs once the change is applied).
	const serverUpdate = `"kind":"server","id":"PESITSRV","op":"update"`
	fed := strings.Count(n.log.String(), serverUpdate)
	s := n.putServer(t, map[string]any{"listen": n.pesit, "maxSessions": 50, "description": "changed"})
	if !s.Running || s.ListenError != "" || s.Description != "changed" {
		t.Fatalf("after a description change: %+v", s)
	}
	testenv.Eventually(t, 10*time.Second, testenv.Awaiting("the change feed to apply the description change", func() bool {
		return strings.Count(n.log.String(), serverUpdate) > fed
	}))
	if _, err := live.Send(ctx, client.SendRequest{Source: src, VirtualFile: "INBOX", NoRestart: true}); err != nil {
		t.Fatalf("the session connected before a description change did not survive it: %v", err)
	}

	// A new address: bound before the answer, the old one released.
	addr2 := testenv.FreeAddr(t)
	s = n.putServer(t, map[string]any{"listen": addr2, "maxSessions": 50})
	if !s.Running || s.ListenError != "" || s.Listening.Addr != addr2 {
		t.Fatalf("after a listen change: %+v", s)
	}
	if err := push(addr2); err != nil {
		t.Fatalf("push to the new address right after the PUT: %v", err)
	}
	if c, err := net.DialTimeout("tcp", n.pesit, time.Second); err == nil {
		c.Close()
		t.Errorf("the old address %s still accepts", n.pesit)
	}
	if _, err := live.Send(ctx, client.SendRequest{Source: src, VirtualFile: "INBOX", NoRestart: true}); err != nil {
		t.Fatalf("the session connected before the PUTs did not survive them: %v", err)
	}

	// An address in use: reported, and the old listener goes on.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	s = n.putServer(t, map[string]any{"listen": busy.Addr().String(), "maxSessions": 50})
	if s.Running || !strings.Contains(s.ListenError, "address already in use") || s.Listening.Addr != addr2 {
		t.Fatalf("after a PUT to an address in use: %+v", s)
	}
	if g := n.getServer(t); g.Running || g.ListenError != s.ListenError || g.Listen != busy.Addr().String() {
		t.Fatalf("GET after a PUT to an address in use: %+v", g)
	}
	if err := push(addr2); err != nil {
		t.Fatalf("push to the old address after a failed change: %v", err)
	}

	// A correcting PUT applies at once.
	addr3 := testenv.FreeAddr(t)
	s = n.putServer(t, map[string]any{"listen": addr3, "maxSessions": 50})
	if !s.Running || s.ListenError != "" || s.Listening.Addr != addr3 {
		t.Fatalf("after a correcting PUT: %+v", s)
	}
	if err := push(addr3); err != nil {
		t.Fatalf("push after the correcting PUT: %v", err)
	}
	if err := live.Release(ctx); err != nil {
		t.Fatalf("release of the session connected before the PUTs: %v", err)
	}

	// A server an operator stopped stays stopped through a PUT; one that
	// failed to start is started by the PUT that corrects it.
	if code, out := n.do(t, "POST", "/api/v1/servers/PESITSRV/stop", nil); code != 200 {
		t.Fatalf("stop: %d %s", code, out)
	}
	if s = n.putServer(t, map[string]any{"listen": busy.Addr().String(), "maxSessions": 50}); s.Running || s.ListenError != "" {
		t.Fatalf("PUT on a stopped server: %+v", s)
	}
	if code, out := n.do(t, "POST", "/api/v1/servers/PESITSRV/start", nil); code != 409 {
		t.Fatalf("start on an address in use: %d %s", code, out)
	}
	if g := n.getServer(t); g.Running || !strings.Contains(g.ListenError, "address already in use") {
		t.Fatalf("GET after a failed start: %+v", g)
	}
	addr4 := testenv.FreeAddr(t)
	if s = n.putServer(t, map[string]any{"listen": addr4, "maxSessions": 50}); !s.Running || s.ListenError != "" || s.Listening.Addr != addr4 {
		t.Fatalf("PUT correcting a failed start: %+v", s)
	}
	if err := push(addr4); err != nil {
		t.Fatalf("push after the start by a PUT: %v", err)
	}
}
