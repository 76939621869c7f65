package dcr

import (
	"sync"
	"time"
)

// ttlCache keeps values by key for a fixed time, up to a number of keys;
// when it is full it starts over, so that keys chosen by callers cannot
// grow it. A nil cache keeps nothing. It is safe for concurrent use.
type ttlCache[V any] struct {
	ttl time.Duration
	max int

	mu      sync.Mutex
	entries map[string]ttlEntry[V]
}

// ttlEntry is a value and when it was put.
type ttlEntry[V any] struct {
	value V
	at    time.Time
}

// newTTLCache returns a cache that keeps each value for ttl, and at most
// max of them.
func newTTLCache[V any](ttl time.Duration, max int) *ttlCache[V] {
	return &ttlCache[V]{ttl: ttl, max: max, entries: make(map[string]ttlEntry[V])}
}

// get returns the value put under key less than the cache's time before
// now, and not after now.
func (c *ttlCache[V]) get(key string, now time.Time) (V, bool) {
	var zero V
	if c == nil {
		return zero, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok || now.Before(e.at) || now.Sub(e.at) >= c.ttl {
		return zero, false
	}
	return e.value, true
}

// put keeps value under key, put at now.
func (c *ttlCache[V]) put(key string, value V, now time.Time) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		clear(c.entries)
	}
	c.entries[key] = ttlEntry[V]{value: value, at: now}
}
