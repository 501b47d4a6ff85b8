package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
)

// Config is what Setup needs. The zero value logs JSON (or text on a
// terminal) at info to stderr and exports no traces unless OTEL_* says so.
type Config struct {
	ServiceVersion string // service.version
	InstanceID     string // service.instance.id, the node name
	PodName        string // k8s.pod.name, when running in Kubernetes
	PodNamespace   string // k8s.namespace.name
	LogFormat      string // auto | json | text (vectis.telemetry.logFormat)
	LogLevel       string // debug | info | warn | error (vectis.telemetry.logLevel)
	LogOutput      io.Writer
	// Getenv reads the OTEL_* variables; nil means os.Getenv.
	Getenv func(string) string
}

// Telemetry is the observability kit of one process. The composition root
// passes its fields down; nothing is installed globally.
type Telemetry struct {
	// TracerProvider is a no-op provider when no exporter is configured.
	TracerProvider trace.TracerProvider
	// Registry holds the Go and process collectors; packages register theirs.
	Registry *prometheus.Registry
	// Logger writes through the trace-aware, redacting handler.
	Logger *slog.Logger
	// Level can be changed at run time.
	Level *slog.LevelVar
	// Exporting reports whether spans are sent to an OTLP collector.
	Exporting bool

	shutdown func(context.Context) error
}

// Setup builds the tracer provider, the Prometheus registry and the logger.
// Call Shutdown to flush the spans still buffered.
func Setup(ctx context.Context, cfg Config) (*Telemetry, error) {
	level := new(slog.LevelVar)
	l, err := ParseLevel(cfg.LogLevel)
	if err != nil {
		return nil, err
	}
	level.Set(l)
	out := cfg.LogOutput
	if out == nil {
		out = os.Stderr
	}
	h, err := NewLogHandler(out, cfg.LogFormat, level)
	if err != nil {
		return nil, err
	}
	tp, shutdown, err := NewTracerProvider(ctx, TraceConfig{
		ServiceVersion: cfg.ServiceVersion,
		InstanceID:     cfg.InstanceID,
		PodName:        cfg.PodName,
		PodNamespace:   cfg.PodNamespace,
		Getenv:         cfg.Getenv,
	})
	if err != nil {
		return nil, fmt.Errorf("tracer provider: %w", err)
	}
	exporting, _ := TracesEnabled(cfg.Getenv) // already validated above
	return &Telemetry{
		TracerProvider: tp,
		Registry:       NewRegistry(),
		Logger:         slog.New(h),
		Level:          level,
		Exporting:      exporting,
		shutdown:       shutdown,
	}, nil
}

// Tracer returns a named tracer from the provider.
func (t *Telemetry) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	return t.TracerProvider.Tracer(name, opts...)
}

// Shutdown flushes and stops the span exporter. It is safe to call more
// than once.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	if t == nil || t.shutdown == nil {
		return nil
	}
	err := t.shutdown(ctx)
	t.shutdown = nil
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("telemetry shutdown: %w", err)
	}
	return err
}
