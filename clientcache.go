package dcr

import (
	"sync"
	"time"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

// Bounds of the client cache.
const (
	// clientCacheTTL bounds how long a cached lookup is used. Commits of
	// this process clear the cache at once; the TTL bounds staleness only
	// when another process writes the same store.
	clientCacheTTL = time.Second

	// maxCachedClients bounds the memory of the cache; when it is full
	// it starts over.
	maxCachedClients = 100_000
)

// clientCache keeps recent client lookups, so that enforcement does not
// open the store for every request. Every commit through this process's
// writer clears it before the committing request is answered, so a
// deleted client is refused from the next request on.
type clientCache struct {
	mu      sync.RWMutex
	gen     uint64
	entries map[string]cachedClient
}

// cachedClient is one lookup: a client, or ErrNotFound or ErrDeleted.
type cachedClient struct {
	client *clientdb.Client
	err    error
	at     time.Time
}

// get returns a cached lookup younger than the TTL. The client is shared
// and must not be modified.
func (cc *clientCache) get(id string, now time.Time) (cachedClient, bool) {
	cc.mu.RLock()
	defer cc.mu.RUnlock()
	e, ok := cc.entries[id]
	if !ok || now.Sub(e.at) >= clientCacheTTL || now.Before(e.at) {
		return cachedClient{}, false
	}
	return e, true
}

// generation returns the cache's generation, to pass to put after reading
// the store.
func (cc *clientCache) generation() uint64 {
	cc.mu.RLock()
	defer cc.mu.RUnlock()
	return cc.gen
}

// put caches a lookup read from the store, unless a commit cleared the
// cache since generation gen was taken: the lookup may predate it.
func (cc *clientCache) put(id string, gen uint64, e cachedClient) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if gen != cc.gen {
		return
	}
	if cc.entries == nil || len(cc.entries) >= maxCachedClients {
		cc.entries = make(map[string]cachedClient)
	}
	cc.entries[id] = e
}

// invalidate clears the cache after a commit.
func (cc *clientCache) invalidate() {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.gen++
	clear(cc.entries)
}
