package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/vectis-ft/vectis/telemetry"
	"github.com/vectis-ft/vectis/telemetry/otlptest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// clearOTEL makes the test independent of the environment it runs in.
func clearOTEL(t *testing.T) {
	for _, k := range []string{
		"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL",
		"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
		"OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
	} {
		t.Setenv(k, "")
	}
}

func setup(t *testing.T, cfg telemetry.Config) *telemetry.Telemetry {
	t.Helper()
	if cfg.LogOutput == nil {
		cfg.LogOutput = io.Discard
	}
	tel, err := telemetry.Setup(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	return tel
}

func TestSpansReachOTLPReceiver(t *testing.T) {
	for _, proto := range []string{"grpc", "http/protobuf"} {
		t.Run(proto, func(t *testing.T) {
			clearOTEL(t)
			rcv := otlptest.Start(t)
			rcv.SetEnv(t, proto)
			tel := setup(t, telemetry.Config{
				ServiceVersion: "1.2.3",
				InstanceID:     "vectis-0",
				PodName:        "vectis-0",
				PodNamespace:   "banking",
			})
			if !tel.Exporting {
				t.Fatal("Exporting = false with OTEL_EXPORTER_OTLP_ENDPOINT set")
			}
			ctx, span := tel.Tracer("test").Start(context.Background(), "pesit.session",
				trace.WithAttributes(attribute.String("pesit.partner", "CXCLIENT")))
			_, child := tel.Tracer("test").Start(ctx, "pesit.transfer")
			child.End()
			span.End()
			// Shutdown flushes the batch processor: the spans must be at the
			// receiver when it returns, not merely eventually.
			if err := tel.Shutdown(context.Background()); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			got, err := rcv.WaitForSpan("pesit.session", 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			wantProto := "grpc"
			if proto != "grpc" {
				wantProto = "http"
			}
			if got.Protocol != wantProto {
				t.Errorf("arrived over %s, want %s", got.Protocol, wantProto)
			}
			for k, v := range map[string]string{
				"service.name":        "vectis",
				"service.version":     "1.2.3",
				"service.instance.id": "vectis-0",
				"k8s.pod.name":        "vectis-0",
				"k8s.namespace.name":  "banking",
			} {
				if got.Resource[k] != v {
					t.Errorf("resource %s = %q, want %q (resource %v)", k, got.Resource[k], v, got.Resource)
				}
			}
			if got.Attributes["pesit.partner"] != "CXCLIENT" {
				t.Errorf("span attributes %v", got.Attributes)
			}
			c, err := rcv.WaitForSpan("pesit.transfer", time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if c.ParentSpanID != got.SpanID || c.TraceID != got.TraceID {
				t.Errorf("child %s/%s parent %s, want parent %s in trace %s", c.TraceID, c.SpanID, c.ParentSpanID, got.SpanID, got.TraceID)
			}
		})
	}
}

func TestTracesProtocolOverridesGeneric(t *testing.T) {
	clearOTEL(t)
	rcv := otlptest.Start(t)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://"+rcv.Endpoint())
	t.Setenv("OTEL_SERVICE_NAME", "vectis-canary")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
	tel := setup(t, telemetry.Config{})
	_, span := tel.Tracer("test").Start(context.Background(), "one")
	span.End()
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, err := rcv.WaitForSpan("one", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got.Protocol != "grpc" {
		t.Errorf("arrived over %s, want grpc", got.Protocol)
	}
	if got.Resource["service.name"] != "vectis-canary" || got.Resource["deployment.environment"] != "test" {
		t.Errorf("OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES not applied: %v", got.Resource)
	}
}

func TestNoExportWithoutConfiguration(t *testing.T) {
	clearOTEL(t)
	tel := setup(t, telemetry.Config{})
	if tel.Exporting {
		t.Fatal("Exporting = true with no OTEL_* set")
	}
	_, span := tel.Tracer("test").Start(context.Background(), "x")
	defer span.End()
	if span.IsRecording() || span.SpanContext().IsSampled() {
		t.Error("span is recorded with no exporter configured")
	}
}

func TestTracesEnabled(t *testing.T) {
	cases := []struct {
		env     map[string]string
		want    bool
		wantErr bool
	}{
		{env: nil, want: false},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, want: true},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, want: true},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:4318/v1/traces"}, want: true},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_TRACES_EXPORTER": "none"}, want: false},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_SDK_DISABLED": "true"}, want: false},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, wantErr: true},
	}
	for i, c := range cases {
		got, err := telemetry.TracesEnabled(func(k string) string { return c.env[k] })
		if (err != nil) != c.wantErr || got != c.want {
			t.Errorf("case %d %v: got %v, %v; want %v, err %v", i, c.env, got, err, c.want, c.wantErr)
		}
	}
	if _, err := telemetry.TracesProtocol(func(k string) string {
		return map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}[k]
	}); err == nil {
		t.Error("http/json accepted; the Go exporter cannot send it")
	}
	if p, _ := telemetry.TracesProtocol(func(string) string { return "" }); p != telemetry.ProtocolHTTPProtobuf {
		t.Errorf("default protocol %q, want http/protobuf (the specification's default)", p)
	}
}

func TestUnsupportedExporterFailsSetup(t *testing.T) {
	clearOTEL(t)
	t.Setenv("OTEL_TRACES_EXPORTER", "jaeger")
	if _, err := telemetry.Setup(context.Background(), telemetry.Config{LogOutput: io.Discard}); err == nil {
		t.Fatal("Setup accepted OTEL_TRACES_EXPORTER=jaeger")
	}
}

// recordingProvider is a real SDK provider that samples everything and
// exports nothing: enough to get valid span contexts for log correlation.
func recordingProvider(t *testing.T) trace.TracerProvider {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp
}

func decodeLines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if line == "" {
			continue
		}
		m := map[string]any{}
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

func TestLogLinesCarryTraceIDs(t *testing.T) {
	var buf bytes.Buffer
	h, err := telemetry.NewLogHandler(&buf, "json", slog.LevelInfo)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(h)
	ctx, span := recordingProvider(t).Tracer("t").Start(context.Background(), "op")
	sc := span.SpanContext()

	log.InfoContext(ctx, "inside", "k", 1)
	log.Info("outside")
	log.With("server", "PESITSRV").WithGroup("session").With("id", 7).InfoContext(ctx, "grouped", "fpdu", "CONNECT")
	span.End()

	lines := decodeLines(t, &buf)
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3: %s", len(lines), buf.String())
	}
	for _, i := range []int{0, 2} {
		if lines[i]["trace_id"] != sc.TraceID().String() || lines[i]["span_id"] != sc.SpanID().String() {
			t.Errorf("line %d = %v, want trace_id %s span_id %s at top level", i, lines[i], sc.TraceID(), sc.SpanID())
		}
	}
	if _, ok := lines[1]["trace_id"]; ok {
		t.Errorf("line outside a span has a trace_id: %v", lines[1])
	}
	g, _ := lines[2]["session"].(map[string]any)
	if lines[2]["server"] != "PESITSRV" || g["id"] != float64(7) || g["fpdu"] != "CONNECT" {
		t.Errorf("grouped line lost its attributes: %v", lines[2])
	}
}

func TestLogFormatsAndLevel(t *testing.T) {
	var buf bytes.Buffer
	level := new(slog.LevelVar)
	level.Set(slog.LevelWarn)
	h, err := telemetry.NewLogHandler(&buf, "text", level)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(h)
	log.Info("hidden")
	log.Warn("shown", "n", 1)
	if got := buf.String(); strings.Contains(got, "hidden") || !strings.Contains(got, "level=WARN msg=shown n=1") {
		t.Errorf("text output %q", got)
	}
	// auto on a non-terminal writer is JSON.
	buf.Reset()
	h, _ = telemetry.NewLogHandler(&buf, "auto", slog.LevelDebug)
	slog.New(h).Debug("d")
	if !json.Valid(bytes.TrimSpace(buf.Bytes())) {
		t.Errorf("auto on a buffer is not JSON: %q", buf.String())
	}
	if _, err := telemetry.NewLogHandler(&buf, "xml", slog.LevelInfo); err == nil {
		t.Error("format xml accepted")
	}
	for in, want := range map[string]slog.Level{"debug": slog.LevelDebug, "INFO": slog.LevelInfo, "warning": slog.LevelWarn, "error": slog.LevelError, "": slog.LevelInfo} {
		if got, err := telemetry.ParseLevel(in); err != nil || got != want {
			t.Errorf("ParseLevel(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := telemetry.ParseLevel("loud"); err == nil {
		t.Error("ParseLevel(loud) accepted")
	}
}

func TestSecretsAreRedacted(t *testing.T) {
	const pw = "s3cr3t-Pa55"
	var buf bytes.Buffer
	tel := setup(t, telemetry.Config{LogFormat: "json", LogOutput: &buf})
	s := telemetry.Secret(pw)
	tel.Logger.Info("login", "user", "admin", "pw", s, "password", pw, "nested", slog.GroupValue(slog.Any("token", pw)))
	js, _ := json.Marshal(struct{ P telemetry.Secret }{s})
	all := buf.String() + fmt.Sprintf("%s %v %+v %#v %q %x", s, s, s, s, s, s) + string(js)
	if strings.Contains(all, pw) {
		t.Fatalf("secret leaked: %s", all)
	}
	if !strings.Contains(buf.String(), telemetry.Redacted) || s.Reveal() != pw {
		t.Errorf("redaction marker missing or Reveal broken: %s", buf.String())
	}
}

func TestRegistryExposesRuntimeMetrics(t *testing.T) {
	clearOTEL(t)
	tel := setup(t, telemetry.Config{})
	srv := httptest.NewServer(promhttp.HandlerFor(tel.Registry, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, m := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_cpu_seconds_total", "process_open_fds"} {
		if !bytes.Contains(body, []byte("\n"+m+" ")) {
			t.Errorf("metric %s missing from /metrics", m)
		}
	}
}

// BenchmarkNoopSpan measures a span with no exporter configured (the default):
// it must cost next to nothing.
func BenchmarkNoopSpan(b *testing.B) {
	b.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	b.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	b.Setenv("OTEL_TRACES_EXPORTER", "")
	tel, err := telemetry.Setup(context.Background(), telemetry.Config{LogOutput: io.Discard})
	if err != nil {
		b.Fatal(err)
	}
	tr := tel.Tracer("bench")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_, span := tr.Start(ctx, "op")
		span.End()
	}
}
