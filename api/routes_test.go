package api_test

import (
	"context"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/store"
)

// who makes a request in the role matrix.
var everyone = []struct {
	name string
	role store.Role // "" = anonymous
}{{"anon", ""}, {"viewer", store.RoleViewer}, {"operator", store.RoleOperator}, {"admin", store.RoleAdmin}}

func rank(r store.Role) int {
	return map[store.Role]int{store.RoleViewer: 1, store.RoleOperator: 2, store.RoleAdmin: 3}[r]
}

// routeCase is one route of the API, how to call it successfully as a given
// caller, and the success status.
type routeCase struct {
	method, pattern string
	role            store.Role // weakest role allowed; "" public
	call            func(who string) (path string, body any)
	ok              int
}

func fixed(path string) func(string) (string, any) {
	return func(string) (string, any) { return path, nil }
}

func routeCases() []routeCase {
	const (
		V = store.RoleViewer
		O = store.RoleOperator
		A = store.RoleAdmin
	)
	return []routeCase{
		{"GET", "/healthz", "", fixed("/healthz"), 200},
		{"GET", "/readyz", "", fixed("/readyz"), 200},
		{"GET", "/metrics", "", fixed("/metrics"), 200},
		{"GET", "/api/openapi.yaml", "", fixed("/api/openapi.yaml"), 200},
		{"GET", "/api/cluster/status", V, fixed("/api/cluster/status"), 200},
		{"GET", "/api/v1/whoami", V, fixed("/api/v1/whoami"), 200},

		{"GET", "/api/v1/partners", V, fixed("/api/v1/partners"), 200},
		{"POST", "/api/v1/partners", A, func(w string) (string, any) {
			return "/api/v1/partners", map[string]any{"id": "PN_" + w, "password": "pw-" + w[:3], "access": "both"}
		}, 201},
		{"GET", "/api/v1/partners/{id}", V, fixed("/api/v1/partners/P1"), 200},
		{"PUT", "/api/v1/partners/{id}", A, func(w string) (string, any) {
			return "/api/v1/partners/P1", map[string]any{"description": "by " + w, "access": "read", "maxSessions": 3}
		}, 200},
		{"DELETE", "/api/v1/partners/{id}", A, func(w string) (string, any) { return "/api/v1/partners/PDEL_" + w, nil }, 204},
		{"PUT", "/api/v1/partners/{id}/password", A, func(w string) (string, any) {
			return "/api/v1/partners/P1/password", map[string]any{"password": "np-" + w[:3]}
		}, 204},

		{"GET", "/api/v1/files", V, fixed("/api/v1/files"), 200},
		{"POST", "/api/v1/files", A, func(w string) (string, any) {
			return "/api/v1/files", map[string]any{"id": "FN_" + w, "direction": "receive", "receiveDir": "/srv/in", "namePattern": "${partner}/${file}-${transferId}"}
		}, 201},
		{"GET", "/api/v1/files/{id}", V, fixed("/api/v1/files/F1"), 200},
		{"PUT", "/api/v1/files/{id}", A, func(w string) (string, any) {
			return "/api/v1/files/F1", map[string]any{"direction": "send", "sendDir": "/srv/out", "description": "by " + w}
		}, 200},
		{"DELETE", "/api/v1/files/{id}", A, func(w string) (string, any) { return "/api/v1/files/FDEL_" + w, nil }, 204},

		{"GET", "/api/v1/servers", V, fixed("/api/v1/servers"), 200},
		{"POST", "/api/v1/servers", A, func(w string) (string, any) {
			return "/api/v1/servers", map[string]any{"id": "SN_" + w, "listen": ":6001"}
		}, 201},
		{"GET", "/api/v1/servers/{id}", V, fixed("/api/v1/servers/S1"), 200},
		{"PUT", "/api/v1/servers/{id}", A, func(w string) (string, any) {
			return "/api/v1/servers/S1", map[string]any{"listen": "127.0.0.1:5002", "description": "by " + w}
		}, 200},
		{"DELETE", "/api/v1/servers/{id}", A, func(w string) (string, any) { return "/api/v1/servers/SDEL_" + w, nil }, 204},
		{"POST", "/api/v1/servers/{id}/start", O, fixed("/api/v1/servers/S1/start"), 200},
		{"POST", "/api/v1/servers/{id}/stop", O, fixed("/api/v1/servers/S1/stop"), 200},

		{"GET", "/api/v1/transfers", V, fixed("/api/v1/transfers?status=completed"), 200},
		{"GET", "/api/v1/transfers/stats", V, fixed("/api/v1/transfers/stats"), 200},
		{"GET", "/api/v1/transfers/{id}", V, fixed("/api/v1/transfers/T_done"), 200},
		{"POST", "/api/v1/transfers/{id}/cancel", O, func(w string) (string, any) { return "/api/v1/transfers/T_live_" + w + "/cancel", nil }, 202},

		{"GET", "/api/v1/audit", V, fixed("/api/v1/audit?limit=5"), 200},

		{"GET", "/api/v1/users", A, fixed("/api/v1/users"), 200},
		{"GET", "/api/v1/users/{name}", A, fixed("/api/v1/users/viewer"), 200},
		{"PUT", "/api/v1/users/{name}", A, func(w string) (string, any) {
			return "/api/v1/users/un-" + w, map[string]any{"role": "viewer", "password": "a-long-enough-password"}
		}, 201},
		{"DELETE", "/api/v1/users/{name}", A, func(w string) (string, any) { return "/api/v1/users/del-" + w, nil }, 204},

		{"GET", "/api/v1/tokens", A, fixed("/api/v1/tokens"), 200},
		{"POST", "/api/v1/tokens", A, func(string) (string, any) {
			return "/api/v1/tokens", map[string]any{"role": "viewer", "expiresIn": "1h"}
		}, 201},
		{"DELETE", "/api/v1/tokens/{id}", A, func(w string) (string, any) { return "/api/v1/tokens/tok-" + w, nil }, 204},
	}
}

// matrixFixtures creates what every caller of the matrix acts on.
func matrixFixtures(t *testing.T, st *store.Store, e *env) {
	t.Helper()
	ctx := context.Background()
	mustDo := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	hash, err := store.HashPassword("pw1")
	mustDo(err)
	_, err = st.CreatePartner(ctx, store.Partner{ID: "P1", Enabled: true, Access: store.AccessBoth}, hash)
	mustDo(err)
	_, err = st.CreateFile(ctx, store.VirtualFile{ID: "F1", Direction: store.FileReceive, ReceiveDir: "/srv/in", RecordFormat: store.RecordVariable, DataCode: store.DataBinary})
	mustDo(err)
	_, err = st.CreateServer(ctx, store.Server{ID: "S1", Listen: ":5000", AutoStart: true})
	mustDo(err)
	claim(t, st)
	newTransfer(t, st, store.Transfer{ID: "T_done", PartnerID: "P1", FileID: "F1", Status: store.StatusCompleted, Bytes: 10})
	for _, w := range everyone {
		_, err = st.CreatePartner(ctx, store.Partner{ID: "PDEL_" + w.name, Enabled: true, Access: store.AccessBoth}, hash)
		mustDo(err)
		_, err = st.CreateFile(ctx, store.VirtualFile{ID: "FDEL_" + w.name, Direction: store.FileSend, SendDir: "/srv/out", RecordFormat: store.RecordVariable, DataCode: store.DataBinary})
		mustDo(err)
		_, err = st.CreateServer(ctx, store.Server{ID: "SDEL_" + w.name, Listen: ":5001"})
		mustDo(err)
		newTransfer(t, st, store.Transfer{ID: "T_live_" + w.name, PartnerID: "P1", FileID: "F1"})
		e.cancel.live["T_live_"+w.name] = true
		_, err = st.PutUser(ctx, store.User{Name: "del-" + w.name, Role: store.RoleViewer}, hash)
		mustDo(err)
		_, tokHash, err := store.NewToken()
		mustDo(err)
		_, err = st.CreateToken(ctx, store.Token{ID: "tok-" + w.name, User: "admin", Role: store.RoleViewer, ExpiresAt: time.Now().Add(time.Hour)}, tokHash)
		mustDo(err)
	}
}

// TestEveryRouteEveryRole calls every route of the API as an anonymous
// client and as each role: a role below the route's gets 401 (anonymous) or
// 403 and changes nothing; a sufficient role gets the success status.
func TestEveryRouteEveryRole(t *testing.T) {
	backends(t, func(t *testing.T, st *store.Store) {
		e := newEnv(t, st)
		matrixFixtures(t, st, e)
		cases := routeCases()

		// The matrix covers exactly the routes the API serves.
		var served, tested []string
		for _, r := range e.api.Routes() {
			served = append(served, r.Method+" "+r.Path+" "+string(r.Role))
		}
		for _, c := range cases {
			tested = append(tested, c.method+" "+c.pattern+" "+string(c.role))
		}
		sort.Strings(served)
		sort.Strings(tested)
		if strings.Join(served, "\n") != strings.Join(tested, "\n") {
			t.Fatalf("routes served (with role):\n%s\n\nroutes tested:\n%s", strings.Join(served, "\n"), strings.Join(tested, "\n"))
		}

		for _, c := range cases {
			for _, w := range everyone {
				path, body := c.call(w.name)
				r := e.do(roleCred(w.role), c.method, path, body)
				allowed := c.role == "" || (w.role != "" && rank(w.role) >= rank(c.role))
				want := c.ok
				switch {
				case allowed:
				case w.role == "":
					want = http.StatusUnauthorized
				default:
					want = http.StatusForbidden
				}
				if r.status != want {
					t.Errorf("%s %s as %s: status %d, want %d: %.300s", c.method, path, w.name, r.status, want, r.body)
					continue
				}
				if r.status >= 400 {
					code := r.errorCode(t)
					if (want == 401 && code != "unauthorized") || (want == 403 && code != "forbidden") {
						t.Errorf("%s %s as %s: error code %q", c.method, path, w.name, code)
					}
					if want == 401 && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Basic") {
						t.Errorf("%s %s: 401 without WWW-Authenticate", c.method, path)
					}
				}
			}
		}

		// Refused deletes left their objects; allowed ones removed theirs.
		ctx := context.Background()
		for _, w := range everyone {
			_, errP := st.GetPartner(ctx, "PDEL_"+w.name)
			_, errU := st.GetUser(ctx, "del-"+w.name)
			_, errS := st.GetServer(ctx, "SDEL_"+w.name)
			gone := w.role == store.RoleAdmin
			for what, err := range map[string]error{"partner": errP, "user": errU, "server": errS} {
				if gone != (err != nil) {
					t.Errorf("%s delete by %s: store error after = %v, want gone=%v", what, w.name, err, gone)
				}
			}
		}
		e.cancel.mu.Lock()
		cancelled := strings.Join(e.cancel.cancelled, ",")
		e.cancel.mu.Unlock()
		if cancelled != "T_live_operator,T_live_admin" {
			t.Errorf("cancelled sessions %q, want those of the operator and the admin only", cancelled)
		}
		// Denials are audited.
		var page store.AuditPage
		e.must(200, asAdmin, "GET", "/api/v1/audit?outcome=denied&actor=viewer&limit=1000", nil).json(t, &page)
		if len(page.Items) == 0 {
			t.Error("no denied audit event for the viewer's refused writes")
		}
	})
}
