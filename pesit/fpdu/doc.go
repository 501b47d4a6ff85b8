// Package fpdu is the PeSIT E wire codec: TCP framing, the 6-byte FPDU header,
// PI/PGI parameter units, diagnostics, DTF articles and segment reassembly,
// and the optional EBCDIC pre-connection message.
//
// The package is pure: it reads and writes bytes and knows nothing of
// sessions, files or storage. Decoding is lenient where real peers deviate
// from the 1989 specification (non-minimal numbers, zero LI, unknown PIs,
// repeated PIs); encoding is strict (minimal numbers, ascending codes, fixed
// widths where the peers need them). Errors caused by peer input wrap the
// PeSIT diagnostic a session should answer with, so that
// errors.Is(err, fpdu.DiagProtocolError) or errors.As(err, &d) work.
package fpdu
