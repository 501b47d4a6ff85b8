// Package otlptest is an OTLP trace receiver for tests: a real collector
// trace service served over gRPC and over HTTP (/v1/traces, protobuf)
// on loopback, which keeps every span it receives. A test starts one, points
// the OTEL_* variables at it (SetEnv) or passes Endpoint to an exporter, runs
// the code under test, and waits for the spans it expects.
package otlptest

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Span is one received span, flattened for assertions.
type Span struct {
	Name          string
	TraceID       string // hex
	SpanID        string // hex
	ParentSpanID  string // hex, empty for a root span
	Kind          string // e.g. SPAN_KIND_SERVER
	Scope         string // instrumentation scope name
	Attributes    map[string]string
	Resource      map[string]string
	StatusCode    string // STATUS_CODE_UNSET, _OK or _ERROR
	StatusMessage string
	Events        []string
	Start, End    time.Time
	Protocol      string // "grpc" or "http" : how it arrived
}

// Receiver is a running OTLP receiver. Its methods are safe for concurrent use.
type Receiver struct {
	collectortrace.UnimplementedTraceServiceServer

	grpcAddr string
	httpAddr string

	mu      sync.Mutex
	spans   []Span
	changed chan struct{} // closed and replaced on every new batch
}

// Start starts a receiver on two loopback ports and stops it when the test
// ends.
func Start(t testing.TB) *Receiver {
	t.Helper()
	return StartAt(t, "127.0.0.1:0", "127.0.0.1:0")
}

// StartAt starts a receiver with its gRPC and HTTP servers on the given
// addresses (port 0 picks one), for exporters that cannot reach loopback:
// the pods of a kind cluster reach the host on its docker network gateway.
func StartAt(t testing.TB, grpcAddr, httpAddr string) *Receiver {
	t.Helper()
	r := &Receiver{changed: make(chan struct{})}

	gl, err := net.Listen("tcp", grpcAddr)
	if err != nil {
		t.Fatalf("otlptest: listen grpc: %v", err)
	}
	gs := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(gs, r)
	r.grpcAddr = gl.Addr().String()

	hl, err := net.Listen("tcp", httpAddr)
	if err != nil {
		_ = gl.Close()
		t.Fatalf("otlptest: listen http: %v", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", r.serveHTTP)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	r.httpAddr = hl.Addr().String()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = gs.Serve(gl) }()
	go func() { defer wg.Done(); _ = hs.Serve(hl) }()
	t.Cleanup(func() {
		gs.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx)
		wg.Wait()
	})
	return r
}

// Endpoint is the gRPC endpoint, host:port (plaintext).
func (r *Receiver) Endpoint() string { return r.grpcAddr }

// HTTPEndpoint is the base URL of the HTTP receiver; spans are posted to
// HTTPEndpoint()+"/v1/traces".
func (r *Receiver) HTTPEndpoint() string { return "http://" + r.httpAddr }

// SetEnv points the standard OTEL_* variables at this receiver for the rest
// of the test, for protocol "grpc" or "http/protobuf", with a short batch
// delay so spans arrive quickly. It uses t.Setenv, so the test must not be
// parallel.
func (r *Receiver) SetEnv(t testing.TB, protocol string) {
	t.Helper()
	switch protocol {
	case "grpc":
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+r.grpcAddr)
	case "http/protobuf":
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", r.HTTPEndpoint())
	default:
		t.Fatalf("otlptest: protocol %q: want grpc or http/protobuf", protocol)
	}
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
	t.Setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
	t.Setenv("OTEL_TRACES_SAMPLER", "always_on")
}

// Export implements the collector's gRPC trace service.
func (r *Receiver) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	r.add(req, "grpc")
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func (r *Receiver) serveHTTP(w http.ResponseWriter, req *http.Request) {
	// Only OTLP/protobuf: the Go exporters send nothing else, and OTLP/JSON
	// (hex ids) is not what protojson decodes.
	if ct := req.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		http.Error(w, "only application/x-protobuf is supported", http.StatusUnsupportedMediaType)
		return
	}
	var body io.Reader = http.MaxBytesReader(w, req.Body, 64<<20)
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		defer zr.Close()
		body = zr
	}
	data, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	msg := &collectortrace.ExportTraceServiceRequest{}
	if err := proto.Unmarshal(data, msg); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.add(msg, "http")
	out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func (r *Receiver) add(req *collectortrace.ExportTraceServiceRequest, protocol string) {
	var got []Span
	for _, rs := range req.GetResourceSpans() {
		res := attrMap(rs.GetResource().GetAttributes())
		for _, ss := range rs.GetScopeSpans() {
			scope := ss.GetScope().GetName()
			for _, s := range ss.GetSpans() {
				got = append(got, flatten(s, res, scope, protocol))
			}
		}
	}
	r.mu.Lock()
	r.spans = append(r.spans, got...)
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

func flatten(s *tracepb.Span, res map[string]string, scope, protocol string) Span {
	out := Span{
		Name:          s.GetName(),
		TraceID:       hex.EncodeToString(s.GetTraceId()),
		SpanID:        hex.EncodeToString(s.GetSpanId()),
		Kind:          s.GetKind().String(),
		Scope:         scope,
		Attributes:    attrMap(s.GetAttributes()),
		Resource:      res,
		StatusCode:    s.GetStatus().GetCode().String(),
		StatusMessage: s.GetStatus().GetMessage(),
		Start:         time.Unix(0, int64(s.GetStartTimeUnixNano())),
		End:           time.Unix(0, int64(s.GetEndTimeUnixNano())),
		Protocol:      protocol,
	}
	if p := s.GetParentSpanId(); len(p) > 0 {
		out.ParentSpanID = hex.EncodeToString(p)
	}
	for _, e := range s.GetEvents() {
		out.Events = append(out.Events, e.GetName())
	}
	return out
}

func attrMap(kvs []*commonpb.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[kv.GetKey()] = valueString(kv.GetValue())
	}
	return m
}

func valueString(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return strconv.FormatInt(x.IntValue, 10)
	case *commonpb.AnyValue_BoolValue:
		return strconv.FormatBool(x.BoolValue)
	case *commonpb.AnyValue_DoubleValue:
		return strconv.FormatFloat(x.DoubleValue, 'g', -1, 64)
	case *commonpb.AnyValue_BytesValue:
		return hex.EncodeToString(x.BytesValue)
	case *commonpb.AnyValue_ArrayValue:
		parts := make([]string, 0, len(x.ArrayValue.GetValues()))
		for _, e := range x.ArrayValue.GetValues() {
			parts = append(parts, valueString(e))
		}
		return "[" + strings.Join(parts, ",") + "]"
	case *commonpb.AnyValue_KvlistValue:
		m := attrMap(x.KvlistValue.GetValues())
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			parts = append(parts, k+"="+m[k])
		}
		return "{" + strings.Join(parts, ",") + "}"
	default:
		return ""
	}
}

// Spans returns a copy of every span received so far, in arrival order.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...)
}

// Reset forgets the spans received so far.
func (r *Receiver) Reset() {
	r.mu.Lock()
	r.spans = nil
	r.mu.Unlock()
}

// ErrTimeout is returned by the Wait methods when nothing matched in time.
var ErrTimeout = errors.New("otlptest: timed out waiting for span")

// WaitForSpan waits until a span with this name has arrived and returns the
// first one.
func (r *Receiver) WaitForSpan(name string, timeout time.Duration) (Span, error) {
	return r.WaitFor(func(s Span) bool { return s.Name == name }, timeout)
}

// WaitFor waits until a span matching match has arrived and returns the first
// one.
func (r *Receiver) WaitFor(match func(Span) bool, timeout time.Duration) (Span, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		for _, s := range r.spans {
			if match(s) {
				r.mu.Unlock()
				return s, nil
			}
		}
		changed := r.changed
		n := len(r.spans)
		r.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			return Span{}, fmt.Errorf("%w after %v (%d spans received)", ErrTimeout, timeout, n)
		}
	}
}
