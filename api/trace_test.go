package api_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/api"
	"github.com/vectis-ft/vectis/store"
	"github.com/vectis-ft/vectis/telemetry"
	"github.com/vectis-ft/vectis/telemetry/otlptest"
)

// TestRequestSpans: with OTLP configured, every request is a server span
// named after its route, carrying method, route, status and caller; no span
// carries a secret.
func TestRequestSpans(t *testing.T) {
	rcv := otlptest.Start(t)
	rcv.SetEnv(t, "grpc")
	tp, shutdown, err := telemetry.NewTracerProvider(context.Background(), telemetry.TraceConfig{InstanceID: "vectis-0"})
	if err != nil {
		t.Fatal(err)
	}
	st := openStore(t, store.DriverSQLite)
	e := newEnv(t, st, func(c *api.Config) { c.TracerProvider = tp })
	const pw = "S3cr#t!x"
	e.must(201, asAdmin, "POST", "/api/v1/partners", map[string]any{"id": "TRACED", "password": pw})
	e.must(204, asAdmin, "PUT", "/api/v1/partners/TRACED/password", map[string]any{"password": pw})
	e.must(401, cred{user: "admin", password: pw}, "GET", "/api/v1/partners/TRACED", nil)
	if err := shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	s, err := rcv.WaitForSpan("POST /api/v1/partners", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if s.Kind != "SPAN_KIND_SERVER" || s.Attributes["http.route"] != "/api/v1/partners" ||
		s.Attributes["http.response.status_code"] != "201" || s.Attributes["enduser.id"] != "admin" ||
		s.Resource["service.name"] != "vectis" || s.Resource["service.instance.id"] != "vectis-0" {
		t.Errorf("span %+v", s)
	}
	if _, err := rcv.WaitForSpan("GET /api/v1/partners/{id}", time.Second); err != nil {
		t.Error(err)
	}
	for _, sp := range rcv.Spans() {
		if dump := fmt.Sprintf("%+v", sp); strings.Contains(dump, pw) || strings.Contains(dump, adminPW) {
			t.Errorf("span %s carries a secret", sp.Name)
		}
	}
}
