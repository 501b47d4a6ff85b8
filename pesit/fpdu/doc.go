// Package fpdu is the PeSIT E wire codec: TCP framing, the 6-byte FPDU header,
// PI/PGI parameter units, diagnostics, DTF articles and segment reassembly,
// and the optional EBCDIC pre-connection message.
//
// The package is pure: it reads and writes bytes and knows nothing of
// sessions, files or storage. Decoding is lenient where real peers deviate
// from the 1989 specification (non-minimal numbers, zero LI, long LI forms,
// unknown PIs, repeated PIs); encoding is strict (minimal numbers, ascending
// codes, fixed widths where peers need them: PI 2 and PI 7 on 3 bytes, PI 6
// on 1, PI 25 on 2). Errors caused by peer input wrap the PeSIT diagnostic a
// session should answer with, so that errors.Is(err, fpdu.DiagProtocolError)
// holds and DiagnosticOf(err) returns it: 3/311 for framing and layout, 3/318
// (a *ParamError naming the PI) for parameters, 2/220 for an over-long
// article.
//
// Files, one concern each:
//
//	fpdu.go      FPDU, Param, Params
//	params.go    parameter accessors and builders
//	pitable.go   the Hors-SIT PI table (type, lengths, PGI members)
//	decode.go    Decode and the PI/PGI parser
//	encode.go    AppendEncode
//	validate.go  Validate: mandatory PIs per kind, types, lengths, header ids
//	reader.go    Reader: frames, NSDU splitting, one reused buffer
//	writer.go    Writer: one FPDU per frame, Queue for concatenation
//	article.go   DTF articles, Reassembler, Counter (PI 27/PI 28)
//	pack.go      Packer: articles into DTFs (an empty line never travels alone), segments
//	msg_*.go     typed builders (NewConnect, NewCreate, NewSyn ...) and views
//	             (ReadAckSelect, ReadCounts, ReadIDT ...) of the FPDUs client and
//	             server assemble, one file per message family, over Params
//	abort.go     NewAbort (bare or PI form)
//	preconn.go   pre-connection message, ACK0/NAK0 (EBCDIC: pesit/internal/codepage)
//	dump.go      String, with PI 5 redacted
//
// Hot path: Reader.Next followed by FPDU.ForEachArticle or Reassembler.Add
// allocates nothing for data FPDUs; the returned FPDU and its slices are
// valid until the next call to Next (use Clone to keep them).
package fpdu
