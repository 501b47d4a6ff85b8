//go:build unix

package netpeek

import (
	"errors"
	"net"
	"syscall"
)

// Readable reports whether c has input waiting, or is at end of file or
// in error (which a read then reports). known is false when it cannot
// tell: for a connection without a file descriptor, and for TLS, whose
// layer may hold decrypted input that the socket no longer shows.
func Readable(c net.Conn) (ready, known bool) {
	sc, ok := c.(syscall.Conn) // *tls.Conn is not one
	if !ok {
		return false, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false, false
	}
	ready = true
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ready = n > 0 || !(errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK))
		return true // never wait for the poller
	})
	if err != nil {
		return true, true // closed: a read says so
	}
	return ready, true
}
