package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// RejectedError is a connection refused by the server with RCONNECT.
type RejectedError struct {
	Diagnostic fpdu.Diagnostic
	Text       string // PI 99, if the server sent one
}

func (e *RejectedError) Error() string {
	s := fmt.Sprintf("connection refused by server (RCONNECT %s: %s)", e.Diagnostic.String(), e.Diagnostic.Text())
	if e.Text != "" {
		s += ": " + e.Text
	}
	return s
}

// Unwrap exposes the diagnostic to errors.Is/As.
func (e *RejectedError) Unwrap() error { return e.Diagnostic }

// AbortError is an ABORT received from the server.
type AbortError struct {
	Diagnostic fpdu.Diagnostic
}

func (e *AbortError) Error() string {
	return fmt.Sprintf("aborted by server (ABORT %s: %s)", e.Diagnostic.String(), e.Diagnostic.Text())
}

// Unwrap exposes the diagnostic to errors.Is/As.
func (e *AbortError) Unwrap() error { return e.Diagnostic }

// TransferError is a negative acknowledgement (ACK(CREATE), ACK(SELECT),
// ACK(WRITE), ACK(READ), ACK(TRANS.END), ACK(MSG) ...) or an interruption
// (IDT) of a transfer by the server.
type TransferError struct {
	Op         fpdu.Kind // the FPDU that carried the diagnostic
	Diagnostic fpdu.Diagnostic
	EndCode    uint8 // PI 19 of an IDT (4 error, restart follows; 8 suspension; 12/16 cancelled); 0 otherwise
	Text       string
}

func (e *TransferError) Error() string {
	s := fmt.Sprintf("%s: %s: %s", e.Op, e.Diagnostic.String(), e.Diagnostic.Text())
	if e.EndCode != 0 {
		s += fmt.Sprintf(" (end code %d)", e.EndCode)
	}
	if e.Text != "" {
		s += ": " + e.Text
	}
	return s
}

// Unwrap exposes the diagnostic to errors.Is/As.
func (e *TransferError) Unwrap() error { return e.Diagnostic }

// RefusedLocallyError is a transfer the client gave up itself after the
// server had accepted it (for example an entity size the articles cannot
// fit): the diagnostic is the client's, never the server's answer.
type RefusedLocallyError struct {
	Op         fpdu.Kind // the server's positive answer the refusal followed
	Diagnostic fpdu.Diagnostic
	Text       string
}

func (e *RefusedLocallyError) Error() string {
	return fmt.Sprintf("refused by the client after a positive %s (%s: %s): %s", e.Op, e.Diagnostic.String(), e.Diagnostic.Text(), e.Text)
}

// Unwrap exposes the diagnostic to errors.Is/As.
func (e *RefusedLocallyError) Unwrap() error { return e.Diagnostic }

// RestartRefusedError is a push with restart state that was not resumed:
// the server refused the restart (Diagnostic, Text), or the state is of
// transfer TransferID while Requested was asked for. The state is kept; the
// file may have been delivered already, so sending it again as a new
// transfer is left to an explicit SendRequest.StartOver.
type RestartRefusedError struct {
	TransferID uint32 // PI 13 of the interrupted transfer
	Requested  uint32 // the PI 13 asked for, when it differs
	Diagnostic fpdu.Diagnostic
	Text       string
}

func (e *RestartRefusedError) Error() string {
	if e.Diagnostic == 0 {
		return fmt.Sprintf("restart state of transfer %d found while transfer %d was asked for: resume it with that id, or start over explicitly",
			e.TransferID, e.Requested)
	}
	s := fmt.Sprintf("the server refused to restart transfer %d (%s: %s)", e.TransferID, e.Diagnostic.String(), e.Diagnostic.Text())
	if e.Text != "" {
		s += ": " + e.Text
	}
	return s + "; the restart state is kept, since the server may hold the file already: check its record of the transfer, then start over explicitly to send the file again"
}

// Unwrap exposes the server's diagnostic to errors.Is/As.
func (e *RestartRefusedError) Unwrap() error {
	if e.Diagnostic == 0 {
		return nil
	}
	return e.Diagnostic
}

// ProtocolError is a violation of the protocol by the server (unexpected FPDU,
// missing or bad parameter, wrong counts). The client ABORTs the connection.
type ProtocolError struct {
	Diagnostic fpdu.Diagnostic // the diagnostic sent in the ABORT
	Msg        string
}

func (e *ProtocolError) Error() string {
	return fmt.Sprintf("server protocol error (%s): %s", e.Diagnostic.String(), e.Msg)
}

// Unwrap exposes the diagnostic to errors.Is/As.
func (e *ProtocolError) Unwrap() error { return e.Diagnostic }

// LocalError is a failure of the local file system (source or destination).
type LocalError struct {
	Op   string
	Path string
	Err  error
}

func (e *LocalError) Error() string { return e.Op + " " + e.Path + ": " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *LocalError) Unwrap() error { return e.Err }

// ConnectionError is a failure of the transport: dial, TLS handshake, read or
// write, or the peer closing the connection.
type ConnectionError struct {
	Op  string
	Err error
}

func (e *ConnectionError) Error() string { return e.Op + ": " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *ConnectionError) Unwrap() error { return e.Err }

// Retryable reports whether an attempt that failed with err is worth repeating
// on a new connection: transport failures, temporary refusals and
// interruptions that announce a restart. Authentication failures, missing
// files, local I/O errors and cancellations are final.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	var (
		le *LocalError
		ce *ConnectionError
		re *RejectedError
		ae *AbortError
		te *TransferError
		pe *ProtocolError
		rl *RefusedLocallyError
		rr *RestartRefusedError
	)
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	case errors.As(err, &le):
		return false
	case errors.As(err, &rr):
		// A temporary refusal (2/201) may let the restart through later;
		// the others would only repeat.
		return rr.Diagnostic != 0 && retryableDiag(rr.Diagnostic)
	case errors.As(err, &rl):
		// An unknown restart point dropped the state: the next attempt
		// starts over. Other local refusals would only repeat.
		return rl.Diagnostic == fpdu.DiagRestartPointRefused
	case errors.As(err, &re):
		return retryableDiag(re.Diagnostic)
	case errors.As(err, &te):
		if te.Op == fpdu.IDT {
			return te.EndCode == 4 || te.EndCode == 8
		}
		return retryableDiag(te.Diagnostic)
	case errors.As(err, &ae):
		return ae.Diagnostic != fpdu.DiagNotAuthorised && ae.Diagnostic != fpdu.DiagUnknownServer &&
			ae.Diagnostic != fpdu.DiagVersionUnsupported
	case errors.As(err, &pe):
		// Count mismatches can come from a cut mid-transfer being resumed
		// badly by the peer; a fresh attempt is the only remedy.
		return pe.Diagnostic == fpdu.DiagCountMismatch
	case errors.As(err, &ce):
		return true
	}
	return false
}

func retryableDiag(d fpdu.Diagnostic) bool {
	switch d {
	case fpdu.DiagCongestion, fpdu.DiagServerUnavailable, fpdu.DiagTooManyConnections,
		fpdu.DiagTooManyForPartner, fpdu.DiagCallBackLater, fpdu.DiagNetworkIncident,
		fpdu.DiagIdleTimeout, fpdu.DiagAdministrativeStop, fpdu.DiagTimerExpired,
		fpdu.DiagTemporaryNoResources, fpdu.DiagTemporaryNoResources2, fpdu.DiagNotPrioritised,
		fpdu.DiagFileBusy, fpdu.DiagIOError, fpdu.DiagSystemError, fpdu.DiagTooManyUnackedSyncs,
		fpdu.DiagAbnormalEnd, fpdu.DiagTransmissionError,
		// The restart point could not be agreed; the restart state is
		// dropped, so the next attempt starts over.
		fpdu.DiagRestartPointRefused:
		return true
	}
	return false
}

// abortDiag is the diagnostic of the ABORT that ends a session after err.
func abortDiag(err error) fpdu.Diagnostic {
	var pe *ProtocolError
	switch {
	case errors.As(err, &pe):
		return pe.Diagnostic
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fpdu.DiagClosedByUser
	}
	return fpdu.DiagConnectionOther
}
