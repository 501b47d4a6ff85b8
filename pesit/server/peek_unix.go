//go:build unix

package server

import (
	"errors"
	"net"
	"syscall"
)

// readable reports, without blocking, whether c has input waiting (or is
// at end of file or in error, which a read then reports). It says true
// when it cannot tell, and the caller reads with a short deadline: for a
// connection without a file descriptor, and for TLS, whose layer may hold
// decrypted input that the socket no longer shows.
func readable(c net.Conn) bool {
	sc, ok := c.(syscall.Conn) // *tls.Conn is not one

	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	ready := true
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ready = n > 0 || !(errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK))
		return true // never wait for the poller
	})
	return ready || err != nil
}
