package dcr

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

// The OpenID Connect tests feed JSON bodies through decodeMetadata and
// policy.apply, as the handler does, so that a member's decoding and its
// rules are checked together.

// oidcCase is one registration body checked against the policy. A case
// with a rule expects a refusal by that rule, from the decoder or the
// policy; one without expects acceptance, may inspect the metadata, and
// is sent back once more as an RFC 7592 update would send it.
type oidcCase struct {
	name   string
	policy func(*policy) // adjusts defaultPolicy; nil keeps it
	body   string

	code string // default codeInvalidClientMetadata
	rule string
	want []string // substrings of the description

	check metaCheck

	// skip, when set, skips the case: a known bug, described there.
	skip string
}

func runOIDCCases(t *testing.T, cases []oidcCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.skip != "" {
				t.Skip(tc.skip)
			}
			p := defaultPolicy()
			if tc.policy != nil {
				tc.policy(p)
			}
			m, err := decodeMetadata([]byte(tc.body))
			if err == nil {
				err = p.apply(m)
			}

			if tc.rule != "" {
				code := tc.code
				if code == "" {
					code = codeInvalidClientMetadata
				}
				checkProtoErr(t, err, code, http.StatusBadRequest,
					tc.rule, tc.want...)
				return
			}
			if err != nil {
				t.Fatalf("refused: %v (rule %s)", err, err.Rule)
			}
			if tc.check != nil {
				tc.check(t, m)
			}
			oidcReapply(t, p, m)
		})
	}
}

// oidcReapply checks that registered metadata passes the policy again
// unchanged. A client updating its registration (RFC 7592 section 2.2)
// sends back what the server echoed, including values the server chose,
// such as an inferred application_type or a default content encryption;
// the update must not be refused for them.
func oidcReapply(t *testing.T, p *policy, m *clientdb.Metadata) {
	t.Helper()
	echoed, err := json.Marshal(m)
	if err != nil {
		t.Fatalf("encoding metadata: %v", err)
	}
	again, perr := decodeMetadata(echoed)
	if perr == nil {
		perr = p.apply(again)
	}
	if perr != nil {
		t.Fatalf("the echoed metadata is refused when sent back: %v "+
			"(rule %s)\n%s", perr, perr.Rule, echoed)
	}
	if got, _ := json.Marshal(again); string(got) != string(echoed) {
		t.Errorf("sending the echoed metadata back changed it:\n%s\nwas\n%s",
			got, echoed)
	}
}

// oidcBody joins JSON members, such as `"subject_type":"public"`, into an
// object.
func oidcBody(members ...string) string {
	return "{" + strings.Join(members, ",") + "}"
}

// oidcRedirects returns the redirect_uris member listing uris.
func oidcRedirects(uris ...string) string {
	b, _ := json.Marshal(uris)
	return `"redirect_uris":` + string(b)
}

// oidcCB is a redirect URI member for cases that are not about it.
var oidcCB = oidcRedirects(cb)

// wantField returns a check that the value get reads from the metadata
// equals want.
func wantField(name string, get func(*clientdb.Metadata) any,
	want any) metaCheck {
	return func(t *testing.T, m *clientdb.Metadata) {
		t.Helper()
		if got := get(m); !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %#v, want %#v", name, got, want)
		}
	}
}

// wantAppType returns a check of the stored application_type; "" means
// none, which is then not echoed either.
func wantAppType(want string) metaCheck {
	return func(t *testing.T, m *clientdb.Metadata) {
		t.Helper()
		if m.ApplicationType != want {
			t.Errorf("application_type = %q, want %q",
				m.ApplicationType, want)
		}
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if echoed := strings.Contains(string(b), `"application_type"`); echoed != (want != "") {
			t.Errorf("application_type echoed: %v, want %v: %s",
				echoed, want != "", b)
		}
	}
}

// oidcMembers are the members of OpenID Connect Dynamic Client
// Registration 1.0 section 2 and the logout specifications, by the JSON
// type decodeMetadata demands.
var (
	oidcStringMembers = []string{
		"application_type", "sector_identifier_uri", "subject_type",
		"id_token_signed_response_alg", "id_token_encrypted_response_alg",
		"id_token_encrypted_response_enc", "userinfo_signed_response_alg",
		"userinfo_encrypted_response_alg",
		"userinfo_encrypted_response_enc", "request_object_signing_alg",
		"request_object_encryption_alg", "request_object_encryption_enc",
		"token_endpoint_auth_signing_alg", "initiate_login_uri",
		"frontchannel_logout_uri", "backchannel_logout_uri",
	}
	oidcListMembers = []string{
		"default_acr_values", "request_uris", "post_logout_redirect_uris",
	}
	oidcBoolMembers = []string{
		"require_auth_time", "frontchannel_logout_session_required",
		"backchannel_logout_session_required",
	}
)

func TestOIDCDecodeTypes(t *testing.T) {
	var cases []oidcCase
	refuse := func(name, value string) {
		cases = append(cases, oidcCase{
			name: fmt.Sprintf("%s %s", name, value),
			body: oidcBody(oidcCB, fmt.Sprintf("%q:%s", name, value)),
			rule: "json_type",
			want: []string{name},
		})
	}
	absent := func(name string) {
		cases = append(cases, oidcCase{
			name: name + " null",
			body: oidcBody(oidcCB, fmt.Sprintf("%q:null", name)),
			check: func(t *testing.T, m *clientdb.Metadata) {
				b, _ := json.Marshal(m)
				if strings.Contains(string(b), `"`+name+`"`) {
					t.Errorf("null %s is echoed: %s", name, b)
				}
			},
		})
	}
	for _, name := range oidcStringMembers {
		refuse(name, `5`)
		refuse(name, `["web"]`)
		refuse(name, `true`)
		absent(name)
	}
	for _, name := range oidcListMembers {
		refuse(name, `"https://app.example/x"`)
		refuse(name, `[1]`)
		refuse(name, `[null]`)
		absent(name)
	}
	for _, name := range oidcBoolMembers {
		refuse(name, `"true"`)
		refuse(name, `1`)
		refuse(name, `[true]`)
		absent(name)
	}
	for _, v := range []string{
		`-1`, `-0`, `1.5`, `1e3`, `1E3`, `60.0`, `"60"`, `true`, `[60]`,
		`99999999999999999999`,
	} {
		refuse("default_max_age", v)
	}
	absent("default_max_age")

	maxAge := func(want int64) metaCheck {
		return wantField("default_max_age", func(m *clientdb.Metadata) any {
			if m.DefaultMaxAge == nil {
				return nil
			}
			return *m.DefaultMaxAge
		}, want)
	}
	boolean := func(want bool) metaCheck {
		return wantField("require_auth_time", func(m *clientdb.Metadata) any {
			if m.RequireAuthTime == nil {
				return nil
			}
			return *m.RequireAuthTime
		}, want)
	}
	cases = append(cases,
		oidcCase{
			// Zero is a value, not an absence: it asks for a fresh
			// login every time.
			name:  "default_max_age zero",
			body:  oidcBody(oidcCB, `"default_max_age":0`),
			check: all(maxAge(0), echoes(`"default_max_age":0`)),
		},
		oidcCase{
			name:  "default_max_age an hour",
			body:  oidcBody(oidcCB, `"default_max_age":3600`),
			check: maxAge(3600),
		},
		oidcCase{
			name:  "require_auth_time true",
			body:  oidcBody(oidcCB, `"require_auth_time":true`),
			check: boolean(true),
		},
		oidcCase{
			// false is echoed: it differs from "not given".
			name: "require_auth_time false",
			body: oidcBody(oidcCB, `"require_auth_time":false`),
			check: all(boolean(false),
				echoes(`"require_auth_time":false`)),
		},
	)
	runOIDCCases(t, cases)
}

// echoes returns a check that the JSON form of the metadata contains
// each fragment.
func echoes(fragments ...string) metaCheck {
	return func(t *testing.T, m *clientdb.Metadata) {
		t.Helper()
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fragments {
			if !strings.Contains(string(b), f) {
				t.Errorf("%s does not contain %s", b, f)
			}
		}
	}
}

// TestOIDCDecodeAll registers every OpenID Connect member at once and
// checks that each is stored and echoed with the value sent.
func TestOIDCDecodeAll(t *testing.T) {
	members := map[string]any{
		"redirect_uris": []any{
			"https://app.example/cb", "https://app.example/cb2",
		},
		"token_endpoint_auth_method":           "client_secret_jwt",
		"application_type":                     "web",
		"sector_identifier_uri":                "https://app.example/sector.json",
		"subject_type":                         "pairwise",
		"id_token_signed_response_alg":         "ES256",
		"id_token_encrypted_response_alg":      "RSA-OAEP-256",
		"id_token_encrypted_response_enc":      "A256GCM",
		"userinfo_signed_response_alg":         "PS384",
		"userinfo_encrypted_response_alg":      "ECDH-ES+A128KW",
		"userinfo_encrypted_response_enc":      "A192CBC-HS384",
		"request_object_signing_alg":           "none",
		"request_object_encryption_alg":        "dir",
		"request_object_encryption_enc":        "A128GCM",
		"token_endpoint_auth_signing_alg":      "HS512",
		"default_max_age":                      json.Number("86400"),
		"require_auth_time":                    true,
		"default_acr_values":                   []any{"urn:example:acr:2fa", "1"},
		"initiate_login_uri":                   "https://app.example/login",
		"request_uris":                         []any{"https://app.example/r.jwt#h1"},
		"post_logout_redirect_uris":            []any{"https://app.example/bye"},
		"frontchannel_logout_uri":              "https://app.example/fc",
		"frontchannel_logout_session_required": false,
		"backchannel_logout_uri":               "https://rp.example.net/bc",
		"backchannel_logout_session_required":  true,
	}
	body, err := json.Marshal(members)
	if err != nil {
		t.Fatal(err)
	}

	p := defaultPolicy()
	p.authMethods = append(p.authMethods, authClientSecretJWT)
	m, perr := decodeMetadata(body)
	if perr == nil {
		perr = p.apply(m)
	}
	if perr != nil {
		t.Fatalf("refused: %v (rule %s)", perr, perr.Rule)
	}

	echoed, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	got := itDecode(t, string(echoed))
	for name, want := range members {
		if !reflect.DeepEqual(got[name], want) {
			t.Errorf("%s = %#v, want %#v", name, got[name], want)
		}
	}
	if m.DefaultMaxAge == nil || *m.DefaultMaxAge != 86400 {
		t.Errorf("DefaultMaxAge = %v, want 86400", m.DefaultMaxAge)
	}
	if m.FrontchannelLogoutSessionRequired == nil ||
		*m.FrontchannelLogoutSessionRequired {
		t.Errorf("FrontchannelLogoutSessionRequired = %v, want false",
			m.FrontchannelLogoutSessionRequired)
	}
	oidcReapply(t, p, m)
}

// Redirect URIs by kind, for the application_type cases.
const (
	loopV4     = "http://127.0.0.1:8400/cb"
	loopV6     = "http://[::1]:8400/cb"
	loopName   = "http://localhost:8400/cb"
	loopNoPort = "http://127.0.0.1/callback"
	privateUse = "com.example.app:/oauth2redirect"
)

func TestOIDCApplicationType(t *testing.T) {
	mcp := func(p *policy) { p.mcpPreset = true }
	httpOK := func(p *policy) { p.requireHTTPS = false }
	webRefused := []string{"redirect_uris", `application_type "web"`}
	nativeRefused := []string{"redirect_uris", `application_type "native"`}

	runOIDCCases(t, []oidcCase{
		{
			name:  "web with https",
			body:  oidcBody(oidcCB, `"application_type":"web"`),
			check: wantAppType(appWeb),
		},
		{
			name: "web with loopback IPv4",
			body: oidcBody(oidcRedirects(cb, loopV4),
				`"application_type":"web"`),
			code: codeInvalidRedirectURI,
			rule: "redirect_uri_web",
			want: append([]string{loopV4}, webRefused...),
		},
		{
			name: "web with loopback IPv6",
			body: oidcBody(oidcRedirects(loopV6),
				`"application_type":"web"`),
			code: codeInvalidRedirectURI,
			rule: "redirect_uri_web",
			want: webRefused,
		},
		{
			name: "web with localhost",
			body: oidcBody(oidcRedirects(loopName),
				`"application_type":"web"`),
			code: codeInvalidRedirectURI,
			rule: "redirect_uri_web",
			want: webRefused,
		},
		{
			// https does not make the local machine a web host.
			name: "web with https on localhost",
			body: oidcBody(oidcRedirects("https://localhost/cb"),
				`"application_type":"web"`),
			code: codeInvalidRedirectURI,
			rule: "redirect_uri_web",
			want: webRefused,
		},
		{
			name: "web with https on 127.0.0.2",
			body: oidcBody(oidcRedirects("https://127.0.0.2/cb"),
				`"application_type":"web"`),
			code: codeInvalidRedirectURI,
			rule: "redirect_uri_web",
			want: webRefused,
		},
		{
			name: "web with a private-use scheme",
			body: oidcBody(oidcRedirects(privateUse),
				`"application_type":"web"`),
			code: codeInvalidRedirectURI,
			rule: "redirect_uri_web",
			want: webRefused,
		},
		{
			name:   "web with http on another host and https not required",
			policy: httpOK,
			body: oidcBody(oidcRedirects("http://app.example/cb"),
				`"application_type":"web"`),
			code: codeInvalidRedirectURI,
			rule: "redirect_uri_web",
			want: webRefused,
		},
		{
			name: "web with loopback post-logout URI",
			body: oidcBody(oidcCB, `"application_type":"web"`,
				`"post_logout_redirect_uris":["http://127.0.0.1/bye"]`),
			rule: "redirect_uri_web",
			want: []string{"post_logout_redirect_uris", "127.0.0.1"},
		},
		{
			name: "web with https post-logout URI",
			body: oidcBody(oidcCB, `"application_type":"web"`,
				`"post_logout_redirect_uris":["https://app.example/bye"]`),
			check: wantAppType(appWeb),
		},
		{
			name: "native with loopback IPv4, IPv6 and localhost",
			body: oidcBody(oidcRedirects(loopV4, loopV6, loopName),
				`"application_type":"native"`),
			check: wantAppType(appNative),
		},
		{
			name: "native with a private-use scheme",
			body: oidcBody(oidcRedirects(privateUse, loopNoPort),
				`"application_type":"native"`),
			check: wantAppType(appNative),
		},
		{
			// RFC 8252 section 7.2 claimed https URIs are not checked:
			// a native app must not register a web host's URI.
			name: "native with https",
			body: oidcBody(oidcRedirects(loopV4, cb),
				`"application_type":"native"`),
			code: codeInvalidRedirectURI,
			rule: "redirect_uri_native",
			want: append([]string{cb}, nativeRefused...),
		},
		{
			name:   "native with http on another host and https not required",
			policy: httpOK,
			body: oidcBody(oidcRedirects("http://app.example/cb"),
				`"application_type":"native"`),
			code: codeInvalidRedirectURI,
			rule: "redirect_uri_native",
			want: nativeRefused,
		},
		{
			// The general rule fires first when https is required.
			name: "native with http on another host",
			body: oidcBody(oidcRedirects("http://app.example/cb"),
				`"application_type":"native"`),
			code: codeInvalidRedirectURI,
			rule: "redirect_uri_https",
		},
		{
			name: "native with https post-logout URI",
			body: oidcBody(oidcRedirects(loopV4),
				`"application_type":"native"`,
				`"post_logout_redirect_uris":["https://app.example/bye"]`),
			rule: "redirect_uri_native",
			want: []string{"post_logout_redirect_uris", `"native"`},
		},
		{
			name: "native with loopback post-logout URI",
			body: oidcBody(oidcRedirects(loopV4),
				`"application_type":"native"`,
				`"post_logout_redirect_uris":["http://127.0.0.1:8400/bye"]`),
			check: wantAppType(appNative),
		},
		{
			name: "unknown type",
			body: oidcBody(oidcCB, `"application_type":"desktop"`),
			rule: "application_type_known",
			want: []string{"application_type", `"desktop"`},
		},
		{
			// The values are case-sensitive.
			name: "type in capitals",
			body: oidcBody(oidcCB, `"application_type":"Web"`),
			rule: "application_type_known",
			want: []string{`"Web"`},
		},
		{
			name: "long unknown type is truncated",
			body: oidcBody(oidcCB, `"application_type":"`+
				strings.Repeat("x", 500)+`"`),
			rule: "application_type_known",
			want: []string{"..."},
		},

		// Inference when the type is omitted.
		{
			// As Claude Code registers.
			name: "omitted with loopback only infers native",
			body: oidcBody(oidcRedirects(
				"http://localhost:53682/callback",
				"http://127.0.0.1:53682/callback"),
				`"token_endpoint_auth_method":"none"`),
			check: wantAppType(appNative),
		},
		{
			name:  "omitted with IPv6 loopback infers native",
			body:  oidcBody(oidcRedirects(loopV6)),
			check: wantAppType(appNative),
		},
		{
			// As VS Code registers: the web rules would refuse it.
			name: "omitted with loopback and https infers nothing",
			body: oidcBody(oidcRedirects("http://127.0.0.1:33418/",
				"https://vscode.dev/redirect"),
				`"token_endpoint_auth_method":"none"`),
			check: wantAppType(""),
		},
		{
			name:  "omitted with https infers nothing",
			body:  oidcBody(oidcCB),
			check: wantAppType(""),
		},
		{
			name:  "omitted with a private-use scheme infers nothing",
			body:  oidcBody(oidcRedirects(privateUse)),
			check: wantAppType(""),
		},
		{
			name:  "omitted with private-use and loopback infers nothing",
			body:  oidcBody(oidcRedirects(privateUse, loopV4)),
			check: wantAppType(""),
		},
		{
			name: "omitted without redirect URIs infers nothing",
			policy: func(p *policy) {
				p.grantTypes = []string{grantClientCredentials}
			},
			body:  oidcBody(`"grant_types":["client_credentials"]`),
			check: wantAppType(""),
		},
		{
			name:   "omitted with http on another host infers nothing",
			policy: httpOK,
			body:   oidcBody(oidcRedirects("http://app.example/cb")),
			check:  wantAppType(""),
		},

		// The mcp preset.
		{
			name:   "mcp preset: private-use and loopback infer native",
			policy: mcp,
			body:   oidcBody(oidcRedirects(privateUse, loopNoPort)),
			check:  wantAppType(appNative),
		},
		{
			name:   "mcp preset: private-use only infers native",
			policy: mcp,
			body:   oidcBody(oidcRedirects(privateUse)),
			check:  wantAppType(appNative),
		},
		{
			name:   "mcp preset: loopback only infers native",
			policy: mcp,
			body:   oidcBody(oidcRedirects(loopV4)),
			check:  wantAppType(appNative),
		},
		{
			name:   "mcp preset: https and loopback infer nothing",
			policy: mcp,
			body:   oidcBody(oidcRedirects(privateUse, loopV4, cb)),
			check:  wantAppType(""),
		},
		{
			name: "mcp preset: listed private-use scheme infers native",
			policy: func(p *policy) {
				p.mcpPreset = true
				p.redirectSchemes = []string{"myapp"}
			},
			body:  oidcBody(oidcRedirects("myapp:/cb")),
			check: wantAppType(appNative),
		},
		{
			// The preset infers; it does not widen the schemes.
			name:   "mcp preset: unlisted single-word scheme",
			policy: mcp,
			body:   oidcBody(oidcRedirects("myapp:/cb")),
			code:   codeInvalidRedirectURI,
			rule:   "redirect_uri_scheme",
			want:   []string{`"myapp"`},
		},
		{
			name:   "mcp preset: http on another host",
			policy: mcp,
			body:   oidcBody(oidcRedirects("http://app.example/cb")),
			code:   codeInvalidRedirectURI,
			rule:   "redirect_uri_https",
		},
		{
			name:   "mcp preset: explicit web still refuses loopback",
			policy: mcp,
			body: oidcBody(oidcRedirects(loopV4),
				`"application_type":"web"`),
			code: codeInvalidRedirectURI,
			rule: "redirect_uri_web",
		},
		{
			name:   "mcp preset: explicit web with https",
			policy: mcp,
			body:   oidcBody(oidcCB, `"application_type":"web"`),
			check:  wantAppType(appWeb),
		},
	})
}

// TestOIDCApplicationTypeInferredPostLogout registers a client whose
// type is inferred from its redirect URIs while its post-logout URI is a
// web one. The registration is accepted, so sending the echoed metadata
// back must be accepted too.
func TestOIDCApplicationTypeInferredPostLogout(t *testing.T) {
	runOIDCCases(t, []oidcCase{{
		name: "loopback redirect, https post-logout",
		body: oidcBody(oidcRedirects(loopV4),
			`"post_logout_redirect_uris":["https://app.example/bye"]`),
	}, {
		name:   "mcp preset: private-use redirect, https post-logout",
		policy: func(p *policy) { p.mcpPreset = true },
		body: oidcBody(oidcRedirects(privateUse),
			`"post_logout_redirect_uris":["https://app.example/bye"]`),
	}})
}

// TestOIDCApplicationTypeMalformedPostLogout checks that a post-logout
// URI that does not parse is refused with the same code whether or not
// an application_type is given.
func TestOIDCApplicationTypeMalformedPostLogout(t *testing.T) {
	bad := `"post_logout_redirect_uris":["https://app.example/%zz"]`
	var cases []oidcCase
	for _, typ := range []string{"", appWeb, appNative} {
		body := oidcBody(oidcCB, bad)
		if typ != "" {
			body = oidcBody(oidcCB, bad, `"application_type":"`+typ+`"`)
		}
		if typ == appNative {
			body = oidcBody(oidcRedirects(loopV4), bad,
				`"application_type":"native"`)
		}
		cases = append(cases, oidcCase{
			name: "type " + typ,
			body: body,
			code: codeInvalidClientMetadata,
			rule: "redirect_uri_absolute",
			want: []string{"post_logout_redirect_uris"},
		})
	}
	runOIDCCases(t, cases)
}

// TestOIDCApplicationTypeNarrowed checks that an initial access token's
// narrower policy keeps the preset's inference.
func TestOIDCApplicationTypeNarrowed(t *testing.T) {
	p := defaultPolicy()
	p.mcpPreset = true
	n := p.narrow(&clientdb.TokenPolicy{
		RedirectHosts: []string{"app.example"},
		Scopes:        []string{"mcp"},
	})
	m, perr := decodeMetadata([]byte(oidcBody(
		oidcRedirects(privateUse, loopV4), `"scope":"mcp"`)))
	if perr == nil {
		perr = n.apply(m)
	}
	if perr != nil {
		t.Fatalf("refused: %v (rule %s)", perr, perr.Rule)
	}
	if m.ApplicationType != appNative {
		t.Errorf("application_type = %q, want native", m.ApplicationType)
	}

	// The token's host list still holds for a web client's https URI.
	m, perr = decodeMetadata([]byte(oidcBody(
		oidcRedirects("https://other.example/cb"),
		`"application_type":"web"`)))
	if perr == nil {
		perr = n.apply(m)
	}
	checkProtoErr(t, perr, codeInvalidRedirectURI, http.StatusBadRequest,
		"redirect_uri_host", "initial access token")
}

func TestOIDCSubjectType(t *testing.T) {
	twoHosts := oidcRedirects(cb, "https://other.example/cb")
	runOIDCCases(t, []oidcCase{
		{
			name: "public",
			body: oidcBody(oidcCB, `"subject_type":"public"`),
			check: wantField("subject_type", func(m *clientdb.Metadata) any {
				return m.SubjectType
			}, "public"),
		},
		{
			name: "pairwise on one host",
			body: oidcBody(oidcRedirects(cb, "https://APP.example/cb2"),
				`"subject_type":"pairwise"`),
		},
		{
			name: "pairwise on two hosts without sector",
			body: oidcBody(twoHosts, `"subject_type":"pairwise"`),
			rule: "sector_identifier_required",
			want: []string{"pairwise", "sector_identifier_uri"},
		},
		{
			name: "pairwise on two hosts with sector",
			body: oidcBody(twoHosts, `"subject_type":"pairwise"`,
				`"sector_identifier_uri":"https://app.example/s.json"`),
		},
		{
			// A public client on several hosts needs no sector.
			name: "public on two hosts",
			body: oidcBody(twoHosts, `"subject_type":"public"`),
		},
		{
			name: "unknown",
			body: oidcBody(oidcCB, `"subject_type":"Pairwise"`),
			rule: "subject_type_known",
			want: []string{"subject_type", `"Pairwise"`},
		},
	})
}

func TestOIDCSigningAlgs(t *testing.T) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	public := string(jwksOf(t, &ecKey.PublicKey))
	private := string(jwksOf(t, ecKey))

	allow := func(methods ...string) func(*policy) {
		return func(p *policy) {
			p.authMethods = append(p.authMethods, methods...)
		}
	}
	implicit := func(p *policy) {
		p.grantTypes = append(p.grantTypes, grantImplicit)
	}
	jwtAuth := func(method, alg string, more ...string) string {
		return oidcBody(append([]string{oidcCB,
			`"token_endpoint_auth_method":"` + method + `"`,
			`"token_endpoint_auth_signing_alg":"` + alg + `"`}, more...)...)
	}

	var cases []oidcCase
	for _, name := range []string{
		"id_token_signed_response_alg", "userinfo_signed_response_alg",
		"request_object_signing_alg",
	} {
		for _, alg := range []string{"RS256", "PS512", "ES384", "EdDSA", "HS256"} {
			cases = append(cases, oidcCase{
				name: name + " " + alg,
				body: oidcBody(oidcCB, `"`+name+`":"`+alg+`"`),
			})
		}
		for _, alg := range []string{"XS256", "rs256", "RSA-OAEP", "None"} {
			cases = append(cases, oidcCase{
				name: name + " " + alg,
				body: oidcBody(oidcCB, `"`+name+`":"`+alg+`"`),
				rule: "jws_alg_known",
				want: []string{name, `"` + alg + `"`},
			})
		}
	}
	cases = append(cases,
		oidcCase{
			// The ID token then comes from the token endpoint only,
			// over TLS, and OpenID Connect allows it unsigned.
			name: "id_token none with code",
			body: oidcBody(oidcCB,
				`"id_token_signed_response_alg":"none"`),
		},
		oidcCase{
			name:   "id_token none with code id_token",
			policy: implicit,
			body: oidcBody(oidcCB,
				`"grant_types":["authorization_code","implicit"]`,
				`"response_types":["code id_token"]`,
				`"id_token_signed_response_alg":"none"`),
			rule: "jws_alg_known",
			want: []string{"id_token_signed_response_alg", `"none"`},
		},
		oidcCase{
			name:   "id_token none with id_token among others",
			policy: implicit,
			body: oidcBody(oidcCB,
				`"grant_types":["authorization_code","implicit"]`,
				`"response_types":["code","id_token token"]`,
				`"id_token_signed_response_alg":"none"`),
			rule: "jws_alg_known",
		},
		oidcCase{
			name:   "id_token none with code token",
			policy: implicit,
			body: oidcBody(oidcCB,
				`"grant_types":["authorization_code","implicit"]`,
				`"response_types":["code token"]`,
				`"id_token_signed_response_alg":"none"`),
		},
		oidcCase{
			name: "request object none",
			body: oidcBody(oidcCB, `"request_object_signing_alg":"none"`),
		},
		oidcCase{
			name: "userinfo none",
			body: oidcBody(oidcCB,
				`"userinfo_signed_response_alg":"none"`),
			rule: "jws_alg_known",
			want: []string{"userinfo_signed_response_alg"},
		},

		// token_endpoint_auth_signing_alg against the method.
		oidcCase{
			name:   "client_secret_jwt with HS256",
			policy: allow(authClientSecretJWT),
			body:   jwtAuth(authClientSecretJWT, "HS256"),
			check: func(t *testing.T, m *clientdb.Metadata) {
				if !issuesSecret(m) {
					t.Error("client_secret_jwt client gets no secret")
				}
			},
		},
		oidcCase{
			name:   "client_secret_jwt with RS256",
			policy: allow(authClientSecretJWT),
			body:   jwtAuth(authClientSecretJWT, "RS256"),
			rule:   "auth_signing_alg",
			want: []string{"token_endpoint_auth_signing_alg", `"RS256"`,
				`"client_secret_jwt"`},
		},
		oidcCase{
			name:   "client_secret_jwt with EdDSA",
			policy: allow(authClientSecretJWT),
			body:   jwtAuth(authClientSecretJWT, "EdDSA"),
			rule:   "auth_signing_alg",
		},
		oidcCase{
			name:   "private_key_jwt with ES256",
			policy: allow(authPrivateKeyJWT),
			body:   jwtAuth(authPrivateKeyJWT, "ES256", `"jwks":`+public),
		},
		oidcCase{
			name:   "private_key_jwt with PS256 and jwks_uri",
			policy: allow(authPrivateKeyJWT),
			body: jwtAuth(authPrivateKeyJWT, "PS256",
				`"jwks_uri":"https://app.example/jwks.json"`),
		},
		oidcCase{
			name:   "private_key_jwt with HS256",
			policy: allow(authPrivateKeyJWT),
			body:   jwtAuth(authPrivateKeyJWT, "HS256", `"jwks":`+public),
			rule:   "auth_signing_alg",
			want:   []string{`"HS256"`, `"private_key_jwt"`},
		},
		oidcCase{
			name:   "private_key_jwt with ES256 and no keys",
			policy: allow(authPrivateKeyJWT),
			body:   jwtAuth(authPrivateKeyJWT, "ES256"),
			rule:   "jwks_required",
			want:   []string{"private_key_jwt", "jwks"},
		},
		oidcCase{
			// The client's own signing key must never be sent.
			name:   "private_key_jwt with ES256 and a private key",
			policy: allow(authPrivateKeyJWT),
			body:   jwtAuth(authPrivateKeyJWT, "ES256", `"jwks":`+private),
			rule:   "jwks_public",
			want:   []string{"jwks key 0"},
		},
		oidcCase{
			name:   "auth signing alg none",
			policy: allow(authPrivateKeyJWT),
			body:   jwtAuth(authPrivateKeyJWT, "none", `"jwks":`+public),
			rule:   "jws_alg_known",
			want:   []string{"token_endpoint_auth_signing_alg", `"none"`},
		},
		oidcCase{
			name:   "auth signing alg unknown",
			policy: allow(authClientSecretJWT),
			body:   jwtAuth(authClientSecretJWT, "HS1"),
			rule:   "jws_alg_known",
			want:   []string{"token_endpoint_auth_signing_alg", `"HS1"`},
		},
	)
	runOIDCCases(t, cases)
}

func TestOIDCEncryption(t *testing.T) {
	enc := func(get func(*clientdb.Metadata) string, want string) metaCheck {
		return wantField("enc", func(m *clientdb.Metadata) any {
			return get(m)
		}, want)
	}
	var cases []oidcCase
	for _, pair := range []struct {
		prefix string
		enc    func(*clientdb.Metadata) string
	}{
		{"id_token_encrypted_response", func(m *clientdb.Metadata) string {
			return m.IDTokenEncryptedResponseEnc
		}},
		{"userinfo_encrypted_response", func(m *clientdb.Metadata) string {
			return m.UserinfoEncryptedResponseEnc
		}},
		{"request_object_encryption", func(m *clientdb.Metadata) string {
			return m.RequestObjectEncryptionEnc
		}},
	} {
		alg, encName := pair.prefix+"_alg", pair.prefix+"_enc"
		member := func(name, v string) string {
			return `"` + name + `":"` + v + `"`
		}
		cases = append(cases,
			oidcCase{
				// OpenID Connect Dynamic Client Registration 1.0
				// section 2: the default content encryption.
				name: alg + " without enc",
				body: oidcBody(oidcCB, member(alg, "RSA-OAEP")),
				check: all(enc(pair.enc, "A128CBC-HS256"),
					echoes(member(encName, "A128CBC-HS256"))),
			},
			oidcCase{
				name:  alg + " with enc",
				body:  oidcBody(oidcCB, member(alg, "ECDH-ES"), member(encName, "A256GCM")),
				check: enc(pair.enc, "A256GCM"),
			},
			oidcCase{
				name:  alg + " dir",
				body:  oidcBody(oidcCB, member(alg, "dir"), member(encName, "A192GCM")),
				check: enc(pair.enc, "A192GCM"),
			},
			oidcCase{
				name: encName + " without alg",
				body: oidcBody(oidcCB, member(encName, "A256GCM")),
				rule: "jwe_alg_required",
				want: []string{encName + " requires " + alg},
			},
			oidcCase{
				// Deprecated for its padding oracle.
				name: alg + " RSA1_5",
				body: oidcBody(oidcCB, member(alg, "RSA1_5")),
				rule: "jwe_alg_known",
				want: []string{alg, `"RSA1_5"`},
			},
			oidcCase{
				// A JWS algorithm is no key algorithm.
				name: alg + " RS256",
				body: oidcBody(oidcCB, member(alg, "RS256")),
				rule: "jwe_alg_known",
			},
			oidcCase{
				name: encName + " unknown",
				body: oidcBody(oidcCB, member(alg, "A128KW"), member(encName, "A128CBC")),
				rule: "jwe_enc_known",
				want: []string{encName, `"A128CBC"`},
			},
			oidcCase{
				name: encName + " a key algorithm",
				body: oidcBody(oidcCB, member(alg, "A128KW"), member(encName, "A128KW")),
				rule: "jwe_enc_known",
			},
		)
	}
	runOIDCCases(t, cases)
}

func TestOIDCMaxAgeAndACR(t *testing.T) {
	acr := func(values ...string) string {
		b, _ := json.Marshal(values)
		return `"default_acr_values":` + string(b)
	}
	runOIDCCases(t, []oidcCase{
		{
			name: "max age ten years",
			body: oidcBody(oidcCB,
				fmt.Sprintf(`"default_max_age":%d`, 10*365*24*3600)),
		},
		{
			name: "max age over ten years",
			body: oidcBody(oidcCB,
				fmt.Sprintf(`"default_max_age":%d`, 10*365*24*3600+1)),
			rule: "default_max_age",
			want: []string{"default_max_age", "315360000"},
		},
		{
			name: "max age largest integer",
			body: oidcBody(oidcCB, `"default_max_age":9223372036854775807`),
			rule: "default_max_age",
		},
		{
			name: "acr values",
			body: oidcBody(oidcCB, acr("urn:mace:incommon:iap:silver", "0")),
			check: wantField("default_acr_values", func(m *clientdb.Metadata) any {
				return m.DefaultACRValues
			}, []string{"urn:mace:incommon:iap:silver", "0"}),
		},
		{
			name: "acr value with a space",
			body: oidcBody(oidcCB, acr("a b")),
			rule: "acr_syntax",
			want: []string{"default_acr_values", `"a b"`},
		},
		{
			name: "acr value empty",
			body: oidcBody(oidcCB, acr("")),
			rule: "acr_syntax",
		},
		{
			name: "acr value with a quote",
			body: oidcBody(oidcCB, acr(`a"b`)),
			rule: "acr_syntax",
		},
		{
			name: "acr value repeated",
			body: oidcBody(oidcCB, acr("1", "2", "1")),
			rule: "duplicate_entry",
			want: []string{"default_acr_values", `"1"`},
		},
		{
			name: "too many acr values",
			body: oidcBody(oidcCB, acr(numbered("acr", maxListLength+1)...)),
			rule: "list_length",
			want: []string{"default_acr_values"},
		},
		{
			name: "acr value too long",
			body: oidcBody(oidcCB, acr(strings.Repeat("a", maxStringLength+1))),
			rule: "string_length",
			want: []string{"default_acr_values"},
		},
	})
}

func TestOIDCURIs(t *testing.T) {
	str := func(name, v string) string {
		return `"` + name + `":"` + v + `"`
	}
	list := func(name string, v ...string) string {
		b, _ := json.Marshal(v)
		return `"` + name + `":` + string(b)
	}
	httpOK := func(p *policy) { p.requireHTTPS = false }

	var cases []oidcCase

	// The two members that must use https.
	for _, name := range []string{"sector_identifier_uri", "initiate_login_uri"} {
		cases = append(cases,
			oidcCase{
				name:  name + " https",
				body:  oidcBody(oidcCB, str(name, "https://app.example/x.json?a=1")),
				check: echoes(str(name, "https://app.example/x.json?a=1")),
			},
			oidcCase{
				name: name + " http",
				body: oidcBody(oidcCB, str(name, "http://app.example/x")),
				rule: "url_https",
				want: []string{name},
			},
			oidcCase{
				// Unlike a redirect URI, loopback http is no exception.
				name: name + " http on loopback",
				body: oidcBody(oidcCB, str(name, "http://127.0.0.1/x")),
				rule: "url_https",
				want: []string{name, "https"},
			},
			oidcCase{
				name:   name + " http with https not required",
				policy: httpOK,
				body:   oidcBody(oidcCB, str(name, "http://app.example/x")),
				rule:   "url_https",
			},
			oidcCase{
				name: name + " with a fragment",
				body: oidcBody(oidcCB, str(name, "https://app.example/x#f")),
				rule: "url_fragment",
				want: []string{name, "fragment"},
			},
			oidcCase{
				name: name + " relative",
				body: oidcBody(oidcCB, str(name, "/x.json")),
				rule: "url_absolute",
				want: []string{name},
			},
			oidcCase{
				name: name + " with user information",
				body: oidcBody(oidcCB, str(name, "https://u:p@app.example/x")),
				rule: "url_userinfo",
			},
			oidcCase{
				// URI schemes are case-insensitive (RFC 3986 section
				// 3.1), and the fetcher reads this one as https.
				name: name + " scheme in capitals",
				body: oidcBody(oidcCB, str(name, "HTTPS://app.example/x")),
			},
		)
	}

	cases = append(cases,
		// request_uris: a fragment is allowed (OpenID Connect Core
		// section 6.2 uses it for a hash of the contents).
		oidcCase{
			name: "request_uris with a fragment",
			body: oidcBody(oidcCB, list("request_uris",
				"https://app.example/r/1.jwt#5f2a", "https://app.example/r/2.jwt")),
			check: wantField("request_uris", func(m *clientdb.Metadata) any {
				return m.RequestURIs
			}, []string{"https://app.example/r/1.jwt#5f2a",
				"https://app.example/r/2.jwt"}),
		},
		oidcCase{
			name: "request_uris http",
			body: oidcBody(oidcCB, list("request_uris", "http://app.example/r")),
			rule: "url_https",
			want: []string{"request_uris"},
		},
		oidcCase{
			name: "request_uris http on loopback",
			body: oidcBody(oidcCB, list("request_uris", "http://127.0.0.1/r")),
			rule: "url_https",
			want: []string{"request_uris"},
		},
		oidcCase{
			name: "request_uris other scheme",
			body: oidcBody(oidcCB, list("request_uris", "urn:example:r")),
			rule: "url_absolute",
		},
		oidcCase{
			name: "request_uris repeated",
			body: oidcBody(oidcCB, list("request_uris",
				"https://app.example/r", "https://app.example/r")),
			rule: "duplicate_entry",
			want: []string{"request_uris"},
		},
		oidcCase{
			name: "too many request_uris",
			body: oidcBody(oidcCB, list("request_uris",
				numbered("https://app.example/r", maxListLength+1)...)),
			rule: "list_length",
		},

		// post_logout_redirect_uris follow the redirect URI rules but
		// are metadata, not redirect URIs, for the error code.
		oidcCase{
			name: "post-logout https and loopback",
			body: oidcBody(oidcCB, list("post_logout_redirect_uris",
				"https://app.example/bye", "http://127.0.0.1:8400/bye",
				"com.example.app:/bye")),
		},
		oidcCase{
			name: "post-logout with a fragment",
			body: oidcBody(oidcCB, list("post_logout_redirect_uris",
				"https://app.example/bye#x")),
			rule: "redirect_uri_fragment",
			want: []string{"post_logout_redirect_uris", "fragment"},
		},
		oidcCase{
			name: "post-logout http on another host",
			body: oidcBody(oidcCB, list("post_logout_redirect_uris",
				"http://app.example/bye")),
			rule: "redirect_uri_https",
			want: []string{"post_logout_redirect_uris"},
		},
		oidcCase{
			name: "post-logout javascript",
			body: oidcBody(oidcCB, list("post_logout_redirect_uris",
				"javascript:alert(1)")),
			rule: "redirect_uri_scheme",
		},
		oidcCase{
			name: "post-logout single-word scheme",
			body: oidcBody(oidcCB, list("post_logout_redirect_uris",
				"myapp:/bye")),
			rule: "redirect_uri_scheme",
		},
		oidcCase{
			name: "post-logout outside redirect_hosts",
			policy: func(p *policy) {
				p.redirectHosts = []string{"app.example"}
			},
			body: oidcBody(oidcCB, list("post_logout_redirect_uris",
				"https://evil.example/bye")),
			rule: "redirect_uri_host",
		},
		oidcCase{
			name: "post-logout repeated",
			body: oidcBody(oidcCB, list("post_logout_redirect_uris",
				"https://app.example/bye", "https://app.example/bye")),
			rule: "duplicate_entry",
		},

		// frontchannel_logout_uri: scheme, host and port of a redirect
		// URI.
		oidcCase{
			name: "frontchannel on the redirect origin",
			body: oidcBody(oidcRedirects(cb, "https://b.example:8443/cb"),
				str("frontchannel_logout_uri", "https://B.example:8443/fc?x=1")),
		},
		oidcCase{
			name: "frontchannel on loopback",
			body: oidcBody(oidcRedirects(loopV4),
				str("frontchannel_logout_uri", "http://127.0.0.1:8400/fc")),
		},
		oidcCase{
			name: "frontchannel on another host",
			body: oidcBody(oidcCB,
				str("frontchannel_logout_uri", "https://other.example/fc")),
			rule: "frontchannel_origin",
			want: []string{"frontchannel_logout_uri"},
		},
		oidcCase{
			name: "frontchannel on another port",
			body: oidcBody(oidcCB,
				str("frontchannel_logout_uri", "https://app.example:8443/fc")),
			rule: "frontchannel_origin",
		},
		oidcCase{
			name:   "frontchannel on another scheme",
			policy: httpOK,
			body: oidcBody(oidcCB,
				str("frontchannel_logout_uri", "http://app.example/fc")),
			rule: "frontchannel_origin",
		},
		oidcCase{
			name: "frontchannel with a fragment",
			body: oidcBody(oidcCB,
				str("frontchannel_logout_uri", "https://app.example/fc#x")),
			rule: "url_fragment",
			want: []string{"frontchannel_logout_uri"},
		},
		oidcCase{
			name: "frontchannel http on another host",
			body: oidcBody(oidcCB,
				str("frontchannel_logout_uri", "http://app.example/fc")),
			rule: "url_https",
		},
		oidcCase{
			name: "frontchannel session required",
			body: oidcBody(oidcCB,
				str("frontchannel_logout_uri", "https://app.example/fc"),
				`"frontchannel_logout_session_required":true`),
			check: echoes(`"frontchannel_logout_session_required":true`),
		},

		// backchannel_logout_uri: any host, no fragment.
		oidcCase{
			name: "backchannel on another host",
			body: oidcBody(oidcCB,
				str("backchannel_logout_uri", "https://rp.example.net/bc"),
				`"backchannel_logout_session_required":false`),
			check: echoes(`"backchannel_logout_session_required":false`),
		},
		oidcCase{
			name: "backchannel with a fragment",
			body: oidcBody(oidcCB,
				str("backchannel_logout_uri", "https://rp.example.net/bc#x")),
			rule: "url_fragment",
			want: []string{"backchannel_logout_uri"},
		},
		oidcCase{
			name: "backchannel http on another host",
			body: oidcBody(oidcCB,
				str("backchannel_logout_uri", "http://rp.example.net/bc")),
			rule: "url_https",
			want: []string{"backchannel_logout_uri"},
		},
		oidcCase{
			name: "backchannel not http",
			body: oidcBody(oidcCB,
				str("backchannel_logout_uri", "ftp://rp.example.net/bc")),
			rule: "url_absolute",
		},
	)
	runOIDCCases(t, cases)
}

func TestPresetValidate(t *testing.T) {
	off := false
	cases := []struct {
		name   string
		change func(*Handler)
		want   []string // substrings of the error; none for no error
	}{
		{"none", func(*Handler) {}, nil},
		{"mcp", func(h *Handler) { h.RedirectPreset = presetMCP }, nil},
		{
			"mcp with require_https off", func(h *Handler) {
				h.RedirectPreset = presetMCP
				h.RequireHTTPS = &off
			}, []string{"redirect_preset mcp", "require_https off"},
		},
		{
			"unknown", func(h *Handler) { h.RedirectPreset = "native" },
			[]string{`redirect_preset "native"`, "unknown", "mcp"},
		},
		{
			"case matters", func(h *Handler) { h.RedirectPreset = "MCP" },
			[]string{`redirect_preset "MCP"`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := provisioned()
			tc.change(&h)
			err := h.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate accepted it, want an error with %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// sectorDoc is the fixed answer at one path of a sectorServer.
type sectorDoc struct {
	status int
	body   string
}

// sectorServer is an https server on the loopback interface that answers
// each path with its document, and 404 otherwise.
type sectorServer struct {
	*httptest.Server

	// roots is a PEM file holding the server's certificate.
	roots string

	hits atomic.Int64 // requests answered
}

// startSectorServer starts a sectorServer that serves docs.
func startSectorServer(t *testing.T, docs map[string]sectorDoc) *sectorServer {
	t.Helper()
	s := &sectorServer{}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(
		func(w http.ResponseWriter, r *http.Request) {
			s.hits.Add(1)
			d, ok := docs[r.URL.Path]
			if !ok {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(d.status)
			_, _ = w.Write([]byte(d.body))
		}))
	t.Cleanup(s.Close)

	s.roots = filepath.Join(t.TempDir(), "sector-ca.pem")
	block := &pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw}
	if err := os.WriteFile(s.roots, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSectorIdentifierCheck runs checkSectorIdentifier against a local
// https server through a fetcher that may reach it.
func TestSectorIdentifierCheck(t *testing.T) {
	uris := []string{cb, loopV4}
	listed, _ := json.Marshal(uris)
	srv := startSectorServer(t, map[string]sectorDoc{
		"/all":     {200, string(listed)},
		"/more":    {200, `["https://x.example/cb",` + string(listed)[1:]},
		"/one":     {200, `["` + cb + `"]`},
		"/empty":   {200, `[]`},
		"/null":    {200, `null`},
		"/object":  {200, `{"redirect_uris":` + string(listed) + `}`},
		"/numbers": {200, `[1,2]`},
		"/text":    {200, `not json`},
		"/gone":    {410, string(listed)},
		"/big":     {200, `["` + strings.Repeat("a", 2048) + `"]`},
	})
	f, err := (&FetchConfig{
		AllowNetworks: []string{"127.0.0.1/32", "::1/128"},
		TrustedRoots:  []string{srv.roots},
		MaxSize:       1024,
	}).newFetcher()
	if err != nil {
		t.Fatal(err)
	}
	h := &Handler{fetcher: f, now: time.Now}

	cases := []struct {
		path string
		rule string   // "" for accepted
		want []string // substrings of the description
	}{
		{"/all", "", nil},
		{"/more", "", nil},
		{"/one", "sector_identifier_lists", []string{loopV4}},
		{"/empty", "sector_identifier_lists", []string{cb}},
		{"/null", "sector_identifier_lists", nil},
		{"/object", "sector_identifier_json", []string{"JSON array"}},
		{"/numbers", "sector_identifier_json", nil},
		{"/text", "sector_identifier_json", nil},
		{"/gone", "sector_identifier_fetch", []string{"410"}},
		{"/missing", "sector_identifier_fetch", []string{"404"}},
		{"/big", "sector_identifier_fetch", []string{"larger", "1024"}},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			m := &clientdb.Metadata{
				RedirectURIs:        uris,
				SectorIdentifierURI: srv.URL + tc.path,
			}
			err := h.checkSectorIdentifier(t.Context(), m)
			if tc.rule == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			want := append([]string{"sector_identifier_uri"}, tc.want...)
			checkProtoErr(t, err, codeInvalidClientMetadata,
				http.StatusBadRequest, tc.rule, want...)
			// The redirect URIs may name a loopback address; a
			// failed fetch must not name the server's.
			if tc.rule == "sector_identifier_fetch" &&
				strings.Contains(err.Description, "127.0.0.1") {
				t.Errorf("description names the address: %q",
					err.Description)
			}
		})
	}

	// Without the allowance the address is refused, and the client is
	// not told what the name resolved to.
	strict, err := (&FetchConfig{TrustedRoots: []string{srv.roots}}).newFetcher()
	if err != nil {
		t.Fatal(err)
	}
	h = &Handler{fetcher: strict, now: time.Now}
	m := &clientdb.Metadata{
		RedirectURIs: uris,
		SectorIdentifierURI: strings.Replace(srv.URL, "127.0.0.1",
			"localhost", 1) + "/all",
	}
	before := srv.hits.Load()
	perr := h.checkSectorIdentifier(t.Context(), m)
	checkProtoErr(t, perr, codeInvalidClientMetadata, http.StatusBadRequest,
		"sector_identifier_fetch", "sector_identifier_uri", "not public")
	if n := srv.hits.Load() - before; n != 0 {
		t.Errorf("the refused address got %d requests", n)
	}
	if perr != nil {
		for _, ip := range []string{"127.0.0.1", "::1"} {
			if strings.Contains(perr.Description, ip) {
				t.Errorf("description %q names %s", perr.Description, ip)
			}
		}
		if perr.Cause == nil {
			t.Error("no cause for the log")
		}
	}

	// No sector_identifier_uri: nothing is fetched.
	if perr := (&Handler{}).checkSectorIdentifier(t.Context(),
		&clientdb.Metadata{RedirectURIs: uris}); perr != nil {
		t.Errorf("without a sector_identifier_uri: %v", perr)
	}
}

// TestSectorIdentifierCache checks that a sector identifier document is
// fetched once for several checks within its time to live, and again
// after it.
func TestSectorIdentifierCache(t *testing.T) {
	uris := []string{cb, loopV4}
	listed, _ := json.Marshal(uris)
	srv := startSectorServer(t, map[string]sectorDoc{"/all": {200, string(listed)}})
	f, err := (&FetchConfig{
		AllowNetworks: []string{"127.0.0.1/32", "::1/128"},
		TrustedRoots:  []string{srv.roots},
	}).newFetcher()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_796_000_000, 0)
	h := &Handler{fetcher: f, sectors: newSectorCache(), now: func() time.Time { return now }}
	m := &clientdb.Metadata{RedirectURIs: uris, SectorIdentifierURI: srv.URL + "/all"}

	before := srv.hits.Load()
	for range 3 {
		if perr := h.checkSectorIdentifier(t.Context(), m); perr != nil {
			t.Fatalf("refused: %v", perr)
		}
	}
	if n := srv.hits.Load() - before; n != 1 {
		t.Errorf("three checks within the TTL fetched %d times, want 1", n)
	}

	// A redirect URI the cached document does not list is still refused.
	other := *m
	other.RedirectURIs = []string{"https://other.example/cb"}
	if perr := h.checkSectorIdentifier(t.Context(), &other); perr == nil {
		t.Error("a redirect URI missing from the cached document was accepted")
	}

	now = now.Add(sectorTTL)
	if perr := h.checkSectorIdentifier(t.Context(), m); perr != nil {
		t.Fatalf("refused: %v", perr)
	}
	if n := srv.hits.Load() - before; n != 2 {
		t.Errorf("a check after the TTL made %d fetches in all, want 2", n)
	}
}
