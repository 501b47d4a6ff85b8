package api_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/vectis-ft/vectis/store"
)

// Regression for issue 16 defect 2: invented HTTP methods must not make new
// metric series. Before the fix every method was a label value, and 20,000
// of them made /metrics 27 MB.
func TestInventedMethodsKeepMetricsBounded(t *testing.T) {
	e := newEnv(t, openStore(t, store.DriverSQLite))
	e.do(anon, "GET", "/healthz", nil)
	before := len(e.must(200, anon, "GET", "/metrics", nil).body)
	for i := range 300 {
		m := fmt.Sprintf("X%05dMETHOD%s", i, strings.Repeat("Z", i%50))
		if r := e.do(anon, m, "/api/v1/partners", nil); r.status < 400 {
			t.Fatalf("method %s answered %d", m, r.status)
		}
		e.do(anon, m, fmt.Sprintf("/no/such/%d", i), nil)
	}
	body := string(e.must(200, anon, "GET", "/metrics", nil).body)
	if strings.Contains(body, "METHOD") {
		t.Errorf("an invented method is a label value:\n%s", grep(body, "METHOD"))
	}
	if !strings.Contains(body, `method="other"`) {
		t.Errorf("invented methods not counted as other:\n%s", grep(body, "vectis_api_requests_total"))
	}
	if grow := len(body) - before; grow > 10<<10 {
		t.Errorf("/metrics grew by %d bytes after 600 requests with invented methods, want < 10 KB", grow)
	}
}
