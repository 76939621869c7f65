package dcr

import (
	"bytes"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func TestIsMetadataPath(t *testing.T) {
	cases := []struct {
		path string
		want bool
	}{
		{"/.well-known/oauth-authorization-server", true},
		{"/.well-known/oauth-authorization-server/tenant1", true},
		{"/.well-known/oauth-authorization-server/a/b", true},
		{"/.well-known/openid-configuration", true},
		{"/tenant1/.well-known/openid-configuration", true},
		{"/a/b/.well-known/openid-configuration", true},

		{"/.well-known/oauth-authorization-serverx", false},
		{"/.well-known/oauth-authorization-server.json", false},
		{"/.well-known/oauth-authorization-serve", false},
		{"/.well-known/openid-configurationx", false},
		{"/.well-known/openid-configuration.json", false},
		{"/.well-known/openid-configuration/", false},
		{"/x.well-known/openid-configuration", false},
		{"/.well-known/oauth-protected-resource", false},
		{"/.WELL-KNOWN/openid-configuration", false},
		{"/register", false},
		{"/", false},
		{"", false},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			if got := isMetadataPath(tc.path); got != tc.want {
				t.Errorf("isMetadataPath(%q) = %v, want %v", tc.path, got, tc.want)
			}
		})
	}
}

// TestIsMetadataPathOIDCInsertion shows that the OpenID configuration
// with the issuer path inserted after the well-known name (RFC 8414
// section 5, and the form MCP clients try first for issuers with a path)
// is passed on without the registration endpoint.
func TestIsMetadataPathOIDCInsertion(t *testing.T) {
	if !isMetadataPath("/.well-known/openid-configuration/tenant1") {
		t.Error("isMetadataPath(/.well-known/openid-configuration/tenant1) = false")
	}
}

func TestInjectMetadata(t *testing.T) {
	const (
		reg     = `"registration_endpoint":"http://as.example/register"`
		methods = `"token_endpoint_auth_methods_supported":` +
			`["client_secret_basic","client_secret_post","none"]`
		grants    = `"grant_types_supported":["authorization_code","refresh_token"]`
		responses = `"response_types_supported":["code"]`
		complete  = methods + `,` + grants + `,` + responses
	)
	cases := []struct {
		name   string
		change func(*Handler)
		tls    bool
		doc    string
		want   string
	}{
		{
			name: "adds registration_endpoint only",
			doc:  `{"issuer":"https://as.example",` + complete + `}`,
			want: `{"issuer":"https://as.example",` + complete + `,` + reg + `}`,
		},
		{
			name: "base_url",
			change: func(h *Handler) {
				h.BaseURL = "https://auth.example/idp"
				h.Endpoint = "/oauth/register"
			},
			doc: `{` + complete + `}`,
			want: `{` + complete + `,"registration_endpoint":` +
				`"https://auth.example/idp/oauth/register"}`,
		},
		{
			name: "request over TLS",
			tls:  true,
			doc:  `{` + complete + `}`,
			want: `{` + complete + `,"registration_endpoint":"https://as.example/register"}`,
		},
		{
			name: "order and bytes of other members kept",
			doc: "{ \"issuer\" : \"https://as.example/\" ,\n\t\"n\": 1.50, " +
				`"s":"\u00e9\/", "o": { "b": 1, "a": [ 1, 2 ] }, ` + complete +
				`, "z": null }`,
			want: `{"issuer":"https://as.example/","n":1.50,"s":"\u00e9\/",` +
				`"o":{ "b": 1, "a": [ 1, 2 ] },` + complete + `,"z":null,` + reg + `}`,
		},
		{
			name: "registration_endpoint replaced in place",
			doc:  `{"registration_endpoint":"https://old.example/r",` + complete + `}`,
			want: `{` + reg + `,` + complete + `}`,
		},
		{
			name: "lists merged in place",
			doc: `{"token_endpoint_auth_methods_supported":["private_key_jwt","none"],` +
				`"grant_types_supported":["refresh_token","client_credentials"],` +
				`"response_types_supported":["code id_token","id_token"],"x":1}`,
			want: `{"token_endpoint_auth_methods_supported":["private_key_jwt","none",` +
				`"client_secret_basic","client_secret_post"],` +
				`"grant_types_supported":["refresh_token","client_credentials",` +
				`"authorization_code"],` +
				`"response_types_supported":["code id_token","id_token","code"],"x":1,` +
				reg + `}`,
		},
		{
			name: "complete lists keep their spacing",
			doc: `{"grant_types_supported": [ "refresh_token", "authorization_code" ],` +
				methods + `,` + responses + `}`,
			want: `{"grant_types_supported":[ "refresh_token", "authorization_code" ],` +
				methods + `,` + responses + `,` + reg + `}`,
		},
		{
			// Not the RFC 8414 defaults, which name implicit: what
			// the policy allows.
			name: "absent lists become the policy",
			doc:  `{"issuer":"https://as.example"}`,
			want: `{"issuer":"https://as.example",` + reg + `,` + complete + `}`,
		},
		{
			name: "empty object",
			change: func(h *Handler) {
				h.policy.authMethods = []string{authClientSecretBasic}
				h.policy.grantTypes = []string{grantClientCredentials}
			},
			doc: `{}`,
			// response_types_supported has no default and the
			// policy implies none: it stays absent.
			want: `{` + reg + `,"token_endpoint_auth_methods_supported":` +
				`["client_secret_basic"],"grant_types_supported":` +
				`["client_credentials"]}`,
		},
		{
			name: "implicit allowed",
			change: func(h *Handler) {
				h.policy.grantTypes = []string{grantImplicit, grantAuthorizationCode}
			},
			doc: `{` + methods + `,"grant_types_supported":["authorization_code"],` +
				responses + `}`,
			want: `{` + methods + `,"grant_types_supported":["authorization_code",` +
				`"implicit"],"response_types_supported":["code","token"],` + reg + `}`,
		},
		{
			name: "wrong shapes left as they are",
			doc: `{"token_endpoint_auth_methods_supported":"client_secret_basic",` +
				`"grant_types_supported":{"a":1},"response_types_supported":[1,2]}`,
			want: `{"token_endpoint_auth_methods_supported":"client_secret_basic",` +
				`"grant_types_supported":{"a":1},"response_types_supported":[1,2],` +
				reg + `}`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, _, _ := mgHandler(t, tc.change)
			r := httptest.NewRequest(http.MethodGet, "http://as.example"+oauthMetadataPath, nil)
			if tc.tls {
				r.TLS = &tls.ConnectionState{}
			}
			got, err := h.injectMetadata([]byte(tc.doc), r)
			if err != nil {
				t.Fatalf("injectMetadata: %v", err)
			}
			if string(got) != tc.want {
				t.Errorf("injectMetadata =\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func TestInjectMetadataRefuses(t *testing.T) {
	for _, doc := range []string{
		``, `[]`, `"x"`, `null`, `1`, `{`, `{"a":1`, `{"a":1}x`, `{"a":1}{}`,
		`{"a":1,"a":2}`, `{"a":}`, "\xff",
	} {
		t.Run(doc, func(t *testing.T) {
			h, _, _ := mgHandler(t, nil)
			r := httptest.NewRequest(http.MethodGet, oauthMetadataPath, nil)
			if got, err := h.injectMetadata([]byte(doc), r); err == nil {
				t.Errorf("injectMetadata(%q) = %s, want an error", doc, got)
			}
		})
	}
}

// mdBackend is what the next handler answers to a metadata request.
type mdBackend struct {
	status int // 0: Write without WriteHeader
	header map[string]string
	body   string
}

// mdServe runs a request through ServeHTTP with a next handler that
// answers as b and records the request's Accept-Encoding.
func mdServe(t *testing.T, h *Handler, r *http.Request, b mdBackend) (
	w *httptest.ResponseRecorder, acceptEncoding []string, called bool) {
	t.Helper()
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		called = true
		acceptEncoding = r.Header.Values("Accept-Encoding")
		for k, v := range b.header {
			w.Header().Set(k, v)
		}
		if b.status != 0 {
			w.WriteHeader(b.status)
		}
		// In two writes, as a proxied body arrives.
		half := len(b.body) / 2
		w.Write([]byte(b.body[:half]))
		w.Write([]byte(b.body[half:]))
		return nil
	})
	w = httptest.NewRecorder()
	if err := h.ServeHTTP(w, r, next); err != nil {
		t.Fatalf("ServeHTTP: %v", err)
	}
	return w, acceptEncoding, called
}

func TestServeMetadata(t *testing.T) {
	const (
		members = `{"issuer":"https://as.example","token_endpoint_auth_methods_supported":` +
			`["client_secret_basic","client_secret_post","none"],"grant_types_supported":` +
			`["authorization_code","refresh_token"],"response_types_supported":["code"]`
		doc       = members + `}`
		rewritten = members + `,"registration_endpoint":"http://as.example/register"}`
	)
	jsonHeader := func(extra ...string) map[string]string {
		m := map[string]string{
			"Content-Type":   "application/json",
			"Content-Length": strconv.Itoa(len(doc)),
			"Cache-Control":  "public, max-age=300",
			"ETag":           `"v1"`,
		}
		for i := 0; i+1 < len(extra); i += 2 {
			m[extra[i]] = extra[i+1]
		}
		return m
	}
	big := `{"issuer":"x","pad":"` + strings.Repeat("a", maxMetadataBody) + `"}`

	cases := []struct {
		name    string
		method  string
		path    string
		off     bool // discovery off
		backend mdBackend
		changed bool // whether the body is rewritten
	}{
		{"oauth", "", oauthMetadataPath,
			false, mdBackend{200, jsonHeader(), doc}, true},
		{"oauth with issuer path", "", oauthMetadataPath + "/tenant1",
			false, mdBackend{200, jsonHeader(), doc}, true},
		{"openid", "", oidcMetadataPath,
			false, mdBackend{200, jsonHeader(), doc}, true},
		{"openid appended", "", "/tenant1" + oidcMetadataPath,
			false, mdBackend{200, jsonHeader(), doc}, true},
		{"JSON with charset", "", oidcMetadataPath, false, mdBackend{200,
			jsonHeader("Content-Type", "application/json; charset=utf-8"), doc}, true},
		{"+json", "", oauthMetadataPath, false, mdBackend{200,
			jsonHeader("Content-Type", "application/vnd.example+json"), doc}, true},
		{"implicit 200 without length", "", oauthMetadataPath, false, mdBackend{0,
			map[string]string{"Content-Type": "application/json"}, doc}, true},
		{"gzip", "", oauthMetadataPath, false, mdBackend{200,
			jsonHeader("Content-Encoding", "gzip"), "\x1f\x8b\x08 compressed"}, false},
		{"br", "", oauthMetadataPath, false, mdBackend{200,
			jsonHeader("Content-Encoding", "br"), doc}, false},
		{"html", "", oauthMetadataPath, false, mdBackend{200,
			jsonHeader("Content-Type", "text/html"), doc}, false},
		{"no content type", "", oauthMetadataPath, false, mdBackend{200,
			jsonHeader("Content-Type", ""), doc}, false},
		{"404 JSON", "", oauthMetadataPath, false, mdBackend{404,
			jsonHeader(), `{"error":"not_found"}`}, false},
		{"304", "", oauthMetadataPath, false, mdBackend{304,
			map[string]string{"ETag": `"v1"`}, ""}, false},
		{"larger than 1 MiB", "", oauthMetadataPath, false, mdBackend{200,
			jsonHeader("Content-Length", strconv.Itoa(len(big))), big}, false},
		{"JSON array", "", oauthMetadataPath, false, mdBackend{200,
			jsonHeader(), `["not","an","object"]`}, false},
		{"broken JSON", "", oauthMetadataPath, false, mdBackend{200,
			jsonHeader(), `{"issuer":`}, false},
		{"discovery off", "", oauthMetadataPath, true,
			mdBackend{200, jsonHeader(), doc}, false},
		{"HEAD", http.MethodHead, oauthMetadataPath,
			false, mdBackend{200, jsonHeader(), ""}, false},
		{"POST", http.MethodPost, oidcMetadataPath,
			false, mdBackend{200, jsonHeader(), doc}, false},
		{"other path", "", "/.well-known/oauth-protected-resource",
			false, mdBackend{200, jsonHeader(), doc}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, _, _ := mgHandler(t, func(h *Handler) {
				if tc.off {
					off := false
					h.Discovery = &off
				}
			})
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			r := httptest.NewRequest(method, "http://as.example"+tc.path, nil)
			r.Header.Set("Accept-Encoding", "gzip, br")

			w, ae, called := mdServe(t, h, r, tc.backend)
			if !called {
				t.Fatal("next not called")
			}
			wantStatus := tc.backend.status
			if wantStatus == 0 {
				wantStatus = http.StatusOK
			}
			if w.Code != wantStatus {
				t.Errorf("status %d, want %d", w.Code, wantStatus)
			}
			for k, v := range tc.backend.header {
				if k == "Content-Length" && tc.changed {
					continue
				}
				if got := w.Header().Get(k); got != v {
					t.Errorf("header %s %q, want %q as the backend sent it", k, got, v)
				}
			}

			if !tc.changed {
				if w.Body.String() != tc.backend.body {
					t.Errorf("body changed:\n%.300s\nwant\n%.300s", w.Body.Bytes(), tc.backend.body)
				}
				return
			}
			if w.Body.String() != rewritten {
				t.Errorf("body =\n%s\nwant\n%s", w.Body.Bytes(), rewritten)
			}
			got, want := w.Header().Get("Content-Length"), strconv.Itoa(w.Body.Len())
			if got != want {
				t.Errorf("Content-Length %q, want %q", got, want)
			}
			// The backend must send a body the handler can read.
			if len(ae) != 0 {
				t.Errorf("next got Accept-Encoding %q", ae)
			}
		})
	}
}

// TestServeMetadataUnboundedBody shows that a backend answering without a
// Content-Length has its whole answer buffered and rewritten however
// large, though maxMetadataBody says a larger document passes through
// untouched.
func TestServeMetadataUnboundedBody(t *testing.T) {
	h, _, _ := mgHandler(t, nil)
	big := `{"issuer":"x","pad":"` + strings.Repeat("a", 2*maxMetadataBody) + `"}`
	r := httptest.NewRequest(http.MethodGet, oauthMetadataPath, nil)
	w, _, _ := mdServe(t, h, r, mdBackend{200,
		map[string]string{"Content-Type": "application/json"}, big})
	if !bytes.Equal(w.Body.Bytes(), []byte(big)) {
		t.Errorf("a %d-byte document was rewritten", len(big))
	}
}
