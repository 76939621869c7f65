package clientdb

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// deleteAt commits the deletion of ids, as deleted at the Unix second at.
func deleteAt(t testing.TB, w *Writer, at int64, ids ...string) {
	t.Helper()
	err := w.Update(context.Background(), func(tx Tx) error {
		for _, id := range ids {
			err := tx.Delete(id, ReasonDeleted, time.Unix(at, 0))
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("deleting %q: %v", ids, err)
	}
}

// sweep commits one SweepTombstones call and returns its count.
func sweep(t testing.TB, w *Writer, cutoff int64, limit int) int {
	t.Helper()
	var n int
	err := w.Update(context.Background(), func(tx Tx) error {
		var err error
		n, err = tx.SweepTombstones(time.Unix(cutoff, 0), limit)
		return err
	})
	if err != nil {
		t.Fatalf("SweepTombstones(%d, %d): %v", cutoff, limit, err)
	}
	return n
}

// storedTombstones reads the tombstones bucket and the sweep index as
// bytes, as a reader in another language would, and returns the IDs of
// the tombstones in key order. It reports any disagreement between the
// two: each tombstone has exactly one index key, made of its deletion time
// as eight big-endian bytes and its ID, with an empty value.
func storedTombstones(t *testing.T, r *Reader) []string {
	t.Helper()
	var ids []string
	err := r.View(func(tx Tx) error {
		if tx.(*boltTx).tx == nil {
			return nil
		}
		stones := tx.(*boltTx).tx.Bucket([]byte("tombstones"))
		index := tx.(*boltTx).tx.Bucket([]byte("tombstone_expiry"))
		if stones == nil || index == nil {
			t.Fatalf("tombstone buckets missing: tombstones %v, index %v",
				stones != nil, index != nil)
		}

		deletedAt := map[string]int64{}
		err := stones.ForEach(func(k, v []byte) error {
			var ts Tombstone
			if err := json.Unmarshal(v, &ts); err != nil {
				return fmt.Errorf("tombstone %q: %w", k, err)
			}
			if ts.ID != string(k) {
				t.Errorf("tombstone under %q names %q", k, ts.ID)
			}
			ids = append(ids, string(k))
			deletedAt[string(k)] = ts.DeletedAt
			return nil
		})
		if err != nil {
			return err
		}

		indexed := map[string]bool{}
		err = index.ForEach(func(k, v []byte) error {
			if len(k) < 8 || len(v) != 0 {
				t.Errorf("index entry %q = %q, want 8+ bytes to nothing",
					k, v)
				return nil
			}
			id := string(k[8:])
			at := int64(binary.BigEndian.Uint64(k[:8]))
			want, ok := deletedAt[id]
			switch {
			case !ok:
				t.Errorf("index entry for %q, which has no tombstone", id)
			case at != want:
				t.Errorf("index entry for %q at %d, tombstone at %d",
					id, at, want)
			case indexed[id]:
				t.Errorf("two index entries for %q", id)
			}
			indexed[id] = true
			return nil
		})
		if err != nil {
			return err
		}
		for _, id := range ids {
			if !indexed[id] {
				t.Errorf("tombstone %q missing from the index", id)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reading tombstones: %v", err)
	}
	return ids
}

func TestTxDelete(t *testing.T) {
	const deletedAt = 1796400000
	tests := []struct {
		name   string
		reason string
	}{
		{name: "deleted", reason: ReasonDeleted},
		{name: "expired", reason: ReasonExpired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, path := newWriter(t)
			gone := testClient("gone")
			gone.IssuedAt = 1796300000
			store(t, w, gone, testClient("kept"))
			r := openReader(t, path)

			err := w.Update(context.Background(), func(tx Tx) error {
				return tx.Delete("gone", tc.reason, time.Unix(deletedAt, 0))
			})
			if err != nil {
				t.Fatalf("Delete: %v", err)
			}

			want := &Tombstone{
				ID:        "gone",
				IssuedAt:  1796300000,
				DeletedAt: deletedAt,
				Reason:    tc.reason,
			}
			ts, err := r.Tombstone("gone")
			if err != nil || !reflect.DeepEqual(ts, want) {
				t.Errorf("Reader.Tombstone = %+v, %v; want %+v", ts, err, want)
			}
			c, err := r.Lookup("gone")
			if !errors.Is(err, ErrDeleted) || c != nil {
				t.Errorf("Lookup = %+v, %v; want ErrDeleted", c, err)
			}
			ok, err := r.VerifySecret("gone", "secret-of-gone", time.Now())
			if ok || !errors.Is(err, ErrDeleted) {
				t.Errorf("VerifySecret = %v, %v; want false, ErrDeleted",
					ok, err)
			}

			// The same answers inside a transaction.
			err = w.View(func(tx Tx) error {
				if _, err := tx.Client("gone"); !errors.Is(err, ErrDeleted) {
					t.Errorf("Tx.Client = %v, want ErrDeleted", err)
				}
				ts, err := tx.Tombstone("gone")
				if err != nil || !reflect.DeepEqual(ts, want) {
					t.Errorf("Tx.Tombstone = %+v, %v; want %+v",
						ts, err, want)
				}
				if _, err := tx.Tombstone("kept"); !errors.Is(err, ErrNotFound) {
					t.Errorf("Tx.Tombstone of a live client = %v, "+
						"want ErrNotFound", err)
				}
				return nil
			})
			if err != nil {
				t.Fatalf("View: %v", err)
			}

			if c, err := r.Lookup("kept"); err != nil ||
				!reflect.DeepEqual(c, testClient("kept")) {
				t.Errorf("other client after Delete = %+v, %v", c, err)
			}
			if got := storedTombstones(t, r); !slices.Equal(got, []string{"gone"}) {
				t.Errorf("tombstones %q, want [gone]", got)
			}
		})
	}
}

func TestTxDeleteRefused(t *testing.T) {
	const firstAt = 1796400000
	first := &Tombstone{
		ID:        "gone",
		IssuedAt:  testClient("gone").IssuedAt,
		DeletedAt: firstAt,
		Reason:    ReasonDeleted,
	}
	tests := []struct {
		name    string
		fn      func(Tx) error
		wantErr error
	}{
		{
			name: "unknown client",
			fn: func(tx Tx) error {
				return tx.Delete("nobody", ReasonDeleted, time.Unix(firstAt+60, 0))
			},
			wantErr: ErrNotFound,
		},
		{
			// A second deletion must not move the deletion time, which
			// would postpone the sweep.
			name: "deleted client",
			fn: func(tx Tx) error {
				return tx.Delete("gone", ReasonExpired, time.Unix(firstAt+60, 0))
			},
			wantErr: ErrDeleted,
		},
		{
			name: "twice in one transaction",
			fn: func(tx Tx) error {
				now := time.Unix(firstAt+60, 0)
				if err := tx.Delete("live", ReasonDeleted, now); err != nil {
					return err
				}
				return tx.Delete("live", ReasonDeleted, now)
			},
			wantErr: ErrDeleted,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, path := newWriter(t)
			store(t, w, testClient("gone"), testClient("live"))
			deleteAt(t, w, firstAt, "gone")
			r := openReader(t, path)

			err := w.Update(context.Background(), tc.fn)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Update = %v, want %v", err, tc.wantErr)
			}

			// Nothing the failed change did is kept.
			ts, err := r.Tombstone("gone")
			if err != nil || !reflect.DeepEqual(ts, first) {
				t.Errorf("tombstone = %+v, %v; want %+v", ts, err, first)
			}
			if _, err := r.Lookup("live"); err != nil {
				t.Errorf("Lookup(live) = %v", err)
			}
			for _, id := range []string{"nobody", "live"} {
				if _, err := r.Tombstone(id); !errors.Is(err, ErrNotFound) {
					t.Errorf("Tombstone(%s) = %v, want ErrNotFound", id, err)
				}
			}
			if got := storedTombstones(t, r); !slices.Equal(got, []string{"gone"}) {
				t.Errorf("tombstones %q, want [gone]", got)
			}
		})
	}
}

// TestTombstoneHoldsNoSecrets reads the file's bytes after a deletion: the
// tombstone has the four documented members, and the client's secrets,
// token and metadata are in no bucket at all.
func TestTombstoneHoldsNoSecrets(t *testing.T) {
	w, path := newWriter(t)
	c := testClient("gone")
	c.SecretExpiresAt = 1796500000
	c.PreviousSecretHash = HashSecret("previous-of-gone")
	c.PreviousSecretExpiresAt = 1796400000
	c.RegistrationTokenHash = HashSecret("token-of-gone")
	c.UpdatedAt = 1796350000
	c.Metadata = fullMetadata()
	store(t, w, c)
	deleteAt(t, w, 1796400000, "gone")
	r := openReader(t, path)

	// Each hash also without its prefix, in case some other encoding
	// kept the digest.
	var secrets []string
	for _, h := range []string{
		c.SecretHash, c.PreviousSecretHash, c.RegistrationTokenHash,
	} {
		secrets = append(secrets, h, strings.TrimPrefix(h, "sha256:"))
	}
	secrets = append(secrets, c.Metadata.ClientName,
		c.Metadata.RedirectURIs[0], c.Metadata.SoftwareID,
		"client_secret", "registration_access_token", "metadata")

	var raw []byte
	err := r.View(func(tx Tx) error {
		raw = bytes.Clone(tx.(*boltTx).tx.Bucket([]byte("tombstones")).Get([]byte("gone")))
		if tx.(*boltTx).tx.Bucket([]byte("clients")).Get([]byte("gone")) != nil {
			t.Error(`"gone" still in bucket "clients"`)
		}
		return tx.(*boltTx).tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				for _, s := range secrets {
					if bytes.Contains(k, []byte(s)) ||
						bytes.Contains(v, []byte(s)) {
						t.Errorf("bucket %q, key %q holds %q", name, k, s)
					}
				}
				return nil
			})
		})
	})
	if err != nil {
		t.Fatalf("View: %v", err)
	}
	if raw == nil {
		t.Fatal(`no tombstone under "gone"`)
	}

	got := members(t, raw)
	var names []string
	for name := range got {
		names = append(names, name)
	}
	slices.Sort(names)
	want := []string{"client_id", "client_id_issued_at", "deleted_at", "reason"}
	if !slices.Equal(names, want) {
		t.Errorf("tombstone members %q, want %q; json %s", names, want, raw)
	}
	wantValues := map[string]string{
		"client_id":           `"gone"`,
		"client_id_issued_at": jsonInt(c.IssuedAt),
		"deleted_at":          "1796400000",
		"reason":              `"deleted"`,
	}
	for name, v := range wantValues {
		if string(got[name]) != v {
			t.Errorf("member %q = %s, want %s", name, got[name], v)
		}
	}
}

func TestTxCreateTombstonedID(t *testing.T) {
	tests := []struct {
		name string
		fn   func(Tx) error
		// wantLive is whether "gone" is still live afterwards: a
		// failing change rolls back its own deletion.
		wantLive bool
	}{
		{
			name: "committed tombstone",
			fn:   func(tx Tx) error { return tx.Create(testClient("gone")) },
		},
		{
			name: "deleted in the same transaction",
			fn: func(tx Tx) error {
				err := tx.Delete("live", ReasonDeleted, time.Unix(1796400100, 0))
				if err != nil {
					return err
				}
				return tx.Create(testClient("live"))
			},
			wantLive: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, path := newWriter(t)
			store(t, w, testClient("gone"), testClient("live"))
			deleteAt(t, w, 1796400000, "gone")
			r := openReader(t, path)

			err := w.Update(context.Background(), tc.fn)
			if !errors.Is(err, ErrExists) {
				t.Fatalf("Update = %v, want ErrExists", err)
			}
			if _, err := r.Lookup("gone"); !errors.Is(err, ErrDeleted) {
				t.Errorf("Lookup(gone) = %v, want ErrDeleted", err)
			}
			if _, err := r.Lookup("live"); err != nil {
				t.Errorf("Lookup(live) = %v, want the live client", err)
			}
			if got := storedTombstones(t, r); !slices.Equal(got, []string{"gone"}) {
				t.Errorf("tombstones %q, want [gone]", got)
			}
		})
	}
}

func TestTxForEachAndCountSkipTombstones(t *testing.T) {
	w, path := newWriter(t)
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		store(t, w, testClient(id))
	}
	deleteAt(t, w, 1796400000, "b", "d")
	r := openReader(t, path)

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
	want := []string{"a", "c", "e"}
	if !slices.Equal(got, want) {
		t.Errorf("ForEach saw %q, want %q", got, want)
	}
	if count != len(want) {
		t.Errorf("Count = %d, want %d", count, len(want))
	}
}

// TestTombstoneWritesReadOnly checks that Delete and SweepTombstones fail
// in a reader's transaction, like Create and Put, both on an existing
// store and before the first write.
func TestTombstoneWritesReadOnly(t *testing.T) {
	ops := []struct {
		name string
		fn   func(Tx) error
	}{
		{
			name: "Delete",
			fn: func(tx Tx) error {
				return tx.Delete("a", ReasonDeleted, time.Unix(1796400000, 0))
			},
		},
		{
			name: "SweepTombstones",
			fn: func(tx Tx) error {
				_, err := tx.SweepTombstones(time.Unix(1<<40, 0), 100)
				return err
			},
		},
	}
	tests := []struct {
		name  string
		write bool
	}{
		{name: "existing store", write: true},
		{name: "no store file yet", write: false},
	}
	for _, tc := range tests {
		for _, op := range ops {
			t.Run(tc.name+"/"+op.name, func(t *testing.T) {
				w, path := newWriter(t)
				if tc.write {
					store(t, w, testClient("a"), testClient("b"))
					deleteAt(t, w, 1796400000, "b")
				}
				r := openReader(t, path)

				p, err := viewNoPanic(r, op.fn)
				switch {
				case p != nil:
					t.Fatalf("%s in a read-only transaction panicked: %v",
						op.name, p)
				case err == nil:
					t.Errorf("%s in a read-only transaction succeeded",
						op.name)
				}
				if !tc.write {
					return
				}
				if _, err := r.Lookup("a"); err != nil {
					t.Errorf("Lookup(a) = %v, want the live client", err)
				}
				if _, err := r.Tombstone("b"); err != nil {
					t.Errorf("Tombstone(b) = %v, want it kept", err)
				}
			})
		}
	}
}

// TestReaderStoreWithoutTombstoneBuckets reads a schema 1 file as the
// release before tombstones wrote it: buckets "meta" and "clients" only.
// A server upgraded in place serves lookups from such a file until its
// first write, and other processes read it too.
func TestReaderStoreWithoutTombstoneBuckets(t *testing.T) {
	w, path := newWriter(t)
	old, err := json.Marshal(testClient("old"))
	if err != nil {
		t.Fatal(err)
	}
	writeRaw(t, path, func(tx *bolt.Tx) error {
		if err := putRaw(tx, "meta", "schema_version", "1"); err != nil {
			return err
		}
		return putRaw(tx, "clients", "old", string(old))
	})
	r := openReader(t, path)

	lookup := func(id string) func(Tx) error {
		return func(tx Tx) error {
			_, err := tx.Client(id)
			return err
		}
	}
	if p, err := viewNoPanic(r, lookup("old")); p != nil || err != nil {
		t.Errorf("Client(old) = %v, panic %v", err, p)
	}
	p, err := viewNoPanic(r, lookup("unknown"))
	if p != nil || !errors.Is(err, ErrNotFound) {
		t.Errorf("Client(unknown) = %v, panic %v; want ErrNotFound", err, p)
	}

	// The first write adds the buckets; the file then reads as usual.
	deleteAt(t, w, 1796400000, "old")
	if _, err := r.Lookup("old"); !errors.Is(err, ErrDeleted) {
		t.Errorf("Lookup(old) after Delete = %v, want ErrDeleted", err)
	}
}

// sweepFixture is deleted in an order unlike that of the IDs, so that a
// sweep by ID order would remove the wrong ones.
var sweepFixture = []struct {
	id string
	at int64
}{
	{"z", 100},
	{"m", 200},
	{"a", 300},
	{"b", 400}, {"c", 400}, {"d", 400},
}

func TestSweepTombstones(t *testing.T) {
	tests := []struct {
		name   string
		cutoff int64
		limit  int
		want   []string // swept, the rest stay
	}{
		{name: "cutoff before all", cutoff: 100, limit: 10},
		{
			// Only tombstones from before the cutoff second go.
			name:   "cutoff at a deletion",
			cutoff: 200,
			limit:  10,
			want:   []string{"z"},
		},
		{
			name:   "cutoff just after a deletion",
			cutoff: 201,
			limit:  10,
			want:   []string{"z", "m"},
		},
		{
			name:   "limit takes the oldest",
			cutoff: 1000,
			limit:  1,
			want:   []string{"z"},
		},
		{
			name:   "limit of two",
			cutoff: 1000,
			limit:  2,
			want:   []string{"z", "m"},
		},
		{
			name:   "same second, different IDs",
			cutoff: 401,
			limit:  6,
			want:   []string{"z", "m", "a", "b", "c", "d"},
		},
		{
			name:   "limit above the count",
			cutoff: 1000,
			limit:  100,
			want:   []string{"z", "m", "a", "b", "c", "d"},
		},
		{name: "limit zero", cutoff: 1000, limit: 0},
		{name: "negative limit", cutoff: 1000, limit: -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, path := newWriter(t)
			store(t, w, testClient("live"))
			for _, f := range sweepFixture {
				store(t, w, testClient(f.id))
				deleteAt(t, w, f.at, f.id)
			}
			r := openReader(t, path)

			if n := sweep(t, w, tc.cutoff, tc.limit); n != len(tc.want) {
				t.Errorf("SweepTombstones = %d, want %d", n, len(tc.want))
			}

			var kept []string
			for _, f := range sweepFixture {
				_, lerr := r.Lookup(f.id)
				_, terr := r.Tombstone(f.id)
				if slices.Contains(tc.want, f.id) {
					if !errors.Is(lerr, ErrNotFound) ||
						!errors.Is(terr, ErrNotFound) {
						t.Errorf("swept %q: Lookup %v, Tombstone %v; "+
							"want ErrNotFound", f.id, lerr, terr)
					}
					continue
				}
				kept = append(kept, f.id)
				if !errors.Is(lerr, ErrDeleted) || terr != nil {
					t.Errorf("kept %q: Lookup %v, Tombstone %v",
						f.id, lerr, terr)
				}
			}
			if _, err := r.Lookup("live"); err != nil {
				t.Errorf("Lookup(live) = %v", err)
			}
			slices.Sort(kept)
			if got := storedTombstones(t, r); !slices.Equal(got, kept) {
				t.Errorf("tombstones %q, want %q", got, kept)
			}
		})
	}
}

// TestSweepTombstonesBatches sweeps in batches, as the sweeper does, until
// a batch comes back short.
func TestSweepTombstonesBatches(t *testing.T) {
	tests := []struct {
		name    string
		seconds int64 // deletions spread over this many seconds
	}{
		{name: "one second", seconds: 1},
		{name: "three seconds", seconds: 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const n, batch = 25, 10
			w, path := newWriter(t)
			err := w.Update(context.Background(), func(tx Tx) error {
				for i := range n {
					id := fmt.Sprintf("c%02d", i)
					if err := tx.Create(testClient(id)); err != nil {
						return err
					}
					at := time.Unix(1000+int64(i)%tc.seconds, 0)
					if err := tx.Delete(id, ReasonExpired, at); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatalf("Update: %v", err)
			}
			r := openReader(t, path)

			var counts []int
			for range n {
				k := sweep(t, w, 2000, batch)
				counts = append(counts, k)
				if k < batch {
					break
				}
			}
			if want := []int{10, 10, 5}; !slices.Equal(counts, want) {
				t.Errorf("batches removed %v, want %v", counts, want)
			}
			if got := storedTombstones(t, r); len(got) != 0 {
				t.Errorf("tombstones left: %q", got)
			}
			if _, err := r.Lookup("c00"); !errors.Is(err, ErrNotFound) {
				t.Errorf("Lookup after the sweep = %v, want ErrNotFound", err)
			}
		})
	}
}

// TestSweepTombstonesCutoffBeforeEpoch sweeps with a cutoff before 1970,
// which the sweeper computes as now minus a TTL longer than the time since
// 1970 (tombstone_ttl 36500d, meant as "keep"). Nothing was deleted that
// early, so nothing may go.
func TestSweepTombstonesCutoffBeforeEpoch(t *testing.T) {
	tests := []struct {
		name   string
		cutoff time.Time
	}{
		{name: "one second before", cutoff: time.Unix(-1, 0)},
		{name: "zero time", cutoff: time.Time{}},
		{
			name:   "now minus a century",
			cutoff: time.Unix(1796400000, 0).Add(-36500 * 24 * time.Hour),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, path := newWriter(t)
			for _, f := range sweepFixture {
				store(t, w, testClient(f.id))
				deleteAt(t, w, 1796400000+f.at, f.id)
			}
			r := openReader(t, path)

			var n int
			err := w.Update(context.Background(), func(tx Tx) error {
				var err error
				n, err = tx.SweepTombstones(tc.cutoff, 100)
				return err
			})
			if err != nil || n != 0 {
				t.Errorf("SweepTombstones = %d, %v; want 0", n, err)
			}
			if got := storedTombstones(t, r); len(got) != len(sweepFixture) {
				t.Errorf("tombstones left: %q, want all %d",
					got, len(sweepFixture))
			}
		})
	}
}

// TestTxPutOverTombstone revives a deleted ID with Put and deletes it
// again. Either fix passes: Put refusing the ID with ErrDeleted, or Put
// clearing the old tombstone and its index entry.
func TestTxPutOverTombstone(t *testing.T) {
	w, path := newWriter(t)
	store(t, w, testClient("a"))
	deleteAt(t, w, 100, "a")
	r := openReader(t, path)

	err := w.Update(context.Background(), func(tx Tx) error {
		return tx.Put(testClient("a"))
	})
	if err != nil && !errors.Is(err, ErrDeleted) {
		t.Fatalf("Put over a tombstone = %v, want nil or ErrDeleted", err)
	}
	revived := err == nil
	if revived {
		deleteAt(t, w, 300, "a")
	}
	storedTombstones(t, r)

	sweep(t, w, 200, 10)
	storedTombstones(t, r)
	_, err = r.Tombstone("a")
	if revived && err != nil {
		t.Errorf("tombstone of a client deleted at 300, after a sweep "+
			"up to 200: %v", err)
	}
}

// deletionReader is a running TestHelperReaderProcess, asked one ID at a
// time.
type deletionReader struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Scanner
	stderr strings.Builder
	done   func() error
}

func startDeletionReader(t *testing.T, path string) *deletionReader {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)

	p := &deletionReader{}
	p.cmd = exec.CommandContext(ctx, os.Args[0],
		"-test.run=^TestHelperReaderProcess$")
	p.cmd.Env = append(os.Environ(), helperEnv+"="+path)
	p.cmd.Stderr = &p.stderr
	var err error
	if p.in, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.out = bufio.NewScanner(stdout)
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting reader process: %v", err)
	}

	// Wait only after stdout is read to its end, as exec requires.
	p.done = sync.OnceValue(func() error {
		p.in.Close()
		for p.out.Scan() {
		}
		return p.cmd.Wait()
	})
	t.Cleanup(func() {
		if err := p.done(); err != nil {
			t.Errorf("reader process: %v\nstderr:\n%s", err, &p.stderr)
		}
	})
	return p
}

// ask sends id and returns the answer.
func (p *deletionReader) ask(t *testing.T, id string) string {
	t.Helper()
	if _, err := fmt.Fprintln(p.in, id); err != nil {
		t.Fatalf("sending %s: %v", id, err)
	}
	if !p.out.Scan() {
		err := p.done()
		t.Fatalf("reader process ended without answering %s: %v\n"+
			"stderr:\n%s", id, err, &p.stderr)
	}
	return p.out.Text()
}

// TestCrossProcessReaderSeesDeletion checks the promise RFC 7592 section
// 2.3 needs: once the Update that deletes a client returns, a reader in
// another process no longer finds it live, even while registrations keep
// committing beside the deletions.
func TestCrossProcessReaderSeesDeletion(t *testing.T) {
	const n = 20
	w, path := newWriter(t)
	var ids []string
	for i := range n {
		ids = append(ids, fmt.Sprintf("d%02d", i))
	}
	for _, id := range ids {
		store(t, w, testClient(id))
	}
	p := startDeletionReader(t, path)

	// Registrations in the background, so that deletions share their
	// commits with other changes.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			c := testClient(fmt.Sprintf("bg%05d", i))
			err := w.Update(context.Background(), func(tx Tx) error {
				return tx.Create(c)
			})
			if err != nil {
				t.Errorf("background Create: %v", err)
				return
			}
		}
	})
	defer wg.Wait()
	defer close(stop)

	for _, id := range ids {
		if got := p.ask(t, id); got != "ok "+id {
			t.Errorf("before Delete: %q, want %q", got, "ok "+id)
		}
		deleteAt(t, w, 1796400000, id)
		if got := p.ask(t, id); got != "deleted "+id {
			t.Errorf("after Delete: %q, want %q", got, "deleted "+id)
		}
	}
	if got := p.ask(t, "never-issued"); got != "missing never-issued" {
		t.Errorf("unknown ID: %q", got)
	}

	if k := sweep(t, w, 1796400001, n); k != n {
		t.Errorf("SweepTombstones = %d, want %d", k, n)
	}
	for _, id := range ids {
		if got := p.ask(t, id); got != "missing "+id {
			t.Errorf("after the sweep: %q, want %q", got, "missing "+id)
		}
	}
}

// BenchmarkSweepTombstones sweeps 10,000 tombstones in batches of 1,000,
// one transaction each, as the sweeper does. Making the tombstones is not
// timed.
func BenchmarkSweepTombstones(b *testing.B) {
	const n, batch = 10000, 1000
	w, _ := newWriter(b)
	ctx := context.Background()
	cutoff := time.Unix(1796400000+n, 0)

	round := 0
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		err := w.Update(ctx, func(tx Tx) error {
			for i := range n {
				id := fmt.Sprintf("r%d-%05d", round, i)
				if err := tx.Put(testClient(id)); err != nil {
					return err
				}
				// Deletion times spread so the index is not in ID order.
				at := time.Unix(1796400000+int64(i*7919%n), 0)
				if err := tx.Delete(id, ReasonExpired, at); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatalf("making tombstones: %v", err)
		}
		round++
		b.StartTimer()

		swept := 0
		for {
			var k int
			err := w.Update(ctx, func(tx Tx) error {
				var err error
				k, err = tx.SweepTombstones(cutoff, batch)
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
			swept += k
			if k < batch {
				break
			}
		}
		if swept != n {
			b.Fatalf("swept %d tombstones, want %d", swept, n)
		}
	}
	if round > 0 {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(round*n),
			"ns/tombstone")
	}
}
