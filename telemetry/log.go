package telemetry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"go.opentelemetry.io/otel/trace"
	"golang.org/x/term"
)

// Log formats accepted by NewLogHandler.
const (
	LogFormatAuto = "auto" // text on a terminal, JSON otherwise
	LogFormatJSON = "json"
	LogFormatText = "text"
)

// Keys that the trace handler adds to a record emitted inside a span.
const (
	TraceIDKey = "trace_id"
	SpanIDKey  = "span_id"
)

// sensitiveKey reports attribute keys whose value is redacted whatever its
// type: a safety net for a secret logged by mistake as a plain string.
func sensitiveKey(k string) bool {
	switch strings.ToLower(k) {
	case "password", "passwd", "passwordhash", "password_hash", "secret",
		"token", "authorization", "apikey", "api_key":
		return true
	}
	return false
}

// ParseLevel turns "debug", "info", "warn"/"warning", "error" (any case, or
// an slog level string such as "INFO+2") into a level.
func ParseLevel(s string) (slog.Level, error) {
	if strings.EqualFold(strings.TrimSpace(s), "warning") {
		return slog.LevelWarn, nil
	}
	if strings.TrimSpace(s) == "" {
		return slog.LevelInfo, nil
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.TrimSpace(s))); err != nil {
		return 0, fmt.Errorf("log level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// NewLogHandler returns the handler a node logs through: JSON or text
// (format "auto" picks text when w is a terminal), filtered at level, with
// sensitive attribute keys redacted, wrapped so that records logged with a
// context inside a span carry trace_id and span_id.
func NewLogHandler(w io.Writer, format string, level slog.Leveler) (slog.Handler, error) {
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: redactAttr}
	var h slog.Handler
	switch strings.ToLower(format) {
	case "", LogFormatAuto:
		if isTerminal(w) {
			h = slog.NewTextHandler(w, opts)
		} else {
			h = slog.NewJSONHandler(w, opts)
		}
	case LogFormatJSON:
		h = slog.NewJSONHandler(w, opts)
	case LogFormatText:
		h = slog.NewTextHandler(w, opts)
	default:
		return nil, fmt.Errorf("log format %q: want auto, json or text", format)
	}
	return NewTraceHandler(h), nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func redactAttr(_ []string, a slog.Attr) slog.Attr {
	if sensitiveKey(a.Key) {
		return slog.String(a.Key, Redacted)
	}
	return a
}

// NewTraceHandler wraps h so that a record handled with a context holding a
// valid span context gets trace_id and span_id attributes at the top level,
// even when the logger was derived with WithGroup.
func NewTraceHandler(h slog.Handler) slog.Handler {
	return &traceHandler{base: h, cur: h}
}

// traceHandler keeps the handler as it was before the first WithGroup (base)
// and the operations applied since (ops), because slog offers no way to add a
// top-level attribute once a group is open: for such loggers the trace ids are
// added to base and the operations replayed, which costs allocations only for
// grouped loggers inside spans.
type traceHandler struct {
	base slog.Handler // before the first group
	ops  []handlerOp  // applied after the first group, in order
	cur  slog.Handler // base with ops applied
}

type handlerOp struct {
	group string
	attrs []slog.Attr
}

func (h *traceHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.cur.Enabled(ctx, l)
}

func (h *traceHandler) Handle(ctx context.Context, r slog.Record) error {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return h.cur.Handle(ctx, r)
	}
	ids := []slog.Attr{
		slog.String(TraceIDKey, sc.TraceID().String()),
		slog.String(SpanIDKey, sc.SpanID().String()),
	}
	if len(h.ops) == 0 {
		r.AddAttrs(ids...)
		return h.cur.Handle(ctx, r)
	}
	inner := h.base.WithAttrs(ids)
	for _, op := range h.ops {
		if op.group != "" {
			inner = inner.WithGroup(op.group)
		} else {
			inner = inner.WithAttrs(op.attrs)
		}
	}
	return inner.Handle(ctx, r)
}

func (h *traceHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	if len(h.ops) == 0 {
		nh := h.cur.WithAttrs(attrs)
		return &traceHandler{base: nh, cur: nh}
	}
	return &traceHandler{
		base: h.base,
		ops:  append(h.ops[:len(h.ops):len(h.ops)], handlerOp{attrs: attrs}),
		cur:  h.cur.WithAttrs(attrs),
	}
}

func (h *traceHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &traceHandler{
		base: h.base,
		ops:  append(h.ops[:len(h.ops):len(h.ops)], handlerOp{group: name}),
		cur:  h.cur.WithGroup(name),
	}
}
