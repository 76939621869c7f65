package clientdb

import (
	"fmt"
	"os"
)

// Suffixes of the lock files kept beside the database file.
const (
	gateSuffix = ".gate"
	lockSuffix = ".lock"
)

// lockMode is the permission of lock files this package creates. Lock files
// must be readable by every process that reads the store.
const lockMode = 0o644

// locks holds the two lock files of one database, opened once and locked
// and unlocked per operation. flock(2) locks belong to an open file, so two
// values of locks for the same database exclude each other even inside one
// process.
type locks struct {
	gate *os.File
	data *os.File
}

// openLocks opens (and if allowed creates) the lock files of the database
// at path.
func openLocks(path string, create bool) (*locks, error) {
	gate, err := openLockFile(path+gateSuffix, create)
	if err != nil {
		return nil, err
	}
	data, err := openLockFile(path+lockSuffix, create)
	if err != nil {
		gate.Close()
		return nil, err
	}
	return &locks{gate: gate, data: data}, nil
}

func openLockFile(name string, create bool) (*os.File, error) {
	if create {
		// Read-only suffices for flock, so lock files created by another
		// user (say, "caddy validate" run as root) still work.
		f, err := os.OpenFile(name, os.O_RDONLY|os.O_CREATE, lockMode)
		if err != nil {
			return nil, fmt.Errorf("opening lock file: %w", err)
		}
		return f, nil
	}

	// A reader may lack write permission; flock needs none.
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("opening lock file: %w", err)
	}
	return f, nil
}

// shared takes the reader's side of the protocol: pass through the gate,
// then hold the data lock shared.
func (l *locks) shared() error {
	if err := flock(l.gate, lockEx); err != nil {
		return fmt.Errorf("locking %s: %w", l.gate.Name(), err)
	}
	if err := flock(l.gate, lockUn); err != nil {
		return fmt.Errorf("unlocking %s: %w", l.gate.Name(), err)
	}
	if err := flock(l.data, lockSh); err != nil {
		return fmt.Errorf("locking %s: %w", l.data.Name(), err)
	}
	return nil
}

// exclusive takes the writer's side of the protocol: hold the gate while
// waiting for the data lock, so that no new reader gets in meanwhile.
func (l *locks) exclusive() error {
	if err := flock(l.gate, lockEx); err != nil {
		return fmt.Errorf("locking %s: %w", l.gate.Name(), err)
	}
	err := flock(l.data, lockEx)
	if uerr := flock(l.gate, lockUn); uerr != nil && err == nil {
		flock(l.data, lockUn)
		return fmt.Errorf("unlocking %s: %w", l.gate.Name(), uerr)
	}
	if err != nil {
		return fmt.Errorf("locking %s: %w", l.data.Name(), err)
	}
	return nil
}

// unlock releases the data lock taken by shared or exclusive.
func (l *locks) unlock() error {
	if err := flock(l.data, lockUn); err != nil {
		return fmt.Errorf("unlocking %s: %w", l.data.Name(), err)
	}
	return nil
}

// close closes both lock files, which also drops any lock still held.
func (l *locks) close() error {
	err := l.gate.Close()
	if derr := l.data.Close(); err == nil {
		err = derr
	}
	return err
}
