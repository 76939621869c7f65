package dcr

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"
)

// FuzzSoftwareStatement feeds arbitrary strings to a verifier that trusts
// one issuer. It must never panic; it refuses with a well-formed 400 of
// one of the two statement codes; and whatever it accepts really carries
// a signature of the issuer's, checked here independently, and yields
// only metadata members.
func FuzzSoftwareStatement(f *testing.F) {
	keys := stmtKeys()
	jwks := stmtJWKS(keys...)
	file := stmtWriteFile(f, "jwks.json", jwks)
	v, err := newStatementVerifier([]SoftwareStatementIssuer{
		{Issuer: stmtIssuer, JWKSFile: file},
	}, nil, zap.NewNop())
	if err != nil {
		f.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(jwks, &set); err != nil {
		f.Fatal(err)
	}

	claims := stmtClaims(stmtIssuer, stmtNow, map[string]any{
		"redirect_uris": []string{"https://app.example/cb"},
		"grant_types":   []string{"authorization_code"},
		"client_id":     "chosen",
	})
	payload := string(must(json.Marshal(claims)))
	for _, k := range keys {
		good := stmtSign(f, k, k.kid, claims)
		parts := strings.Split(good, ".")
		f.Add(good)
		f.Add(stmtSign(f, k, "", claims))
		f.Add(good[:len(good)-1])
		f.Add(good[:len(good)/2])
		f.Add(parts[0] + "." + parts[1] + ".")
		f.Add(parts[0] + ".." + parts[2])
		f.Add(good + ".")
		f.Add(strings.ToUpper(good))
		f.Add(stmtHMAC(k.kid, claims, stmtPublicPEM(k)))
		f.Add(string(must(json.Marshal(map[string]string{
			"protected": parts[0], "payload": parts[1], "signature": parts[2],
		}))))
	}
	ec := stmtKeyOf(jose.ES256)
	for _, seed := range []string{
		stmtSign(f, ec, ec.kid, stmtClaims("https://evil.example", stmtNow, nil)),
		stmtSign(f, ec, ec.kid, stmtClaims(stmtIssuer, stmtNow.Add(-time.Hour),
			map[string]any{"exp": stmtNow.Add(-time.Hour).Unix()})),
		stmtSign(f, ec, ec.kid, stmtClaims(stmtIssuer, stmtNow,
			map[string]any{"nbf": stmtNow.Add(time.Hour).Unix()})),
		stmtSign(f, ec, ec.kid, stmtClaims(stmtIssuer, stmtNow,
			map[string]any{"exp": "soon", "aud": 5})),
		stmtSignRaw(f, ec, ec.kid, []byte(`{"iss":"`+stmtIssuer+`","a":1,"a":2}`)),
		stmtSignRaw(f, ec, ec.kid, []byte(`{"iss":"`+stmtIssuer+`"}`)),
		stmtSignRaw(f, ec, ec.kid, []byte(`["`+stmtIssuer+`"]`)),
		stmtSignRaw(f, ec, ec.kid, []byte(`null`)),
		stmtSignRaw(f, ec, ec.kid, []byte{}),
		stmtSign(f, stmtNewKey(jose.ES256, ec.kid), ec.kid, claims),
		stmtForge(`{"alg":"none"}`, payload, nil),
		stmtForge(`{"alg":"none","kid":"ec-1"}`, payload, []byte("x")),
		stmtForge(`{"alg":"HS256","kid":"rsa-1"}`, payload, []byte("mac")),
		stmtForge(`{"alg":"ES256","crit":["exp"],"exp":1}`, payload, []byte("s")),
		stmtForge(`{"alg":"ES256","b64":false,"crit":["b64"]}`, payload, []byte("s")),
		stmtForge(`{"alg":"ES256","jwk":`+string(must(json.Marshal(
			stmtNewKey(jose.ES256, "attacker").public())))+`}`, payload, []byte("s")),
		stmtForge(`{"alg":"RS256","kid":"../../etc/passwd"}`, payload, nil),
		stmtForge(`{"alg":["RS256"]}`, payload, nil),
		stmtForge(`{}`, `{}`, nil),
		stmtForge(`null`, `null`, nil),
		"", ".", "..", "...", "a.b.c", "e30.e30.", "e30.e30.e30",
		"\x00.\xff.\u2028",
		strings.Repeat("a", maxStatementLength+1),
	} {
		f.Add(seed)
	}

	f.Fuzz(func(t *testing.T, raw string) {
		members, perr := v.verify(context.Background(), raw, stmtNow)
		if perr != nil {
			if members != nil {
				t.Fatalf("members %s returned with %v", stmtFormat(members), perr)
			}
			if perr.Status != http.StatusBadRequest ||
				(perr.Code != codeInvalidStatement && perr.Code != codeUnapprovedStatement) ||
				perr.Description == "" || perr.Rule == "" {
				t.Fatalf("malformed error %#v", perr)
			}
			return
		}

		// Accepted: the issuer must really have signed it.
		jws, err := jose.ParseSignedCompact(raw,
			[]jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.EdDSA})
		if err != nil {
			t.Fatalf("accepted a statement jose cannot parse: %v", err)
		}
		var verified []byte
		for i := range set.Keys {
			if p, err := jws.Verify(&set.Keys[i]); err == nil {
				verified = p
				break
			}
		}
		if verified == nil {
			t.Fatalf("accepted a statement no issuer key verifies: %q", raw)
		}
		var c struct {
			Issuer string `json:"iss"`
		}
		if json.Unmarshal(verified, &c) != nil || c.Issuer != stmtIssuer {
			t.Fatalf("accepted a statement of issuer %q", c.Issuer)
		}

		seen := make(map[string]bool)
		for _, m := range members {
			if slices.Contains(registeredClaims, m.name) || seen[m.name] {
				t.Fatalf("member %q registered or repeated", m.name)
			}
			seen[m.name] = true
			if !json.Valid(m.value) {
				t.Fatalf("member %q is not JSON: %q", m.name, m.value)
			}
		}
	})
}

// FuzzJWKS feeds arbitrary bytes to parseJWKS. It must never panic, and a
// set it returns holds at least one key, every one a valid public key of
// and survives encoding and parsing again.
func FuzzJWKS(f *testing.F) {
	keys := stmtKeys()
	f.Add(stmtJWKS(keys...))
	for _, k := range keys {
		pub := k.public()
		f.Add(stmtJWKS(k))
		f.Add(must(json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
			{Key: k.priv, KeyID: k.kid, Algorithm: string(k.alg)},
		}})))
		f.Add(must(json.Marshal(pub)))
		f.Add(must(json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pub, pub}})))
	}

	// A key with its certificate, which go-jose checks against the key.
	ec := stmtKeyOf(jose.ES256)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "issuer.example"},
		NotBefore:    stmtNow, NotAfter: stmtNow.Add(time.Hour),
	}
	der := must(x509.CreateCertificate(rand.Reader, tmpl, tmpl, ec.priv.Public(), ec.priv))
	cert := must(x509.ParseCertificate(der))
	withCert := ec.public()
	withCert.Certificates = []*x509.Certificate{cert}
	f.Add(must(json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{withCert}})))

	for _, seed := range []string{
		`{"keys":[]}`, `{"keys":null}`, `{}`, `[]`, `null`, ``, `{"keys":[{}]}`,
		`{"keys":[{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}]}`,
		`{"keys":[{"kty":"EC","crv":"P-256","x":"AQ","y":"AQ"}]}`,
		`{"keys":[{"kty":"EC","crv":"P-521","x":"","y":""}]}`,
		`{"keys":[{"kty":"RSA","n":"AQ","e":"AQAB"}]}`,
		`{"keys":[{"kty":"RSA","n":"","e":""}]}`,
		`{"keys":[{"kty":"RSA","n":"AQAB","e":"AAAAAAAAAAAB"}]}`,
		`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AA"}]}`,
		`{"keys":[{"kty":"OKP","crv":"X25519","x":"` + strings.Repeat("A", 43) + `"}]}`,
		`{"keys":[{"kty":"AKP","alg":"ML-DSA-44","pub":"AA"}]}`,
		`{"keys":[{"kty":"EC","crv":"P-256","x5c":["MIIB"]}]}`,
		`{"keys":[{"kty":"RSA","n":"AQ","e":"AQAB","x5t#S256":"AA"}]}`,
		`{"keys":{"kty":"RSA"}}`,
		`{"keys":[null]}`,
		`{"keys":[1,"a",true]}`,
	} {
		f.Add([]byte(seed))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		set, err := parseJWKS(data)
		if err != nil {
			if set != nil {
				t.Fatalf("set %v returned with %v", set, err)
			}
			return
		}
		if set == nil || len(set.Keys) == 0 {
			t.Fatal("accepted an empty key set")
		}
		for i := range set.Keys {
			k := &set.Keys[i]
			if !k.Valid() || !k.IsPublic() {
				t.Fatalf("key %d (%T) is not a valid public key", i, k.Key)
			}
		}

		enc, err := json.Marshal(set)
		if err != nil {
			t.Fatalf("encoding an accepted set: %v", err)
		}
		again, err := parseJWKS(enc)
		if err != nil || len(again.Keys) != len(set.Keys) {
			t.Fatalf("own encoding %s not accepted: %v", enc, err)
		}
	})
}
