package dcr

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

// The assertion tests sign real client assertions with keys generated in
// the test binary (the statement tests' shared RSA, P-256 and Ed25519
// keys, since RSA generation is slow under the race detector) and pass
// them to assertionChecker.check with the time given explicitly, so that
// expiry, replay and key caching are tested without waiting.

// asnEndpoint is the token endpoint the unit tests' assertions name.
const asnEndpoint = "https://as.example/oauth/token"

// asnAudiences are the audiences the unit tests accept.
var asnAudiences = []string{asnEndpoint, "https://as.example", "https://as.example/"}

// asnClaims returns the claims of a valid assertion of client id at now.
func asnClaims(id string, now time.Time) jwt.Claims {
	return jwt.Claims{
		Issuer:   id,
		Subject:  id,
		Audience: jwt.Audience{asnEndpoint},
		Expiry:   jwt.NewNumericDate(now.Add(2 * time.Minute)),
		IssuedAt: jwt.NewNumericDate(now),
		ID:       fmt.Sprintf("jti-%d", asnJTI.Add(1)),
	}
}

// asnJTI numbers the assertion IDs of this test binary.
var asnJTI atomic.Int64

// asnSigner returns a signer with k's key and algorithm, naming kid in
// the header unless it is empty.
func asnSigner(t testing.TB, k stmtKey, kid string) jose.Signer {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader(jose.HeaderKey("kid"), kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: k.priv}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// asnSign returns claims signed with k as a compact JWS; extra claims,
// if any, are merged in.
func asnSign(t testing.TB, k stmtKey, kid string, claims jwt.Claims,
	extra ...map[string]any) string {
	t.Helper()
	b := jwt.Signed(asnSigner(t, k, kid)).Claims(claims)
	for _, e := range extra {
		b = b.Claims(e)
	}
	raw, err := b.Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// asnUnsigned returns claims as a JWS with alg "none" and no signature.
func asnUnsigned(t testing.TB, claims jwt.Claims) string {
	t.Helper()
	header := stmtB64([]byte(`{"alg":"none","typ":"JWT"}`))
	return header + "." + stmtB64(must(json.Marshal(claims))) + "."
}

// asnHMAC returns claims signed with HS256, keyed with secret.
func asnHMAC(t testing.TB, kid string, claims jwt.Claims, secret []byte) string {
	t.Helper()
	header := stmtB64([]byte(`{"alg":"HS256","kid":"` + kid + `","typ":"JWT"}`))
	input := header + "." + stmtB64(must(json.Marshal(claims)))
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(input))
	return input + "." + stmtB64(mac.Sum(nil))
}

// asnClient returns a private_key_jwt client with the key set jwks.
func asnClient(id string, jwks []byte) *clientdb.Client {
	c := &clientdb.Client{ID: id, IssuedAt: stmtNow.Unix()}
	c.Metadata.TokenEndpointAuthMethod = authPrivateKeyJWT
	c.Metadata.JWKS = jwks
	c.Metadata.GrantTypes = []string{grantAuthorizationCode}
	return c
}

// asnForm returns the form of a token request authenticated by raw.
func asnForm(raw string, kv ...string) url.Values {
	form := url.Values{
		"grant_type":            {grantAuthorizationCode},
		"code":                  {"c1"},
		"client_assertion_type": {assertionType},
		"client_assertion":      {raw},
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "-" {
			form.Del(kv[i])
		} else {
			form.Set(kv[i], kv[i+1])
		}
	}
	return form
}

// asnCheck runs check as the token endpoint at asnEndpoint would.
func asnCheck(a *assertionChecker, c *clientdb.Client, form url.Values,
	now time.Time) *protoError {
	r := httptest.NewRequest(http.MethodPost, asnEndpoint, nil)
	return a.check(context.Background(), r, c, form, asnAudiences, now)
}

// asnNoFetcher returns a checker whose fetcher must not be needed.
func asnNoFetcher(t testing.TB) *assertionChecker {
	t.Helper()
	f, err := (*FetchConfig)(nil).newFetcher()
	if err != nil {
		t.Fatal(err)
	}
	return newAssertionChecker(f)
}

// asnWantRefused checks that perr is the invalid_client refusal of a
// failed assertion whose description names desc.
func asnWantRefused(t *testing.T, perr *protoError, desc string) {
	t.Helper()
	switch {
	case perr == nil:
		t.Fatalf("accepted, want refused with %q", desc)
	case perr.Status != http.StatusUnauthorized || perr.Code != codeInvalidClient ||
		perr.Rule != "client_assertion":
		t.Errorf("refused with %d %s rule %s, want 401 invalid_client rule "+
			"client_assertion", perr.Status, perr.Code, perr.Rule)
	}
	const prefix = "client authentication failed: "
	if !strings.HasPrefix(perr.Description, prefix) ||
		!strings.Contains(perr.Description, desc) {
		t.Errorf("description %q, want %q and %q", perr.Description, prefix, desc)
	}
}

func TestAssertionCheckKeyTypes(t *testing.T) {
	for _, alg := range []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.EdDSA} {
		t.Run(string(alg), func(t *testing.T) {
			k := stmtKeyOf(alg)
			c := asnClient("c-"+string(alg), stmtJWKS(stmtKeys()...))
			raw := asnSign(t, k, k.kid, asnClaims(c.ID, stmtNow))
			if perr := asnCheck(asnNoFetcher(t), c, asnForm(raw), stmtNow); perr != nil {
				t.Fatalf("refused: %v", perr)
			}
		})
	}
}

func TestAssertionCheck(t *testing.T) {
	ec, rs, ed := stmtKeyOf(jose.ES256), stmtKeyOf(jose.RS256), stmtKeyOf(jose.EdDSA)
	// A stranger's key under the client's kid: the signature must not
	// verify although the header fits.
	impostor := stmtNewKey(jose.ES256, ec.kid)
	const id = "client-1"
	now := stmtNow

	claims := func(change func(*jwt.Claims)) jwt.Claims {
		c := asnClaims(id, now)
		if change != nil {
			change(&c)
		}
		return c
	}
	signed := func(change func(*jwt.Claims)) string {
		return asnSign(t, ec, ec.kid, claims(change))
	}
	// An assertion a little over the limit: a big claim pads it.
	oversize := asnSign(t, ec, ec.kid, claims(nil),
		map[string]any{"pad": strings.Repeat("x", maxAssertionLength)})
	// A payload that is signed but not a JSON object of claims.
	notJSON, err := asnSigner(t, ec, ec.kid).Sign([]byte("not json"))
	if err != nil {
		t.Fatal(err)
	}
	notJSONRaw, err := notJSON.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		client *clientdb.Client // default: registered keys ec, rs, ed
		form   url.Values
		desc   string // part of the refusal, or "" if accepted
	}{
		{name: "valid", form: asnForm(signed(nil))},
		{name: "no kid: every fitting key is tried",
			form: asnForm(asnSign(t, ed, "", claims(nil)))},
		{name: "aud is the base URL", form: asnForm(signed(func(c *jwt.Claims) {
			c.Audience = jwt.Audience{"https://as.example"}
		}))},
		{name: "aud is the base URL with a slash", form: asnForm(signed(func(c *jwt.Claims) {
			c.Audience = jwt.Audience{"https://as.example/"}
		}))},
		{name: "aud list names the endpoint among others",
			form: asnForm(signed(func(c *jwt.Claims) {
				c.Audience = jwt.Audience{"https://other.example", asnEndpoint}
			}))},
		{name: "client_id in the form", form: asnForm(signed(nil), "client_id", id)},
		{name: "exp within the leeway", form: asnForm(signed(func(c *jwt.Claims) {
			c.Expiry = jwt.NewNumericDate(now.Add(-59 * time.Second))
		}))},
		{name: "nbf within the leeway", form: asnForm(signed(func(c *jwt.Claims) {
			c.NotBefore = jwt.NewNumericDate(now.Add(59 * time.Second))
		}))},
		{name: "registered alg used",
			client: func() *clientdb.Client {
				c := asnClient(id, stmtJWKS(ec, rs, ed))
				c.Metadata.TokenEndpointAuthSigningAlg = "RS256"
				return c
			}(),
			form: asnForm(asnSign(t, rs, rs.kid, claims(nil)))},

		{name: "assertion type missing", desc: "client_assertion_type must be",
			form: asnForm(signed(nil), "client_assertion_type", "-")},
		{name: "assertion type wrong", desc: "client_assertion_type must be",
			form: asnForm(signed(nil), "client_assertion_type",
				"urn:ietf:params:oauth:client-assertion-type:saml2-bearer")},
		{name: "assertion missing", desc: "missing or too long",
			form: asnForm("", "client_assertion", "-")},
		{name: "assertion oversize", desc: "missing or too long", form: asnForm(oversize)},
		{name: "not a JWS", desc: "not a JWT signed with an accepted algorithm",
			form: asnForm("e30.e30.sig")},
		{name: "alg none", desc: "not a JWT signed with an accepted algorithm",
			form: asnForm(asnUnsigned(t, claims(nil)))},
		// The HMAC key is the client's published key, as an attacker who
		// read it would choose.
		{name: "alg HS256 keyed with the public key",
			desc: "not a JWT signed with an accepted algorithm",
			form: asnForm(asnHMAC(t, ec.kid, claims(nil), stmtJWKS(ec)))},
		{name: "alg other than the registered one",
			desc: "not a JWT signed with an accepted algorithm",
			client: func() *clientdb.Client {
				c := asnClient(id, stmtJWKS(ec, rs, ed))
				c.Metadata.TokenEndpointAuthSigningAlg = "RS256"
				return c
			}(),
			form: asnForm(signed(nil))},
		// Registration refuses HS256 for private_key_jwt; a record that
		// holds it anyway must still not turn a public key into a secret.
		{name: "registered alg HS256", desc: "signature does not verify",
			client: func() *clientdb.Client {
				c := asnClient(id, stmtJWKS(ec))
				c.Metadata.TokenEndpointAuthSigningAlg = "HS256"
				return c
			}(),
			form: asnForm(asnHMAC(t, ec.kid, claims(nil), stmtJWKS(ec)))},
		{name: "wrong key under the client's kid", desc: "signature does not verify",
			form: asnForm(asnSign(t, impostor, ec.kid, claims(nil)))},
		{name: "wrong key without kid", desc: "signature does not verify",
			form: asnForm(asnSign(t, impostor, "", claims(nil)))},
		{name: "unknown kid", desc: "signature does not verify",
			form: asnForm(asnSign(t, ec, "ec-9", claims(nil)))},
		{name: "client has no keys", desc: "keys could not be read",
			client: asnClient(id, nil), form: asnForm(signed(nil))},
		{name: "claims not JSON", desc: "claims are malformed", form: asnForm(notJSONRaw)},
		{name: "exp missing", desc: "must carry exp and jti",
			form: asnForm(signed(func(c *jwt.Claims) { c.Expiry = nil }))},
		{name: "jti missing", desc: "must carry exp and jti",
			form: asnForm(signed(func(c *jwt.Claims) { c.ID = "" }))},
		{name: "expired beyond the leeway", desc: "iss, sub, aud or times",
			form: asnForm(signed(func(c *jwt.Claims) {
				c.Expiry = jwt.NewNumericDate(now.Add(-61 * time.Second))
			}))},
		{name: "nbf beyond the leeway", desc: "iss, sub, aud or times",
			form: asnForm(signed(func(c *jwt.Claims) {
				c.NotBefore = jwt.NewNumericDate(now.Add(61 * time.Second))
			}))},
		{name: "iat in the future", desc: "iss, sub, aud or times",
			form: asnForm(signed(func(c *jwt.Claims) {
				c.IssuedAt = jwt.NewNumericDate(now.Add(10 * time.Minute))
			}))},
		{name: "iss another client", desc: "iss, sub, aud or times",
			form: asnForm(signed(func(c *jwt.Claims) { c.Issuer = "client-2" }))},
		{name: "sub another client", desc: "iss, sub, aud or times",
			form: asnForm(signed(func(c *jwt.Claims) { c.Subject = "client-2" }))},
		{name: "aud another server", desc: "iss, sub, aud or times",
			form: asnForm(signed(func(c *jwt.Claims) {
				c.Audience = jwt.Audience{"https://other.example/oauth/token"}
			}))},
		{name: "aud missing", desc: "iss, sub, aud or times",
			form: asnForm(signed(func(c *jwt.Claims) { c.Audience = nil }))},
		{name: "client_id another client", desc: "client_id differs",
			form: asnForm(signed(nil), "client_id", "client-2")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.client
			if c == nil {
				c = asnClient(id, stmtJWKS(ec, rs, ed))
			}
			perr := asnCheck(asnNoFetcher(t), c, tc.form, now)
			if tc.desc == "" {
				if perr != nil {
					t.Fatalf("refused: %v", perr)
				}
				return
			}
			asnWantRefused(t, perr, tc.desc)
		})
	}
}

func TestAssertionCheckOversizeLimit(t *testing.T) {
	// The limit is on the assertion's length: one byte more than the
	// limit is refused before any parsing, exactly the limit is not.
	a := asnNoFetcher(t)
	c := asnClient("client-1", stmtJWKS(stmtKeyOf(jose.ES256)))
	for _, n := range []int{maxAssertionLength, maxAssertionLength + 1} {
		perr := asnCheck(a, c, asnForm(strings.Repeat("a", n)), stmtNow)
		tooLong := perr != nil && strings.Contains(perr.Description, "too long")
		if tooLong != (n > maxAssertionLength) {
			t.Errorf("length %d: %v", n, perr)
		}
	}
}

func TestAssertionReplay(t *testing.T) {
	ec := stmtKeyOf(jose.ES256)
	a := asnNoFetcher(t)
	one := asnClient("client-1", stmtJWKS(ec))
	two := asnClient("client-2", stmtJWKS(ec))
	claims := asnClaims(one.ID, stmtNow)
	raw := asnSign(t, ec, ec.kid, claims)

	if perr := asnCheck(a, one, asnForm(raw), stmtNow); perr != nil {
		t.Fatalf("first use refused: %v", perr)
	}
	for _, later := range []time.Duration{0, time.Second, 2*time.Minute + 59*time.Second} {
		t.Run(fmt.Sprintf("again after %s", later), func(t *testing.T) {
			asnWantRefused(t, asnCheck(a, one, asnForm(raw), stmtNow.Add(later)),
				"used before")
		})
	}
	// Past exp and the leeway the assertion is refused as expired, so
	// forgetting its ID then opens no replay.
	t.Run("after exp and leeway", func(t *testing.T) {
		at := stmtNow.Add(3*time.Minute + time.Second)
		asnWantRefused(t, asnCheck(a, one, asnForm(raw), at), "times are not valid")
	})

	// IDs are the client's own: another client may use the same jti.
	t.Run("same jti, another client", func(t *testing.T) {
		other := claims
		other.Issuer, other.Subject = two.ID, two.ID
		raw := asnSign(t, ec, ec.kid, other)
		if perr := asnCheck(a, two, asnForm(raw), stmtNow); perr != nil {
			t.Fatalf("refused: %v", perr)
		}
	})

	// A refused assertion is not recorded: the client may send it again
	// once the cause is gone, here a client_id typo.
	t.Run("refused assertion not recorded", func(t *testing.T) {
		raw := asnSign(t, ec, ec.kid, asnClaims(one.ID, stmtNow))
		asnWantRefused(t, asnCheck(a, one, asnForm(raw, "client_id", "typo"), stmtNow),
			"client_id differs")
		if perr := asnCheck(a, one, asnForm(raw), stmtNow); perr != nil {
			t.Fatalf("refused after a refusal: %v", perr)
		}
	})
}

func TestAssertionReplayConcurrent(t *testing.T) {
	ec := stmtKeyOf(jose.ES256)
	a := asnNoFetcher(t)
	c := asnClient("client-1", stmtJWKS(ec))
	raw := asnSign(t, ec, ec.kid, asnClaims(c.ID, stmtNow))

	const n = 16
	var wg sync.WaitGroup
	var accepted atomic.Int64
	for range n {
		wg.Go(func() {
			if asnCheck(a, c, asnForm(raw), stmtNow) == nil {
				accepted.Add(1)
			}
		})
	}
	wg.Wait()
	if got := accepted.Load(); got != 1 {
		t.Errorf("%d of %d concurrent uses accepted, want 1", got, n)
	}
}

func TestAssertionFirstUse(t *testing.T) {
	now := stmtNow
	// fill makes the cache full of IDs recorded until until.
	fill := func(a *assertionChecker, until time.Time) {
		for i := range maxSeenAssertions {
			a.seen[fmt.Sprintf("c\x00%d", i)] = until.Unix()
		}
	}

	t.Run("full of unexpired IDs refuses", func(t *testing.T) {
		a := newAssertionChecker(nil)
		fill(a, now.Add(time.Minute))
		if a.firstUse("c", "new", now.Add(time.Minute), now) {
			t.Error("a new ID was accepted into a full cache")
		}
		if len(a.seen) != maxSeenAssertions {
			t.Errorf("cache holds %d IDs, want %d", len(a.seen), maxSeenAssertions)
		}
		// Nothing was forgotten to make room: a recorded ID stays refused.
		if a.firstUse("c", "0", now.Add(time.Minute), now) {
			t.Error("a recorded ID was accepted again")
		}
	})

	t.Run("full of expired IDs purges them", func(t *testing.T) {
		a := newAssertionChecker(nil)
		fill(a, now.Add(-2*assertionLeeway-time.Second))
		if !a.firstUse("c", "new", now.Add(time.Minute), now) {
			t.Fatal("a new ID was refused although every recorded one expired")
		}
		if len(a.seen) != 1 {
			t.Errorf("cache holds %d IDs after the purge, want 1", len(a.seen))
		}
		if a.firstUse("c", "new", now.Add(time.Minute), now) {
			t.Error("the new ID was accepted twice")
		}
	})

	t.Run("purge keeps unexpired IDs", func(t *testing.T) {
		a := newAssertionChecker(nil)
		fill(a, now.Add(-2*assertionLeeway-time.Second))
		a.seen["c\x00live"] = now.Add(time.Minute).Unix()
		delete(a.seen, "c\x000")
		if !a.firstUse("c", "new", now.Add(time.Minute), now) {
			t.Fatal("a new ID was refused")
		}
		if a.firstUse("c", "live", now.Add(time.Minute), now) {
			t.Error("the purge forgot an unexpired ID")
		}
		if len(a.seen) != 2 {
			t.Errorf("cache holds %d IDs, want 2", len(a.seen))
		}
	})

	t.Run("recorded until exp plus leeway", func(t *testing.T) {
		a := newAssertionChecker(nil)
		exp := now.Add(time.Minute)
		if !a.firstUse("c", "j", exp, now) {
			t.Fatal("first use refused")
		}
		if a.firstUse("c", "j", exp, exp.Add(assertionLeeway)) {
			t.Error("accepted again within exp plus leeway")
		}
		if !a.firstUse("c", "j", exp, exp.Add(assertionLeeway+time.Second)) {
			t.Error("refused after exp plus leeway")
		}
	})
}

// asnURLChecker returns a checker whose fetcher trusts srv and may
// connect to loopback addresses.
func asnURLChecker(t *testing.T, srv *stmtJWKSServer) *assertionChecker {
	t.Helper()
	f, err := (&FetchConfig{
		AllowNetworks: []string{"127.0.0.1/32", "::1/128"},
		TrustedRoots:  []string{srv.pem},
	}).newFetcher()
	if err != nil {
		t.Fatal(err)
	}
	return newAssertionChecker(f)
}

// asnURLClient returns a private_key_jwt client with keys at uri.
func asnURLClient(id, uri string) *clientdb.Client {
	c := asnClient(id, nil)
	c.Metadata.JWKSURI = uri
	return c
}

func TestAssertionClientKeysTTL(t *testing.T) {
	k := stmtKeyOf(jose.ES256)
	srv := newStmtJWKSServer(t, k)
	a := asnURLChecker(t, srv)
	c := asnURLClient("client-1", srv.jwksURL())
	t0 := stmtNow
	ctx := context.Background()

	steps := []struct {
		name  string
		at    time.Duration
		force bool
		hits  int64 // fetches so far
	}{
		{"first use fetches", 0, false, 1},
		{"cached", 4*time.Minute + 59*time.Second, false, 1},
		{"forced within a minute of the fetch", 30 * time.Second, true, 1},
		{"TTL passed", clientKeysTTL, false, 2},
		{"cached after the refetch", clientKeysTTL + 30*time.Second, false, 2},
		{"forced a minute after the refetch", clientKeysTTL + jwksRefetchAfter, true, 3},
		{"cached after the forced fetch", clientKeysTTL + 2*jwksRefetchAfter, false, 3},
	}
	for _, s := range steps {
		keys, err := a.clientKeys(ctx, c, t0.Add(s.at), s.force)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if len(keys.Keys) != 1 || keys.Keys[0].KeyID != k.kid {
			t.Errorf("%s: keys %+v", s.name, keys.Keys)
		}
		if got := srv.hits.Load(); got != s.hits {
			t.Errorf("%s: %d fetches, want %d", s.name, got, s.hits)
		}
	}

	// Keys registered by value are never fetched and never cached.
	byValue := asnClient("client-2", stmtJWKS(k))
	if _, err := a.clientKeys(ctx, byValue, t0, true); err != nil {
		t.Fatal(err)
	}
	if got := srv.hits.Load(); got != 3 || len(a.keys) != 1 {
		t.Errorf("keys by value: %d fetches, %d cached sets", got, len(a.keys))
	}
}

func TestAssertionClientKeysRefused(t *testing.T) {
	k := stmtKeyOf(jose.ES256)
	srv := newStmtJWKSServer(t, k)
	a := asnURLChecker(t, srv)
	raw := asnSign(t, k, k.kid, asnClaims("client-1", stmtNow))

	tests := []struct {
		name   string
		uri    string
		status int
		body   []byte
	}{
		{"not https", strings.Replace(srv.jwksURL(), "https:", "http:", 1),
			http.StatusOK, stmtJWKS(k)},
		{"status 500", srv.jwksURL(), http.StatusInternalServerError, stmtJWKS(k)},
		{"not a key set", srv.jwksURL(), http.StatusOK, []byte(`{"keys":"no"}`)},
		{"private key", srv.jwksURL(), http.StatusOK, must(json.Marshal(
			jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: k.priv, KeyID: k.kid}}}))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv.publish(tc.status, tc.body)
			c := asnURLClient("client-1", tc.uri)
			asnWantRefused(t, asnCheck(a, c, asnForm(raw), stmtNow),
				"keys could not be read")
		})
	}
}

func TestAssertionKeyRotation(t *testing.T) {
	old := stmtKeyOf(jose.ES256)
	rotated := stmtNewKey(jose.EdDSA, "ed-2")
	srv := newStmtJWKSServer(t, old)
	a := asnURLChecker(t, srv)
	c := asnURLClient("client-1", srv.jwksURL())
	t0 := stmtNow

	check := func(name string, k stmtKey, kid string, at time.Duration,
		accepted bool, hits int64) {
		t.Helper()
		raw := asnSign(t, k, kid, asnClaims(c.ID, t0.Add(at)))
		perr := asnCheck(a, c, asnForm(raw), t0.Add(at))
		if (perr == nil) != accepted {
			t.Errorf("%s: accepted %v, want %v (%v)", name, perr == nil, accepted, perr)
		}
		if got := srv.hits.Load(); got != hits {
			t.Errorf("%s: %d fetches, want %d", name, got, hits)
		}
	}

	check("first use", old, old.kid, 0, true, 1)
	srv.publish(http.StatusOK, stmtJWKS(rotated))
	check("new kid within a minute", rotated, rotated.kid, 30*time.Second, false, 1)
	check("new kid after a minute", rotated, rotated.kid, 61*time.Second, true, 2)
	check("old kid after rotation", old, old.kid, 62*time.Second, false, 2)
	check("old kid, a minute later", old, old.kid, 2*time.Minute+time.Second, false, 3)
	// A known kid whose signature fails is a forgery, not a rotation:
	// it must not make the server fetch.
	forged := stmtNewKey(jose.EdDSA, rotated.kid)
	check("known kid, wrong key", forged, rotated.kid, 4*time.Minute, false, 3)
}

func TestAssertionKeyFetchFailureRate(t *testing.T) {
	k := stmtKeyOf(jose.ES256)
	srv := newStmtJWKSServer(t, k)
	a := asnURLChecker(t, srv)
	c := asnURLClient("client-1", srv.jwksURL())
	t0 := stmtNow
	first := asnSign(t, k, k.kid, asnClaims(c.ID, t0))
	if perr := asnCheck(a, c, asnForm(first), t0); perr != nil {
		t.Fatalf("first use refused: %v", perr)
	}

	// The client's server breaks; assertions naming unknown kids, which
	// anyone can send, may make the gateway try it at most once a minute.
	srv.publish(http.StatusInternalServerError, nil)
	for i := range 5 {
		at := t0.Add(2*time.Minute + time.Duration(i)*time.Second)
		raw := asnSign(t, k, fmt.Sprintf("unknown-%d", i), asnClaims(c.ID, at))
		asnWantRefused(t, asnCheck(a, c, asnForm(raw), at), "signature does not verify")
	}
	if got := srv.hits.Load(); got != 2 {
		t.Errorf("%d fetches, want 2: one a minute", got)
	}

	// A set never fetched, behind a server that fails, is not tried on
	// every request either.
	cold := asnURLClient("client-2", srv.jwksURL()+"?cold")
	before := srv.hits.Load()
	for i := range 3 {
		at := t0.Add(time.Duration(i) * time.Second)
		raw := asnSign(t, k, k.kid, asnClaims(cold.ID, at))
		asnCheck(a, cold, asnForm(raw), at)
	}
	if got := srv.hits.Load() - before; got != 1 {
		t.Errorf("%d fetches of a failing cold set, want 1", got)
	}
}

func TestAssertionTokenAudiences(t *testing.T) {
	tests := []struct {
		name    string
		baseURL string
		token   string
		target  string
		want    []string
	}{
		{"from the request", "", "/oauth/token", "http://gw.example/oauth/token",
			[]string{"http://gw.example", "http://gw.example/",
				"http://gw.example/oauth/token"}},
		{"base URL configured", "https://as.example", "/oauth/token",
			"http://internal:8080/oauth/token",
			[]string{"https://as.example", "https://as.example/",
				"https://as.example/oauth/token"}},
		// A request path spelled differently still lets the client name
		// the configured token endpoint.
		{"other request path", "https://as.example", "/oauth/token",
			"http://internal/oauth//token",
			[]string{"https://as.example", "https://as.example/",
				"https://as.example/oauth//token", "https://as.example/oauth/token"}},
		{"base URL with a path", "https://as.example/t1", "/oauth/token",
			"http://internal/oauth/token",
			[]string{"https://as.example", "https://as.example/",
				"https://as.example/t1", "https://as.example/t1/",
				"https://as.example/t1/oauth/token"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := &Handler{BaseURL: tc.baseURL, Enforce: &Enforce{Token: tc.token}}
			r := httptest.NewRequest(http.MethodPost, tc.target, nil)
			got := h.tokenAudiences(r)
			want := slices.Clone(tc.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("audiences %q, want %q", got, want)
			}
		})
	}
}
