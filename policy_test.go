package dcr

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

// checkProtoErr fails the test unless err is a protocol error with the
// given code, status and rule whose description contains every string in
// want.
func checkProtoErr(t *testing.T, err *protoError, code string, status int,
	rule string, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s (rule %s)", code, rule)
	}
	if err.Code != code || err.Status != status || err.Rule != rule {
		t.Errorf("error = %s/%d rule %s, want %s/%d rule %s (%q)",
			err.Code, err.Status, err.Rule, code, status, rule,
			err.Description)
	}
	for _, w := range want {
		if !strings.Contains(err.Description, w) {
			t.Errorf("description %q does not contain %q",
				err.Description, w)
		}
	}
}

// defaultPolicy returns the policy Provision makes from an empty config.
func defaultPolicy() *policy {
	return &policy{
		grantTypes:      slices.Clone(defaultGrantTypes),
		authMethods:     slices.Clone(defaultAuthMethods),
		requireHTTPS:    true,
		redirectSchemes: []string{},
	}
}

// allGrants lists every grant type the policy knows, in an order unlike
// the one in which the code checks them.
var allGrants = []string{
	grantRefreshToken, grantJWTBearer, grantClientCredentials,
	grantPassword, grantSAML2Bearer, grantImplicit, grantAuthorizationCode,
}

// Redirect URIs for cases that need one but are not about it.
const cb = "https://app.example/cb"

var cbs = []string{cb}

// policyCase is one registration checked against a policy. A case with a
// rule expects a refusal by that rule; one without expects acceptance and
// may inspect the metadata after the defaults were applied.
type policyCase struct {
	name   string
	policy func(*policy) // adjusts defaultPolicy; nil keeps it
	meta   clientdb.Metadata

	code string // default codeInvalidClientMetadata
	rule string
	want []string // substrings of the description

	check metaCheck
}

func runPolicyCases(t *testing.T, cases []policyCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := defaultPolicy()
			if tc.policy != nil {
				tc.policy(p)
			}
			m := tc.meta
			err := p.apply(&m)

			if tc.rule == "" {
				if err != nil {
					t.Fatalf("apply: %v (rule %s)", err, err.Rule)
				}
				if tc.check != nil {
					tc.check(t, &m)
				}
				return
			}
			code := tc.code
			if code == "" {
				code = codeInvalidClientMetadata
			}
			checkProtoErr(t, err, code, http.StatusBadRequest,
				tc.rule, tc.want...)
		})
	}
}

// wantList returns a check that a list member of the metadata equals want,
// telling nil from empty.
func wantList(member string, want []string) metaCheck {
	return func(t *testing.T, m *clientdb.Metadata) {
		t.Helper()
		var got []string
		switch member {
		case "grant_types":
			got = m.GrantTypes
		case "response_types":
			got = m.ResponseTypes
		case "redirect_uris":
			got = m.RedirectURIs
		case "contacts":
			got = m.Contacts
		default:
			t.Fatalf("no list member %s", member)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %#v, want %#v", member, got, want)
		}
	}
}

// metaCheck inspects the metadata after the policy applied it.
type metaCheck = func(*testing.T, *clientdb.Metadata)

// all combines checks.
func all(checks ...metaCheck) metaCheck {
	return func(t *testing.T, m *clientdb.Metadata) {
		t.Helper()
		for _, c := range checks {
			c(t, m)
		}
	}
}

func TestPolicyAuthMethod(t *testing.T) {
	wantMethod := func(want string) metaCheck {
		return func(t *testing.T, m *clientdb.Metadata) {
			if m.TokenEndpointAuthMethod != want {
				t.Errorf("token_endpoint_auth_method = %q, want %q",
					m.TokenEndpointAuthMethod, want)
			}
		}
	}
	runPolicyCases(t, []policyCase{
		{
			// RFC 7591 section 2: the default is client_secret_basic.
			name:  "absent defaults to client_secret_basic",
			meta:  clientdb.Metadata{RedirectURIs: cbs},
			check: wantMethod(authClientSecretBasic),
		},
		{
			name: "client_secret_post allowed",
			meta: clientdb.Metadata{
				RedirectURIs:            cbs,
				TokenEndpointAuthMethod: authClientSecretPost,
			},
			check: wantMethod(authClientSecretPost),
		},
		{
			name: "none allowed",
			meta: clientdb.Metadata{
				RedirectURIs:            cbs,
				TokenEndpointAuthMethod: authNone,
			},
			check: wantMethod(authNone),
		},
		{
			name: "client_secret_jwt not allowed by default",
			meta: clientdb.Metadata{
				RedirectURIs:            cbs,
				TokenEndpointAuthMethod: authClientSecretJWT,
			},
			rule: "auth_method_allowed",
			want: []string{"token_endpoint_auth_method", `"client_secret_jwt"`},
		},
		{
			name: "private_key_jwt not allowed by default",
			meta: clientdb.Metadata{
				RedirectURIs:            cbs,
				TokenEndpointAuthMethod: authPrivateKeyJWT,
			},
			rule: "auth_method_allowed",
			want: []string{"token_endpoint_auth_method", `"private_key_jwt"`},
		},
		{
			name: "unknown method",
			meta: clientdb.Metadata{
				RedirectURIs:            cbs,
				TokenEndpointAuthMethod: "tls_client_auth",
			},
			rule: "auth_method_allowed",
			want: []string{`"tls_client_auth"`},
		},
		{
			name:   "listed client_secret_jwt accepted",
			policy: func(p *policy) { p.authMethods = []string{authClientSecretJWT} },
			meta: clientdb.Metadata{
				RedirectURIs:            cbs,
				TokenEndpointAuthMethod: authClientSecretJWT,
			},
			check: wantMethod(authClientSecretJWT),
		},
		{
			// A client that names no method is not refused for one it
			// did not choose: it gets the first method listed.
			name:   "default falls back to first listed",
			policy: func(p *policy) { p.authMethods = []string{authNone} },
			meta:   clientdb.Metadata{RedirectURIs: cbs},
			check:  wantMethod(authNone),
		},
		{
			name: "default falls back in listed order",
			policy: func(p *policy) {
				p.authMethods = []string{authClientSecretPost, authNone}
			},
			meta:  clientdb.Metadata{RedirectURIs: cbs},
			check: wantMethod(authClientSecretPost),
		},
		{
			name: "default basic when listed last",
			policy: func(p *policy) {
				p.authMethods = []string{authNone, authClientSecretBasic}
			},
			meta:  clientdb.Metadata{RedirectURIs: cbs},
			check: wantMethod(authClientSecretBasic),
		},
		{
			name: "case matters",
			meta: clientdb.Metadata{
				RedirectURIs:            cbs,
				TokenEndpointAuthMethod: "None",
			},
			rule: "auth_method_allowed",
			want: []string{`"None"`},
		},
	})
}

func TestPolicyGrantTypes(t *testing.T) {
	allowAll := func(p *policy) { p.grantTypes = slices.Clone(allGrants) }
	allowClientCredentials := func(p *policy) {
		p.grantTypes = append(p.grantTypes, grantClientCredentials)
	}

	cases := []policyCase{
		{
			name: "neither given",
			meta: clientdb.Metadata{RedirectURIs: cbs},
			check: all(
				wantList("grant_types", []string{grantAuthorizationCode}),
				wantList("response_types", []string{"code"})),
		},
		{
			name: "response_types derived from grant_types",
			meta: clientdb.Metadata{
				RedirectURIs: cbs,
				GrantTypes: []string{
					grantAuthorizationCode, grantRefreshToken,
				},
			},
			check: all(
				wantList("grant_types", []string{
					grantAuthorizationCode, grantRefreshToken,
				}),
				wantList("response_types", []string{"code"})),
		},
		{
			name: "grant_types derived from response_types",
			meta: clientdb.Metadata{
				RedirectURIs:  cbs,
				ResponseTypes: []string{"code"},
			},
			check: all(
				wantList("grant_types", []string{grantAuthorizationCode}),
				wantList("response_types", []string{"code"})),
		},
		{
			name:   "implicit derived from token",
			policy: allowAll,
			meta: clientdb.Metadata{
				RedirectURIs:  cbs,
				ResponseTypes: []string{"code", "token"},
			},
			check: wantList("grant_types", []string{
				grantAuthorizationCode, grantImplicit,
			}),
		},
		{
			// No redirect-based grant: no response type, and no
			// redirect URI needed.
			name: "refresh_token only",
			meta: clientdb.Metadata{GrantTypes: []string{grantRefreshToken}},
			check: all(
				wantList("response_types", []string{}),
				wantList("redirect_uris", nil)),
		},
		{
			name:   "client_credentials derives empty response_types",
			policy: allowClientCredentials,
			meta: clientdb.Metadata{
				GrantTypes: []string{grantClientCredentials},
			},
			check: wantList("response_types", []string{}),
		},
		{
			name: "empty grant_types",
			meta: clientdb.Metadata{
				RedirectURIs: cbs,
				GrantTypes:   []string{},
			},
			rule: "grant_types_empty",
			want: []string{"grant_types"},
		},
		{
			name: "empty response_types without grant_types",
			meta: clientdb.Metadata{
				RedirectURIs:  cbs,
				ResponseTypes: []string{},
			},
			rule: "grant_types_required",
			want: []string{"grant_types", "response_types"},
		},
		{
			name: "unknown grant type",
			meta: clientdb.Metadata{
				RedirectURIs: cbs,
				GrantTypes:   []string{"urn:example:custom"},
			},
			rule: "grant_type_allowed",
			want: []string{`"urn:example:custom"`},
		},
		{
			name: "duplicate grant type",
			meta: clientdb.Metadata{
				RedirectURIs: cbs,
				GrantTypes: []string{
					grantAuthorizationCode, grantRefreshToken,
					grantAuthorizationCode,
				},
			},
			rule: "duplicate_entry",
			want: []string{"grant_types", `"authorization_code"`},
		},
		{
			name: "too many grant types",
			meta: clientdb.Metadata{
				RedirectURIs: cbs,
				GrantTypes:   numbered("g", maxListLength+1),
			},
			rule: "list_length",
			want: []string{"grant_types"},
		},
		{
			name: "over-long grant type",
			meta: clientdb.Metadata{
				RedirectURIs: cbs,
				GrantTypes:   []string{strings.Repeat("g", maxStringLength+1)},
			},
			rule: "string_length",
			want: []string{"grant_types"},
		},
		{
			name:   "every registered grant kept in order",
			policy: allowAll,
			meta: clientdb.Metadata{
				RedirectURIs: cbs,
				GrantTypes:   slices.Clone(allGrants),
			},
			check: all(
				wantList("grant_types", allGrants),
				wantList("response_types", []string{"code", "token"})),
		},

		// RFC 7591 section 2.1, from response types to grant types.
		{
			name: "code without authorization_code",
			meta: clientdb.Metadata{
				RedirectURIs:  cbs,
				GrantTypes:    []string{grantRefreshToken},
				ResponseTypes: []string{"code"},
			},
			rule: "grant_response_agree",
			want: []string{`"authorization_code"`, "grant_types"},
		},
		{
			name:   "token without implicit",
			policy: allowAll,
			meta: clientdb.Metadata{
				RedirectURIs:  cbs,
				GrantTypes:    []string{grantAuthorizationCode},
				ResponseTypes: []string{"code", "token"},
			},
			rule: "grant_response_agree",
			want: []string{`"implicit"`},
		},
		{
			name:   "id_token without implicit",
			policy: allowAll,
			meta: clientdb.Metadata{
				RedirectURIs:  cbs,
				GrantTypes:    []string{grantAuthorizationCode},
				ResponseTypes: []string{"code id_token"},
			},
			rule: "grant_response_agree",
			want: []string{`"implicit"`},
		},
		// And from grant types to response types.
		{
			name: "authorization_code without code",
			meta: clientdb.Metadata{
				RedirectURIs:  cbs,
				GrantTypes:    []string{grantAuthorizationCode},
				ResponseTypes: []string{},
			},
			rule: "grant_response_agree",
			want: []string{`"authorization_code"`, `"code"`},
		},
		{
			name:   "implicit without token",
			policy: allowAll,
			meta: clientdb.Metadata{
				RedirectURIs: cbs,
				GrantTypes: []string{
					grantAuthorizationCode, grantImplicit,
				},
				ResponseTypes: []string{"code"},
			},
			rule: "grant_response_agree",
			want: []string{`"implicit"`, `"token"`},
		},
		{
			name:   "hybrid response type agrees",
			policy: allowAll,
			meta: clientdb.Metadata{
				RedirectURIs: cbs,
				GrantTypes: []string{
					grantAuthorizationCode, grantImplicit,
				},
				ResponseTypes: []string{"code id_token", "code"},
			},
		},
		{
			name:   "response type none without redirect grant",
			policy: allowClientCredentials,
			meta: clientdb.Metadata{
				GrantTypes:    []string{grantClientCredentials},
				ResponseTypes: []string{"none"},
			},
		},

		// Response type syntax.
		{
			name: "unknown response type",
			meta: clientdb.Metadata{
				RedirectURIs:  cbs,
				ResponseTypes: []string{"device"},
			},
			rule: "response_type_known",
			want: []string{`"device"`},
		},
		{
			name: "unknown part of response type",
			meta: clientdb.Metadata{
				RedirectURIs:  cbs,
				ResponseTypes: []string{"code foo"},
			},
			rule: "response_type_known",
			want: []string{`"code foo"`},
		},
		{
			name: "none combined",
			meta: clientdb.Metadata{
				RedirectURIs:  cbs,
				ResponseTypes: []string{"none code"},
			},
			rule: "response_type_known",
		},
		{
			name: "repeated part",
			meta: clientdb.Metadata{
				RedirectURIs:  cbs,
				ResponseTypes: []string{"code code"},
			},
			rule: "response_type_known",
		},
		{
			name: "double space",
			meta: clientdb.Metadata{
				RedirectURIs:  cbs,
				ResponseTypes: []string{"code  id_token"},
			},
			rule: "response_type_known",
		},
		{
			name: "empty response type",
			meta: clientdb.Metadata{
				RedirectURIs:  cbs,
				ResponseTypes: []string{""},
			},
			rule: "response_type_known",
		},
		{
			name: "duplicate response type",
			meta: clientdb.Metadata{
				RedirectURIs:  cbs,
				ResponseTypes: []string{"code", "code"},
			},
			rule: "duplicate_entry",
			want: []string{"response_types"},
		},

		// A public client cannot use client_credentials.
		{
			name:   "none with client_credentials",
			policy: allowClientCredentials,
			meta: clientdb.Metadata{
				TokenEndpointAuthMethod: authNone,
				GrantTypes:              []string{grantClientCredentials},
			},
			rule: "public_client_credentials",
			want: []string{`"client_credentials"`, `"none"`},
		},
		{
			name:   "secret client with client_credentials",
			policy: allowClientCredentials,
			meta: clientdb.Metadata{
				TokenEndpointAuthMethod: authClientSecretPost,
				GrantTypes:              []string{grantClientCredentials},
			},
		},
	}

	// Grants refused unless the operator lists them.
	for _, g := range []string{
		grantPassword, grantClientCredentials, grantImplicit,
		grantJWTBearer, grantSAML2Bearer,
	} {
		cases = append(cases,
			policyCase{
				name: g + " refused by default",
				meta: clientdb.Metadata{
					RedirectURIs: cbs,
					GrantTypes:   []string{g},
				},
				rule: "grant_type_allowed",
				want: []string{fmt.Sprintf("%q", g),
					"allowed: authorization_code, refresh_token"},
			},
			policyCase{
				name: g + " accepted when listed",
				policy: func(p *policy) {
					p.grantTypes = append(p.grantTypes, g)
				},
				meta: clientdb.Metadata{
					RedirectURIs: cbs,
					GrantTypes:   []string{g, grantRefreshToken},
				},
				check: wantList("grant_types",
					[]string{g, grantRefreshToken}),
			})
	}
	runPolicyCases(t, cases)
}

// numbered returns n distinct strings starting with prefix.
func numbered(prefix string, n int) []string {
	list := make([]string, n)
	for i := range list {
		list[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return list
}

func TestPolicyRedirectURIs(t *testing.T) {
	httpsOff := func(p *policy) { p.requireHTTPS = false }

	// one is a web client registering the single redirect URI u.
	one := func(u string) clientdb.Metadata {
		return clientdb.Metadata{RedirectURIs: []string{u}}
	}
	cases := []policyCase{
		{
			name: "required for authorization_code",
			meta: clientdb.Metadata{},
			code: codeInvalidRedirectURI,
			rule: "redirect_uri_required",
			want: []string{"redirect_uris", "authorization_code"},
		},
		{
			name: "empty list for authorization_code",
			meta: clientdb.Metadata{RedirectURIs: []string{}},
			code: codeInvalidRedirectURI,
			rule: "redirect_uri_required",
		},
		{
			name: "duplicate",
			meta: clientdb.Metadata{RedirectURIs: []string{
				cb, "https://app.example/other", cb,
			}},
			code: codeInvalidRedirectURI,
			rule: "duplicate_entry",
			want: []string{cb},
		},
		{
			name: "more than 32",
			meta: clientdb.Metadata{
				RedirectURIs: numbered("https://app.example/cb", maxListLength+1),
			},
			code: codeInvalidRedirectURI,
			rule: "list_length",
			want: []string{"redirect_uris", "32"},
		},
		{
			name: "exactly 32",
			meta: clientdb.Metadata{
				RedirectURIs: numbered("https://app.example/cb", maxListLength),
			},
		},
		{
			name: "over-long",
			meta: one("https://app.example/" + strings.Repeat("x", maxURILength)),
			code: codeInvalidRedirectURI,
			rule: "string_length",
			want: []string{"2048", "..."},
		},
		{
			name: "longest accepted",
			meta: one("https://app.example/" +
				strings.Repeat("x", maxURILength-len("https://app.example/"))),
		},
		{
			// Validated even when no grant needs a redirect.
			name:   "checked without redirect grant",
			policy: func(p *policy) { p.grantTypes = slices.Clone(allGrants) },
			meta: clientdb.Metadata{
				GrantTypes:   []string{grantClientCredentials},
				RedirectURIs: []string{"javascript:alert(1)"},
			},
			code: codeInvalidRedirectURI,
			rule: "redirect_uri_scheme",
		},
	}

	accepted := []struct {
		name   string
		uri    string
		policy func(*policy)
	}{
		{"https", "https://app.example/cb?x=1", nil},
		{"https with port", "https://app.example:8443/cb", nil},
		{"https IP", "https://192.0.2.1/cb", nil},
		{"percent-encoded space", "https://app.example/c%20b", nil},
		{"http 127.0.0.1", "http://127.0.0.1:3000/callback", nil},
		{"http other loopback IPv4", "http://127.9.8.7/cb", nil},
		{"http [::1]", "http://[::1]:8080/cb", nil},
		{"http localhost", "http://localhost/cb", nil},
		{"http LOCALHOST", "http://LOCALHOST:1234/cb", nil},
		{"http loopback without path", "http://127.0.0.1", nil},
		{"http anywhere when https off", "http://app.example/cb", httpsOff},
		{"http IP when https off", "http://10.0.0.1/cb", httpsOff},
		{"reverse-domain scheme", "com.example.app:/oauth2redirect", nil},
		{"reverse-domain scheme with authority", "com.example.app://cb", nil},
		{
			"listed private-use scheme", "myapp://cb",
			func(p *policy) { p.redirectSchemes = []string{"myapp"} },
		},
		{
			// Schemes are case-insensitive (RFC 3986 section 3.1).
			"listed private-use scheme in capitals", "MyApp:/cb",
			func(p *policy) { p.redirectSchemes = []string{"myapp"} },
		},
	}
	for _, a := range accepted {
		cases = append(cases, policyCase{
			name:   "accepted " + a.name,
			policy: a.policy,
			meta:   one(a.uri),
			check:  wantList("redirect_uris", []string{a.uri}),
		})
	}

	const (
		userinfo = "redirect_uri_userinfo"
		https    = "redirect_uri_https"
	)
	refused := []struct {
		name   string
		uri    string
		rule   string
		policy func(*policy)
	}{
		{"relative path", "/cb", "redirect_uri_absolute", nil},
		{"relative name", "cb", "redirect_uri_absolute", nil},
		{"scheme-relative", "//app.example/cb", "redirect_uri_absolute", nil},
		{"empty", "", "redirect_uri_absolute", nil},
		{"unparsable", "https://app.example:port/cb", "redirect_uri_absolute", nil},
		{"bad escape", "https://app.example/%zz", "redirect_uri_absolute", nil},
		{"fragment", "https://app.example/cb#top", "redirect_uri_fragment", nil},
		{"empty fragment", "https://app.example/cb#", "redirect_uri_fragment", nil},
		{"fragment on loopback", "http://127.0.0.1/#", "redirect_uri_fragment", nil},
		{"javascript", "javascript:alert(1)", "redirect_uri_scheme", nil},
		{"javascript mixed case", "JaVaScRiPt:alert(1)", "redirect_uri_scheme", nil},
		{
			"javascript with slashes", "javascript://app.example/%0aalert(1)",
			"redirect_uri_scheme", nil,
		},
		{"data", "data:text/html;base64,PHNjcmlwdD4=", "redirect_uri_scheme", nil},
		{"data capitals", "DATA:text/html,x", "redirect_uri_scheme", nil},
		{"vbscript", "vbscript:msgbox(1)", "redirect_uri_scheme", nil},
		{"file", "file:///etc/passwd", "redirect_uri_scheme", nil},
		{"file with host", "File://host/share", "redirect_uri_scheme", nil},
		{"blob", "blob:https://app.example/0d4c8e1a", "redirect_uri_scheme", nil},
		{
			// Listing a forbidden scheme does not make it allowed;
			// Validate refuses such a config anyway.
			"forbidden even when listed", "javascript:alert(1)",
			"redirect_uri_scheme",
			func(p *policy) { p.redirectSchemes = []string{"javascript"} },
		},
		{"userinfo", "https://user@app.example/cb", userinfo, nil},
		{"userinfo with password", "https://u:p@app.example/cb", userinfo, nil},
		{"empty userinfo", "https://@app.example/cb", userinfo, nil},
		{"userinfo on loopback", "http://app.example@127.0.0.1/cb", userinfo, nil},
		{"http remote", "http://app.example/cb", https, nil},
		{"http private IP", "http://10.0.0.1/cb", https, nil},
		{"http localhost subdomain", "http://localhost.app.example/cb", https, nil},
		{"http localhost suffix", "http://app.localhost.example/cb", https, nil},
		{"http unspecified address", "http://0.0.0.0/cb", https, nil},
		{"http IPv6 non-loopback", "http://[::2]/cb", https, nil},
		{"https no host", "https:///cb", "redirect_uri_absolute", nil},
		{"https opaque", "https:app.example/cb", "redirect_uri_absolute", nil},
		{"https port only", "https://:443/cb", "redirect_uri_absolute", nil},
		{"http no host", "http:///cb", "redirect_uri_absolute", httpsOff},
		{"bare private-use scheme", "myapp://cb", "redirect_uri_scheme", nil},
		{"bare private-use scheme opaque", "myapp:cb", "redirect_uri_scheme", nil},
		{
			"other private-use scheme than listed", "otherapp:/cb",
			"redirect_uri_scheme",
			func(p *policy) { p.redirectSchemes = []string{"myapp"} },
		},
		{"space", "https://app.example/c b", "redirect_uri_chars", nil},
		{"leading space", " https://app.example/cb", "redirect_uri_chars", nil},
		{"tab", "https://app.example/\tcb", "redirect_uri_chars", nil},
		{"newline", "https://app.example/cb\n", "redirect_uri_chars", nil},
		{"NUL", "https://app.example/cb\x00", "redirect_uri_chars", nil},
		{"DEL", "https://app.example/cb\x7f", "redirect_uri_chars", nil},
		{"non-ASCII host", "https://exämple.com/cb", "redirect_uri_chars", nil},
		{"non-ASCII path", "https://app.example/çb", "redirect_uri_chars", nil},
	}
	for _, r := range refused {
		cases = append(cases, policyCase{
			name:   "refused " + r.name,
			policy: r.policy,
			meta:   one(r.uri),
			code:   codeInvalidRedirectURI,
			rule:   r.rule,
			want:   []string{"redirect URI"},
		})
	}
	runPolicyCases(t, cases)
}

// scopePunct is every punctuation character a scope token may hold
// (RFC 6749 section 3.3).
const scopePunct = "!#$%&'()*+,-./:;<=>?@[]^_`{|}~"

func TestPolicyScope(t *testing.T) {
	allowOIDC := func(p *policy) {
		p.scopes = []string{"openid", "profile", "email"}
	}
	wantScope := func(want string) metaCheck {
		return func(t *testing.T, m *clientdb.Metadata) {
			if m.Scope != want {
				t.Errorf("scope = %q, want %q", m.Scope, want)
			}
		}
	}
	scoped := func(s string) clientdb.Metadata {
		return clientdb.Metadata{RedirectURIs: cbs, Scope: s}
	}

	cases := []policyCase{
		{name: "absent stays empty", meta: scoped(""), check: wantScope("")},
		{
			name:  "any scope without allowlist",
			meta:  scoped("openid urn:example:read " + scopePunct),
			check: wantScope("openid urn:example:read " + scopePunct),
		},
		{
			name:   "default scope applied",
			policy: func(p *policy) { p.defaultScope = "openid profile" },
			meta:   scoped(""),
			check:  wantScope("openid profile"),
		},
		{
			name:   "default scope not applied over given",
			policy: func(p *policy) { p.defaultScope = "openid profile" },
			meta:   scoped("email"),
			check:  wantScope("email"),
		},
		{
			name:   "allowed scopes",
			policy: allowOIDC,
			meta:   scoped("email openid"),
			check:  wantScope("email openid"),
		},
		{
			name:   "scope not allowed",
			policy: allowOIDC,
			meta:   scoped("openid admin"),
			rule:   "scope_allowed",
			want:   []string{`"admin"`, "openid profile email"},
		},
		{
			// Scope tokens are case-sensitive (RFC 6749 section 3.3).
			name:   "scope case matters",
			policy: allowOIDC,
			meta:   scoped("OpenID"),
			rule:   "scope_allowed",
		},
		{
			name: "duplicate token",
			meta: scoped("openid profile openid"),
			rule: "duplicate_entry",
			want: []string{"scope", `"openid"`},
		},
		{
			name: "over-long",
			meta: scoped(strings.Repeat("s", maxStringLength+1)),
			rule: "string_length",
			want: []string{"scope"},
		},
	}
	for _, bad := range []struct{ name, scope string }{
		{"double space", "openid  profile"},
		{"leading space", " openid"},
		{"trailing space", "openid "},
		{"tab", "openid\tprofile"},
		{"newline", "openid\nprofile"},
		{"quote", `open"id`},
		{"backslash", `open\id`},
		{"DEL", "openid\x7f"},
		{"non-ASCII", "openïd"},
	} {
		cases = append(cases, policyCase{
			name: "syntax " + bad.name,
			meta: scoped(bad.scope),
			rule: "scope_syntax",
			want: []string{"scope"},
		})
	}
	runPolicyCases(t, cases)
}

// jwksOf returns the JSON Web Key Set holding the given keys.
func jwksOf(t *testing.T, keys ...any) json.RawMessage {
	t.Helper()
	var set jose.JSONWebKeySet
	for i, k := range keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{
			Key:   k,
			KeyID: fmt.Sprintf("k%d", i),
			Use:   "sig",
		})
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatalf("encoding JWKS: %v", err)
	}
	return b
}

func TestPolicyKeys(t *testing.T) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecPublic := jwksOf(t, &ecKey.PublicKey)
	ecPrivate := jwksOf(t, ecKey)
	rsaPublic := jwksOf(t, &rsaKey.PublicKey)
	rsaPrivate := jwksOf(t, rsaKey)
	mixed := jwksOf(t, &ecKey.PublicKey, rsaKey)
	symmetric := jwksOf(t, []byte("0123456789abcdef0123456789abcdef"))

	// The private key material must be what the test thinks it is.
	if !strings.Contains(string(ecPrivate), `"d":`) ||
		strings.Contains(string(ecPublic), `"d":`) {
		t.Fatalf("EC JWKs not as expected: %s / %s", ecPublic, ecPrivate)
	}

	many := make([]any, maxListLength+1)
	for i := range many {
		many[i] = &ecKey.PublicKey
	}
	tooMany := jwksOf(t, many...)

	allowJWT := func(p *policy) {
		p.authMethods = append(p.authMethods, authPrivateKeyJWT)
	}
	keyed := func(jwks json.RawMessage, uri string) clientdb.Metadata {
		return clientdb.Metadata{
			RedirectURIs:            cbs,
			TokenEndpointAuthMethod: authPrivateKeyJWT,
			JWKS:                    jwks,
			JWKSURI:                 uri,
		}
	}
	withKeys := func(jwks json.RawMessage) clientdb.Metadata {
		return clientdb.Metadata{RedirectURIs: cbs, JWKS: jwks}
	}

	runPolicyCases(t, []policyCase{
		{
			name:   "private_key_jwt with EC public jwks",
			policy: allowJWT,
			meta:   keyed(ecPublic, ""),
			check: func(t *testing.T, m *clientdb.Metadata) {
				if issuesSecret(m) {
					t.Error("private_key_jwt client would get a secret")
				}
			},
		},
		{
			name:   "private_key_jwt with RSA public jwks",
			policy: allowJWT,
			meta:   keyed(rsaPublic, ""),
		},
		{
			name:   "private_key_jwt with jwks_uri",
			policy: allowJWT,
			meta:   keyed(nil, "https://app.example/jwks.json"),
		},
		{
			name:   "private_key_jwt needs keys",
			policy: allowJWT,
			meta:   keyed(nil, ""),
			rule:   "jwks_required",
			want:   []string{"private_key_jwt", "jwks"},
		},
		{
			name:   "jwks with jwks_uri",
			policy: allowJWT,
			meta:   keyed(ecPublic, "https://app.example/jwks.json"),
			rule:   "jwks_exclusive",
			want:   []string{"jwks", "jwks_uri"},
		},
		{
			name: "jwks with EC private key",
			meta: withKeys(ecPrivate),
			rule: "jwks_public",
			want: []string{"jwks key 0"},
		},
		{
			name: "jwks with RSA private key",
			meta: withKeys(rsaPrivate),
			rule: "jwks_public",
			want: []string{"jwks key 0"},
		},
		{
			name: "private key after public one",
			meta: withKeys(mixed),
			rule: "jwks_public",
			want: []string{"jwks key 1"},
		},
		{
			name: "symmetric key",
			meta: withKeys(symmetric),
			rule: "jwks_public",
		},
		{
			name: "public jwks with secret client",
			meta: withKeys(ecPublic),
		},
		{
			name: "no keys",
			meta: withKeys(json.RawMessage(`{"keys":[]}`)),
			rule: "jwks_valid",
			want: []string{"no keys"},
		},
		{
			name: "keys missing",
			meta: withKeys(json.RawMessage(`{}`)),
			rule: "jwks_valid",
		},
		{
			name: "keys not a list",
			meta: withKeys(json.RawMessage(`{"keys":"x"}`)),
			rule: "jwks_valid",
		},
		{
			name: "unknown key type",
			meta: withKeys(json.RawMessage(`{"keys":[{"kty":"XYZ"}]}`)),
			rule: "jwks_valid",
		},
		{
			name: "EC key off the curve",
			meta: withKeys(json.RawMessage(`{"keys":[{"kty":"EC",` +
				`"crv":"P-256","x":"AQ","y":"AQ"}]}`)),
			rule: "jwks_valid",
		},
		{
			name: "more than 32 keys",
			meta: withKeys(tooMany),
			rule: "list_length",
			want: []string{"jwks", "32"},
		},
		{
			name: "jwks_uri http remote",
			meta: clientdb.Metadata{
				RedirectURIs: cbs,
				JWKSURI:      "http://app.example/jwks.json",
			},
			rule: "url_https",
			want: []string{"jwks_uri"},
		},
		{
			name: "jwks_uri http loopback",
			meta: clientdb.Metadata{
				RedirectURIs: cbs,
				JWKSURI:      "http://127.0.0.1:8080/jwks.json",
			},
		},
		{
			name:   "jwks_uri http when https off",
			policy: func(p *policy) { p.requireHTTPS = false },
			meta: clientdb.Metadata{
				RedirectURIs: cbs,
				JWKSURI:      "http://app.example/jwks.json",
			},
		},
		{
			name: "jwks_uri not http",
			meta: clientdb.Metadata{
				RedirectURIs: cbs,
				JWKSURI:      "ftp://app.example/jwks.json",
			},
			rule: "url_absolute",
			want: []string{"jwks_uri"},
		},
	})
}

func TestPolicyDescriptive(t *testing.T) {
	described := func(f func(*clientdb.Metadata)) clientdb.Metadata {
		m := clientdb.Metadata{RedirectURIs: cbs}
		f(&m)
		return m
	}
	long := strings.Repeat("é", maxStringLength/2) + "x" // 1025 bytes

	cases := []policyCase{
		{
			name: "everything valid",
			meta: described(func(m *clientdb.Metadata) {
				m.ClientName = "Démo «app» 日本"
				m.ClientURI = "http://app.example/"
				m.LogoURI = "https://app.example/logo.png"
				m.TOSURI = "https://app.example/tos"
				m.PolicyURI = "https://app.example/policy"
				m.SoftwareID = "4NRB1-0XZABZI9E6-5SM3R"
				m.SoftwareVersion = "2.1"
				m.Contacts = []string{"ops@app.example", "Jane Doe"}
				m.Localized = map[string]string{
					"client_name#ja-Jpan-JP": "デモ",
					"client_uri#fr":          "https://app.example/fr",
				}
			}),
		},
		{
			name: "empty contacts dropped",
			meta: described(func(m *clientdb.Metadata) {
				m.Contacts = []string{}
			}),
			check: wantList("contacts", nil),
		},
		{
			name: "client_name newline",
			meta: described(func(m *clientdb.Metadata) {
				m.ClientName = "Demo\nApp"
			}),
			rule: "text_chars",
			want: []string{"client_name"},
		},
		{
			name: "client_name NUL",
			meta: described(func(m *clientdb.Metadata) {
				m.ClientName = "Demo\x00"
			}),
			rule: "text_chars",
			want: []string{"client_name"},
		},
		{
			name: "client_name DEL",
			meta: described(func(m *clientdb.Metadata) {
				m.ClientName = "Demo\x7f"
			}),
			rule: "text_chars",
			want: []string{"client_name"},
		},
		{
			name: "client_name C1 control",
			meta: described(func(m *clientdb.Metadata) {
				m.ClientName = "Demo\u0085"
			}),
			rule: "text_chars",
			want: []string{"client_name"},
		},
		{
			name: "client_name right-to-left override",
			meta: described(func(m *clientdb.Metadata) {
				m.ClientName = "Demo‮gpj.exe"
			}),
			rule: "text_chars",
			want: []string{"client_name"},
		},
		{
			name: "client_name line separator",
			meta: described(func(m *clientdb.Metadata) {
				m.ClientName = "Demo App"
			}),
			rule: "text_chars",
			want: []string{"client_name"},
		},
		{
			name: "software_id control",
			meta: described(func(m *clientdb.Metadata) {
				m.SoftwareID = "id\x1b[31m"
			}),
			rule: "text_chars",
			want: []string{"software_id"},
		},
		{
			name: "software_version control",
			meta: described(func(m *clientdb.Metadata) {
				m.SoftwareVersion = "1\r2"
			}),
			rule: "text_chars",
			want: []string{"software_version"},
		},
		{
			name: "contact control",
			meta: described(func(m *clientdb.Metadata) {
				m.Contacts = []string{"a@app.example", "b\t@app.example"}
			}),
			rule: "text_chars",
			want: []string{"contacts"},
		},
		{
			name: "localized client_name control",
			meta: described(func(m *clientdb.Metadata) {
				m.Localized = map[string]string{"client_name#en": "a\x07"}
			}),
			rule: "text_chars",
			want: []string{"client_name#en"},
		},
		{
			name: "client_name too long",
			meta: described(func(m *clientdb.Metadata) {
				m.ClientName = long
			}),
			rule: "string_length",
			want: []string{"client_name", "1024"},
		},
		{
			name: "client_name longest",
			meta: described(func(m *clientdb.Metadata) {
				m.ClientName = long[:maxStringLength]
			}),
		},
		{
			name: "software_version too long",
			meta: described(func(m *clientdb.Metadata) {
				m.SoftwareVersion = long
			}),
			rule: "string_length",
			want: []string{"software_version"},
		},
		{
			name: "contact too long",
			meta: described(func(m *clientdb.Metadata) {
				m.Contacts = []string{long}
			}),
			rule: "string_length",
			want: []string{"contacts"},
		},
		{
			name: "too many contacts",
			meta: described(func(m *clientdb.Metadata) {
				m.Contacts = numbered("c", maxListLength+1)
			}),
			rule: "list_length",
			want: []string{"contacts"},
		},
		{
			name: "duplicate contact",
			meta: described(func(m *clientdb.Metadata) {
				m.Contacts = []string{"a", "b", "a"}
			}),
			rule: "duplicate_entry",
			want: []string{"contacts", `"a"`},
		},
		{
			name: "too many localized members",
			meta: described(func(m *clientdb.Metadata) {
				m.Localized = make(map[string]string)
				for i := range maxLocalized + 1 {
					m.Localized[fmt.Sprintf("client_name#x-%d", i)] = "n"
				}
			}),
			rule: "list_length",
			want: []string{"language-tagged"},
		},
		{
			name: "localized URL not a URL",
			meta: described(func(m *clientdb.Metadata) {
				m.Localized = map[string]string{
					"client_uri#fr": "javascript:alert(1)",
				}
			}),
			rule: "url_absolute",
			want: []string{"client_uri#fr"},
		},
		{
			name: "localized URL too long",
			meta: described(func(m *clientdb.Metadata) {
				m.Localized = map[string]string{
					"logo_uri#fr": "https://app.example/" +
						strings.Repeat("l", maxURILength),
				}
			}),
			rule: "string_length",
			want: []string{"logo_uri#fr"},
		},
	}

	// Every URL-valued member must be an absolute http or https URL.
	urls := map[string]func(*clientdb.Metadata, string){
		"client_uri": func(m *clientdb.Metadata, v string) { m.ClientURI = v },
		"logo_uri":   func(m *clientdb.Metadata, v string) { m.LogoURI = v },
		"tos_uri":    func(m *clientdb.Metadata, v string) { m.TOSURI = v },
		"policy_uri": func(m *clientdb.Metadata, v string) { m.PolicyURI = v },
	}
	for _, name := range []string{"client_uri", "logo_uri", "tos_uri", "policy_uri"} {
		set := urls[name]
		for _, bad := range []struct{ what, uri, rule string }{
			{"relative", "/about", "url_absolute"},
			{"scheme-relative", "//app.example/", "url_absolute"},
			{"ftp", "ftp://app.example/", "url_absolute"},
			{"javascript", "javascript:alert(1)", "url_absolute"},
			{"data", "data:image/png;base64,AAAA", "url_absolute"},
			{"no host", "https:///x", "url_absolute"},
			{"userinfo", "https://u:p@app.example/", "url_userinfo"},
			{"space", "https://app.example/a b", "url_chars"},
			{"non-ASCII", "https://app.example/é", "url_chars"},
			{"too long", "https://app.example/" +
				strings.Repeat("x", maxURILength), "string_length"},
		} {
			cases = append(cases, policyCase{
				name: name + " " + bad.what,
				meta: described(func(m *clientdb.Metadata) {
					set(m, bad.uri)
				}),
				rule: bad.rule,
				want: []string{name},
			})
		}
		// Informational URLs may be plain http: only the client's
		// redirects and keys need transport security.
		cases = append(cases, policyCase{
			name: name + " http",
			meta: described(func(m *clientdb.Metadata) {
				set(m, "http://app.example/page")
			}),
		})
	}
	runPolicyCases(t, cases)
}

// TestPolicyRuleOrder checks that the first failing rule is the one
// reported, in the order apply documents.
func TestPolicyRuleOrder(t *testing.T) {
	m := clientdb.Metadata{
		TokenEndpointAuthMethod: "bogus",
		GrantTypes:              []string{"password"},
		RedirectURIs:            []string{"javascript:x"},
		Scope:                   "a  b",
		ClientName:              "\n",
	}
	err := defaultPolicy().apply(&m)
	checkProtoErr(t, err, codeInvalidClientMetadata, http.StatusBadRequest,
		"auth_method_allowed")
}

func TestIssuesSecret(t *testing.T) {
	for _, tc := range []struct {
		method string
		want   bool
	}{
		{authClientSecretBasic, true},
		{authClientSecretPost, true},
		{authClientSecretJWT, true},
		{authNone, false},
		{authPrivateKeyJWT, false},
		{"tls_client_auth", false},
		{"", false},
	} {
		t.Run(tc.method, func(t *testing.T) {
			m := &clientdb.Metadata{TokenEndpointAuthMethod: tc.method}
			if got := issuesSecret(m); got != tc.want {
				t.Errorf("issuesSecret(%q) = %v, want %v",
					tc.method, got, tc.want)
			}
		})
	}
}
