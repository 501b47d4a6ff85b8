package server

import (
	"os"

	"golang.org/x/sys/unix"
)

// The restart index is an extended attribute of the open file, set and
// read through its descriptor (the name may have changed since it was
// opened; the descriptor cannot).

func setAttr(f *os.File, name string, v []byte) error {
	return fdCall(f, func(fd int) error { return unix.Fsetxattr(fd, name, v, 0) })
}

func getAttr(f *os.File, name string, dst []byte) (int, error) {
	var n int
	err := fdCall(f, func(fd int) (err error) {
		n, err = unix.Fgetxattr(fd, name, dst)
		return err
	})
	return n, err
}

func removeAttr(f *os.File, name string) error {
	err := fdCall(f, func(fd int) error { return unix.Fremovexattr(fd, name) })
	if err == unix.ENODATA {
		return nil
	}
	return err
}

func fdCall(f *os.File, op func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var opErr error
	if err := rc.Control(func(fd uintptr) { opErr = op(int(fd)) }); err != nil {
		return err
	}
	return opErr
}
