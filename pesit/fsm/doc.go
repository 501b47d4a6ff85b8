// Package fsm holds the PeSIT E protocol state machines of both sides of a
// connection - the requester (client) and the responder (server) - as
// explicit tables of (state, FPDU kind) -> next state, guards and effects
// (table.go), following spec §4.8 and digest §4. A Machine is told every
// FPDU received and sent; it answers whether the FPDU is valid there, what
// to do with it, and the ABORT diagnostic when it is not. It does no I/O.
//
// The package also holds the negotiation rules of the connection and file
// selection phases (negotiate.go) and the sync-point accounting of a
// transfer (SyncWindow), which both sides share.
package fsm
