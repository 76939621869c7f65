package dcr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"go.uber.org/zap"
)

// Error codes of RFC 7591 section 3.2.2 for software statements.
const (
	codeInvalidStatement    = "invalid_software_statement"
	codeUnapprovedStatement = "unapproved_software_statement"
)

// Limits and timings of software statement verification.
const (
	// maxStatementLength bounds a statement, in bytes, before parsing.
	maxStatementLength = 16 << 10

	// statementLeeway is the clock skew tolerated on exp, nbf and iat.
	statementLeeway = time.Minute

	// jwksTTL is how long keys fetched from a jwks_url are used before
	// they are fetched again.
	jwksTTL = time.Hour

	// jwksRefetchAfter is the shortest time between two fetches of a
	// jwks_url, so that statements naming unknown key IDs cannot make
	// the server fetch on every request.
	jwksRefetchAfter = time.Minute
)

// defaultStatementAlgs are the algorithms accepted from an issuer that
// names none.
var defaultStatementAlgs = []string{"RS256", "ES256", "EdDSA"}

// asymmetricAlgs are the JWS algorithms an issuer may be configured with:
// signatures by a private key that only the issuer holds. "none" and the
// HMAC algorithms are never accepted, so a public key can never be used
// as a shared secret.
var asymmetricAlgs = []string{
	"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
	"ES256", "ES384", "ES512", "EdDSA",
}

// registeredClaims are the JWT claims of a statement that describe the
// statement itself, not the client, and so are not metadata.
var registeredClaims = []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti"}

// SoftwareStatementIssuer is an issuer whose software statements (RFC 7591
// section 2.3) the server trusts.
type SoftwareStatementIssuer struct {
	// Issuer is the statement's "iss" claim, compared exactly.
	Issuer string `json:"issuer"`

	// JWKSFile is a file holding the issuer's public keys as a JSON Web
	// Key Set, read at start-up. Exactly one of JWKSFile and JWKSURL is
	// required.
	JWKSFile string `json:"jwks_file,omitempty"`

	// JWKSURL is an https URL serving the issuer's public keys as a JSON
	// Web Key Set. It is fetched on first use through the server's
	// fetch rules, kept for an hour, fetched again early (at most once a
	// minute) when a statement names an unknown key, and kept past its
	// hour while fetches fail.
	JWKSURL string `json:"jwks_url,omitempty"`

	// Algorithms are the JWS algorithms accepted from this issuer.
	// Default: RS256, ES256 and EdDSA. "none" and HMAC algorithms are
	// refused.
	Algorithms []string `json:"algorithms,omitempty"`
}

// statementVerifier verifies software statements against the trusted
// issuers. It is safe for concurrent use.
type statementVerifier struct {
	issuers map[string]*trustedIssuer
	algs    []jose.SignatureAlgorithm // every issuer's, for parsing
	fetch   *fetcher
	logger  *zap.Logger
}

// trustedIssuer is one issuer with its keys.
type trustedIssuer struct {
	name string
	algs []jose.SignatureAlgorithm
	url  string

	mu        sync.Mutex
	keys      *jose.JSONWebKeySet
	fetchedAt time.Time
}

// newStatementVerifier loads the issuers' key files. Keys behind URLs are
// fetched on first use: start-up must not wait for the network.
func newStatementVerifier(issuers []SoftwareStatementIssuer, f *fetcher,
	logger *zap.Logger) (*statementVerifier, error) {
	v := &statementVerifier{
		issuers: make(map[string]*trustedIssuer),
		fetch:   f,
		logger:  logger,
	}
	for _, cfg := range issuers {
		ti := &trustedIssuer{name: cfg.Issuer, url: cfg.JWKSURL}
		algs := cfg.Algorithms
		if len(algs) == 0 {
			algs = defaultStatementAlgs
		}
		for _, a := range algs {
			alg := jose.SignatureAlgorithm(a)
			ti.algs = append(ti.algs, alg)
			if !slices.Contains(v.algs, alg) {
				v.algs = append(v.algs, alg)
			}
		}
		if cfg.JWKSFile != "" {
			data, err := os.ReadFile(cfg.JWKSFile)
			if err != nil {
				return nil, fmt.Errorf("software_statement %q: reading jwks_file: %w",
					cfg.Issuer, err)
			}
			keys, err := parseJWKS(data)
			if err != nil {
				return nil, fmt.Errorf("software_statement %q: jwks_file %s: %w",
					cfg.Issuer, cfg.JWKSFile, err)
			}
			ti.keys = keys
		}
		v.issuers[cfg.Issuer] = ti
	}
	return v, nil
}

// validateIssuers checks the issuer configuration without reading files.
func validateIssuers(issuers []SoftwareStatementIssuer) error {
	seen := make(map[string]bool)
	for _, cfg := range issuers {
		name := fmt.Sprintf("software_statement %q", cfg.Issuer)
		if cfg.Issuer == "" {
			return fmt.Errorf("software_statement: issuer is required")
		}
		if seen[cfg.Issuer] {
			return fmt.Errorf("%s: issuer given more than once", name)
		}
		seen[cfg.Issuer] = true
		if (cfg.JWKSFile == "") == (cfg.JWKSURL == "") {
			return fmt.Errorf("%s: give exactly one of jwks_file and jwks_url", name)
		}
		if cfg.JWKSURL != "" && !strings.HasPrefix(cfg.JWKSURL, "https://") {
			return fmt.Errorf("%s: jwks_url %q must be an https URL", name, cfg.JWKSURL)
		}
		for _, a := range cfg.Algorithms {
			if !slices.Contains(asymmetricAlgs, a) {
				return fmt.Errorf("%s: algorithm %q is not accepted; want one of %s "+
					"(never none or HMAC)", name, a, strings.Join(asymmetricAlgs, " "))
			}
		}
	}
	return nil
}

// parseJWKS parses a JSON Web Key Set of public signing keys. A private
// key is refused: it has no place in a file or URL of verification keys.
func parseJWKS(data []byte) (*jose.JSONWebKeySet, error) {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("not a JSON Web Key Set: %w", err)
	}
	if len(set.Keys) == 0 {
		return nil, errors.New("the key set holds no keys")
	}
	for i, k := range set.Keys {
		if !k.Valid() || !k.IsPublic() {
			return nil, fmt.Errorf("key %d (kid %q) is not a valid public key", i, k.KeyID)
		}
	}
	return &set, nil
}

// verify checks a software statement and returns its claims that are
// client metadata, as members of a registration request. A nil verifier
// trusts no issuer.
func (v *statementVerifier) verify(ctx context.Context, raw string,
	now time.Time) ([]member, *protoError) {
	invalid := func(why string, cause error) *protoError {
		return &protoError{
			Status:      http.StatusBadRequest,
			Code:        codeInvalidStatement,
			Description: "software_statement " + why,
			Rule:        "software_statement",
			Cause:       cause,
		}
	}
	if len(raw) > maxStatementLength {
		return nil, invalid(fmt.Sprintf("is longer than %d bytes", maxStatementLength), nil)
	}
	if v == nil || len(v.issuers) == 0 {
		// Nothing could be verified; the statement is not malformed,
		// only not approved.
		return nil, &protoError{
			Status:      http.StatusBadRequest,
			Code:        codeUnapprovedStatement,
			Description: "this server trusts no software statement issuers",
			Rule:        "software_statement_issuer",
		}
	}

	sig, err := jose.ParseSignedCompact(raw, v.algs)
	if err != nil {
		return nil, invalid("is not a signed JWT in compact form with an accepted algorithm",
			err)
	}
	if len(sig.Signatures) != 1 {
		return nil, invalid("must carry exactly one signature", nil)
	}
	header := sig.Signatures[0].Protected

	var unverified struct {
		Issuer string `json:"iss"`
	}
	if err := json.Unmarshal(sig.UnsafePayloadWithoutVerification(), &unverified); err != nil {
		return nil, invalid("does not carry a JSON object of claims", err)
	}
	ti := v.issuers[unverified.Issuer]
	if ti == nil {
		return nil, &protoError{
			Status: http.StatusBadRequest,
			Code:   codeUnapprovedStatement,
			Description: fmt.Sprintf("software statement issuer %q is not trusted",
				truncate(unverified.Issuer)),
			Rule: "software_statement_issuer",
		}
	}
	if !slices.Contains(ti.algs, jose.SignatureAlgorithm(header.Algorithm)) {
		return nil, invalid(fmt.Sprintf("algorithm %q is not accepted from this issuer",
			header.Algorithm), nil)
	}

	payload, err := v.checkSignature(ctx, ti, sig, header, now)
	if err != nil {
		return nil, invalid("signature does not verify with the issuer's keys", err)
	}

	var claims jwt.Claims
	if err := json.Unmarshal(payload, &claims); err != nil {
		return nil, invalid("has malformed registered claims", err)
	}
	err = claims.ValidateWithLeeway(jwt.Expected{Issuer: ti.name, Time: now}, statementLeeway)
	switch {
	case errors.Is(err, jwt.ErrExpired):
		return nil, invalid("has expired", err)
	case errors.Is(err, jwt.ErrNotValidYet), errors.Is(err, jwt.ErrIssuedInTheFuture):
		return nil, invalid("is not valid yet", err)
	case err != nil:
		return nil, invalid("has invalid registered claims", err)
	}

	members, perr := splitObject(payload)
	if perr != nil {
		return nil, invalid("claims are not a JSON object without repeated names", perr)
	}
	return slices.DeleteFunc(members, func(m member) bool {
		return slices.Contains(registeredClaims, m.name)
	}), nil
}

// checkSignature verifies the statement with the issuer's keys and returns
// its payload. The key is chosen by kid when the header names one, else
// every signing key is tried.
func (v *statementVerifier) checkSignature(ctx context.Context, ti *trustedIssuer,
	sig *jose.JSONWebSignature, header jose.Header, now time.Time) ([]byte, error) {
	keys, err := v.keys(ctx, ti, now, false)
	if err != nil {
		return nil, err
	}
	if header.KeyID != "" && len(keys.Key(header.KeyID)) == 0 && ti.url != "" {
		// The issuer may have rotated its keys since the last fetch.
		if fresh, err := v.keys(ctx, ti, now, true); err == nil {
			keys = fresh
		}
	}

	payload, tried, err := verifyWithKeys(sig, header, keys)
	switch {
	case err == nil:
		return payload, nil
	case tried == 0:
		return nil, fmt.Errorf("no key of issuer %q fits kid %q and alg %q",
			ti.name, header.KeyID, header.Algorithm)
	}
	return nil, fmt.Errorf("none of %d keys of issuer %q verifies the signature",
		tried, ti.name)
}

// verifyWithKeys verifies a JWS with the keys that fit its header: the
// one its kid names, else every signing key whose alg, if it names one,
// is the header's. It returns the payload, or how many keys it tried and
// an error.
func verifyWithKeys(sig *jose.JSONWebSignature, header jose.Header,
	keys *jose.JSONWebKeySet) ([]byte, int, error) {
	tried := 0
	for i := range keys.Keys {
		k := &keys.Keys[i]
		if header.KeyID != "" && k.KeyID != header.KeyID {
			continue
		}
		if k.Use == "enc" || (k.Algorithm != "" && k.Algorithm != header.Algorithm) {
			continue
		}
		tried++
		if payload, err := sig.Verify(k); err == nil {
			return payload, tried, nil
		}
	}
	return nil, tried, errors.New("no key verifies the signature")
}

// keys returns the issuer's key set, fetching it when it comes from a URL
// and is missing, old, or, with force, fetched more than a minute ago. A
// failed fetch falls back to the keys fetched before, if any.
func (v *statementVerifier) keys(ctx context.Context, ti *trustedIssuer, now time.Time,
	force bool) (*jose.JSONWebKeySet, error) {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	if ti.url == "" {
		return ti.keys, nil
	}
	age := now.Sub(ti.fetchedAt)
	switch {
	case ti.fetchedAt.IsZero(), age >= jwksTTL,
		(force || ti.keys == nil) && age >= jwksRefetchAfter:
	case ti.keys == nil:
		// A failed first fetch is not retried on every statement.
		return nil, errors.New("no keys: the last fetch failed less than a minute ago")
	default:
		return ti.keys, nil
	}

	// The lock is held through the fetch, so that concurrent requests
	// fetch once; the fetch has its own timeout.
	ti.fetchedAt = now
	keys, err := v.fetchKeys(ctx, ti.url)
	if err != nil {
		v.logger.Warn("fetching software statement issuer keys failed",
			zap.String("issuer", ti.name), zap.String("jwks_url", ti.url),
			zap.Bool("using_previous_keys", ti.keys != nil), zap.Error(err))
		if ti.keys != nil {
			return ti.keys, nil
		}
		return nil, err
	}
	ti.keys = keys
	return keys, nil
}

// fetchKeys fetches and parses a JSON Web Key Set.
func (v *statementVerifier) fetchKeys(ctx context.Context,
	url string) (*jose.JSONWebKeySet, error) {
	// The fetch outlives the request that caused it only as long as the
	// fetcher's own timeout.
	res, err := v.fetch.get(context.WithoutCancel(ctx), url, true)
	if err != nil {
		return nil, err
	}
	keys, err := parseJWKS(res.body)
	if err != nil {
		return nil, fmt.Errorf("keys at %s: %w", url, err)
	}
	return keys, nil
}
