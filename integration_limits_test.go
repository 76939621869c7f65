package dcr

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/caddy-dcr/caddy-dcr/clientdb"

	"github.com/caddyserver/caddy/v2/caddytest"
)

// The limits suite drives the abuse limits (per-address rate limit,
// max_clients, request shape), CORS and the audit trail through the same
// in-process Caddy as the other integration suites. Client addresses are
// made distinct in the two ways a deployment sees them: behind a trusted
// proxy that names the client in X-Forwarded-For, and directly, by
// dialing from another loopback address.

// itLimProxied are global options that make Caddy take the client IP from
// X-Forwarded-For when the peer is the test itself, as behind a proxy.
var itLimProxied = []string{
	"servers {",
	"\ttrusted_proxies static 127.0.0.1/32",
	"\tclient_ip_headers X-Forwarded-For",
	"}",
}

// itLimFrom returns a view of s whose requests come from the loopback
// address ip rather than 127.0.0.1, so that the server sees another
// client IP without any proxy header.
func itLimFrom(s *itServer, ip string) *itServer {
	d := &net.Dialer{
		Timeout:   5 * time.Second,
		LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)},
	}
	c := itClient()
	c.Transport.(*http.Transport).DialContext = func(ctx context.Context,
		_, addr string) (net.Conn, error) {
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		return d.DialContext(ctx, "tcp4", net.JoinHostPort("127.0.0.1", port))
	}
	return &itServer{store: s.store, pg: s.pg, logFile: s.logFile, client: c}
}

// itLimXFF is the header a trusted proxy adds for a client at ip.
func itLimXFF(ip string) string {
	return "X-Forwarded-For: " + ip
}

// itLimRetry matches the wait the description of a 429 names.
var itLimRetry = regexp.MustCompile(`retry after (\d+) seconds`)

// itLimAssertLimited checks a refusal by the rate limit of n requests per
// window: 429 temporarily_unavailable naming the limit, and a Retry-After
// of whole seconds that the description repeats. The next token is never
// more than window/n away, so the wait is at most that.
func itLimAssertLimited(t *testing.T, r *itResponse, n int, window time.Duration) {
	t.Helper()
	itAssertRefusal(t, r, itRefusal{http.StatusTooManyRequests,
		"temporarily_unavailable", fmt.Sprintf("%d per %s (rate_limit)", n, window)})

	ra := r.header.Get("Retry-After")
	secs, err := strconv.Atoi(ra)
	if err != nil {
		t.Fatalf("Retry-After %q is not whole seconds", ra)
	}
	most := window / time.Duration(n)
	if secs <= 0 || time.Duration(secs)*time.Second > most {
		t.Errorf("Retry-After %d s, want more than 0 and at most %s", secs, most)
	}
	desc, _ := r.obj["error_description"].(string)
	if m := itLimRetry.FindStringSubmatch(desc); m == nil || m[1] != ra {
		t.Errorf("error_description %q does not name the Retry-After %s", desc, ra)
	}
}

// itLimBurst registers n clients, each a 201, and checks that the next
// request is refused by the rate limit of n per window and stores
// nothing. headers go with every request.
func itLimBurst(t *testing.T, s *itServer, n int, window time.Duration,
	headers ...string) {
	t.Helper()
	for range n {
		s.register(t, itValidBody, headers...)
	}
	itLimRefused(t, s, n, window, headers...)
}

// itLimRefused posts a valid registration, checks that the rate limit of
// n per window refuses it, and that the refusal stored nothing.
func itLimRefused(t *testing.T, s *itServer, n int, window time.Duration,
	headers ...string) {
	t.Helper()
	before := s.count(t)
	itLimAssertLimited(t, s.post(t, itValidBody, headers...), n, window)
	if after := s.count(t); after != before {
		t.Errorf("store holds %d clients after a 429, want %d", after, before)
	}
}

// itLimConcurrent posts a valid registration for each entry of headers,
// all at once, each with that header ("" for none), and returns the
// answers in the same order.
func itLimConcurrent(t *testing.T, s *itServer, headers []string) []*itResponse {
	t.Helper()
	results := make([]*itResponse, len(headers))
	errs := make([]error, len(headers))
	var wg sync.WaitGroup
	for i, h := range headers {
		wg.Go(func() {
			var hs []string
			if h != "" {
				hs = append(hs, h)
			}
			results[i], errs[i] = s.do(http.MethodPost, "/register",
				strings.NewReader(itValidBody), hs...)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return results
}

// itLimEvents returns the audit events with a sequence number above
// after, in order.
func itLimEvents(t *testing.T, rd *clientdb.Reader, after uint64) []clientdb.Event {
	t.Helper()
	all, err := rd.EventsSince(after, 1000)
	if err != nil {
		t.Fatalf("EventsSince(%d): %v", after, err)
	}
	// Reads and refusals are appended in batches a second apart; these
	// tests follow the changes.
	var events []clientdb.Event
	for _, e := range all {
		if e.Outcome == "" && e.Op != clientdb.OpRead {
			events = append(events, e)
		}
	}
	return events
}

// itLimCreateIPs returns the client_ip of every create event, in order.
func itLimCreateIPs(t *testing.T, rd *clientdb.Reader) []string {
	t.Helper()
	var ips []string
	for _, e := range itLimEvents(t, rd, 0) {
		if e.Op == clientdb.OpCreate {
			ips = append(ips, e.ClientIP)
		}
	}
	return ips
}

// itLimPollEvents waits up to 20 s for the audit trail to satisfy ok,
// as background work changes it; a hang check, not a timing assertion.
func itLimPollEvents(t *testing.T, rd *clientdb.Reader,
	ok func([]clientdb.Event) bool) []clientdb.Event {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		events := itLimEvents(t, rd, 0)
		if ok(events) || time.Now().After(deadline) {
			return events
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// itLimLogField returns the values of field in log lines, in order; nil
// where a line lacks it.
func itLimLogField(lines []map[string]any, field string) []any {
	out := make([]any, 0, len(lines))
	for _, l := range lines {
		out = append(out, l[field])
	}
	return out
}

func TestIntegrationLimitsRateProxied(t *testing.T) {
	const n, window = 3, time.Hour
	f := startFront(t, newBackend(t), itFrontConfig{
		global: itLimProxied,
		dcr: []string{"rate_limit 3 1h",
			"rate_limit_exempt 203.0.113.0/24 2001:db8:ffff::/48"},
	})
	s := f.itServer
	a, b := itLimXFF("198.51.100.7"), itLimXFF("198.51.100.8")

	// The done criterion: a burst from one address, all at
	// once, is held to the limit while another address registers.
	t.Run("burst", func(t *testing.T) {
		headers := append(slices.Repeat([]string{a}, 10), b)
		created := map[string]int{}
		for i, r := range itLimConcurrent(t, s, headers) {
			if r.status == http.StatusCreated {
				created[headers[i]]++
				continue
			}
			itLimAssertLimited(t, r, n, window)
		}
		if created[a] != n || created[b] != 1 {
			t.Errorf("201s: %d from the burst, %d from the other address; "+
				"want %d and 1", created[a], created[b], n)
		}
		if got := s.count(t); got != n+1 {
			t.Errorf("store holds %d clients, want %d", got, n+1)
		}
	})

	t.Run("limited address stays limited", func(t *testing.T) {
		itLimRefused(t, s, n, window, a)
	})
	t.Run("other address has its own allowance", func(t *testing.T) {
		for range n - 1 {
			s.register(t, itValidBody, b)
		}
		itLimRefused(t, s, n, window, b)
	})
	t.Run("the proxy itself", func(t *testing.T) {
		s.register(t, itValidBody)
	})

	// Listed addresses, such as a hosted client's shared egress, are
	// never limited; unlisted neighbours are.
	t.Run("exempt", func(t *testing.T) {
		for _, ip := range []string{"203.0.113.9", "2001:db8:ffff:1::1"} {
			for range n + 2 {
				s.register(t, itValidBody, itLimXFF(ip))
			}
		}
		itLimBurst(t, s, n, window, itLimXFF("203.0.114.9"))
	})

	// One host usually holds a whole IPv6 /64, so the /64 is what is
	// limited; an IPv4-mapped address is the IPv4 address.
	t.Run("ipv6", func(t *testing.T) {
		for _, tc := range []struct {
			ip      string
			limited bool
		}{
			{"2001:db8:1:2::1", false},
			{"2001:db8:1:2::2", false},
			{"2001:db8:1:2:ffff:ffff:ffff:ffff", false},
			{"2001:db8:1:2::1", true},
			{"2001:db8:1:2:abcd::9", true},
			{"2001:db8:1:3::1", false},
			{"::ffff:198.51.100.7", true},
			{"::ffff:198.51.100.9", false},
		} {
			if tc.limited {
				itLimRefused(t, s, n, window, itLimXFF(tc.ip))
			} else {
				s.register(t, itValidBody, itLimXFF(tc.ip))
			}
		}
	})

	// The address the limit counted is the one logged and audited.
	t.Run("client_ip", func(t *testing.T) {
		lines := s.logEntries(t, "registration refused", 1)
		if len(lines) == 0 || lines[0]["client_ip"] != "198.51.100.7" {
			t.Errorf("first refusal logged client_ip %v, want 198.51.100.7",
				itLimLogField(lines, "client_ip"))
		}
		ips := itLimCreateIPs(t, s.reader(t))
		for _, want := range []string{"198.51.100.7", "198.51.100.8",
			"127.0.0.1", "2001:db8:1:2::1"} {
			if !slices.Contains(ips, want) {
				t.Errorf("no create event from %s in %q", want, ips)
			}
		}
	})
}

func TestIntegrationLimitsRateDialed(t *testing.T) {
	const n, window = 2, time.Hour
	s := startDCR(t, "rate_limit 2 1h")
	other := itLimFrom(s, "127.0.0.2")

	c := s.registerManaged(t, itValidBody)
	s.register(t, itValidBody)
	itLimRefused(t, s, n, window)
	// No proxy is trusted, so what a caller claims in the header does
	// not move it to a fresh allowance.
	itLimRefused(t, s, n, window, itLimXFF("198.51.100.99"))
	itLimBurst(t, other, n, window)

	// Only registrations count: the limited address still manages its
	// client and reaches the site behind the handler.
	itAssertOK(t, s.manage(t, http.MethodGet, c.id, c.token, ""), c.id)
	if r := s.request(t, http.MethodGet, "/api", nil); r.status != http.StatusOK {
		t.Errorf("GET /api: status %d, want 200; body %s", r.status, r.body)
	}

	want := []string{"127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.2"}
	if got := itLimCreateIPs(t, s.reader(t)); !slices.Equal(got, want) {
		t.Errorf("create events from %q, want %q", got, want)
	}
	lines := s.logEntries(t, "registration refused", 3)
	got := itLimLogField(lines, "client_ip")
	if !slices.Equal(got, []any{"127.0.0.1", "127.0.0.1", "127.0.0.2"}) {
		t.Errorf("refusals logged from %v, want 127.0.0.1 twice, then 127.0.0.2", got)
	}
}

func TestIntegrationLimitsRateReload(t *testing.T) {
	clock := itUseClock(t)
	cfg := itFrontConfig{dcr: []string{"rate_limit 3 1h"}}
	f := startFront(t, newBackend(t), cfg)
	s := f.itServer

	itLimBurst(t, s, 3, time.Hour)

	// The limiter lives with the store: a reload with the same setting
	// must not hand every address a fresh allowance.
	f.reload(t, cfg)
	itLimRefused(t, s, 3, time.Hour)

	// One token comes back every window/n.
	clock.advance(20 * time.Minute)
	s.register(t, itValidBody)
	itLimRefused(t, s, 3, time.Hour)

	f.reload(t, itFrontConfig{dcr: []string{"rate_limit 4 1h"}})
	itLimBurst(t, s, 4, time.Hour)

	f.reload(t, itFrontConfig{dcr: []string{"rate_limit off"}})
	for range 5 {
		s.register(t, itValidBody)
	}
}

func TestIntegrationLimitsMaxClients(t *testing.T) {
	s := startDCR(t, "max_clients 3")
	full := itRefusal{http.StatusForbidden, "access_denied",
		"maximum of 3 clients (max_clients)"}

	// The count is checked in the transaction that stores the client,
	// so registrations racing for the last places cannot overshoot.
	var cs []*itManaged
	refused := 0
	for _, r := range itLimConcurrent(t, s, make([]string, 10)) {
		if r.status != http.StatusCreated {
			itAssertRefusal(t, r, full)
			refused++
			continue
		}
		cs = append(cs, &itManaged{
			id:    itString(t, r.obj, "client_id"),
			token: itString(t, r.obj, "registration_access_token"),
		})
	}
	if len(cs) != 3 || s.count(t) != 3 {
		t.Fatalf("%d of 10 concurrent registrations created, store holds %d; want 3",
			len(cs), s.count(t))
	}
	s.postRefused(t, itValidBody, full)

	// A deleted client no longer counts.
	if r := s.manage(t, http.MethodDelete, cs[0].id, cs[0].token, ""); r.status != 204 {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}
	s.register(t, itValidBody)
	s.postRefused(t, itValidBody, full)

	s.load(t, "max_clients 4")
	s.register(t, itValidBody)
	s.postRefused(t, itValidBody,
		itRefusal{http.StatusForbidden, "access_denied", "maximum of 4 clients"})

	lines := s.logEntries(t, "registration refused", refused+3)
	rules := itLimLogField(lines, "rule")
	if len(rules) != refused+3 || slices.ContainsFunc(rules, func(r any) bool {
		return r != "max_clients"
	}) {
		t.Errorf("refusals logged with rules %v, want %d times max_clients",
			rules, refused+3)
	}
}

// itLimMembers returns a registration body with n members: redirect_uris
// and n-1 extension members, which the server drops but must count.
func itLimMembers(n int) string {
	var b strings.Builder
	b.WriteString(`{"redirect_uris":["https://app.example.com/cb"]`)
	for i := range n - 1 {
		fmt.Fprintf(&b, `,"ext_%03d":%d`, i, i)
	}
	return b.String() + "}"
}

// itLimNested returns a registration body whose member "deep" nests
// arrays depth levels deep.
func itLimNested(depth int) string {
	return itReg(`"deep":` + strings.Repeat("[", depth) + "1" +
		strings.Repeat("]", depth))
}

func TestIntegrationLimitsRequestShape(t *testing.T) {
	s := startDCR(t)
	c := s.registerManaged(t, itValidBody)
	tooMany := itRefusal{http.StatusBadRequest, "invalid_client_metadata",
		"more than 256 members"}
	tooDeep := itRefusal{http.StatusBadRequest, "invalid_client_metadata",
		`member "deep" nests arrays and objects deeper than 8 levels`}

	cases := []struct {
		name string
		body string
		want *itRefusal // nil: accepted
	}{
		{"256 members", itLimMembers(256), nil},
		{"257 members", itLimMembers(257), &tooMany},
		{"300 members", itLimMembers(300), &tooMany},
		{"depth 8", itLimNested(8), nil},
		{"depth 9", itLimNested(9), &tooDeep},
		{"depth 9 in objects", itReg(`"deep":` + strings.Repeat(`{"a":`, 9) +
			"1" + strings.Repeat("}", 9)), &tooDeep},
	}
	for _, tc := range cases {
		t.Run("register "+tc.name, func(t *testing.T) {
			if tc.want == nil {
				s.register(t, tc.body)
				return
			}
			s.postRefused(t, tc.body, *tc.want)
		})
	}

	// An update goes through the same decoder, and a refused one leaves
	// the client as it was.
	before := s.lookup(t, c.id)
	for _, tc := range cases {
		if tc.want == nil {
			continue
		}
		t.Run("update "+tc.name, func(t *testing.T) {
			itAssertRefusal(t, s.manage(t, http.MethodPut, c.id, c.token, tc.body),
				*tc.want)
			s.unchanged(t, c.id, before)
		})
	}

	lines := s.logEntries(t, "registration refused", 4)
	want := []any{"json_members", "json_members", "json_depth", "json_depth"}
	if got := itLimLogField(lines, "rule"); !slices.Equal(got, want) {
		t.Errorf("refusals logged with rules %v, want %v", got, want)
	}
}

// The CORS answers the handler gives.
const (
	itCORSOrigin  = "https://app.example.com"
	itCORSHeaders = "Authorization, Content-Type"
	itCORSExpose  = "WWW-Authenticate, Retry-After"
	itCORSVary    = "Origin, Access-Control-Request-Method, " +
		"Access-Control-Request-Headers"
)

// itCORSPreflight sends a CORS preflight for method to path from origin.
func itCORSPreflight(t *testing.T, s *itServer, path, origin, method,
	headers string) *itResponse {
	t.Helper()
	return s.request(t, http.MethodOptions, path, nil,
		"Origin: "+origin,
		"Access-Control-Request-Method: "+method,
		"Access-Control-Request-Headers: "+headers)
}

// itCORSHeaderNames returns the Access-Control-* headers of r.
func itCORSHeaderNames(r *itResponse) []string {
	var names []string
	for name := range r.header {
		if strings.HasPrefix(strings.ToLower(name), "access-control-") {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// itCORSAssert checks that r carries exactly the CORS headers in want.
func itCORSAssert(t *testing.T, r *itResponse, want map[string]string) {
	t.Helper()
	for name, v := range want {
		if got := r.header.Values(name); !slices.Equal(got, []string{v}) {
			t.Errorf("%s %q, want %q", name, got, v)
		}
	}
	for _, name := range itCORSHeaderNames(r) {
		if _, ok := want[name]; !ok {
			t.Errorf("unexpected %s %q", name, r.header.Values(name))
		}
	}
}

// itCORSAllowed are the CORS headers of an actual request from an
// allowed origin.
func itCORSAllowed(origin string) map[string]string {
	return map[string]string{
		"Access-Control-Allow-Origin":   origin,
		"Access-Control-Expose-Headers": itCORSExpose,
	}
}

// itCORSPreflightOK checks a granted preflight for methods.
func itCORSPreflightOK(t *testing.T, r *itResponse, origin, methods string) {
	t.Helper()
	if r.status != http.StatusNoContent || len(r.body) != 0 {
		t.Errorf("preflight: status %d body %q, want 204 and none", r.status, r.body)
	}
	itCORSAssert(t, r, map[string]string{
		"Access-Control-Allow-Origin":  origin,
		"Access-Control-Allow-Methods": methods,
		"Access-Control-Allow-Headers": itCORSHeaders,
		"Access-Control-Max-Age":       "600",
	})
	if got := r.header.Values("Vary"); !slices.Equal(got, []string{itCORSVary}) {
		t.Errorf("Vary %q, want %q", got, itCORSVary)
	}
}

func TestIntegrationCORS(t *testing.T) {
	s := startDCR(t, "cors_origins "+itCORSOrigin)
	reqHeaders := "content-type, authorization"

	t.Run("registration preflight", func(t *testing.T) {
		r := itCORSPreflight(t, s, "/register", itCORSOrigin, "POST", reqHeaders)
		itCORSPreflightOK(t, r, itCORSOrigin, "POST")

		// The same origin spelled otherwise is allowed, and echoed as
		// sent: a browser compares the answer with what it sent.
		odd := "https://App.Example.com:443"
		itCORSPreflightOK(t, itCORSPreflight(t, s, "/register", odd, "POST", ""),
			odd, "POST")
		if got := s.count(t); got != 0 {
			t.Errorf("preflights stored %d clients", got)
		}
	})

	for _, tc := range []struct {
		name, path, origin, method, headers, desc string
	}{
		{"other origin", "/register", "https://evil.example", "POST", reqHeaders,
			`origin "https://evil.example" is not allowed`},
		{"lookalike origin", "/register", "https://app.example.com.evil.example",
			"POST", "", "is not allowed"},
		{"http origin", "/register", "http://app.example.com", "POST", "",
			"is not allowed"},
		{"method", "/register", itCORSOrigin, "PUT", "", `method "PUT" is not allowed`},
		{"header", "/register", itCORSOrigin, "POST", "content-type, x-custom",
			`request header "x-custom" is not allowed`},
		{"configuration endpoint method", "/register/some-client", itCORSOrigin, "POST",
			"", `method "POST" is not allowed; allowed: GET, PUT, DELETE`},
	} {
		t.Run("refused preflight "+tc.name, func(t *testing.T) {
			r := itCORSPreflight(t, s, tc.path, tc.origin, tc.method, tc.headers)
			itAssertRefusal(t, r,
				itRefusal{http.StatusForbidden, "invalid_request", tc.desc})
			itCORSAssert(t, r, nil)
			if got := r.header.Values("Vary"); len(got) != 1 || got[0] != itCORSVary {
				t.Errorf("Vary %q, want %q", got, itCORSVary)
			}
		})
	}

	var c *itManaged
	t.Run("registration", func(t *testing.T) {
		before := s.count(t)
		r := s.post(t, itValidBody, "Origin: "+itCORSOrigin)
		if r.status != http.StatusCreated {
			t.Fatalf("status %d, want 201; body %s", r.status, r.body)
		}
		itCORSAssert(t, r, itCORSAllowed(itCORSOrigin))
		if got := r.header.Values("Vary"); !slices.Equal(got, []string{"Origin"}) {
			t.Errorf("Vary %q, want Origin", got)
		}
		if got := s.count(t); got != before+1 {
			t.Errorf("store holds %d clients, want %d", got, before+1)
		}
		c = &itManaged{
			id:    itString(t, r.obj, "client_id"),
			token: itString(t, r.obj, "registration_access_token"),
			resp:  r.obj,
		}

		// CORS is the browser's check; the server registers anyway, but
		// grants nothing the script of another origin could read.
		r = s.post(t, itValidBody, "Origin: https://evil.example")
		if r.status != http.StatusCreated {
			t.Errorf("status %d, want 201", r.status)
		}
		itCORSAssert(t, r, nil)
	})
	if c == nil {
		t.FailNow()
	}

	uri := itString(t, c.resp, "registration_client_uri")
	path := strings.TrimPrefix(uri, itSite)
	t.Run("configuration endpoint", func(t *testing.T) {
		for _, m := range []string{"GET", "PUT", "DELETE"} {
			r := itCORSPreflight(t, s, path, itCORSOrigin, m, reqHeaders)
			itCORSPreflightOK(t, r, itCORSOrigin, "GET, PUT, DELETE")
		}

		r := s.manage(t, http.MethodGet, c.id, c.token, "", "Origin: "+itCORSOrigin)
		itAssertOK(t, r, c.id)
		itCORSAssert(t, r, itCORSAllowed(itCORSOrigin))

		// The challenge of a refusal is exposed, so a browser client
		// can tell that its token is no longer good.
		r = s.manage(t, http.MethodGet, c.id, "wrong", "", "Origin: "+itCORSOrigin)
		itAssertUnauthorized(t, r)
		itCORSAssert(t, r, itCORSAllowed(itCORSOrigin))
	})

	// Preflights are not registrations, so they take nothing from the
	// rate limit, and a 429 exposes its Retry-After to the script.
	t.Run("rate limited", func(t *testing.T) {
		s.load(t, "cors_origins "+itCORSOrigin, "rate_limit 1 1h")
		for range 3 {
			itCORSPreflightOK(t, itCORSPreflight(t, s, "/register", itCORSOrigin,
				"POST", reqHeaders), itCORSOrigin, "POST")
		}
		if r := s.post(t, itValidBody, "Origin: "+itCORSOrigin); r.status != 201 {
			t.Fatalf("status %d, want 201; body %s", r.status, r.body)
		}
		r := s.post(t, itValidBody, "Origin: "+itCORSOrigin)
		itLimAssertLimited(t, r, 1, time.Hour)
		itCORSAssert(t, r, itCORSAllowed(itCORSOrigin))
	})
}

func TestIntegrationCORSOff(t *testing.T) {
	s := startDCR(t)
	c := s.registerManaged(t, itValidBody)

	for _, tc := range []struct {
		name, path, allow string
	}{
		{"registration", "/register", "POST"},
		{"configuration endpoint", "/register/" + c.id, "GET, PUT, DELETE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := itCORSPreflight(t, s, tc.path, itCORSOrigin, "POST", "content-type")
			itAssertRefusal(t, r, itRefusal{http.StatusMethodNotAllowed,
				"invalid_request", "OPTIONS is not allowed"})
			if got := r.header.Get("Allow"); got != tc.allow {
				t.Errorf("Allow %q, want %q", got, tc.allow)
			}
			if names := itCORSHeaderNames(r); len(names) != 0 {
				t.Errorf("CORS headers %q without cors_origins", names)
			}
		})
	}

	t.Run("actual requests", func(t *testing.T) {
		r := s.post(t, itValidBody, "Origin: "+itCORSOrigin)
		if r.status != http.StatusCreated {
			t.Fatalf("status %d, want 201; body %s", r.status, r.body)
		}
		if names := itCORSHeaderNames(r); len(names) != 0 {
			t.Errorf("CORS headers %q without cors_origins", names)
		}
		r = s.manage(t, http.MethodGet, c.id, c.token, "", "Origin: "+itCORSOrigin)
		itAssertOK(t, r, c.id)
		if names := itCORSHeaderNames(r); len(names) != 0 {
			t.Errorf("CORS headers %q without cors_origins", names)
		}
	})
}

// itLimAuditBody registers a confidential client whose metadata carries
// markers that must never reach the audit trail.
const itLimAuditBody = `{"redirect_uris":["https://audit-mark-3f7a.example.com/cb"],` +
	`"client_name":"Audit Mark 4d1c","software_id":"sw-audit-9b2e"}`

// itLimAuditMembers are the members an audit event may have.
var itLimAuditMembers = []string{
	"seq", "time", "op", "actor", "client_id", "token_id", "client_ip",
}

// itLimUnload loads a config without the dcr handler, whose Cleanup
// waits for its background work, so that nothing writes the store any
// more.
func itLimUnload(t *testing.T) {
	t.Helper()
	caddytest.NewTester(t).InitServer("{\n\tadmin localhost:2999\n}\n", "caddyfile")
}

// itLimAuditValues returns the raw values of the store's audit bucket.
// Nothing may write the store meanwhile: this bypasses the lock protocol.
func itLimAuditValues(t *testing.T, s *itServer) [][]byte {
	t.Helper()
	if s.pg {
		return itPostgresRows(t, s.store, "SELECT record::text FROM dcr_audit ORDER BY seq")
	}
	path := s.store
	opts := &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second}
	db, err := bolt.Open(path, 0, opts)
	if err != nil {
		t.Fatalf("opening store: %v", err)
	}
	defer db.Close()
	var values [][]byte
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("audit"))
		if b == nil {
			return fmt.Errorf("no audit bucket")
		}
		return b.ForEach(func(_, v []byte) error {
			values = append(values, slices.Clone(v))
			return nil
		})
	})
	if err != nil {
		t.Fatalf("reading audit bucket: %v", err)
	}
	return values
}

func TestIntegrationAuditTrail(t *testing.T) {
	clock := itUseClock(t)
	cfg := itFrontConfig{dcr: append([]string{"rotate_secret on", "expire_unused 1h"},
		itEnforce()...)}
	f := startFront(t, newBackend(t), cfg)
	s := f.itServer
	rd := s.reader(t)

	// A client registers, updates (which rotates its secret) and
	// deletes itself; another registers and is never used.
	start := clock.now().Unix()
	c := s.registerManaged(t, itLimAuditBody)
	if c.secret == "" {
		t.Fatal("no client_secret issued")
	}
	update := `{"redirect_uris":["https://audit-mark-3f7a.example.com/cb"],` +
		`"client_name":"Audit Mark Two 4d1c","client_secret":"` + c.secret + `"}`
	got := itAssertOK(t, s.manage(t, http.MethodPut, c.id, c.token, update), c.id)
	newSecret := itString(t, got, "client_secret")
	newToken := itString(t, got, "registration_access_token")
	if newSecret == c.secret || newToken == c.token {
		t.Fatal("the update rotated neither secret nor token")
	}
	if r := s.manage(t, http.MethodDelete, c.id, newToken, ""); r.status != 204 {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}
	idle := s.registerManaged(t, itLimAuditBody)
	end := clock.now().Unix()

	// Two hours on the idle client has expired; the new config's
	// expiry pass starts with its first request.
	clock.advance(2 * time.Hour)
	moved := clock.now().Unix()
	f.reload(t, cfg)
	s.request(t, http.MethodGet, "/api", nil)
	events := itLimPollEvents(t, rd, func(ev []clientdb.Event) bool {
		return len(ev) >= 6
	})

	type want struct{ op, actor, id, ip string }
	wants := []want{
		{clientdb.OpCreate, clientdb.ActorClient, c.id, "127.0.0.1"},
		{clientdb.OpUpdate, clientdb.ActorClient, c.id, "127.0.0.1"},
		{clientdb.OpRotateSecret, clientdb.ActorClient, c.id, "127.0.0.1"},
		{clientdb.OpDelete, clientdb.ActorClient, c.id, "127.0.0.1"},
		{clientdb.OpCreate, clientdb.ActorClient, idle.id, "127.0.0.1"},
		{clientdb.OpExpire, clientdb.ActorSystem, idle.id, ""},
	}
	if len(events) != len(wants) {
		t.Fatalf("%d audit events, want %d: %+v", len(events), len(wants), events)
	}
	for i, e := range events {
		w := wants[i]
		if e.Op != w.op || e.Actor != w.actor || e.ClientID != w.id ||
			e.ClientIP != w.ip || e.TokenID != "" {
			t.Errorf("event %d is %+v, want %+v", i, e, w)
		}
		from, to := start, end
		if e.Op == clientdb.OpExpire {
			from, to = moved, clock.now().Unix()
		}
		if e.Time < from || e.Time > to {
			t.Errorf("event %d at %d, want within [%d, %d]", i, e.Time, from, to)
		}
		if i > 0 && e.Seq <= events[i-1].Seq {
			t.Errorf("event %d has seq %d after %d", i, e.Seq, events[i-1].Seq)
		}
	}

	// A follower resumes after the last event it saw.
	t.Run("since", func(t *testing.T) {
		mid := events[2].Seq
		if got := itLimEvents(t, rd, mid); !slices.Equal(got, events[3:]) {
			t.Errorf("events after seq %d: %+v, want %+v", mid, got, events[3:])
		}
		last := events[len(events)-1].Seq
		if got := itLimEvents(t, rd, last); len(got) != 0 {
			t.Errorf("events after the last: %+v", got)
		}
		more := s.registerManaged(t, itValidBody)
		got := itLimEvents(t, rd, last)
		if len(got) != 1 || got[0].Op != clientdb.OpCreate ||
			got[0].ClientID != more.id || got[0].Seq <= last {
			t.Errorf("events after the last: %+v, want the new create", got)
		}
		all, _ := rd.EventsSince(0, 1000)
		if got, _ := rd.EventsSince(0, 2); len(all) < 2 || !slices.Equal(got, all[:2]) {
			t.Errorf("EventsSince(0, 2): %+v, want the first two", got)
		}
	})

	// The expiry is logged like the client's own changes, with the
	// client it removed, but no address: no request caused it.
	t.Run("expiry logged", func(t *testing.T) {
		lines := s.logEntries(t, "client expired", 1)
		if len(lines) != 1 {
			t.Fatalf("%d expiry lines, want 1", len(lines))
		}
		for k, v := range map[string]any{
			"operation": clientdb.OpExpire, "outcome": "ok", "client_id": idle.id,
		} {
			if lines[0][k] != v {
				t.Errorf("expiry logged %s = %#v, want %#v", k, lines[0][k], v)
			}
		}
		if ip, ok := lines[0]["client_ip"]; ok {
			t.Errorf("expiry logged client_ip %v", ip)
		}
	})

	// Only hashes of secrets and tokens are stored, and the audit trail
	// holds none of them, nor any metadata.
	t.Run("no secrets", func(t *testing.T) {
		itLimUnload(t)
		raw := string(s.fileBytes(t))
		plain := []string{c.secret, c.token, newSecret, newToken,
			idle.secret, idle.token}
		for _, v := range plain {
			if strings.Contains(raw, v) {
				t.Errorf("store file holds the plaintext %.12q...", v)
			}
		}
		leaks := []string{"audit-mark-3f7a", "Audit Mark", "sw-audit-9b2e"}
		for _, v := range plain {
			leaks = append(leaks, clientdb.HashSecret(v))
		}
		values := itLimAuditValues(t, s)
		if len(values) != len(events)+1 {
			t.Errorf("audit bucket holds %d values, want %d",
				len(values), len(events)+1)
		}
		for _, v := range values {
			for _, leak := range leaks {
				if strings.Contains(string(v), leak) {
					t.Errorf("audit event %s holds %.20q", v, leak)
				}
			}
			var members map[string]any
			if err := json.Unmarshal(v, &members); err != nil {
				t.Fatalf("audit event %q: %v", v, err)
			}
			for name := range members {
				if !slices.Contains(itLimAuditMembers, name) {
					t.Errorf("audit event %s has member %q", v, name)
				}
			}
		}
	})
}

func TestIntegrationAuditRetention(t *testing.T) {
	clock := itUseClock(t)
	cfg := itFrontConfig{dcr: []string{"audit_retention 1h"}}
	f := startFront(t, newBackend(t), cfg)
	s := f.itServer
	rd := s.reader(t)

	kept := s.registerManaged(t, itValidBody)
	gone := s.registerManaged(t, itValidBody)
	if r := s.manage(t, http.MethodDelete, gone.id, gone.token, ""); r.status != 204 {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}
	old := itLimEvents(t, rd, 0)
	if len(old) != 3 {
		t.Fatalf("%d audit events, want 3: %+v", len(old), old)
	}

	clock.advance(2 * time.Hour)
	fresh := s.registerManaged(t, itValidBody)

	// The sweep runs when a config starts serving.
	f.reload(t, cfg)
	s.request(t, http.MethodGet, "/api", nil)
	events := itLimPollEvents(t, rd, func(ev []clientdb.Event) bool {
		return len(ev) == 1
	})
	if len(events) != 1 || events[0].Op != clientdb.OpCreate ||
		events[0].ClientID != fresh.id {
		t.Fatalf("audit events after the sweep: %+v, want only the create of %s",
			events, fresh.id)
	}
	if last := old[len(old)-1].Seq; events[0].Seq <= last {
		t.Errorf("newer event has seq %d, not after %d", events[0].Seq, last)
	}

	// The sweep removed events only: the clients are as they were, and
	// sequence numbers are not reused.
	itAssertOK(t, s.manage(t, http.MethodGet, kept.id, kept.token, ""), kept.id)
	itAssertUnauthorized(t, s.manage(t, http.MethodGet, gone.id, gone.token, ""))
	if got := s.count(t); got != 2 {
		t.Errorf("store holds %d clients, want 2", got)
	}
	more := s.registerManaged(t, itValidBody)
	got := itLimEvents(t, rd, 0)
	if len(got) != 2 || got[1].ClientID != more.id || got[1].Seq <= events[0].Seq {
		t.Errorf("audit events: %+v, want the fresh create and a newer one", got)
	}
}

func TestIntegrationLimitsLogging(t *testing.T) {
	s := startDCR(t, "rate_limit 2 1h", "max_clients 3", "rotate_secret on")
	other := itLimFrom(s, "127.0.0.2")

	a := s.registerManaged(t, itValidBody)
	b := s.registerManaged(t, itValidBody)
	itLimRefused(t, s, 2, time.Hour)
	c := other.registerManaged(t, itValidBody)
	other.postRefused(t, itValidBody, itRefusal{http.StatusForbidden, "access_denied",
		"max_clients"})

	body := `{"redirect_uris":["https://app.example.com/cb"],"client_secret":"` +
		a.secret + `"}`
	upd := itAssertOK(t, s.manage(t, http.MethodPut, a.id, a.token, body), a.id)
	if r := s.manage(t, http.MethodDelete, b.id, b.token, ""); r.status != 204 {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}

	for _, tc := range []struct {
		msg  string
		want []map[string]any
	}{
		{"client registered", []map[string]any{
			{"operation": "create", "outcome": "ok", "client_id": a.id,
				"client_ip": "127.0.0.1"},
			{"operation": "create", "outcome": "ok", "client_id": b.id,
				"client_ip": "127.0.0.1"},
			{"operation": "create", "outcome": "ok", "client_id": c.id,
				"client_ip": "127.0.0.2"},
		}},
		{"registration refused", []map[string]any{
			{"operation": "create", "outcome": "refused", "rule": "rate_limit",
				"error": "temporarily_unavailable", "status": 429.0,
				"client_ip": "127.0.0.1"},
			{"operation": "create", "outcome": "refused", "rule": "max_clients",
				"error": "access_denied", "status": 403.0,
				"client_ip": "127.0.0.2"},
		}},
		{"client updated", []map[string]any{
			{"operation": "update", "outcome": "ok", "client_id": a.id,
				"secret_rotated": true, "client_ip": "127.0.0.1"},
		}},
		{"client deleted", []map[string]any{
			{"operation": "delete", "outcome": "ok", "client_id": b.id,
				"client_ip": "127.0.0.1"},
		}},
	} {
		t.Run(tc.msg, func(t *testing.T) {
			lines := s.logEntries(t, tc.msg, len(tc.want))
			if len(lines) != len(tc.want) {
				t.Fatalf("%d %q lines, want %d", len(lines), tc.msg, len(tc.want))
			}
			for i, want := range tc.want {
				for k, v := range want {
					if lines[i][k] != v {
						t.Errorf("line %d: %s = %#v, want %#v",
							i, k, lines[i][k], v)
					}
				}
			}
		})
	}

	raw, err := os.ReadFile(s.logFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, leak := range []string{
		a.secret, a.token, b.secret, b.token, c.secret, c.token,
		itString(t, upd, "client_secret"),
		itString(t, upd, "registration_access_token"),
	} {
		if leak != "" && strings.Contains(string(raw), leak) {
			t.Errorf("log file contains %.12q...", leak)
		}
	}
}
