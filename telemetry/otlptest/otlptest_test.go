package otlptest_test

import (
	"bytes"
	"errors"
	"net/http"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/vectis-ft/vectis/telemetry/otlptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func post(t *testing.T, url, ctype string, body []byte) int {
	t.Helper()
	resp, err := http.Post(url, ctype, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestHTTPReceiver: a hand-built OTLP/protobuf request is flattened as
// documented; bad input is refused; WaitForSpan times out on a span that
// never comes.
func TestHTTPReceiver(t *testing.T) {
	r := otlptest.Start(t)
	req := &collectortrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
			{Key: "service.name", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "vectis"}}},
		}},
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{{
			TraceId: []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
			SpanId:  []byte{1, 2, 3, 4, 5, 6, 7, 8},
			Name:    "proto-span", Kind: tracepb.Span_SPAN_KIND_SERVER,
			Attributes: []*commonpb.KeyValue{
				{Key: "n", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: 7}}},
				{Key: "l", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{
					Values: []*commonpb.AnyValue{{Value: &commonpb.AnyValue_BoolValue{BoolValue: true}}}}}}},
			},
		}}}},
	}}}
	body, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	if code := post(t, r.HTTPEndpoint()+"/v1/traces", "application/x-protobuf", body); code != 200 {
		t.Fatalf("status %d", code)
	}
	s, err := r.WaitForSpan("proto-span", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if s.Resource["service.name"] != "vectis" || s.Attributes["n"] != "7" || s.Attributes["l"] != "[true]" ||
		s.Kind != "SPAN_KIND_SERVER" || s.TraceID != "0102030405060708090a0b0c0d0e0f10" || s.SpanID != "0102030405060708" ||
		s.ParentSpanID != "" || s.Protocol != "http" {
		t.Errorf("span %+v", s)
	}
	if _, err := r.WaitForSpan("never", 50*time.Millisecond); !errors.Is(err, otlptest.ErrTimeout) {
		t.Errorf("WaitForSpan(never) = %v, want ErrTimeout", err)
	}
	if code := post(t, r.HTTPEndpoint()+"/v1/traces", "application/x-protobuf", []byte{0xff, 0xff}); code != 400 {
		t.Errorf("garbage protobuf: status %d", code)
	}
	if code := post(t, r.HTTPEndpoint()+"/v1/traces", "application/json", []byte(`{}`)); code != 415 {
		t.Errorf("JSON: status %d, want 415", code)
	}
	r.Reset()
	if len(r.Spans()) != 0 {
		t.Error("Reset kept spans")
	}
}
