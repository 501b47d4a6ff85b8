package netpeek

import (
	"net"
	"testing"
)

// TestReadableUnknown: a connection without a file descriptor cannot be
// looked at; the caller is told so rather than told "no input".
func TestReadableUnknown(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, known := Readable(a); known {
		t.Fatal("Readable claims to know whether a net.Pipe has input")
	}
}
