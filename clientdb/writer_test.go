package clientdb

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"
)

func TestWriterUpdateVisibleToReader(t *testing.T) {
	w, path := newWriter(t)
	r := openReader(t, path)
	want := testClient("abc")

	err := w.Update(context.Background(), func(tx Tx) error {
		return tx.Create(want)
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}

	got, err := r.Lookup("abc")
	if err != nil {
		t.Fatalf("Lookup: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Lookup = %+v, want %+v", got, want)
	}

	// Writer.View, which the handler uses, reads the same way.
	err = w.View(func(tx Tx) error {
		got, err = tx.Client("abc")
		return err
	})
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Writer.View = %+v, %v; want %+v", got, err, want)
	}
}

// TestNewWriterTouchesNothing checks that NewWriter leaves the disk alone
// (a configuration check must leave no trace) and that the first commit
// creates the directory, the lock files readable by all, and the database.
func TestNewWriterTouchesNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a")
	path := filepath.Join(dir, "b", "clients.db")
	w, err := NewWriter(path)
	if err != nil {
		t.Fatalf("NewWriter: %v", err)
	}
	if w.Path() != path {
		t.Errorf("Path = %q, want %q", w.Path(), path)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("store directory after NewWriter: %v, want none", err)
	}

	store(t, w, testClient("a"))
	for _, name := range []string{path, path + ".gate", path + ".lock"} {
		fi, err := os.Stat(name)
		if err != nil {
			t.Errorf("after the first commit: %v", err)
			continue
		}
		// Readers in other processes need to open them.
		if fi.Mode().Perm()&0o444 != 0o444 {
			t.Errorf("%s has mode %v, want readable by all", name, fi.Mode())
		}
	}
}

func TestWriterFnErrorLeavesNothing(t *testing.T) {
	w, path := newWriter(t)
	store(t, w, testClient("keep"))
	r := openReader(t, path)

	boom := errors.New("boom")
	err := w.Update(context.Background(), func(tx Tx) error {
		if err := tx.Create(testClient("half")); err != nil {
			return err
		}
		if err := tx.Put(testClient("keep2")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v, want the function's error", err)
	}

	for _, id := range []string{"half", "keep2"} {
		if _, err := r.Lookup(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Lookup(%q) after failed Update = %v, want ErrNotFound",
				id, err)
		}
	}
	if _, err := r.Lookup("keep"); err != nil {
		t.Errorf("earlier client lost: %v", err)
	}
}

// TestWriterGroupCommit queues changes while a commit runs, so that they
// form one group, and checks how the group commits when some fail: the
// failing ones get their own error, the rest land together.
func TestWriterGroupCommit(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name string
		// fail maps the index of a change to the error it meets:
		// ErrExists for a duplicate ID, boom for a failing function.
		fail map[int]error
	}{
		{name: "all succeed"},
		{name: "one duplicate", fail: map[int]error{3: ErrExists}},
		{name: "duplicate and error", fail: map[int]error{
			0: boom, 5: ErrExists, 9: boom,
		}},
		{name: "all fail", fail: map[int]error{
			0: boom, 1: ErrExists, 2: boom, 3: ErrExists,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const n = 12
			w, path := newWriter(t)
			taken := testClient("taken")
			store(t, w, taken)
			r := openReader(t, path)

			var mu sync.Mutex
			lastTx := make([]Tx, n)
			runs := make([]int, n)
			errs := make([]error, n)

			release := holdWriter(t, w)
			var wg sync.WaitGroup
			for i := range n {
				id := fmt.Sprintf("c%02d", i)
				if tc.fail[i] == ErrExists {
					id = "taken"
				}
				wg.Go(func() {
					errs[i] = w.Update(context.Background(),
						func(tx Tx) error {
							mu.Lock()
							lastTx[i] = tx
							runs[i]++
							mu.Unlock()
							err := tx.Create(testClient(id))
							if err == nil && tc.fail[i] == boom {
								// Written, then failed: the
								// write must not survive.
								return boom
							}
							return err
						})
				})
			}
			waitQueued(t, w, n)
			release()
			wg.Wait()

			var committed Tx
			for i := range n {
				id := fmt.Sprintf("c%02d", i)
				want := tc.fail[i]
				if !errors.Is(errs[i], want) {
					t.Errorf("change %d: Update = %v, want %v",
						i, errs[i], want)
				}
				if want != nil {
					// A failed change is dropped, never retried.
					if runs[i] != 1 {
						t.Errorf("failed change %d ran %d times",
							i, runs[i])
					}
					if want == boom {
						_, err := r.Lookup(id)
						if !errors.Is(err, ErrNotFound) {
							t.Errorf("failed change %d stored: %v",
								i, err)
						}
					}
					continue
				}

				if _, err := r.Lookup(id); err != nil {
					t.Errorf("change %d not stored: %v", i, err)
				}
				// Every surviving change ran last in one and the
				// same transaction: the group committed once.
				if committed == nil {
					committed = lastTx[i]
				} else if lastTx[i] != committed {
					t.Errorf("change %d committed apart from the group", i)
				}
			}

			got, err := r.Lookup("taken")
			if err != nil || !reflect.DeepEqual(got, taken) {
				t.Errorf("duplicate overwrote the stored client: %+v, %v",
					got, err)
			}
		})
	}
}

func TestWriterConcurrentUpdates(t *testing.T) {
	const n = 200
	w, path := newWriter(t)

	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			errs[i] = w.Update(context.Background(), func(tx Tx) error {
				return tx.Create(testClient(fmt.Sprintf("c%03d", i)))
			})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Update %d: %v", i, err)
		}
	}

	r := openReader(t, path)
	var count int
	err := r.View(func(tx Tx) error {
		count = tx.Count()
		for i := range n {
			id := fmt.Sprintf("c%03d", i)
			if _, err := tx.Client(id); err != nil {
				t.Errorf("client %s: %v", id, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("View: %v", err)
	}
	if count != n {
		t.Errorf("Count = %d, want %d", count, n)
	}
}

func TestWriterUpdateContext(t *testing.T) {
	tests := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{
			name: "cancelled before",
			ctx: func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				return ctx, cancel
			},
			want: context.Canceled,
		},
		{
			name: "deadline while queued",
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(),
					10*time.Millisecond)
			},
			want: context.DeadlineExceeded,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, _ := newWriter(t)

			// With the writer held the change cannot commit, so
			// only the context can end the wait.
			release := holdWriter(t, w)
			ctx, cancel := tc.ctx()
			defer cancel()
			done := make(chan error, 1)
			go func() {
				done <- w.Update(ctx, func(tx Tx) error {
					return tx.Put(testClient("late"))
				})
			}()
			select {
			case err := <-done:
				if !errors.Is(err, tc.want) {
					t.Errorf("Update = %v, want %v", err, tc.want)
				}
			case <-time.After(eventually):
				t.Error("Update ignored the end of its context")
			}
			release()
			drain(t, w)
		})
	}
}

// TestWriterStoreError checks that a store failure reaches every caller and
// that the writer keeps working for later changes.
func TestWriterStoreError(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "clients.db")
	w, err := NewWriter(path)
	if err != nil {
		t.Fatalf("NewWriter: %v", err)
	}

	// A directory where the database should be makes every open fail.
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	ran := false
	err = w.Update(context.Background(), func(Tx) error {
		ran = true
		return nil
	})
	if err == nil {
		t.Fatal("Update succeeded with a directory as database")
	}
	if ran {
		t.Error("function ran although the store could not be opened")
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	store(t, w, testClient("after"))
	r := openReader(t, path)
	if _, err := r.Lookup("after"); err != nil {
		t.Errorf("Lookup after recovery: %v", err)
	}
}
