package dcr

import (
	"container/list"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// defaultRateLimitEntries is the number of client addresses a rate
// limiter tracks when none is configured. An entry (map slot, list
// element, key and token bucket) takes about 250 bytes on 64-bit
// platforms, so a full table holds about 4 MB, while 16384 addresses
// active within one refill window is far more than a registration
// endpoint sees from honest clients.
const defaultRateLimitEntries = 16384

// ipv6KeyBits is the length of the prefix that keys an IPv6 client. A
// single host is usually given a whole /64 and can pick any address in
// it, so a bucket per address would be trivial to evade.
const ipv6KeyBits = 64

// rateLimiter limits requests per client address: a token bucket per
// address (burst n, refilled at n per window), in a table of at most
// maxEntries addresses, least recently seen evicted first, so memory
// does not grow with the number of distinct callers.
//
// An evicted address starts again with a full bucket, so a caller that
// cycles through more than maxEntries addresses can exceed its rate;
// the table size is the bound on memory, not on abuse from a network
// that large.
type rateLimiter struct {
	limit  rate.Limit
	burst  int
	exempt []netip.Prefix
	max    int

	// perToken is the time one token takes to refill; retryAfter is
	// derived from it rather than from the float limit to keep whole
	// seconds exact.
	perToken time.Duration

	mu      sync.Mutex
	lru     *list.List // of *rateEntry, most recently used first
	entries map[rateKey]*list.Element
}

// rateKey identifies a bucket: the client address (an IPv4 address or
// an IPv6 /64 prefix address), or raw when the client IP did not parse.
type rateKey struct {
	addr netip.Addr
	raw  string
}

// rateEntry is one address's bucket in the LRU list.
type rateEntry struct {
	key rateKey
	lim *rate.Limiter
}

// newRateLimiter returns a limiter allowing each client address a burst
// of n requests, refilled at n per window. Addresses inside an exempt
// prefix are never limited. maxEntries bounds the table; zero or less
// means defaultRateLimitEntries. n and window must be positive; the
// configuration is validated before this is called, so anything else
// is a programming error and panics.
func newRateLimiter(n int, window time.Duration, exempt []netip.Prefix,
	maxEntries int) *rateLimiter {
	if n < 1 || window <= 0 {
		panic(fmt.Sprintf("rate limiter: invalid rate %d per %v",
			n, window))
	}
	if maxEntries <= 0 {
		maxEntries = defaultRateLimitEntries
	}

	// Client addresses are unmapped before the check, so an
	// IPv4-mapped prefix must become the IPv4 prefix it stands for.
	ex := make([]netip.Prefix, 0, len(exempt))
	for _, p := range exempt {
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		ex = append(ex, p.Masked())
	}

	perToken := window / time.Duration(n)
	if perToken <= 0 {
		perToken = 1
	}
	return &rateLimiter{
		limit:    rate.Limit(float64(n) / window.Seconds()),
		burst:    n,
		exempt:   ex,
		max:      maxEntries,
		perToken: perToken,
		lru:      list.New(),
		entries:  make(map[rateKey]*list.Element),
	}
}

// allow takes one token for ip (the client IP string as Caddy gives it)
// at now. It reports whether the request may proceed and, if not, how
// long until a token is available (at least 1s, rounded up to whole
// seconds so it maps to Retry-After).
func (l *rateLimiter) allow(ip string, now time.Time) (ok bool,
	retryAfter time.Duration) {
	key, exempt := l.key(ip)
	if exempt {
		return true, 0
	}

	lim := l.bucket(key)
	if lim.AllowN(now, 1) {
		return true, 0
	}

	// Concurrent requests for the same bucket make the wait an
	// estimate; it is never shorter than a second.
	need := 1 - lim.TokensAt(now)
	if need < 0 {
		need = 0
	}
	wait := time.Duration(need * float64(l.perToken))
	// Float error below a microsecond must not add a whole second.
	wait = wait.Round(time.Microsecond)
	wait = (wait + time.Second - 1).Truncate(time.Second)
	return false, max(wait, time.Second)
}

// key returns the bucket key for ip, and whether ip is exempt. An empty
// or unparsable ip is keyed by the string itself, so that a broken
// proxy setup limits all such callers together rather than none.
func (l *rateLimiter) key(ip string) (rateKey, bool) {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return rateKey{raw: ip}, false
	}

	// A zoned address never matches a prefix, and the zone says
	// nothing about who the caller is.
	addr = addr.WithZone("").Unmap()
	for _, p := range l.exempt {
		if p.Contains(addr) {
			return rateKey{}, true
		}
	}

	if addr.Is6() {
		p, _ := addr.Prefix(ipv6KeyBits) // cannot fail for IPv6
		addr = p.Addr()
	}
	return rateKey{addr: addr}, false
}

// bucket returns the token bucket for key, creating it (and evicting the
// least recently used one when the table is full) if there is none, and
// marks it most recently used.
func (l *rateLimiter) bucket(key rateKey) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()

	if e, ok := l.entries[key]; ok {
		l.lru.MoveToFront(e)
		return e.Value.(*rateEntry).lim
	}

	// A request may still hold the evicted bucket outside the lock, so
	// the new address gets a fresh bucket rather than the old one reset.
	lim := rate.NewLimiter(l.limit, l.burst)
	if l.lru.Len() >= l.max {
		e := l.lru.Back()
		ent := e.Value.(*rateEntry)
		delete(l.entries, ent.key)
		ent.key, ent.lim = key, lim
		l.lru.MoveToFront(e)
		l.entries[key] = e
		return lim
	}
	l.entries[key] = l.lru.PushFront(&rateEntry{key: key, lim: lim})
	return lim
}
