//go:build unix

package server

import (
	"net"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/internal/testenv"
)

// TestReadable: the sender's poll reads only when the socket has input, so
// that it no longer waits out a 1 ms deadline per MiB sent; the input
// itself is left for the read.
func TestReadable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if readable(srv) {
		t.Fatal("readable with nothing sent")
	}
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, testenv.Awaiting("readable after a byte was sent", func() bool { return readable(srv) }))
	var b [2]byte
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := srv.Read(b[:]); n != 1 || b[0] != 'x' || err != nil {
		t.Fatalf("read after the peek: %d %q %v", n, b[:n], err)
	}
	if readable(srv) {
		t.Fatal("readable once the byte was read")
	}
	c.Close()
	// End of file is for the read to report.
	testenv.Eventually(t, 5*time.Second, testenv.Awaiting("readable at end of file", func() bool { return readable(srv) }))
}
