package dcr

import (
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// The assertion suite sends private_key_jwt token requests through the
// fronting harness: a real Caddy with the dcr handler enforcing the
// backend stand-in's token endpoint, clients registered over HTTP, and
// assertions signed with keys generated in the test.

// itAsnAudience is the token endpoint URL the front serves.
const itAsnAudience = itSite + "/oauth/token"

// itAsnFront starts a front that accepts private_key_jwt clients and
// enforces the token endpoint, with fetch's lines in a fetch block.
func itAsnFront(t *testing.T, b *itBackend, fetch ...string) *itFront {
	t.Helper()
	dcr := append([]string{"auth_methods private_key_jwt client_secret_basic none"},
		itEnforce()...)
	if len(fetch) > 0 {
		dcr = append(dcr, "fetch {\n\t\t\t"+strings.Join(fetch, "\n\t\t\t")+"\n\t\t}")
	}
	return startFront(t, b, itFrontConfig{dcr: dcr})
}

// itAsnBody registers a private_key_jwt client named name whose keys are
// the JSON member keys.
func itAsnBody(name, keys string) string {
	return `{"redirect_uris":["https://app.example.com/cb"],"client_name":"` + name +
		`","token_endpoint_auth_method":"private_key_jwt",` +
		`"grant_types":["authorization_code","refresh_token"],` + keys + `}`
}

// itAsnClaims returns the claims of a valid assertion of client id for
// the front's token endpoint at now.
func itAsnClaims(id string, now time.Time) jwt.Claims {
	c := asnClaims(id, now)
	c.Audience = jwt.Audience{itAsnAudience}
	return c
}

// itAsnForm returns a token request of client id authenticated by the
// assertion raw, with the name-value pairs kv replacing or adding to its
// parameters; a value "-" leaves the parameter out.
func itAsnForm(id, raw string, kv ...string) string {
	pairs := []string{"grant_type", "authorization_code", "code", "c1",
		"client_id", id, "client_assertion_type", assertionType,
		"client_assertion", raw}
	for i := 0; i+1 < len(kv); i += 2 {
		if j := slices.Index(pairs, kv[i]); j >= 0 && j%2 == 0 {
			pairs[j+1] = kv[i+1]
		} else {
			pairs = append(pairs, kv[i], kv[i+1])
		}
	}
	var out []string
	for i := 0; i < len(pairs); i += 2 {
		if pairs[i+1] != "-" {
			out = append(out, pairs[i], pairs[i+1])
		}
	}
	return itForm(out...)
}

func TestIntegrationAssertionJWKS(t *testing.T) {
	clock := itUseClock(t)
	b := newBackend(t)
	f := itAsnFront(t, b)

	ec := stmtKeyOf(jose.ES256)
	impostor := stmtNewKey(jose.ES256, ec.kid)
	c := f.registerManaged(t, itAsnBody("Key App", `"jwks":`+string(stmtJWKS(ec))))
	other := f.registerManaged(t, itAsnBody("Other Key App",
		`"jwks":`+string(stmtJWKS(ec))))
	id := c.identity("confidential")

	// signed returns an assertion of c signed with k, its claims changed
	// by change.
	signed := func(k stmtKey, change func(*jwt.Claims)) string {
		cl := itAsnClaims(c.id, clock.now())
		if change != nil {
			change(&cl)
		}
		return asnSign(t, k, k.kid, cl)
	}
	valid := signed(ec, nil)
	var sent []string // every assertion, to look for in the log
	refused := func(name, form, desc string, headers ...string) itTokenCase {
		return itTokenCase{name: name, form: form, headers: headers,
			status: http.StatusUnauthorized, code: codeInvalidClient, desc: desc,
			basic: len(headers) > 0}
	}

	tests := []itTokenCase{
		{name: "signed assertion", form: itAsnForm(c.id, valid), want: id},
		refused("replay", itAsnForm(c.id, valid), "the assertion was used before"),
		{name: "aud is the base URL", want: id, form: itAsnForm(c.id,
			signed(ec, func(cl *jwt.Claims) { cl.Audience = jwt.Audience{itSite} }))},
		refused("wrong key", itAsnForm(c.id, signed(impostor, nil)),
			"client authentication failed: the signature does not verify"),
		refused("expired", itAsnForm(c.id, signed(ec, func(cl *jwt.Claims) {
			cl.Expiry = jwt.NewNumericDate(clock.now().Add(-2 * time.Minute))
		})), "times are not valid"),
		refused("aud another server", itAsnForm(c.id, signed(ec, func(cl *jwt.Claims) {
			cl.Audience = jwt.Audience{"https://other.example/oauth/token"}
		})), "times are not valid"),
		refused("iss another client", itAsnForm(c.id, signed(ec, func(cl *jwt.Claims) {
			cl.Issuer = other.id
		})), "iss, sub"),
		refused("sub another client", itAsnForm(c.id, signed(ec, func(cl *jwt.Claims) {
			cl.Subject = other.id
		})), "iss, sub"),
		// Another client's valid assertion, sent under this client's ID:
		// the keys are the same, so only iss and sub tell them apart.
		refused("another client's assertion", itAsnForm(c.id,
			asnSign(t, ec, ec.kid, itAsnClaims(other.id, clock.now()))), "iss, sub"),
		refused("alg none", itAsnForm(c.id,
			asnUnsigned(t, itAsnClaims(c.id, clock.now()))), "accepted algorithm"),
		refused("alg HS256", itAsnForm(c.id, asnHMAC(t, ec.kid,
			itAsnClaims(c.id, clock.now()), stmtJWKS(ec))), "accepted algorithm"),
		refused("assertion type wrong", itAsnForm(c.id, signed(ec, nil),
			"client_assertion_type", "x"), "client_assertion_type"),
		refused("no assertion", itAsnForm(c.id, "-", "client_assertion_type", "-"),
			"client_assertion_type"),
		refused("Basic alongside", itAsnForm(c.id, signed(ec, nil)),
			"must authenticate with private_key_jwt", itBasic(c.id, "s")),
		refused("client_secret alongside", itAsnForm(c.id, signed(ec, nil),
			"client_secret", "s"), "must authenticate with private_key_jwt"),
		{name: "grant type not registered", form: itAsnForm(c.id, signed(ec, nil),
			"grant_type", "client_credentials"), status: http.StatusBadRequest,
			code: codeUnauthorizedClient, desc: "client_credentials"},
		{name: "other client, its own assertion", want: other.identity("confidential"),
			form: itAsnForm(other.id, asnSign(t, ec, ec.kid,
				itAsnClaims(other.id, clock.now())))},
	}
	for _, tc := range tests {
		sent = append(sent, tc.form)
		t.Run(tc.name, func(t *testing.T) { tc.run(t, f) })
	}

	// Without a client_id the client is the one the assertion names as
	// its issuer (RFC 7523 section 3), checked like any other.
	t.Run("no client_id, impostor", func(t *testing.T) {
		form := itAsnForm("", signed(impostor, nil), "client_id", "-")
		itTokenCase{name: "no client_id, impostor", form: form,
			status: http.StatusUnauthorized, code: codeInvalidClient,
			desc: "signature"}.run(t, f)
	})
	t.Run("no client_id, the client's own", func(t *testing.T) {
		form := itAsnForm("", signed(ec, nil), "client_id", "-")
		sent = append(sent, form)
		itTokenCase{name: "no client_id, the client's own", form: form,
			want: c.identity("confidential")}.run(t, f)
	})

	raw, err := os.ReadFile(f.logFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, form := range sent {
		_, a, _ := strings.Cut(form, "client_assertion=")
		a, _, _ = strings.Cut(a, "&")
		if len(a) > 40 && strings.Contains(string(raw), a[len(a)-40:]) {
			t.Errorf("log contains an assertion's signature")
		}
	}
}

func TestIntegrationAssertionJWKSURI(t *testing.T) {
	clock := itUseClock(t)
	old := stmtKeyOf(jose.ES256)
	rotated := stmtNewKey(jose.EdDSA, "ed-2")
	srv := newStmtJWKSServer(t, old)
	b := newBackend(t)
	f := itAsnFront(t, b, "allow_networks 127.0.0.1/32 ::1/128", "trusted_roots "+srv.pem)
	c := f.registerManaged(t, itAsnBody("URI App", `"jwks_uri":"`+srv.jwksURL()+`"`))
	if n := srv.hits.Load(); n != 0 {
		t.Fatalf("registration fetched the keys %d times", n)
	}

	try := func(name string, k stmtKey, hits int64, accepted bool) {
		t.Helper()
		tc := itTokenCase{name: name,
			form: itAsnForm(c.id, asnSign(t, k, k.kid, itAsnClaims(c.id, clock.now())))}
		if accepted {
			tc.want = c.identity("confidential")
		} else {
			tc.status, tc.code = http.StatusUnauthorized, codeInvalidClient
			tc.desc = "signature does not verify"
		}
		t.Run(name, func(t *testing.T) { tc.run(t, f) })
		if got := srv.hits.Load(); got != hits {
			t.Errorf("%s: %d fetches, want %d", name, got, hits)
		}
	}

	try("first use fetches", old, 1, true)
	try("cached", old, 1, true)

	// Rotation: the new kid is fetched for once a minute has passed.
	srv.publish(http.StatusOK, stmtJWKS(rotated))
	try("new kid at once", rotated, 1, false)
	clock.advance(2 * time.Minute)
	try("new kid after a minute", rotated, 2, true)
	try("old kid after rotation", old, 2, false)

	// Past the cache's lifetime the keys are fetched again.
	clock.advance(clientKeysTTL)
	try("after the TTL", rotated, 3, true)
}

func TestIntegrationAssertionJWKSURINotAllowed(t *testing.T) {
	k := stmtKeyOf(jose.ES256)
	srv := newStmtJWKSServer(t, k)
	b := newBackend(t)
	// The server's certificate is trusted but its loopback address is
	// not allowed: the key set must not be fetched.
	f := itAsnFront(t, b, "trusted_roots "+srv.pem)
	c := f.registerManaged(t, itAsnBody("URI App", `"jwks_uri":"`+srv.jwksURL()+`"`))

	itTokenCase{name: "loopback refused", form: itAsnForm(c.id,
		asnSign(t, k, k.kid, itAsnClaims(c.id, time.Now()))),
		status: http.StatusUnauthorized, code: codeInvalidClient,
		desc: "the client's keys could not be read"}.run(t, f)
	if n := srv.hits.Load(); n != 0 {
		t.Errorf("the server was reached %d times", n)
	}
}
