package fpdu

import "fmt"

// Diagnostic is the value of PI 2: an error type (byte 1) and a reason code
// (bytes 2-3, big-endian). It is packed as type<<16 | reason so that the
// well-known diagnostics can be constants, e.g. 3/311 is 3<<16 | 311.
type Diagnostic uint32

// MakeDiagnostic builds a diagnostic from its type and reason code.
func MakeDiagnostic(typ uint8, reason uint16) Diagnostic {
	return Diagnostic(uint32(typ)<<16 | uint32(reason))
}

// DiagnosticFromBytes decodes the 3-byte wire form.
func DiagnosticFromBytes(b [3]byte) Diagnostic {
	return MakeDiagnostic(b[0], uint16(b[1])<<8|uint16(b[2]))
}

// Type is the error type: 0 success, 1 transmission, 2 file level, 3 connection level.
func (d Diagnostic) Type() uint8 { return uint8(d >> 16) }

// Reason is the full reason code, e.g. 311 for 3/311.
func (d Diagnostic) Reason() uint16 { return uint16(d) }

// OK reports whether d is the success diagnostic 0/000.
func (d Diagnostic) OK() bool { return d == DiagOK }

// Bytes is the 3-byte wire form.
func (d Diagnostic) Bytes() [3]byte {
	return [3]byte{d.Type(), byte(d.Reason() >> 8), byte(d.Reason())}
}

// String renders d as "type/reason", e.g. "3/311".
func (d Diagnostic) String() string { return fmt.Sprintf("%d/%03d", d.Type(), d.Reason()) }

// Text is the spec's label for d, or a generic one for an unlisted code.
func (d Diagnostic) Text() string {
	if t, ok := diagTexts[d]; ok {
		return t
	}
	return "unlisted diagnostic"
}

// Known reports whether d is one of the spec's diagnostics: metrics label
// only those, since a peer can send any of 256 × 65,536 codes.
func (d Diagnostic) Known() bool {
	_, ok := diagTexts[d]
	return ok
}

// Error makes a Diagnostic usable as an error, so that code deep in a session
// can return the diagnostic the peer must see.
func (d Diagnostic) Error() string { return "pesit diagnostic " + d.String() + ": " + d.Text() }

// The diagnostics of spec Annex D (digest §5).
const (
	DiagOK Diagnostic = 0

	DiagTransmissionError Diagnostic = 1<<16 | 100

	DiagInsufficientCharacteristics Diagnostic = 2<<16 | 200
	DiagTemporaryNoResources        Diagnostic = 2<<16 | 201
	DiagTemporaryNoResources2       Diagnostic = 2<<16 | 202
	DiagNotPrioritised              Diagnostic = 2<<16 | 203
	DiagFileExists                  Diagnostic = 2<<16 | 204
	DiagFileNotFound                Diagnostic = 2<<16 | 205
	DiagQuotaExceeded               Diagnostic = 2<<16 | 206
	DiagFileBusy                    Diagnostic = 2<<16 | 207
	DiagFileTooOld                  Diagnostic = 2<<16 | 208
	DiagMessageTypeRefused          Diagnostic = 2<<16 | 209
	DiagCompressionRefused          Diagnostic = 2<<16 | 210
	DiagCannotOpen                  Diagnostic = 2<<16 | 211
	DiagCannotClose                 Diagnostic = 2<<16 | 212
	DiagIOError                     Diagnostic = 2<<16 | 213
	DiagRestartPointRefused         Diagnostic = 2<<16 | 214
	DiagSystemError                 Diagnostic = 2<<16 | 215
	DiagVoluntaryStop               Diagnostic = 2<<16 | 216
	DiagTooManyUnackedSyncs         Diagnostic = 2<<16 | 217
	DiagResyncImpossible            Diagnostic = 2<<16 | 218
	DiagSpaceExhausted              Diagnostic = 2<<16 | 219
	DiagArticleTooLong              Diagnostic = 2<<16 | 220
	DiagDataError221                Diagnostic = 2<<16 | 221
	DiagTooMuchDataWithoutSync      Diagnostic = 2<<16 | 222
	DiagAbnormalEnd                 Diagnostic = 2<<16 | 223
	DiagFileLargerThanAnnounced     Diagnostic = 2<<16 | 224
	DiagDeselectError               Diagnostic = 2<<16 | 225
	DiagTransferRefused             Diagnostic = 2<<16 | 226
	DiagFileOther                   Diagnostic = 2<<16 | 299

	DiagCongestion         Diagnostic = 3<<16 | 300
	DiagUnknownServer      Diagnostic = 3<<16 | 301
	DiagServerUnavailable  Diagnostic = 3<<16 | 302
	DiagTooManyConnections Diagnostic = 3<<16 | 303
	DiagNotAuthorised      Diagnostic = 3<<16 | 304
	DiagNegotiation305     Diagnostic = 3<<16 | 305
	DiagNegotiation306     Diagnostic = 3<<16 | 306
	DiagNegotiation307     Diagnostic = 3<<16 | 307
	DiagVersionUnsupported Diagnostic = 3<<16 | 308
	DiagTooManyForPartner  Diagnostic = 3<<16 | 309
	DiagNetworkIncident    Diagnostic = 3<<16 | 310
	DiagProtocolError      Diagnostic = 3<<16 | 311
	DiagClosedByUser       Diagnostic = 3<<16 | 312
	DiagIdleTimeout        Diagnostic = 3<<16 | 313
	DiagConnection314      Diagnostic = 3<<16 | 314
	DiagNegotiationFailure Diagnostic = 3<<16 | 315
	DiagAdministrativeStop Diagnostic = 3<<16 | 316
	DiagTimerExpired       Diagnostic = 3<<16 | 317
	DiagBadParameter       Diagnostic = 3<<16 | 318
	DiagCountMismatch      Diagnostic = 3<<16 | 319
	DiagTooManyResyncs     Diagnostic = 3<<16 | 320
	DiagCallBackupNumber   Diagnostic = 3<<16 | 321
	DiagCallBackLater      Diagnostic = 3<<16 | 322
	DiagConnectionOther    Diagnostic = 3<<16 | 399
)

var diagTexts = map[Diagnostic]string{
	DiagOK:                          "success",
	DiagTransmissionError:           "transmission error",
	DiagInsufficientCharacteristics: "insufficient file characteristics",
	DiagTemporaryNoResources:        "temporary lack of resources",
	DiagTemporaryNoResources2:       "temporary lack of resources",
	DiagNotPrioritised:              "transfer not prioritised",
	DiagFileExists:                  "file already exists",
	DiagFileNotFound:                "file does not exist",
	DiagQuotaExceeded:               "space quota would be exceeded",
	DiagFileBusy:                    "file busy",
	DiagFileTooOld:                  "file too old",
	DiagMessageTypeRefused:          "message type not accepted",
	DiagCompressionRefused:          "presentation negotiation failed",
	DiagCannotOpen:                  "cannot open file",
	DiagCannotClose:                 "cannot close file",
	DiagIOError:                     "blocking input/output error",
	DiagRestartPointRefused:         "restart point negotiation failed",
	DiagSystemError:                 "system error",
	DiagVoluntaryStop:               "voluntary early stop",
	DiagTooManyUnackedSyncs:         "too many unacknowledged sync points",
	DiagResyncImpossible:            "resynchronisation impossible",
	DiagSpaceExhausted:              "file space exhausted",
	DiagArticleTooLong:              "article longer than expected",
	DiagDataError221:                "data error",
	DiagTooMuchDataWithoutSync:      "too much data without a sync point",
	DiagAbnormalEnd:                 "abnormal end of transfer",
	DiagFileLargerThanAnnounced:     "file larger than announced",
	DiagDeselectError:               "deselect error",
	DiagTransferRefused:             "transfer refused",
	DiagFileOther:                   "other file-level error",
	DiagCongestion:                  "local congestion",
	DiagUnknownServer:               "requested server id unknown",
	DiagServerUnavailable:           "server unavailable",
	DiagTooManyConnections:          "too many connections",
	DiagNotAuthorised:               "requester not authorised",
	DiagNegotiation305:              "negotiation failure",
	DiagNegotiation306:              "negotiation failure",
	DiagNegotiation307:              "negotiation failure",
	DiagVersionUnsupported:          "version not supported",
	DiagTooManyForPartner:           "too many connections for this partner",
	DiagNetworkIncident:             "network incident",
	DiagProtocolError:               "remote PeSIT protocol error",
	DiagClosedByUser:                "closed by user",
	DiagIdleTimeout:                 "idle timer expired",
	DiagConnection314:               "connection error",
	DiagNegotiationFailure:          "negotiation failure",
	DiagAdministrativeStop:          "administrative shutdown",
	DiagTimerExpired:                "timer expired",
	DiagBadParameter:                "mandatory parameter missing or invalid",
	DiagCountMismatch:               "wrong byte or article count",
	DiagTooManyResyncs:              "too many resynchronisations",
	DiagCallBackupNumber:            "call the backup number",
	DiagCallBackLater:               "call back later",
	DiagConnectionOther:             "other connection-level error",
}
