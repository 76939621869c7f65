package clientdb

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

// exBase is the cutoff of the expiry tests, in Unix seconds.
const exBase = int64(1_800_000_000)

// exClient returns a client issued and last used at the given Unix
// seconds, 0 meaning never used.
func exClient(id string, issued, used int64) *Client {
	c := testClient(id)
	c.IssuedAt, c.LastUsedAt = issued, used
	return c
}

// unused runs one Unused call in a read transaction.
func unused(t *testing.T, w *Writer, cutoff int64, after string, limit int) ([]string, string) {
	t.Helper()
	var ids []string
	var last string
	err := w.View(func(tx Tx) error {
		var err error
		ids, last, err = tx.Unused(time.Unix(cutoff, 0), after, limit)
		return err
	})
	if err != nil {
		t.Fatalf("Unused(%d, %q, %d): %v", cutoff, after, limit, err)
	}
	return ids, last
}

func TestUnusedCutoff(t *testing.T) {
	cases := []struct {
		name         string
		issued, used int64
		want         bool
	}{
		{"never used, issued before", exBase - 1, 0, true},
		{"never used, issued at the cutoff", exBase, 0, false},
		{"never used, issued after", exBase + 1, 0, false},
		{"used before", exBase - 100, exBase - 1, true},
		{"used at the cutoff", exBase - 100, exBase, false},
		{"used after", exBase - 100, exBase + 1, false},
		{"used long ago, issued after", exBase + 1, exBase - 100, false},
	}
	w, _ := newWriter(t)
	var all []*Client
	for i, tc := range cases {
		all = append(all, exClient(fmt.Sprintf("c%02d", i), tc.issued, tc.used))
	}
	store(t, w, all...)
	deleteAt(t, w, exBase-50, "c00")

	ids, last := unused(t, w, exBase, "", 100)
	if last != "" {
		t.Errorf("last = %q after the whole bucket, want \"\"", last)
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("c%02d", i)
			want := tc.want && id != "c00" // c00 is deleted
			if got := slices.Contains(ids, id); got != want {
				t.Errorf("%s in Unused = %v, want %v (ids %q)", id, got, want, ids)
			}
		})
	}
}

// TestUnusedBatches checks that a scan in batches sees every client once,
// in ID order, resumes after the last ID even when that one is gone, and
// ends with "" without an extra empty batch.
func TestUnusedBatches(t *testing.T) {
	cases := []struct {
		name    string
		clients int
		limit   int
		batches int
	}{
		{"one partial batch", 2, 3, 1},
		{"exact batch", 3, 3, 1},
		{"exact multiple", 6, 3, 2},
		{"remainder", 7, 3, 3},
		{"batches of one", 3, 1, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w, _ := newWriter(t)
			var all []*Client
			var want []string
			for i := range tc.clients {
				id := fmt.Sprintf("id-%02d", i)
				used := int64(0)
				if i%2 == 1 {
					used = exBase + 10 // used since the cutoff
				} else {
					want = append(want, id)
				}
				all = append(all, exClient(id, exBase-100, used))
			}
			store(t, w, all...)

			var got []string
			after := ""
			for n := 1; ; n++ {
				if n > tc.batches {
					t.Fatalf("more than %d batches; at %q", tc.batches, after)
				}
				ids, last := unused(t, w, exBase, after, tc.limit)
				got = append(got, ids...)
				if last == "" {
					if n != tc.batches {
						t.Errorf("%d batches, want %d", n, tc.batches)
					}
					break
				}
				if wantLast := fmt.Sprintf("id-%02d", n*tc.limit-1); last != wantLast {
					t.Errorf("batch %d: last %q, want %q", n, last, wantLast)
				}
				after = last
			}
			if !slices.Equal(got, want) {
				t.Errorf("Unused in batches = %q, want %q", got, want)
			}
		})
	}

	t.Run("resume after a deleted ID", func(t *testing.T) {
		w, _ := newWriter(t)
		store(t, w, exClient("a", exBase-1, 0), exClient("b", exBase-1, 0),
			exClient("c", exBase-1, 0), exClient("d", exBase-1, 0))
		ids, last := unused(t, w, exBase, "", 2)
		if !slices.Equal(ids, []string{"a", "b"}) || last != "b" {
			t.Fatalf("first batch %q, last %q", ids, last)
		}
		deleteAt(t, w, exBase, "b")
		ids, last = unused(t, w, exBase, last, 2)
		if !slices.Equal(ids, []string{"c", "d"}) || last != "" {
			t.Errorf("after deleting b: %q, last %q; want [c d], \"\"", ids, last)
		}
	})

	t.Run("empty store", func(t *testing.T) {
		w, _ := newWriter(t)
		ids, last := unused(t, w, exBase, "", 10)
		if len(ids) != 0 || last != "" {
			t.Errorf("Unused on an empty store = %q, %q", ids, last)
		}
		// The buckets exist but are empty.
		store(t, w)
		ids, last = unused(t, w, exBase, "x", 10)
		if len(ids) != 0 || last != "" {
			t.Errorf("Unused on empty buckets = %q, %q", ids, last)
		}
	})
}

// TestExpireUnused checks that ExpireUnused checks each client again in
// its own transaction, deletes only those still unused, and leaves
// tombstones that say expired.
func TestExpireUnused(t *testing.T) {
	w, path := newWriter(t)
	store(t, w,
		exClient("idle", exBase-100, 0),
		exClient("stale", exBase-100, exBase-50),
		exClient("revived", exBase-100, 0),
		exClient("active", exBase-100, exBase+5),
		exClient("gone", exBase-100, 0),
	)
	deleteAt(t, w, exBase-10, "gone")

	ids, _ := unused(t, w, exBase, "", 100)
	if !slices.Equal(ids, []string{"idle", "revived", "stale"}) {
		t.Fatalf("Unused = %q", ids)
	}
	// Used between the read and the delete.
	revived := exClient("revived", exBase-100, exBase+1)
	store(t, w, revived)

	now := time.Unix(exBase+3600, 0)
	var n int
	err := w.Update(context.Background(), func(tx Tx) error {
		var err error
		n, err = tx.ExpireUnused(append(ids, "gone", "unknown", "active"),
			time.Unix(exBase, 0), now)
		return err
	})
	if err != nil {
		t.Fatalf("ExpireUnused: %v", err)
	}
	if n != 2 {
		t.Errorf("ExpireUnused deleted %d, want 2", n)
	}

	r := openReader(t, path)
	for _, id := range []string{"idle", "stale"} {
		if _, err := r.Lookup(id); !errors.Is(err, ErrDeleted) {
			t.Errorf("%s: %v, want ErrDeleted", id, err)
		}
		ts, err := r.Tombstone(id)
		if err != nil {
			t.Fatalf("%s: tombstone: %v", id, err)
		}
		want := Tombstone{ID: id, IssuedAt: exBase - 100, DeletedAt: now.Unix(),
			Reason: ReasonExpired}
		if *ts != want {
			t.Errorf("%s: tombstone %+v, want %+v", id, *ts, want)
		}
	}
	for _, id := range []string{"revived", "active"} {
		if _, err := r.Lookup(id); err != nil {
			t.Errorf("%s: %v, want it live", id, err)
		}
	}
	ts, err := r.Tombstone("gone")
	if err != nil || ts.Reason != ReasonDeleted || ts.DeletedAt != exBase-10 {
		t.Errorf("gone: tombstone %+v, %v; want the original deletion", ts, err)
	}
	if _, err := r.Lookup("unknown"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown: %v, want ErrNotFound", err)
	}
	// The sweeper finds expired clients' tombstones like any others.
	if n := sweep(t, w, now.Unix()+1, 10); n != 3 {
		t.Errorf("swept %d tombstones, want 3", n)
	}
}

// TestExpireUnusedReadOnly checks that ExpireUnused cannot delete through
// a read transaction, and says so.
func TestExpireUnusedReadOnly(t *testing.T) {
	w, _ := newWriter(t)
	store(t, w, exClient("idle", exBase-100, 0))
	err := w.View(func(tx Tx) error {
		n, err := tx.ExpireUnused([]string{"idle"}, time.Unix(exBase, 0), time.Unix(exBase, 0))
		if n != 0 {
			t.Errorf("ExpireUnused on a read transaction deleted %d", n)
		}
		return err
	})
	if err == nil {
		t.Error("ExpireUnused on a read transaction returned no error")
	}
}
