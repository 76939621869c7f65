package clientdb

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Writer applies changes to the store with group commit, following the
// locking protocol described in the package documentation. It keeps the
// database closed between commits so that readers can open it.
//
// A Writer holds no file open while idle, so it needs no closing, and it
// stays usable for as long as anyone holds it. Only one Writer per database
// file should exist in a process; more are correct (the locks serialise
// them) but commit in smaller groups.
type Writer struct {
	path string

	mu       sync.Mutex
	queue    []*change
	running  bool
	onCommit func()
	observe  func(changes int, took time.Duration)
}

// change is one caller's function waiting to be committed.
type change struct {
	fn   func(Tx) error
	err  error
	done chan struct{}
}

// NewWriter returns a Writer for the database at path. It touches nothing
// on disk: the directory, the lock files and the database are created by
// the first commit, so that a Writer made only to check a configuration
// leaves no trace.
func NewWriter(path string) (*Writer, error) {
	if path == "" {
		return nil, errors.New("creating store writer: empty path")
	}
	return &Writer{path: path}, nil
}

// Path returns the database file's path.
func (w *Writer) Path() string {
	return w.path
}

// Update runs fn in a read-write transaction and returns once that
// transaction is durable on disk, or returns fn's error, in which case
// nothing fn did is kept. fn may run more than once and together with other
// callers' functions in one transaction, so it must only act on the
// transaction it is given.
//
// If ctx has ended, Update returns its error and changes nothing. If ctx
// ends while the change waits, Update returns ctx's error; the change may
// still be committed.
func (w *Writer) Update(ctx context.Context, fn func(Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c := &change{fn: fn, done: make(chan struct{})}

	w.mu.Lock()
	w.queue = append(w.queue, c)
	if !w.running {
		w.running = true
		go w.run()
	}
	w.mu.Unlock()

	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// OnCommit sets fn to be called after every successful commit, once the
// changes are durable and before the callers of Update are released: a
// cache of the store can drop what the commit may have changed. Call it
// before the first Update; fn must be quick and must not call Update.
func (w *Writer) OnCommit(fn func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.onCommit = fn
}

// ObserveCommits sets fn to be called after every successful commit with
// the number of changes it held and the time it took, from waiting for the
// lock to the fsync. Call it before the first Update; fn must be quick.
func (w *Writer) ObserveCommits(fn func(changes int, took time.Duration)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.observe = fn
}

// View runs fn in a read-only transaction, as a [Reader] would.
func (w *Writer) View(fn func(Tx) error) error {
	r := Reader{path: w.path}
	return r.View(fn)
}

// sessionHold bounds how long the database stays open across consecutive
// group commits. While changes keep coming, the writer keeps the file open
// from one commit to the next: opening, mapping and closing a bbolt file
// costs CPU comparable to a commit. Readers, which cannot open the file
// meanwhile, wait at most this long plus one commit.
const sessionHold = 5 * time.Millisecond

// run commits queued changes until the queue is empty. Changes that arrive
// during a commit form the next group, so the group size follows the load
// without any delay timer.
func (w *Writer) run() {
	var s *session
	for {
		group := w.take()
		if len(group) == 0 {
			if s != nil {
				s.close()
				s = nil
			}
			w.mu.Lock()
			if len(w.queue) > 0 {
				w.mu.Unlock()
				continue
			}
			w.running = false
			w.mu.Unlock()
			return
		}

		if s != nil && time.Since(s.opened) >= sessionHold {
			// Let waiting readers in.
			s.close()
			s = nil
		}
		start := time.Now()
		if s == nil {
			var err error
			if s, err = w.open(); err != nil {
				fail(group, err)
				continue
			}
		}
		ok, committed := w.commitGroup(s, group, start)
		// After a failure of the store itself, start afresh. When no
		// change waits, close before answering, so that the writer
		// holds nothing once its callers have their answers.
		if !ok || w.idle() || time.Since(s.opened) >= sessionHold {
			s.close()
			s = nil
		}
		for _, c := range committed {
			close(c.done)
		}
	}
}

// idle reports whether no change is queued.
func (w *Writer) idle() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.queue) == 0
}

// take removes and returns the queued changes.
func (w *Writer) take() []*change {
	w.mu.Lock()
	defer w.mu.Unlock()
	group := w.queue
	w.queue = nil
	return group
}

// fail ends every change of the group with err.
func fail(group []*change, err error) {
	for _, c := range group {
		c.err = err
		close(c.done)
	}
}

// commitGroup commits a group of changes in the session. When one change
// fails, the transaction is rolled back, that change gets its error and
// the rest are committed again without it. It reports false when the
// store itself failed, and returns the committed changes, which the caller
// releases.
func (w *Writer) commitGroup(s *session, group []*change,
	start time.Time) (bool, []*change) {
	for len(group) > 0 {
		failed, err := s.commit(group)
		switch {
		case failed >= 0:
			group[failed].err = err
			close(group[failed].done)
			group = append(group[:failed:failed], group[failed+1:]...)
		case err != nil:
			fail(group, err)
			return false, nil
		default:
			w.mu.Lock()
			onCommit, observe := w.onCommit, w.observe
			w.mu.Unlock()
			if observe != nil {
				observe(len(group), time.Since(start))
			}
			if onCommit != nil {
				onCommit()
			}
			return true, group
		}
	}
	return true, nil
}

// errChange marks the change that made a transaction fail.
var errChange = errors.New("change failed")

// session is the database held open, under the exclusive lock, for one
// or more group commits.
type session struct {
	path   string
	locks  *locks
	db     *bolt.DB
	opened time.Time
}

// open takes the writer's side of the lock protocol and opens the
// database, creating its directory and files on first use.
func (w *Writer) open() (*session, error) {
	// The lock files are opened per session so that an idle Writer holds
	// nothing.
	l, err := openLocks(w.path, true)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(w.path), 0o755); err != nil {
			return nil, fmt.Errorf("creating directory of store %s: %w", w.path, err)
		}
		l, err = openLocks(w.path, true)
	}
	if err != nil {
		return nil, fmt.Errorf("opening store %s: %w", w.path, err)
	}
	if err := l.exclusive(); err != nil {
		l.close()
		return nil, err
	}

	_, statErr := os.Stat(w.path)
	created := errors.Is(statErr, fs.ErrNotExist)

	db, err := bolt.Open(w.path, dbMode, &bolt.Options{Timeout: boltTimeout})
	if err != nil {
		l.unlock()
		l.close()
		return nil, fmt.Errorf("opening store %s: %w", w.path, err)
	}

	// bbolt syncs the file but not the directory entry of a new one. Sync
	// it now: the file stays even if the first transaction fails, and the
	// next session would not know it is new.
	if created {
		if err := syncDir(filepath.Dir(w.path)); err != nil {
			db.Close()
			l.unlock()
			l.close()
			return nil, fmt.Errorf("syncing directory of store %s: %w", w.path, err)
		}
	}
	return &session{path: w.path, locks: l, db: db, opened: time.Now()}, nil
}

// close closes the database and releases the lock. A failure to close
// after successful commits is not reported: the changes are on disk, and
// callers must not be told otherwise.
func (s *session) close() {
	s.db.Close()
	s.locks.unlock()
	s.locks.close()
}

// commit applies the group in one transaction and returns once it is on
// disk. It returns the index of a change that failed with that change's
// error, or -1 and an error of the store itself.
func (s *session) commit(group []*change) (int, error) {
	failed := -1
	var changeErr error
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := initSchema(tx); err != nil {
			return err
		}
		t := &boltTx{tx: tx}
		for i, c := range group {
			if err := c.fn(t); err != nil {
				failed, changeErr = i, err
				return errChange
			}
		}
		return nil
	})
	if failed >= 0 {
		return failed, changeErr
	}
	if err != nil {
		return -1, fmt.Errorf("committing to store %s: %w", s.path, err)
	}
	return -1, nil
}

// syncDir flushes a directory, making a file created in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
