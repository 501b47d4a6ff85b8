package server

import (
	"net"

	"github.com/vectis-ft/vectis/pesit/internal/netpeek"
)

// readable reports, without blocking, whether c has input waiting (or is
// at end of file or in error, which a read then reports). It says true
// when it cannot tell, and the caller reads with a short deadline: for a
// connection without a file descriptor, for TLS, whose layer may hold
// decrypted input that the socket no longer shows, and where the platform
// cannot look without reading.
func readable(c net.Conn) bool {
	ready, known := netpeek.Readable(c)
	return ready || !known
}
