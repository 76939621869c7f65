package clientdb

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Bounds for waits in the tests. notYet is how long a test watches an
// operation that must stay blocked; it is no performance assertion, since
// a blocked operation would not finish in any amount of time. eventually
// only keeps a broken test from hanging.
const (
	notYet     = 200 * time.Millisecond
	eventually = 30 * time.Second
)

// helperEnv names the database for TestHelperReaderProcess; set, it turns
// the test binary into a reader process.
const helperEnv = "CLIENTDB_TEST_HELPER_DB"

// testClient returns a client with a secret and typical metadata.
func testClient(id string) *Client {
	return &Client{
		ID:         id,
		IssuedAt:   1796314153,
		SecretHash: HashSecret("secret-of-" + id),
		Metadata: Metadata{
			RedirectURIs:            []string{"https://app.example/cb"},
			TokenEndpointAuthMethod: "client_secret_basic",
			GrantTypes:              []string{"authorization_code"},
			ResponseTypes:           []string{"code"},
			ClientName:              "client " + id,
			Localized: map[string]string{
				"client_name#de": "Klient " + id,
			},
		},
	}
}

// newWriter returns a Writer on a fresh database path in a temporary
// directory. The database file itself does not exist yet.
func newWriter(t testing.TB) (*Writer, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "clients.db")
	w, err := NewWriter(path)
	if err != nil {
		t.Fatalf("NewWriter: %v", err)
	}
	return w, path
}

// openReader opens a Reader that the test closes when it ends.
func openReader(t testing.TB, path string) *Reader {
	t.Helper()
	r, err := OpenReader(path)
	if err != nil {
		t.Fatalf("OpenReader: %v", err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Reader.Close: %v", err)
		}
	})
	return r
}

// store commits clients through w.
func store(t testing.TB, w *Writer, clients ...*Client) {
	t.Helper()
	err := w.Update(context.Background(), func(tx Tx) error {
		for _, c := range clients {
			if err := tx.Put(c); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
}

// holdWriter starts a commit whose function blocks, so that the writer is
// busy and every Update made meanwhile queues for the next group. The
// returned function lets the commit finish and waits for it; it also runs
// when the test ends, so a failing test leaves no commit open.
func holdWriter(t *testing.T, w *Writer) (release func()) {
	t.Helper()
	entered := make(chan struct{})
	unblock := make(chan struct{})
	exited := make(chan struct{})
	var err error
	enter := sync.OnceFunc(func() { close(entered) })
	go func() {
		defer close(exited)
		err = w.Update(context.Background(), func(Tx) error {
			enter()
			<-unblock
			return nil
		})
	}()
	release = sync.OnceFunc(func() {
		close(unblock)
		<-exited
		if err != nil {
			t.Errorf("holding commit: %v", err)
		}
	})
	t.Cleanup(release)

	select {
	case <-entered:
	case <-exited:
		t.Fatalf("holding commit ended before its function ran: %v", err)
	case <-time.After(eventually):
		t.Fatal("holding commit never started")
	}
	return release
}

// waitQueued waits until n changes wait for the next group. It looks
// inside the Writer because no public signal tells when an Update has
// queued its change.
func waitQueued(t *testing.T, w *Writer, n int) {
	t.Helper()
	deadline := time.Now().Add(eventually)
	for {
		w.mu.Lock()
		queued := len(w.queue)
		w.mu.Unlock()
		if queued >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d changes queued, want %d", queued, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// drain waits until every change queued so far has been committed or has
// failed, so that no commit touches the temporary directory after the test.
func drain(t *testing.T, w *Writer) {
	t.Helper()
	err := w.Update(context.Background(), func(Tx) error { return nil })
	if err != nil {
		t.Errorf("draining writer: %v", err)
	}
}

// writeRaw writes a database with bbolt directly, bypassing the package,
// to set up states the package itself would not produce.
func writeRaw(t *testing.T, path string, fn func(*bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatalf("bolt.Open: %v", err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatalf("bolt Update: %v", err)
	}
}

// readRaw reads a database with bbolt directly.
func readRaw(t *testing.T, path string, fn func(*bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("bolt.Open: %v", err)
	}
	defer db.Close()
	if err := db.View(fn); err != nil {
		t.Fatalf("bolt View: %v", err)
	}
}

func putRaw(tx *bolt.Tx, bucket, key, value string) error {
	b, err := tx.CreateBucketIfNotExists([]byte(bucket))
	if err != nil {
		return err
	}
	return b.Put([]byte(key), []byte(value))
}

func TestSchemaVersionWritten(t *testing.T) {
	w, path := newWriter(t)
	store(t, w, testClient("a"))

	readRaw(t, path, func(tx *bolt.Tx) error {
		meta := tx.Bucket([]byte("meta"))
		if meta == nil {
			t.Fatal(`bucket "meta" missing`)
		}
		if v := string(meta.Get([]byte("schema_version"))); v != "1" {
			t.Errorf("schema_version = %q, want \"1\"", v)
		}
		clients := tx.Bucket([]byte("clients"))
		if clients == nil {
			t.Fatal(`bucket "clients" missing`)
		}
		if clients.Get([]byte("a")) == nil {
			t.Error(`client "a" not stored under its ID`)
		}
		return nil
	})
}

func TestSchemaVersions(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(*bolt.Tx) error
		wantErr error
	}{
		{
			name: "other version",
			setup: func(tx *bolt.Tx) error {
				if err := putRaw(tx, "meta", "schema_version", "2"); err != nil {
					return err
				}
				return putRaw(tx, "clients", "old", `{"client_id":"old"}`)
			},
			wantErr: ErrSchema,
		},
		{
			name: "empty version",
			setup: func(tx *bolt.Tx) error {
				return putRaw(tx, "meta", "schema_version", "")
			},
			wantErr: ErrSchema,
		},
		{
			// A file without buckets is what a crash right after the
			// first open leaves; the writer must adopt it.
			name:  "no buckets",
			setup: func(*bolt.Tx) error { return nil },
		},
		{
			name: "meta without version",
			setup: func(tx *bolt.Tx) error {
				_, err := tx.CreateBucket([]byte("meta"))
				return err
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, path := newWriter(t)
			writeRaw(t, path, tc.setup)
			r := openReader(t, path)

			ran := false
			err := w.Update(context.Background(), func(tx Tx) error {
				ran = true
				return tx.Create(testClient("new"))
			})
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Update = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr != nil && ran {
				t.Error("Update ran its function on an unknown schema")
			}

			_, err = r.Lookup("new")
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("Lookup = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Errorf("Lookup after Update: %v", err)
			}
			readRaw(t, path, func(tx *bolt.Tx) error {
				v := tx.Bucket([]byte("meta")).Get([]byte("schema_version"))
				if string(v) != SchemaVersion {
					t.Errorf("schema_version = %q, want %q", v, SchemaVersion)
				}
				return nil
			})
		})
	}
}

// TestSchemaUnknownVersionUntouched checks that a writer refusing a newer
// schema leaves the file exactly as it was.
func TestSchemaUnknownVersionUntouched(t *testing.T) {
	w, path := newWriter(t)
	writeRaw(t, path, func(tx *bolt.Tx) error {
		return putRaw(tx, "meta", "schema_version", "2")
	})
	err := w.Update(context.Background(), func(tx Tx) error {
		return tx.Put(testClient("x"))
	})
	if !errors.Is(err, ErrSchema) {
		t.Fatalf("Update = %v, want ErrSchema", err)
	}
	readRaw(t, path, func(tx *bolt.Tx) error {
		if tx.Bucket([]byte("clients")) != nil {
			t.Error(`bucket "clients" created in a version 2 file`)
		}
		v := tx.Bucket([]byte("meta")).Get([]byte("schema_version"))
		if string(v) != "2" {
			t.Errorf("schema_version = %q, want it left at \"2\"", v)
		}
		return nil
	})
}

func TestTxCreateAndPut(t *testing.T) {
	w, _ := newWriter(t)
	first := testClient("a")
	store(t, w, first)

	second := testClient("a")
	second.Metadata.ClientName = "replacement"

	tests := []struct {
		name    string
		fn      func(Tx) error
		wantErr error
		want    *Client
	}{
		{
			name:    "create taken ID",
			fn:      func(tx Tx) error { return tx.Create(second) },
			wantErr: ErrExists,
			want:    first,
		},
		{
			name: "create twice in one transaction",
			fn: func(tx Tx) error {
				if err := tx.Create(testClient("b")); err != nil {
					return err
				}
				return tx.Create(testClient("b"))
			},
			wantErr: ErrExists,
			want:    first,
		},
		{
			name: "put replaces",
			fn:   func(tx Tx) error { return tx.Put(second) },
			want: second,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := w.Update(context.Background(), tc.fn)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Update = %v, want %v", err, tc.wantErr)
			}
			var got *Client
			err = w.View(func(tx Tx) error {
				var err error
				got, err = tx.Client("a")
				if _, berr := tx.Client("b"); !errors.Is(berr, ErrNotFound) {
					t.Errorf(`client "b" = %v, want ErrNotFound`, berr)
				}
				return err
			})
			if err != nil {
				t.Fatalf("View: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("stored %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestTxWriteReadOnly checks the documented failure of Create and Put in a
// reader's transaction, both on an existing store and before the first
// write, when the reader sees an empty store.
func TestTxWriteReadOnly(t *testing.T) {
	tests := []struct {
		name  string
		write bool
	}{
		{name: "existing store", write: true},
		{
			name:  "no store file yet",
			write: false,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, path := newWriter(t)
			if tc.write {
				store(t, w, testClient("a"))
			}
			r := openReader(t, path)

			ops := map[string]func(Tx) error{
				"Create": func(tx Tx) error { return tx.Create(testClient("n")) },
				"Put":    func(tx Tx) error { return tx.Put(testClient("n")) },
			}
			for name, op := range ops {
				p, err := viewNoPanic(r, op)
				switch {
				case p != nil:
					t.Errorf("%s in a read-only transaction panicked: %v",
						name, p)
				case err == nil:
					t.Errorf("%s in a read-only transaction succeeded",
						name)
				}
			}
			if _, err := r.Lookup("n"); !errors.Is(err, ErrNotFound) {
				t.Errorf("Lookup after read-only writes = %v", err)
			}
		})
	}
}

// viewNoPanic runs fn in r.View and reports a panic separately, so that a
// failing case reports instead of ending the test binary.
func viewNoPanic(r *Reader, fn func(Tx) error) (panicked any, err error) {
	defer func() { panicked = recover() }()
	return nil, r.View(fn)
}

func TestTxForEachAndCount(t *testing.T) {
	w, path := newWriter(t)
	ids := []string{"m", "a", "z", "b", "ä"}
	var clients []*Client
	for _, id := range ids {
		clients = append(clients, testClient(id))
	}
	store(t, w, clients...)
	r := openReader(t, path)

	var got []string
	var count int
	err := r.View(func(tx Tx) error {
		count = tx.Count()
		return tx.ForEach(func(c *Client) error {
			if !reflect.DeepEqual(c, testClient(c.ID)) {
				t.Errorf("ForEach gave %+v", c)
			}
			got = append(got, c.ID)
			return nil
		})
	})
	if err != nil {
		t.Fatalf("View: %v", err)
	}
	// Byte order of the UTF-8 IDs, which puts "ä" after "z".
	want := []string{"a", "b", "m", "z", "ä"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ForEach order = %q, want %q", got, want)
	}
	if count != len(ids) {
		t.Errorf("Count = %d, want %d", count, len(ids))
	}

	stop := errors.New("stop")
	calls := 0
	err = r.View(func(tx Tx) error {
		return tx.ForEach(func(*Client) error {
			calls++
			return stop
		})
	})
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("ForEach with a failing fn = %v after %d calls, "+
			"want stop after 1", err, calls)
	}
}

// TestTxUndecodableClient checks that a damaged record is an error, not a
// missing client: treating it as missing would let its ID be reissued.
func TestTxUndecodableClient(t *testing.T) {
	w, path := newWriter(t)
	store(t, w, testClient("good"))
	writeRaw(t, path, func(tx *bolt.Tx) error {
		return putRaw(tx, "clients", "bad", `{"client_id": 7`)
	})
	r := openReader(t, path)

	_, err := r.Lookup("bad")
	if err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup of a damaged record = %v, want a decoding error", err)
	}
	err = r.View(func(tx Tx) error {
		return tx.ForEach(func(*Client) error { return nil })
	})
	if err == nil {
		t.Error("ForEach over a damaged record succeeded")
	}
	if _, err := r.Lookup("good"); err != nil {
		t.Errorf("Lookup of an intact record: %v", err)
	}
}
