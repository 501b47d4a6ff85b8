package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/api"
	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/internal/testenv/pgtest"
	"github.com/vectis-ft/vectis/store"
)

// TestPartnerPasswordNeverDisclosed: a partner's password goes in on create
// and through /password, and never comes out: not in any response of any
// readable route (as admin), not in an error echo, not in a log line.
func TestPartnerPasswordNeverDisclosed(t *testing.T) {
	backends(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		const pw1, pw2 = "Zq9#xY7!", "Pw2$Kk8@"
		var bodies []string
		keep := func(r response) { bodies = append(bodies, string(r.body)) }
		keep(e.must(201, asAdmin, "POST", "/api/v1/partners", map[string]any{"id": "SECRETP", "password": pw1}))
		keep(e.must(204, asAdmin, "PUT", "/api/v1/partners/SECRETP/password", map[string]any{"password": pw2}))
		// Bad requests carrying the password: the errors do not echo it.
		keep(e.must(400, asAdmin, "POST", "/api/v1/partners", `{"id": "SECRETP2", "password": "`+pw1+`",}`))
		keep(e.must(400, asAdmin, "POST", "/api/v1/partners", `{"id": "SECRETP2", "password": "`+pw1+`"} {"x": 1}`))
		keep(e.must(400, asAdmin, "POST", "/api/v1/partners", `{"id": "SECRETP2", "password": "`+pw1+`", "pw": "`+pw2+`"}`))
		keep(e.must(400, asAdmin, "PUT", "/api/v1/partners/SECRETP/password", map[string]any{"password": pw1 + pw2}))
		keep(e.must(400, asAdmin, "PUT", "/api/v1/partners/SECRETP", map[string]any{"access": "both", "password": pw1}))
		keep(e.must(409, asAdmin, "POST", "/api/v1/partners", map[string]any{"id": "SECRETP", "password": pw1}))
		// A login attempt with the password as user name or password.
		keep(e.must(401, cred{user: pw1, password: pw2}, "GET", "/api/v1/partners", nil))
		// Every readable route, as admin.
		for _, rt := range e.api.Routes() {
			if rt.Method != "GET" {
				continue
			}
			path := strings.NewReplacer("{id}", "SECRETP", "{name}", "admin").Replace(rt.Path)
			keep(e.do(asAdmin, "GET", path, nil))
		}
		keep(e.must(200, asAdmin, "GET", "/api/v1/audit?limit=1000", nil))
		e.srv.Close() // flush every access log line
		logs := e.logs.String()
		if !strings.Contains(logs, `"route":"/api/v1/partners/{id}/password"`) {
			t.Fatalf("the log capture does not hold the requests: %.500s", logs)
		}
		hash, _ := st.PartnerPasswordHash(context.Background(), "SECRETP")
		for _, secret := range []string{pw1, pw2, hash, adminPW, viewerPW} {
			for _, s := range []string{secret, jsonEscaped(secret)} {
				for i, b := range bodies {
					if strings.Contains(b, s) {
						t.Errorf("response %d discloses a secret: %s", i, b)
					}
				}
				if strings.Contains(logs, s) {
					t.Errorf("the log discloses a secret %q", s[:2]+"...")
				}
			}
		}
	})
}

func jsonEscaped(s string) string {
	b, _ := json.Marshal(s)
	return strings.Trim(string(b), `"`)
}

// TestBruteForceThrottled: after LoginBurst failures for one user from one
// address, every password attempt for that user from that address, even a
// correct one not verified recently, is 429 with Retry-After until a token is
// refilled. Regression for issue 16 defect 12: other users of the address
// (a NAT, an ingress), valid tokens and a password verified recently are not
// throttled with it. Failures are audited.
func TestBruteForceThrottled(t *testing.T) {
	st := openStore(t, store.DriverSQLite)
	e := newEnv(t, st, func(c *api.Config) { c.LoginBurst = 3; c.LoginRefill = 10 * time.Second })
	attacker := clientFrom(t, "127.0.0.1")
	other := clientFrom(t, "127.0.0.2")
	plain, th, err := store.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateToken(context.Background(), store.Token{ID: "nat", User: "admin", Role: store.RoleViewer, ExpiresAt: time.Now().Add(time.Hour)}, th); err != nil {
		t.Fatal(err)
	}
	// The viewer logs in before the attack: its password is then cached.
	if r := e.doClient(attacker, asViewer, "GET", "/api/v1/whoami", nil, nil); r.status != 200 {
		t.Fatalf("viewer before the attack: %d", r.status)
	}
	bad := cred{user: "admin", password: "guess"}
	for i := 0; i < 3; i++ {
		if r := e.doClient(attacker, bad, "GET", "/api/v1/whoami", nil, nil); r.status != 401 {
			t.Fatalf("failure %d: status %d", i+1, r.status)
		}
	}
	for _, c := range []cred{bad, asAdmin} {
		r := e.doClient(attacker, c, "GET", "/api/v1/whoami", nil, nil)
		if r.status != 429 || r.errorCode(t) != "too_many_requests" {
			t.Fatalf("admin after 3 failures (%s): status %d %s", c.password, r.status, r.body)
		}
		if ra := r.header.Get("Retry-After"); ra != "10" {
			t.Errorf("Retry-After %q, want 10", ra)
		}
	}
	// The same address, other users and a valid token: not throttled.
	for name, c := range map[string]cred{"operator (never logged in)": asOper, "viewer (cached)": asViewer, "token": {token: plain}} {
		if r := e.doClient(attacker, c, "GET", "/api/v1/whoami", nil, nil); r.status != 200 {
			t.Errorf("%s from the address that guessed admin: %d %s", name, r.status, r.body)
		}
	}
	if r := e.doClient(attacker, cred{user: "nobody", password: "x"}, "GET", "/api/v1/whoami", nil, nil); r.status != 401 {
		t.Errorf("another user name from the address: %d, want 401", r.status)
	}
	// Unauthenticated probes are not throttled; another address logs in.
	if r := e.doClient(attacker, anon, "GET", "/healthz", nil, nil); r.status != 200 {
		t.Errorf("healthz from a throttled address: %d", r.status)
	}
	if r := e.doClient(other, asAdmin, "GET", "/api/v1/whoami", nil, nil); r.status != 200 {
		t.Errorf("another address: %d %s", r.status, r.body)
	}
	// One refill later, one more attempt is allowed.
	e.clock.Advance(10 * time.Second)
	e.doClient(attacker, bad, "GET", "/api/v1/whoami", nil, nil)
	if r := e.doClient(attacker, bad, "GET", "/api/v1/whoami", nil, nil); r.status != 429 {
		t.Errorf("failure right after the refill: next attempt %d, want 429", r.status)
	}
	var p store.AuditPage
	r := e.doClient(other, asAdmin, "GET", "/api/v1/audit?action=api.auth", nil, nil)
	r.json(t, &p)
	fails := 0
	for _, ev := range p.Items {
		if ev.Outcome == store.OutcomeFailure && ev.Actor == "admin" && strings.Contains(ev.Detail, "127.0.0.1") {
			fails++
		}
	}
	if r.status != 200 || fails != 4 {
		t.Errorf("%d api.auth failures of admin from 127.0.0.1 audited, want 4: %+v", fails, p.Items)
	}
	m := string(e.must(200, anon, "GET", "/metrics", nil).body)
	if !strings.Contains(m, `vectis_api_auth_failures_total{reason="invalid"} 5`) ||
		!strings.Contains(m, `vectis_api_auth_failures_total{reason="throttled"} 3`) {
		t.Errorf("auth failure metrics:\n%s", grep(m, "auth_failures"))
	}
}

// Many user names from one address still meet the address's own bucket
// (ten times the burst).
func TestUserSprayThrottledPerAddress(t *testing.T) {
	st := openStore(t, store.DriverSQLite)
	e := newEnv(t, st, func(c *api.Config) { c.LoginBurst = 2; c.LoginRefill = time.Minute })
	attacker := clientFrom(t, "127.0.0.1")
	statuses := map[int]int{}
	for i := range 25 {
		r := e.doClient(attacker, cred{user: fmt.Sprintf("user%d", i), password: "x"}, "GET", "/api/v1/whoami", nil, nil)
		statuses[r.status]++
	}
	if statuses[401] != 20 || statuses[429] != 5 {
		t.Errorf("25 user names from one address: %v, want 20 x 401 then 429", statuses)
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestUnknownUserLooksLikeWrongPassword: both get the same 401 body, so the
// answer does not reveal which user names exist.
func TestUnknownUserLooksLikeWrongPassword(t *testing.T) {
	st := openStore(t, store.DriverSQLite)
	e := newEnv(t, st)
	e.must(201, asAdmin, "PUT", "/api/v1/users/alice", map[string]any{"role": "viewer", "password": "alice-password-1"})
	a := e.must(401, cred{user: "alice", password: "wrong"}, "GET", "/api/v1/whoami", nil)
	b := e.must(401, cred{user: "mallory", password: "wrong"}, "GET", "/api/v1/whoami", nil)
	c := e.must(401, cred{user: "admin", password: "wrong"}, "GET", "/api/v1/whoami", nil)
	if string(a.body) != string(b.body) || string(b.body) != string(c.body) {
		t.Errorf("401 bodies differ: %s / %s / %s", a.body, b.body, c.body)
	}
}

func TestMalformedAndOversizedBodies(t *testing.T) {
	backends(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st, func(c *api.Config) { c.MaxBodyBytes = 4096 })
		big := `{"id": "BIG", "description": "` + strings.Repeat("x", 5000) + `"}`
		cases := []struct {
			name, method, path string
			body               string
			ctype              string
			status             int
			code               string
		}{
			{"oversized", "POST", "/api/v1/partners", big, "application/json", 413, "request_too_large"},
			{"oversized password", "PUT", "/api/v1/partners/P/password", big, "application/json", 413, "request_too_large"},
			{"malformed", "POST", "/api/v1/partners", `{"id": "X",`, "application/json", 400, "bad_request"},
			{"not an object", "POST", "/api/v1/files", `[1,2]`, "application/json", 400, "invalid"},
			{"empty", "POST", "/api/v1/servers", ``, "application/json", 400, "bad_request"},
			{"garbage", "POST", "/api/v1/servers", "\x00\x01\x02", "application/json", 400, "bad_request"},
			{"trailing", "POST", "/api/v1/servers", `{"id":"S","listen":":1"}{}`, "application/json", 400, "bad_request"},
			{"unknown field", "POST", "/api/v1/servers", `{"id":"S","listen":":1","port":5}`, "application/json", 400, "invalid"},
			{"wrong type", "POST", "/api/v1/servers", `{"id":"S","listen":5000}`, "application/json", 400, "invalid"},
			{"form post", "POST", "/api/v1/servers", `id=S&listen=:1`, "application/x-www-form-urlencoded", 415, "unsupported_media_type"},
			{"text/plain", "POST", "/api/v1/tokens", `{"role":"admin"}`, "text/plain", 415, "unsupported_media_type"},
			{"no content type", "PUT", "/api/v1/users/bob", `{"role":"admin","password":"0123456789abc"}`, "", 415, "unsupported_media_type"},
		}
		for _, c := range cases {
			req, _ := http.NewRequest(c.method, e.srv.URL+c.path, strings.NewReader(c.body))
			if c.ctype != "" {
				req.Header.Set("Content-Type", c.ctype)
			}
			req.SetBasicAuth("admin", adminPW)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var body struct{ Error, Message string }
			_ = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if resp.StatusCode != c.status || body.Error != c.code || body.Message == "" {
				t.Errorf("%s: %d %+v, want %d %s", c.name, resp.StatusCode, body, c.status, c.code)
			}
		}
		// Nothing was created.
		for _, p := range []string{"/api/v1/partners", "/api/v1/servers", "/api/v1/files", "/api/v1/tokens"} {
			var l struct{ Total int }
			e.must(200, asAdmin, "GET", p, nil).json(t, &l)
			if l.Total != 0 {
				t.Errorf("%s holds %d objects after refused requests", p, l.Total)
			}
		}
		// Unknown routes and methods answer JSON too.
		if code := e.must(404, asAdmin, "GET", "/api/v1/nothing", nil).errorCode(t); code != "not_found" {
			t.Errorf("unknown route: %s", code)
		}
		r := e.must(405, asAdmin, "PATCH", "/api/v1/partners/P1", nil)
		if r.header.Get("Allow") != "GET, PUT, DELETE" || r.errorCode(t) != "method_not_allowed" {
			t.Errorf("405: Allow %q %s", r.header.Get("Allow"), r.body)
		}
	})
}

// TestInputValidation: ids within PeSIT limits, directories that cannot be
// escaped, ports in range; each refusal is a 400 that says what is wrong.
func TestInputValidation(t *testing.T) {
	backends(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		bad := []struct {
			path string
			body map[string]any
			says string
		}{
			{"/api/v1/partners", map[string]any{"id": strings.Repeat("P", 25), "password": "x"}, "at most 24"},
			{"/api/v1/partners", map[string]any{"id": "", "password": "x"}, "required"},
			{"/api/v1/partners", map[string]any{"id": "HAS SPACE", "password": "x"}, "printable ASCII"},
			{"/api/v1/partners", map[string]any{"id": "é", "password": "x"}, "printable ASCII"},
			{"/api/v1/partners", map[string]any{"id": "../etc", "password": "x"}, "path separator"},
			{"/api/v1/partners", map[string]any{"id": "P", "password": "x", "access": "all"}, "read, write or both"},
			{"/api/v1/partners", map[string]any{"id": "P", "password": "x", "maxSessions": -1}, "maxSessions"},
			{"/api/v1/partners", map[string]any{"id": "P", "password": "x", "files": []string{"a/b"}}, "path separator"},
			{"/api/v1/partners", map[string]any{"id": "P", "certSHA256": "abc"}, "64 hex"},
			{"/api/v1/partners", map[string]any{"id": "P", "certSHA256": []string{strings.Repeat("a", 64), "abc"}}, "64 hex"},
			{"/api/v1/servers", map[string]any{"id": "S", "listen": ":5000", "tls": map[string]any{"clientAuth": "always"}}, "clientAuth"},
			{"/api/v1/servers", map[string]any{"id": "S", "listen": ":5000", "tls": map[string]any{"clientAuth": "require"}}, "needs clientCAFile"},
			{"/api/v1/servers", map[string]any{"id": strings.Repeat("S", 25), "listen": ":5000"}, "at most 24"},
			{"/api/v1/servers", map[string]any{"id": "S", "listen": ":0"}, "1 to 65535"},
			{"/api/v1/servers", map[string]any{"id": "S", "listen": ":65536"}, "1 to 65535"},
			{"/api/v1/servers", map[string]any{"id": "S", "listen": "5000"}, "host:port"},
			{"/api/v1/servers", map[string]any{"id": "S", "listen": ":5000", "tls": map[string]any{"listen": ":99999", "certFile": "c", "keyFile": "k"}}, "1 to 65535"},
			{"/api/v1/servers", map[string]any{"id": "S", "listen": ":5000", "tls": map[string]any{"listen": ":5001", "certFile": "/etc/../../x", "keyFile": "k"}}, `".."`},
			{"/api/v1/files", map[string]any{"id": strings.Repeat("F", 77), "direction": "send", "sendDir": "/o"}, "at most 76"},
			{"/api/v1/files", map[string]any{"id": "F", "direction": "sideways", "sendDir": "/o"}, "receive, send or both"},
			{"/api/v1/files", map[string]any{"id": "F", "direction": "receive"}, "receiveDir is required"},
			{"/api/v1/files", map[string]any{"id": "F", "direction": "receive", "receiveDir": "/data/in", "namePattern": "../escape"}, `".."`},
			{"/api/v1/files", map[string]any{"id": "F", "direction": "receive", "receiveDir": "/data/in", "namePattern": "a/../../b"}, `".."`},
			{"/api/v1/files", map[string]any{"id": "F", "direction": "receive", "receiveDir": "/data/in", "namePattern": "/etc/passwd"}, "relative"},
			{"/api/v1/files", map[string]any{"id": "F", "direction": "receive", "receiveDir": "/data/in", "namePattern": `..\x`}, `'\'`},
			{"/api/v1/files", map[string]any{"id": "F", "direction": "receive", "receiveDir": "/data/in", "namePattern": "${home}/x"}, "unknown placeholder"},
			{"/api/v1/files", map[string]any{"id": "F", "direction": "receive", "receiveDir": "/data/in", "namePattern": "a//b"}, "clean"},
			{"/api/v1/files", map[string]any{"id": "F", "direction": "receive", "receiveDir": "/data/../etc"}, `".."`},
			{"/api/v1/files", map[string]any{"id": "F", "direction": "send", "sendDir": "../../etc"}, `".."`},
			{"/api/v1/files", map[string]any{"id": "F", "direction": "send", "sendDir": "/o", "recordLength": 70000}, "recordLength"},
			{"/api/v1/files", map[string]any{"id": "F", "direction": "send", "sendDir": "/o", "dataCode": "utf8"}, "ascii, ebcdic or binary"},
		}
		for _, c := range bad {
			r := e.do(asAdmin, "POST", c.path, c.body)
			var body struct{ Error, Message string }
			r.json(t, &body)
			if r.status != 400 || body.Error != "invalid" || !strings.Contains(body.Message, c.says) {
				t.Errorf("POST %s %v: %d %s, want 400 invalid saying %q", c.path, c.body, r.status, r.body, c.says)
			}
		}
		// Path traversal in the URL never reaches the store.
		for _, p := range []string{
			"/api/v1/files/..%2F..%2Fetc%2Fpasswd", "/api/v1/files/%2E%2E", "/api/v1/partners/a%2Fb",
			"/api/v1/servers/" + strings.Repeat("S", 25), "/api/v1/files/x%00y",
		} {
			r := e.do(asAdmin, "GET", p, nil)
			if r.status != 400 {
				t.Errorf("GET %s: %d %s, want 400", p, r.status, r.body)
			}
		}
		// The raw "../" form is cleaned by the router and redirected, never served.
		noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		r := e.doClient(noRedirect, asAdmin, "GET", "/api/v1/files/../../../etc/passwd", nil, nil)
		if r.status == 200 {
			t.Errorf("raw traversal served: %s", r.body)
		}
		// Valid edge values pass: 24-char ids, ports 1 and 65535.
		e.must(201, asAdmin, "POST", "/api/v1/partners", map[string]any{"id": strings.Repeat("P", 24), "password": "12345678"})
		e.must(201, asAdmin, "POST", "/api/v1/servers", map[string]any{"id": strings.Repeat("S", 24), "listen": "127.0.0.1:65535"})
		e.must(201, asAdmin, "POST", "/api/v1/servers", map[string]any{"id": "LOW", "listen": ":1"})
		e.must(201, asAdmin, "POST", "/api/v1/files", map[string]any{"id": "F-OK", "direction": "receive", "receiveDir": "data/in", "namePattern": "${partner}/${date}/${file}.${uuid}"})
	})
}

func TestCrossSiteWritesRefused(t *testing.T) {
	st := openStore(t, store.DriverSQLite)
	e := newEnv(t, st)
	e.must(201, asAdmin, "POST", "/api/v1/servers", map[string]any{"id": "S", "listen": ":5000"})
	// A browser page on another site posting with cached basic credentials.
	r := e.doClient(http.DefaultClient, asAdmin, "POST", "/api/v1/servers/S/stop", nil, map[string]string{"Sec-Fetch-Site": "cross-site"})
	if r.status != 403 {
		t.Errorf("cross-site POST: %d %s", r.status, r.body)
	}
	r = e.doClient(http.DefaultClient, asAdmin, "DELETE", "/api/v1/servers/S", nil, map[string]string{"Origin": "https://evil.example"})
	if r.status != 403 {
		t.Errorf("cross-origin DELETE: %d %s", r.status, r.body)
	}
	if len(e.servers.calls) != 0 {
		t.Errorf("server calls %v", e.servers.calls)
	}
	// Reads and same-origin writes work.
	e.doClient(http.DefaultClient, asAdmin, "GET", "/api/v1/servers/S", nil, map[string]string{"Sec-Fetch-Site": "cross-site"})
	r = e.doClient(http.DefaultClient, asAdmin, "POST", "/api/v1/servers/S/stop", nil, map[string]string{"Sec-Fetch-Site": "same-origin"})
	if r.status != 200 {
		t.Errorf("same-origin POST: %d", r.status)
	}
}

// TestTokensAndStoredUsers: an admin creates a stored user and a token; both
// authenticate with their role; revocation, expiry and deletion take effect
// at once; the token appears only in its creation response.
func TestTokensAndStoredUsers(t *testing.T) {
	backends(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st, func(c *api.Config) { c.LoginBurst = 100 })
		e.must(201, asAdmin, "POST", "/api/v1/servers", map[string]any{"id": "S", "listen": ":5000"})
		// Stored user.
		e.must(201, asAdmin, "PUT", "/api/v1/users/alice", map[string]any{"role": "operator", "password": "alice-password-1"})
		alice := cred{user: "alice", password: "alice-password-1"}
		var who api.Principal
		e.must(200, alice, "GET", "/api/v1/whoami", nil).json(t, &who)
		if who.Name != "alice" || who.Role != store.RoleOperator || who.Method != "basic" {
			t.Errorf("whoami %+v", who)
		}
		e.must(200, alice, "POST", "/api/v1/servers/S/start", nil)
		e.must(403, alice, "DELETE", "/api/v1/servers/S", nil)
		e.must(400, asAdmin, "PUT", "/api/v1/users/bob", map[string]any{"role": "viewer", "password": "short"})
		e.must(400, asAdmin, "PUT", "/api/v1/users/bob", map[string]any{"role": "god", "password": "long-enough-pass"})
		e.must(409, asAdmin, "PUT", "/api/v1/users/admin", map[string]any{"role": "viewer", "password": "long-enough-pass"})
		e.must(409, asAdmin, "DELETE", "/api/v1/users/viewer", nil)
		// Role change applies at once; so does a password change.
		e.must(200, asAdmin, "PUT", "/api/v1/users/alice", map[string]any{"role": "viewer", "password": "alice-password-2"})
		e.must(401, alice, "GET", "/api/v1/whoami", nil)
		alice.password = "alice-password-2"
		e.must(403, alice, "POST", "/api/v1/servers/S/start", nil)
		var users struct {
			Items []struct{ Name, Role, Source string }
		}
		e.must(200, asAdmin, "GET", "/api/v1/users", nil).json(t, &users)
		if fmt.Sprint(users.Items) != "[{admin admin config} {alice viewer store} {operator operator config} {viewer viewer config}]" {
			t.Errorf("users %v", users.Items)
		}

		// Tokens.
		var tok struct {
			ID, Token, Role, User string
			ExpiresAt             time.Time
		}
		e.must(201, asAdmin, "POST", "/api/v1/tokens", map[string]any{"role": "operator", "expiresIn": "1h"}).json(t, &tok)
		if !strings.HasPrefix(tok.Token, "vt_") || tok.Role != "operator" || tok.User != "admin" || tok.ExpiresAt.IsZero() {
			t.Fatalf("token %+v", tok)
		}
		bearer := cred{token: tok.Token}
		e.must(200, bearer, "GET", "/api/v1/whoami", nil).json(t, &who)
		if who.Role != store.RoleOperator || who.Method != "token" || who.TokenID != tok.ID {
			t.Errorf("whoami by token %+v", who)
		}
		e.must(200, bearer, "POST", "/api/v1/servers/S/stop", nil)
		e.must(403, bearer, "POST", "/api/v1/tokens", map[string]any{"role": "admin"})
		list := string(e.must(200, asAdmin, "GET", "/api/v1/tokens", nil).body)
		if strings.Contains(list, tok.Token) || strings.Contains(list, store.HashToken(tok.Token)) || !strings.Contains(list, tok.ID) {
			t.Errorf("token list %s", list)
		}
		// Expiry (by the API's clock) and revocation.
		e.clock.Advance(61 * time.Minute)
		e.must(401, bearer, "GET", "/api/v1/whoami", nil)
		e.clock.Advance(-61 * time.Minute)
		e.must(200, bearer, "GET", "/api/v1/whoami", nil)
		e.must(204, asAdmin, "DELETE", "/api/v1/tokens/"+tok.ID, nil)
		e.must(401, bearer, "GET", "/api/v1/whoami", nil)
		e.must(404, asAdmin, "DELETE", "/api/v1/tokens/"+tok.ID, nil)
		e.must(401, cred{token: "vt_" + strings.Repeat("A", 43)}, "GET", "/api/v1/whoami", nil)
		e.must(401, cred{token: "not-a-token"}, "GET", "/api/v1/whoami", nil)
		for _, body := range []map[string]any{
			{"role": "root"}, {"role": "viewer", "expiresIn": "-1h"}, {"role": "viewer", "expiresIn": "soon"},
			{"role": "viewer", "expiresAt": "2001-01-01T00:00:00Z"}, {"role": "viewer", "expiresIn": "1h", "expiresAt": "2100-01-01T00:00:00Z"},
		} {
			e.must(400, asAdmin, "POST", "/api/v1/tokens", body)
		}
		// Deleting a user deletes its tokens and its access.
		e.must(200, asAdmin, "PUT", "/api/v1/users/alice", map[string]any{"role": "admin", "password": "alice-password-2"})
		var at struct{ Token string }
		e.must(201, alice, "POST", "/api/v1/tokens", map[string]any{"role": "viewer"}).json(t, &at)
		e.must(200, cred{token: at.Token}, "GET", "/api/v1/whoami", nil)
		// Demoting the owner demotes its token.
		var atAdmin struct{ Token string }
		e.must(201, alice, "POST", "/api/v1/tokens", map[string]any{"role": "admin"}).json(t, &atAdmin)
		e.must(200, cred{token: atAdmin.Token}, "GET", "/api/v1/tokens", nil)
		e.must(200, asAdmin, "PUT", "/api/v1/users/alice", map[string]any{"role": "viewer", "password": "alice-password-2"})
		e.must(403, cred{token: atAdmin.Token}, "GET", "/api/v1/tokens", nil)
		e.must(200, cred{token: atAdmin.Token}, "GET", "/api/v1/whoami", nil).json(t, &who)
		if who.Role != store.RoleViewer {
			t.Errorf("token of a demoted admin acts as %s", who.Role)
		}
		e.must(204, asAdmin, "DELETE", "/api/v1/users/alice", nil)
		e.must(401, cred{token: atAdmin.Token}, "GET", "/api/v1/whoami", nil)
		e.must(401, alice, "GET", "/api/v1/whoami", nil)
		e.must(401, cred{token: at.Token}, "GET", "/api/v1/whoami", nil)
		e.must(404, asAdmin, "GET", "/api/v1/users/alice", nil)
	})
}

// TestStoreUnavailable: with PostgreSQL down, reads and writes answer 503
// (configured users still authenticate), and the API recovers when it is
// back.
func TestStoreUnavailable(t *testing.T) {
	pg := pgtest.NewServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := store.Open(ctx, store.Config{URL: pg.NewDatabase(t), ConnectTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	e := newEnv(t, st)
	e.must(201, asAdmin, "POST", "/api/v1/files", map[string]any{"id": "F", "direction": "send", "sendDir": "/o"})
	pg.Stop(t)
	for _, c := range []struct{ method, path string }{{"GET", "/api/v1/files"}, {"GET", "/api/v1/files/F"}, {"DELETE", "/api/v1/files/F"}} {
		r := e.do(asAdmin, c.method, c.path, nil)
		if r.status != 503 || r.errorCode(t) != "unavailable" {
			t.Errorf("%s %s with the database down: %d %s", c.method, c.path, r.status, r.body)
		}
	}
	pg.Start(t)
	testenv.Eventually(t, 20*time.Second, func() error {
		if r := e.do(asAdmin, "GET", "/api/v1/files/F", nil); r.status != 200 {
			return fmt.Errorf("API did not recover: %d %s", r.status, r.body)
		}
		return nil
	})
}

// TestParallelGuessesBounded: a burst of parallel wrong logins from one
// address cannot all be checked: the throttle and the bounded verification
// slots let only a handful through to a password check, the rest get 429.
func TestParallelGuessesBounded(t *testing.T) {
	st := openStore(t, store.DriverSQLite)
	e := newEnv(t, st, func(c *api.Config) { c.LoginBurst = 3; c.LoginRefill = time.Hour })
	const n = 24
	codes := make(chan int, n)
	for i := 0; i < n; i++ {
		go func() {
			req, _ := http.NewRequest("GET", e.srv.URL+"/api/v1/whoami", nil)
			req.SetBasicAuth("admin", fmt.Sprintf("guess-%d", i))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				codes <- 0
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	count := map[int]int{}
	for i := 0; i < n; i++ {
		count[<-codes]++
	}
	if count[401]+count[429] != n || count[429] == 0 {
		t.Fatalf("status counts %v", count)
	}
	// Every 401 was a real check; the throttle lets the burst plus what was
	// already admitted while the first checks ran (at most the slots).
	t.Logf("status counts %v", count)
	if count[401] > 3+4 {
		t.Errorf("%d guesses were checked, want at most burst+slots = 7 (%v)", count[401], count)
	}
	http.DefaultClient.CloseIdleConnections()
}
