package clientdb

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// tokAt is the tests' clock: sec seconds after the moment most tokens are
// created.
func tokAt(sec int64) time.Time {
	return time.Unix(1796314153+sec, 0)
}

// tokCreate creates an initial access token through w.
func tokCreate(t testing.TB, w *Writer, spec InitialTokenSpec,
	now time.Time) (string, *InitialToken) {
	t.Helper()
	token, info, err := w.CreateInitialToken(context.Background(), spec, now)
	if err != nil {
		t.Fatalf("CreateInitialToken: %v", err)
	}
	return token, info
}

// tokUse spends a use of token in a commit of its own, as a registration
// would.
func tokUse(w *Writer, token string, now time.Time) (*InitialToken, error) {
	var info *InitialToken
	err := w.Update(context.Background(), func(tx Tx) error {
		var err error
		info, err = tx.UseInitialToken(token, now)
		return err
	})
	return info, err
}

// tokRead returns the stored record of the token with the given ID.
func tokRead(t testing.TB, r *Reader, id string) *InitialToken {
	t.Helper()
	var info *InitialToken
	err := r.View(func(tx Tx) error {
		var err error
		info, err = tx.InitialToken(id)
		return err
	})
	if err != nil {
		t.Fatalf("InitialToken(%q): %v", id, err)
	}
	return info
}

func TestCreateInitialToken(t *testing.T) {
	w, path := newWriter(t)
	policy := &TokenPolicy{
		GrantTypes:    []string{"client_credentials"},
		Scopes:        []string{"read"},
		RedirectHosts: []string{"*.example.com"},
	}
	spec := InitialTokenSpec{
		Label: "ci pipeline",
		// The fraction of a second is dropped.
		ExpiresAt: tokAt(3600).Add(500 * time.Millisecond),
		MaxUses:   3,
		Policy:    policy,
	}
	token, info := tokCreate(t, w, spec, tokAt(0))

	rest, ok := strings.CutPrefix(token, "dcr_iat_")
	if !ok {
		t.Fatalf("token %q lacks the prefix dcr_iat_", token)
	}
	random, err := base64.RawURLEncoding.Strict().DecodeString(rest)
	if err != nil || len(random) < 32 {
		t.Errorf("token after the prefix %q is not 32 bytes of "+
			"base64url: %d bytes, %v", rest, len(random), err)
	}
	id, err := base64.RawURLEncoding.Strict().DecodeString(info.ID)
	if err != nil || len(id) != 16 {
		t.Errorf("ID %q is not 16 bytes of base64url: %v", info.ID, err)
	}

	want := &InitialToken{
		ID:        info.ID,
		Hash:      HashSecret(token),
		Label:     "ci pipeline",
		CreatedAt: tokAt(0).Unix(),
		ExpiresAt: tokAt(3600).Unix(),
		MaxUses:   3,
		Policy:    policy,
	}
	if !reflect.DeepEqual(info, want) {
		t.Errorf("CreateInitialToken = %+v, want %+v", info, want)
	}
	r := openReader(t, path)
	if got := tokRead(t, r, info.ID); !reflect.DeepEqual(got, want) {
		t.Errorf("stored %+v, want %+v", got, want)
	}
	if s := info.State(tokAt(0)); s != TokenActive {
		t.Errorf("State = %q, want %q", s, TokenActive)
	}

	// Other readers of the file rely on these members and on the index.
	readRaw(t, path, func(tx *bolt.Tx) error {
		v := tx.Bucket([]byte("initial_tokens")).Get([]byte(info.ID))
		var names []string
		for name := range members(t, v) {
			names = append(names, name)
		}
		slices.Sort(names)
		wantNames := []string{"created_at", "expires_at", "id", "label",
			"max_uses", "policy", "token_hash", "uses"}
		if !slices.Equal(names, wantNames) {
			t.Errorf("stored members %q, want %q; json %s",
				names, wantNames, v)
		}
		idx := tx.Bucket([]byte("initial_token_hashes"))
		got := idx.Get([]byte(HashSecret(token)))
		if string(got) != info.ID {
			t.Errorf("index maps the hash to %q, want %q", got, info.ID)
		}
		return nil
	})

	// The plaintext, in any of its forms, is nowhere in the file.
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{token, rest, string(random)} {
		if bytes.Contains(raw, []byte(s)) {
			t.Errorf("database file holds the token %q", s)
		}
	}
	if !bytes.Contains(raw, []byte(info.Hash)) {
		t.Error("database file lacks the hash: the scan reads nothing")
	}
}

func TestCreateInitialTokenUnique(t *testing.T) {
	const n = 50
	w, _ := newWriter(t)
	tokens := make(map[string]bool)
	ids := make(map[string]bool)
	err := w.Update(context.Background(), func(tx Tx) error {
		clear(tokens)
		clear(ids)
		for range n {
			token, info, err := tx.CreateInitialToken(
				InitialTokenSpec{}, tokAt(0))
			if err != nil {
				return err
			}
			tokens[token] = true
			ids[info.ID] = true
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if len(tokens) != n || len(ids) != n {
		t.Errorf("%d tokens gave %d distinct tokens and %d distinct IDs",
			n, len(tokens), len(ids))
	}
}

func TestCreateInitialTokenSpec(t *testing.T) {
	tests := []struct {
		name string
		spec InitialTokenSpec
		now  time.Time
		// wantErr is a part of the expected error, or "" for success.
		wantErr string
	}{
		{
			name:    "negative max uses",
			spec:    InitialTokenSpec{MaxUses: -1},
			wantErr: "negative",
		},
		{
			name:    "label too long",
			spec:    InitialTokenSpec{Label: strings.Repeat("x", 257)},
			wantErr: "label",
		},
		{
			name:    "label not utf-8",
			spec:    InitialTokenSpec{Label: "ci \xff"},
			wantErr: "UTF-8",
		},
		{
			name:    "expiry now",
			spec:    InitialTokenSpec{ExpiresAt: tokAt(0)},
			wantErr: "expiry",
		},
		{
			name:    "expiry past",
			spec:    InitialTokenSpec{ExpiresAt: tokAt(-3600)},
			wantErr: "expiry",
		},
		{
			// Stored in seconds, it would be expired at once.
			name: "expiry within this second",
			spec: InitialTokenSpec{
				ExpiresAt: tokAt(0).Add(999 * time.Millisecond),
			},
			wantErr: "expiry",
		},
		{
			name: "longest label",
			spec: InitialTokenSpec{Label: strings.Repeat("é", 128)},
		},
		{
			name: "expiry next second",
			spec: InitialTokenSpec{ExpiresAt: tokAt(1)},
			now:  tokAt(0).Add(999 * time.Millisecond),
		},
		{
			name: "unlimited, never expiring",
			spec: InitialTokenSpec{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			now := tc.now
			if now.IsZero() {
				now = tokAt(0)
			}
			check := func(how string, err error) {
				t.Helper()
				switch {
				case tc.wantErr == "" && err != nil:
					t.Errorf("%s: %v", how, err)
				case tc.wantErr != "" && err == nil:
					t.Errorf("%s succeeded, want an error about %s",
						how, tc.wantErr)
				case err != nil && !strings.Contains(err.Error(),
					tc.wantErr):
					t.Errorf("%s = %v, want an error about %s",
						how, err, tc.wantErr)
				}
			}

			w, path := newWriter(t)
			_, _, err := w.CreateInitialToken(context.Background(),
				tc.spec, now)
			check("Writer.CreateInitialToken", err)
			if tc.wantErr != "" {
				// An operator's typo must not create the store.
				_, err := os.Stat(path)
				if !errors.Is(err, os.ErrNotExist) {
					t.Errorf("database after a refused spec: %v", err)
				}
			}

			err = w.Update(context.Background(), func(tx Tx) error {
				_, _, err := tx.CreateInitialToken(tc.spec, now)
				return err
			})
			check("Tx.CreateInitialToken", err)

			all, err := openReader(t, path).InitialTokens()
			if err != nil {
				t.Fatalf("InitialTokens: %v", err)
			}
			want := 2
			if tc.wantErr != "" {
				want = 0
			}
			if len(all) != want {
				t.Errorf("%d tokens stored, want %d", len(all), want)
			}
		})
	}
}

func TestUseInitialTokenCountsUses(t *testing.T) {
	tests := []struct {
		name    string
		maxUses int
		tries   int
		// wantOK is how many of the tries succeed, the first ones.
		wantOK    int
		wantState string
	}{
		{name: "one use", maxUses: 1, tries: 3, wantOK: 1,
			wantState: TokenExhausted},
		{name: "three uses", maxUses: 3, tries: 5, wantOK: 3,
			wantState: TokenExhausted},
		{name: "unlimited", maxUses: 0, tries: 25, wantOK: 25,
			wantState: TokenActive},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, path := newWriter(t)
			policy := &TokenPolicy{Scopes: []string{"read"}}
			token, created := tokCreate(t, w, InitialTokenSpec{
				MaxUses: tc.maxUses,
				Policy:  policy,
			}, tokAt(0))

			for i := range tc.tries {
				info, err := tokUse(w, token, tokAt(int64(i+1)))
				if i >= tc.wantOK {
					if err != ErrTokenInvalid {
						t.Errorf("use %d = %v, want ErrTokenInvalid",
							i+1, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("use %d: %v", i+1, err)
				}
				if info.Uses != i+1 || info.ID != created.ID ||
					!reflect.DeepEqual(info.Policy, policy) {
					t.Errorf("use %d returned %+v, want uses %d of %q "+
						"with its policy", i+1, info, i+1, created.ID)
				}
			}

			got := tokRead(t, openReader(t, path), created.ID)
			if got.Uses != tc.wantOK {
				t.Errorf("stored uses %d, want %d", got.Uses, tc.wantOK)
			}
			if s := got.State(tokAt(100)); s != tc.wantState {
				t.Errorf("State = %q, want %q", s, tc.wantState)
			}
		})
	}
}

func TestUseInitialTokenRefused(t *testing.T) {
	other := InitialTokenPrefix + randomString(32)
	tests := []struct {
		name string
		// present makes the presented token from the issued one.
		present func(token string, info *InitialToken) string
		// before runs before the use.
		before func(t *testing.T, w *Writer, token, id string)
		now    time.Time
		// wantOK marks the controls that must succeed.
		wantOK bool
	}{
		{name: "issued token", wantOK: true},
		{name: "just before expiry", now: tokAt(99), wantOK: true},
		{
			name:    "other token",
			present: func(string, *InitialToken) string { return other },
		},
		{
			name:    "empty",
			present: func(string, *InitialToken) string { return "" },
		},
		{
			name: "prefix only",
			present: func(string, *InitialToken) string {
				return InitialTokenPrefix
			},
		},
		{
			name: "the stored hash",
			present: func(_ string, info *InitialToken) string {
				return info.Hash
			},
		},
		{
			name: "the ID",
			present: func(_ string, info *InitialToken) string {
				return info.ID
			},
		},
		{
			name: "truncated",
			present: func(token string, _ *InitialToken) string {
				return token[:len(token)-1]
			},
		},
		{
			name: "extended",
			present: func(token string, _ *InitialToken) string {
				return token + "A"
			},
		},
		{
			name: "without prefix",
			present: func(token string, _ *InitialToken) string {
				return strings.TrimPrefix(token, InitialTokenPrefix)
			},
		},
		{name: "at expiry", now: tokAt(100)},
		{name: "after expiry", now: tokAt(5000)},
		{
			name: "revoked",
			before: func(t *testing.T, w *Writer, _, id string) {
				_, err := w.RevokeInitialToken(context.Background(),
					id, tokAt(1))
				if err != nil {
					t.Fatalf("RevokeInitialToken: %v", err)
				}
			},
		},
		{
			name: "used up",
			before: func(t *testing.T, w *Writer, token, _ string) {
				for range 2 {
					if _, err := tokUse(w, token, tokAt(1)); err != nil {
						t.Fatalf("use: %v", err)
					}
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, path := newWriter(t)
			token, info := tokCreate(t, w, InitialTokenSpec{
				ExpiresAt: tokAt(100),
				MaxUses:   2,
			}, tokAt(0))
			if tc.before != nil {
				tc.before(t, w, token, info.ID)
			}
			r := openReader(t, path)
			before := tokRead(t, r, info.ID)

			presented := token
			if tc.present != nil {
				presented = tc.present(token, info)
			}
			now := tc.now
			if now.IsZero() {
				now = tokAt(2)
			}
			_, err := tokUse(w, presented, now)

			after := tokRead(t, r, info.ID)
			if tc.wantOK {
				if err != nil || after.Uses != before.Uses+1 {
					t.Errorf("use = %v, uses %d; want success",
						err, after.Uses)
				}
				return
			}
			// The very same value for every refusal: a wrapped error
			// could tell the presenter why.
			if err != ErrTokenInvalid {
				t.Errorf("use = %v, want ErrTokenInvalid itself", err)
			}
			if !reflect.DeepEqual(after, before) {
				t.Errorf("refused use changed %+v to %+v", before, after)
			}
		})
	}
}

func TestInitialTokenState(t *testing.T) {
	tests := []struct {
		name  string
		token InitialToken
		now   int64
		want  string
	}{
		{name: "fresh", token: InitialToken{}, want: TokenActive},
		{
			name:  "unlimited, much used",
			token: InitialToken{Uses: 1000},
			want:  TokenActive,
		},
		{
			name:  "one use left",
			token: InitialToken{MaxUses: 3, Uses: 2},
			want:  TokenActive,
		},
		{
			name:  "used up",
			token: InitialToken{MaxUses: 3, Uses: 3},
			want:  TokenExhausted,
		},
		{
			name:  "second before expiry",
			token: InitialToken{ExpiresAt: tokAt(10).Unix()},
			now:   9,
			want:  TokenActive,
		},
		{
			name:  "at expiry",
			token: InitialToken{ExpiresAt: tokAt(10).Unix()},
			now:   10,
			want:  TokenExpired,
		},
		{
			name: "expired and used up",
			token: InitialToken{
				ExpiresAt: tokAt(10).Unix(), MaxUses: 1, Uses: 1,
			},
			now:  20,
			want: TokenExpired,
		},
		{
			// Revocation is the operator's word and wins.
			name: "revoked, expired and used up",
			token: InitialToken{
				ExpiresAt: tokAt(10).Unix(), MaxUses: 1, Uses: 1,
				RevokedAt: tokAt(5).Unix(),
			},
			now:  20,
			want: TokenRevoked,
		},
		{
			name:  "revoked",
			token: InitialToken{RevokedAt: tokAt(5).Unix()},
			want:  TokenRevoked,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.token.State(tokAt(tc.now)); got != tc.want {
				t.Errorf("State = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRevokeInitialToken(t *testing.T) {
	ctx := context.Background()
	w, path := newWriter(t)
	r := openReader(t, path)
	tokenA, a := tokCreate(t, w, InitialTokenSpec{Label: "a"}, tokAt(0))
	tokenB, b := tokCreate(t, w, InitialTokenSpec{Label: "b"}, tokAt(0))

	got, err := w.RevokeInitialToken(ctx, a.ID, tokAt(10))
	if err != nil {
		t.Fatalf("RevokeInitialToken: %v", err)
	}
	if got.RevokedAt != tokAt(10).Unix() || got.ID != a.ID {
		t.Errorf("RevokeInitialToken = %+v, want %q revoked at %d",
			got, a.ID, tokAt(10).Unix())
	}

	// Revoking again keeps the first time.
	got, err = w.RevokeInitialToken(ctx, a.ID, tokAt(20))
	if err != nil {
		t.Fatalf("second RevokeInitialToken: %v", err)
	}
	stored := tokRead(t, r, a.ID)
	for _, info := range []*InitialToken{got, stored} {
		if info.RevokedAt != tokAt(10).Unix() {
			t.Errorf("after revoking twice RevokedAt = %d, want %d",
				info.RevokedAt, tokAt(10).Unix())
		}
	}
	if s := stored.State(tokAt(30)); s != TokenRevoked {
		t.Errorf("State = %q, want %q", s, TokenRevoked)
	}

	if _, err := tokUse(w, tokenA, tokAt(30)); err != ErrTokenInvalid {
		t.Errorf("using the revoked token = %v, want ErrTokenInvalid", err)
	}
	if _, err := tokUse(w, tokenB, tokAt(30)); err != nil {
		t.Errorf("using the other token = %v, want success", err)
	}
	if got := tokRead(t, r, b.ID); got.RevokedAt != 0 {
		t.Errorf("the other token was revoked too: %+v", got)
	}

	// An exhausted or expired token can still be revoked, so that it
	// reads as revoked in the listing.
	_, c := tokCreate(t, w, InitialTokenSpec{ExpiresAt: tokAt(5)}, tokAt(0))
	got, err = w.RevokeInitialToken(ctx, c.ID, tokAt(40))
	if err != nil || got.RevokedAt != tokAt(40).Unix() {
		t.Errorf("revoking an expired token = %+v, %v", got, err)
	}
}

func TestInitialTokenNotFound(t *testing.T) {
	ctx := context.Background()
	w, path := newWriter(t)
	tokCreate(t, w, InitialTokenSpec{}, tokAt(0))
	r := openReader(t, path)

	_, err := w.RevokeInitialToken(ctx, "unknown", tokAt(1))
	if !errors.Is(err, ErrTokenNotFound) {
		t.Errorf("Writer.RevokeInitialToken = %v, want ErrTokenNotFound",
			err)
	}
	err = w.Update(ctx, func(tx Tx) error {
		_, err := tx.RevokeInitialToken("unknown", tokAt(1))
		return err
	})
	if !errors.Is(err, ErrTokenNotFound) {
		t.Errorf("Tx.RevokeInitialToken = %v, want ErrTokenNotFound", err)
	}
	err = r.View(func(tx Tx) error {
		_, err := tx.InitialToken("unknown")
		return err
	})
	if !errors.Is(err, ErrTokenNotFound) {
		t.Errorf("InitialToken = %v, want ErrTokenNotFound", err)
	}
}

func TestInitialTokensOrder(t *testing.T) {
	w, path := newWriter(t)
	r := openReader(t, path)

	// Several tokens per second, created out of order: the bucket's ID
	// order differs from the wanted one.
	created := map[int64][]string{}
	for _, sec := range []int64{10, 0, 5, 0, 10, 5, 0, 10} {
		_, info := tokCreate(t, w, InitialTokenSpec{}, tokAt(sec))
		created[sec] = append(created[sec], info.ID)
	}
	var want []string
	for _, sec := range []int64{0, 5, 10} {
		ids := slices.Clone(created[sec])
		slices.Sort(ids)
		want = append(want, ids...)
	}

	ids := func(all []*InitialToken) []string {
		var ids []string
		for _, info := range all {
			ids = append(ids, info.ID)
		}
		return ids
	}
	all, err := r.InitialTokens()
	if err != nil {
		t.Fatalf("Reader.InitialTokens: %v", err)
	}
	if got := ids(all); !slices.Equal(got, want) {
		t.Errorf("Reader.InitialTokens = %q, want %q", got, want)
	}
	err = w.View(func(tx Tx) error {
		all, err := tx.InitialTokens()
		if got := ids(all); !slices.Equal(got, want) {
			t.Errorf("Tx.InitialTokens = %q, want %q", got, want)
		}
		return err
	})
	if err != nil {
		t.Fatalf("Writer.View: %v", err)
	}
}

// TestInitialTokensOlderStore reads stores without the token buckets: none
// yet, and one written by a release before initial access tokens. Both
// show no tokens until the first write adds the buckets.
func TestInitialTokensOlderStore(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, path string)
	}{
		{name: "no store file", setup: func(*testing.T, string) {}},
		{
			name: "clients only",
			setup: func(t *testing.T, path string) {
				writeRaw(t, path, func(tx *bolt.Tx) error {
					err := putRaw(tx, "meta", "schema_version", "1")
					if err != nil {
						return err
					}
					return putRaw(tx, "clients", "old", "{}")
				})
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, path := newWriter(t)
			tc.setup(t, path)
			r := openReader(t, path)

			var all []*InitialToken
			p, err := viewNoPanic(r, func(tx Tx) error {
				var err error
				all, err = tx.InitialTokens()
				return err
			})
			if p != nil || err != nil || len(all) != 0 {
				t.Errorf("InitialTokens = %v, %v, panic %v; want none",
					all, err, p)
			}
			p, err = viewNoPanic(r, func(tx Tx) error {
				_, err := tx.InitialToken("x")
				return err
			})
			if p != nil || !errors.Is(err, ErrTokenNotFound) {
				t.Errorf("InitialToken = %v, panic %v; "+
					"want ErrTokenNotFound", err, p)
			}

			token, info := tokCreate(t, w, InitialTokenSpec{}, tokAt(0))
			if _, err := tokUse(w, token, tokAt(1)); err != nil {
				t.Errorf("use after upgrade: %v", err)
			}
			if got := tokRead(t, r, info.ID); got.Uses != 1 {
				t.Errorf("uses %d after upgrade, want 1", got.Uses)
			}
		})
	}
}

func TestInitialTokenWritesReadOnly(t *testing.T) {
	ops := []struct {
		name string
		fn   func(tx Tx, token, id string) error
	}{
		{
			name: "CreateInitialToken",
			fn: func(tx Tx, _, _ string) error {
				_, _, err := tx.CreateInitialToken(InitialTokenSpec{},
					tokAt(0))
				return err
			},
		},
		{
			name: "UseInitialToken",
			fn: func(tx Tx, token, _ string) error {
				_, err := tx.UseInitialToken(token, tokAt(1))
				return err
			},
		},
		{
			name: "RevokeInitialToken",
			fn: func(tx Tx, _, id string) error {
				_, err := tx.RevokeInitialToken(id, tokAt(1))
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
				token, info := "", &InitialToken{ID: "x"}
				if tc.write {
					token, info = tokCreate(t, w, InitialTokenSpec{},
						tokAt(0))
				}
				r := openReader(t, path)

				p, err := viewNoPanic(r, func(tx Tx) error {
					return op.fn(tx, token, info.ID)
				})
				switch {
				case p != nil:
					t.Fatalf("%s in a read-only transaction panicked: %v",
						op.name, p)
				case err == nil:
					t.Errorf("%s in a read-only transaction succeeded",
						op.name)
				}

				all, err := r.InitialTokens()
				if err != nil {
					t.Fatalf("InitialTokens: %v", err)
				}
				want := []*InitialToken{}
				if tc.write {
					want = []*InitialToken{info}
				}
				if len(all) != len(want) ||
					len(want) == 1 && !reflect.DeepEqual(all[0], info) {
					t.Errorf("after a read-only %s: %+v, want %+v",
						op.name, all, want)
				}
			})
		}
	}
}

// TestInitialTokenWriterAndReader uses the operators' functions with a
// Reader in the same process, which reads while the Writer commits.
func TestInitialTokenWriterAndReader(t *testing.T) {
	const n = 10
	ctx := context.Background()
	w, path := newWriter(t)
	r := openReader(t, path)

	all, err := r.InitialTokens()
	if err != nil || len(all) != 0 {
		t.Fatalf("InitialTokens before any write = %v, %v", all, err)
	}

	// Each listing the reader takes meanwhile must be one of the
	// committed states: never fewer tokens than before, never more
	// than created.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var readErr error
	var listings int
	wg.Go(func() {
		last := 0
		for {
			select {
			case <-stop:
				return
			default:
			}
			all, err := r.InitialTokens()
			if err != nil {
				readErr = err
				return
			}
			if len(all) < last || len(all) > n {
				readErr = fmt.Errorf("listing of %d after %d", len(all), last)
				return
			}
			last = len(all)
			listings++
		}
	})

	created := make(map[string]*InitialToken)
	var first string
	for i := range n {
		_, info := tokCreate(t, w, InitialTokenSpec{
			Label: fmt.Sprintf("token %d", i),
		}, tokAt(int64(i)))
		created[info.ID] = info
		if first == "" {
			first = info.ID
		}
	}
	close(stop)
	wg.Wait()
	if readErr != nil {
		t.Errorf("concurrent reader: %v", readErr)
	}
	if listings == 0 {
		t.Error("the reader never read")
	}

	revoked, err := w.RevokeInitialToken(ctx, first, tokAt(100))
	if err != nil {
		t.Fatalf("RevokeInitialToken: %v", err)
	}
	created[first] = revoked

	all, err = r.InitialTokens()
	if err != nil {
		t.Fatalf("InitialTokens: %v", err)
	}
	if len(all) != n {
		t.Fatalf("InitialTokens has %d tokens, want %d", len(all), n)
	}
	for _, info := range all {
		if !reflect.DeepEqual(info, created[info.ID]) {
			t.Errorf("listed %+v, want %+v", info, created[info.ID])
		}
	}
	if got := tokRead(t, r, first); got.State(tokAt(200)) != TokenRevoked {
		t.Errorf("the reader sees %+v, want it revoked", got)
	}

	// An ended context changes nothing.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, _, err = w.CreateInitialToken(cancelled, InitialTokenSpec{}, tokAt(0))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("CreateInitialToken with an ended context = %v", err)
	}
	if all, _ := r.InitialTokens(); len(all) != n {
		t.Errorf("%d tokens after a cancelled create, want %d",
			len(all), n)
	}
}

func TestUseInitialTokenConcurrent(t *testing.T) {
	const n, maxUses = 20, 5
	w, path := newWriter(t)
	token, info := tokCreate(t, w, InitialTokenSpec{MaxUses: maxUses},
		tokAt(0))

	uses := make([]int, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			got, err := tokUse(w, token, tokAt(1))
			errs[i] = err
			if err == nil {
				uses[i] = got.Uses
			}
		})
	}
	wg.Wait()

	var seen []int
	for i, err := range errs {
		switch {
		case err == nil:
			seen = append(seen, uses[i])
		case err != ErrTokenInvalid:
			t.Errorf("use %d: %v, want success or ErrTokenInvalid", i, err)
		}
	}
	slices.Sort(seen)
	if want := []int{1, 2, 3, 4, 5}; !slices.Equal(seen, want) {
		t.Errorf("successful uses saw counts %v, want %v", seen, want)
	}
	if got := tokRead(t, openReader(t, path), info.ID); got.Uses != maxUses {
		t.Errorf("stored uses %d, want %d", got.Uses, maxUses)
	}
}

// TestUseInitialTokenInGroup commits registrations in one group, each
// using a token and creating a client in one function, as the handler
// does. A refused token fails only its own registration, and a
// registration that fails after using its token gives the use back.
func TestUseInitialTokenInGroup(t *testing.T) {
	w, path := newWriter(t)
	store(t, w, testClient("taken"))
	limited, lim := tokCreate(t, w, InitialTokenSpec{MaxUses: 2}, tokAt(0))
	unlimited, unl := tokCreate(t, w, InitialTokenSpec{}, tokAt(0))
	wrong := InitialTokenPrefix + randomString(32)

	changes := []struct {
		client  string
		token   string // "" registers without a token
		wantErr error
		// wantUses is the count the successful use returns.
		wantUses int
	}{
		// Uses the token, then fails: the use must not count.
		{client: "taken", token: limited, wantErr: ErrExists},
		{client: "a", token: limited, wantUses: 1},
		{client: "b", token: limited, wantUses: 2},
		{client: "c", token: limited, wantErr: ErrTokenInvalid},
		{client: "d"},
		{client: "e", token: wrong, wantErr: ErrTokenInvalid},
		{client: "f", token: unlimited, wantUses: 1},
	}

	var mu sync.Mutex
	lastTx := make([]Tx, len(changes))
	uses := make([]int, len(changes))
	errs := make([]error, len(changes))

	release := holdWriter(t, w)
	var wg sync.WaitGroup
	for i, ch := range changes {
		wg.Go(func() {
			errs[i] = w.Update(context.Background(), func(tx Tx) error {
				mu.Lock()
				lastTx[i] = tx
				mu.Unlock()

				c := testClient(ch.client)
				if ch.token != "" {
					info, err := tx.UseInitialToken(ch.token, tokAt(1))
					if err != nil {
						return err
					}
					c.InitialTokenID = info.ID
					mu.Lock()
					uses[i] = info.Uses
					mu.Unlock()
				}
				return tx.Create(c)
			})
		})
		// One at a time, so that the group has the order above.
		waitQueued(t, w, i+1)
	}
	release()
	wg.Wait()

	r := openReader(t, path)
	var committed Tx
	for i, ch := range changes {
		if errs[i] != ch.wantErr {
			t.Errorf("change %q: %v, want %v", ch.client, errs[i],
				ch.wantErr)
		}
		if ch.wantErr != nil {
			if ch.client != "taken" {
				_, err := r.Lookup(ch.client)
				if !errors.Is(err, ErrNotFound) {
					t.Errorf("refused client %q: %v, want ErrNotFound",
						ch.client, err)
				}
			}
			continue
		}

		if _, err := r.Lookup(ch.client); err != nil {
			t.Errorf("client %q: %v", ch.client, err)
		}
		if ch.token != "" && uses[i] != ch.wantUses {
			t.Errorf("change %q saw %d uses, want %d",
				ch.client, uses[i], ch.wantUses)
		}
		// Without one group the test would show nothing.
		if committed == nil {
			committed = lastTx[i]
		} else if lastTx[i] != committed {
			t.Errorf("change %q committed apart from the group", ch.client)
		}
	}

	for _, tc := range []struct {
		id   string
		want int
	}{{lim.ID, 2}, {unl.ID, 1}} {
		if got := tokRead(t, r, tc.id); got.Uses != tc.want {
			t.Errorf("token %q has %d uses, want %d", tc.id, got.Uses,
				tc.want)
		}
	}
}
