package api_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/api"
	"github.com/vectis-ft/vectis/internal/fileroot"
	"github.com/vectis-ft/vectis/store"
)

// Regression tests for issue 16, defect 11 (API details).

// TestTokenCannotMintToken: a token minted with a token would survive the
// revocation of its parent, so only a password login mints tokens.
func TestTokenCannotMintToken(t *testing.T) {
	backends(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		var parent struct{ ID, Token string }
		e.must(201, asAdmin, "POST", "/api/v1/tokens", map[string]any{"role": "admin"}).json(t, &parent)
		r := e.must(403, cred{token: parent.Token}, "POST", "/api/v1/tokens", map[string]any{"role": "admin"})
		if r.errorCode(t) != "forbidden" {
			t.Fatalf("token minted by a token: %s", r.body)
		}
		// The parent still works for everything else, and its revocation
		// leaves no descendant behind: there is none.
		e.must(200, cred{token: parent.Token}, "GET", "/api/v1/tokens", nil)
		e.must(204, asAdmin, "DELETE", "/api/v1/tokens/"+parent.ID, nil)
		e.must(401, cred{token: parent.Token}, "GET", "/api/v1/tokens", nil)
		var list struct{ Items []struct{ ID string } }
		e.must(200, asAdmin, "GET", "/api/v1/tokens", nil).json(t, &list)
		if len(list.Items) != 0 {
			t.Fatalf("tokens after revoking the only parent: %+v", list.Items)
		}
	})
}

// TestTokenExpiry: every token expires, by default after 30 days and at
// most after 366; expired tokens are not listed.
func TestTokenExpiry(t *testing.T) {
	backends(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		var tok struct {
			ID        string
			ExpiresAt time.Time
		}
		e.must(201, asAdmin, "POST", "/api/v1/tokens", map[string]any{"role": "viewer"}).json(t, &tok)
		want := e.clock.Now().Add(30 * 24 * time.Hour)
		if d := tok.ExpiresAt.Sub(want); d < -time.Minute || d > time.Minute {
			t.Fatalf("default expiry %v, want about %v", tok.ExpiresAt, want)
		}
		for _, body := range []map[string]any{
			{"role": "viewer", "expiresIn": "9000h"},
			{"role": "viewer", "expiresAt": e.clock.Now().Add(400 * 24 * time.Hour)},
			{"role": "viewer", "expiresIn": "0s"},
		} {
			e.must(400, asAdmin, "POST", "/api/v1/tokens", body)
		}
		e.must(201, asAdmin, "POST", "/api/v1/tokens", map[string]any{"role": "viewer", "expiresIn": "8784h"})

		_, err := st.CreateToken(context.Background(), store.Token{ID: "gone", User: "admin", Role: store.RoleViewer,
			ExpiresAt: time.Now().Add(-time.Second)}, store.HashToken("vt_gone"))
		if err != nil {
			t.Fatal(err)
		}
		var list struct{ Items []struct{ ID string } }
		e.must(200, asAdmin, "GET", "/api/v1/tokens", nil).json(t, &list)
		if len(list.Items) != 2 {
			t.Fatalf("tokens %+v, want the 2 unexpired ones", list.Items)
		}
		for _, it := range list.Items {
			if it.ID == "gone" {
				t.Fatal("an expired token is listed")
			}
		}
	})
}

// TestFailedLoginAuditHidesNames: a name that is no user (often a password
// typed in the user field) is audited and logged as "(unknown)", and an
// unknown user reads exactly like a wrong password.
func TestFailedLoginAuditHidesNames(t *testing.T) {
	st := openStore(t, store.DriverSQLite)
	e := newEnv(t, st)
	const typedPassword = "Tr0ub4dor.3"
	e.must(401, cred{user: typedPassword, password: "x"}, "GET", "/api/v1/files", nil)
	e.must(401, cred{user: "viewer", password: "wrong-password"}, "GET", "/api/v1/files", nil)
	var p store.AuditPage
	e.must(200, asAdmin, "GET", "/api/v1/audit?action=api.auth", nil).json(t, &p)
	if len(p.Items) != 2 {
		t.Fatalf("auth failures %+v, want 2", p.Items)
	}
	unknown, wrong := p.Items[1], p.Items[0]
	if unknown.Actor != "(unknown)" || wrong.Actor != "viewer" {
		t.Fatalf("actors %q and %q, want (unknown) and viewer", unknown.Actor, wrong.Actor)
	}
	if unknown.Detail != wrong.Detail {
		t.Fatalf("details tell unknown user (%q) from wrong password (%q)", unknown.Detail, wrong.Detail)
	}
	if strings.Contains(e.logs.String(), typedPassword) {
		t.Fatal("the log holds the name typed")
	}
}

// TestViewerCannotReadCredentialAudit: user, token and login events are
// for admins only.
func TestViewerCannotReadCredentialAudit(t *testing.T) {
	st := openStore(t, store.DriverSQLite)
	e := newEnv(t, st)
	e.must(201, asAdmin, "POST", "/api/v1/tokens", map[string]any{"role": "viewer"})
	e.must(201, asAdmin, "PUT", "/api/v1/users/carol", map[string]any{"role": "viewer", "password": "carol-password-1"})
	e.must(401, cred{user: "carol", password: "wrong-password"}, "GET", "/api/v1/files", nil)
	e.must(201, asAdmin, "POST", "/api/v1/partners", map[string]any{"id": "P1", "password": "pw1"})
	e.must(204, asAdmin, "PUT", "/api/v1/partners/P1/password", map[string]any{"password": "pw2"})
	actions := func(c cred, q string) []string {
		var p store.AuditPage
		e.must(200, c, "GET", "/api/v1/audit"+q, nil).json(t, &p)
		var out []string
		for _, ev := range p.Items {
			out = append(out, ev.Action)
		}
		return out
	}
	all := actions(asAdmin, "")
	if len(all) != 5 {
		t.Fatalf("admin sees %v, want 5 events", all)
	}
	for _, c := range []cred{asViewer, asOper} {
		if got := actions(c, ""); len(got) != 1 || got[0] != "partner.create" {
			t.Fatalf("%s sees %v, want partner.create only", c.user, got)
		}
		for _, q := range []string{"?action=api.auth", "?action=token.create", "?action=user.put", "?actor=carol", "?action=partner.password"} {
			if got := actions(c, q); len(got) != 0 {
				t.Fatalf("%s reads %v with %s", c.user, got, q)
			}
		}
	}
}

// TestDuplicateJSONKeys: a body giving a key twice (in any case, at any
// depth) is refused, not read as "last one wins".
func TestDuplicateJSONKeys(t *testing.T) {
	st := openStore(t, store.DriverSQLite)
	e := newEnv(t, st)
	for _, body := range []string{
		`{"role":"viewer","role":"admin"}`,
		`{"role":"viewer","Role":"admin"}`,
	} {
		r := e.must(400, asAdmin, "POST", "/api/v1/tokens", body)
		if !strings.Contains(string(r.body), "duplicate key") {
			t.Fatalf("%s: %s", body, r.body)
		}
	}
	e.must(400, asAdmin, "POST", "/api/v1/partners", `{"id":"P1","password":"a","files":["F"],"id":"P2"}`)
	e.must(400, asAdmin, "POST", "/api/v1/servers", `{"id":"S1","listen":"127.0.0.1:0","tls":{"listen":"","listen":"127.0.0.1:0"}}`)
	// The same key in sibling objects is no duplicate.
	e.must(201, asAdmin, "POST", "/api/v1/partners", `{"id":"P1","password":"a","files":["F"]}`)
	e.must(201, asAdmin, "POST", "/api/v1/tokens", `{"role":"viewer"}`)
}

// TestDotIDsRefused: "." and ".." are no partner or file ids.
func TestDotIDsRefused(t *testing.T) {
	st := openStore(t, store.DriverSQLite)
	e := newEnv(t, st)
	for _, id := range []string{".", ".."} {
		e.must(400, asAdmin, "POST", "/api/v1/partners", map[string]any{"id": id, "password": "pw"})
		e.must(400, asAdmin, "POST", "/api/v1/files", map[string]any{"id": id, "direction": "send", "sendDir": "/out"})
	}
	e.must(201, asAdmin, "POST", "/api/v1/files", map[string]any{"id": "a.b", "direction": "send", "sendDir": "/out"})
}

// TestFileDirectoriesConfinedToRoot: an admin cannot point a virtual file
// at /etc: receiveDir and sendDir must be under vectis.fileRoot (issue 16,
// defect 13).
func TestFileDirectoriesConfinedToRoot(t *testing.T) {
	st := openStore(t, store.DriverSQLite)
	root := t.TempDir()
	fr, err := fileroot.New(root)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, st, func(c *api.Config) { c.FileRoot = fr })
	for _, body := range []map[string]any{
		{"id": "ETC", "direction": "receive", "receiveDir": "/etc"},
		{"id": "ROOT", "direction": "send", "sendDir": "/root"},
		{"id": "UP", "direction": "receive", "receiveDir": root + "-sibling/in"},
	} {
		r := e.must(400, asAdmin, "POST", "/api/v1/files", body)
		if !strings.Contains(string(r.body), "outside the file root") {
			t.Errorf("%v: %s", body, r.body)
		}
	}
	e.must(201, asAdmin, "POST", "/api/v1/files", map[string]any{"id": "IN", "direction": "receive", "receiveDir": root + "/in"})
	e.must(400, asAdmin, "PUT", "/api/v1/files/IN", map[string]any{"direction": "receive", "receiveDir": "/etc/cron.d"})
	var f store.VirtualFile
	e.must(200, asAdmin, "GET", "/api/v1/files/IN", nil).json(t, &f)
	if f.ReceiveDir != root+"/in" {
		t.Fatalf("receiveDir after a refused update: %q", f.ReceiveDir)
	}
}
