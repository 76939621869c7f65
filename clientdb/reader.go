package clientdb

import (
	"errors"
	"fmt"
	"io/fs"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Reader reads the store from any process while Caddy writes to it. It
// follows the locking protocol described in the package documentation and
// holds no lock between calls. A Reader is safe for concurrent use.
type Reader struct {
	path string

	// pg is the PostgreSQL store read instead of the file, if set.
	pg *Postgres
}

// OpenReader returns a Reader for the database at path. The lock files must
// exist (the writer's first commit creates them) or be creatable by this
// process; before the store's directory exists, the Reader sees an empty
// store.
func OpenReader(path string) (*Reader, error) {
	r := &Reader{path: path}
	l, err := r.openLocks()
	if errors.Is(err, fs.ErrNotExist) {
		// The store's directory does not exist yet: nothing was ever
		// registered, and View shows an empty store until it is.
		return r, nil
	}
	if err != nil {
		return nil, err
	}
	if err := l.close(); err != nil {
		return nil, fmt.Errorf("closing lock files of %s: %w", path, err)
	}
	return r, nil
}

// openLocks opens the lock files, creating them only if they are missing,
// so that a reader without write permission can use existing ones.
func (r *Reader) openLocks() (*locks, error) {
	l, err := openLocks(r.path, false)
	if errors.Is(err, fs.ErrNotExist) {
		l, err = openLocks(r.path, true)
	}
	if err != nil {
		return nil, fmt.Errorf("opening store %s: %w", r.path, err)
	}
	return l, nil
}

// View runs fn in a read-only transaction. While fn runs, the writer waits,
// so fn should be short. If the database file does not exist yet, fn sees
// an empty store.
func (r *Reader) View(fn func(Tx) error) error {
	if r.pg != nil {
		return r.pg.View(fn)
	}
	// flock(2) locks belong to an open file, so each call opens its own:
	// two concurrent calls sharing one file would share one lock, and the
	// first to finish would release it under the other.
	l, err := r.openLocks()
	if errors.Is(err, fs.ErrNotExist) {
		return fn(&boltTx{})
	}
	if err != nil {
		return err
	}
	defer l.close()
	if err := l.shared(); err != nil {
		return err
	}
	defer l.unlock()

	db, err := bolt.Open(r.path, 0, &bolt.Options{
		ReadOnly: true,
		Timeout:  boltTimeout,
	})
	if errors.Is(err, fs.ErrNotExist) {
		return fn(&boltTx{})
	}
	if err != nil {
		return fmt.Errorf("opening store %s: %w", r.path, err)
	}
	defer db.Close()

	return db.View(func(tx *bolt.Tx) error {
		if err := checkSchema(tx); err != nil {
			return err
		}
		return fn(&boltTx{tx: tx})
	})
}

// Lookup returns the live client with the given ID. It returns
// [ErrDeleted] for a deleted or expired client, [ErrDisabled] for one an
// operator disabled, and [ErrNotFound] for an unknown one;
// [Reader.Tombstone] tells more about a deleted one.
func (r *Reader) Lookup(id string) (*Client, error) {
	var c *Client
	err := r.View(func(tx Tx) error {
		var err error
		c, err = tx.Client(id)
		return err
	})
	if err == nil && c.Disabled() {
		return nil, ErrDisabled
	}
	return c, err
}

// Tombstone returns the tombstone of a deleted or expired client, or
// [ErrNotFound].
func (r *Reader) Tombstone(id string) (*Tombstone, error) {
	var ts *Tombstone
	err := r.View(func(tx Tx) error {
		var err error
		ts, err = tx.Tombstone(id)
		return err
	})
	return ts, err
}

// VerifySecret looks up a client and reports whether secret is its current,
// unexpired secret. It returns [ErrNotFound] for an unknown client,
// [ErrDeleted] for a deleted one and [ErrDisabled] for a disabled one.
func (r *Reader) VerifySecret(id, secret string, now time.Time) (bool, error) {
	c, err := r.Lookup(id)
	if err != nil {
		return false, err
	}
	return c.VerifySecret(secret, now), nil
}

// Close releases the Reader: the connections of a PostgreSQL one. A
// Reader of a bbolt file holds nothing between calls.
func (r *Reader) Close() error {
	if r.pg != nil {
		return r.pg.Close()
	}
	return nil
}
