// Package fsm holds the PeSIT E protocol state machines of both sides of a
// connection - the requester (client) and the responder (server) - as
// explicit tables of (state, FPDU kind) -> next state, guards and effects
// (table.go), following spec §4.8 and digest §4. It also holds the
// negotiation rules of the connection and file-selection phases
// (negotiate.go) and the sync-point accounting of a transfer (SyncWindow).
// It does no I/O, starts no goroutine, and does not allocate for data FPDUs.
//
// # Use
//
// Give a Machine every FPDU received (Received) and every FPDU sent (Sent),
// in wire order. Received returns what to do (Deliver, Answer, Ignore,
// Close) or a *Violation carrying the diagnostic of the ABORT to send.
// After Answer, Owed names the FPDU the local side owes. Sent refuses, with
// a *Violation whose Sent field is set, an FPDU the local side may not
// send in the state: a bug in the caller. A Violation never changes the
// machine.
//
// Both Received and Sent run fpdu.Validate on the FPDU (fpdu.SplitData on a
// data FPDU, whose articles Articles then holds), so the caller need not. The machine checks the PIs it reads itself: PI 22 (CONNECT), PI 7
// and PI 23 (CONNECT, ACONNECT), PI 2 of the answers, PI 15, PI 18, PI 19
// and PI 20. It does not check PI 6 (see NegotiateVersion), the partner's
// identity, nor file attributes: those are the server's and client's.
//
// # Choices where the specification is silent or garbled
//
//   - The spec's "pas de traitement" cells are collisions (§4.8.3): an FPDU
//     the peer sent before it saw our IDT or RESYN is Ignored, not aborted
//     (data arriving after the server's IDT for a full disk, for example).
//     On a tie the requester wins.
//   - ab is set when an IDT with PI 19 = 8, 12 or 16 (suspension,
//     cancellation) is acknowledged, as §4.8.1.3 note 1 says; code 4 (error,
//     a restart follows) and an absent code leave it clear.
//   - IDT may be sent in TDx02, 03, 04 and 07; it is accepted from the peer
//     in TDx08 as well. TRANS.END and ACK(TRANS.END) end the transfer;
//     an IDT after TRANS.END would race the answer.
//   - A refused CREATE or SELECT returns to CN03, from where RELEASE is
//     valid: CX does not DESELECT after a refusal. ACK(CRF) and
//     ACK(DESELECT) change state whatever their diagnostic.
//   - PI 22 is enforced on the answer: the server refuses a CREATE on a
//     read connection (or a SELECT on a write connection) with 2/226; a
//     positive ACK is refused by Sent.
//   - ACK(SYN) is invalid when the window is 0 (no acknowledgements were
//     negotiated) or no SYN is outstanding. Sync numbering after a restart
//     from point p resumes at p+1; a requester also accepts 1 for the first
//     SYN, a responder does not (3/318: its journal names points by number).
//   - The message service (MSG, MSGDM/MSGMM/MSGFM, ACK(MSG)) is valid only
//     in CN03; its states MS01A/MS01B/MS02 are Vectis names.
package fsm
