//go:build !unix

package netpeek

import "net"

// Readable cannot look without reading here: known is false.
func Readable(net.Conn) (ready, known bool) { return false, false }
