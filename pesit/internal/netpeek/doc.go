// Package netpeek looks, without blocking and without reading, whether a
// connection has input waiting: the PeSIT sender's look for ACK(SYN) or
// IDT between two MiB of data (pesit/server), and the receiver's choice
// between reading on and acknowledging a sync point first (pesit/client).
package netpeek
