package dcr

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

func TestClientCache(t *testing.T) {
	t0 := time.Unix(1796400000, 0)
	c := &clientdb.Client{ID: "a"}

	tests := []struct {
		name string
		run  func(cc *clientCache) (cachedClient, bool)
		want bool
	}{
		{"empty", func(cc *clientCache) (cachedClient, bool) {
			return cc.get("a", t0)
		}, false},
		{"fresh entry", func(cc *clientCache) (cachedClient, bool) {
			cc.put("a", cc.generation(), cachedClient{client: c, at: t0})
			return cc.get("a", t0.Add(clientCacheTTL-time.Nanosecond))
		}, true},
		{"entry at the TTL", func(cc *clientCache) (cachedClient, bool) {
			cc.put("a", cc.generation(), cachedClient{client: c, at: t0})
			return cc.get("a", t0.Add(clientCacheTTL))
		}, false},
		{"clock went back", func(cc *clientCache) (cachedClient, bool) {
			cc.put("a", cc.generation(), cachedClient{client: c, at: t0})
			return cc.get("a", t0.Add(-time.Second))
		}, false},
		{"invalidated", func(cc *clientCache) (cachedClient, bool) {
			cc.put("a", cc.generation(), cachedClient{client: c, at: t0})
			cc.invalidate()
			return cc.get("a", t0)
		}, false},
		{"read before a commit is not cached", func(cc *clientCache) (cachedClient, bool) {
			gen := cc.generation()
			cc.invalidate() // a commit lands while the store is read
			cc.put("a", gen, cachedClient{client: c, at: t0})
			return cc.get("a", t0)
		}, false},
		{"negative lookup", func(cc *clientCache) (cachedClient, bool) {
			cc.put("a", cc.generation(), cachedClient{err: clientdb.ErrDeleted, at: t0})
			return cc.get("a", t0)
		}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var cc clientCache
			e, ok := tc.run(&cc)
			if ok != tc.want {
				t.Fatalf("cached = %v, want %v", ok, tc.want)
			}
			if ok && e.client != c && !errors.Is(e.err, clientdb.ErrDeleted) {
				t.Errorf("got %+v", e)
			}
		})
	}
}

func TestClientCacheBound(t *testing.T) {
	var cc clientCache
	t0 := time.Unix(1796400000, 0)
	for i := range maxCachedClients + 1 {
		cc.put(string(rune(i)), cc.generation(), cachedClient{at: t0})
	}
	if n := len(cc.entries); n > maxCachedClients {
		t.Errorf("%d entries, want at most %d", n, maxCachedClients)
	}
}

// TestStoreCacheSeesCommits checks that a lookup after a commit through
// the store's writer never answers from before it: a deleted client is
// refused from the next lookup on.
func TestStoreCacheSeesCommits(t *testing.T) {
	s, key, err := acquireStore(filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { releaseStore(key) })
	ctx := context.Background()

	if _, err := s.Client("a"); !errors.Is(err, clientdb.ErrNotFound) {
		t.Fatalf("before create: %v, want ErrNotFound", err)
	}
	if err := s.Create(ctx, &clientdb.Client{ID: "a"}); err != nil {
		t.Fatal(err)
	}
	if c, err := s.Client("a"); err != nil || c.ID != "a" {
		t.Fatalf("after create: %v, %v", c, err)
	}
	err = s.Update(ctx, func(tx clientdb.Tx) error {
		return tx.Delete("a", clientdb.ReasonDeleted, time.Now())
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client("a"); !errors.Is(err, clientdb.ErrDeleted) {
		t.Fatalf("after delete: %v, want ErrDeleted", err)
	}
}

// TestStoreClientImplausibleID checks that an ID no registration could
// have produced is unknown without a read and leaves no cache entry, so
// that probes cannot grow the cache with long keys.
func TestStoreClientImplausibleID(t *testing.T) {
	s, key, err := acquireStore(filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { releaseStore(key) })

	for _, id := range []string{
		"", strings.Repeat("a", maxClientIDLength+1), "a b", "caf\u00e9",
	} {
		if _, err := s.Client(id); !errors.Is(err, clientdb.ErrNotFound) {
			t.Errorf("Client(%q): %v, want ErrNotFound", id, err)
		}
	}
	if n := len(s.cache.entries); n != 0 {
		t.Errorf("%d cache entries, want 0", n)
	}
}
