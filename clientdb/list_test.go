package clientdb

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// listIDs runs Clients in a read transaction of a Reader, visiting at
// most stopAfter clients (0: all), and returns the IDs it was given.
func listIDs(t *testing.T, r *Reader, after string, stopAfter int) []string {
	t.Helper()
	var ids []string
	err := r.View(func(tx Tx) error {
		ids = nil
		return tx.Clients(after, func(c *Client) (bool, error) {
			ids = append(ids, c.ID)
			return stopAfter == 0 || len(ids) < stopAfter, nil
		})
	})
	if err != nil {
		t.Fatalf("Clients(%q): %v", after, err)
	}
	return ids
}

func TestClientsOrderAndStart(t *testing.T) {
	w, path := newWriter(t)
	// Stored out of order: the listing follows the keys, not the
	// order of writes, and compares bytes, so "B" comes before "i".
	store(t, w, testClient("id-30"), testClient("id-10"),
		testClient("id-20"), testClient("B-upper"), testClient("id-40"))
	r := openReader(t, path)

	all := []string{"B-upper", "id-10", "id-20", "id-30", "id-40"}
	cases := []struct {
		name      string
		after     string
		stopAfter int
		want      []string
	}{
		{"from the first", "", 0, all},
		{"after a stored ID", "id-10", 0, all[2:]},
		{"after an ID between two", "id-15", 0, all[2:]},
		{"after a prefix of a stored ID", "id-2", 0, all[2:]},
		{"before every ID", "A", 0, all},
		{"after the last", "id-40", 0, nil},
		{"after every ID", "zzz", 0, nil},
		{"stopped by fn", "", 2, all[:2]},
		{"stopped by fn after a start", "id-10", 1, all[2:3]},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := listIDs(t, r, tc.after, tc.stopAfter)
			if !slices.Equal(got, tc.want) {
				t.Errorf("Clients(%q) visited %q, want %q", tc.after, got, tc.want)
			}
		})
	}
}

func TestClientsPaging(t *testing.T) {
	w, path := newWriter(t)
	var want []string
	var clients []*Client
	for i := range 23 {
		id := fmt.Sprintf("c-%03d", i)
		want = append(want, id)
		clients = append(clients, testClient(id))
	}
	store(t, w, clients...)
	r := openReader(t, path)

	// Pages of 5 resumed after the last ID of each page see every
	// client exactly once.
	var got []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > len(want) {
			t.Fatalf("paging does not end; visited %q", got)
		}
		page := listIDs(t, r, after, 5)
		if len(page) == 0 {
			break
		}
		got = append(got, page...)
		after = page[len(page)-1]
	}
	if !slices.Equal(got, want) {
		t.Errorf("pages visited %q, want %q", got, want)
	}
}

func TestClientsLiveOnly(t *testing.T) {
	w, path := newWriter(t)
	store(t, w, testClient("keep"), testClient("gone"), testClient("off"))
	deleteAt(t, w, 1796400000, "gone")
	err := w.Update(context.Background(), func(tx Tx) error {
		_, err := tx.Disable("off", time.Unix(1796400000, 0))
		return err
	})
	if err != nil {
		t.Fatalf("Disable: %v", err)
	}
	r := openReader(t, path)

	// The deleted client's tombstone is not a client; a disabled one is
	// still live and comes with its mark.
	var got []string
	disabled := map[string]bool{}
	err = r.View(func(tx Tx) error {
		return tx.Clients("", func(c *Client) (bool, error) {
			got = append(got, c.ID)
			disabled[c.ID] = c.Disabled()
			return true, nil
		})
	})
	if err != nil {
		t.Fatalf("Clients: %v", err)
	}
	if want := []string{"keep", "off"}; !slices.Equal(got, want) {
		t.Errorf("visited %q, want %q", got, want)
	}
	if !disabled["off"] || disabled["keep"] {
		t.Errorf("disabled marks %v, want only off", disabled)
	}

	// Resuming after the deleted ID works as after any other ID.
	if got := listIDs(t, r, "gone", 0); !slices.Equal(got, []string{"keep", "off"}) {
		t.Errorf("after the deleted ID: %q", got)
	}
}

func TestClientsDecodesEach(t *testing.T) {
	w, path := newWriter(t)
	want := testClient("full")
	want.DisabledAt = 1796400000
	want.InitialTokenID = "tok-1"
	want.Policy = &TokenPolicy{Scopes: []string{"read"}}
	store(t, w, want)
	r := openReader(t, path)

	var got []*Client
	err := r.View(func(tx Tx) error {
		return tx.Clients("", func(c *Client) (bool, error) {
			got = append(got, c)
			return true, nil
		})
	})
	if err != nil {
		t.Fatalf("Clients: %v", err)
	}
	if len(got) != 1 {
		t.Fatalf("visited %d clients, want 1", len(got))
	}
	c := got[0]
	if c.ID != want.ID || c.SecretHash != want.SecretHash ||
		c.DisabledAt != want.DisabledAt || c.InitialTokenID != want.InitialTokenID ||
		c.Policy == nil || !slices.Equal(c.Policy.Scopes, want.Policy.Scopes) ||
		c.Metadata.Localized["client_name#de"] != "Klient full" {
		t.Errorf("visited %+v, want %+v", c, want)
	}
}

func TestClientsErrors(t *testing.T) {
	w, path := newWriter(t)
	store(t, w, testClient("a"), testClient("b"), testClient("c"))
	r := openReader(t, path)

	// An error of fn ends the listing and is returned as it is.
	stop := errors.New("stop here")
	var visited []string
	err := r.View(func(tx Tx) error {
		return tx.Clients("", func(c *Client) (bool, error) {
			visited = append(visited, c.ID)
			if c.ID == "b" {
				return true, stop
			}
			return true, nil
		})
	})
	if !errors.Is(err, stop) {
		t.Errorf("Clients returned %v, want fn's error", err)
	}
	if !slices.Equal(visited, []string{"a", "b"}) {
		t.Errorf("visited %q after an error, want a and b", visited)
	}

	// A record that does not decode is an error naming its key.
	err = w.Update(context.Background(), func(tx Tx) error {
		return tx.(*boltTx).clients().Put([]byte("bad"), []byte("{not json"))
	})
	if err != nil {
		t.Fatalf("storing a bad record: %v", err)
	}
	err = r.View(func(tx Tx) error {
		return tx.Clients("b", func(*Client) (bool, error) { return true, nil })
	})
	if err == nil || !strings.Contains(err.Error(), `"bad"`) {
		t.Errorf("Clients over a bad record: %v, want an error naming it", err)
	}
}

func TestClientsEmptyStore(t *testing.T) {
	_, path := newWriter(t)
	r := openReader(t, path)

	// No file yet: no client and no error.
	if got := listIDs(t, r, "", 0); got != nil {
		t.Errorf("empty store visited %q", got)
	}
	if got := listIDs(t, r, "x", 0); got != nil {
		t.Errorf("empty store after x visited %q", got)
	}
}
