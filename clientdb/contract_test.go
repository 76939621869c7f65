package clientdb

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-dcr/caddy-dcr/internal/pgtest"
)

// TestContract runs every behaviour of the store on both stores, each on
// a fresh, empty one, so that a difference between bbolt and PostgreSQL
// shows as a case that passes on one and fails on the other.
func TestContract(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, s Store, r *Reader)
	}{
		{"round trip", ctRoundTrip},
		{"create taken id", ctCreateTaken},
		{"delete", ctDelete},
		{"tombstoned id", ctTombstonedID},
		{"count", ctCounting},
		{"count after put of a new id", ctCountPutNew},
		{"clients order", ctClientsOrder},
		{"disable and enable", ctDisableEnable},
		{"sweep tombstones", ctSweepTombstones},
		{"unused paging", ctUnusedPaging},
		{"expire unused", ctExpireUnused},
		{"forget", ctForget},
		{"audit events", ctEvents},
		{"initial token uses", ctTokenUses},
		{"initial token refusals", ctTokenRefusals},
		{"initial token revoke", ctTokenRevoke},
		{"initial token specs", ctTokenSpecs},
		{"initial tokens order", ctTokensOrder},
		{"concurrent token uses", ctConcurrentTokenUses},
		{"concurrent count limit", ctConcurrentCountLimit},
		{"error rolls back", ctRollback},
		{"read-only writes fail", ctReadOnly},
		{"values postgres cannot hold", ctUnstorable},
		{"outbox order", ctOutboxOrder},
		{"outbox payloads", ctOutboxPayloads},
		{"outbox bounds", ctOutboxBounds},
		{"outbox ack", ctOutboxAck},
		{"outbox sweep", ctOutboxSweep},
		{"outbox rollback", ctOutboxRollback},
		{"outbox concurrent updates", ctOutboxConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			eachStore(t, tc.run)
		})
	}
}

// eachStore runs fn as subtest "bbolt", on a Writer and a Reader of a new
// file, and as subtest "postgres", on a new database, which skips without
// $DCR_TEST_POSTGRES_DSN. Both stores are closed when their subtest ends.
func eachStore(t *testing.T, fn func(t *testing.T, s Store, r *Reader)) {
	t.Helper()

	t.Run("bbolt", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "clients.db")
		w, err := NewWriter(path)
		if err != nil {
			t.Fatalf("NewWriter: %v", err)
		}
		ctCloseAtEnd(t, w)
		r, err := OpenReader(path)
		if err != nil {
			t.Fatalf("OpenReader: %v", err)
		}
		ctCloseAtEnd(t, r)
		fn(t, w, r)
	})

	t.Run("postgres", func(t *testing.T) {
		dsn := pgtest.Database(t)
		p, err := OpenPostgres(t.Context(), dsn, PostgresOptions{})
		if err != nil {
			t.Fatalf("OpenPostgres: %v", err)
		}
		ctCloseAtEnd(t, p)
		r, err := Open(t.Context(), dsn)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		ctCloseAtEnd(t, r)
		fn(t, p, r)
	})
}

// ctCloseAtEnd closes c when t ends.
func ctCloseAtEnd(t *testing.T, c interface{ Close() error }) {
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("closing %T: %v", c, err)
		}
	})
}

// ctBase is the contract tests' clock at second 0, in Unix seconds.
const ctBase = 1796314153

// ctAt returns the contract tests' clock at sec seconds.
func ctAt(sec int64) time.Time {
	return time.Unix(ctBase+sec, 0)
}

// ctClient returns a client with the members most clients have.
func ctClient(id string) *Client {
	return &Client{
		ID:         id,
		IssuedAt:   ctBase,
		SecretHash: HashSecret("secret-of-" + id),
		Metadata: Metadata{
			RedirectURIs:            []string{"https://app.example/cb"},
			TokenEndpointAuthMethod: "client_secret_basic",
			GrantTypes:              []string{"authorization_code"},
			ResponseTypes:           []string{"code"},
			ClientName:              "client " + id,
		},
	}
}

// ctFullClient returns a client with every member set, those of OpenID
// Connect included.
func ctFullClient(id string) *Client {
	maxAge := int64(3600)
	yes, no := true, false

	m := fullMetadata()
	// Several members in one object: jsonb may store them in another
	// order, which the comparison in ctSameClient allows.
	m.JWKS = json.RawMessage(`{"keys":[{"kty":"OKP","crv":"Ed25519",` +
		`"x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`)
	m.SoftwareStatement = "eyJhbGciOiJub25lIn0.eyJzb2Z0d2FyZV9pZCI6IjQifQ."
	m.ApplicationType = "web"
	m.SectorIdentifierURI = "https://app.example/sector.json"
	m.SubjectType = "pairwise"
	m.IDTokenSignedResponseAlg = "EdDSA"
	m.IDTokenEncryptedResponseAlg = "ECDH-ES"
	m.IDTokenEncryptedResponseEnc = "A256GCM"
	m.UserinfoSignedResponseAlg = "ES256"
	m.RequestObjectSigningAlg = "PS256"
	m.TokenEndpointAuthSigningAlg = "EdDSA"
	m.DefaultMaxAge = &maxAge
	m.RequireAuthTime = &yes
	m.DefaultACRValues = []string{"urn:mace:incommon:iap:silver"}
	m.InitiateLoginURI = "https://app.example/login"
	m.RequestURIs = []string{"https://app.example/request"}
	m.PostLogoutRedirectURIs = []string{"https://app.example/bye"}
	m.FrontchannelLogoutURI = "https://app.example/fc"
	m.FrontchannelLogoutSessionRequired = &no
	m.BackchannelLogoutURI = "https://app.example/bc"
	m.BackchannelLogoutSessionRequired = &yes

	return &Client{
		ID:                      id,
		IssuedAt:                ctBase,
		SecretHash:              HashSecret("secret-of-" + id),
		SecretExpiresAt:         ctBase + 86400,
		PreviousSecretHash:      HashSecret("old-secret-of-" + id),
		PreviousSecretExpiresAt: ctBase + 60,
		RegistrationTokenHash:   HashSecret("rat-of-" + id),
		UpdatedAt:               ctBase + 5,
		LastUsedAt:              ctBase + 7,
		InitialTokenID:          "tok-" + id,
		Policy: &TokenPolicy{
			GrantTypes:    []string{"authorization_code"},
			Scopes:        []string{"openid", "profile"},
			RedirectHosts: []string{"*.app.example"},
		},
		Metadata: m,
	}
}

// ctJSON returns v's JSON form decoded into maps and slices, which
// compare equal whatever the order of object members.
func ctJSON(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("encoding %T: %v", v, err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	return out
}

// ctSameClient reports a stored client that differs from the one
// written. It compares JSON forms: PostgreSQL keeps the record as jsonb,
// which keeps the value of a raw JWKS but not its spacing or the order
// of its members.
func ctSameClient(t *testing.T, what string, got, want *Client) {
	t.Helper()
	if got == nil {
		t.Errorf("%s: no client, want %q", what, want.ID)
		return
	}
	if !reflect.DeepEqual(ctJSON(t, got), ctJSON(t, want)) {
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(want)
		t.Errorf("%s:\n got %s\nwant %s", what, g, w)
	}
}

// ctUpdate runs fn in a read-write transaction of s, failing t on an
// error.
func ctUpdate(t *testing.T, s Store, fn func(Tx) error) {
	t.Helper()
	if err := s.Update(t.Context(), fn); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

// ctView runs fn in a read-only transaction of r, failing t on an error.
func ctView(t *testing.T, r *Reader, fn func(Tx) error) {
	t.Helper()
	if err := r.View(fn); err != nil {
		t.Fatalf("View: %v", err)
	}
}

// ctCreate creates clients in one transaction.
func ctCreate(t *testing.T, s Store, clients ...*Client) {
	t.Helper()
	ctUpdate(t, s, func(tx Tx) error {
		for _, c := range clients {
			if err := tx.Create(c); err != nil {
				return fmt.Errorf("Create(%q): %w", c.ID, err)
			}
		}
		return nil
	})
}

// ctDeleteAt deletes a client, in a transaction of its own, at sec.
func ctDeleteAt(t *testing.T, s Store, id string, sec int64) {
	t.Helper()
	ctUpdate(t, s, func(tx Tx) error {
		return tx.Delete(id, ReasonDeleted, ctAt(sec))
	})
}

// ctCount returns the client count a read-only transaction of r sees.
func ctCount(t *testing.T, r *Reader) int {
	t.Helper()
	var n int
	ctView(t, r, func(tx Tx) error {
		n = tx.Count()
		return nil
	})
	return n
}

// ctIDs lists the IDs of the live clients in the order Clients gives.
func ctIDs(t *testing.T, r *Reader) []string {
	t.Helper()
	var ids []string
	ctView(t, r, func(tx Tx) error {
		ids = nil
		return tx.Clients("", func(c *Client) (bool, error) {
			ids = append(ids, c.ID)
			return true, nil
		})
	})
	return ids
}

func ctRoundTrip(t *testing.T, s Store, r *Reader) {
	want := ctFullClient("round-trip")
	var own *Client
	ctUpdate(t, s, func(tx Tx) error {
		if err := tx.Create(want); err != nil {
			return err
		}
		// A transaction reads its own writes.
		var err error
		own, err = tx.Client(want.ID)
		return err
	})
	ctSameClient(t, "Client in the creating transaction", own, want)

	got, err := r.Lookup(want.ID)
	if err != nil {
		t.Fatalf("Lookup: %v", err)
	}
	ctSameClient(t, "Reader.Lookup after Create", got, want)
	err = s.View(func(tx Tx) error {
		got, err = tx.Client(want.ID)
		return err
	})
	if err != nil {
		t.Fatalf("Store.View: %v", err)
	}
	ctSameClient(t, "Store.View after Create", got, want)

	// Put replaces the whole record: members the new value lacks are
	// gone afterwards, not kept from the old one.
	next := ctClient(want.ID)
	next.UpdatedAt = ctBase + 60
	next.Metadata.Scope = "read"
	ctUpdate(t, s, func(tx Tx) error { return tx.Put(next) })
	got, err = r.Lookup(want.ID)
	if err != nil {
		t.Fatalf("Lookup after Put: %v", err)
	}
	ctSameClient(t, "Reader.Lookup after Put", got, next)

	// Put also stores an ID not stored before.
	fresh := ctFullClient("put-new")
	ctUpdate(t, s, func(tx Tx) error { return tx.Put(fresh) })
	got, err = r.Lookup(fresh.ID)
	if err != nil {
		t.Fatalf("Lookup after Put of a new ID: %v", err)
	}
	ctSameClient(t, "Reader.Lookup after Put of a new ID", got, fresh)

	if _, err := r.Lookup("never-issued"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup(never issued) = %v, want ErrNotFound", err)
	}
}

func ctCreateTaken(t *testing.T, s Store, r *Reader) {
	orig := ctClient("taken")
	ctCreate(t, s, orig)

	impostor := ctClient("taken")
	impostor.Metadata.ClientName = "impostor"
	err := s.Update(t.Context(), func(tx Tx) error {
		return tx.Create(impostor)
	})
	if !errors.Is(err, ErrExists) {
		t.Errorf("Create of a taken ID = %v, want ErrExists", err)
	}

	// Twice in one transaction: the second sees the first.
	twice := ctClient("twice")
	var second error
	ctUpdate(t, s, func(tx Tx) error {
		if err := tx.Create(twice); err != nil {
			return err
		}
		second = tx.Create(ctClient("twice"))
		return nil
	})
	if !errors.Is(second, ErrExists) {
		t.Errorf("second Create in one transaction = %v, want ErrExists",
			second)
	}

	got, err := r.Lookup("taken")
	if err != nil {
		t.Fatalf("Lookup: %v", err)
	}
	ctSameClient(t, "client after a refused Create", got, orig)
	if n := ctCount(t, r); n != 2 {
		t.Errorf("Count = %d, want 2", n)
	}
}

func ctDelete(t *testing.T, s Store, r *Reader) {
	gone := ctClient("gone")
	gone.IssuedAt = ctBase - 100
	ctCreate(t, s, gone, ctClient("kept"))

	// The fraction of the second is not stored.
	ctUpdate(t, s, func(tx Tx) error {
		return tx.Delete("gone", ReasonDeleted,
			ctAt(50).Add(700*time.Millisecond))
	})
	want := &Tombstone{
		ID:        "gone",
		IssuedAt:  ctBase - 100,
		DeletedAt: ctBase + 50,
		Reason:    ReasonDeleted,
	}

	err := s.View(func(tx Tx) error {
		if _, err := tx.Client("gone"); !errors.Is(err, ErrDeleted) {
			t.Errorf("Client after Delete = %v, want ErrDeleted", err)
		}
		ts, err := tx.Tombstone("gone")
		if err != nil {
			return fmt.Errorf("Tombstone: %w", err)
		}
		if !reflect.DeepEqual(ts, want) {
			t.Errorf("Tombstone = %+v, want %+v", ts, want)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Store.View: %v", err)
	}
	if _, err := r.Lookup("gone"); !errors.Is(err, ErrDeleted) {
		t.Errorf("Reader.Lookup after Delete = %v, want ErrDeleted", err)
	}
	_, err = r.VerifySecret("gone", "secret-of-gone", ctAt(60))
	if !errors.Is(err, ErrDeleted) {
		t.Errorf("Reader.VerifySecret after Delete = %v, want ErrDeleted",
			err)
	}
	ts, err := r.Tombstone("gone")
	if err != nil || !reflect.DeepEqual(ts, want) {
		t.Errorf("Reader.Tombstone = %+v, %v; want %+v", ts, err, want)
	}

	refusals := []struct {
		name string
		id   string
		want error
	}{
		{"deleted again", "gone", ErrDeleted},
		{"never issued", "never", ErrNotFound},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Update(t.Context(), func(tx Tx) error {
				return tx.Delete(tc.id, ReasonDeleted, ctAt(70))
			})
			if !errors.Is(err, tc.want) {
				t.Errorf("Delete(%q) = %v, want %v", tc.id, err, tc.want)
			}
		})
	}

	for _, id := range []string{"kept", "never"} {
		if _, err := r.Tombstone(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Tombstone(%q) = %v, want ErrNotFound", id, err)
		}
	}
	// The refused second Delete left the first tombstone as it was.
	if ts, _ := r.Tombstone("gone"); !reflect.DeepEqual(ts, want) {
		t.Errorf("Tombstone after refused Delete = %+v, want %+v",
			ts, want)
	}
	if n := ctCount(t, r); n != 1 {
		t.Errorf("Count = %d, want 1", n)
	}
}

func ctTombstonedID(t *testing.T, s Store, r *Reader) {
	c := ctClient("dead")
	ctCreate(t, s, c)
	ctDeleteAt(t, s, "dead", 10)

	tests := []struct {
		name string
		op   func(Tx) error
		want error
	}{
		{"put", func(tx Tx) error { return tx.Put(c) }, ErrDeleted},
		{"create", func(tx Tx) error { return tx.Create(c) }, ErrExists},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Update(t.Context(), tc.op)
			if !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}

	if _, err := r.Lookup("dead"); !errors.Is(err, ErrDeleted) {
		t.Errorf("Lookup = %v, want ErrDeleted", err)
	}
	if n := ctCount(t, r); n != 0 {
		t.Errorf("Count = %d, want 0", n)
	}
}

func ctCounting(t *testing.T, s Store, r *Reader) {
	// Each step is committed, then counted by a reader, by the store's
	// own view and inside a writing transaction, which may count in
	// another way (PostgreSQL takes a lock first).
	steps := []struct {
		name string
		fn   func(Tx) error
		want int
	}{
		{"empty", nil, 0},
		{"create two", func(tx Tx) error {
			if err := tx.Create(ctClient("a")); err != nil {
				return err
			}
			return tx.Create(ctClient("b"))
		}, 2},
		{"create a third", func(tx Tx) error {
			return tx.Create(ctClient("c"))
		}, 3},
		{"put a live id", func(tx Tx) error {
			return tx.Put(ctClient("a"))
		}, 3},
		{"refused create in a committed transaction", func(tx Tx) error {
			if err := tx.Create(ctClient("b")); !errors.Is(err, ErrExists) {
				return fmt.Errorf("Create = %v, want ErrExists", err)
			}
			return nil
		}, 3},
		{"disable", func(tx Tx) error {
			_, err := tx.Disable("b", ctAt(1))
			return err
		}, 3},
		{"delete", func(tx Tx) error {
			return tx.Delete("a", ReasonDeleted, ctAt(2))
		}, 2},
		{"expire", func(tx Tx) error {
			_, err := tx.ExpireUnused([]string{"c"}, ctAt(100), ctAt(100))
			return err
		}, 1},
		{"sweep", func(tx Tx) error {
			_, err := tx.SweepTombstones(ctAt(1000), 10)
			return err
		}, 1},
	}
	for _, step := range steps {
		if step.fn != nil {
			ctUpdate(t, s, step.fn)
		}
		var inStore, inUpdate int
		err := s.View(func(tx Tx) error {
			inStore = tx.Count()
			return nil
		})
		if err != nil {
			t.Fatalf("%s: Store.View: %v", step.name, err)
		}
		ctUpdate(t, s, func(tx Tx) error {
			inUpdate = tx.Count()
			return nil
		})
		inReader := ctCount(t, r)
		if inReader != step.want || inStore != step.want ||
			inUpdate != step.want {
			t.Errorf("after %s: Count in Reader, Store.View, Update = "+
				"%d, %d, %d; want %d", step.name,
				inReader, inStore, inUpdate, step.want)
		}
	}
}

func ctCountPutNew(t *testing.T, s Store, r *Reader) {
	ctCreate(t, s, ctClient("a"))
	ctUpdate(t, s, func(tx Tx) error { return tx.Put(ctClient("b")) })
	ctUpdate(t, s, func(tx Tx) error { return tx.Put(ctClient("b")) })
	if n := ctCount(t, r); n != 2 {
		t.Errorf("Count after Create and a Put of a new ID = %d, want 2", n)
	}
	ctDeleteAt(t, s, "b", 1)
	if n := ctCount(t, r); n != 1 {
		t.Errorf("Count after deleting the Put one = %d, want 1", n)
	}
}

func ctClientsOrder(t *testing.T, s Store, r *Reader) {
	// Written out of order; bytewise "B" < "a" < "aa" < "ab" < "b".
	var clients []*Client
	for _, id := range []string{"b", "ab", "B", "a", "aa"} {
		clients = append(clients, ctClient(id))
	}
	ctCreate(t, s, clients...)
	ctDeleteAt(t, s, "aa", 1)
	ctUpdate(t, s, func(tx Tx) error {
		_, err := tx.Disable("b", ctAt(2))
		return err
	})

	all := []string{"B", "a", "ab", "b"}
	tests := []struct {
		name  string
		after string
		stop  int // stop after this many; 0 for never
		want  []string
	}{
		{"from the start", "", 0, all},
		{"after a live id", "a", 0, []string{"ab", "b"}},
		{"after a deleted id", "aa", 0, []string{"ab", "b"}},
		{"after an id before all", "A", 0, all},
		{"after an id between", "ac", 0, []string{"b"}},
		{"after the last", "b", 0, nil},
		{"after an id past all", "c", 0, nil},
		{"stopping early", "", 2, []string{"B", "a"}},
		{"stopping early after an id", "B", 1, []string{"a"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			ctView(t, r, func(tx Tx) error {
				got = nil
				return tx.Clients(tc.after, func(c *Client) (bool, error) {
					got = append(got, c.ID)
					return tc.stop == 0 || len(got) < tc.stop, nil
				})
			})
			if !slices.Equal(got, tc.want) {
				t.Errorf("Clients(%q) = %q, want %q", tc.after, got, tc.want)
			}
		})
	}

	t.Run("error from fn", func(t *testing.T) {
		stop := errors.New("stop")
		calls := 0
		err := r.View(func(tx Tx) error {
			return tx.Clients("", func(*Client) (bool, error) {
				calls++
				return true, stop
			})
		})
		if !errors.Is(err, stop) || calls != 1 {
			t.Errorf("Clients = %v after %d calls, want stop after 1",
				err, calls)
		}
	})

	t.Run("for each", func(t *testing.T) {
		var got []string
		ctView(t, r, func(tx Tx) error {
			got = nil
			return tx.ForEach(func(c *Client) error {
				got = append(got, c.ID)
				return nil
			})
		})
		if !slices.Equal(got, all) {
			t.Errorf("ForEach = %q, want %q", got, all)
		}
	})
}

func ctDisableEnable(t *testing.T, s Store, r *Reader) {
	ctCreate(t, s, ctClient("d"), ctClient("gone"))
	ctDeleteAt(t, s, "gone", 1)

	// disable runs Disable in a transaction of its own.
	disable := func(sec int64) *Client {
		t.Helper()
		var c *Client
		ctUpdate(t, s, func(tx Tx) error {
			var err error
			c, err = tx.Disable("d", ctAt(sec).Add(300*time.Millisecond))
			return err
		})
		return c
	}
	if c := disable(10); c.DisabledAt != ctBase+10 {
		t.Errorf("Disable returned DisabledAt %d, want %d",
			c.DisabledAt, ctBase+10)
	}
	// Disabling again keeps the first time.
	if c := disable(20); c.DisabledAt != ctBase+10 {
		t.Errorf("second Disable returned DisabledAt %d, want %d",
			c.DisabledAt, ctBase+10)
	}

	if _, err := r.Lookup("d"); !errors.Is(err, ErrDisabled) {
		t.Errorf("Lookup of a disabled client = %v, want ErrDisabled", err)
	}
	_, err := r.VerifySecret("d", "secret-of-d", ctAt(30))
	if !errors.Is(err, ErrDisabled) {
		t.Errorf("VerifySecret of a disabled client = %v, want ErrDisabled",
			err)
	}
	// The transaction still reads it, so that an operator can see it.
	ctView(t, r, func(tx Tx) error {
		c, err := tx.Client("d")
		if err != nil {
			return err
		}
		if c.DisabledAt != ctBase+10 {
			t.Errorf("stored DisabledAt = %d, want %d",
				c.DisabledAt, ctBase+10)
		}
		return nil
	})
	if n := ctCount(t, r); n != 1 {
		t.Errorf("Count with a disabled client = %d, want 1", n)
	}

	var enabled *Client
	ctUpdate(t, s, func(tx Tx) error {
		var err error
		enabled, err = tx.Enable("d")
		return err
	})
	if enabled.DisabledAt != 0 {
		t.Errorf("Enable returned DisabledAt %d", enabled.DisabledAt)
	}
	c, err := r.Lookup("d")
	if err != nil || c.DisabledAt != 0 {
		t.Errorf("Lookup after Enable = %+v, %v", c, err)
	}
	ok, err := r.VerifySecret("d", "secret-of-d", ctAt(30))
	if !ok || err != nil {
		t.Errorf("VerifySecret after Enable = %v, %v; want true", ok, err)
	}

	refusals := []struct {
		name string
		op   func(Tx) error
		want error
	}{
		{"disable unknown", func(tx Tx) error {
			_, err := tx.Disable("never", ctAt(40))
			return err
		}, ErrNotFound},
		{"enable unknown", func(tx Tx) error {
			_, err := tx.Enable("never")
			return err
		}, ErrNotFound},
		{"disable deleted", func(tx Tx) error {
			_, err := tx.Disable("gone", ctAt(40))
			return err
		}, ErrDeleted},
		{"enable deleted", func(tx Tx) error {
			_, err := tx.Enable("gone")
			return err
		}, ErrDeleted},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			if err := s.Update(t.Context(), tc.op); !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// ctHasTombstones reports HasTombstonesBefore(ctAt(sec)) in a reader.
func ctHasTombstones(t *testing.T, r *Reader, sec int64) bool {
	t.Helper()
	var has bool
	ctView(t, r, func(tx Tx) error {
		has = tx.HasTombstonesBefore(ctAt(sec))
		return nil
	})
	return has
}

func ctSweepTombstones(t *testing.T, s Store, r *Reader) {
	// Deleted in an order that is neither that of the IDs nor that of
	// the deletion times.
	deletions := []struct {
		id  string
		sec int64
	}{
		{"t3", 30}, {"t1", 10}, {"t4", 40}, {"t2", 20},
	}
	for _, d := range deletions {
		ctCreate(t, s, ctClient(d.id))
		ctDeleteAt(t, s, d.id, d.sec)
	}

	// sweep sweeps in a transaction of its own.
	sweep := func(sec int64, limit int) int {
		t.Helper()
		var n int
		ctUpdate(t, s, func(tx Tx) error {
			var err error
			n, err = tx.SweepTombstones(ctAt(sec), limit)
			return err
		})
		return n
	}
	// remaining lists the IDs that still have a tombstone.
	remaining := func() []string {
		t.Helper()
		var ids []string
		for _, id := range []string{"t1", "t2", "t3", "t4"} {
			_, err := r.Tombstone(id)
			switch {
			case err == nil:
				ids = append(ids, id)
			case !errors.Is(err, ErrNotFound):
				t.Fatalf("Tombstone(%q): %v", id, err)
			}
		}
		return ids
	}

	if ctHasTombstones(t, r, 10) {
		t.Error("HasTombstonesBefore(the oldest deletion) = true")
	}
	if !ctHasTombstones(t, r, 11) {
		t.Error("HasTombstonesBefore(just after the oldest) = false")
	}

	steps := []struct {
		name  string
		sec   int64
		limit int
		swept int
		left  []string
		has   bool // HasTombstonesBefore(cutoff) afterwards
	}{
		{"limited", 35, 2, 2, []string{"t3", "t4"}, true},
		{"rest before the cutoff", 35, 10, 1, []string{"t4"}, false},
		{"nothing left before it", 35, 10, 0, []string{"t4"}, false},
		{"cutoff at a deletion", 40, 10, 0, []string{"t4"}, false},
	}
	for _, step := range steps {
		if n := sweep(step.sec, step.limit); n != step.swept {
			t.Errorf("%s: swept %d, want %d", step.name, n, step.swept)
		}
		if got := remaining(); !slices.Equal(got, step.left) {
			t.Errorf("%s: tombstones left %q, want %q",
				step.name, got, step.left)
		}
		if has := ctHasTombstones(t, r, step.sec); has != step.has {
			t.Errorf("%s: HasTombstonesBefore = %v, want %v",
				step.name, has, step.has)
		}
	}

	// A swept ID is unknown: neither deleted nor live.
	if _, err := r.Lookup("t1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup of a swept ID = %v, want ErrNotFound", err)
	}
	if _, err := r.Lookup("t4"); !errors.Is(err, ErrDeleted) {
		t.Errorf("Lookup of an unswept ID = %v, want ErrDeleted", err)
	}
}

// ctUnusedClients are the clients of the Unused and ExpireUnused cases,
// seen at a cutoff of second 0.
var ctUnusedClients = []struct {
	id           string
	issued, used int64 // seconds; used 0 for never
}{
	{"u1", -100, 0},  // never used: unused
	{"u2", -100, 50}, // used since
	{"u3", 10, 0},    // registered since
	{"u4", -100, -1}, // last used before
	{"u5", -200, 0},  // never used: unused
}

// ctCreateUnused creates ctUnusedClients.
func ctCreateUnused(t *testing.T, s Store) {
	t.Helper()
	var clients []*Client
	for _, u := range ctUnusedClients {
		c := ctClient(u.id)
		c.IssuedAt = ctBase + u.issued
		if u.used != 0 {
			c.LastUsedAt = ctBase + u.used
		}
		clients = append(clients, c)
	}
	ctCreate(t, s, clients...)
}

func ctUnusedPaging(t *testing.T, s Store, r *Reader) {
	ctCreateUnused(t, s)

	tests := []struct {
		name     string
		after    string
		limit    int
		wantIDs  []string
		wantLast string
	}{
		{"first page", "", 2, []string{"u1"}, "u2"},
		{"middle page", "u2", 2, []string{"u4"}, "u4"},
		{"short last page", "u4", 2, []string{"u5"}, ""},
		{"last page of exactly limit", "u3", 2, []string{"u4", "u5"}, ""},
		{"all in exactly limit", "", 5, []string{"u1", "u4", "u5"}, ""},
		{"all in fewer than limit", "", 10, []string{"u1", "u4", "u5"}, ""},
		{"after a missing id", "u0", 1, []string{"u1"}, "u1"},
		{"after the last", "u5", 3, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var ids []string
			var last string
			ctView(t, r, func(tx Tx) error {
				var err error
				ids, last, err = tx.Unused(ctAt(0), tc.after, tc.limit)
				return err
			})
			if !slices.Equal(ids, tc.wantIDs) || last != tc.wantLast {
				t.Errorf("Unused(%q, %d) = %q, %q; want %q, %q",
					tc.after, tc.limit, ids, last, tc.wantIDs, tc.wantLast)
			}
		})
	}

	t.Run("paging to the end", func(t *testing.T) {
		var all []string
		after := ""
		for pages := 1; ; pages++ {
			if pages > 10 {
				t.Fatalf("no end after %d pages", pages)
			}
			var ids []string
			ctView(t, r, func(tx Tx) error {
				var err error
				ids, after, err = tx.Unused(ctAt(0), after, 2)
				return err
			})
			all = append(all, ids...)
			if after == "" {
				break
			}
		}
		if want := []string{"u1", "u4", "u5"}; !slices.Equal(all, want) {
			t.Errorf("paged Unused = %q, want %q", all, want)
		}
	})
}

func ctExpireUnused(t *testing.T, s Store, r *Reader) {
	ctCreateUnused(t, s)
	ctDeleteAt(t, s, "u5", 1)

	// u2 was used since the scan, u5 deleted, "never" never issued; u1
	// is listed twice.
	ids := []string{"u1", "u2", "u4", "u5", "never", "u1"}
	var n int
	ctUpdate(t, s, func(tx Tx) error {
		var err error
		n, err = tx.ExpireUnused(ids, ctAt(0), ctAt(500))
		return err
	})
	if n != 2 {
		t.Errorf("ExpireUnused = %d, want 2", n)
	}

	for _, id := range []string{"u1", "u4"} {
		ts, err := r.Tombstone(id)
		want := &Tombstone{ID: id, IssuedAt: ctBase - 100,
			DeletedAt: ctBase + 500, Reason: ReasonExpired}
		if err != nil || !reflect.DeepEqual(ts, want) {
			t.Errorf("Tombstone(%q) = %+v, %v; want %+v", id, ts, err, want)
		}
	}
	if got, want := ctIDs(t, r), []string{"u2", "u3"}; !slices.Equal(got, want) {
		t.Errorf("live clients %q, want %q", got, want)
	}
	if n := ctCount(t, r); n != 2 {
		t.Errorf("Count = %d, want 2", n)
	}

	events, err := r.EventsSince(0, 10)
	if err != nil {
		t.Fatalf("EventsSince: %v", err)
	}
	var got []Event
	for _, e := range events {
		e.Seq = 0
		got = append(got, e)
	}
	want := []Event{
		{Time: ctBase + 500, Op: OpExpire, Actor: ActorSystem, ClientID: "u1"},
		{Time: ctBase + 500, Op: OpExpire, Actor: ActorSystem, ClientID: "u4"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("events = %+v, want %+v", got, want)
	}
}

func ctEvents(t *testing.T, s Store, r *Reader) {
	first := []*Event{
		{Time: ctBase, Op: OpCreate, Actor: ActorClient, ClientID: "a",
			TokenID: "tok", ClientIP: "192.0.2.1"},
		{Time: ctBase + 10, Op: OpRead, Actor: ActorClient, ClientID: "a",
			ClientIP: "2001:db8::1", Outcome: "refused",
			Error: "invalid_token", Rule: "registration_token"},
	}
	third := &Event{Time: ctBase + 20, Op: OpTokenCreate,
		Actor: ActorOperator, TokenID: "tok"}
	ctUpdate(t, s, func(tx Tx) error {
		for _, e := range first {
			if err := tx.AppendEvent(e); err != nil {
				return err
			}
		}
		return nil
	})
	ctUpdate(t, s, func(tx Tx) error { return tx.AppendEvent(third) })

	all := []Event{*first[0], *first[1], *third}
	for i, e := range all {
		if e.Seq == 0 || (i > 0 && e.Seq <= all[i-1].Seq) {
			t.Fatalf("sequence numbers %d, %d, %d do not grow",
				all[0].Seq, all[1].Seq, all[2].Seq)
		}
	}

	since := []struct {
		name  string
		after uint64
		limit int
		want  []Event
	}{
		{"all", 0, 10, all},
		{"limited", 0, 2, all[:2]},
		{"after the first", all[0].Seq, 10, all[1:]},
		{"after the first, limited", all[0].Seq, 1, all[1:2]},
		{"after the last", all[2].Seq, 10, nil},
	}
	for _, tc := range since {
		t.Run(tc.name, func(t *testing.T) {
			got, err := r.EventsSince(tc.after, tc.limit)
			if err != nil {
				t.Fatalf("EventsSince: %v", err)
			}
			if len(got) != len(tc.want) ||
				(len(got) > 0 && !reflect.DeepEqual(got, tc.want)) {
				t.Errorf("EventsSince(%d, %d) = %+v, want %+v",
					tc.after, tc.limit, got, tc.want)
			}
		})
	}

	hasBefore := func(sec int64) bool {
		t.Helper()
		var has bool
		ctView(t, r, func(tx Tx) error {
			has = tx.HasEventsBefore(ctAt(sec))
			return nil
		})
		return has
	}
	if hasBefore(0) {
		t.Error("HasEventsBefore(the oldest event) = true")
	}
	if !hasBefore(1) {
		t.Error("HasEventsBefore(just after the oldest) = false")
	}

	sweeps := []struct {
		limit int
		want  int
	}{
		{1, 1}, // limited
		{10, 1},
		{10, 0}, // none left before the cutoff
	}
	for i, sw := range sweeps {
		var n int
		ctUpdate(t, s, func(tx Tx) error {
			var err error
			n, err = tx.SweepEvents(ctAt(15), sw.limit)
			return err
		})
		if n != sw.want {
			t.Errorf("sweep %d: SweepEvents(limit %d) = %d, want %d",
				i+1, sw.limit, n, sw.want)
		}
	}
	if hasBefore(15) {
		t.Error("HasEventsBefore(cutoff) after sweeping = true")
	}
	got, err := r.EventsSince(0, 10)
	if err != nil || !reflect.DeepEqual(got, all[2:]) {
		t.Errorf("events after sweeping = %+v, %v; want %+v",
			got, err, all[2:])
	}

	// A sequence number is never reused, even after a sweep.
	fourth := &Event{Time: ctBase + 30, Op: OpDelete, Actor: ActorOperator,
		ClientID: "a"}
	ctUpdate(t, s, func(tx Tx) error { return tx.AppendEvent(fourth) })
	if fourth.Seq <= third.Seq {
		t.Errorf("sequence after a sweep %d, want above %d",
			fourth.Seq, third.Seq)
	}
}

// ctNewToken creates an initial access token in a transaction of its own.
func ctNewToken(t *testing.T, s Store, spec InitialTokenSpec,
	sec int64) (string, *InitialToken) {
	t.Helper()
	var token string
	var info *InitialToken
	ctUpdate(t, s, func(tx Tx) error {
		var err error
		token, info, err = tx.CreateInitialToken(spec, ctAt(sec))
		return err
	})
	return token, info
}

// ctStoredToken returns the stored record of the token with the given ID.
func ctStoredToken(t *testing.T, r *Reader, id string) *InitialToken {
	t.Helper()
	var info *InitialToken
	ctView(t, r, func(tx Tx) error {
		var err error
		info, err = tx.InitialToken(id)
		return err
	})
	return info
}

// ctUseToken spends a use of token in a transaction of its own.
func ctUseToken(t *testing.T, s Store, token string, sec int64) (
	*InitialToken, error) {
	var info *InitialToken
	err := s.Update(t.Context(), func(tx Tx) error {
		var err error
		info, err = tx.UseInitialToken(token, ctAt(sec))
		return err
	})
	return info, err
}

func ctTokenUses(t *testing.T, s Store, r *Reader) {
	policy := &TokenPolicy{
		GrantTypes:    []string{"client_credentials"},
		Scopes:        []string{"read"},
		RedirectHosts: []string{"*.example.com"},
	}
	spec := InitialTokenSpec{
		Label: "ci pipeline",
		// The fraction of a second is dropped.
		ExpiresAt: ctAt(3600).Add(500 * time.Millisecond),
		MaxUses:   2,
		Policy:    policy,
	}
	token, info := ctNewToken(t, s, spec, 0)

	if !strings.HasPrefix(token, InitialTokenPrefix) {
		t.Errorf("token %q lacks the prefix %q", token, InitialTokenPrefix)
	}
	want := &InitialToken{
		ID:        info.ID,
		Hash:      HashSecret(token),
		Label:     "ci pipeline",
		CreatedAt: ctBase,
		ExpiresAt: ctBase + 3600,
		MaxUses:   2,
		Policy:    policy,
	}
	if info.ID == "" || !reflect.DeepEqual(info, want) {
		t.Errorf("CreateInitialToken = %+v, want %+v", info, want)
	}
	if got := ctStoredToken(t, r, info.ID); !reflect.DeepEqual(got, want) {
		t.Errorf("stored token = %+v, want %+v", got, want)
	}

	check := func(tx Tx) (*InitialToken, error) {
		return tx.CheckInitialToken(token, ctAt(10))
	}
	use := func(tx Tx) (*InitialToken, error) {
		return tx.UseInitialToken(token, ctAt(10))
	}
	steps := []struct {
		name    string
		op      func(Tx) (*InitialToken, error)
		wantErr error
		uses    int // the stored count afterwards
	}{
		{"check", check, nil, 0},
		{"use", use, nil, 1},
		{"check after a use", check, nil, 1},
		{"use again", use, nil, 2},
		{"use exhausted", use, ErrTokenInvalid, 2},
		{"check exhausted", check, ErrTokenInvalid, 2},
	}
	for _, step := range steps {
		var got *InitialToken
		err := s.Update(t.Context(), func(tx Tx) error {
			var err error
			got, err = step.op(tx)
			return err
		})
		if !errors.Is(err, step.wantErr) {
			t.Errorf("%s: %v, want %v", step.name, err, step.wantErr)
		}
		if err == nil && got.Uses != step.uses {
			t.Errorf("%s: returned %d uses, want %d",
				step.name, got.Uses, step.uses)
		}
		if n := ctStoredToken(t, r, info.ID).Uses; n != step.uses {
			t.Errorf("%s: stored %d uses, want %d", step.name, n, step.uses)
		}
	}

	// A read-only check gives the same answer.
	err := r.View(func(tx Tx) error {
		_, err := tx.CheckInitialToken(token, ctAt(10))
		return err
	})
	if !errors.Is(err, ErrTokenInvalid) {
		t.Errorf("read-only check of an exhausted token = %v", err)
	}
	stored := ctStoredToken(t, r, info.ID)
	if st := stored.State(ctAt(10)); st != TokenExhausted {
		t.Errorf("state = %q, want %q", st, TokenExhausted)
	}
}

func ctTokenRefusals(t *testing.T, s Store, r *Reader) {
	tests := []struct {
		name   string
		spec   InitialTokenSpec
		prep   func(t *testing.T, token, id string) // before the use
		token  func(token string) string            // what is presented
		at     int64
		wantOK bool
	}{
		{
			name:   "active",
			spec:   InitialTokenSpec{ExpiresAt: ctAt(100)},
			at:     99,
			wantOK: true,
		},
		{
			name: "unknown",
			token: func(token string) string {
				return InitialTokenPrefix + "never-issued"
			},
			at: 1,
		},
		{
			name: "another's hash",
			token: func(token string) string {
				return HashSecret(token)
			},
			at: 1,
		},
		{
			name: "expired at its expiry",
			spec: InitialTokenSpec{ExpiresAt: ctAt(100)},
			at:   100,
		},
		{
			name: "expired after",
			spec: InitialTokenSpec{ExpiresAt: ctAt(100)},
			at:   101,
		},
		{
			name: "used up",
			spec: InitialTokenSpec{MaxUses: 1},
			prep: func(t *testing.T, token, _ string) {
				if _, err := ctUseToken(t, s, token, 1); err != nil {
					t.Fatalf("first use: %v", err)
				}
			},
			at: 2,
		},
		{
			name: "revoked",
			spec: InitialTokenSpec{MaxUses: 5},
			prep: func(t *testing.T, _, id string) {
				ctUpdate(t, s, func(tx Tx) error {
					_, err := tx.RevokeInitialToken(id, ctAt(1))
					return err
				})
			},
			at: 2,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			token, info := ctNewToken(t, s, tc.spec, 0)
			if tc.prep != nil {
				tc.prep(t, token, info.ID)
			}
			if tc.token != nil {
				token = tc.token(token)
			}
			before := ctStoredToken(t, r, info.ID)

			err := r.View(func(tx Tx) error {
				_, err := tx.CheckInitialToken(token, ctAt(tc.at))
				return err
			})
			_, useErr := ctUseToken(t, s, token, tc.at)
			after := ctStoredToken(t, r, info.ID)

			if tc.wantOK {
				if err != nil || useErr != nil {
					t.Errorf("check, use = %v, %v; want success",
						err, useErr)
				}
				if after.Uses != before.Uses+1 {
					t.Errorf("uses %d after a use, want %d",
						after.Uses, before.Uses+1)
				}
				return
			}
			if !errors.Is(err, ErrTokenInvalid) ||
				!errors.Is(useErr, ErrTokenInvalid) {
				t.Errorf("check, use = %v, %v; want ErrTokenInvalid",
					err, useErr)
			}
			if !reflect.DeepEqual(after, before) {
				t.Errorf("a refused use changed the token: %+v, was %+v",
					after, before)
			}
		})
	}
}

func ctTokenRevoke(t *testing.T, s Store, r *Reader) {
	_, info := ctNewToken(t, s, InitialTokenSpec{Label: "l"}, 0)

	revoke := func(id string, sec int64) (*InitialToken, error) {
		var got *InitialToken
		err := s.Update(t.Context(), func(tx Tx) error {
			var err error
			got, err = tx.RevokeInitialToken(id, ctAt(sec))
			return err
		})
		return got, err
	}
	want := *info
	want.RevokedAt = ctBase + 5
	for _, sec := range []int64{5, 9} {
		got, err := revoke(info.ID, sec)
		if err != nil || !reflect.DeepEqual(got, &want) {
			t.Errorf("RevokeInitialToken at %d = %+v, %v; want %+v",
				sec, got, err, &want)
		}
	}
	if got := ctStoredToken(t, r, info.ID); !reflect.DeepEqual(got, &want) {
		t.Errorf("stored = %+v, want %+v", got, &want)
	}
	if st := want.State(ctAt(10)); st != TokenRevoked {
		t.Errorf("state = %q, want %q", st, TokenRevoked)
	}

	if _, err := revoke("never-issued", 5); !errors.Is(err, ErrTokenNotFound) {
		t.Errorf("revoking an unknown ID = %v, want ErrTokenNotFound", err)
	}
	err := r.View(func(tx Tx) error {
		_, err := tx.InitialToken("never-issued")
		return err
	})
	if !errors.Is(err, ErrTokenNotFound) {
		t.Errorf("InitialToken(unknown) = %v, want ErrTokenNotFound", err)
	}
}

func ctTokenSpecs(t *testing.T, s Store, r *Reader) {
	tests := []struct {
		name string
		spec InitialTokenSpec
	}{
		{"negative max uses", InitialTokenSpec{MaxUses: -1}},
		{"label too long", InitialTokenSpec{
			Label: strings.Repeat("x", MaxInitialTokenLabel+1)}},
		{"label not utf-8", InitialTokenSpec{Label: "\xff"}},
		{"expiry within the second", InitialTokenSpec{
			ExpiresAt: ctAt(0).Add(900 * time.Millisecond)}},
		{"expiry before", InitialTokenSpec{ExpiresAt: ctAt(-1)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Update(t.Context(), func(tx Tx) error {
				_, _, err := tx.CreateInitialToken(tc.spec, ctAt(0))
				return err
			})
			if err == nil {
				t.Error("CreateInitialToken succeeded")
			}
		})
	}
	all, err := r.InitialTokens()
	if err != nil || len(all) != 0 {
		t.Errorf("InitialTokens after refusals = %d tokens, %v; want none",
			len(all), err)
	}

	// The longest label is fine.
	label := strings.Repeat("ü", MaxInitialTokenLabel/2)
	_, info := ctNewToken(t, s, InitialTokenSpec{Label: label}, 0)
	if got := ctStoredToken(t, r, info.ID); got.Label != label {
		t.Errorf("stored label %q, want %q", got.Label, label)
	}
}

func ctTokensOrder(t *testing.T, s Store, r *Reader) {
	// Created out of order, two in the same second.
	var created []*InitialToken
	for _, sec := range []int64{20, 10, 30, 10} {
		_, info := ctNewToken(t, s, InitialTokenSpec{
			Label: fmt.Sprint("at ", sec)}, sec)
		created = append(created, info)
	}
	want := slices.Clone(created)
	slices.SortFunc(want, func(a, b *InitialToken) int {
		if a.CreatedAt != b.CreatedAt {
			return int(a.CreatedAt - b.CreatedAt)
		}
		return strings.Compare(a.ID, b.ID)
	})

	got, err := r.InitialTokens()
	if err != nil {
		t.Fatalf("Reader.InitialTokens: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Reader.InitialTokens:\n got %s\nwant %s",
			ctTokenIDs(got), ctTokenIDs(want))
	}
	err = s.View(func(tx Tx) error {
		got, err = tx.InitialTokens()
		return err
	})
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Store.View InitialTokens = %s, %v; want %s",
			ctTokenIDs(got), err, ctTokenIDs(want))
	}
}

// ctTokenIDs describes tokens by creation time and ID.
func ctTokenIDs(all []*InitialToken) string {
	var b strings.Builder
	for _, info := range all {
		fmt.Fprintf(&b, "[%d %s] ", info.CreatedAt-ctBase, info.ID)
	}
	return b.String()
}

func ctConcurrentTokenUses(t *testing.T, s Store, r *Reader) {
	token, info := ctNewToken(t, s, InitialTokenSpec{MaxUses: 5}, 0)

	const n = 20
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = s.Update(t.Context(), func(tx Tx) error {
				if _, err := tx.UseInitialToken(token, ctAt(1)); err != nil {
					return err
				}
				c := ctClient(fmt.Sprintf("conc-%02d", i))
				c.InitialTokenID = info.ID
				return tx.Create(c)
			})
		})
	}
	close(start)
	wg.Wait()

	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, ErrTokenInvalid):
			t.Errorf("registration %d: %v", i, err)
		}
	}
	if ok != 5 {
		t.Errorf("%d registrations succeeded, want 5", ok)
	}
	if got := ctStoredToken(t, r, info.ID).Uses; got != 5 {
		t.Errorf("token uses = %d, want 5", got)
	}
	if got := ctCount(t, r); got != 5 {
		t.Errorf("Count = %d, want 5", got)
	}
	if ids := ctIDs(t, r); len(ids) != 5 {
		t.Errorf("stored clients %q, want 5", ids)
	}
}

func ctConcurrentCountLimit(t *testing.T, s Store, r *Reader) {
	const n, limit = 10, 3
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = s.Update(t.Context(), func(tx Tx) error {
				if tx.Count() >= limit {
					return nil
				}
				return tx.Create(ctClient(fmt.Sprintf("lim-%02d", i)))
			})
		})
	}
	close(start)
	wg.Wait()

	for i, err := range errs {
		if err != nil {
			t.Errorf("update %d: %v", i, err)
		}
	}
	if got := ctCount(t, r); got != limit {
		t.Errorf("Count = %d, want %d", got, limit)
	}
	if ids := ctIDs(t, r); len(ids) != limit {
		t.Errorf("stored clients %q, want %d", ids, limit)
	}
}

// ctState is everything the rollback and read-only cases watch.
type ctState struct {
	Count      int
	Clients    any // JSON form
	Tombstones map[string]*Tombstone
	Events     []Event
	Tokens     []*InitialToken
	Outbox     []OutboxEntry // of queue ctFixtureQueue
}

// ctSnapshot reads the state of the store, with the tombstones of ids.
func ctSnapshot(t *testing.T, r *Reader, ids ...string) ctState {
	t.Helper()
	st := ctState{Tombstones: make(map[string]*Tombstone)}
	var clients []*Client
	ctView(t, r, func(tx Tx) error {
		st.Count = tx.Count()
		clients = nil
		return tx.ForEach(func(c *Client) error {
			clients = append(clients, c)
			return nil
		})
	})
	st.Clients = ctJSON(t, clients)
	for _, id := range ids {
		ts, err := r.Tombstone(id)
		if err != nil && !errors.Is(err, ErrNotFound) {
			t.Fatalf("Tombstone(%q): %v", id, err)
		}
		st.Tombstones[id] = ts
	}
	var err error
	if st.Events, err = r.EventsSince(0, 100); err != nil {
		t.Fatalf("EventsSince: %v", err)
	}
	if st.Tokens, err = r.InitialTokens(); err != nil {
		t.Fatalf("InitialTokens: %v", err)
	}
	st.Outbox = ctPending(t, r, ctFixtureQueue, 100)
	return st
}

// ctFixtureQueue is the outbox queue ctFixture fills.
const ctFixtureQueue = "fixture"

// ctFixture fills a store with one of everything a change can touch: a
// client "keep", a client "spare", a tombstone "dead", an audit event, an
// entry in outbox queue ctFixtureQueue and an initial access token, whose
// plaintext and ID it returns.
func ctFixture(t *testing.T, s Store) (token, tokenID string) {
	t.Helper()
	ctCreate(t, s, ctClient("keep"), ctClient("spare"), ctClient("dead"))
	ctDeleteAt(t, s, "dead", 1)
	ctUpdate(t, s, func(tx Tx) error {
		return tx.AppendEvent(&Event{Time: ctBase + 1, Op: OpDelete,
			Actor: ActorOperator, ClientID: "dead"})
	})
	ctEnqueue(t, s, ctFixtureQueue, "fixture entry", 1)
	token, info := ctNewToken(t, s, InitialTokenSpec{MaxUses: 3}, 0)
	return token, info.ID
}

// ctFixtureIDs are the client IDs whose tombstones a snapshot of a
// ctFixture store compares.
var ctFixtureIDs = []string{"keep", "spare", "dead", "new"}

func ctRollback(t *testing.T, s Store, r *Reader) {
	token, tokenID := ctFixture(t, s)
	before := ctSnapshot(t, r, ctFixtureIDs...)
	if len(before.Outbox) != 1 {
		t.Fatalf("fixture outbox = %+v, want one entry", before.Outbox)
	}

	boom := errors.New("boom")
	steps := []struct {
		name string
		fn   func(Tx) error
	}{
		{"Create", func(tx Tx) error { return tx.Create(ctClient("new")) }},
		{"Put", func(tx Tx) error {
			c := ctClient("keep")
			c.Metadata.ClientName = "changed"
			return tx.Put(c)
		}},
		{"Disable", func(tx Tx) error {
			_, err := tx.Disable("keep", ctAt(2))
			return err
		}},
		{"Delete", func(tx Tx) error {
			return tx.Delete("spare", ReasonDeleted, ctAt(2))
		}},
		{"SweepTombstones", func(tx Tx) error {
			n, err := tx.SweepTombstones(ctAt(100), 10)
			if err == nil && n != 2 {
				err = fmt.Errorf("swept %d, want 2", n)
			}
			return err
		}},
		{"AppendEvent", func(tx Tx) error {
			return tx.AppendEvent(&Event{Time: ctBase + 2, Op: OpCreate,
				Actor: ActorClient, ClientID: "new"})
		}},
		{"SweepEvents", func(tx Tx) error {
			n, err := tx.SweepEvents(ctAt(100), 10)
			if err == nil && n != 2 {
				err = fmt.Errorf("swept %d, want 2", n)
			}
			return err
		}},
		{"CreateInitialToken", func(tx Tx) error {
			_, _, err := tx.CreateInitialToken(InitialTokenSpec{}, ctAt(2))
			return err
		}},
		{"UseInitialToken", func(tx Tx) error {
			_, err := tx.UseInitialToken(token, ctAt(2))
			return err
		}},
		{"RevokeInitialToken", func(tx Tx) error {
			_, err := tx.RevokeInitialToken(tokenID, ctAt(2))
			return err
		}},
		{"ExpireUnused", func(tx Tx) error {
			n, err := tx.ExpireUnused([]string{"keep"}, ctAt(100), ctAt(100))
			if err == nil && n != 1 {
				err = fmt.Errorf("expired %d, want 1", n)
			}
			return err
		}},
		{"Enqueue", func(tx Tx) error {
			_, err := tx.Enqueue(ctFixtureQueue, []byte("new"), ctAt(2))
			return err
		}},
		{"Ack", func(tx Tx) error {
			return tx.Ack(ctFixtureQueue, before.Outbox[0].Seq)
		}},
		{"SweepOutbox", func(tx Tx) error {
			n, err := tx.SweepOutbox(ctAt(100), 10)
			if err == nil && n != 1 {
				err = fmt.Errorf("swept %d, want 1", n)
			}
			return err
		}},
	}
	err := s.Update(t.Context(), func(tx Tx) error {
		for _, step := range steps {
			if err := step.fn(tx); err != nil {
				return fmt.Errorf("%s: %w", step.name, err)
			}
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v, want the error fn returned", err)
	}

	after := ctSnapshot(t, r, ctFixtureIDs...)
	if !reflect.DeepEqual(after, before) {
		t.Errorf("a failed Update changed the store:\n got %+v\nwant %+v",
			after, before)
	}
}

func ctReadOnly(t *testing.T, s Store, r *Reader) {
	token, tokenID := ctFixture(t, s)
	before := ctSnapshot(t, r, ctFixtureIDs...)
	if len(before.Outbox) != 1 {
		t.Fatalf("fixture outbox = %+v, want one entry", before.Outbox)
	}

	// Each writing method, on clients that let it write.
	ops := []struct {
		name string
		fn   func(Tx) error
	}{
		{"Create", func(tx Tx) error { return tx.Create(ctClient("new")) }},
		{"Put", func(tx Tx) error { return tx.Put(ctClient("keep")) }},
		{"Delete", func(tx Tx) error {
			return tx.Delete("keep", ReasonDeleted, ctAt(2))
		}},
		{"Disable", func(tx Tx) error {
			_, err := tx.Disable("keep", ctAt(2))
			return err
		}},
		{"Enable", func(tx Tx) error {
			_, err := tx.Enable("keep")
			return err
		}},
		{"SweepTombstones", func(tx Tx) error {
			_, err := tx.SweepTombstones(ctAt(100), 10)
			return err
		}},
		{"ExpireUnused", func(tx Tx) error {
			_, err := tx.ExpireUnused([]string{"keep"}, ctAt(100), ctAt(100))
			return err
		}},
		{"AppendEvent", func(tx Tx) error {
			return tx.AppendEvent(&Event{Time: ctBase + 2, Op: OpCreate,
				Actor: ActorClient, ClientID: "new"})
		}},
		{"SweepEvents", func(tx Tx) error {
			_, err := tx.SweepEvents(ctAt(100), 10)
			return err
		}},
		{"CreateInitialToken", func(tx Tx) error {
			_, _, err := tx.CreateInitialToken(InitialTokenSpec{}, ctAt(2))
			return err
		}},
		{"UseInitialToken", func(tx Tx) error {
			_, err := tx.UseInitialToken(token, ctAt(2))
			return err
		}},
		{"RevokeInitialToken", func(tx Tx) error {
			_, err := tx.RevokeInitialToken(tokenID, ctAt(2))
			return err
		}},
		{"Enqueue", func(tx Tx) error {
			_, err := tx.Enqueue(ctFixtureQueue, []byte("new"), ctAt(2))
			return err
		}},
		{"Ack", func(tx Tx) error {
			return tx.Ack(ctFixtureQueue, before.Outbox[0].Seq)
		}},
		{"SweepOutbox", func(tx Tx) error {
			_, err := tx.SweepOutbox(ctAt(100), 10)
			return err
		}},
	}
	views := []struct {
		name string
		view func(func(Tx) error) error
	}{
		{"Reader.View", r.View},
		{"Store.View", s.View},
	}
	for _, v := range views {
		for _, op := range ops {
			t.Run(v.name+"/"+op.name, func(t *testing.T) {
				err := ctNoPanic(t, v.view, op.fn)
				if err == nil {
					t.Error("succeeded in a read-only transaction")
				}
			})
		}
	}

	after := ctSnapshot(t, r, ctFixtureIDs...)
	if !reflect.DeepEqual(after, before) {
		t.Errorf("read-only transactions changed the store:\n"+
			" got %+v\nwant %+v", after, before)
	}
}

// ctNoPanic runs fn in view and turns a panic into a test error, so that
// one broken method does not end the test binary.
func ctNoPanic(t *testing.T, view func(func(Tx) error) error,
	fn func(Tx) error) (err error) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Errorf("panicked: %v", p)
			err = errors.New("panicked")
		}
	}()
	return view(fn)
}

func ctUnstorable(t *testing.T, s Store, r *Reader) {
	// Each value passes the registration policy or the token spec's
	// checks today: a JWKS member go-jose ignores, a label of UTF-8.
	client := func(id, jwks string) func(Tx) error {
		return func(tx Tx) error {
			c := ctClient(id)
			c.Metadata.JWKS = json.RawMessage(jwks)
			return tx.Create(c)
		}
	}
	tests := []struct {
		name string
		fn   func(Tx) error
	}{
		{"jwks with an escaped nul", client("nul",
			`{"keys":[{"kty":"OKP","note":"a\u0000b"}]}`)},
		{"jwks with an unpaired surrogate", client("surrogate",
			`{"keys":[{"kty":"OKP","note":"a\ud800b"}]}`)},
		{"token label with a nul", func(tx Tx) error {
			_, _, err := tx.CreateInitialToken(
				InitialTokenSpec{Label: "a\x00b"}, ctAt(0))
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := s.Update(t.Context(), tc.fn); err == nil {
				t.Error("stored")
			}
		})
	}
	if ids := ctIDs(t, r); len(ids) != 0 {
		t.Errorf("clients stored: %q", ids)
	}
	if all, _ := r.InitialTokens(); len(all) != 0 {
		t.Errorf("%d tokens stored", len(all))
	}
}

// ctForget removes a metadata document client without a tombstone: its ID
// is unknown at once, may be stored again, and expiry forgets such a
// client rather than leaving a tombstone.
func ctForget(t *testing.T, s Store, r *Reader) {
	doc := ctClient("https://app.example/client.json")
	doc.Kind = KindMetadataDocument
	ctCreate(t, s, doc, ctClient("kept"))

	ctUpdate(t, s, func(tx Tx) error { return tx.Forget(doc.ID) })
	if _, err := r.Lookup(doc.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Lookup after Forget: %v, want ErrNotFound", err)
	}
	if _, err := r.Tombstone(doc.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Tombstone after Forget: %v, want none", err)
	}
	if n := ctCount(t, r); n != 1 {
		t.Errorf("Count after Forget = %d, want 1", n)
	}
	var err error
	ctUpdate(t, s, func(tx Tx) error {
		err = tx.Forget(doc.ID)
		return nil
	})
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("Forget of a forgotten client: %v, want ErrNotFound", err)
	}

	// Stored again, then expired unused: forgotten, not tombstoned.
	ctCreate(t, s, doc)
	var n int
	ctUpdate(t, s, func(tx Tx) error {
		var err error
		n, err = tx.ExpireUnused([]string{doc.ID}, ctAt(1000), ctAt(1000))
		return err
	})
	if n != 1 {
		t.Fatalf("ExpireUnused expired %d clients, want 1", n)
	}
	if _, err := r.Tombstone(doc.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Tombstone of an expired document client: %v, want none", err)
	}
	ctCreate(t, s, doc)

	ctView(t, r, func(tx Tx) error {
		if err := tx.Forget("kept"); err == nil {
			t.Error("Forget in a read-only transaction succeeded")
		}
		return nil
	})
}
