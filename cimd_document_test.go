package dcr

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestLooksLikeCIMD covers the routing test: any letter case of the
// scheme, and nothing else.
func TestLooksLikeCIMD(t *testing.T) {
	cases := []struct {
		id   string
		want bool
	}{
		{"https://app.example/client", true},
		{"https://", true},
		{"HTTPS://app.example/client", true},
		{"hTtPs://app.example/client", true},
		{"http://app.example/client", false},
		{"https:/app.example/client", false},
		{"https:", false},
		{"", false},
		{" https://app.example/client", false},
		{"0193a1b2c3d4ZmFrZS1jbGllbnQtaWQtMTIz", false},
	}
	for _, tc := range cases {
		t.Run(tc.id, func(t *testing.T) {
			if got := looksLikeCIMD(tc.id); got != tc.want {
				t.Errorf("looksLikeCIMD(%q) = %v, want %v", tc.id, got, tc.want)
			}
		})
	}
}

// TestCIMDURLProblem covers the Client Identifier URL rules: each case is
// accepted (want "") or refused with a reason holding want.
func TestCIMDURLProblem(t *testing.T) {
	long := "https://app.example/" + strings.Repeat("a", maxCIMDLength)
	cases := []struct {
		name string
		raw  string
		want string
	}{
		{"simple", "https://app.example/client", ""},
		{"nested path", "https://app.example/oauth/client.json", ""},
		{"port", "https://app.example:8443/client", ""},
		{"default port", "https://app.example:443/client", ""},
		{"query", "https://app.example/client?v=2", ""},
		{"empty query", "https://app.example/client?", ""},
		{"trailing slash", "https://app.example/client/", ""},
		{"empty segment", "https://app.example//client", ""},
		{"dots in segment", "https://app.example/a..b/.c/d./...", ""},
		{"encoded character", "https://app.example/caf%C3%A9", ""},
		{"encoded slash", "https://app.example/a%2Fb", ""},
		{"upper-case host", "https://App.Example/client", ""},
		{"IPv4 host", "https://192.0.2.1/client", ""},
		{"IPv6 host", "https://[2001:db8::1]/client", ""},
		{"IPv6 host and port", "https://[2001:db8::1]:8443/client", ""},
		{"sub-delims in path", "https://app.example/a;b=c,d!$&'()*+", ""},
		{"longest", "https://app.example/" +
			strings.Repeat("a", maxCIMDLength-len("https://app.example/")), ""},

		{"too long", long, "longer than 2048 bytes"},
		{"http", "http://app.example/client", "must use https"},
		{"no scheme", "app.example/client", "must use https"},
		{"relative", "/client", "must use https"},
		{"empty", "", "must use https"},
		{"one slash", "https:/app.example/client", "must use https"},
		{"upper-case scheme", "HTTPS://app.example/client", "lower case"},
		{"mixed-case scheme", "Https://app.example/client", "lower case"},
		{"no path", "https://app.example", "must have a path"},
		{"no path with query", "https://app.example?x=1", "must have a path"},
		{"no path with port", "https://app.example:8443", "must have a path"},
		{"root path", "https://app.example/", "other than /"},
		{"root path with query", "https://app.example/?x", "other than /"},
		{"fragment", "https://app.example/client#x", "fragment"},
		{"empty fragment", "https://app.example/client#", "fragment"},
		{"fragment after query", "https://app.example/client?a#b", "fragment"},
		{"user", "https://alice@app.example/client", "user information"},
		{"user and password", "https://a:b@app.example/client", "user information"},
		{"empty user", "https://@app.example/client", "user information"},
		{"dot segment", "https://app.example/./client", ". or .. path"},
		{"dot-dot segment", "https://app.example/a/../client", ". or .. path"},
		{"trailing dot-dot", "https://app.example/a/..", ". or .. path"},
		{"trailing dot", "https://app.example/a/.", ". or .. path"},
		{"encoded dot", "https://app.example/%2e/client", ". or .. path"},
		{"encoded dot-dot", "https://app.example/a/%2e%2e/b", ". or .. path"},
		{"encoded upper-case", "https://app.example/a/%2E%2E/b", ". or .. path"},
		{"half-encoded", "https://app.example/a/.%2E/b", ". or .. path"},
		{"half-encoded other", "https://app.example/a/%2e./b", ". or .. path"},
		{"dot-dot with parameter", "https://app.example/a/..;x/b", ". or .. path"},
		{"across encoded slash", "https://app.example/a%2F..%2Fb", ". or .. path"},
		{"across encoded backslash", "https://app.example/a%5c..%5Cb",
			". or .. path"},
		{"dot-dot before query", "https://app.example/a/..?x", ". or .. path"},
		{"no host", "https:///client", "no host"},
		{"port without host", "https://:443/client", "no host"},
		{"empty port", "https://app.example:/client", "invalid port"},
		{"port zero", "https://app.example:0/client", "invalid port"},
		{"port too large", "https://app.example:65536/client", "invalid port"},
		{"port not a number", "https://app.example:https/client", "invalid port"},
		{"encoded host", "https://%61pp.example/client", "invalid host"},
		{"underscore host", "https://app_1.example/client", "invalid host"},
		{"empty label", "https://app..example/client", "invalid host"},
		{"trailing dot host", "https://app.example./client", "invalid host"},
		{"IPv6 zone", "https://[fe80::1%25eth0]/client", "invalid host"},
		{"IPv4 in brackets", "https://[192.0.2.1]/client", "invalid host"},
		{"unclosed bracket", "https://[2001:db8::1/client", "invalid host"},
		{"junk after bracket", "https://[2001:db8::1]x/client", "invalid host"},
		{"bracket in path", "https://app.example/a[0]", "not allowed in a URL"},
		{"space", "https://app.example/a b", "not allowed in a URL"},
		{"tab", "https://app.example/a\tb", "not allowed in a URL"},
		{"newline", "https://app.example/client\n", "not allowed in a URL"},
		{"NUL", "https://app.example/a\x00", "not allowed in a URL"},
		{"DEL", "https://app.example/a\x7f", "not allowed in a URL"},
		{"backslash", `https://app.example/a\..\b`, "not allowed in a URL"},
		{"quote", `https://app.example/"a"`, "not allowed in a URL"},
		{"non-ASCII", "https://app.example/café", "not allowed in a URL"},
		{"non-ASCII host", "https://bücher.example/client",
			"not allowed in a URL"},
		{"bad escape", "https://app.example/a%zz", "percent-encoding"},
		{"short escape", "https://app.example/a%2", "percent-encoding"},
		{"bad escape in query", "https://app.example/a?%g0", "percent-encoding"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := cimdURLProblem(tc.raw)
			switch {
			case tc.want == "" && got != "":
				t.Errorf("cimdURLProblem(%q) = %q, want acceptance", tc.raw, got)
			case tc.want != "" && !strings.Contains(got, tc.want):
				t.Errorf("cimdURLProblem(%q) = %q, want a reason with %q",
					tc.raw, got, tc.want)
			}
		})
	}
}

// cimdTestID is the URL the documents of the tests are fetched from.
const cimdTestID = "https://app.example/client"

// cimdTestDoc returns a document for cimdTestID: its client_id, one redirect
// URI and the members given, each a `"name":value` pair.
func cimdTestDoc(members ...string) string {
	return "{" + strings.Join(append([]string{
		`"client_id":"` + cimdTestID + `"`,
		`"redirect_uris":["https://app.example/cb"]`,
	}, members...), ",") + "}"
}

// cimdTestJWKS returns a jwks member holding the given keys.
func cimdTestJWKS(keys ...string) string {
	return `"jwks":{"keys":[` + strings.Join(keys, ",") + `]}`
}

// cimdTestECKey is a public EC key.
const cimdTestECKey = `{"kty":"EC","crv":"P-256",` +
	`"x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",` +
	`"y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}`

// cimdTestOctKey is a symmetric key.
const cimdTestOctKey = `{"kty":"oct","k":"c2VjcmV0"}`

// TestParseCIMDDocument covers the documents that are accepted, with the
// authentication method they end up with, and every refusal, which must
// be a 400 invalid_client_metadata with its rule and a description that
// names the problem.
func TestParseCIMDDocument(t *testing.T) {
	const redirect = `"redirect_uris":["https://app.example/cb"]`
	const pkJWT = `"token_endpoint_auth_method":"private_key_jwt"`

	type tc struct {
		name   string
		body   string
		method string // the accepted method, when rule is ""
		rule   string
		want   string // substring of the description
	}
	cases := []tc{
		{name: "minimal", body: cimdTestDoc(), method: authNone},
		{
			name: "full",
			body: cimdTestDoc(`"client_name":"Demo"`,
				`"client_uri":"https://app.example/"`,
				`"logo_uri":"https://app.example/logo.png"`,
				`"grant_types":["authorization_code","refresh_token"]`,
				`"response_types":["code"]`, `"scope":"openid"`,
				`"software_statement":"e30.e30.sig"`, `"x_custom":{"a":1}`),
			method: authNone,
		},
		{
			name:   "explicit none",
			body:   cimdTestDoc(`"token_endpoint_auth_method":"none"`),
			method: authNone,
		},
		{
			name:   "null auth method",
			body:   cimdTestDoc(`"token_endpoint_auth_method":null`),
			method: authNone,
		},
		{
			name:   "private_key_jwt with public key",
			body:   cimdTestDoc(pkJWT, cimdTestJWKS(cimdTestECKey)),
			method: authPrivateKeyJWT,
		},
		{
			name:   "private_key_jwt with jwks_uri",
			body:   cimdTestDoc(pkJWT, `"jwks_uri":"https://app.example/jwks"`),
			method: authPrivateKeyJWT,
		},
		{
			// JSON escapes are not normalisation: the value is the
			// same string.
			name: "client_id with JSON escapes",
			body: `{"client_id":"https:\/\/app.example\/\u0063lient",` +
				redirect + `}`,
			method: authNone,
		},
		{
			name:   "jwks without keys",
			body:   cimdTestDoc(`"jwks":{}`),
			method: authNone,
		},
		{
			name:   "member named like keys but not keys",
			body:   cimdTestDoc(`"jwks":{"keyset":[` + cimdTestOctKey + `]}`),
			method: authNone,
		},

		{
			name: "not JSON", body: `client_id=x`,
			rule: "json_syntax", want: "the document is not valid JSON",
		},
		{
			name: "not an object", body: `["` + cimdTestID + `"]`,
			rule: "json_object", want: "the document must be a JSON object",
		},
		{
			name: "member of the wrong type", body: cimdTestDoc(`"client_name":1`),
			rule: "json_type", want: "client_name must be a string",
		},
		{
			name: "client_id missing", body: `{` + redirect + `}`,
			rule: "cimd_client_id", want: "client_id is missing",
		},
		{
			name: "client_id null", body: `{"client_id":null,` + redirect + `}`,
			rule: "cimd_client_id", want: "client_id is missing",
		},
		{
			name: "client_id a number", body: `{"client_id":1,` + redirect + `}`,
			rule: "cimd_client_id", want: "must be a string",
		},
		{
			name: "client_id an array",
			body: `{"client_id":["` + cimdTestID + `"],` + redirect + `}`,
			rule: "cimd_client_id", want: "must be a string",
		},
		{
			name: "client_id another URL",
			body: `{"client_id":"https://evil.example/client",` + redirect + `}`,
			rule: "cimd_client_id",
			want: `client_id "https://evil.example/client" does not equal`,
		},
		{
			name: "client_id with trailing slash",
			body: `{"client_id":"` + cimdTestID + `/",` + redirect + `}`,
			rule: "cimd_client_id", want: "does not equal",
		},
		{
			name: "client_id with default port",
			body: `{"client_id":"https://app.example:443/client",` +
				redirect + `}`,
			rule: "cimd_client_id", want: "does not equal",
		},
		{
			name: "client_id in other case",
			body: `{"client_id":"https://APP.example/client",` + redirect + `}`,
			rule: "cimd_client_id", want: "does not equal",
		},
		{
			name: "client_id empty", body: `{"client_id":"",` + redirect + `}`,
			rule: "cimd_client_id", want: `client_id "" does not equal`,
		},
		{
			name: "client_secret", body: cimdTestDoc(`"client_secret":"s3cret"`),
			rule: "cimd_client_secret", want: "client_secret must not be present",
		},
		{
			name: "client_secret null", body: cimdTestDoc(`"client_secret":null`),
			rule: "cimd_client_secret", want: "client_secret must not be present",
		},
		{
			name: "redirect_uris missing",
			body: `{"client_id":"` + cimdTestID + `"}`,
			rule: "cimd_redirect_uris", want: "at least one redirect URI",
		},
		{
			name: "redirect_uris empty",
			body: `{"client_id":"` + cimdTestID + `","redirect_uris":[]}`,
			rule: "cimd_redirect_uris", want: "at least one redirect URI",
		},
		{
			name: "redirect_uris null",
			body: `{"client_id":"` + cimdTestID + `","redirect_uris":null}`,
			rule: "cimd_redirect_uris", want: "at least one redirect URI",
		},
		{
			name: "jwks keys not an array", body: cimdTestDoc(`"jwks":{"keys":{}}`),
			rule: "cimd_jwks", want: "jwks keys must be an array",
		},
		{
			name: "jwks key not an object", body: cimdTestDoc(cimdTestJWKS(`"k"`)),
			rule: "cimd_jwks", want: "jwks key 0 must be an object",
		},
		{
			// A parser that keeps the last "keys" sees no key; one that
			// keeps the first sees the symmetric one.
			name: "jwks keys repeated",
			body: cimdTestDoc(`"jwks":{"keys":[` + cimdTestOctKey + `],"keys":[]}`),
			rule: "cimd_jwks", want: "without repeated members",
		},
		{
			// Which of the two a parser reads depends on the parser.
			name: "jwks keys in two cases",
			body: cimdTestDoc(`"jwks":{"keys":[` + cimdTestOctKey + `],"Keys":[]}`),
			rule: "cimd_jwks", want: "without repeated members",
		},
		{
			name: "jwks key member repeated",
			body: cimdTestDoc(cimdTestJWKS(`{"kty":"EC","kty":"EC"}`)),
			rule: "cimd_jwks", want: "key 0 must be an object without repeated",
		},
		{
			// encoding/json, and so go-jose, reads "Keys" as "keys".
			name: "jwks keys in upper case",
			body: cimdTestDoc(`"jwks":{"Keys":[` + cimdTestOctKey + `]}`),
			rule: "cimd_private_key", want: `(member "k")`,
		},
		{
			// U+212A KELVIN SIGN folds to k.
			name: "jwks keys with Kelvin sign",
			body: cimdTestDoc(`"jwks":{"\u212aeys":[` + cimdTestOctKey + `]}`),
			rule: "cimd_private_key", want: `(member "k")`,
		},
		{
			name: "private member in upper case",
			body: cimdTestDoc(cimdTestJWKS(`{"kty":"EC","crv":"P-256",` +
				`"x":"AQ","y":"AQ","D":"AQ"}`)),
			rule: "cimd_private_key", want: `(member "d")`,
		},
		{
			name: "private member with Kelvin sign",
			body: cimdTestDoc(cimdTestJWKS(`{"kty":"oct","\u212a":"AQ"}`)),
			rule: "cimd_private_key", want: `(member "k")`,
		},
	}
	for _, name := range issuedMembers {
		cases = append(cases, tc{
			name: "issued member " + name,
			body: cimdTestDoc(`"` + name + `":"x"`),
			rule: "cimd_issued", want: name + " must not be present",
		})
	}
	for _, name := range privateKeyMembers {
		rsa := `{"kty":"RSA","n":"AQ","e":"AQAB","` + name + `":"AQ"}`
		cases = append(cases, tc{
			name: "private key member " + name,
			body: cimdTestDoc(cimdTestJWKS(cimdTestECKey, rsa)),
			rule: "cimd_private_key",
			want: `jwks key 1 holds private or symmetric key material ` +
				`(member "` + name + `")`,
		})
	}
	for _, method := range secretMethods {
		cases = append(cases, tc{
			name: "auth method " + method,
			body: cimdTestDoc(`"token_endpoint_auth_method":"` + method + `"`),
			rule: "cimd_auth_method",
			want: `token_endpoint_auth_method "` + method +
				`" needs a shared secret`,
		})
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, perr := parseCIMDDocument([]byte(tc.body), cimdTestID)
			if tc.rule == "" {
				if perr != nil {
					t.Fatalf("refused: %v", perr)
				}
				if m.TokenEndpointAuthMethod != tc.method {
					t.Errorf("token_endpoint_auth_method = %q, want %q",
						m.TokenEndpointAuthMethod, tc.method)
				}
				if len(m.RedirectURIs) == 0 {
					t.Errorf("no redirect_uris in %+v", m)
				}
				if m.SoftwareStatement != "" {
					t.Errorf("software_statement kept: %q",
						m.SoftwareStatement)
				}
				return
			}
			if perr == nil {
				t.Fatalf("accepted: %+v", m)
			}
			if m != nil {
				t.Errorf("metadata %+v returned with the error", m)
			}
			if perr.Status != http.StatusBadRequest ||
				perr.Code != codeInvalidClientMetadata {
				t.Errorf("status %d code %q, want 400 %s",
					perr.Status, perr.Code, codeInvalidClientMetadata)
			}
			if perr.Rule != tc.rule {
				t.Errorf("rule %q, want %q (%s)",
					perr.Rule, tc.rule, perr.Description)
			}
			if !strings.Contains(perr.Description, tc.want) {
				t.Errorf("description %q, want it to hold %q",
					perr.Description, tc.want)
			}
		})
	}
}

// TestParseCIMDDocumentLongClientID checks that a client_id that does not
// match is quoted shortened, not echoed in full.
func TestParseCIMDDocumentLongClientID(t *testing.T) {
	other := "https://app.example/" + strings.Repeat("x", 4000)
	body := `{"client_id":"` + other + `","redirect_uris":["https://a/cb"]}`
	_, perr := parseCIMDDocument([]byte(body), "https://app.example/client")
	if perr == nil || perr.Rule != "cimd_client_id" {
		t.Fatalf("got %v, want a cimd_client_id refusal", perr)
	}
	if len(perr.Description) > 200 {
		t.Errorf("description is %d bytes long", len(perr.Description))
	}
}

// cimdTestHeader returns a header of the name and value pairs in kv; a name given
// twice has two lines.
func cimdTestHeader(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

// TestCIMDTTL covers the lifetime read from caching headers and its
// clamping, to [1m, 1h] unless a case says otherwise.
func TestCIMDTTL(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) string {
		return now.Add(d).Format(http.TimeFormat)
	}
	const lo, hi = time.Minute, time.Hour
	const cc = "Cache-Control"
	h := cimdTestHeader

	cases := []struct {
		name   string
		header http.Header
		reqHdr http.Header
		noReq  bool
		status int
		min    time.Duration // overrides lo when set
		max    time.Duration // overrides hi when set
		want   time.Duration
	}{
		{name: "no headers", header: h(), want: lo},
		{name: "max-age", header: h(cc, "max-age=600"), want: 10 * time.Minute},
		{
			name:   "max-age with other directives",
			header: h(cc, "public, max-age=600, must-revalidate"),
			want:   10 * time.Minute,
		},
		{
			name:   "max-age in upper case",
			header: h(cc, "MAX-AGE=600"),
			want:   10 * time.Minute,
		},
		{
			name:   "max-age quoted",
			header: h(cc, `max-age="600"`),
			want:   10 * time.Minute,
		},
		{name: "max-age zero", header: h(cc, "max-age=0"), want: lo},
		{name: "max-age below min", header: h(cc, "max-age=5"), want: lo},
		{name: "max-age above max", header: h(cc, "max-age=86400"), want: hi},
		{
			name:   "max-age huge",
			header: h(cc, "max-age=99999999999999"),
			want:   hi,
		},
		{name: "max-age negative", header: h(cc, "max-age=-5"), want: lo},
		{name: "max-age not a number", header: h(cc, "max-age=abc"), want: lo},
		{
			name:   "private",
			header: h(cc, "private, max-age=600"),
			want:   10 * time.Minute,
		},
		{
			// The server is a private cache: s-maxage is not for it.
			name:   "s-maxage ignored",
			header: h(cc, "s-maxage=600"),
			want:   lo,
		},
		{
			name:   "s-maxage does not override max-age",
			header: h(cc, "s-maxage=3000, max-age=120"),
			want:   2 * time.Minute,
		},
		{name: "no-store", header: h(cc, "no-store, max-age=600"), want: lo},
		{name: "no-cache", header: h(cc, "no-cache, max-age=600"), want: lo},
		{
			name:   "qualified no-cache",
			header: h(cc, `no-cache="Set-Cookie", max-age=600`),
			want:   lo,
		},
		{
			name:   "no-store on a second line",
			header: h(cc, "max-age=600", cc, "no-store"),
			want:   lo,
		},
		{
			name:   "max-age on a second line",
			header: h(cc, "public", cc, "max-age=600"),
			want:   10 * time.Minute,
		},
		{name: "Pragma alone ignored", header: h("Pragma", "no-cache"), want: lo},
		{
			name:   "request no-store",
			header: h(cc, "max-age=600"),
			reqHdr: h(cc, "no-store"),
			want:   lo,
		},
		{
			// The library follows RFC 9111 section 3.5.
			name:   "request with Authorization",
			header: h(cc, "max-age=600"),
			reqHdr: h("Authorization", "Bearer x"),
			want:   lo,
		},
		{
			name:   "no request",
			header: h(cc, "max-age=600"),
			noReq:  true,
			want:   10 * time.Minute,
		},
		{
			name:   "status not cacheable by default, with max-age",
			header: h(cc, "max-age=600"),
			status: http.StatusCreated,
			want:   10 * time.Minute,
		},

		{
			name:   "Expires",
			header: h("Expires", at(20*time.Minute)),
			want:   20 * time.Minute,
		},
		{
			name:   "Expires with Date now",
			header: h("Expires", at(20*time.Minute), "Date", at(0)),
			want:   20 * time.Minute,
		},
		{
			name: "Expires with Date in the past",
			header: h("Expires", at(20*time.Minute),
				"Date", at(-5*time.Minute)),
			want: 20 * time.Minute,
		},
		{
			// The origin's clock runs an hour ahead: Expires counts
			// from its Date, not from ours.
			name: "Expires with Date in the future",
			header: h("Expires", at(80*time.Minute),
				"Date", at(time.Hour)),
			want: 20 * time.Minute,
		},
		{
			name:   "Expires in the past",
			header: h("Expires", at(-time.Hour)),
			want:   lo,
		},
		{
			// "0" is expired, not absent: no heuristic from
			// Last-Modified.
			name:   "Expires zero",
			header: h("Expires", "0", "Last-Modified", at(-240*time.Hour)),
			want:   lo,
		},
		{
			name:   "Expires above max",
			header: h("Expires", at(48*time.Hour)),
			want:   hi,
		},
		{
			name:   "max-age wins over Expires",
			header: h(cc, "max-age=300", "Expires", at(2*time.Hour)),
			want:   5 * time.Minute,
		},
		{
			name:   "max-age wins over an Expires in the past",
			header: h(cc, "max-age=300", "Expires", at(-time.Hour)),
			want:   5 * time.Minute,
		},

		{
			name:   "Age",
			header: h(cc, "max-age=600", "Age", "400"),
			want:   200 * time.Second,
		},
		{
			name:   "Age beyond max-age",
			header: h(cc, "max-age=600", "Age", "700"),
			want:   lo,
		},
		{
			name:   "Age huge",
			header: h(cc, "max-age=600", "Age", "99999999999999999999999"),
			want:   lo,
		},
		{
			name:   "Age not a number",
			header: h(cc, "max-age=600", "Age", "soon"),
			want:   10 * time.Minute,
		},
		{
			name:   "Date in the past ages max-age",
			header: h(cc, "max-age=600", "Date", at(-4*time.Minute)),
			want:   6 * time.Minute,
		},
		{
			name:   "Date in the future does not extend max-age",
			header: h(cc, "max-age=600", "Date", at(time.Hour)),
			want:   10 * time.Minute,
		},
		{
			name:   "Date not a date",
			header: h(cc, "max-age=600", "Date", "yesterday"),
			want:   10 * time.Minute,
		},
		{
			name: "Age greater than time since Date",
			header: h(cc, "max-age=600", "Date", at(-time.Minute),
				"Age", "300"),
			want: 5 * time.Minute,
		},

		{
			name:   "Last-Modified heuristic",
			header: h("Last-Modified", at(-5*time.Hour)),
			want:   30 * time.Minute,
		},
		{
			name:   "Last-Modified heuristic above max",
			header: h("Last-Modified", at(-100*time.Hour)),
			want:   hi,
		},
		{
			name:   "Last-Modified heuristic at most a day",
			header: h("Last-Modified", at(-1000*time.Hour)),
			max:    48 * time.Hour,
			want:   24 * time.Hour,
		},
		{
			name:   "Last-Modified not a date",
			header: h("Last-Modified", "long ago"),
			want:   lo,
		},
		{
			name:   "max-age wins over Last-Modified",
			header: h("Last-Modified", at(-100*time.Hour), cc, "max-age=120"),
			want:   2 * time.Minute,
		},

		{
			name:   "max below min wins",
			header: h(cc, "no-store"),
			min:    2 * time.Hour,
			want:   hi,
		},
		{
			name:   "max below min wins over max-age",
			header: h(cc, "max-age=86400"),
			min:    2 * time.Hour,
			want:   hi,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status := tc.status
			if status == 0 {
				status = http.StatusOK
			}
			resp := &http.Response{StatusCode: status, Header: tc.header}
			if !tc.noReq {
				reqHdr := tc.reqHdr
				if reqHdr == nil {
					reqHdr = http.Header{}
				}
				resp.Request = &http.Request{Method: http.MethodGet,
					Header: reqHdr}
			}
			minTTL, maxTTL := lo, hi
			if tc.min != 0 {
				minTTL = tc.min
			}
			if tc.max != 0 {
				maxTTL = tc.max
			}
			if got := cimdTTL(resp, now, minTTL, maxTTL); got != tc.want {
				t.Errorf("cimdTTL = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestCIMDTTLNilResponse checks that a missing response means minTTL,
// and that a request without a method counts as a GET, as in a client's
// request.
func TestCIMDTTLNilResponse(t *testing.T) {
	now := time.Now()
	if got := cimdTTL(nil, now, time.Minute, time.Hour); got != time.Minute {
		t.Errorf("nil response: %v, want 1m0s", got)
	}
	resp := &http.Response{
		StatusCode: http.StatusOK,
		Header:     http.Header{"Cache-Control": {"max-age=600"}},
		Request:    &http.Request{},
	}
	if got := cimdTTL(resp, now, time.Minute, time.Hour); got != 10*time.Minute {
		t.Errorf("request without method: %v, want 10m0s", got)
	}
}
