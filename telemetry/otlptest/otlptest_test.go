package otlptest_test

import (
	"bytes"
	"errors"
	"net/http"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vectis-ft/vectis/telemetry/otlptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestHTTPJSONAndTimeout: the HTTP receiver also takes OTLP/JSON, and
// WaitForSpan reports a timeout for a span that never comes.
func TestHTTPJSONAndTimeout(t *testing.T) {
	r := otlptest.Start(t)
	body := []byte(`{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"vectis"}}]},
	  "scopeSpans":[{"scope":{"name":"t"},"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708",
	  "name":"json-span","kind":2,"attributes":[{"key":"n","value":{"intValue":"7"}}]}]}]}]}`)
	resp, err := http.Post(r.HTTPEndpoint()+"/v1/traces", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	s, err := r.WaitForSpan("json-span", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if s.Resource["service.name"] != "vectis" || s.Attributes["n"] != "7" || s.Kind != "SPAN_KIND_SERVER" ||
		s.TraceID != "0102030405060708090a0b0c0d0e0f10" || s.Protocol != "http" {
		t.Errorf("span %+v", s)
	}
	if _, err := r.WaitForSpan("never", 50*time.Millisecond); !errors.Is(err, otlptest.ErrTimeout) {
		t.Errorf("WaitForSpan(never) = %v, want ErrTimeout", err)
	}
	resp, err = http.Post(r.HTTPEndpoint()+"/v1/traces", "application/x-protobuf", bytes.NewReader([]byte{0xff, 0xff}))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("garbage protobuf: status %d", resp.StatusCode)
	}
	r.Reset()
	if len(r.Spans()) != 0 {
		t.Error("Reset kept spans")
	}
}
