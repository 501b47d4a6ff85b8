package telemetry

import (
	"context"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// OTLP protocols, as spelled in OTEL_EXPORTER_OTLP_PROTOCOL.
const (
	ProtocolGRPC         = "grpc"
	ProtocolHTTPProtobuf = "http/protobuf"
)

// ServiceName is the default service.name resource attribute.
const ServiceName = "vectis"

// TraceConfig describes this process for the trace resource. Exporter
// settings come from the standard OTEL_* environment variables, read through
// Getenv.
type TraceConfig struct {
	ServiceName    string // default "vectis"; OTEL_SERVICE_NAME overrides
	ServiceVersion string
	InstanceID     string // service.instance.id: the node name
	PodName        string // k8s.pod.name, when known
	PodNamespace   string // k8s.namespace.name, when known
	// Getenv reads the environment; nil means os.Getenv.
	Getenv func(string) string
}

// TracesEnabled reports whether the OTEL_* environment asks for traces to be
// exported: OTEL_TRACES_EXPORTER=otlp, or an OTLP endpoint set, and
// OTEL_TRACES_EXPORTER not "none" and OTEL_SDK_DISABLED not true.
func TracesEnabled(getenv func(string) string) (bool, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false, nil
	}
	otlp := false
	if v := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); v != "" {
		for _, e := range strings.Split(v, ",") {
			switch strings.TrimSpace(e) {
			case "otlp":
				otlp = true
			case "none":
				return false, nil
			default:
				return false, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: only otlp and none are supported", v)
			}
		}
	}
	if otlp {
		return true, nil
	}
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "", nil
}

// TracesProtocol returns the OTLP protocol chosen by
// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, then OTEL_EXPORTER_OTLP_PROTOCOL, with
// the specification's default http/protobuf.
func TracesProtocol(getenv func(string) string) (string, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	p := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
	if p == "" {
		p = strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_PROTOCOL"))
	}
	switch p {
	case "", ProtocolHTTPProtobuf:
		return ProtocolHTTPProtobuf, nil
	case ProtocolGRPC:
		return ProtocolGRPC, nil
	default:
		return "", fmt.Errorf("OTLP protocol %q: want grpc or http/protobuf", p)
	}
}

// NewTracerProvider returns the process's tracer provider and its shutdown
// function. When the environment asks for no export it returns a no-op
// provider (spans are never recorded) and a shutdown that does nothing.
// Otherwise it builds an OTLP exporter for the chosen protocol (endpoint,
// headers, TLS, timeout and compression are read by the exporter from the
// OTEL_EXPORTER_OTLP_* variables), a batch span processor (OTEL_BSP_*) and the
// sampler from OTEL_TRACES_SAMPLER (default parentbased_always_on).
func NewTracerProvider(ctx context.Context, cfg TraceConfig) (trace.TracerProvider, func(context.Context) error, error) {
	getenv := cfg.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	noShutdown := func(context.Context) error { return nil }
	on, err := TracesEnabled(getenv)
	if err != nil {
		return nil, nil, err
	}
	if !on {
		return noop.NewTracerProvider(), noShutdown, nil
	}
	proto, err := TracesProtocol(getenv)
	if err != nil {
		return nil, nil, err
	}
	res, err := NewResource(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	var client otlptrace.Client
	switch proto {
	case ProtocolGRPC:
		client = otlptracegrpc.NewClient()
	default:
		client = otlptracehttp.NewClient()
	}
	// New does not dial synchronously for either protocol: an unreachable
	// collector costs dropped spans and an error log, never a failed start.
	exp, err := otlptrace.New(ctx, client)
	if err != nil {
		return nil, nil, fmt.Errorf("otlp %s trace exporter: %w", proto, err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
	)
	return tp, tp.Shutdown, nil
}

// NewResource describes this process: service.name (default vectis),
// service.version, service.instance.id, k8s.pod.name and k8s.namespace.name
// when known, the SDK attributes, and OTEL_RESOURCE_ATTRIBUTES /
// OTEL_SERVICE_NAME, which win over the defaults.
func NewResource(ctx context.Context, cfg TraceConfig) (*resource.Resource, error) {
	name := cfg.ServiceName
	if name == "" {
		name = ServiceName
	}
	attrs := []attribute.KeyValue{semconv.ServiceName(name)}
	if cfg.ServiceVersion != "" {
		attrs = append(attrs, semconv.ServiceVersion(cfg.ServiceVersion))
	}
	if cfg.InstanceID != "" {
		attrs = append(attrs, semconv.ServiceInstanceID(cfg.InstanceID))
	}
	if cfg.PodName != "" {
		attrs = append(attrs, semconv.K8SPodName(cfg.PodName))
	}
	if cfg.PodNamespace != "" {
		attrs = append(attrs, semconv.K8SNamespaceName(cfg.PodNamespace))
	}
	base := resource.NewWithAttributes(semconv.SchemaURL, attrs...)
	// WithFromEnv reads os.Getenv itself; it is the standard behaviour and
	// the one operators expect, so it is not routed through cfg.Getenv.
	detected, err := resource.New(ctx, resource.WithTelemetrySDK(), resource.WithFromEnv())
	if err != nil {
		return nil, fmt.Errorf("trace resource: %w", err)
	}
	res, err := resource.Merge(base, detected)
	if err != nil {
		return nil, fmt.Errorf("trace resource: %w", err)
	}
	return res, nil
}

// Propagator is the W3C trace-context and baggage propagator, for a component
// that carries a trace across a process boundary.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}
