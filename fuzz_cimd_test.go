package dcr

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// FuzzCIMDURL checks that cimdURLProblem never panics and that what it
// accepts is what the draft calls a Client Identifier URL as net/url, and
// so the fetcher, reads it: https, a host, no userinfo, no fragment, a
// path other than "/" without dot segments once unescaped.
func FuzzCIMDURL(f *testing.F) {
	for _, seed := range []string{
		"https://app.example/client",
		"https://app.example:8443/oauth/client.json?v=2",
		"https://[2001:db8::1]/client",
		"https://192.0.2.1/c",
		"https://app.example/caf%C3%A9",
		"https://app.example/a%2Fb",
		"https://app.example/a;b=c",
		"https://app.example/client?",
		"https://app.example",
		"https://app.example/",
		"https://app.example/client#",
		"https://app.example/client#frag",
		"https://user:pass@app.example/client",
		"https://@app.example/client",
		"https://app.example/a/../b",
		"https://app.example/a/%2e%2E/b",
		"https://app.example/a%2F..%2Fb",
		"https://app.example/..;/b",
		"https://app.example:/c",
		"https://app.example:99999/c",
		"https://[fe80::1%25eth0]/c",
		"https://[::1/c",
		"https:///c",
		"HTTPS://app.example/client",
		"http://app.example/client",
		"https://app.example/a%zz",
		"https://app.example/a b",
		"https://bücher.example/c",
		"https://app.example/c\x00",
		"",
	} {
		f.Add(seed)
	}

	f.Fuzz(func(t *testing.T, raw string) {
		problem := cimdURLProblem(raw)
		if again := cimdURLProblem(raw); again != problem {
			t.Fatalf("%q: %q, then %q", raw, problem, again)
		}
		if problem != "" {
			return
		}

		if !looksLikeCIMD(raw) || len(raw) > maxCIMDLength {
			t.Fatalf("%q accepted but not routed as a document URL", raw)
		}
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatalf("%q accepted but url.Parse fails: %v", raw, err)
		}
		switch {
		case u.Scheme != "https":
			t.Fatalf("%q accepted with scheme %q", raw, u.Scheme)
		case u.Hostname() == "":
			t.Fatalf("%q accepted without a host", raw)
		case u.User != nil:
			t.Fatalf("%q accepted with user information", raw)
		case u.Fragment != "" || u.RawFragment != "" || strings.Contains(raw, "#"):
			t.Fatalf("%q accepted with a fragment", raw)
		case u.Opaque != "":
			t.Fatalf("%q accepted as an opaque URL", raw)
		case u.Path == "" || u.Path == "/":
			t.Fatalf("%q accepted with path %q", raw, u.Path)
		}
		for seg := range strings.SplitSeq(u.Path, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("%q accepted with dot segment in %q", raw, u.Path)
			}
		}
		if p := u.Port(); p != "" && !validPort(p) {
			t.Fatalf("%q accepted with port %q", raw, p)
		}
	})
}

// FuzzCIMDDocument checks that parseCIMDDocument never panics, refuses
// with a well-formed 400, and that a document it accepts names the URL
// it came from, has a redirect URI, and neither a secret nor private key
// material: as the checks read it, and as encoding/json does.
func FuzzCIMDDocument(f *testing.F) {
	const id = "https://app.example/client"
	for _, seed := range []string{
		`{"client_id":"https://app.example/client",` +
			`"redirect_uris":["https://app.example/cb"]}`,
		`{"client_id":"https://app.example/client",` +
			`"redirect_uris":["https://app.example/cb"],` +
			`"token_endpoint_auth_method":"private_key_jwt",` +
			`"jwks":{"keys":[{"kty":"EC","crv":"P-256","x":"AQ","y":"AQ"}]}}`,
		`{"client_id":"https://app.example/client",` +
			`"redirect_uris":["https://app.example/cb"],` +
			`"jwks":{"keys":[{"kty":"oct","k":"AQ"}]}}`,
		`{"client_id":"https://app.example/client",` +
			`"redirect_uris":["https://app.example/cb"],` +
			`"jwks":{"keys":[{"kty":"oct","k":"AQ"}],"Keys":[]}}`,
		`{"client_id":"https://app.example/client",` +
			`"redirect_uris":["https://app.example/cb"],` +
			`"jwks":{"keys":[{"d":"AQ"}],"keys":[]}}`,
		`{"client_id":"https://app.example/client",` +
			`"redirect_uris":["https://app.example/cb"],` +
			`"token_endpoint_auth_method":"client_secret_basic"}`,
		`{"client_id":"https://app.example/client",` +
			`"redirect_uris":["https://app.example/cb"],"client_secret":"x"}`,
		`{"client_id":"https://app.example/client",` +
			`"redirect_uris":["https://app.example/cb"],` +
			`"client_secret_expires_at":0}`,
		`{"client_id":"https://app.example/client","redirect_uris":[]}`,
		`{"client_id":"https:\/\/app.example\/client","redirect_uris":["x"]}`,
		`{"client_id":"https://other.example/client","redirect_uris":["x"]}`,
		`{"client_id":1,"redirect_uris":["x"]}`,
		`{"redirect_uris":["x"]}`,
		`{"client_id":"https://app.example/client","jwks":{"keys":"x"}}`,
		`{}`,
		`[]`,
		``,
	} {
		f.Add([]byte(seed), id)
	}
	f.Add([]byte(`{"client_id":"","redirect_uris":["x"]}`), "")

	f.Fuzz(func(t *testing.T, body []byte, clientID string) {
		m, perr := parseCIMDDocument(body, clientID)
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

		if slices.Contains(secretMethods, m.TokenEndpointAuthMethod) ||
			m.TokenEndpointAuthMethod == "" {
			t.Fatalf("accepted with token_endpoint_auth_method %q",
				m.TokenEndpointAuthMethod)
		}
		if len(m.RedirectURIs) == 0 {
			t.Fatalf("accepted without redirect_uris: %q", body)
		}

		// What encoding/json makes of the same body must agree.
		var doc map[string]json.RawMessage
		if err := json.Unmarshal(body, &doc); err != nil {
			t.Fatalf("accepted %q, which encoding/json refuses: %v", body, err)
		}
		var got string
		err := json.Unmarshal(doc["client_id"], &got)
		if err != nil || got != clientID {
			t.Fatalf("accepted client_id %s for %q", doc["client_id"], clientID)
		}
		for _, name := range append([]string{"client_secret"}, issuedMembers...) {
			if _, ok := doc[name]; ok {
				t.Fatalf("accepted with %s: %q", name, body)
			}
		}
		checkNoPrivateKeys(t, m.JWKS)
	})
}

// checkNoPrivateKeys fails when encoding/json finds private or symmetric
// key material in jwks under any spelling of "keys" it would match.
func checkNoPrivateKeys(t *testing.T, jwks json.RawMessage) {
	t.Helper()
	if jwks == nil {
		return
	}
	var set map[string]json.RawMessage
	if err := json.Unmarshal(jwks, &set); err != nil {
		t.Fatalf("accepted jwks %s, which is not an object: %v", jwks, err)
	}
	for name, raw := range set {
		if !strings.EqualFold(name, "keys") {
			continue
		}
		var keys []map[string]json.RawMessage
		if err := json.Unmarshal(raw, &keys); err != nil {
			t.Fatalf("accepted jwks keys %s: %v", raw, err)
		}
		for _, key := range keys {
			for member := range key {
				for _, private := range privateKeyMembers {
					if strings.EqualFold(member, private) {
						t.Fatalf("accepted jwks %s with private member %q",
							jwks, member)
					}
				}
			}
		}
	}
}
