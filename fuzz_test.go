package dcr

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

// FuzzDecodeMetadata checks that decodeMetadata never panics, refuses with
// a well-formed 400, and that what it accepts survives a round trip: the
// metadata encoded as JSON, as the server stores and answers it, decodes
// to the same metadata.
func FuzzDecodeMetadata(f *testing.F) {
	for _, seed := range []string{
		`{}`,
		`{"redirect_uris":["https://app.example/cb"],"client_name":"Demo"}`,
		`{"redirect_uris":["http://127.0.0.1:3000/cb"],` +
			`"token_endpoint_auth_method":"none",` +
			`"grant_types":["authorization_code","refresh_token"],` +
			`"response_types":["code"],"scope":"openid profile",` +
			`"contacts":["ops@app.example"],"logo_uri":"https://a/l.png",` +
			`"client_uri":"https://a/","tos_uri":"https://a/t",` +
			`"policy_uri":"https://a/p","software_id":"x",` +
			`"software_version":"1"}`,
		`{"jwks":{"keys":[{"kty":"EC","crv":"P-256","x":"AQ","y":"AQ"}]}}`,
		`{"jwks":{"keys":[{"n":"<\u2028>"}]}}`,
		`{"jwks_uri":"https://a/jwks","client_name#ja-Jpan-JP":"デモ"}`,
		`{"client_name#en":"","client_uri#fr":"https://a/fr"}`,
		`{"redirect_uris":[],"contacts":[],"grant_types":[]}`,
		`{"client_name":null,"jwks":null,"redirect_uris":null}`,
		`{"client_id":"x","client_secret":"y","x_extra":[1,{"a":null}]}`,
		`{"client_name":"a\u0000b\ud800<>&"}`,
		`{"client_name":"a","client_name":"b"}`,
		`{"client_name#":"a"}`,
		`{"client_name":1}`,
		`{"redirect_uris":"https://a/cb"}`,
		`{"redirect_uris":["a",1]}`,
		`{"jwks":[]}`,
		`{} {}`,
		`[]`,
		`null`,
		`"x"`,
		"{\"client_name\":\"\xff\"}",
		`{"a":`,
		``,
	} {
		f.Add([]byte(seed))
	}

	f.Fuzz(func(t *testing.T, body []byte) {
		m, perr := decodeMetadata(body)
		if perr != nil {
			if m != nil {
				t.Fatalf("metadata %+v returned with error %v", m, perr)
			}
			if perr.Code != codeInvalidClientMetadata ||
				perr.Status != http.StatusBadRequest ||
				perr.Rule == "" || perr.Description == "" {
				t.Fatalf("malformed error %#v", perr)
			}
			return
		}

		enc, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("encoding %#v: %v", m, err)
		}
		again, perr := decodeMetadata(enc)
		if perr != nil {
			t.Fatalf("decoding own encoding %s: %v", enc, perr)
		}
		if !sameMetadata(m, again) {
			t.Fatalf("round trip changed the metadata\nbody  %q\nfirst %#v\n"+
				"json  %s\nagain %#v", body, m, enc, again)
		}

		// The same JSON is what clientdb stores and its readers decode.
		var stored clientdb.Metadata
		if err := json.Unmarshal(enc, &stored); err != nil {
			t.Fatalf("clientdb decoding %s: %v", enc, err)
		}
		if !sameMetadata(m, &stored) {
			t.Fatalf("store round trip changed the metadata\nbody   %q\n"+
				"first  %#v\njson   %s\nstored %#v", body, m, enc, &stored)
		}
	})
}

// FuzzRedirectURI checks that checkRedirectURI never panics, refuses with
// a well-formed 400, and that every URI it accepts is one a browser can
// only send to the client: an absolute URI of printable ASCII without a
// fragment, whose scheme runs no code, and which under require_https is
// http only on a loopback host.
func FuzzRedirectURI(f *testing.F) {
	for _, seed := range []string{
		"https://app.example/cb",
		"https://app.example:8443/cb?x=1&y=%20",
		"http://127.0.0.1:3000/callback",
		"http://[::1]:8080/cb",
		"http://[::ffff:127.0.0.1]/cb",
		"http://[::1%25lo]/cb",
		"http://localhost/cb",
		"http://LocalHost./cb",
		"http://127.1/cb",
		"http://0x7f000001/cb",
		"http://2130706433/cb",
		"http://app.example/cb",
		"http://localhost@app.example/cb",
		"http://app.example\\@127.0.0.1/cb",
		"http://127.0.0.1\\.app.example/cb",
		"http://127.0.0.1%2eapp.example/cb",
		"http:/\\app.example/cb",
		"http:127.0.0.1/cb",
		"https:app.example",
		"https:///cb",
		"com.example.app:/oauth2redirect",
		"com.example.app://cb",
		"myapp://cb",
		"MyApp:cb",
		"javascript:alert(1)",
		"JAVASCRIPT://%0aalert(1)",
		"java\tscript:alert(1)",
		"data:text/html,<script>",
		"vbscript:x",
		"file:///etc/passwd",
		"blob:https://a/x",
		"https://app.example/cb#",
		"https://app.example/cb%23x",
		"https://u:p@app.example/cb",
		"//app.example/cb",
		"/cb",
		"",
		"https://exämple.com/cb",
		"https://app.example/\x00",
	} {
		f.Add(seed)
	}

	// The last policy lists the forbidden schemes, which Validate
	// refuses, to check that they stay forbidden regardless.
	policies := []*policy{
		{requireHTTPS: true, redirectSchemes: []string{"myapp"}},
		{requireHTTPS: false, redirectSchemes: []string{"myapp"}},
		{requireHTTPS: true, redirectSchemes: []string{
			"myapp", "javascript", "data", "vbscript", "file", "blob",
		}},
	}
	f.Fuzz(func(t *testing.T, raw string) {
		for _, p := range policies {
			perr := p.checkRedirectURI(raw)
			if perr != nil {
				if perr.Code != codeInvalidRedirectURI ||
					perr.Status != http.StatusBadRequest ||
					perr.Rule == "" {
					t.Fatalf("malformed error %#v", perr)
				}
				// The description quotes at most a prefix of the URI.
				if len(perr.Description) > 400 {
					t.Fatalf("description of %d bytes", len(perr.Description))
				}
				continue
			}
			checkAcceptedRedirect(t, raw, p)
		}
	})
}

// checkAcceptedRedirect fails the test unless raw, accepted under p, has
// the properties every accepted redirect URI must have. It decides them
// without the code under test, from the bytes and from net/netip.
func checkAcceptedRedirect(t *testing.T, raw string, p *policy) {
	t.Helper()
	for i := 0; i < len(raw); i++ {
		if raw[i] < 0x21 || raw[i] > 0x7e {
			t.Fatalf("accepted %q with byte %#x", raw, raw[i])
		}
	}
	if strings.Contains(raw, "#") {
		t.Fatalf("accepted %q with a fragment", raw)
	}

	// The scheme as RFC 3986 reads it: everything before the first ':',
	// which must not also hold a '/', '?' or '#'.
	scheme, _, ok := strings.Cut(raw, ":")
	if !ok || scheme == "" || strings.ContainsAny(scheme, "/?") {
		t.Fatalf("accepted %q without a scheme", raw)
	}
	scheme = strings.ToLower(scheme)
	if slices.Contains([]string{
		"javascript", "data", "vbscript", "file", "blob",
	}, scheme) {
		t.Fatalf("accepted %q with scheme %s", raw, scheme)
	}

	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("accepted %q, which does not parse: %v", raw, err)
	}
	if u.Scheme != scheme {
		t.Fatalf("accepted %q: scheme %q, parsed as %q", raw, scheme, u.Scheme)
	}
	if u.User != nil {
		t.Fatalf("accepted %q with user information", raw)
	}
	switch scheme {
	case "http", "https":
		if u.Hostname() == "" {
			t.Fatalf("accepted %q without a host", raw)
		}
	default:
		if !strings.Contains(scheme, ".") &&
			!slices.Contains(p.redirectSchemes, scheme) {
			t.Fatalf("accepted %q with private-use scheme %s", raw, scheme)
		}
	}
	if p.requireHTTPS && scheme == "http" && !loopbackHost(u.Hostname()) {
		t.Fatalf("accepted %q under require_https: host %q is not loopback",
			raw, u.Hostname())
	}
}

// loopbackHost reports whether host is "localhost" or a loopback address
// without a zone.
func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Zone() == "" && ip.IsLoopback()
}

// FuzzSplitObject holds the hand-written member splitter to encoding/json:
// whatever it accepts, encoding/json reads as an object with the same
// members and values; what it refuses as malformed, encoding/json refuses
// too.
func FuzzSplitObject(f *testing.F) {
	for _, seed := range []string{
		`{}`, ` { "a" : 1 , "b":[1,{"c":"]}"}] } `, `{"a\"b":"x\\"}`,
		`{"\u0061":1}`, `{"a":1,"a":2}`, `{"a":"\ud800"}`, `[1]`, `{"a":}`,
		`{"a":true,"b":false,"c":null,"d":-1.5e3}`, "{\"a\":\"\xff\"}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		members, perr := splitObject(body)
		if perr != nil {
			switch perr.Rule {
			case "json_syntax":
				if json.Valid(body) {
					t.Fatalf("valid JSON %q refused as malformed", body)
				}
			case "json_object":
				var obj map[string]json.RawMessage
				if json.Valid(body) && json.Unmarshal(body, &obj) == nil && obj != nil {
					t.Fatalf("object %q refused as not an object", body)
				}
			}
			return
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
			t.Fatalf("accepted %q, which encoding/json reads as no object: %v", body, err)
		}
		if len(obj) != len(members) {
			t.Fatalf("%q: %d members, encoding/json sees %d", body, len(members), len(obj))
		}
		for _, m := range members {
			want, ok := obj[m.name]
			if !ok {
				t.Fatalf("%q: member %q unknown to encoding/json", body, m.name)
			}
			var a, b bytes.Buffer
			if json.Compact(&a, m.value) != nil || json.Compact(&b, want) != nil ||
				!bytes.Equal(a.Bytes(), b.Bytes()) {
				t.Fatalf("%q: member %q is %q, encoding/json says %q",
					body, m.name, m.value, want)
			}
		}
	})
}
