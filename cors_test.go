package dcr

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// Methods of the two endpoints, as the handler passes them.
var (
	corsRegMethods    = []string{http.MethodPost}
	corsConfigMethods = []string{
		http.MethodGet, http.MethodPut, http.MethodDelete}
)

// corsPolicyOf builds a policy the test needs to be valid.
func corsPolicyOf(t *testing.T, origins ...string) *corsPolicy {
	t.Helper()
	c, err := newCORSPolicy(origins)
	if err != nil {
		t.Fatalf("newCORSPolicy(%q): %v", origins, err)
	}
	return c
}

// corsRequest returns a request to the registration endpoint with the
// given headers, in pairs of name and value; a name may repeat.
func corsRequest(method string, headers ...string) *http.Request {
	r := httptest.NewRequest(method, "https://as.example/register", nil)
	for i := 0; i+1 < len(headers); i += 2 {
		r.Header.Add(headers[i], headers[i+1])
	}
	return r
}

// corsVary returns the set of names that the response's Vary headers
// list.
func corsVary(h http.Header) []string {
	var names []string
	for _, v := range h.Values("Vary") {
		for name := range strings.SplitSeq(v, ",") {
			names = append(names, strings.TrimSpace(name))
		}
	}
	return names
}

// corsCheckVary fails unless the response's Vary names every one of want.
func corsCheckVary(t *testing.T, h http.Header, want ...string) {
	t.Helper()
	got := corsVary(h)
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("Vary = %q, want it to name %s", got, w)
		}
	}
}

func TestCORSConfig(t *testing.T) {
	valid := []struct {
		name    string
		origins []string
		any     bool
		want    []string // normalised, sorted
	}{
		{"none", nil, false, nil},
		{"empty list", []string{}, false, nil},
		{"any", []string{"*"}, true, []string{}},
		{"plain https", []string{"https://app.example"}, false,
			[]string{"https://app.example"}},
		{"case folded", []string{"HTTPS://App.Example"}, false,
			[]string{"https://app.example"}},
		{"https default port", []string{"https://app.example:443"},
			false, []string{"https://app.example"}},
		{"http default port", []string{"http://app.example:80"},
			false, []string{"http://app.example"}},
		{"other scheme's default port", []string{
			"http://app.example:443", "https://app.example:80"}, false,
			[]string{"http://app.example:443", "https://app.example:80"}},
		{"port leading zero", []string{"https://app.example:0443"},
			false, []string{"https://app.example"}},
		{"custom port", []string{"https://app.example:8443"}, false,
			[]string{"https://app.example:8443"}},
		{"IPv4", []string{"http://127.0.0.1:3000"}, false,
			[]string{"http://127.0.0.1:3000"}},
		{"IPv6", []string{"http://[::1]:3000", "https://[2001:DB8::1]"},
			false, []string{"http://[::1]:3000", "https://[2001:db8::1]"}},
		{"IPv6 canonical form", []string{"http://[0:0::0001]"}, false,
			[]string{"http://[::1]"}},
		{"duplicates merge", []string{
			"https://app.example", "https://APP.example:443"}, false,
			[]string{"https://app.example"}},
		{"any with others", []string{"https://app.example", "*"}, true,
			[]string{"https://app.example"}},
	}
	for _, tc := range valid {
		t.Run(tc.name, func(t *testing.T) {
			c := corsPolicyOf(t, tc.origins...)
			if tc.want == nil {
				if c != nil {
					t.Fatalf("policy = %+v, want nil", c)
				}
				return
			}
			if c.anyOrigin != tc.any {
				t.Errorf("anyOrigin = %v, want %v", c.anyOrigin, tc.any)
			}
			got := make([]string, 0, len(c.origins))
			for o := range c.origins {
				got = append(got, o)
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("origins = %q, want %q", got, tc.want)
			}
		})
	}

	invalid := []struct {
		name, origin, reason string
	}{
		{"empty", "", "scheme://host"},
		{"no scheme", "app.example", "scheme://host"},
		{"null", "null", "scheme://host"},
		{"double star", "**", "scheme://host"},
		{"ftp", "ftp://app.example", "not http or https"},
		{"scheme only", "https://", "missing host"},
		{"trailing slash", "https://app.example/", "trailing slash"},
		{"path", "https://app.example/app", "path"},
		{"query", "https://app.example?x=1", "query"},
		{"empty query", "https://app.example?", "query"},
		{"fragment", "https://app.example#top", "fragment"},
		{"empty fragment", "https://app.example#", "fragment"},
		{"user info", "https://me@app.example", "user info"},
		{"empty port", "https://app.example:", "empty port"},
		{"port zero", "https://app.example:0", "between 1 and 65535"},
		{"port too big", "https://app.example:65536",
			"between 1 and 65535"},
		{"port not a number", "https://app.example:https", "port"},
		{"unicode host", "https://bücher.example", "punycode"},
		{"space", "https://app .example", "punycode"},
		{"escaped host", "https://app%2eexample", "punycode"},
		{"wildcard host", "https://*.app.example", "punycode"},
		{"unclosed IPv6", "http://[::1", "parsing host"},
		{"port without host", "https://:443", "missing host"},
		// The standard library words these; any error will do.
		{"bad IPv6", "http://[1::2::3]", ""},
		{"IPv4 in brackets", "http://[1.2.3.4]", ""},
	}
	for _, tc := range invalid {
		t.Run("invalid "+tc.name, func(t *testing.T) {
			c, err := newCORSPolicy(
				[]string{"https://ok.example", tc.origin})
			if err == nil {
				t.Fatalf("accepted %q as %+v", tc.origin, c)
			}
			prefix := `cors_origins "` + tc.origin + `": `
			if !strings.HasPrefix(err.Error(), prefix) {
				t.Errorf("error %q does not start with %q", err, prefix)
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("error %q does not mention %q", err, tc.reason)
			}
		})
	}
}

// TestCORSActual covers requests that are not preflights: the handler
// goes on to answer them, with CORS headers when the origin is allowed.
func TestCORSActual(t *testing.T) {
	tests := []struct {
		name    string
		origins []string
		req     *http.Request
		allow   string // wanted Access-Control-Allow-Origin, "" none
	}{
		{"allowed origin", []string{"https://app.example"},
			corsRequest("POST", "Origin", "https://app.example"),
			"https://app.example"},
		{"origin case differs", []string{"https://App.Example"},
			corsRequest("POST", "Origin", "HTTPS://APP.EXAMPLE"),
			"HTTPS://APP.EXAMPLE"},
		{"default port in request", []string{"https://app.example"},
			corsRequest("POST", "Origin", "https://app.example:443"),
			"https://app.example:443"},
		{"default port in config", []string{"https://app.example:443"},
			corsRequest("POST", "Origin", "https://app.example"),
			"https://app.example"},
		{"second of several", []string{
			"https://a.example", "http://localhost:3000"},
			corsRequest("GET", "Origin", "http://localhost:3000"),
			"http://localhost:3000"},
		{"other port", []string{"https://app.example"},
			corsRequest("POST", "Origin", "https://app.example:8443"),
			""},
		{"other scheme", []string{"https://app.example"},
			corsRequest("POST", "Origin", "http://app.example"), ""},
		{"subdomain", []string{"https://app.example"},
			corsRequest("POST", "Origin", "https://x.app.example"), ""},
		{"suffix", []string{"https://app.example"},
			corsRequest("POST", "Origin", "https://app.example.evil"),
			""},
		{"path in request origin", []string{"https://app.example"},
			corsRequest("POST", "Origin", "https://app.example/"), ""},
		{"null origin", []string{"https://app.example"},
			corsRequest("POST", "Origin", "null"), ""},
		{"no origin", []string{"https://app.example"},
			corsRequest("POST"), ""},
		{"any origin", []string{"*"},
			corsRequest("DELETE", "Origin", "https://any.example"),
			"https://any.example"},
		{"any allows null", []string{"*"},
			corsRequest("POST", "Origin", "null"), "null"},
		{"any without origin", []string{"*"}, corsRequest("POST"), ""},
		{"options without request method", []string{"*"},
			corsRequest("OPTIONS", "Origin", "https://app.example"),
			"https://app.example"},
		{"options without origin", []string{"*"},
			corsRequest("OPTIONS",
				"Access-Control-Request-Method", "POST"), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := corsPolicyOf(t, tc.origins...)
			w := httptest.NewRecorder()
			if c.handle(w, tc.req, corsRegMethods) {
				t.Fatal("handle answered a request that is not " +
					"a preflight")
			}

			h := w.Header()
			if got := h.Get("Access-Control-Allow-Origin"); got != tc.allow {
				t.Errorf("Allow-Origin = %q, want %q", got, tc.allow)
			}
			expose := ""
			if tc.allow != "" {
				expose = "WWW-Authenticate, Retry-After"
			}
			if got := h.Get("Access-Control-Expose-Headers"); got != expose {
				t.Errorf("Expose-Headers = %q, want %q", got, expose)
			}
			corsCheckVary(t, h, "Origin")
			for _, name := range []string{
				"Access-Control-Allow-Methods",
				"Access-Control-Allow-Headers",
				"Access-Control-Max-Age",
			} {
				if v := h.Values(name); v != nil {
					t.Errorf("%s = %q on a request that is not a "+
						"preflight", name, v)
				}
			}
			if w.Body.Len() != 0 || h.Get("Content-Type") != "" {
				t.Errorf("handle wrote a response: %q", w.Body)
			}
		})
	}
}

func TestCORSPreflight(t *testing.T) {
	const origin = "https://app.example"
	const vary = "Origin, Access-Control-Request-Method, " +
		"Access-Control-Request-Headers"

	tests := []struct {
		name    string
		origins []string
		methods []string
		req     *http.Request
	}{
		{"configuration method", []string{origin}, corsConfigMethods,
			corsRequest("OPTIONS", "Origin", origin,
				"Access-Control-Request-Method", "PUT",
				"Access-Control-Request-Headers",
				"authorization,content-type")},
		{"registration", []string{origin}, corsRegMethods,
			corsRequest("OPTIONS", "Origin", origin,
				"Access-Control-Request-Method", "POST",
				"Access-Control-Request-Headers", "content-type")},
		{"no request headers", []string{origin}, corsConfigMethods,
			corsRequest("OPTIONS", "Origin", origin,
				"Access-Control-Request-Method", "DELETE")},
		{"header names in any case with spaces", []string{origin},
			corsRegMethods,
			corsRequest("OPTIONS", "Origin", origin,
				"Access-Control-Request-Method", "POST",
				"Access-Control-Request-Headers",
				" Content-Type ,\tAUTHORIZATION , ")},
		{"request headers on two lines", []string{origin},
			corsRegMethods,
			corsRequest("OPTIONS", "Origin", origin,
				"Access-Control-Request-Method", "POST",
				"Access-Control-Request-Headers", "authorization",
				"Access-Control-Request-Headers", "content-type")},
		{"any origin", []string{"*"}, corsConfigMethods,
			corsRequest("OPTIONS", "Origin", origin,
				"Access-Control-Request-Method", "GET",
				"Access-Control-Request-Headers", "authorization")},
		{"default port in config", []string{origin + ":443"},
			corsRegMethods,
			corsRequest("OPTIONS", "Origin", origin,
				"Access-Control-Request-Method", "POST")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := corsPolicyOf(t, tc.origins...)
			w := httptest.NewRecorder()
			if !c.handle(w, tc.req, tc.methods) {
				t.Fatal("handle did not answer the preflight")
			}

			if w.Code != http.StatusNoContent {
				t.Errorf("status = %d, want 204", w.Code)
			}
			if w.Body.Len() != 0 {
				t.Errorf("body = %q, want none", w.Body)
			}
			want := http.Header{
				"Access-Control-Allow-Origin": {origin},
				"Access-Control-Allow-Methods": {
					strings.Join(tc.methods, ", ")},
				"Access-Control-Allow-Headers": {
					"Authorization, Content-Type"},
				"Access-Control-Max-Age": {"600"},
				"Vary":                   {vary},
			}
			if got := w.Header(); !reflect.DeepEqual(got, want) {
				t.Errorf("headers = %v\nwant %v", got, want)
			}
		})
	}
}

func TestCORSPreflightRefused(t *testing.T) {
	const origin = "https://app.example"

	tests := []struct {
		name    string
		methods []string
		req     *http.Request
		want    string // in error_description
	}{
		{"origin", corsRegMethods,
			corsRequest("OPTIONS", "Origin", "https://evil.example",
				"Access-Control-Request-Method", "POST"),
			`origin "https://evil.example" is not allowed`},
		{"null origin", corsRegMethods,
			corsRequest("OPTIONS", "Origin", "null",
				"Access-Control-Request-Method", "POST"),
			`origin "null" is not allowed`},
		{"method", corsConfigMethods,
			corsRequest("OPTIONS", "Origin", origin,
				"Access-Control-Request-Method", "PATCH"),
			`method "PATCH" is not allowed; allowed: GET, PUT, DELETE`},
		{"method of the other endpoint", corsRegMethods,
			corsRequest("OPTIONS", "Origin", origin,
				"Access-Control-Request-Method", "DELETE"),
			`method "DELETE" is not allowed; allowed: POST`},
		{"method names are case-sensitive", corsConfigMethods,
			corsRequest("OPTIONS", "Origin", origin,
				"Access-Control-Request-Method", "put"),
			`method "put" is not allowed`},
		{"header", corsRegMethods,
			corsRequest("OPTIONS", "Origin", origin,
				"Access-Control-Request-Method", "POST",
				"Access-Control-Request-Headers", "x-custom"),
			`request header "x-custom" is not allowed`},
		{"header after allowed ones", corsRegMethods,
			corsRequest("OPTIONS", "Origin", origin,
				"Access-Control-Request-Method", "POST",
				"Access-Control-Request-Headers",
				"content-type, authorization, X-Trace"),
			`request header "X-Trace" is not allowed`},
		{"header on a second line", corsRegMethods,
			corsRequest("OPTIONS", "Origin", origin,
				"Access-Control-Request-Method", "POST",
				"Access-Control-Request-Headers", "content-type",
				"Access-Control-Request-Headers", "cookie"),
			`request header "cookie" is not allowed`},
		{"header name prefix", corsRegMethods,
			corsRequest("OPTIONS", "Origin", origin,
				"Access-Control-Request-Method", "POST",
				"Access-Control-Request-Headers", "content-type-x"),
			`request header "content-type-x" is not allowed`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := corsPolicyOf(t, origin)
			w := httptest.NewRecorder()
			if !c.handle(w, tc.req, tc.methods) {
				t.Fatal("handle did not answer the preflight")
			}

			if w.Code != http.StatusForbidden {
				t.Errorf("status = %d, want 403", w.Code)
			}
			h := w.Header()
			if ct := h.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			var body map[string]string
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %q: %v", w.Body, err)
			}
			if body["error"] != codeInvalidRequest {
				t.Errorf("error = %q, want %q", body["error"],
					codeInvalidRequest)
			}
			if d := body["error_description"]; !strings.Contains(d,
				tc.want) {
				t.Errorf("error_description = %q, want it to "+
					"contain %q", d, tc.want)
			}
			for name := range h {
				if strings.HasPrefix(name, "Access-Control-") {
					t.Errorf("refusal carries %s: %q", name,
						h.Values(name))
				}
			}
			corsCheckVary(t, h, "Origin", "Access-Control-Request-Method",
				"Access-Control-Request-Headers")
		})
	}
}

func TestCORSNilPolicy(t *testing.T) {
	var c *corsPolicy
	for _, r := range []*http.Request{
		corsRequest("POST", "Origin", "https://app.example"),
		corsRequest("OPTIONS", "Origin", "https://app.example",
			"Access-Control-Request-Method", "POST"),
	} {
		t.Run(r.Method, func(t *testing.T) {
			w := httptest.NewRecorder()
			if c.handle(w, r, corsRegMethods) {
				t.Error("nil policy answered the request")
			}
			if len(w.Header()) != 0 || w.Body.Len() != 0 {
				t.Errorf("nil policy wrote headers %v, body %q",
					w.Header(), w.Body)
			}
		})
	}
}

// TestCORSVaryKept checks that the policy adds to a Vary header another
// part of the server has set rather than replacing it.
func TestCORSVaryKept(t *testing.T) {
	c := corsPolicyOf(t, "https://app.example")
	for _, r := range []*http.Request{
		corsRequest("POST", "Origin", "https://app.example"),
		corsRequest("OPTIONS", "Origin", "https://app.example",
			"Access-Control-Request-Method", "POST"),
	} {
		t.Run(r.Method, func(t *testing.T) {
			w := httptest.NewRecorder()
			w.Header().Set("Vary", "Accept-Encoding")
			c.handle(w, r, corsRegMethods)
			corsCheckVary(t, w.Header(), "Accept-Encoding", "Origin")
		})
	}
}
