package dcr

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// The statement tests sign real JWS with keys generated here, one of each
// type the default algorithms name, and verify them with the verifier the
// handler uses. Time is passed to verify explicitly, so expiry and key
// caching are tested without waiting.

// stmtIssuer is the trusted issuer of the unit tests.
const stmtIssuer = "https://issuer.example"

// stmtNow is the verification time of the unit tests.
var stmtNow = time.Unix(1_750_000_000, 0)

// stmtKey is a signing key of a test issuer.
type stmtKey struct {
	kid  string
	alg  jose.SignatureAlgorithm
	priv crypto.Signer
}

// withAlg returns the key to be used with another algorithm.
func (k stmtKey) withAlg(alg jose.SignatureAlgorithm) stmtKey {
	k.alg = alg
	return k
}

// public returns the key as an issuer publishes it.
func (k stmtKey) public() jose.JSONWebKey {
	return jose.JSONWebKey{
		Key: k.priv.Public(), KeyID: k.kid, Algorithm: string(k.alg), Use: "sig",
	}
}

// stmtNewKey generates a key for alg: RSA 2048 for RS and PS, P-256 for
// ES256, P-384 for ES384, Ed25519 for EdDSA.
func stmtNewKey(alg jose.SignatureAlgorithm, kid string) stmtKey {
	var priv crypto.Signer
	var err error
	switch alg {
	case jose.RS256, jose.PS256:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case jose.ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jose.ES384:
		priv, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case jose.EdDSA:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		panic("stmtNewKey: no key type for " + alg)
	}
	if err != nil {
		// crypto/rand does not fail; key generation with it neither.
		panic(err)
	}
	return stmtKey{kid: kid, alg: alg, priv: priv}
}

// stmtKeys are the issuer's keys shared by the tests of this binary: an
// RSA key is slow to generate under the race detector.
var stmtKeys = sync.OnceValue(func() []stmtKey {
	return []stmtKey{
		stmtNewKey(jose.RS256, "rsa-1"),
		stmtNewKey(jose.ES256, "ec-1"),
		stmtNewKey(jose.EdDSA, "ed-1"),
	}
})

// stmtKeyOf returns the shared key for alg.
func stmtKeyOf(alg jose.SignatureAlgorithm) stmtKey {
	for _, k := range stmtKeys() {
		if k.alg == alg {
			return k
		}
	}
	panic("no shared key for " + alg)
}

// stmtJWKS returns the public halves of keys as a JSON Web Key Set.
func stmtJWKS(keys ...stmtKey) []byte {
	set := jose.JSONWebKeySet{}
	for _, k := range keys {
		set.Keys = append(set.Keys, k.public())
	}
	b, err := json.Marshal(set)
	if err != nil {
		panic(err)
	}
	return b
}

// stmtWriteFile writes data to a new file in a temporary directory and
// returns its path.
func stmtWriteFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// stmtClaims returns the claims of a statement by iss valid at now, with
// extra claims added; an extra claim whose value is nil is removed.
func stmtClaims(iss string, now time.Time, extra map[string]any) map[string]any {
	c := map[string]any{
		"iss":         iss,
		"sub":         "software-1",
		"aud":         "https://as.example",
		"jti":         "statement-1",
		"iat":         now.Unix(),
		"exp":         now.Add(10 * time.Minute).Unix(),
		"software_id": "4NRB1-0XZABZI9E6-5SM3R",
		"client_name": "Signed App",
	}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

// stmtSign signs claims with k, naming kid in the header unless it is
// empty.
func stmtSign(t testing.TB, k stmtKey, kid string, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return stmtSignRaw(t, k, kid, payload)
}

// stmtSignRaw signs payload as it is, so that payloads no encoder would
// produce can be signed too.
func stmtSignRaw(t testing.TB, k stmtKey, kid string, payload []byte) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: k.priv}, opts)
	if err != nil {
		t.Fatalf("signer for %s: %v", k.alg, err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// stmtB64 is base64url without padding, as JWS uses it.
func stmtB64(b []byte) string {
	return base64.RawURLEncoding.EncodeToString(b)
}

// stmtForge assembles a compact JWS from its parts without any checks,
// for statements no honest signer would make.
func stmtForge(header, payload string, sig []byte) string {
	return stmtB64([]byte(header)) + "." + stmtB64([]byte(payload)) + "." + stmtB64(sig)
}

// stmtHMAC returns a statement with an HS256 signature made with secret:
// the key confusion attack, when secret is a public key the server holds.
func stmtHMAC(kid string, claims map[string]any, secret []byte) string {
	payload, err := json.Marshal(claims)
	if err != nil {
		panic(err)
	}
	header := `{"alg":"HS256","typ":"JWT","kid":"` + kid + `"}`
	input := stmtB64([]byte(header)) + "." + stmtB64(payload)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(input))
	return input + "." + stmtB64(mac.Sum(nil))
}

// stmtPublicPEM returns k's public key in PEM, the form in which an
// attacker would most likely try it as an HMAC secret.
func stmtPublicPEM(k stmtKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(k.priv.Public())
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// stmtVerifierFor returns a verifier that trusts stmtIssuer with the
// shared keys from a jwks_file, and the extra issuers.
func stmtVerifierFor(t testing.TB, extra ...SoftwareStatementIssuer) *statementVerifier {
	t.Helper()
	file := stmtWriteFile(t, "jwks.json", stmtJWKS(stmtKeys()...))
	issuers := append([]SoftwareStatementIssuer{{Issuer: stmtIssuer, JWKSFile: file}},
		extra...)
	if err := validateIssuers(issuers); err != nil {
		t.Fatal(err)
	}
	v, err := newStatementVerifier(issuers, nil, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// stmtMembers returns members as a map of name to compact JSON value.
func stmtMembers(t *testing.T, members []member) map[string]string {
	t.Helper()
	out := make(map[string]string)
	for _, m := range members {
		if _, dup := out[m.name]; dup {
			t.Errorf("member %q returned twice", m.name)
		}
		var v any
		if err := json.Unmarshal(m.value, &v); err != nil {
			t.Fatalf("member %q is not JSON: %s", m.name, m.value)
		}
		b, _ := json.Marshal(v)
		out[m.name] = string(b)
	}
	return out
}

// stmtFormat renders members readably for failure messages.
func stmtFormat(members []member) string {
	parts := make([]string, len(members))
	for i, m := range members {
		parts[i] = m.name + "=" + string(m.value)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// stmtWantRefused fails unless perr is a 400 with code whose description
// contains desc, and nothing came with it.
func stmtWantRefused(t *testing.T, members []member, perr *protoError, code, desc string) {
	t.Helper()
	if perr == nil {
		t.Fatalf("accepted with members %s, want %s", stmtFormat(members), code)
	}
	if members != nil {
		t.Errorf("members %s returned with error %v", stmtFormat(members), perr)
	}
	if perr.Status != http.StatusBadRequest || perr.Code != code {
		t.Errorf("status %d code %q, want 400 %q (%v)", perr.Status, perr.Code, code, perr)
	}
	if perr.Rule == "" || !strings.Contains(perr.Description, desc) {
		t.Errorf("rule %q description %q, want a rule and %q", perr.Rule,
			perr.Description, desc)
	}
}

// TestStatementVerifyKeyTypes checks that a statement signed by each key
// type is accepted, with and without a kid, and that exactly the claims
// that are not about the statement itself come back as members.
func TestStatementVerifyKeyTypes(t *testing.T) {
	v := stmtVerifierFor(t)
	ctx := context.Background()
	for _, k := range stmtKeys() {
		for _, kid := range []string{k.kid, ""} {
			t.Run(fmt.Sprintf("%s kid=%q", k.alg, kid), func(t *testing.T) {
				claims := stmtClaims(stmtIssuer, stmtNow, map[string]any{
					"redirect_uris": []string{"https://app.example/cb"},
					"nbf":           stmtNow.Unix(),
				})
				members, perr := v.verify(ctx, stmtSign(t, k, kid, claims), stmtNow)
				if perr != nil {
					t.Fatalf("refused: %v", perr)
				}
				want := map[string]string{
					"software_id":   `"4NRB1-0XZABZI9E6-5SM3R"`,
					"client_name":   `"Signed App"`,
					"redirect_uris": `["https://app.example/cb"]`,
				}
				if got := stmtMembers(t, members); !reflect.DeepEqual(got, want) {
					t.Errorf("members %v, want %v", got, want)
				}
			})
		}
	}
}

// TestStatementVerifyMoreAlgorithms checks algorithms beyond the default
// ones once an issuer lists them, and that the default list does not
// include them.
func TestStatementVerifyMoreAlgorithms(t *testing.T) {
	rsaKey := stmtKeyOf(jose.RS256)
	ps := rsaKey.withAlg(jose.PS256)
	ps.kid = "rsa-ps"
	es384 := stmtNewKey(jose.ES384, "ec-384")
	file := stmtWriteFile(t, "jwks.json", stmtJWKS(ps, es384))

	listed := []SoftwareStatementIssuer{{
		Issuer: stmtIssuer, JWKSFile: file,
		Algorithms: []string{"PS256", "ES384"},
	}}
	defaults := []SoftwareStatementIssuer{{Issuer: stmtIssuer, JWKSFile: file}}
	for _, tc := range []struct {
		name    string
		issuers []SoftwareStatementIssuer
		ok      bool
	}{
		{"listed", listed, true},
		{"defaults", defaults, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := newStatementVerifier(tc.issuers, nil, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range []stmtKey{ps, es384} {
				raw := stmtSign(t, k, k.kid, stmtClaims(stmtIssuer, stmtNow, nil))
				members, perr := v.verify(context.Background(), raw, stmtNow)
				if tc.ok && perr != nil {
					t.Errorf("%s refused: %v", k.alg, perr)
				}
				if !tc.ok {
					stmtWantRefused(t, members, perr, codeInvalidStatement, "algorithm")
				}
			}
		})
	}
}

// TestStatementVerifyRefused covers statements that must be refused, each
// with the error the client is told.
func TestStatementVerifyRefused(t *testing.T) {
	rsaKey, ecKey, edKey := stmtKeyOf(jose.RS256), stmtKeyOf(jose.ES256),
		stmtKeyOf(jose.EdDSA)
	// An impostor holds keys of the same types and names the same kids.
	fakeRSA := stmtNewKey(jose.RS256, rsaKey.kid)
	fakeEd := stmtNewKey(jose.EdDSA, edKey.kid)

	// A second issuer accepts ES256 only, so that RS256 parses (the first
	// issuer accepts it) but is not accepted from this one.
	esOnly := SoftwareStatementIssuer{
		Issuer:     "https://es-only.example",
		JWKSFile:   stmtWriteFile(t, "es.json", stmtJWKS(stmtKeys()...)),
		Algorithms: []string{"ES256"},
	}
	v := stmtVerifierFor(t, esOnly)

	claims := func(extra map[string]any) map[string]any {
		return stmtClaims(stmtIssuer, stmtNow, extra)
	}
	good := stmtSign(t, ecKey, ecKey.kid, claims(nil))
	parts := strings.Split(good, ".")
	jwk, _ := json.Marshal(rsaKey.public())
	payload, _ := json.Marshal(claims(nil))
	flat, _ := json.Marshal(map[string]string{
		"protected": parts[0], "payload": parts[1], "signature": parts[2],
	})
	otherPayload := stmtB64([]byte(`{"iss":"` + stmtIssuer + `","client_name":"Evil"}`))
	before := func(d time.Duration) int64 { return stmtNow.Add(-d).Unix() }
	after := func(d time.Duration) int64 { return stmtNow.Add(d).Unix() }

	cases := []struct {
		name string
		raw  string
		code string
		desc string
	}{
		{
			"untrusted issuer",
			stmtSign(t, ecKey, ecKey.kid, stmtClaims("https://evil.example", stmtNow, nil)),
			codeUnapprovedStatement, `"https://evil.example" is not trusted`,
		},
		{
			"issuer differs in case",
			stmtSign(t, ecKey, ecKey.kid, stmtClaims("https://ISSUER.example", stmtNow, nil)),
			codeUnapprovedStatement, "not trusted",
		},
		{
			"no issuer",
			stmtSign(t, ecKey, ecKey.kid, claims(map[string]any{"iss": nil})),
			codeUnapprovedStatement, `"" is not trusted`,
		},
		{
			"issuer not a string",
			stmtSign(t, ecKey, ecKey.kid, claims(map[string]any{"iss": 7})),
			codeInvalidStatement, "JSON object of claims",
		},
		{
			"wrong RSA key, same kid",
			stmtSign(t, fakeRSA, fakeRSA.kid, claims(nil)),
			codeInvalidStatement, "signature does not verify",
		},
		{
			"wrong Ed25519 key, no kid",
			stmtSign(t, fakeEd, "", claims(nil)),
			codeInvalidStatement, "signature does not verify",
		},
		{
			"unknown kid",
			stmtSign(t, ecKey, "ec-unknown", claims(nil)),
			codeInvalidStatement, "signature does not verify",
		},
		{
			"kid of a key of another type",
			stmtSign(t, ecKey, rsaKey.kid, claims(nil)),
			codeInvalidStatement, "signature does not verify",
		},
		{
			"payload swapped",
			parts[0] + "." + otherPayload + "." + parts[2],
			codeInvalidStatement, "signature does not verify",
		},
		{
			"signature truncated",
			good[:len(good)-4],
			codeInvalidStatement, "signature does not verify",
		},
		{
			"signature empty",
			parts[0] + "." + parts[1] + ".",
			codeInvalidStatement, "signature does not verify",
		},
		{
			"alg none",
			stmtForge(`{"alg":"none"}`, string(payload), nil),
			codeInvalidStatement, "accepted algorithm",
		},
		{
			"alg none with a kid and a signature",
			stmtForge(`{"alg":"none","kid":"ec-1"}`, string(payload), []byte("sig")),
			codeInvalidStatement, "accepted algorithm",
		},
		{
			"alg None",
			stmtForge(`{"alg":"None"}`, string(payload), nil),
			codeInvalidStatement, "accepted algorithm",
		},
		{
			"HS256 keyed with the issuer's RSA key in PEM",
			stmtHMAC(rsaKey.kid, claims(nil), stmtPublicPEM(rsaKey)),
			codeInvalidStatement, "accepted algorithm",
		},
		{
			"HS256 keyed with the issuer's EC key in PEM",
			stmtHMAC(ecKey.kid, claims(nil), stmtPublicPEM(ecKey)),
			codeInvalidStatement, "accepted algorithm",
		},
		{
			"HS256 keyed with the issuer's JWK",
			stmtHMAC(rsaKey.kid, claims(nil), jwk),
			codeInvalidStatement, "accepted algorithm",
		},
		{
			"HS256 keyed with the whole key set",
			stmtHMAC("", claims(nil), stmtJWKS(stmtKeys()...)),
			codeInvalidStatement, "accepted algorithm",
		},
		{
			"algorithm no issuer accepts",
			stmtSign(t, rsaKey.withAlg(jose.PS256), rsaKey.kid, claims(nil)),
			codeInvalidStatement, "accepted algorithm",
		},
		{
			"algorithm another issuer accepts",
			stmtSign(t, rsaKey, rsaKey.kid,
				stmtClaims(esOnly.Issuer, stmtNow, nil)),
			codeInvalidStatement, `algorithm "RS256" is not accepted from this issuer`,
		},
		{
			"expired",
			stmtSign(t, ecKey, ecKey.kid, claims(map[string]any{"exp": before(2 * time.Minute)})),
			codeInvalidStatement, "has expired",
		},
		{
			"not valid before a future time",
			stmtSign(t, ecKey, ecKey.kid, claims(map[string]any{"nbf": after(2 * time.Minute)})),
			codeInvalidStatement, "not valid yet",
		},
		{
			"issued in the future",
			stmtSign(t, ecKey, ecKey.kid, claims(map[string]any{"iat": after(2 * time.Minute)})),
			codeInvalidStatement, "not valid yet",
		},
		{
			"exp not a number",
			stmtSign(t, ecKey, ecKey.kid, claims(map[string]any{"exp": "tomorrow"})),
			codeInvalidStatement, "malformed registered claims",
		},
		{
			"claims repeat a name",
			stmtSignRaw(t, ecKey, ecKey.kid, []byte(`{"iss":"`+stmtIssuer+
				`","client_name":"a","client_name":"b"}`)),
			codeInvalidStatement, "without repeated names",
		},
		{
			"issuer repeated to smuggle a trusted one",
			stmtSignRaw(t, fakeEd, fakeEd.kid, []byte(`{"iss":"https://evil.example",`+
				`"iss":"`+stmtIssuer+`"}`)),
			codeInvalidStatement, "signature does not verify",
		},
		{
			"issuer repeated, signed by the issuer",
			stmtSignRaw(t, edKey, edKey.kid, []byte(`{"iss":"https://evil.example",`+
				`"iss":"`+stmtIssuer+`"}`)),
			codeInvalidStatement, "without repeated names",
		},
		{"empty", "", codeInvalidStatement, "compact form"},
		{"one part", "abc", codeInvalidStatement, "compact form"},
		{"two parts", parts[0] + "." + parts[1], codeInvalidStatement, "compact form"},
		{"four parts", good + ".x", codeInvalidStatement, "compact form"},
		{"dots only", "..", codeInvalidStatement, "compact form"},
		{"not base64", "!!.??.**", codeInvalidStatement, "compact form"},
		{"header not JSON", stmtB64([]byte("alg")) + "." + parts[1] + "." + parts[2],
			codeInvalidStatement, "compact form"},
		{"JSON serialization", string(flat), codeInvalidStatement, "compact form"},
		{"padded base64", parts[0] + "==." + parts[1] + "." + parts[2],
			codeInvalidStatement, "compact form"},
		{
			"payload not JSON",
			stmtSignRaw(t, ecKey, ecKey.kid, []byte("client_name=x")),
			codeInvalidStatement, "JSON object of claims",
		},
		{
			"payload an array",
			stmtSignRaw(t, ecKey, ecKey.kid, []byte(`[{"iss":"`+stmtIssuer+`"}]`)),
			codeInvalidStatement, "JSON object of claims",
		},
		{
			"too long",
			stmtSign(t, ecKey, ecKey.kid, claims(map[string]any{
				"client_uri": "https://app.example/" + strings.Repeat("a", 16<<10),
			})),
			codeInvalidStatement, "longer than 16384 bytes",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			members, perr := v.verify(context.Background(), tc.raw, stmtNow)
			stmtWantRefused(t, members, perr, tc.code, tc.desc)
		})
	}
}

// TestStatementVerifyLeeway checks the minute of clock skew allowed on
// each time claim, on both sides of it.
func TestStatementVerifyLeeway(t *testing.T) {
	v := stmtVerifierFor(t)
	k := stmtKeyOf(jose.ES256)
	at := func(d time.Duration) int64 { return stmtNow.Add(d).Unix() }

	cases := []struct {
		name  string
		claim string
		value int64
		ok    bool
	}{
		{"exp just passed", "exp", at(-59 * time.Second), true},
		{"exp a minute passed", "exp", at(-61 * time.Second), false},
		{"nbf just ahead", "nbf", at(59 * time.Second), true},
		{"nbf a minute ahead", "nbf", at(61 * time.Second), false},
		{"iat just ahead", "iat", at(59 * time.Second), true},
		{"iat a minute ahead", "iat", at(61 * time.Second), false},
		{"iat long ago", "iat", at(-365 * 24 * time.Hour), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			claims := stmtClaims(stmtIssuer, stmtNow, map[string]any{tc.claim: tc.value})
			if tc.claim == "iat" {
				// A statement issued in the future must not also be
				// refused for being expired.
				claims["exp"] = at(time.Hour)
			}
			members, perr := v.verify(context.Background(),
				stmtSign(t, k, k.kid, claims), stmtNow)
			switch {
			case tc.ok && perr != nil:
				t.Errorf("refused: %v", perr)
			case !tc.ok:
				stmtWantRefused(t, members, perr, codeInvalidStatement, "")
			}
		})
	}

	// Without exp a statement does not expire.
	raw := stmtSign(t, k, k.kid, stmtClaims(stmtIssuer, stmtNow, map[string]any{"exp": nil}))
	if _, perr := v.verify(context.Background(), raw, stmtNow.AddDate(10, 0, 0)); perr != nil {
		t.Errorf("statement without exp refused: %v", perr)
	}
}

// TestStatementNoIssuers checks that without trusted issuers every
// statement, good or not, is unapproved rather than invalid, except one
// too long to look at.
func TestStatementNoIssuers(t *testing.T) {
	k := stmtKeyOf(jose.ES256)
	good := stmtSign(t, k, k.kid, stmtClaims(stmtIssuer, stmtNow, nil))
	empty, err := newStatementVerifier(nil, nil, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		v    *statementVerifier
	}{
		{"nil verifier", nil},
		{"no issuers", empty},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, raw := range []string{good, "garbage", ""} {
				members, perr := tc.v.verify(context.Background(), raw, stmtNow)
				stmtWantRefused(t, members, perr, codeUnapprovedStatement, "trusts no")
			}
			members, perr := tc.v.verify(context.Background(),
				strings.Repeat("a", maxStatementLength+1), stmtNow)
			stmtWantRefused(t, members, perr, codeInvalidStatement, "longer")
		})
	}
}

// TestStatementKeySelection checks how keys are chosen: by kid when the
// header names one, else every key; and that keys published for
// encryption or for another algorithm are never used.
func TestStatementKeySelection(t *testing.T) {
	ec := stmtKeyOf(jose.ES256)
	bare := ec.public()
	bare.KeyID, bare.Algorithm, bare.Use = "", "", ""
	enc := ec.public()
	enc.Use = "enc"
	otherAlg := ec.public()
	otherAlg.Algorithm = "ES384"
	rsaNoAlg := stmtKeyOf(jose.RS256).public()
	rsaNoAlg.Algorithm = ""

	cases := []struct {
		name string
		keys []jose.JSONWebKey
		kid  string
		ok   bool
	}{
		{"kid matches", []jose.JSONWebKey{rsaNoAlg, ec.public()}, ec.kid, true},
		{"no kid, every key tried", []jose.JSONWebKey{rsaNoAlg, bare}, "", true},
		{"kid names a key without kid", []jose.JSONWebKey{bare}, ec.kid, false},
		{"key for encryption", []jose.JSONWebKey{enc}, ec.kid, false},
		{"key for encryption, no kid", []jose.JSONWebKey{enc}, "", false},
		{"key for another algorithm", []jose.JSONWebKey{otherAlg}, ec.kid, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data, err := json.Marshal(jose.JSONWebKeySet{Keys: tc.keys})
			if err != nil {
				t.Fatal(err)
			}
			file := stmtWriteFile(t, "jwks.json", data)
			v, err := newStatementVerifier([]SoftwareStatementIssuer{
				{Issuer: stmtIssuer, JWKSFile: file},
			}, nil, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			raw := stmtSign(t, ec, tc.kid, stmtClaims(stmtIssuer, stmtNow, nil))
			members, perr := v.verify(context.Background(), raw, stmtNow)
			if tc.ok && perr != nil {
				t.Errorf("refused: %v", perr)
			}
			if !tc.ok {
				stmtWantRefused(t, members, perr, codeInvalidStatement,
					"signature does not verify")
			}
		})
	}
}

// TestParseJWKS covers the key sets an issuer may and may not publish.
func TestParseJWKS(t *testing.T) {
	rsaKey, ecKey, edKey := stmtKeyOf(jose.RS256), stmtKeyOf(jose.ES256),
		stmtKeyOf(jose.EdDSA)
	private := func(k stmtKey) jose.JSONWebKey {
		return jose.JSONWebKey{Key: k.priv, KeyID: k.kid, Algorithm: string(k.alg)}
	}
	set := func(keys ...jose.JSONWebKey) string {
		b, err := json.Marshal(jose.JSONWebKeySet{Keys: keys})
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	oct := jose.JSONWebKey{Key: []byte("0123456789abcdef0123456789abcdef"), KeyID: "hmac"}

	cases := []struct {
		name string
		data string
		want string // substring of the error; "" to accept
	}{
		{"one of each type", string(stmtJWKS(stmtKeys()...)), ""},
		{"RSA", set(rsaKey.public()), ""},
		{"Ed25519 without kid", `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"` +
			stmtB64(edKey.priv.Public().(ed25519.PublicKey)) + `"}]}`, ""},
		{"private RSA key", set(private(rsaKey)), `key 0 (kid "rsa-1") is not a valid public key`},
		{"private EC key", set(private(ecKey)), "not a valid public key"},
		{"private Ed25519 key", set(private(edKey)), "not a valid public key"},
		{"private key after a public one", set(ecKey.public(), private(edKey)),
			`key 1 (kid "ed-1")`},
		{"symmetric key", set(oct), `kid "hmac") is not a valid public key`},
		{"no keys", `{"keys":[]}`, "holds no keys"},
		{"keys null", `{"keys":null}`, "holds no keys"},
		{"empty object", `{}`, "holds no keys"},
		{"single JWK, not a set", string(must(json.Marshal(ecKey.public()))), "holds no keys"},
		{"empty key", `{"keys":[{}]}`, "not a JSON Web Key Set"},
		{"unknown key type", `{"keys":[{"kty":"XYZ"}]}`, "not a JSON Web Key Set"},
		{"EC point off the curve", `{"keys":[{"kty":"EC","crv":"P-256","x":"AQ","y":"AQ"}]}`,
			"not a JSON Web Key Set"},
		{"keys not an array", `{"keys":{}}`, "not a JSON Web Key Set"},
		{"array", `[]`, "not a JSON Web Key Set"},
		{"not JSON", `keys`, "not a JSON Web Key Set"},
		{"empty", ``, "not a JSON Web Key Set"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseJWKS([]byte(tc.data))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				for i, k := range got.Keys {
					if !k.Valid() || !k.IsPublic() {
						t.Errorf("key %d is not a valid public key", i)
					}
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
			if got != nil {
				t.Errorf("set %v returned with error", got)
			}
		})
	}
}

// must returns v and panics on err, for values built from constants.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestStatementValidateIssuers covers issuer configurations, which Validate checks
// without reading any file.
func TestStatementValidateIssuers(t *testing.T) {
	ok := func(iss string) SoftwareStatementIssuer {
		return SoftwareStatementIssuer{Issuer: iss, JWKSFile: "/nonexistent/jwks.json"}
	}
	withAlgs := func(algs ...string) SoftwareStatementIssuer {
		i := ok(stmtIssuer)
		i.Algorithms = algs
		return i
	}
	cases := []struct {
		name    string
		issuers []SoftwareStatementIssuer
		want    string // substring of the error; "" to accept
	}{
		{"none", nil, ""},
		{"file", []SoftwareStatementIssuer{ok(stmtIssuer)}, ""},
		{"url", []SoftwareStatementIssuer{
			{Issuer: stmtIssuer, JWKSURL: "https://issuer.example/jwks"},
		}, ""},
		{"two issuers", []SoftwareStatementIssuer{ok("a"), ok("b")}, ""},
		{"every asymmetric algorithm", []SoftwareStatementIssuer{withAlgs(
			"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
			"ES256", "ES384", "ES512", "EdDSA")}, ""},
		{"no issuer", []SoftwareStatementIssuer{ok("")}, "issuer is required"},
		{"duplicate issuer", []SoftwareStatementIssuer{ok("a"), ok("b"), ok("a")},
			`software_statement "a": issuer given more than once`},
		{"both key sources", []SoftwareStatementIssuer{{
			Issuer: "a", JWKSFile: "f", JWKSURL: "https://a/jwks",
		}}, "give exactly one of jwks_file and jwks_url"},
		{"no key source", []SoftwareStatementIssuer{{Issuer: "a"}},
			"give exactly one of jwks_file and jwks_url"},
		{"http jwks_url", []SoftwareStatementIssuer{{
			Issuer: "a", JWKSURL: "http://a/jwks",
		}}, `jwks_url "http://a/jwks" must be an https URL`},
		{"HS256", []SoftwareStatementIssuer{withAlgs("ES256", "HS256")},
			`algorithm "HS256" is not accepted`},
		{"HS512", []SoftwareStatementIssuer{withAlgs("HS512")}, `"HS512"`},
		{"none", []SoftwareStatementIssuer{withAlgs("none")}, `algorithm "none"`},
		{"lower case", []SoftwareStatementIssuer{withAlgs("es256")}, `"es256"`},
		{"encryption algorithm", []SoftwareStatementIssuer{withAlgs("RSA-OAEP")},
			`"RSA-OAEP"`},
		{"empty algorithm", []SoftwareStatementIssuer{withAlgs("")}, `algorithm ""`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := validateIssuers(tc.issuers)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// TestNewStatementVerifier checks what construction reads: key files, at
// once, and not URLs, and the default algorithms.
func TestNewStatementVerifier(t *testing.T) {
	ec := stmtKeyOf(jose.ES256)
	good := stmtWriteFile(t, "good.json", stmtJWKS(ec))
	privSet := must(json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: ec.priv, KeyID: "leaked"},
	}}))
	priv := stmtWriteFile(t, "private.json", privSet)
	garbage := stmtWriteFile(t, "garbage.json", []byte("not json"))

	cases := []struct {
		name string
		iss  SoftwareStatementIssuer
		want string // substring of the error; "" to accept
	}{
		{"file", SoftwareStatementIssuer{Issuer: "a", JWKSFile: good}, ""},
		{"url, not fetched yet", SoftwareStatementIssuer{
			Issuer: "a", JWKSURL: "https://192.0.2.1/jwks",
		}, ""},
		{"missing file", SoftwareStatementIssuer{
			Issuer: "a", JWKSFile: filepath.Join(t.TempDir(), "missing.json"),
		}, `software_statement "a": reading jwks_file`},
		{"private key", SoftwareStatementIssuer{Issuer: "a", JWKSFile: priv},
			`software_statement "a": jwks_file ` + priv + `: key 0 (kid "leaked") ` +
				"is not a valid public key"},
		{"not JSON", SoftwareStatementIssuer{Issuer: "a", JWKSFile: garbage},
			"not a JSON Web Key Set"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// A nil fetcher would panic if construction fetched.
			v, err := newStatementVerifier([]SoftwareStatementIssuer{tc.iss}, nil, zap.NewNop())
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("error %v, want %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ti := v.issuers["a"]
			want := []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.EdDSA}
			if !slices.Equal(ti.algs, want) || !slices.Equal(v.algs, want) {
				t.Errorf("algorithms %v (all %v), want %v", ti.algs, v.algs, want)
			}
			if (ti.keys != nil) != (tc.iss.JWKSFile != "") {
				t.Errorf("keys %v for %+v", ti.keys, tc.iss)
			}
		})
	}
}

// stmtProvision parses a dcr Caddyfile block and provisions and validates
// the handler as Caddy would load it, returning the first error.
func stmtProvision(t *testing.T, block string) error {
	t.Helper()
	var h Handler
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(block)); err != nil {
		return err
	}
	h.Store = filepath.Join(t.TempDir(), "clients.db")
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	defer h.Cleanup()
	if err := h.Provision(ctx); err != nil {
		return err
	}
	return h.Validate()
}

// TestStatementConfigErrors loads software_statement configurations that
// must fail, through the Caddyfile, Provision and Validate, and checks
// that each error says what is wrong.
func TestStatementConfigErrors(t *testing.T) {
	ec := stmtKeyOf(jose.ES256)
	good := stmtWriteFile(t, "good.json", stmtJWKS(ec))
	priv := stmtWriteFile(t, "private.json", must(json.Marshal(jose.JSONWebKeySet{
		Keys: []jose.JSONWebKey{{Key: ec.priv, KeyID: "ec-1"}},
	})))
	block := func(lines ...string) string {
		return "dcr {\n\tsoftware_statement {\n\t\t" +
			strings.Join(lines, "\n\t\t") + "\n\t}\n}"
	}

	cases := []struct {
		name  string
		block string
		want  string // substring of the error; "" to accept
	}{
		{"file", block("issuer a", "jwks_file "+good), ""},
		{"url", block("issuer a", "jwks_url https://a.example/jwks"), ""},
		{"algorithms", block("issuer a", "jwks_file "+good, "algorithms ES256 PS512"), ""},
		{"HS256", block("issuer a", "jwks_file "+good, "algorithms ES256 HS256"),
			`algorithm "HS256" is not accepted`},
		{"none", block("issuer a", "jwks_file "+good, "algorithms none"),
			`algorithm "none" is not accepted`},
		{"both key sources", block("issuer a", "jwks_file "+good,
			"jwks_url https://a.example/jwks"), "give exactly one of jwks_file and jwks_url"},
		{"no key source", block("issuer a"), "give exactly one of jwks_file and jwks_url"},
		{"no issuer", block("jwks_file " + good), "software_statement: issuer is required"},
		{"duplicate issuer", "dcr {\n" +
			"software_statement {\nissuer a\njwks_file " + good + "\n}\n" +
			"software_statement {\nissuer a\njwks_url https://a.example/jwks\n}\n}",
			`software_statement "a": issuer given more than once`},
		{"private key in jwks_file", block("issuer a", "jwks_file "+priv),
			`jwks_file ` + priv + `: key 0 (kid "ec-1") is not a valid public key`},
		{"missing jwks_file", block("issuer a", "jwks_file "+good+".missing"),
			"reading jwks_file"},
		{"http jwks_url", block("issuer a", "jwks_url http://a.example/jwks"),
			"must be an https URL"},
		{"repeated subdirective", block("issuer a", "issuer b", "jwks_file "+good),
			"software_statement: subdirective issuer given more than once"},
		{"unknown subdirective", block("issuer a", "jwks_file "+good, "audience x"),
			"software_statement: unknown subdirective audience"},
		{"issuer without value", block("issuer", "jwks_file "+good), "wrong argument count"},
		{"algorithms without value", block("issuer a", "jwks_file "+good, "algorithms"),
			"wrong argument count"},
		{"require on", "dcr {\n\trequire_software_statement on\n}", ""},
		{"require maybe", "dcr {\n\trequire_software_statement maybe\n}",
			`require_software_statement: expected on or off, got "maybe"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := stmtProvision(t, tc.block)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// TestStatementMergeMembers checks that claims take the place of body members of
// the same name and that claims naming issued values are dropped.
func TestStatementMergeMembers(t *testing.T) {
	m := func(kv ...string) []member {
		var out []member
		for i := 0; i < len(kv); i += 2 {
			out = append(out, member{name: kv[i], value: json.RawMessage(kv[i+1])})
		}
		return out
	}
	cases := []struct {
		name         string
		body, claims []member
		want         []member
	}{
		{
			name:   "no claims",
			body:   m("client_name", `"plain"`, "scope", `"a"`),
			want:   m("client_name", `"plain"`, "scope", `"a"`),
			claims: nil,
		},
		{
			name:   "claim replaces member",
			body:   m("client_name", `"plain"`, "scope", `"a"`),
			claims: m("client_name", `"signed"`),
			want:   m("scope", `"a"`, "client_name", `"signed"`),
		},
		{
			name:   "claim added",
			body:   m("scope", `"a"`),
			claims: m("redirect_uris", `["https://b/cb"]`),
			want:   m("scope", `"a"`, "redirect_uris", `["https://b/cb"]`),
		},
		{
			name:   "claim of another type replaces",
			body:   m("client_name", `"plain"`),
			claims: m("client_name", `null`),
			want:   m("client_name", `null`),
		},
		{
			// The presenter must not dress a signed name or logo in
			// language variants of its own.
			name: "claim replaces the member's language variants",
			body: m("client_name#en", `"Acme Login"`, "logo_uri#fr", `"https://evil/l.png"`,
				"tos_uri#de", `"https://app/tos"`),
			claims: m("client_name", `"Acme"`, "logo_uri", `"https://acme/l.png"`),
			want: m("tos_uri#de", `"https://app/tos"`, "client_name", `"Acme"`,
				"logo_uri", `"https://acme/l.png"`),
		},
		{
			name: "claims of issued values dropped",
			body: m("scope", `"a"`),
			claims: m("client_id", `"chosen"`, "client_secret", `"s"`,
				"software_statement", `"x.y.z"`,
				"registration_access_token", `"t"`,
				"registration_client_uri", `"https://evil/"`,
				"client_secret_expires_at", `0`, "client_id_issued_at", `1`,
				"client_name", `"signed"`),
			want: m("scope", `"a"`, "client_name", `"signed"`),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := mergeMembers(tc.body, tc.claims)
			if !reflect.DeepEqual(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
				t.Errorf("merged %s, want %s", stmtFormat(got), stmtFormat(tc.want))
			}
		})
	}
}

// TestStatementMergeIgnoredClaimKeepsBody shows that a claim mergeMembers
// ignores (client_id, client_secret, software_statement, the issued
// values) still removes the body member of that name. Its godoc says such
// claims are ignored; instead they silence the checks an RFC 7592 update
// makes on those members: a statement carrying a client_secret claim lets
// an update with a wrong client_secret through, and one carrying a
// registration_access_token claim hides that member from the
// update_issued_member check.
func TestStatementMergeIgnoredClaimKeepsBody(t *testing.T) {
	for _, name := range []string{
		"client_id", "client_secret", "registration_access_token",
		"software_statement",
	} {
		t.Run(name, func(t *testing.T) {
			body := []member{{name: name, value: json.RawMessage(`"from-body"`)}}
			claims := []member{{name: name, value: json.RawMessage(`"from-claim"`)}}
			if got := mergeMembers(body, claims); !reflect.DeepEqual(got, body) {
				t.Errorf("merged %s, want the body member kept: %s",
					stmtFormat(got), stmtFormat(body))
			}
		})
	}

	// The effect on an update: the wrong secret in the body is not seen.
	verify := func(string) ([]member, *protoError) {
		return []member{{name: "client_secret", value: json.RawMessage(`"x"`)}}, nil
	}
	req, perr := decodeRequestWith([]byte(`{"client_secret":"wrong",`+
		`"registration_access_token":"t","software_statement":"a.b.c"}`), verify)
	if perr != nil {
		t.Fatal(perr)
	}
	if string(req.clientSecret) != `"wrong"` {
		t.Errorf("client_secret %s, want the body's \"wrong\"", req.clientSecret)
	}
}

// TestStatementDecodeRequest checks decodeRequestWith with a real
// verifier: claims take precedence, the statement is kept as sent, and a
// statement that is not a string is a metadata type error.
func TestStatementDecodeRequest(t *testing.T) {
	v := stmtVerifierFor(t)
	verify := func(s string) ([]member, *protoError) {
		return v.verify(context.Background(), s, stmtNow)
	}
	k := stmtKeyOf(jose.EdDSA)
	raw := stmtSign(t, k, k.kid, stmtClaims(stmtIssuer, stmtNow, map[string]any{
		"client_name":   "signed",
		"redirect_uris": []string{"https://signed.example/cb"},
		"client_id":     "chosen-by-issuer",
	}))

	t.Run("claims take precedence", func(t *testing.T) {
		body := `{"client_name":"plain","redirect_uris":["https://plain.example/cb"],` +
			`"logo_uri":"https://plain.example/logo.png","software_statement":"` + raw + `"}`
		req, perr := decodeRequestWith([]byte(body), verify)
		if perr != nil {
			t.Fatal(perr)
		}
		if req.ClientName != "signed" || !slices.Equal(req.RedirectURIs,
			[]string{"https://signed.example/cb"}) {
			t.Errorf("client_name %q redirect_uris %v, want the statement's",
				req.ClientName, req.RedirectURIs)
		}
		if req.LogoURI != "https://plain.example/logo.png" {
			t.Errorf("logo_uri %q, want the body's", req.LogoURI)
		}
		if req.SoftwareID != "4NRB1-0XZABZI9E6-5SM3R" {
			t.Errorf("software_id %q, want the statement's", req.SoftwareID)
		}
		if req.SoftwareStatement != raw {
			t.Errorf("software_statement %q, want it as sent", req.SoftwareStatement)
		}
		if req.clientID != nil {
			t.Errorf("client_id %s taken from the statement", req.clientID)
		}
	})

	for _, tc := range []struct {
		name string
		body string
		code string
		desc string
	}{
		{"number", `{"software_statement":42}`, codeInvalidClientMetadata,
			"software_statement must be a string"},
		{"object", `{"software_statement":{"alg":"none"}}`, codeInvalidClientMetadata,
			"software_statement must be a string"},
		{"array", `{"software_statement":["` + raw + `"]}`, codeInvalidClientMetadata,
			"software_statement must be a string"},
		{"garbage", `{"software_statement":"x"}`, codeInvalidStatement, "compact form"},
		{"untrusted", `{"software_statement":"` + stmtSign(t, k, k.kid,
			stmtClaims("https://evil.example", stmtNow, nil)) + `"}`,
			codeUnapprovedStatement, "not trusted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, perr := decodeRequestWith([]byte(tc.body), verify)
			if perr == nil || perr.Code != tc.code || perr.Status != http.StatusBadRequest ||
				!strings.Contains(perr.Description, tc.desc) {
				t.Errorf("error %v (request %+v), want 400 %s %q", perr, req, tc.code, tc.desc)
			}
		})
	}

	// Absent, null and empty statements are no statement; the policy of
	// require_software_statement is decodeVerified's.
	for _, body := range []string{`{}`, `{"software_statement":null}`,
		`{"software_statement":""}`} {
		req, perr := decodeRequestWith([]byte(body), verify)
		if perr != nil {
			t.Errorf("%s: %v", body, perr)
		} else if req.SoftwareStatement != "" {
			t.Errorf("%s: statement %q", body, req.SoftwareStatement)
		}
	}

	// Without a verifier the statement is dropped unread.
	req, perr := decodeRequest([]byte(`{"software_statement":"` + raw + `"}`))
	if perr != nil || req.SoftwareStatement != "" || req.ClientName != "" {
		t.Errorf("decodeRequest: error %v, request %+v", perr, req)
	}
}

// stmtJWKSServer is an issuer's key set on an https server the test
// controls: it counts requests, changes keys and goes down.
type stmtJWKSServer struct {
	*httptest.Server
	pem  string // the server's certificate, for trusted_roots
	hits atomic.Int64

	mu     sync.Mutex
	body   []byte
	status int
}

// newStmtJWKSServer starts an https server publishing keys at /jwks.
func newStmtJWKSServer(t *testing.T, keys ...stmtKey) *stmtJWKSServer {
	t.Helper()
	s := &stmtJWKSServer{body: stmtJWKS(keys...), status: http.StatusOK}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter,
		r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		body, status := s.body, s.status
		s.mu.Unlock()
		if r.URL.Path != "/jwks" {
			status = http.StatusNotFound
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write(body)
	}))
	// Refused handshakes are expected; they need not fill the output.
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.StartTLS()
	t.Cleanup(s.Close)
	s.pem = stmtWriteFile(t, "jwks-ca.pem", pem.EncodeToMemory(&pem.Block{
		Type: "CERTIFICATE", Bytes: s.Certificate().Raw,
	}))
	return s
}

// publish makes the server answer with status and body from now on.
func (s *stmtJWKSServer) publish(status int, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.body = status, body
}

// jwksURL is the URL of the key set.
func (s *stmtJWKSServer) jwksURL() string {
	return s.URL + "/jwks"
}

// stmtURLVerifier returns a verifier trusting stmtIssuer with the keys at
// srv, fetched by a fetcher that trusts srv's certificate and, with
// loopback, may connect to it; and the verifier's log.
func stmtURLVerifier(t *testing.T, srv *stmtJWKSServer, loopback bool) (
	*statementVerifier, *observer.ObservedLogs) {
	t.Helper()
	cfg := &FetchConfig{TrustedRoots: []string{srv.pem}}
	if loopback {
		cfg.AllowNetworks = []string{"127.0.0.1/32", "::1/128"}
	}
	f, err := cfg.newFetcher()
	if err != nil {
		t.Fatal(err)
	}
	issuers := []SoftwareStatementIssuer{{Issuer: stmtIssuer, JWKSURL: srv.jwksURL()}}
	if err := validateIssuers(issuers); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	v, err := newStatementVerifier(issuers, f, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	return v, logs
}

// TestStatementJWKSURL follows an issuer's keys behind a URL through
// time: fetched on first use, cached for an hour, fetched early at most
// once a minute for an unknown kid, and kept when fetches fail.
func TestStatementJWKSURL(t *testing.T) {
	old := stmtKeyOf(jose.ES256)
	rotated := stmtNewKey(jose.ES256, "ec-2")
	srv := newStmtJWKSServer(t, old)
	v, logs := stmtURLVerifier(t, srv, true)

	t0 := stmtNow
	step := func(name string, at time.Duration, k stmtKey, ok bool, hits int64) {
		t.Helper()
		now := t0.Add(at)
		raw := stmtSign(t, k, k.kid, stmtClaims(stmtIssuer, now, nil))
		members, perr := v.verify(context.Background(), raw, now)
		switch {
		case ok && perr != nil:
			t.Errorf("%s: refused: %v", name, perr)
		case !ok && perr == nil:
			t.Errorf("%s: accepted with members %s", name, stmtFormat(members))
		case !ok && (perr.Code != codeInvalidStatement || members != nil):
			t.Errorf("%s: error %v, want %s", name, perr, codeInvalidStatement)
		}
		if got := srv.hits.Load(); got != hits {
			t.Errorf("%s: %d fetches so far, want %d", name, got, hits)
		}
	}

	step("first use fetches", 0, old, true, 1)

	// The issuer rotates: a new kid is unknown until the next fetch,
	// which waits for a minute after the last one.
	third := stmtNewKey(jose.ES256, "ec-3")
	srv.publish(http.StatusOK, stmtJWKS(rotated))
	step("new kid within the minute", 30*time.Second, rotated, false, 1)
	step("known kid cached", 30*time.Minute, old, true, 1)
	step("new kid after the minute", 30*time.Minute, rotated, true, 2)
	step("old kid gone", 30*time.Minute+20*time.Second, old, false, 2)
	srv.publish(http.StatusOK, stmtJWKS(rotated, third))
	step("another new kid within the minute", 30*time.Minute+50*time.Second,
		third, false, 2)
	step("another new kid after the minute", 31*time.Minute+time.Second, third, true, 3)

	// The server goes down: the keys fetched before stay in use, past
	// their hour, and each failure is logged.
	srv.publish(http.StatusServiceUnavailable, []byte("down"))
	step("down, cached", 40*time.Minute, rotated, true, 3)
	step("down, unknown kid fetches and fails", 45*time.Minute,
		stmtNewKey(jose.ES256, "ec-4"), false, 4)
	step("down, unknown kid within the minute of the failure",
		45*time.Minute+30*time.Second, stmtNewKey(jose.ES256, "ec-5"), false, 4)
	step("down, kept past the hour", 2*time.Hour, rotated, true, 5)
	failed := logs.FilterMessage("fetching software statement issuer keys failed").All()
	if len(failed) != 2 {
		t.Fatalf("%d fetch failures logged, want 2", len(failed))
	}
	for _, e := range failed {
		f := e.ContextMap()
		if f["issuer"] != stmtIssuer || f["jwks_url"] != srv.jwksURL() ||
			f["using_previous_keys"] != true || e.Level != zapcore.WarnLevel {
			t.Errorf("failure logged as %v %v", e.Level, f)
		}
	}

	// A server that answers with something that is not a public key set
	// does not replace the keys either.
	srv.publish(http.StatusOK, must(json.Marshal(jose.JSONWebKeySet{
		Keys: []jose.JSONWebKey{{Key: rotated.priv, KeyID: rotated.kid}},
	})))
	step("private keys published", 3*time.Hour+time.Second, rotated, true, 6)
	srv.publish(http.StatusOK, []byte(`{"keys":[]}`))
	step("empty set published", 4*time.Hour+2*time.Second, rotated, true, 7)

	// Once it is back, the next fetch takes the new set.
	srv.publish(http.StatusOK, stmtJWKS(old))
	step("back with the old key", 5*time.Hour+3*time.Second, old, true, 8)
	step("rotated key dropped", 5*time.Hour+4*time.Second, rotated, false, 8)
}

// TestStatementJWKSURLFailures checks that a statement is refused as
// invalid, with the fetch's cause kept from the client, when keys cannot
// be had, and that a failed first fetch is retried.
func TestStatementJWKSURLFailures(t *testing.T) {
	k := stmtKeyOf(jose.EdDSA)
	raw := stmtSign(t, k, k.kid, stmtClaims(stmtIssuer, stmtNow, nil))

	t.Run("loopback not allowed", func(t *testing.T) {
		srv := newStmtJWKSServer(t, k)
		v, logs := stmtURLVerifier(t, srv, false)
		members, perr := v.verify(context.Background(), raw, stmtNow)
		stmtWantRefused(t, members, perr, codeInvalidStatement, "signature does not verify")
		if !strings.Contains(fmt.Sprint(perr.Cause), "not public") {
			t.Errorf("cause %v does not say why", perr.Cause)
		}
		if strings.Contains(perr.Description, "127.0.0.1") {
			t.Errorf("description %q names the address", perr.Description)
		}
		if n := srv.hits.Load(); n != 0 {
			t.Errorf("the server was reached %d times", n)
		}
		if n := logs.FilterMessage("fetching software statement issuer keys failed").
			FilterField(zap.Bool("using_previous_keys", false)).Len(); n != 1 {
			t.Errorf("%d fetch failures logged, want 1", n)
		}
	})

	t.Run("untrusted certificate", func(t *testing.T) {
		srv := newStmtJWKSServer(t, k)
		f, err := (&FetchConfig{AllowNetworks: []string{"127.0.0.1/32"}}).newFetcher()
		if err != nil {
			t.Fatal(err)
		}
		v, err := newStatementVerifier([]SoftwareStatementIssuer{
			{Issuer: stmtIssuer, JWKSURL: srv.jwksURL()},
		}, f, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		members, perr := v.verify(context.Background(), raw, stmtNow)
		stmtWantRefused(t, members, perr, codeInvalidStatement, "signature does not verify")
	})

	t.Run("first fetch fails, next succeeds", func(t *testing.T) {
		srv := newStmtJWKSServer(t, k)
		srv.publish(http.StatusInternalServerError, nil)
		v, _ := stmtURLVerifier(t, srv, true)
		members, perr := v.verify(context.Background(), raw, stmtNow)
		stmtWantRefused(t, members, perr, codeInvalidStatement, "signature does not verify")

		srv.publish(http.StatusOK, stmtJWKS(k))
		later := stmtNow.Add(2 * time.Minute)
		raw := stmtSign(t, k, k.kid, stmtClaims(stmtIssuer, later, nil))
		if _, perr := v.verify(context.Background(), raw, later); perr != nil {
			t.Errorf("refused once the keys are served: %v", perr)
		}
	})
}

// TestStatementJWKSURLColdFailureRate shows that while an issuer's keys
// have never been fetched, every statement naming the issuer fetches its
// jwks_url again: jwksRefetchAfter applies only once some keys are held.
// With the key server down or slow, anyone can make the server fetch on
// every registration, each fetch holding the issuer's lock for up to the
// fetch timeout, so that registrations naming the issuer queue behind it.
func TestStatementJWKSURLColdFailureRate(t *testing.T) {
	k := stmtKeyOf(jose.ES256)
	srv := newStmtJWKSServer(t, k)
	srv.publish(http.StatusServiceUnavailable, nil)
	v, _ := stmtURLVerifier(t, srv, true)
	for i := range 5 {
		now := stmtNow.Add(time.Duration(i) * time.Second)
		raw := stmtSign(t, k, k.kid, stmtClaims(stmtIssuer, now, nil))
		members, perr := v.verify(context.Background(), raw, now)
		stmtWantRefused(t, members, perr, codeInvalidStatement, "signature does not verify")
	}
	if n := srv.hits.Load(); n != 1 {
		t.Errorf("%d fetches within 5 seconds, want 1", n)
	}
}

// TestStatementJWKSURLConcurrent verifies from many goroutines at once on
// a cold cache: one fetch serves them all, and the race detector watches
// the cache.
func TestStatementJWKSURLConcurrent(t *testing.T) {
	keys := stmtKeys()
	srv := newStmtJWKSServer(t, keys...)
	v, _ := stmtURLVerifier(t, srv, true)

	var wg sync.WaitGroup
	errs := make(chan error, 3*8)
	for i := range 3 * 8 {
		k := keys[i%len(keys)]
		raw := stmtSign(t, k, k.kid, stmtClaims(stmtIssuer, stmtNow, nil))
		wg.Go(func() {
			if _, perr := v.verify(context.Background(), raw, stmtNow); perr != nil {
				errs <- perr
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := srv.hits.Load(); n != 1 {
		t.Errorf("%d fetches, want 1", n)
	}
}

// TestStatementRegisteredClaimsOnly checks that a statement of nothing
// but registered claims yields no members: they describe the statement,
// not the client.
func TestStatementRegisteredClaimsOnly(t *testing.T) {
	v := stmtVerifierFor(t)
	k := stmtKeyOf(jose.RS256)
	claims := stmtClaims(stmtIssuer, stmtNow, map[string]any{
		"client_name": nil, "software_id": nil, "nbf": stmtNow.Unix(),
	})
	members, perr := v.verify(context.Background(), stmtSign(t, k, k.kid, claims), stmtNow)
	if perr != nil {
		t.Fatal(perr)
	}
	if len(members) != 0 {
		t.Errorf("members %s from a statement of registered claims only",
			stmtFormat(members))
	}
}
