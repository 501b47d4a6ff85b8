// Package client is the PeSIT E requester: it connects to a PeSIT server over
// TCP or TLS, pushes files (CREATE/WRITE), pulls files (SELECT/READ) and sends
// messages (MSG), with sync points, restart from the last acknowledged sync
// point and retries on a new connection.
//
// A Session is one PeSIT connection, used by one goroutine at a time. Push and
// Pull wrap Dial, Send/Receive and Release in a retry loop that resumes an
// interrupted transfer from the restart state kept in a small JSON file, so
// that even a new process can resume.
//
// Every FPDU a session sends or receives goes through the requester's state
// machine (pesit/fsm), the one authority on protocol state: an FPDU it
// refuses from the server ends the session with ABORT and its diagnostic.
// FPDUs are built with the typed builders of pesit/fpdu, DTFs packed by
// fpdu.Packer, as the server does.
//
// Files, one concern each:
//
//	session.go   Session, Dial (pre-connection, CONNECT/ACONNECT), Release, Abort
//	conn.go      the connection layer: the machine, reads, writes, deadlines, errors
//	file.go      ORF, CRF, DESELECT, shared by push and pull
//	send.go      a push up to its data phase: restart state, CREATE, ORF, WRITE
//	sender.go    the data phase of a push: articles, sync points, RESYN, IDT, TRANS.END
//	source.go    a local file cut into articles (fixed blocks or text lines)
//	receive.go   a pull: SELECT, READ, the data phase, delivery
//	message.go   MSG
//	state.go     restart state (JSON)
//	retry.go     Push, Pull: retries on a new connection
package client
