package api_test

import (
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/vectis-ft/vectis/api"
	"github.com/vectis-ft/vectis/store"
)

type openAPIDoc struct {
	OpenAPI  string                    `yaml:"openapi"`
	Security []map[string][]string     `yaml:"security"`
	Paths    map[string]map[string]any `yaml:"paths"`
}

// TestOpenAPIMatchesRoutes: every route the API serves is documented with
// the same method and path, every documented operation is routed (a request
// to it does not fall through to the unmatched handler), and an operation is
// documented without security exactly when the route needs no
// authentication.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	st := openStore(t, store.DriverSQLite)
	e := newEnv(t, st)
	served := e.must(200, anon, "GET", "/api/openapi.yaml", nil)
	if string(served.body) != string(api.OpenAPI()) {
		t.Fatal("/api/openapi.yaml differs from the embedded document")
	}
	var doc openAPIDoc
	if err := yaml.Unmarshal(served.body, &doc); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") || len(doc.Security) == 0 {
		t.Fatalf("not an OpenAPI 3 document with a default security: %q", doc.OpenAPI)
	}
	documented := map[string]bool{} // "GET /path" -> public
	for path, item := range doc.Paths {
		for method, v := range item {
			if method == "parameters" {
				continue
			}
			op, ok := v.(map[string]any)
			if !ok {
				t.Errorf("%s %s is not an operation object", method, path)
				continue
			}
			sec, has := op["security"]
			public := has && len(sec.([]any)) == 0
			documented[strings.ToUpper(method)+" "+path] = public
			if _, ok := op["responses"]; !ok {
				t.Errorf("%s %s documents no responses", method, path)
			}
		}
	}
	routed := map[string]bool{}
	for _, r := range e.api.Routes() {
		routed[r.Method+" "+r.Path] = r.Role == ""
	}
	var missing, extra []string
	for k, public := range routed {
		docPublic, ok := documented[k]
		switch {
		case !ok:
			missing = append(missing, k)
		case docPublic != public:
			t.Errorf("%s: documented public=%v, served public=%v", k, docPublic, public)
		}
	}
	for k := range documented {
		if _, ok := routed[k]; !ok {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 {
		t.Errorf("served but not documented:\n  %s", strings.Join(missing, "\n  "))
	}
	if len(extra) > 0 {
		t.Errorf("documented but not served:\n  %s", strings.Join(extra, "\n  "))
	}
	// Independently of Routes(): each documented operation reaches a handler
	// in the real mux, not the unmatched one (404 no such endpoint / 405).
	for k := range documented {
		method, path, _ := strings.Cut(k, " ")
		path = strings.NewReplacer("{id}", "X1", "{name}", "nobody").Replace(path)
		r := e.do(asAdmin, method, path, nil)
		if r.status == 405 || (r.status == 404 && strings.Contains(string(r.body), "no such endpoint")) {
			t.Errorf("documented %s is not routed: %d %s", k, r.status, r.body)
		}
	}
}
