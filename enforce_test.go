package dcr

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-dcr/caddy-dcr/clientdb"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// The backend's endpoints as the enforcement tests configure them.
const (
	enAuthorize = "/oauth/authorize"
	enToken     = "/oauth/token"
)

// enSecret is the secret of every confidential test client.
const enSecret = "s3cret+value:1"

// enClient returns a client registered with method, redirect URIs and the
// default grant types; confidential ones have enSecret.
func enClient(id, method string, redirects ...string) *clientdb.Client {
	c := &clientdb.Client{
		ID:       id,
		IssuedAt: mgEpoch.Unix(),
		Metadata: clientdb.Metadata{
			RedirectURIs:            redirects,
			TokenEndpointAuthMethod: method,
			GrantTypes:              []string{grantAuthorizationCode, grantRefreshToken},
			ResponseTypes:           []string{"code"},
			ClientName:              "App " + id,
		},
	}
	if method != authNone {
		c.SecretHash = clientdb.HashSecret(enSecret)
	}
	return c
}

// enClients are stored by enHandler: "web" has two redirect URIs, "post"
// and "native" one each, "gone" is deleted and "old" expired.
func enClients() []*clientdb.Client {
	return []*clientdb.Client{
		enClient("web", authClientSecretBasic,
			"https://app.example/cb", "https://app.example/other"),
		enClient("post", authClientSecretPost, "https://post.example/cb"),
		enClient("native", authNone, "http://127.0.0.1/cb"),
		enClient("jwt", authPrivateKeyJWT, "https://jwt.example/cb"),
		enClient("gone", authClientSecretBasic, "https://gone.example/cb"),
		enClient("old", authNone, "http://127.0.0.1/cb"),
	}
}

// enHandler returns an mgHandler with enforcement at enAuthorize and
// enToken, adjusted by change, and enClients stored.
func enHandler(t *testing.T, change func(*Enforce)) (
	*Handler, *mgClock, *observer.ObservedLogs) {
	t.Helper()
	h, clock, logs := mgHandler(t, func(h *Handler) {
		h.Enforce = &Enforce{Authorize: enAuthorize, Token: enToken}
		if change != nil {
			change(h.Enforce)
		}
		h.Enforce.provision()
		h.identity = h.Enforce
	})
	err := h.store.Update(context.Background(), func(tx clientdb.Tx) error {
		for _, c := range enClients() {
			if err := tx.Create(c); err != nil {
				return err
			}
		}
		if err := tx.Delete("gone", clientdb.ReasonDeleted, mgEpoch); err != nil {
			return err
		}
		return tx.Delete("old", clientdb.ReasonExpired, mgEpoch)
	})
	if err != nil {
		t.Fatalf("storing clients: %v", err)
	}
	return h, clock, logs
}

// enSeen is what the next handler got.
type enSeen struct {
	called bool
	header http.Header
	body   []byte
}

// enServe runs r through h.ServeHTTP with a next handler that records the
// request it gets and answers 418.
func enServe(t *testing.T, h *Handler, r *http.Request) (
	*httptest.ResponseRecorder, *enSeen) {
	t.Helper()
	seen := &enSeen{}
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		seen.called = true
		seen.header = r.Header.Clone()
		var err error
		if seen.body, err = io.ReadAll(r.Body); err != nil {
			t.Errorf("next: reading body: %v", err)
		}
		w.WriteHeader(http.StatusTeapot)
		return nil
	})
	w := httptest.NewRecorder()
	if err := h.ServeHTTP(w, r, next); err != nil {
		t.Fatalf("ServeHTTP(%s %s): %v", r.Method, r.URL, err)
	}
	return w, seen
}

// enForm builds a form POST; auth, if set, is the whole Authorization
// header.
func enForm(target, auth, body string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, target, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	return r
}

// enBasic is the Authorization header of client_secret_basic, with both
// parts form-encoded as RFC 6749 section 2.3.1 requires.
func enBasic(id, secret string) string {
	raw := url.QueryEscape(id) + ":" + url.QueryEscape(secret)
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(raw))
}

// enIdentity checks the identity headers next got: none when id is "".
func enIdentity(t *testing.T, h *Handler, seen *enSeen, id, name, kind string) {
	t.Helper()
	e := h.identity
	for hdr, want := range map[string]string{
		e.ClientIDHeader:   id,
		e.ClientNameHeader: name,
		e.ClientTypeHeader: kind,
	} {
		got, ok := seen.header[http.CanonicalHeaderKey(hdr)]
		switch {
		case want == "" && ok:
			t.Errorf("next got %s %q, want none", hdr, got)
		case want != "" && (len(got) != 1 || got[0] != want):
			t.Errorf("next got %s %q, want %q", hdr, got, want)
		}
	}
}

// enPage checks a refused authorization request: an HTML page with the
// error code, never a redirect, and next not called.
func enPage(t *testing.T, w *httptest.ResponseRecorder, seen *enSeen,
	status int, code string) {
	t.Helper()
	if w.Code != status {
		t.Errorf("status %d, want %d; body %s", w.Code, status, w.Body.Bytes())
	}
	if seen.called {
		t.Error("next was called for a refused request")
	}
	if loc := w.Header().Get("Location"); loc != "" {
		t.Errorf("refusal redirects to %q", loc)
	}
	for hdr, want := range map[string]string{
		"Content-Type":           "text/html; charset=utf-8",
		"Cache-Control":          "no-store",
		"X-Content-Type-Options": "nosniff",
	} {
		if got := w.Header().Get(hdr); got != want {
			t.Errorf("%s %q, want %q", hdr, got, want)
		}
	}
	if want := `<dd id="error">` + code + `</dd>`; !strings.Contains(w.Body.String(), want) {
		t.Errorf("page does not show %s:\n%s", code, w.Body.Bytes())
	}
}

// enTokenErr checks a refused token request: the JSON error of RFC 6749
// section 5.2, and next not called.
func enTokenErr(t *testing.T, w *httptest.ResponseRecorder, seen *enSeen,
	status int, code string) {
	t.Helper()
	if w.Code != status {
		t.Errorf("status %d, want %d; body %s", w.Code, status, w.Body.Bytes())
	}
	if seen.called {
		t.Error("next was called for a refused request")
	}
	if got := w.Header().Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control %q", got)
	}
	if got := mgJSON(t, w)["error"]; got != code {
		t.Errorf("error %v, want %s", got, code)
	}
}

func TestRedirectMatches(t *testing.T) {
	cases := []struct {
		name                string
		registered, present string
		want                bool
	}{
		{"exact https", "https://app.example/cb?x=1", "https://app.example/cb?x=1", true},
		{"exact private-use", "com.example.app:/cb", "com.example.app:/cb", true},
		{"exact loopback", "http://127.0.0.1:8080/cb", "http://127.0.0.1:8080/cb", true},
		{"ipv4 other port", "http://127.0.0.1:8080/cb", "http://127.0.0.1:51234/cb", true},
		{"ipv4 port added", "http://127.0.0.1/cb", "http://127.0.0.1:51234/cb", true},
		{"ipv4 port omitted", "http://127.0.0.1:8080/cb", "http://127.0.0.1/cb", true},
		{"ipv6 other port", "http://[::1]:8080/cb", "http://[::1]:9/cb", true},
		{"ipv6 port added", "http://[::1]/cb", "http://[::1]:9/cb", true},
		{"ipv6 port omitted", "http://[::1]:8080/cb", "http://[::1]/cb", true},
		{"localhost other port", "http://localhost:3000/cb", "http://localhost:4000/cb", true},
		{"localhost port added", "http://localhost/cb", "http://localhost:4000/cb", true},
		{"loopback query kept", "http://127.0.0.1/cb?a=1", "http://127.0.0.1:5/cb?a=1", true},

		{"https loopback other port", "https://127.0.0.1:8080/cb", "https://127.0.0.1:9/cb", false},
		{"https localhost port added", "https://localhost/cb", "https://localhost:9/cb", false},
		{"non-loopback other port", "http://app.example:8080/cb", "http://app.example:9/cb", false},
		{"https other port", "https://app.example/cb", "https://app.example:8443/cb", false},
		{"other path", "http://127.0.0.1/cb", "http://127.0.0.1:5/cb2", false},
		{"path prefix", "https://app.example/cb", "https://app.example/cb/x", false},
		{"query added", "http://127.0.0.1/cb", "http://127.0.0.1:5/cb?x=1", false},
		{"other query", "https://app.example/cb?x=1", "https://app.example/cb?x=2", false},
		{"fragment added", "http://127.0.0.1/cb", "http://127.0.0.1:5/cb#f", false},
		{"encoded path", "http://127.0.0.1/cb", "http://127.0.0.1:5/c%62", false},
		{"trailing slash", "https://app.example/cb", "https://app.example/cb/", false},
		{"other host", "http://127.0.0.1/cb", "http://127.0.0.2:5/cb", false},
		{"localhost for ipv4", "http://127.0.0.1/cb", "http://localhost:5/cb", false},
		{"ipv4 for ipv6", "http://[::1]/cb", "http://127.0.0.1:5/cb", false},
		{"host case", "https://app.example/cb", "https://APP.example/cb", false},
		{"userinfo added", "http://127.0.0.1/cb", "http://u@127.0.0.1:5/cb", false},
		{"userinfo same port", "http://127.0.0.1:5/cb", "http://u:p@127.0.0.1:5/cb", false},
		{"userinfo hiding a host", "http://127.0.0.1/cb",
			"http://127.0.0.1:5@evil.example/cb", false},
		{"scheme to https", "http://127.0.0.1/cb", "https://127.0.0.1/cb", false},
		{"scheme to http", "https://app.example/cb", "http://app.example/cb", false},
		{"malformed port", "http://127.0.0.1/cb", "http://127.0.0.1:x/cb", false},
		{"malformed escape", "http://127.0.0.1/cb", "http://127.0.0.1:5/c%zz", false},
		{"malformed registered", "http://127.0.0.1:x/cb", "http://127.0.0.1:5/cb", false},
		{"empty presented", "https://app.example/cb", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := redirectMatches(tc.registered, tc.present); got != tc.want {
				t.Errorf("redirectMatches(%q, %q) = %v, want %v",
					tc.registered, tc.present, got, tc.want)
			}
		})
	}
}

func TestSameWords(t *testing.T) {
	cases := []struct {
		a, b string
		want bool
	}{
		{"code", "code", true},
		{"code id_token", "id_token code", true},
		{"code id_token token", "token code id_token", true},
		{"code", "token", false},
		{"code id_token", "code", false},
		{"code", "code code", false},
		{"code id_token", "code code", false},
		{"", "", false},
		{"code", "", false},
		{"", "code", false},
		{" ", " ", false},
	}
	for _, tc := range cases {
		t.Run(tc.a+"|"+tc.b, func(t *testing.T) {
			if got := sameWords(tc.a, tc.b); got != tc.want {
				t.Errorf("sameWords(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
			}
		})
	}
}

func TestCheckAuthorization(t *testing.T) {
	one := enClient("one", authClientSecretBasic, "https://app.example/cb")
	two := enClient("two", authClientSecretBasic,
		"https://app.example/cb", "https://app.example/other")
	none := enClient("none", authNone)
	public := enClient("public", authNone, "http://127.0.0.1/cb")
	hybrid := enClient("hybrid", authClientSecretBasic, "https://app.example/cb")
	hybrid.Metadata.ResponseTypes = []string{"code id_token"}
	jwt := enClient("jwt", authPrivateKeyJWT, "https://app.example/cb")

	const pkce = "&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
	cases := []struct {
		name   string
		client *clientdb.Client
		query  string
		code   string // "" when the request is admitted
		rule   string
	}{
		{"one redirect given", one,
			"redirect_uri=https://app.example/cb&response_type=code", "", ""},
		{"one redirect omitted", one, "response_type=code", "", ""},
		{"second of two", two, "redirect_uri=https://app.example/other&response_type=code", "", ""},
		{"two redirects omitted", two, "response_type=code",
			codeInvalidRequest, "redirect_uri_missing"},
		{"none registered, omitted", none, "response_type=code" + pkce +
			"&code_challenge_method=S256", codeInvalidRequest, "redirect_uri_missing"},
		{"unregistered redirect", one, "redirect_uri=https://evil.example/cb&response_type=code",
			codeInvalidRequest, "redirect_uri_registered"},
		{"https loopback port", one, "redirect_uri=https://app.example:444/cb&response_type=code",
			codeInvalidRequest, "redirect_uri_registered"},
		{"response_type unregistered", one, "response_type=token",
			codeUnauthorizedClient, "response_type_registered"},
		{"response_type missing", one, "", codeInvalidRequest, "response_type_missing"},
		{"response_type part of registered", hybrid, "response_type=code",
			codeUnauthorizedClient, "response_type_registered"},
		{"response_type reordered", hybrid, "response_type=id_token+code", "", ""},
		{"public S256", public,
			"response_type=code" + pkce + "&code_challenge_method=S256", "", ""},
		{"public loopback port", public, "redirect_uri=http://127.0.0.1:4711/cb" +
			"&response_type=code" + pkce + "&code_challenge_method=S256", "", ""},
		{"public no challenge", public, "response_type=code&code_challenge_method=S256",
			codeInvalidRequest, "pkce_required"},
		{"public plain", public, "response_type=code" + pkce + "&code_challenge_method=plain",
			codeInvalidRequest, "pkce_required"},
		{"public method omitted", public, "response_type=code" + pkce,
			codeInvalidRequest, "pkce_required"},
		{"public method case", public, "response_type=code" + pkce + "&code_challenge_method=s256",
			codeInvalidRequest, "pkce_required"},
		{"confidential without PKCE", one, "response_type=code", "", ""},
		{"confidential plain", one,
			"response_type=code" + pkce + "&code_challenge_method=plain", "", ""},
		{"private_key_jwt without PKCE", jwt, "response_type=code", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			params, err := url.ParseQuery(tc.query)
			if err != nil {
				t.Fatal(err)
			}
			perr := checkAuthorization(tc.client, params)
			switch {
			case tc.code == "" && perr != nil:
				t.Fatalf("refused: %v (rule %s)", perr, perr.Rule)
			case tc.code == "":
				return
			}
			checkProtoErr(t, perr, tc.code, http.StatusBadRequest, tc.rule)
		})
	}
}

func TestEnforceAuthorize(t *testing.T) {
	const (
		web    = "client_id=web&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&response_type=code"
		native = "client_id=native&redirect_uri=http%3A%2F%2F127.0.0.1%3A51234%2Fcb" +
			"&response_type=code&code_challenge=abc&code_challenge_method=S256"
	)
	big := "client_id=web&x=" + strings.Repeat("a", maxFormBody)
	cases := []struct {
		name     string
		only     bool   // registered_only
		method   string // GET with query, POST with body
		query    string
		body     string
		status   int // 0: passed on
		code     string
		id, kind string // identity next gets; "" for none
	}{
		{name: "web", query: web, id: "web", kind: "confidential"},
		{name: "native other port", query: native, id: "native", kind: "public"},
		{name: "no client_id", query: "response_type=code"},
		{name: "unknown client", query: "client_id=nobody&response_type=code"},
		{name: "unknown client registered_only", only: true,
			query:  "client_id=nobody&response_type=code",
			status: http.StatusBadRequest, code: codeUnauthorizedClient},
		{name: "no client_id registered_only", only: true, query: "response_type=code"},
		{name: "deleted client", query: "client_id=gone&response_type=code",
			status: http.StatusBadRequest, code: codeUnauthorizedClient},
		{name: "expired client", query: "client_id=old&response_type=code",
			status: http.StatusBadRequest, code: codeUnauthorizedClient},
		{name: "unregistered redirect",
			query:  "client_id=web&redirect_uri=https%3A%2F%2Fevil.example%2Fcb&response_type=code",
			status: http.StatusBadRequest, code: codeInvalidRequest},
		{name: "redirect omitted with two", query: "client_id=web&response_type=code",
			status: http.StatusBadRequest, code: codeInvalidRequest},
		{name: "response_type token", query: strings.Replace(web, "=code", "=token", 1),
			status: http.StatusBadRequest, code: codeUnauthorizedClient},
		{name: "public without PKCE",
			query:  "client_id=native&redirect_uri=http%3A%2F%2F127.0.0.1%2Fcb&response_type=code",
			status: http.StatusBadRequest, code: codeInvalidRequest},
		{name: "POST form", method: http.MethodPost, body: web, id: "web", kind: "confidential"},
		{name: "POST query and form", method: http.MethodPost,
			query: "client_id=native", body: strings.TrimPrefix(native, "client_id=native&"),
			id: "native", kind: "public"},
		{name: "POST form refused", method: http.MethodPost,
			body:   "client_id=web&redirect_uri=https%3A%2F%2Fevil.example%2F&response_type=code",
			status: http.StatusBadRequest, code: codeInvalidRequest},
		{name: "POST form too large", method: http.MethodPost, body: big,
			status: http.StatusRequestEntityTooLarge, code: codeInvalidRequest},
		{name: "POST form malformed", method: http.MethodPost, body: "client_id=web&x=%zz",
			status: http.StatusBadRequest, code: codeInvalidRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, _, _ := enHandler(t, func(e *Enforce) { e.RegisteredOnly = tc.only })
			target := enAuthorize
			if tc.query != "" {
				target += "?" + tc.query
			}
			r := httptest.NewRequest(http.MethodGet, target, nil)
			if tc.method == http.MethodPost {
				r = enForm(target, "", tc.body)
			}
			// A caller's identity headers never reach the backend.
			r.Header.Set("X-DCR-Client-ID", "forged")
			r.Header.Set("X-DCR-Client-Type", "confidential")

			w, seen := enServe(t, h, r)
			if tc.status != 0 {
				enPage(t, w, seen, tc.status, tc.code)
				return
			}
			if !seen.called {
				t.Fatalf("next not called; %d %s", w.Code, w.Body.Bytes())
			}
			name := ""
			if tc.id != "" {
				name = "App " + tc.id
			}
			enIdentity(t, h, seen, tc.id, name, tc.kind)
			if string(seen.body) != tc.body {
				t.Errorf("next got body %q, want %q", seen.body, tc.body)
			}
		})
	}
}

// TestEnforceAuthorizeEscapes checks that the error page shows hostile
// values as text.
func TestEnforceAuthorizeEscapes(t *testing.T) {
	h, _, _ := enHandler(t, nil)
	hostile := `<script>alert("x")</script>`
	r := httptest.NewRequest(http.MethodGet, enAuthorize+"?client_id=web"+
		"&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&response_type="+
		url.QueryEscape(hostile), nil)
	w, seen := enServe(t, h, r)
	enPage(t, w, seen, http.StatusBadRequest, codeUnauthorizedClient)
	body := w.Body.String()
	if strings.Contains(body, "<script>") {
		t.Errorf("page carries the hostile value unescaped:\n%s", body)
	}
	if !strings.Contains(body, "&lt;script&gt;") {
		t.Errorf("page does not show the value escaped:\n%s", body)
	}
}

// TestEnforceAuthorizeRepeatedParams shows that a parameter given twice is
// checked in its first form while the backend may read another: Go's
// FormValue prefers the body, other frameworks the last value. The request
// is admitted, with identity headers, to a redirect URI never registered.
// RFC 6749 section 3.1 forbids repeated parameters; enforcement should
// refuse them.
func TestEnforceAuthorizeRepeatedParams(t *testing.T) {
	const ok = "client_id=web&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&response_type=code"
	const evil = "redirect_uri=https%3A%2F%2Fevil.example%2Fcb"
	cases := []struct {
		name        string
		query, body string
	}{
		{"twice in the query", ok + "&" + evil, ""},
		{"query and body", ok, evil},
		{"client_id twice", ok + "&client_id=native", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, _, _ := enHandler(t, nil)
			r := httptest.NewRequest(http.MethodGet, enAuthorize+"?"+tc.query, nil)
			if tc.body != "" {
				r = enForm(enAuthorize+"?"+tc.query, "", tc.body)
			}
			w, seen := enServe(t, h, r)
			enPage(t, w, seen, http.StatusBadRequest, codeInvalidRequest)
		})
	}
}

func TestEnforceToken(t *testing.T) {
	const code = "grant_type=authorization_code&code=xyz" +
		"&redirect_uri=https%3A%2F%2Fapp.example%2Fcb"
	big := "client_id=web&x=" + strings.Repeat("a", maxFormBody)
	cases := []struct {
		name      string
		only      bool
		method    string // default POST
		target    string // default enToken
		auth      string
		body      string
		status    int // 0: passed on
		code      string
		challenge bool   // WWW-Authenticate: Basic expected
		id, kind  string // identity next gets
	}{
		{name: "basic", auth: enBasic("web", enSecret), body: code,
			id: "web", kind: "confidential"},
		{name: "basic with matching client_id", auth: enBasic("web", enSecret),
			body: code + "&client_id=web", id: "web", kind: "confidential"},
		{name: "basic refresh", auth: enBasic("web", enSecret),
			body: "grant_type=refresh_token&refresh_token=r", id: "web", kind: "confidential"},
		{name: "basic wrong secret", auth: enBasic("web", "nope"), body: code,
			status: http.StatusUnauthorized, code: codeInvalidClient, challenge: true},
		{name: "basic client sends post", body: code + "&client_id=web&client_secret=" +
			url.QueryEscape(enSecret), status: http.StatusUnauthorized, code: codeInvalidClient},
		{name: "basic client sends nothing", body: code + "&client_id=web",
			status: http.StatusUnauthorized, code: codeInvalidClient},
		{name: "post", body: code + "&client_id=post&client_secret=" + url.QueryEscape(enSecret),
			id: "post", kind: "confidential"},
		{name: "post wrong secret", body: code + "&client_id=post&client_secret=x",
			status: http.StatusUnauthorized, code: codeInvalidClient},
		{name: "post client sends basic", auth: enBasic("post", enSecret), body: code,
			status: http.StatusUnauthorized, code: codeInvalidClient, challenge: true},
		{name: "both methods", auth: enBasic("post", enSecret),
			body:   code + "&client_secret=" + url.QueryEscape(enSecret),
			status: http.StatusUnauthorized, code: codeInvalidClient, challenge: true},
		{name: "public", body: code + "&client_id=native&code_verifier=v",
			id: "native", kind: "public"},
		{name: "public with secret", auth: enBasic("native", "x"), body: code,
			status: http.StatusUnauthorized, code: codeInvalidClient, challenge: true},
		{name: "private_key_jwt with an unsigned assertion", body: code + "&client_id=jwt" +
			"&client_assertion_type=" +
			url.QueryEscape("urn:ietf:params:oauth:client-assertion-type:jwt-bearer") +
			"&client_assertion=e30.e30.sig",
			status: http.StatusUnauthorized, code: codeInvalidClient},
		{name: "grant type unregistered", auth: enBasic("web", enSecret),
			body:   "grant_type=client_credentials",
			status: http.StatusBadRequest, code: codeUnauthorizedClient},
		{name: "grant type missing", auth: enBasic("web", enSecret), body: "code=xyz",
			status: http.StatusBadRequest, code: codeInvalidRequest},
		{name: "client_id conflict", auth: enBasic("web", enSecret),
			body:   code + "&client_id=post",
			status: http.StatusBadRequest, code: codeInvalidRequest},
		{name: "unknown client", body: code + "&client_id=nobody"},
		{name: "unknown client basic", auth: enBasic("nobody", "x"), body: code},
		{name: "unknown client registered_only", only: true,
			body:   code + "&client_id=nobody",
			status: http.StatusUnauthorized, code: codeInvalidClient},
		{name: "unknown basic registered_only", only: true,
			auth: enBasic("nobody", "x"), body: code,
			status: http.StatusUnauthorized, code: codeInvalidClient, challenge: true},
		{name: "no client", body: code},
		{name: "deleted client", auth: enBasic("gone", enSecret), body: code,
			status: http.StatusUnauthorized, code: codeInvalidClient, challenge: true},
		{name: "expired client", body: code + "&client_id=old",
			status: http.StatusUnauthorized, code: codeInvalidClient},
		{name: "GET refused", method: http.MethodGet, auth: enBasic("web", "nope"),
			status: http.StatusMethodNotAllowed, code: codeInvalidRequest},
		{name: "OPTIONS passes", method: http.MethodOptions},
		{name: "parameters in the query", body: code + "&client_id=web",
			target: "/oauth/token?client_id=web",
			status: http.StatusBadRequest, code: codeInvalidRequest},
		{name: "body too large", body: big,
			status: http.StatusRequestEntityTooLarge, code: codeInvalidRequest},
		{name: "body malformed", body: "client_id=web&%zz",
			status: http.StatusBadRequest, code: codeInvalidRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, _, _ := enHandler(t, func(e *Enforce) { e.RegisteredOnly = tc.only })
			target := enToken
			if tc.target != "" {
				target = tc.target
			}
			r := enForm(target, tc.auth, tc.body)
			if tc.method != "" {
				r = mgReq(tc.method, target, tc.auth, "")
			}
			r.Header.Set("X-DCR-Client-Name", "forged")

			w, seen := enServe(t, h, r)
			if tc.status != 0 {
				enTokenErr(t, w, seen, tc.status, tc.code)
				got := w.Header().Get("WWW-Authenticate")
				if want := `Basic realm="token", charset="UTF-8"`; tc.challenge && got != want {
					t.Errorf("WWW-Authenticate %q, want %q", got, want)
				}
				if !tc.challenge && got != "" {
					t.Errorf("WWW-Authenticate %q, want none", got)
				}
				return
			}
			if !seen.called {
				t.Fatalf("next not called; %d %s", w.Code, w.Body.Bytes())
			}
			name := ""
			if tc.id != "" {
				name = "App " + tc.id
			}
			enIdentity(t, h, seen, tc.id, name, tc.kind)
			if string(seen.body) != tc.body {
				t.Errorf("next got body %q, want %q", seen.body, tc.body)
			}
			if got := seen.header.Get("Authorization"); got != tc.auth {
				t.Errorf("next got Authorization %q, want %q", got, tc.auth)
			}
		})
	}
}

// TestEnforceTokenUndecodableBasic shows that an Authorization header
// whose credentials are not validly form-encoded is treated as no client
// authentication at all: the request goes to the backend unchecked, even
// with registered_only, which promises that unknown clients are refused.
func TestEnforceTokenUndecodableBasic(t *testing.T) {
	h, _, _ := enHandler(t, func(e *Enforce) { e.RegisteredOnly = true })
	raw := base64.StdEncoding.EncodeToString([]byte("nobody:bad%zz"))
	r := enForm(enToken, "Basic "+raw, "grant_type=authorization_code&code=x")
	w, seen := enServe(t, h, r)
	enTokenErr(t, w, seen, http.StatusUnauthorized, codeInvalidClient)
}

// TestEnforceStoreUnavailable checks that a broken store answers 503 with
// Retry-After at both endpoints rather than admitting or refusing the
// client for good.
func TestEnforceStoreUnavailable(t *testing.T) {
	h, _, logs := enHandler(t, nil)
	mgBreakStore(t, h)

	r := httptest.NewRequest(http.MethodGet, enAuthorize+
		"?client_id=web&response_type=code", nil)
	w, seen := enServe(t, h, r)
	enPage(t, w, seen, http.StatusServiceUnavailable, codeServerError)
	if got := w.Header().Get("Retry-After"); got != "1" {
		t.Errorf("authorize: Retry-After %q", got)
	}

	r = enForm(enToken, enBasic("web", enSecret), "grant_type=authorization_code")
	w, seen = enServe(t, h, r)
	enTokenErr(t, w, seen, http.StatusServiceUnavailable, codeServerError)
	if got := w.Header().Get("Retry-After"); got != "1" {
		t.Errorf("token: Retry-After %q", got)
	}
	if got := w.Header().Get("WWW-Authenticate"); got != "" {
		t.Errorf("token: WWW-Authenticate %q on a 503", got)
	}

	errs := logs.FilterLevelExact(zapcore.ErrorLevel).All()
	if len(errs) != 2 {
		t.Fatalf("%d error log entries, want 2: %v", len(errs), logs.All())
	}
	for _, e := range errs {
		if e.ContextMap()["rule"] != "store" {
			t.Errorf("log entry %v", e.ContextMap())
		}
	}
	mgNoSecretsLogged(t, logs, enSecret)
}

// TestEnforceIdentity checks what admit hands on: headers with custom
// names, percent-encoded names, placeholders, and the recorded use.
func TestEnforceIdentity(t *testing.T) {
	h, clock, _ := enHandler(t, func(e *Enforce) {
		e.ClientIDHeader = "X-Client"
		e.ClientNameHeader = "X-Client-Name"
		e.ClientTypeHeader = "X-Client-Kind"
	})
	c := enClient("intl", authClientSecretPost, "https://intl.example/cb")
	c.Metadata.ClientName = "Café Ünïcode"
	if err := h.store.Create(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	clock.advance(time.Minute)

	r := enForm(enToken, "", "grant_type=authorization_code&code=x"+
		"&client_id=intl&client_secret="+url.QueryEscape(enSecret))
	r.Header.Set("X-Client", "forged")
	repl := caddy.NewReplacer()
	r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl))

	w, seen := enServe(t, h, r)
	if !seen.called {
		t.Fatalf("next not called; %d %s", w.Code, w.Body.Bytes())
	}
	enIdentity(t, h, seen, "intl", "Caf%C3%A9%20%C3%9Cn%C3%AFcode", "confidential")
	for _, hdr := range []string{"X-DCR-Client-ID", "X-DCR-Client-Name"} {
		if v := seen.header.Get(hdr); v != "" {
			t.Errorf("next got default header %s %q", hdr, v)
		}
	}
	for key, want := range map[string]string{
		"http.dcr.client_id":   "intl",
		"http.dcr.client_name": "Café Ünïcode",
		"http.dcr.client_type": "confidential",
	} {
		if got, _ := repl.GetString(key); got != want {
			t.Errorf("placeholder %s = %q, want %q", key, got, want)
		}
	}

	used := h.usage.take()
	if len(used) != 1 || used["intl"] != clock.now().Unix() {
		t.Errorf("recorded use %v, want intl at %d", used, clock.now().Unix())
	}
}

func TestAuthenticateClient(t *testing.T) {
	const (
		old = "old-secret"
		hr  = int64(time.Hour / time.Second)
	)
	basic := enClient("b", authClientSecretBasic)
	post := enClient("p", authClientSecretPost)
	public := enClient("n", authNone)
	jwt := enClient("j", authPrivateKeyJWT)
	jwt.SecretHash = ""
	secretJWT := enClient("s", authClientSecretJWT)
	expiring := enClient("e", authClientSecretBasic)
	expiring.SecretExpiresAt = mgEpoch.Unix() + hr
	rotated := enClient("r", authClientSecretPost)
	rotated.PreviousSecretHash = clientdb.HashSecret(old)
	rotated.PreviousSecretExpiresAt = mgEpoch.Unix() + hr

	secret := func(s string) url.Values { return url.Values{"client_secret": {s}} }
	cases := []struct {
		name     string
		client   *clientdb.Client
		form     url.Values
		hasBasic bool
		basic    string
		later    time.Duration // clock advance
		rule     string        // "" when authenticated
	}{
		{"basic", basic, nil, true, enSecret, 0, ""},
		{"basic wrong", basic, nil, true, "x", 0, "secret_invalid"},
		{"basic empty", basic, nil, true, "", 0, "secret_invalid"},
		{"basic missing", basic, nil, false, "", 0, "auth_method"},
		{"basic sent as post", basic, secret(enSecret), false, "", 0, "auth_method"},
		{"basic and post", basic, secret(enSecret), true, enSecret, 0, "auth_multiple"},
		{"post", post, secret(enSecret), false, "", 0, ""},
		{"post wrong", post, secret("x"), false, "", 0, "secret_invalid"},
		{"post twice", post, url.Values{"client_secret": {enSecret, enSecret}},
			false, "", 0, "auth_method"},
		{"post sent as basic", post, nil, true, enSecret, 0, "auth_method"},
		{"post and basic", post, secret(enSecret), true, enSecret, 0, "auth_multiple"},
		{"none", public, nil, false, "", 0, ""},
		{"none with basic", public, nil, true, "", 0, "auth_method"},
		{"none with post", public, secret(""), false, "", 0, "auth_method"},
		{"private_key_jwt with a bad assertion", jwt, url.Values{"client_assertion": {"x"}},
			false, "", 0, "client_assertion"},
		{"client_secret_jwt", secretJWT, nil, false, "", 0, ""},
		{"before expiry", expiring, nil, true, enSecret, 59 * time.Minute, ""},
		{"at expiry", expiring, nil, true, enSecret, time.Hour, "secret_expired"},
		{"after expiry", expiring, nil, true, enSecret, 2 * time.Hour, "secret_expired"},
		{"expired and wrong", expiring, nil, true, "x", 2 * time.Hour, "secret_invalid"},
		{"rotated current", rotated, secret(enSecret), false, "", 2 * time.Hour, ""},
		{"previous within overlap", rotated, secret(old), false, "", 30 * time.Minute, ""},
		{"previous after overlap", rotated, secret(old), false, "", 2 * time.Hour,
			"secret_expired"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, clock, _ := mgHandler(t, nil)
			clock.advance(tc.later)
			form := tc.form
			if form == nil {
				form = url.Values{}
			}
			r := httptest.NewRequest(http.MethodPost, "/oauth/token", nil)
			perr := h.authenticateClient(r, tc.client, form, tc.hasBasic, tc.basic)
			if tc.rule == "" {
				if perr != nil {
					t.Fatalf("refused: %v (rule %s)", perr, perr.Rule)
				}
				return
			}
			checkProtoErr(t, perr, codeInvalidClient, http.StatusUnauthorized, tc.rule)
		})
	}
}

func TestBasicCredentials(t *testing.T) {
	b64 := func(s string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(s))
	}
	cases := []struct {
		name       string
		header     string
		id, secret string
		ok         bool
		malformed  bool
	}{
		{"plain", b64("client:secret"), "client", "secret", true, false},
		{"encoded colon", b64("a%3Ab:c%3Ad"), "a:b", "c:d", true, false},
		{"plus is space", b64("a+b:c+d"), "a b", "c d", true, false},
		{"encoded plus", b64("a%2Bb:c%2B"), "a+b", "c+", true, false},
		{"encoded percent", b64("a%25:%25"), "a%", "%", true, false},
		{"colon in secret", b64("a:b:c"), "a", "b:c", true, false},
		{"empty secret", b64("a:"), "a", "", true, false},
		{"utf-8", b64("%C3%A9:x"), "é", "x", true, false},
		{"round trip", enBasic("id:+%", "s3 /+"), "id:+%", "s3 /+", true, false},
		{"scheme case", "basic " + base64.StdEncoding.EncodeToString([]byte("a:b")),
			"a", "b", true, false},
		{"bad escape in id", b64("a%zz:b"), "", "", false, true},
		{"bad escape in secret", b64("a:b%"), "", "", false, true},
		{"truncated escape", b64("a%4:b"), "", "", false, true},
		{"no colon", b64("ab"), "", "", false, true},
		{"not base64", "Basic ***", "", "", false, true},
		{"bearer", "Bearer abc", "", "", false, false},
		{"none", "", "", "", false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, enToken, nil)
			if tc.header != "" {
				r.Header.Set("Authorization", tc.header)
			}
			id, secret, ok, malformed := basicCredentials(r)
			if id != tc.id || secret != tc.secret || ok != tc.ok ||
				malformed != tc.malformed {
				t.Errorf("basicCredentials = %q, %q, %v, %v; want %q, %q, %v, %v",
					id, secret, ok, malformed, tc.id, tc.secret, tc.ok, tc.malformed)
			}
		})
	}
}

// TestReadParams checks which parameters each endpoint reads and that the
// body is restored byte for byte.
func TestReadParams(t *testing.T) {
	cases := []struct {
		name      string
		r         *http.Request
		withQuery bool
		want      url.Values
		status    int
	}{
		{"GET query", httptest.NewRequest(http.MethodGet, "/a?x=1&y=2", nil), true,
			url.Values{"x": {"1"}, "y": {"2"}}, 0},
		{"GET without query", httptest.NewRequest(http.MethodGet, "/a?x=1", nil), false,
			url.Values{}, 0},
		{"POST query and form", enForm("/a?x=1", "", "x=2&y=3"), true,
			url.Values{"x": {"1", "2"}, "y": {"3"}}, 0},
		{"POST form only", enForm("/a?x=1", "", "y=3"), false, url.Values{"y": {"3"}}, 0},
		{"POST JSON", mgReq(http.MethodPost, "/a?x=1", "", `{"y":3}`), true,
			nil, http.StatusUnsupportedMediaType},
		{"POST without body", httptest.NewRequest(http.MethodPost, "/a?x=1", nil), true,
			url.Values{"x": {"1"}}, 0},
		{"query with a bad escape", httptest.NewRequest(http.MethodGet,
			"/a?x=1&redirect_uri=https://evil.example/%zz", nil), true,
			nil, http.StatusBadRequest},
		{"query with a semicolon", httptest.NewRequest(http.MethodGet,
			"/a?state=x;redirect_uri=https://evil.example/cb", nil), true,
			nil, http.StatusBadRequest},
		{"token parameters in the query", httptest.NewRequest(http.MethodGet,
			"/a?client_id=x", nil), false, nil, http.StatusBadRequest},
		{"POST form at the limit", enForm("/a", "", "y="+strings.Repeat("a", maxFormBody-2)),
			false, url.Values{"y": {strings.Repeat("a", maxFormBody-2)}}, 0},
		{"POST form over the limit", enForm("/a", "", "y="+strings.Repeat("a", maxFormBody-1)),
			false, nil, http.StatusRequestEntityTooLarge},
		{"POST form malformed", enForm("/a", "", "y=%"), false, nil, http.StatusBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var sent []byte
			if tc.r.Body != nil {
				sent, _ = io.ReadAll(tc.r.Body)
				tc.r.Body = io.NopCloser(bytes.NewReader(sent))
			}
			got, perr := readParams(tc.r, tc.withQuery)
			if tc.status != 0 {
				if perr == nil || perr.Status != tc.status {
					t.Fatalf("readParams = %v, %v; want status %d", got, perr, tc.status)
				}
				return
			}
			if perr != nil {
				t.Fatalf("readParams: %v", perr)
			}
			if len(got) != len(tc.want) || (len(got) > 0 && got.Encode() != tc.want.Encode()) {
				t.Errorf("params %v, want %v", got, tc.want)
			}
			rest, _ := io.ReadAll(tc.r.Body)
			if !bytes.Equal(rest, sent) {
				t.Errorf("body after readParams %q, want %q", rest, sent)
			}
		})
	}
}

// TestStripIdentity checks that identity headers a caller sends are
// removed on every path, whatever their names and letter case.
func TestStripIdentity(t *testing.T) {
	custom := func(e *Enforce) {
		e.ClientIDHeader = "X-Who"
		e.ClientNameHeader = "X-Who-Name"
		e.ClientTypeHeader = "X-Who-Type"
	}
	cases := []struct {
		name    string
		enforce bool
		change  func(*Enforce)
		target  string
		headers []string
	}{
		{"pass-through, no enforcement", false, nil, "/anything",
			[]string{"X-DCR-Client-ID", "x-dcr-client-name", "X-DCR-CLIENT-TYPE"}},
		{"pass-through", true, nil, "/anything",
			[]string{"X-DCR-Client-ID", "X-DCR-Client-Name", "X-DCR-Client-Type"}},
		{"authorize without client", true, nil, enAuthorize,
			[]string{"X-DCR-Client-ID", "X-DCR-Client-Name"}},
		{"token without client", true, nil, enToken, []string{"X-DCR-Client-ID"}},
		{"metadata", true, nil, oauthMetadataPath, []string{"X-DCR-Client-ID"}},
		{"custom names", true, custom, "/anything",
			[]string{"x-who", "X-Who-Name", "X-WHO-TYPE"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var h *Handler
			if tc.enforce {
				h, _, _ = enHandler(t, tc.change)
			} else {
				h, _, _ = mgHandler(t, nil)
			}
			r := httptest.NewRequest(http.MethodGet, tc.target, nil)
			if tc.target == enToken {
				r = enForm(enToken, "", "grant_type=authorization_code")
			}
			for _, hdr := range tc.headers {
				r.Header.Add(hdr, "forged")
			}
			r.Header.Set("X-Unrelated", "kept")

			_, seen := enServe(t, h, r)
			if !seen.called {
				t.Fatal("next not called")
			}
			for name, v := range seen.header {
				if strings.Contains(strings.Join(v, ""), "forged") {
					t.Errorf("next got %s %q", name, v)
				}
			}
			if seen.header.Get("X-Unrelated") != "kept" {
				t.Error("an unrelated header was removed")
			}
		})
	}

	// The registration endpoint answers itself; the headers go anyway.
	h, _, _ := enHandler(t, nil)
	r := mgReq(http.MethodPost, "/register", "", mgRegBody)
	r.Header.Set("X-DCR-Client-ID", "forged")
	if w, _ := enServe(t, h, r); w.Code != http.StatusCreated {
		t.Fatalf("register: %d %s", w.Code, w.Body.Bytes())
	}
	if v := r.Header.Get("X-DCR-Client-ID"); v != "" {
		t.Errorf("registration request keeps X-DCR-Client-ID %q", v)
	}
}

// TestStripIdentityUnderscore shows that a header spelled with underscores
// is not stripped. CGI-style backends, Caddy's own fastcgi transport among
// them, map X-DCR-Client_ID and X-DCR-Client-ID to the same variable,
// HTTP_X_DCR_CLIENT_ID: a caller forges the identity on every request that
// enforcement does not admit, and on admitted ones wins whenever the map
// iteration happens to put its header last.
func TestStripIdentityUnderscore(t *testing.T) {
	h, _, _ := enHandler(t, nil)
	r := httptest.NewRequest(http.MethodGet, "/anything", nil)
	r.Header.Add("X-DCR-Client_ID", "forged")
	r.Header.Add("X_DCR_CLIENT_TYPE", "forged")
	_, seen := enServe(t, h, r)
	for name, v := range seen.header {
		if strings.Contains(strings.Join(v, ""), "forged") {
			t.Errorf("next got %s %q", name, v)
		}
	}
}

func TestHeaderSafe(t *testing.T) {
	cases := []struct {
		in, want string
	}{
		{"", ""},
		{"My App", "My App"},
		{`Tools & "Things"`, `Tools & "Things"`},
		{`Tools & "Things" 100%`, "Tools%20&%20%22Things%22%20100%25"},
		{"~!@#$^*()_+{}|:<>?", "~!@#$^*()_+{}|:<>?"},
		{"Café", "Caf%C3%A9"},
		{"日本", "%E6%97%A5%E6%9C%AC"},
		{"a\tb", "a%09b"},
		{"a\r\nX-Evil: 1", "a%0D%0AX-Evil:%201"},
		{"a\x00b", "a%00b"},
		{"del\x7f", "del%7F"},
		{"é 100%", "%C3%A9%20100%25"},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got := headerSafe(tc.in)
			if got != tc.want {
				t.Errorf("headerSafe(%q) = %q, want %q", tc.in, got, tc.want)
			}
			for i := 0; i < len(got); i++ {
				if got[i] < 0x20 || got[i] >= 0x7f {
					t.Errorf("headerSafe(%q) = %q carries byte %#x", tc.in, got, got[i])
				}
			}
		})
	}
}

// TestHeaderSafeAmbiguous shows that a backend cannot decode the client
// name header: non-ASCII names arrive percent-encoded, ASCII names as
// they are, so "100% Pure" fails to decode and "%41" decodes to "A". A
// name with a "%" should be encoded too, so that decoding always gives
// the registered name back.
func TestHeaderSafeAmbiguous(t *testing.T) {
	for _, name := range []string{"100% Pure", "%41", "Café 100%", "plain"} {
		got, err := url.PathUnescape(headerSafe(name))
		if err != nil || got != name {
			t.Errorf("decoding headerSafe(%q) = %q, %v", name, got, err)
		}
	}
}

// TestEnforcePathVariants shows that enforcement compares the path
// exactly, while backends commonly serve the same endpoint at variants of
// it: ASP.NET matches case-insensitively, many routers ignore a trailing
// slash or merge slashes. Such a request reaches the backend unchecked,
// here for a deleted client.
func TestEnforcePathVariants(t *testing.T) {
	for _, path := range []string{"/OAuth/Token", "/oauth/token/", "//oauth/token"} {
		t.Run(path, func(t *testing.T) {
			h, _, _ := enHandler(t, nil)
			r := enForm(path, enBasic("gone", enSecret), "grant_type=authorization_code")
			w, seen := enServe(t, h, r)
			enTokenErr(t, w, seen, http.StatusUnauthorized, codeInvalidClient)
		})
	}
}
