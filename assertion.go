package dcr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

// assertionType is the client_assertion_type of a JWT client assertion
// (RFC 7523 section 2.2).
const assertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// Limits of client assertion checking.
const (
	// maxAssertionLength bounds a client assertion, in bytes.
	maxAssertionLength = 8 << 10

	// assertionLeeway is the clock skew tolerated on exp, nbf and iat.
	assertionLeeway = time.Minute

	// clientKeysTTL is how long keys fetched from a client's jwks_uri are
	// used before they are fetched again.
	clientKeysTTL = 5 * time.Minute

	// maxClientKeySets bounds the cache of fetched client key sets.
	maxClientKeySets = 1024

	// maxSeenAssertions bounds the replay cache of assertion IDs.
	maxSeenAssertions = 1 << 16
)

// assertionChecker verifies private_key_jwt client assertions at the token
// endpoint. It caches the key sets of clients' jwks_uri and remembers the
// assertion IDs it accepted until they expire, so that an assertion is
// accepted once. It is safe for concurrent use.
type assertionChecker struct {
	fetch *fetcher

	mu   sync.Mutex
	keys map[string]*cachedKeys // by jwks_uri
	seen map[string]int64       // client ID and jti → exp, Unix seconds
}

// cachedKeys is a client's key set as fetched. Its lock is held through
// a fetch, so that concurrent requests fetch once.
type cachedKeys struct {
	mu        sync.Mutex
	keys      *jose.JSONWebKeySet
	fetchedAt time.Time // of the keys held
	tried     time.Time // of the last fetch, successful or not
}

func newAssertionChecker(f *fetcher) *assertionChecker {
	return &assertionChecker{
		fetch: f,
		keys:  make(map[string]*cachedKeys),
		seen:  make(map[string]int64),
	}
}

// check verifies the private_key_jwt authentication of a token request
// (RFC 7523 section 3, OpenID Connect Core section 9): a single assertion
// of the right type, signed by one of the client's registered keys with an
// accepted algorithm, whose iss and sub are the client, whose aud names
// this token endpoint or its origin, unexpired, and not seen before.
func (a *assertionChecker) check(ctx context.Context, r *http.Request, c *clientdb.Client,
	form url.Values, audiences []string, now time.Time) *protoError {
	fail := func(why string, cause error) *protoError {
		perr := invalidClient("client_assertion", "client authentication failed: "+why)
		perr.Cause = cause
		return perr
	}
	if form.Get("client_assertion_type") != assertionType {
		return fail(fmt.Sprintf("client_assertion_type must be %q", assertionType), nil)
	}
	raw := form.Get("client_assertion")
	if raw == "" || len(raw) > maxAssertionLength {
		return fail("client_assertion is missing or too long", nil)
	}

	algs := asymmetricAlgs
	if alg := c.Metadata.TokenEndpointAuthSigningAlg; alg != "" {
		algs = []string{alg}
	}
	accepted := make([]jose.SignatureAlgorithm, len(algs))
	for i, alg := range algs {
		accepted[i] = jose.SignatureAlgorithm(alg)
	}
	sig, err := jose.ParseSignedCompact(raw, accepted)
	if err != nil || len(sig.Signatures) != 1 {
		return fail("client_assertion is not a JWT signed with an accepted algorithm", err)
	}
	header := sig.Signatures[0].Protected

	keys, err := a.clientKeys(ctx, c, now, false)
	if err != nil {
		return fail("the client's keys could not be read", err)
	}
	payload, tried, err := verifyWithKeys(sig, header, keys)
	if err != nil && tried == 0 && c.Metadata.JWKSURI != "" {
		// The client may have rotated its keys since the last fetch.
		if fresh, ferr := a.clientKeys(ctx, c, now, true); ferr == nil {
			payload, _, err = verifyWithKeys(sig, header, fresh)
		}
	}
	if err != nil {
		return fail("the signature does not verify with the client's keys", err)
	}

	var claims jwt.Claims
	if err := json.Unmarshal(payload, &claims); err != nil {
		return fail("the assertion's claims are malformed", err)
	}
	if claims.Expiry == nil || claims.ID == "" {
		return fail("the assertion must carry exp and jti", nil)
	}
	err = claims.ValidateWithLeeway(jwt.Expected{
		Issuer:      c.ID,
		Subject:     c.ID,
		AnyAudience: audiences,
		Time:        now,
	}, assertionLeeway)
	if err != nil {
		return fail("the assertion's iss, sub, aud or times are not valid", err)
	}
	if id := form.Get("client_id"); id != "" && id != c.ID {
		return fail("client_id differs from the assertion's issuer", nil)
	}
	if !a.firstUse(c.ID, claims.ID, claims.Expiry.Time(), now) {
		return fail("the assertion was used before", nil)
	}
	return nil
}

// clientKeys returns the client's public keys: its registered jwks, or the
// set at its jwks_uri, fetched on first use, after clientKeysTTL, and with
// force when a minute has passed since the last fetch.
func (a *assertionChecker) clientKeys(ctx context.Context, c *clientdb.Client,
	now time.Time, force bool) (*jose.JSONWebKeySet, error) {
	if c.Metadata.JWKS != nil {
		return parseJWKS(c.Metadata.JWKS)
	}
	uri := c.Metadata.JWKSURI
	if uri == "" {
		return nil, errors.New("the client registered no keys")
	}

	a.mu.Lock()
	e := a.keys[uri]
	if e == nil {
		if len(a.keys) >= maxClientKeySets {
			clear(a.keys)
		}
		e = &cachedKeys{}
		a.keys[uri] = e
	}
	a.mu.Unlock()

	e.mu.Lock()
	defer e.mu.Unlock()
	age := now.Sub(e.fetchedAt)
	switch {
	case e.keys != nil && age < clientKeysTTL && !(force && age >= jwksRefetchAfter):
		return e.keys, nil
	case !e.tried.IsZero() && now.Sub(e.tried) < jwksRefetchAfter:
		// At most one fetch a minute, whoever asks and however it went.
		if e.keys != nil && age < clientKeysTTL {
			return e.keys, nil
		}
		return nil, errors.New("no keys: the last fetch failed less than a minute ago")
	}

	// Expired keys are not used while the client's key server is down:
	// the keys it stopped publishing may be the ones it revoked.
	e.tried = now
	res, err := a.fetch.get(context.WithoutCancel(ctx), uri, true)
	if err != nil {
		return nil, err
	}
	keys, err := parseJWKS(res.body)
	if err != nil {
		return nil, fmt.Errorf("keys at %s: %w", uri, err)
	}
	e.keys, e.fetchedAt = keys, now
	return keys, nil
}

// firstUse records an assertion ID of a client until exp and reports
// whether it was new. When the cache is full of unexpired IDs it refuses,
// rather than forget IDs that could then be replayed.
func (a *assertionChecker) firstUse(clientID, jti string, exp, now time.Time) bool {
	key := clientID + "\x00" + jti
	a.mu.Lock()
	defer a.mu.Unlock()
	if until, ok := a.seen[key]; ok && until >= now.Unix() {
		return false
	}
	if len(a.seen) >= maxSeenAssertions {
		for k, until := range a.seen {
			if until < now.Unix() {
				delete(a.seen, k)
			}
		}
		if len(a.seen) >= maxSeenAssertions {
			return false
		}
	}
	a.seen[key] = exp.Add(assertionLeeway).Unix()
	return true
}

// assertionIssuer returns the unverified iss of a client assertion, which
// names the client when the token request carries no client_id (RFC 7523
// section 3 allows that), or "".
func assertionIssuer(form url.Values) string {
	if form.Get("client_assertion_type") != assertionType {
		return ""
	}
	raw := form.Get("client_assertion")
	if len(raw) > maxAssertionLength {
		return ""
	}
	algs := make([]jose.SignatureAlgorithm, len(asymmetricAlgs))
	for i, alg := range asymmetricAlgs {
		algs[i] = jose.SignatureAlgorithm(alg)
	}
	sig, err := jose.ParseSignedCompact(raw, algs)
	if err != nil {
		return ""
	}
	var claims struct {
		Issuer string `json:"iss"`
	}
	if json.Unmarshal(sig.UnsafePayloadWithoutVerification(), &claims) != nil {
		return ""
	}
	return claims.Issuer
}

// tokenAudiences are the aud values a client assertion may name for this
// token endpoint: its URL and the origin it is served from, which is the
// issuer of most authorization servers.
func (h *Handler) tokenAudiences(r *http.Request) []string {
	base := h.baseURL(r)
	auds := []string{base + r.URL.Path, base, base + "/"}
	if h.Enforce != nil && h.Enforce.Token != "" {
		auds = append(auds, base+h.Enforce.Token)
	}
	if u, err := url.Parse(base); err == nil && u.Path != "" {
		origin := u.Scheme + "://" + u.Host
		auds = append(auds, origin, origin+"/")
	}
	slices.Sort(auds)
	return slices.Compact(auds)
}
