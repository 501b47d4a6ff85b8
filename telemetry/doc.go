// Package telemetry owns the process-wide observability plumbing of a Vectis
// node: the OpenTelemetry tracer provider (OTLP over gRPC or HTTP, configured
// by the standard OTEL_* variables), the Prometheus registry, and the slog
// handlers that put trace and span ids on log lines and keep secrets out of
// them.
//
// Nothing here is global: Setup returns the provider, the registry and the
// logger, and the composition root hands them down. With no OTLP endpoint
// configured the tracer provider is a no-op and costs next to nothing.
package telemetry
