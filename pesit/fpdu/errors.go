package fpdu

import (
	"errors"
	"fmt"
)

// Sentinel errors of the framing and decoding layers. Each is wrapped
// together with the diagnostic a session should send (see protoErr), so both
// errors.Is(err, ErrTruncated) and errors.Is(err, DiagProtocolError) hold.
var (
	ErrTruncated     = errors.New("truncated")
	ErrFrameTooLarge = errors.New("frame larger than allowed")
	ErrBadLength     = errors.New("bad length")
	ErrUnknownKind   = errors.New("unknown FPDU kind")
	ErrNotData       = errors.New("not a data FPDU")
	ErrBadID         = errors.New("bad connection id")
)

// protoErr builds a decoding error that wraps both a sentinel and the
// diagnostic 3/311 (remote PeSIT protocol error).
func protoErr(sentinel error, format string, args ...any) error {
	return &codecError{diag: DiagProtocolError, sentinel: sentinel, msg: fmt.Sprintf(format, args...)}
}

type codecError struct {
	diag     Diagnostic
	sentinel error
	msg      string
}

func (e *codecError) Error() string {
	if e.sentinel != nil {
		return "fpdu: " + e.msg + ": " + e.sentinel.Error()
	}
	return "fpdu: " + e.msg
}

func (e *codecError) Unwrap() []error {
	if e.sentinel != nil {
		return []error{e.diag, e.sentinel}
	}
	return []error{e.diag}
}

// ParamError reports a missing or invalid parameter. It unwraps to
// DiagBadParameter (3/318), the diagnostic the peer must receive.
type ParamError struct {
	Kind  Kind
	Group PI // enclosing PGI, 0 at top level
	PI    PI
	// Reason says what is wrong: "missing", "repeated", "length 5 > 3", ...
	Reason string
}

func (e *ParamError) Error() string {
	where := e.PI.String()
	if e.Group != 0 {
		where += " in " + e.Group.String()
	}
	return fmt.Sprintf("fpdu: %s: %s %s", e.Kind, where, e.Reason)
}

// Unwrap makes errors.Is(err, DiagBadParameter) hold.
func (e *ParamError) Unwrap() error { return DiagBadParameter }

// DiagnosticOf returns the diagnostic carried by err (3/311 for framing and
// decoding errors, 3/318 for parameter errors, 2/220 for an over-long
// article, ...) and whether err carries one.
func DiagnosticOf(err error) (Diagnostic, bool) {
	var d Diagnostic
	if errors.As(err, &d) {
		return d, true
	}
	return 0, false
}
