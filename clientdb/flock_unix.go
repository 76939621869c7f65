//go:build linux || darwin || freebsd || openbsd || netbsd || dragonfly

package clientdb

import (
	"errors"
	"os"
	"syscall"
)

const (
	lockSh = syscall.LOCK_SH
	lockEx = syscall.LOCK_EX
	lockUn = syscall.LOCK_UN
)

// flock applies a blocking flock(2) operation, retrying when a signal
// interrupts the wait.
func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}
