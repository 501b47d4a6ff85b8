package telemetry

import (
	"fmt"
	"log/slog"
)

// Redacted is what a secret looks like in logs, traces and JSON.
const Redacted = "[REDACTED]"

// Secret holds a value that must never be printed: a password, a token, a
// connection string with credentials. It redacts itself in slog (LogValue),
// in fmt (%s, %v, %+v, %#v, %q) and in encoding/json; Reveal returns the
// value for the one place that needs it.
type Secret string

// Reveal returns the secret value.
func (s Secret) Reveal() string { return string(s) }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(Redacted) }

// String implements fmt.Stringer.
func (s Secret) String() string { return Redacted }

// GoString implements fmt.GoStringer, so %#v does not print the value.
func (s Secret) GoString() string { return `telemetry.Secret("` + Redacted + `")` }

// Format implements fmt.Formatter so that every verb redacts.
func (s Secret) Format(f fmt.State, verb rune) {
	switch verb {
	case 'q':
		fmt.Fprintf(f, "%q", Redacted)
	case 'v':
		if f.Flag('#') {
			_, _ = f.Write([]byte(s.GoString()))
			return
		}
		_, _ = f.Write([]byte(Redacted))
	default:
		_, _ = f.Write([]byte(Redacted))
	}
}

// MarshalJSON implements json.Marshaler.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }

// MarshalText implements encoding.TextMarshaler (used by slog's JSON handler
// for map keys and by YAML encoders).
func (s Secret) MarshalText() ([]byte, error) { return []byte(Redacted), nil }
