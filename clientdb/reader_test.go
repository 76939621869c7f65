package clientdb

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestReaderBeforeFirstWrite reads a store whose database file does not
// exist yet, as a reader started before Caddy's first registration does.
func TestReaderBeforeFirstWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.db")
	r := openReader(t, path)

	_, err := r.Lookup("anything")
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup = %v, want ErrNotFound", err)
	}
	if errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Lookup reports the missing file: %v", err)
	}
	ok, err := r.VerifySecret("anything", "secret", time.Now())
	if ok || !errors.Is(err, ErrNotFound) {
		t.Errorf("VerifySecret = %v, %v; want false, ErrNotFound", ok, err)
	}

	calls := 0
	count := -1
	err = r.View(func(tx Tx) error {
		count = tx.Count()
		return tx.ForEach(func(*Client) error {
			calls++
			return nil
		})
	})
	if err != nil || count != 0 || calls != 0 {
		t.Errorf("View of the empty store: err %v, Count %d, %d clients",
			err, count, calls)
	}

	// Reading must not create the database: only the writer does, with
	// its mode and schema.
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("database file after reading: %v, want none", err)
	}
}

// TestOpenReaderMissingDirectory checks that a reader may start before
// the store's directory exists (nothing registered yet) and never creates
// it.
func TestOpenReaderMissingDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "clients.db")
	r, err := OpenReader(path)
	if err != nil {
		t.Fatalf("OpenReader in a missing directory: %v", err)
	}
	defer r.Close()
	if _, err := r.Lookup("a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup: %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(filepath.Dir(path)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OpenReader created the directory: %v", err)
	}
}

func TestReaderViewSeesAllClients(t *testing.T) {
	w, path := newWriter(t)
	r := openReader(t, path)
	ids := []string{"c", "a", "b"}
	for _, id := range ids {
		store(t, w, testClient(id))
	}

	var got []string
	var count int
	err := r.View(func(tx Tx) error {
		count = tx.Count()
		return tx.ForEach(func(c *Client) error {
			got = append(got, c.ID)
			return nil
		})
	})
	if err != nil {
		t.Fatalf("View: %v", err)
	}
	if count != 3 || len(got) != 3 ||
		got[0] != "a" || got[1] != "b" || got[2] != "c" {
		t.Errorf("Count %d, ForEach %q; want 3, [a b c]", count, got)
	}
}

func TestReaderVerifySecret(t *testing.T) {
	w, path := newWriter(t)
	now := time.Unix(1796314153, 0)

	withSecret := testClient("conf")
	expired := testClient("expired")
	expired.SecretExpiresAt = now.Add(-time.Minute).Unix()
	expiring := testClient("expiring")
	expiring.SecretExpiresAt = now.Add(time.Minute).Unix()
	public := testClient("public")
	public.SecretHash = ""
	public.Metadata.TokenEndpointAuthMethod = "none"
	store(t, w, withSecret, expired, expiring, public)
	r := openReader(t, path)

	tests := []struct {
		name    string
		id      string
		secret  string
		want    bool
		wantErr error
	}{
		{"right secret", "conf", "secret-of-conf", true, nil},
		{"wrong secret", "conf", "secret-of-public", false, nil},
		{"other client's secret", "conf", "secret-of-expired", false, nil},
		{"expired", "expired", "secret-of-expired", false, nil},
		{"not yet expired", "expiring", "secret-of-expiring", true, nil},
		{"public client", "public", "secret-of-public", false, nil},
		{"public client, empty secret", "public", "", false, nil},
		{"unknown client", "nobody", "secret-of-nobody", false, ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := r.VerifySecret(tc.id, tc.secret, now)
			if got != tc.want || !errors.Is(err, tc.wantErr) {
				t.Errorf("VerifySecret(%q) = %v, %v; want %v, %v",
					tc.id, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

// TestReaderReadOnlyFiles reads a store whose files this process may not
// write, as a reader running under another user than Caddy sees it.
func TestReaderReadOnlyFiles(t *testing.T) {
	w, path := newWriter(t)
	store(t, w, testClient("a"))
	for _, name := range []string{path, path + ".gate", path + ".lock"} {
		if err := os.Chmod(name, 0o444); err != nil {
			t.Fatal(err)
		}
	}
	if f, err := os.OpenFile(path+".lock", os.O_RDWR, 0); err == nil {
		f.Close()
		t.Skip("file permissions are not enforced for this user " +
			"(root); TestReaderAsOtherUser covers this case")
	}

	r := openReader(t, path)
	if _, err := r.Lookup("a"); err != nil {
		t.Errorf("Lookup: %v", err)
	}
	if _, err := r.Lookup("b"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup of an unknown client = %v, want ErrNotFound", err)
	}
}

// background runs the goroutines of a lock test. When the test ends, even
// by failing, it first lets every blocked function go and then waits for
// the goroutines, so none of them touches a Reader or a directory that the
// test's other cleanups close or remove. Create it after the test's
// Readers and temporary directories, so that its cleanup runs first.
type background struct {
	t        *testing.T
	mu       sync.Mutex
	releases []func()
	wg       sync.WaitGroup
}

func newBackground(t *testing.T) *background {
	bg := &background{t: t}
	t.Cleanup(func() {
		bg.mu.Lock()
		releases := bg.releases
		bg.mu.Unlock()
		for _, release := range releases {
			release()
		}
		exited := make(chan struct{})
		go func() { bg.wg.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(eventually):
			t.Error("goroutines still running after the test")
		}
	})
	return bg
}

// gate returns a function that blocks until release is called; release
// is also called when the test ends.
func (bg *background) gate() (wait, release func()) {
	unblock := make(chan struct{})
	release = sync.OnceFunc(func() { close(unblock) })
	bg.mu.Lock()
	bg.releases = append(bg.releases, release)
	bg.mu.Unlock()
	return func() { <-unblock }, release
}

// run runs fn in a goroutine and delivers its result.
func (bg *background) run(fn func() error) <-chan error {
	done := make(chan error, 1)
	bg.wg.Go(func() { done <- fn() })
	return done
}

// update runs w.Update in a goroutine.
func (bg *background) update(w *Writer, fn func(Tx) error) <-chan error {
	return bg.run(func() error {
		return w.Update(context.Background(), fn)
	})
}

// view runs r.View in a goroutine.
func (bg *background) view(r *Reader, fn func(Tx) error) <-chan error {
	return bg.run(func() error { return r.View(fn) })
}

// blockedView is a View held open inside its function.
type blockedView struct {
	done    <-chan error
	release func()
}

// holdView starts r.View with fn inside it and keeps the View open until
// release is called. It returns once fn has run.
func (bg *background) holdView(r *Reader, fn func(Tx) error) *blockedView {
	bg.t.Helper()
	wait, release := bg.gate()
	entered := make(chan struct{})
	done := bg.view(r, func(tx Tx) error {
		err := fn(tx)
		close(entered)
		wait()
		return err
	})
	select {
	case <-entered:
	case err := <-done:
		bg.t.Fatalf("View ended before its function ran: %v", err)
	case <-time.After(eventually):
		bg.t.Fatal("View did not start")
	}
	return &blockedView{done: done, release: release}
}

// notDone fails the test if the operation finishing on done ends within
// notYet: it is meant to wait for a lock.
func notDone(t *testing.T, done <-chan error, what string) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("%s finished (err %v) while it should wait", what, err)
	case <-time.After(notYet):
	}
}

// finished waits for an operation that must now complete.
func finished(t *testing.T, done <-chan error, what string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s: %v", what, err)
		}
	case <-time.After(eventually):
		t.Fatalf("%s did not finish", what)
	}
}

func TestLockReaderBlocksWriter(t *testing.T) {
	tests := []struct {
		name  string
		exist bool
	}{
		{"before the first write", false},
		{"existing store", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, path := newWriter(t)
			if tc.exist {
				store(t, w, testClient("a"))
			}
			r := openReader(t, path)
			bg := newBackground(t)

			var before error
			view := bg.holdView(r, func(tx Tx) error {
				_, before = tx.Client("b")
				return nil
			})
			update := bg.update(w, func(tx Tx) error {
				return tx.Create(testClient("b"))
			})
			notDone(t, update, "Update during a View")

			view.release()
			finished(t, view.done, "View")
			finished(t, update, "Update after the View")
			if !errors.Is(before, ErrNotFound) {
				t.Errorf("View saw the client before its commit: %v", before)
			}
			if _, err := r.Lookup("b"); err != nil {
				t.Errorf("Lookup after the Update: %v", err)
			}
		})
	}
}

func TestLockWriterBlocksReader(t *testing.T) {
	tests := []struct {
		name  string
		exist bool
	}{
		// The first commit also creates the file; a reader must not
		// see it half made.
		{"first commit", false},
		{"later commit", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, path := newWriter(t)
			if tc.exist {
				store(t, w, testClient("a"))
			}
			r := openReader(t, path)
			bg := newBackground(t)

			// The function blocks inside the transaction, so the
			// writer holds its locks until release.
			inside := make(chan struct{})
			enter := sync.OnceFunc(func() { close(inside) })
			wait, release := bg.gate()
			update := bg.update(w, func(tx Tx) error {
				enter()
				wait()
				return tx.Create(testClient("b"))
			})
			select {
			case <-inside:
			case err := <-update:
				t.Fatalf("Update ended before its function ran: %v", err)
			case <-time.After(eventually):
				t.Fatal("Update did not start")
			}

			var seen error = errors.New("View function did not run")
			view := bg.view(r, func(tx Tx) error {
				_, seen = tx.Client("b")
				return nil
			})
			notDone(t, view, "View during a commit")

			release()
			finished(t, update, "Update")
			finished(t, view, "View after the commit")
			// The View started before the commit ended, so seeing
			// the client proves it waited for the whole commit.
			if seen != nil {
				t.Errorf("View after the commit: %v", seen)
			}
		})
	}
}

// TestReaderBeforeStoreDirectory checks that a reader started before the
// first registration, when not even the store's directory exists, sees an
// empty store and then the first client once it is committed.
func TestReaderBeforeStoreDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "later", "clients.db")
	r, err := OpenReader(path)
	if err != nil {
		t.Fatalf("OpenReader: %v", err)
	}
	if _, err := r.Lookup("a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Lookup before the first commit: %v, want ErrNotFound", err)
	}
	w, err := NewWriter(path)
	if err != nil {
		t.Fatal(err)
	}
	store(t, w, testClient("a"))
	if _, err := r.Lookup("a"); err != nil {
		t.Errorf("Lookup after the first commit: %v", err)
	}
}
