package dcr

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rlT0 is the fixed instant the rate limit tests start from.
var rlT0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// rlStep is one request to a rate limiter and the answer it must get.
type rlStep struct {
	ip    string
	at    time.Duration // after rlT0
	ok    bool
	retry time.Duration // wanted retryAfter when refused
}

// rlBurst returns n steps that each succeed, for ip at offset at.
func rlBurst(ip string, at time.Duration, n int) []rlStep {
	steps := make([]rlStep, n)
	for i := range steps {
		steps[i] = rlStep{ip: ip, at: at, ok: true}
	}
	return steps
}

// rlRun plays steps against l, failing on the first wrong answer.
func rlRun(t *testing.T, l *rateLimiter, steps []rlStep) {
	t.Helper()
	for i, s := range steps {
		ok, retry := l.allow(s.ip, rlT0.Add(s.at))
		if ok != s.ok {
			t.Fatalf("step %d (%s at +%v): ok = %v, want %v",
				i, s.ip, s.at, ok, s.ok)
		}
		want := s.retry
		if s.ok {
			want = 0
		}
		if retry != want {
			t.Fatalf("step %d (%s at +%v): retryAfter = %v, want %v",
				i, s.ip, s.at, retry, want)
		}
	}
}

// rlLen returns the number of addresses l tracks, checking that its map
// and list agree.
func rlLen(t *testing.T, l *rateLimiter) int {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.entries) != l.lru.Len() {
		t.Fatalf("table has %d map entries but %d list elements",
			len(l.entries), l.lru.Len())
	}
	return len(l.entries)
}

func TestRateLimitBucket(t *testing.T) {
	const ip = "192.0.2.1"
	cat := func(parts ...[]rlStep) []rlStep {
		var all []rlStep
		for _, p := range parts {
			all = append(all, p...)
		}
		return all
	}

	tests := []struct {
		name   string
		n      int
		window time.Duration
		steps  []rlStep
	}{
		{
			name: "burst of n then refusal", n: 3, window: time.Minute,
			steps: cat(rlBurst(ip, 0, 3), []rlStep{
				{ip: ip, retry: 20 * time.Second},
				{ip: ip, retry: 20 * time.Second},
			}),
		},
		{
			name: "partial refill shortens the wait", n: 3,
			window: time.Minute,
			steps: cat(rlBurst(ip, 0, 3), []rlStep{
				{ip: ip, at: 5 * time.Second, retry: 15 * time.Second},
				{ip: ip, at: 19 * time.Second, retry: time.Second},
			}),
		},
		{
			name: "fractional wait rounds up", n: 3, window: time.Minute,
			steps: cat(rlBurst(ip, 0, 3), []rlStep{
				{ip: ip, at: 5500 * time.Millisecond,
					retry: 15 * time.Second},
			}),
		},
		{
			name: "one token after window over n", n: 3,
			window: time.Minute,
			steps: cat(rlBurst(ip, 0, 3), []rlStep{
				{ip: ip, at: 20 * time.Second, ok: true},
				{ip: ip, at: 20 * time.Second,
					retry: 20 * time.Second},
			}),
		},
		{
			name: "full burst after a whole window", n: 3,
			window: time.Minute,
			steps: cat(rlBurst(ip, 0, 3), rlBurst(ip, time.Minute, 3),
				[]rlStep{{ip: ip, at: time.Minute,
					retry: 20 * time.Second}}),
		},
		{
			name: "idle time does not grow the burst", n: 2,
			window: time.Second,
			steps: cat(rlBurst(ip, time.Hour, 2), []rlStep{
				{ip: ip, at: time.Hour, retry: time.Second},
			}),
		},
		{
			name: "refusals take no token", n: 1,
			window: 10 * time.Second,
			steps: []rlStep{
				{ip: ip, ok: true},
				{ip: ip, at: time.Second, retry: 9 * time.Second},
				{ip: ip, at: 2 * time.Second, retry: 8 * time.Second},
				{ip: ip, at: 10 * time.Second, ok: true},
			},
		},
		{
			name: "sub-second wait is one second", n: 10,
			window: time.Second,
			steps: cat(rlBurst(ip, 0, 10), []rlStep{
				{ip: ip, retry: time.Second},
				{ip: ip, at: 50 * time.Millisecond,
					retry: time.Second},
				{ip: ip, at: 100 * time.Millisecond, ok: true},
			}),
		},
		{
			name: "wait of one and a half seconds is two", n: 2,
			window: 3 * time.Second,
			steps: cat(rlBurst(ip, 0, 2), []rlStep{
				{ip: ip, retry: 2 * time.Second},
			}),
		},
		{
			name: "long window", n: 1, window: time.Hour,
			steps: []rlStep{
				{ip: ip, ok: true},
				{ip: ip, retry: time.Hour},
				{ip: ip, at: 59*time.Minute + 30*time.Second,
					retry: 30 * time.Second},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newRateLimiter(tc.n, tc.window, nil, 0)
			rlRun(t, l, tc.steps)
		})
	}
}

// TestRateLimitKeys checks which client addresses share a bucket: with a
// burst of one, a second address is refused exactly when it shares the
// first one's bucket.
func TestRateLimitKeys(t *testing.T) {
	tests := []struct {
		name   string
		a, b   string
		shared bool
	}{
		{"two IPv4 addresses", "192.0.2.1", "192.0.2.2", false},
		{"same IPv4 address", "192.0.2.1", "192.0.2.1", true},
		{"one IPv6 /64", "2001:db8:1:2::1", "2001:db8:1:2:ffff::9",
			true},
		{"adjacent IPv6 /64s", "2001:db8:1:2::1", "2001:db8:1:3::1",
			false},
		{"IPv4-mapped IPv6 is IPv4", "::ffff:1.2.3.4", "1.2.3.4", true},
		{"IPv4-mapped other address", "::ffff:1.2.3.4", "1.2.3.5",
			false},
		{"IPv4 is not grouped by /64 bits", "10.0.0.1", "10.0.0.2",
			false},
		{"IPv6 zone ignored", "fe80::1%eth0", "fe80::1%eth1", true},
		{"IPv6 textual forms", "2001:DB8::1", "2001:db8:0:0::2", true},
		{"empty shares with empty", "", "", true},
		{"unparsable shares with itself", "unknown", "unknown", true},
		{"unparsable keyed by string", "unknown", "", false},
		{"unparsable is not an address", "1.2.3.4:80", "1.2.3.4",
			false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newRateLimiter(1, time.Minute, nil, 0)
			if ok, _ := l.allow(tc.a, rlT0); !ok {
				t.Fatalf("first request from %q refused", tc.a)
			}
			ok, retry := l.allow(tc.b, rlT0)
			if ok == tc.shared {
				t.Errorf("%q after %q: ok = %v, want %v",
					tc.b, tc.a, ok, !tc.shared)
			}
			if tc.shared && retry != time.Minute {
				t.Errorf("retryAfter = %v, want 1m", retry)
			}

			want := 2
			if tc.shared {
				want = 1
			}
			if got := rlLen(t, l); got != want {
				t.Errorf("table holds %d entries, want %d", got, want)
			}
		})
	}
}

func TestRateLimitExempt(t *testing.T) {
	exempt := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("2001:db8::/32"),
		// An IPv4-mapped prefix stands for the IPv4 one.
		netip.MustParsePrefix("::ffff:192.168.0.0/112"),
		// Not masked: the limiter masks it.
		netip.MustParsePrefix("fe80::1/10"),
	}

	tests := []struct {
		name   string
		ip     string
		exempt bool
	}{
		{"IPv4 in prefix", "10.1.2.3", true},
		{"IPv4-mapped in IPv4 prefix", "::ffff:10.1.2.3", true},
		{"IPv6 in prefix", "2001:db8:5::1", true},
		{"IPv4 in mapped prefix", "192.168.1.1", true},
		{"zoned in prefix", "fe80::2%eth0", true},
		{"IPv4 outside", "11.0.0.1", false},
		{"IPv6 outside", "2001:db9::1", false},
		{"unparsable", "unknown", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newRateLimiter(1, time.Minute, exempt, 0)
			for i := range 5 {
				ok, retry := l.allow(tc.ip, rlT0)
				want := tc.exempt || i == 0
				if ok != want {
					t.Fatalf("request %d: ok = %v, want %v",
						i, ok, want)
				}
				if ok && retry != 0 {
					t.Fatalf("request %d: allowed with "+
						"retryAfter %v", i, retry)
				}
			}

			want := 1
			if tc.exempt {
				want = 0
			}
			if got := rlLen(t, l); got != want {
				t.Errorf("table holds %d entries, want %d", got, want)
			}
		})
	}
}

// TestRateLimitEviction checks that a full table evicts the address used
// least recently: an address seen again keeps its exhausted bucket,
// while an evicted one starts over with a full bucket.
func TestRateLimitEviction(t *testing.T) {
	const a, b, c, d = "192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"
	refused := func(ip string) rlStep {
		return rlStep{ip: ip, retry: time.Minute}
	}
	allowed := func(ip string) rlStep { return rlStep{ip: ip, ok: true} }

	l := newRateLimiter(1, time.Minute, nil, 3)
	rlRun(t, l, []rlStep{
		allowed(a), allowed(b), allowed(c), // LRU order: c b a
		refused(a), // a c b
		allowed(d), // evicts b: d a c
		refused(a), // a d c
		allowed(b), // b was evicted, so it is new; evicts c: b a d
		refused(d),
		allowed(c), // evicted too
		refused(b),
	})
	if got := rlLen(t, l); got != 3 {
		t.Errorf("table holds %d entries, want 3", got)
	}
}

// TestRateLimitTableBound feeds many distinct addresses through a small
// table: it never grows past its bound and keeps the newest addresses.
func TestRateLimitTableBound(t *testing.T) {
	const size, total = 1000, 200_000
	ipAt := func(i int) string {
		return netip.AddrFrom4([4]byte{
			10, byte(i >> 16), byte(i >> 8), byte(i)}).String()
	}

	l := newRateLimiter(1, time.Minute, nil, size)
	for i := range total {
		if ok, _ := l.allow(ipAt(i), rlT0); !ok {
			t.Fatalf("first request from %s refused", ipAt(i))
		}
		if n := l.lru.Len(); n > size || len(l.entries) > size {
			t.Fatalf("after %d addresses the table holds %d list "+
				"elements, %d map entries; want at most %d",
				i+1, n, len(l.entries), size)
		}
	}
	if got := rlLen(t, l); got != size {
		t.Fatalf("table holds %d entries, want %d", got, size)
	}

	// The last size addresses are still limited, older ones start over.
	if ok, _ := l.allow(ipAt(total-1), rlT0); ok {
		t.Errorf("newest address %s was evicted", ipAt(total-1))
	}
	if ok, _ := l.allow(ipAt(total-size), rlT0); ok {
		t.Errorf("address %s, %d back, was evicted",
			ipAt(total-size), size)
	}
	if ok, _ := l.allow(ipAt(0), rlT0); !ok {
		t.Errorf("oldest address %s was not evicted", ipAt(0))
	}
}

// TestRateLimitConcurrent runs under -race: many goroutines at one
// instant get exactly the burst from one address, and a churning table
// stays consistent.
func TestRateLimitConcurrent(t *testing.T) {
	const goroutines, perG = 32, 20

	t.Run("one address", func(t *testing.T) {
		const n = 50
		l := newRateLimiter(n, time.Minute, nil, 0)
		var allowed atomic.Int64
		var wg sync.WaitGroup
		for range goroutines {
			wg.Go(func() {
				for range perG {
					if ok, _ := l.allow("192.0.2.1", rlT0); ok {
						allowed.Add(1)
					}
				}
			})
		}
		wg.Wait()
		if got := allowed.Load(); got != n {
			t.Errorf("%d requests allowed, want %d", got, n)
		}
	})

	t.Run("churn", func(t *testing.T) {
		const size = 16
		l := newRateLimiter(2, time.Minute, nil, size)
		var wg sync.WaitGroup
		for g := range goroutines {
			wg.Go(func() {
				for i := range perG {
					ip := netip.AddrFrom4([4]byte{
						10, 0, byte(g), byte(i % 5)}).String()
					l.allow(ip, rlT0.Add(time.Duration(i)))
				}
			})
		}
		wg.Wait()
		if got := rlLen(t, l); got != size {
			t.Errorf("table holds %d entries, want %d", got, size)
		}
	})
}

func TestRateLimitConfig(t *testing.T) {
	l := newRateLimiter(5, time.Minute, nil, 0)
	if l.max != defaultRateLimitEntries {
		t.Errorf("maxEntries 0 gave a table of %d, want %d",
			l.max, defaultRateLimitEntries)
	}

	bad := []struct {
		name   string
		n      int
		window time.Duration
	}{
		{"zero requests", 0, time.Minute},
		{"negative requests", -1, time.Minute},
		{"zero window", 5, 0},
		{"negative window", 5, -time.Second},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("newRateLimiter(%d, %v) did not panic",
						tc.n, tc.window)
				}
			}()
			newRateLimiter(tc.n, tc.window, nil, 0)
		})
	}
}
