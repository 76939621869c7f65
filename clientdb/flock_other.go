//go:build !(linux || darwin || freebsd || openbsd || netbsd || dragonfly)

package clientdb

import (
	"errors"
	"os"
)

const (
	lockSh = 1
	lockEx = 2
	lockUn = 8
)

// TODO: implement the lock protocol with LockFileEx on Windows; until then
// the store is refused there rather than used without cross-process locks.
func flock(*os.File, int) error {
	return errors.New("the client store's file locking is not supported on this platform")
}
