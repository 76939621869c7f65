package dcr

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/caddyserver/caddy/v2/caddytest"
)

// The statement suite registers clients with software statements through
// the real Caddy of the integration suite. Statements are signed with the
// keys of statement_test.go, at the real time unless a test moves the
// handler's clock.

// itStmtBlock returns a software_statement block with the given lines.
func itStmtBlock(lines ...string) string {
	return "software_statement {\n\t\t\t" + strings.Join(lines, "\n\t\t\t") + "\n\t\t}"
}

// itStmtFile writes the shared keys as a jwks_file and returns its path.
func itStmtFile(t *testing.T) string {
	t.Helper()
	return stmtWriteFile(t, "issuer-jwks.json", stmtJWKS(stmtKeys()...))
}

// startStmtDCR starts the handler trusting stmtIssuer with the shared
// keys, with more dcr subdirectives after the block.
func startStmtDCR(t *testing.T, options ...string) *itServer {
	t.Helper()
	block := itStmtBlock("issuer "+stmtIssuer, "jwks_file "+itStmtFile(t))
	return startDCR(t, append([]string{block}, options...)...)
}

// itStmt signs a statement by stmtIssuer with the shared key for alg,
// valid now, with extra claims.
func itStmt(t *testing.T, alg jose.SignatureAlgorithm, extra map[string]any) string {
	t.Helper()
	k := stmtKeyOf(alg)
	return stmtSign(t, k, k.kid, stmtClaims(stmtIssuer, time.Now(), extra))
}

// itStmtBody returns a registration body of the members in rest, a JSON
// fragment that may be empty, and the statement.
func itStmtBody(statement, rest string) string {
	if rest != "" {
		rest += ","
	}
	return `{` + rest + `"software_statement":"` + statement + `"}`
}

// registerStmt posts body, expects a 201 that stored one more client with
// the statement exactly as sent, and returns the answer.
func (s *itServer) registerStmt(t *testing.T, body, statement string) *itResponse {
	t.Helper()
	before := s.count(t)
	r := s.post(t, body)
	if r.status != http.StatusCreated {
		t.Fatalf("status %d, want 201; body %s", r.status, r.body)
	}
	itAssertJSONHeaders(t, r)
	if after := s.count(t); after != before+1 {
		t.Errorf("store holds %d clients after a registration, want %d", after, before+1)
	}
	itAssertStatement(t, r, statement)
	id := itString(t, r.obj, "client_id")
	if got := s.lookup(t, id).Metadata.SoftwareStatement; got != statement {
		t.Errorf("stored statement %q, want %q", got, statement)
	}
	s.checkStored(t, r.obj)
	return r
}

// itAssertStatement checks that an answer carries the statement byte for
// byte, and none of the claims that describe the statement itself.
func itAssertStatement(t *testing.T, r *itResponse, statement string) {
	t.Helper()
	if !bytes.Contains(r.body, []byte(`"software_statement":"`+statement+`"`)) {
		t.Errorf("response does not carry the statement as sent: %s", r.body)
	}
	for _, c := range registeredClaims {
		if v, ok := r.obj[c]; ok {
			t.Errorf("response carries claim %s = %v", c, v)
		}
	}
}

func TestIntegrationStatementKeyTypes(t *testing.T) {
	s := startStmtDCR(t)

	for _, k := range stmtKeys() {
		for _, kid := range []string{k.kid, ""} {
			t.Run(string(k.alg)+" kid="+kid, func(t *testing.T) {
				name := "Signed " + string(k.alg)
				raw := stmtSign(t, k, kid, stmtClaims(stmtIssuer, time.Now(),
					map[string]any{
						"client_name":   name,
						"redirect_uris": []string{"https://signed.example/cb"},
					}))
				r := s.registerStmt(t, itStmtBody(raw, ""), raw)
				want := map[string]any{
					"client_name":   name,
					"software_id":   "4NRB1-0XZABZI9E6-5SM3R",
					"redirect_uris": []any{"https://signed.example/cb"},
				}
				for m, v := range want {
					if !reflect.DeepEqual(r.obj[m], v) {
						t.Errorf("%s = %#v, want %#v", m, r.obj[m], v)
					}
				}
			})
		}
	}
}

func TestIntegrationStatementOverrides(t *testing.T) {
	s := startStmtDCR(t)
	raw := itStmt(t, jose.ES256, map[string]any{
		"client_name":             "signed",
		"redirect_uris":           []string{"https://signed.example/cb"},
		"scope":                   "openid",
		"client_id":               "statement-chosen-id",
		"client_secret":           "statement-chosen-secret",
		"registration_client_uri": "https://evil.example/register/x",
		"x_unknown_claim":         "unknown-claim-value",
	})
	body := itStmtBody(raw, `"client_name":"plain",`+
		`"redirect_uris":["https://plain.example/cb"],`+
		`"logo_uri":"https://plain.example/logo.png","scope":"email",`+
		`"client_id":"body-chosen-id"`)
	r := s.registerStmt(t, body, raw)

	want := map[string]any{
		"client_name":   "signed",
		"redirect_uris": []any{"https://signed.example/cb"},
		"scope":         "openid",
		"software_id":   "4NRB1-0XZABZI9E6-5SM3R",
		// Members the statement does not name stay as sent.
		"logo_uri": "https://plain.example/logo.png",
	}
	for m, v := range want {
		if !reflect.DeepEqual(r.obj[m], v) {
			t.Errorf("%s = %#v, want %#v", m, r.obj[m], v)
		}
	}
	id := itString(t, r.obj, "client_id")
	c := s.lookup(t, id)
	if c.Metadata.ClientName != "signed" ||
		!slices.Equal(c.Metadata.RedirectURIs, []string{"https://signed.example/cb"}) {
		t.Errorf("stored client_name %q redirect_uris %v, want the statement's",
			c.Metadata.ClientName, c.Metadata.RedirectURIs)
	}

	// Values the server issues are never the statement's.
	if id == "statement-chosen-id" || id == "body-chosen-id" {
		t.Errorf("client_id %q was chosen by the request", id)
	}
	if r.obj["client_secret"] == "statement-chosen-secret" {
		t.Error("client_secret was chosen by the statement")
	}
	if got := itString(t, r.obj, "registration_client_uri"); got != itSite+"/register/"+id {
		t.Errorf("registration_client_uri %q was not the server's", got)
	}
	if _, ok := r.obj["x_unknown_claim"]; ok {
		t.Error("unknown claim registered")
	}
}

func TestIntegrationStatementPolicy(t *testing.T) {
	s := startStmtDCR(t)
	cases := []struct {
		name  string
		claim map[string]any
		body  string
		want  itRefusal
	}{
		{
			"grant type not allowed",
			map[string]any{"grant_types": []string{"client_credentials"}},
			`"redirect_uris":["https://app.example.com/cb"]`,
			itRefusal{400, "invalid_client_metadata", `"client_credentials"`},
		},
		{
			"grant type not allowed over an allowed one in the body",
			map[string]any{"grant_types": []string{"authorization_code", "password"}},
			`"redirect_uris":["https://app.example.com/cb"],` +
				`"grant_types":["authorization_code"]`,
			itRefusal{400, "invalid_client_metadata", `"password"`},
		},
		{
			"http redirect URI",
			map[string]any{"redirect_uris": []string{"http://app.example.com/cb"}},
			`"redirect_uris":["https://app.example.com/cb"]`,
			itRefusal{400, "invalid_redirect_uri", "http://app.example.com/cb"},
		},
		{
			"claim of the wrong type",
			map[string]any{"client_name": 5},
			`"redirect_uris":["https://app.example.com/cb"]`,
			itRefusal{400, "invalid_client_metadata", "client_name must be a string"},
		},
		{
			"no redirect URIs anywhere",
			nil, "",
			itRefusal{400, "invalid_redirect_uri", "redirect_uris"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := itStmt(t, jose.EdDSA, tc.claim)
			s.postRefused(t, itStmtBody(raw, tc.body), tc.want)
		})
	}
	if n := s.count(t); n != 0 {
		t.Errorf("%d clients stored", n)
	}
}

func TestIntegrationStatementRefused(t *testing.T) {
	esOnly := itStmtBlock("issuer https://es-only.example", "jwks_file "+itStmtFile(t),
		"algorithms ES256")
	s := startStmtDCR(t, esOnly)

	now := time.Now()
	rsaKey, ecKey := stmtKeyOf(jose.RS256), stmtKeyOf(jose.ES256)
	claims := func(extra map[string]any) map[string]any {
		return stmtClaims(stmtIssuer, now, extra)
	}
	good := stmtSign(t, ecKey, ecKey.kid, claims(nil))
	parts := strings.Split(good, ".")
	payload, _ := json.Marshal(claims(nil))
	flat, _ := json.Marshal(map[string]string{
		"protected": parts[0], "payload": parts[1], "signature": parts[2],
	})
	fake := stmtNewKey(jose.ES256, ecKey.kid)

	invalid := func(desc string) itRefusal {
		return itRefusal{400, codeInvalidStatement, desc}
	}
	cases := []struct {
		name      string
		statement string
		want      itRefusal
	}{
		{"untrusted issuer", stmtSign(t, ecKey, ecKey.kid,
			stmtClaims("https://evil.example", now, nil)),
			itRefusal{400, codeUnapprovedStatement, "https://evil.example"}},
		{"wrong key", stmtSign(t, fake, fake.kid, claims(nil)),
			invalid("signature does not verify")},
		{"wrong key, no kid", stmtSign(t, fake, "", claims(nil)),
			invalid("signature does not verify")},
		{"alg none", stmtForge(`{"alg":"none"}`, string(payload), nil),
			invalid("accepted algorithm")},
		{"HS256 keyed with the issuer's public key", stmtHMAC(rsaKey.kid, claims(nil),
			stmtPublicPEM(rsaKey)), invalid("accepted algorithm")},
		{"HS256 keyed with the issuer's key set", stmtHMAC("", claims(nil),
			stmtJWKS(stmtKeys()...)), invalid("accepted algorithm")},
		{"algorithm not configured for the issuer", stmtSign(t, rsaKey, rsaKey.kid,
			stmtClaims("https://es-only.example", now, nil)),
			invalid(`algorithm "RS256" is not accepted from this issuer`)},
		{"algorithm not configured anywhere", stmtSign(t,
			rsaKey.withAlg(jose.PS256), rsaKey.kid, claims(nil)),
			invalid("accepted algorithm")},
		{"expired", stmtSign(t, ecKey, ecKey.kid, claims(map[string]any{
			"exp": now.Add(-2 * time.Minute).Unix(),
		})), invalid("has expired")},
		{"not valid yet", stmtSign(t, ecKey, ecKey.kid, claims(map[string]any{
			"nbf": now.Add(3 * time.Minute).Unix(),
		})), invalid("not valid yet")},
		{"issued in the future", stmtSign(t, ecKey, ecKey.kid, claims(map[string]any{
			"iat": now.Add(3 * time.Minute).Unix(),
		})), invalid("not valid yet")},
		{"payload swapped", parts[0] + "." + stmtB64([]byte(`{"iss":"`+stmtIssuer+`"}`)) +
			"." + parts[2], invalid("signature does not verify")},
		{"truncated", good[:len(good)/2], invalid("")},
		{"two parts", parts[0] + "." + parts[1], invalid("compact form")},
		{"garbage", "not-a-jwt", invalid("compact form")},
		{"too long", strings.Repeat("a", maxStatementLength+1), invalid("longer")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s.postRefused(t, itReg(`"software_statement":`+itJSONString(tc.statement)),
				tc.want)
		})
	}

	// The JSON serialization is an object, not the string a statement
	// must be; as a string it is not compact.
	s.postRefused(t, itReg(`"software_statement":`+string(flat)),
		itRefusal{400, codeInvalidClientMetadata, "software_statement must be a string"})
	s.postRefused(t, itReg(`"software_statement":`+itJSONString(string(flat))),
		invalid("compact form"))
	for _, v := range []string{`42`, `true`, `["` + good + `"]`} {
		s.postRefused(t, itReg(`"software_statement":`+v),
			itRefusal{400, codeInvalidClientMetadata, "software_statement must be a string"})
	}

	// Within the leeway the same kinds of statement are accepted.
	for _, extra := range []map[string]any{
		{"exp": now.Add(-30 * time.Second).Unix()},
		{"nbf": now.Add(30 * time.Second).Unix()},
		{"iat": now.Add(30 * time.Second).Unix()},
	} {
		raw := stmtSign(t, ecKey, ecKey.kid, claims(extra))
		s.registerStmt(t, itReg(`"software_statement":"`+raw+`"`), raw)
	}
}

// itJSONString returns s as a JSON string.
func itJSONString(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func TestIntegrationStatementNoIssuers(t *testing.T) {
	s := startDCR(t)
	raw := itStmt(t, jose.ES256, nil)
	s.postRefused(t, itReg(`"software_statement":"`+raw+`"`),
		itRefusal{400, codeUnapprovedStatement, "trusts no software statement issuers"})

	// Null and empty are no statement at all.
	s.register(t, itReg(`"software_statement":null`))
	s.register(t, itReg(`"software_statement":""`))
}

func TestIntegrationStatementRequired(t *testing.T) {
	s := startStmtDCR(t, "require_software_statement on")
	required := itRefusal{400, codeInvalidStatement, "requires a software_statement"}

	for _, body := range []string{
		itValidBody,
		itReg(`"software_statement":null`),
		itReg(`"software_statement":""`),
	} {
		s.postRefused(t, body, required)
	}
	if n := s.count(t); n != 0 {
		t.Fatalf("%d clients stored without a statement", n)
	}

	raw := itStmt(t, jose.RS256, nil)
	r := s.registerStmt(t, itReg(`"software_statement":"`+raw+`"`), raw)
	id := itString(t, r.obj, "client_id")
	token := itString(t, r.obj, "registration_access_token")
	before := s.lookup(t, id)

	// An RFC 7592 update must carry one as well.
	up := s.manage(t, http.MethodPut, id, token, itReg(`"client_name":"no statement"`))
	itAssertRefusal(t, up, required)
	s.unchanged(t, id, before)

	raw2 := itStmt(t, jose.EdDSA, map[string]any{"client_name": "updated"})
	up = s.manage(t, http.MethodPut, id, token, itReg(`"software_statement":"`+raw2+`"`))
	obj := itAssertOK(t, up, id)
	itAssertStatement(t, up, raw2)
	if obj["client_name"] != "updated" {
		t.Errorf("client_name %v, want the statement's", obj["client_name"])
	}
	if got := s.lookup(t, id).Metadata.SoftwareStatement; got != raw2 {
		t.Errorf("stored statement %q, want the update's", got)
	}
}

func TestIntegrationStatementUpdate(t *testing.T) {
	s := startStmtDCR(t)
	c := s.registerManaged(t, itReg(`"client_name":"plain"`))
	if _, ok := c.resp["software_statement"]; ok {
		t.Fatal("software_statement in a response to a registration without one")
	}
	token := c.token

	// A refused update changes nothing and leaves the token valid.
	before := s.lookup(t, c.id)
	fake := stmtNewKey(jose.ES256, "ec-1")
	for _, tc := range []struct {
		name      string
		statement string
		want      itRefusal
	}{
		{"wrong key", stmtSign(t, fake, fake.kid, stmtClaims(stmtIssuer, time.Now(), nil)),
			itRefusal{400, codeInvalidStatement, "signature does not verify"}},
		{"untrusted", stmtSign(t, fake, fake.kid,
			stmtClaims("https://evil.example", time.Now(), nil)),
			itRefusal{400, codeUnapprovedStatement, "not trusted"}},
		{"expired", itStmt(t, jose.ES256, map[string]any{
			"exp": time.Now().Add(-time.Hour).Unix(),
		}), itRefusal{400, codeInvalidStatement, "has expired"}},
		{"statement grants a refused grant type", itStmt(t, jose.ES256, map[string]any{
			"grant_types": []string{"password"},
		}), itRefusal{400, codeInvalidClientMetadata, `"password"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := s.manage(t, http.MethodPut, c.id, token,
				itReg(`"client_name":"plain","software_statement":"`+tc.statement+`"`))
			itAssertRefusal(t, r, tc.want)
			s.unchanged(t, c.id, before)
		})
	}

	raw := itStmt(t, jose.RS256, map[string]any{
		"client_name":   "signed",
		"redirect_uris": []string{"https://signed.example/cb"},
	})
	r := s.manage(t, http.MethodPut, c.id, token,
		itReg(`"client_name":"plain","client_id":"`+c.id+`","software_statement":"`+raw+`"`))
	obj := itAssertOK(t, r, c.id)
	itAssertStatement(t, r, raw)
	if obj["client_name"] != "signed" ||
		!reflect.DeepEqual(itStrings(obj["redirect_uris"]), []string{"https://signed.example/cb"}) {
		t.Errorf("client_name %v redirect_uris %v, want the statement's",
			obj["client_name"], obj["redirect_uris"])
	}
	stored := s.lookup(t, c.id).Metadata
	if stored.SoftwareStatement != raw || stored.ClientName != "signed" {
		t.Errorf("stored statement %q client_name %q", stored.SoftwareStatement,
			stored.ClientName)
	}
	token = itString(t, obj, "registration_access_token")

	// A read returns the statement as stored.
	read := s.manage(t, http.MethodGet, c.id, token, "")
	itAssertOK(t, read, c.id)
	itAssertStatement(t, read, raw)

	// An update without a statement drops it: the update replaces all
	// metadata.
	r = s.manage(t, http.MethodPut, c.id, token, itReg(`"client_name":"plain again"`))
	obj = itAssertOK(t, r, c.id)
	if _, ok := obj["software_statement"]; ok || obj["client_name"] != "plain again" {
		t.Errorf("after an update without a statement: %s", r.body)
	}
	if got := s.lookup(t, c.id).Metadata.SoftwareStatement; got != "" {
		t.Errorf("stored statement %q after an update without one", got)
	}
	token = itString(t, obj, "registration_access_token")

	t.Run("statement claim hides a wrong client_secret", func(t *testing.T) {
		withSecret := itStmt(t, jose.ES256, map[string]any{"client_secret": "anything"})
		before := s.lookup(t, c.id)
		r := s.manage(t, http.MethodPut, c.id, token, itReg(`"client_secret":"wrong",`+
			`"software_statement":"`+withSecret+`"`))
		itAssertRefusal(t, r, itRefusal{400, "invalid_request", "client_secret"})
		s.unchanged(t, c.id, before)
	})
}

// itStmtURLBlock returns dcr subdirectives that trust stmtIssuer with the
// keys at url, fetched with fetch's lines.
func itStmtURLBlock(url string, fetch ...string) []string {
	return []string{
		itStmtBlock("issuer "+stmtIssuer, "jwks_url "+url),
		"fetch {\n\t\t\t" + strings.Join(fetch, "\n\t\t\t") + "\n\t\t}",
	}
}

func TestIntegrationStatementJWKSURL(t *testing.T) {
	clock := itUseClock(t)
	old := stmtKeyOf(jose.ES256)
	rotated := stmtNewKey(jose.EdDSA, "ed-2")
	srv := newStmtJWKSServer(t, old)
	s := startDCR(t, itStmtURLBlock(srv.jwksURL(),
		"allow_networks 127.0.0.1/32 ::1/128", "trusted_roots "+srv.pem)...)

	sign := func(k stmtKey) string {
		return stmtSign(t, k, k.kid, stmtClaims(stmtIssuer, clock.now(), nil))
	}
	accepted := func(name string, k stmtKey, hits int64) {
		t.Helper()
		raw := sign(k)
		s.registerStmt(t, itReg(`"software_statement":"`+raw+`"`), raw)
		if got := srv.hits.Load(); got != hits {
			t.Errorf("%s: %d fetches, want %d", name, got, hits)
		}
	}
	refused := func(name string, k stmtKey, hits int64) {
		t.Helper()
		s.postRefused(t, itReg(`"software_statement":"`+sign(k)+`"`),
			itRefusal{400, codeInvalidStatement, "signature does not verify"})
		if got := srv.hits.Load(); got != hits {
			t.Errorf("%s: %d fetches, want %d", name, got, hits)
		}
	}

	accepted("first use", old, 1)
	accepted("cached", old, 1)

	// Rotation: the new kid is fetched for once a minute has passed.
	srv.publish(http.StatusOK, stmtJWKS(rotated))
	refused("new kid at once", rotated, 1)
	clock.advance(2 * time.Minute)
	accepted("new kid after a minute", rotated, 2)
	refused("old kid after rotation", old, 2)

	// The server goes away: the keys fetched before keep working, even
	// past their hour.
	srv.Close()
	accepted("server down, cached", rotated, 2)
	clock.advance(2 * time.Hour)
	accepted("server down, past the hour", rotated, 2)
	if n := len(s.logEntries(t, "fetching software statement issuer keys failed", 1)); n != 1 {
		t.Errorf("%d fetch failures logged, want 1", n)
	}
}

func TestIntegrationStatementJWKSURLNotAllowed(t *testing.T) {
	k := stmtKeyOf(jose.ES256)
	srv := newStmtJWKSServer(t, k)
	// A host name, not the address, so that the address appears in the
	// log only if something puts it there.
	url := "https://localhost:" + srv.URL[strings.LastIndex(srv.URL, ":")+1:] + "/jwks"
	s := startDCR(t, itStmtURLBlock(url, "trusted_roots "+srv.pem)...)

	s.postRefused(t, itReg(`"software_statement":"`+itStmt(t, jose.ES256, nil)+`"`),
		itRefusal{400, codeInvalidStatement, "signature does not verify"})
	if n := srv.hits.Load(); n != 0 {
		t.Errorf("the server was reached %d times", n)
	}
	failed := s.logEntries(t, "fetching software statement issuer keys failed", 1)
	if len(failed) != 1 || !strings.Contains(failed[0]["error"].(string), "not public") {
		t.Fatalf("fetch failure logged as %v", failed)
	}
}

func TestIntegrationStatementConfigErrors(t *testing.T) {
	ec := stmtKeyOf(jose.ES256)
	jwks := stmtWriteFile(t, "jwks.json", stmtJWKS(ec))
	priv := stmtWriteFile(t, "private.json", must(json.Marshal(jose.JSONWebKeySet{
		Keys: []jose.JSONWebKey{{Key: ec.priv, KeyID: "ec-1"}},
	})))
	config := func(block string) string {
		return "{\n\tadmin localhost:2999\n\thttp_port 9080\n\thttps_port 9443\n" +
			"\tauto_https off\n}\nhttp://localhost:9080 {\n\tdcr {\n\t\tstore " +
			filepath.Join(t.TempDir(), "clients.db") + "\n\t\t" + block +
			"\n\t}\n\trespond 404\n}\n"
	}
	cases := []struct {
		name  string
		block string
		want  string
	}{
		{"HS256", itStmtBlock("issuer a", "jwks_file "+jwks, "algorithms HS256"),
			`software_statement "a": algorithm "HS256" is not accepted`},
		{"none", itStmtBlock("issuer a", "jwks_file "+jwks, "algorithms none"),
			`software_statement "a": algorithm "none" is not accepted`},
		{"private key", itStmtBlock("issuer a", "jwks_file "+priv),
			`key 0 (kid "ec-1") is not a valid public key`},
		{"both sources", itStmtBlock("issuer a", "jwks_file "+jwks,
			"jwks_url https://a.example/jwks"), "give exactly one of jwks_file and jwks_url"},
		{"http jwks_url", itStmtBlock("issuer a", "jwks_url http://a.example/jwks"),
			"must be an https URL"},
		{"no issuer", itStmtBlock("jwks_file " + jwks), "issuer is required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The admin API answers the error inside JSON.
			caddytest.AssertLoadError(t, config(tc.block), "caddyfile",
				strings.ReplaceAll(tc.want, `"`, `\"`))
		})
	}
}

func TestIntegrationStatementLogging(t *testing.T) {
	s := startStmtDCR(t)
	raw := itStmt(t, jose.EdDSA, map[string]any{
		"client_name":   "Statement Log App",
		"software_id":   "sw-stmt-marker-41",
		"redirect_uris": []string{"https://stmt-log-marker.example/cb"},
	})
	r := s.registerStmt(t, itStmtBody(raw, ""), raw)
	secret := itString(t, r.obj, "client_secret")
	token := itString(t, r.obj, "registration_access_token")
	id := itString(t, r.obj, "client_id")

	bad := stmtSign(t, stmtNewKey(jose.ES256, "ec-1"), "ec-1",
		stmtClaims(stmtIssuer, time.Now(), map[string]any{"client_name": "bad-marker-77"}))
	s.postRefused(t, itStmtBody(bad, ""),
		itRefusal{400, codeInvalidStatement, "signature does not verify"})

	registered := s.logEntries(t, "client registered", 1)
	if len(registered) != 1 || registered[0]["client_id"] != id ||
		registered[0]["software_statement"] != true {
		t.Errorf("client registered logged as %v", registered)
	}
	refused := s.logEntries(t, "registration refused", 1)
	if len(refused) != 1 || refused[0]["error"] != codeInvalidStatement ||
		refused[0]["rule"] != "software_statement" {
		t.Errorf("registration refused logged as %v", refused)
	}

	log, err := os.ReadFile(s.logFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, leak := range []string{
		secret, token, raw, bad, "sw-stmt-marker-41", "stmt-log-marker", "bad-marker-77",
		strings.Split(raw, ".")[2], strings.Split(bad, ".")[1],
	} {
		if strings.Contains(string(log), leak) {
			t.Errorf("log file contains %.60q", leak)
		}
	}
}
