package dcr

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

// The management suite drives the RFC 7592 client configuration endpoint
// at /register/<client_id> of the same in-process Caddy as the
// registration suite, with its helpers, and reads the real store through
// clientdb as an authorization server would.

// itFullBody registers a confidential client with most metadata members,
// so that an update which omits them shows that they are removed.
const itFullBody = `{
	"redirect_uris": ["https://app.example.com/cb", "http://127.0.0.1:8400/cb"],
	"token_endpoint_auth_method": "client_secret_post",
	"grant_types": ["authorization_code", "refresh_token"],
	"response_types": ["code"],
	"client_name": "Managed App",
	"client_name#ja-Jpan-JP": "管理アプリ",
	"client_uri": "https://app.example.com/",
	"logo_uri": "https://app.example.com/logo.png",
	"scope": "openid profile",
	"contacts": ["ops@app.example.com"],
	"tos_uri": "https://app.example.com/tos",
	"policy_uri": "https://app.example.com/privacy",
	"jwks_uri": "https://app.example.com/jwks.json",
	"software_id": "managed-sw-1",
	"software_version": "1.0.0"
}`

// itManaged is a registered client as its owner knows it.
type itManaged struct {
	id     string
	secret string // empty for a client without one
	token  string // the registration access token
	resp   map[string]any
}

// registerManaged registers body and returns the client with the values
// it was issued.
func (s *itServer) registerManaged(t *testing.T, body string) *itManaged {
	t.Helper()
	resp := s.register(t, body)
	c := &itManaged{
		id:    itString(t, resp, "client_id"),
		token: itString(t, resp, "registration_access_token"),
		resp:  resp,
	}
	c.secret, _ = resp["client_secret"].(string)
	return c
}

// itManageHeaders returns the headers of a management request: the
// bearer token unless it is empty, and the JSON content type with a body.
func itManageHeaders(token, body string, extra []string) []string {
	var h []string
	if body != "" {
		h = append(h, "Content-Type: application/json")
	}
	if token != "" {
		h = append(h, "Authorization: Bearer "+token)
	}
	return append(h, extra...)
}

// manage sends method to the configuration endpoint of client id with
// token as the bearer token. Extra headers replace the defaults, and an
// empty value removes one, as in request.
func (s *itServer) manage(t *testing.T, method, id, token, body string,
	extra ...string) *itResponse {
	t.Helper()
	return s.request(t, method, "/register/"+id, strings.NewReader(body),
		itManageHeaders(token, body, extra)...)
}

// manageAsync is manage for goroutines other than the test's own.
func (s *itServer) manageAsync(method, id, token, body string) (*itResponse, error) {
	return s.do(method, "/register/"+id, strings.NewReader(body),
		itManageHeaders(token, body, nil)...)
}

// reader returns a clientdb Reader on the server's store, as another
// process would open it.
func (s *itServer) reader(t *testing.T) *clientdb.Reader {
	t.Helper()
	if s.rd != nil {
		return s.rd
	}
	r, err := clientdb.Open(context.Background(), s.store)
	if err != nil {
		t.Fatalf("opening store: %v", err)
	}
	owner := t
	if s.owner != nil {
		// Kept for the whole test that started the server, so
		// that its subtests share one pool.
		owner, s.rd = s.owner, r
	}
	owner.Cleanup(func() { r.Close() })
	return r
}

// storedMetadata returns the stored metadata of client id in the form a
// response's metadata decodes to, for comparing with itMetadata.
func (s *itServer) storedMetadata(t *testing.T, id string) map[string]any {
	t.Helper()
	b, err := json.Marshal(s.lookup(t, id).Metadata)
	if err != nil {
		t.Fatalf("encoding stored metadata: %v", err)
	}
	return itDecode(t, string(b))
}

// itAssertOK checks a 200 client information response for client id and
// returns its body.
func itAssertOK(t *testing.T, r *itResponse, id string) map[string]any {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("status %d, want 200; body %s", r.status, r.body)
	}
	itAssertJSONHeaders(t, r)
	if got := itString(t, r.obj, "client_id"); got != id {
		t.Errorf("client_id %q, want %q", got, id)
	}
	if got := itString(t, r.obj, "registration_client_uri"); got != itSite+"/register/"+id {
		t.Errorf("registration_client_uri %q, want %q", got, itSite+"/register/"+id)
	}
	return r.obj
}

// itUnauthorizedChallenge is the challenge every failed authentication
// gets.
const itUnauthorizedChallenge = `Bearer error="invalid_token"`

// itAssertUnauthorized checks the uniform 401 of the configuration
// endpoint (RFC 6750 section 3).
func itAssertUnauthorized(t *testing.T, r *itResponse) {
	t.Helper()
	itAssertRefusal(t, r, itRefusal{http.StatusUnauthorized, "invalid_token", "token"})
	if got := r.header.Get("WWW-Authenticate"); got != itUnauthorizedChallenge {
		t.Errorf("WWW-Authenticate %q, want %q", got, itUnauthorizedChallenge)
	}
}

// itSame fails unless two answers are indistinguishable to a client but
// for the Date header.
func itSame(t *testing.T, got, want *itResponse) {
	t.Helper()
	if got.status != want.status {
		t.Errorf("status %d, want %d", got.status, want.status)
	}
	if string(got.body) != string(want.body) {
		t.Errorf("body %s, want %s", got.body, want.body)
	}
	g, w := got.header.Clone(), want.header.Clone()
	g.Del("Date")
	w.Del("Date")
	if !reflect.DeepEqual(g, w) {
		t.Errorf("headers %v, want %v", g, w)
	}
}

// unchanged fails unless client id is stored exactly as before.
func (s *itServer) unchanged(t *testing.T, id string, before *clientdb.Client) {
	t.Helper()
	if after := s.lookup(t, id); !reflect.DeepEqual(after, before) {
		t.Errorf("stored client changed:\n%+v\nwas\n%+v", after, before)
	}
}

func TestIntegrationManageRead(t *testing.T) {
	s := startDCR(t, "secret_lifetime 1h")

	tests := []struct {
		name   string
		body   string
		secret bool
	}{
		{"confidential client", itFullBody, true},
		{"public client", itReg(`"token_endpoint_auth_method":"none",` +
			`"client_name":"Public App"`), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := s.registerManaged(t, tc.body)
			stored := s.lookup(t, c.id)

			// A read never rotates: the same token works every time.
			var first []byte
			for i := range 3 {
				r := s.manage(t, http.MethodGet, c.id, c.token, "")
				got := itAssertOK(t, r, c.id)
				if i == 0 {
					first = r.body
				} else if string(r.body) != string(first) {
					t.Errorf("read %d: %s, first read %s", i, r.body, first)
				}

				if !reflect.DeepEqual(itMetadata(got), itMetadata(c.resp)) {
					t.Errorf("metadata\n%v\nat registration\n%v",
						itMetadata(got), itMetadata(c.resp))
				}
				if got["client_id_issued_at"] != c.resp["client_id_issued_at"] {
					t.Errorf("client_id_issued_at %v, at registration %v",
						got["client_id_issued_at"], c.resp["client_id_issued_at"])
				}
				exp, ok := got["client_secret_expires_at"]
				if ok != tc.secret {
					t.Errorf("client_secret_expires_at present: %v, want %v", ok, tc.secret)
				}
				if tc.secret && (itInt(t, got, "client_secret_expires_at") == 0 ||
					exp != c.resp["client_secret_expires_at"]) {
					t.Errorf("client_secret_expires_at %v, at registration %v",
						exp, c.resp["client_secret_expires_at"])
				}
				if v, ok := got["client_secret"]; ok {
					t.Errorf("read returned client_secret %v", v)
				}
				// RFC 7592 section 3: the token the client presented,
				// not a new one.
				if got["registration_access_token"] != c.token {
					t.Errorf("read returned registration_access_token %v, want the presented one",
						got["registration_access_token"])
				}
				for k := range got {
					if strings.Contains(k, "hash") {
						t.Errorf("read returned member %q", k)
					}
				}
				for _, leak := range []string{
					stored.RegistrationTokenHash, "sha256:",
				} {
					if strings.Contains(string(r.body), leak) {
						t.Errorf("read answer contains %q", leak)
					}
				}
				if c.secret != "" && strings.Contains(string(r.body), c.secret) {
					t.Error("read answer contains the secret")
				}
			}
			s.unchanged(t, c.id, stored)

			// RFC 6750 section 2.1: the scheme is case-insensitive.
			r := s.manage(t, http.MethodGet, c.id, "", "",
				"Authorization: bearer "+c.token)
			itAssertOK(t, r, c.id)
		})
	}
}

func TestIntegrationManageUpdate(t *testing.T) {
	s := startDCR(t)
	c := s.registerManaged(t, itFullBody)
	other := s.registerManaged(t, itValidBody)
	issuedAt := c.resp["client_id_issued_at"].(json.Number).String()
	uri := itString(t, c.resp, "registration_client_uri")

	badRequest := func(desc string) itRefusal {
		return itRefusal{400, "invalid_request", desc}
	}
	refused := []struct {
		name    string
		body    string
		headers []string
		want    itRefusal
	}{
		{"http redirect off loopback", `{"redirect_uris":["http://app.example.com/cb"]}`,
			nil, itRefusal{400, "invalid_redirect_uri", "http://app.example.com/cb"}},
		{"no redirect_uris", `{"client_name":"x"}`, nil,
			itRefusal{400, "invalid_redirect_uri", "redirect_uris"}},
		{"grant type not allowed", itReg(`"grant_types":["password"]`), nil,
			itRefusal{400, "invalid_client_metadata", `"password"`}},
		{"auth method not allowed", itReg(`"token_endpoint_auth_method":"private_key_jwt"`),
			nil, itRefusal{400, "invalid_client_metadata", `"private_key_jwt"`}},
		{"registration_access_token", itReg(`"registration_access_token":"` + c.token + `"`),
			nil, badRequest("registration_access_token")},
		{"registration_client_uri", itReg(`"registration_client_uri":"` + uri + `"`),
			nil, badRequest("registration_client_uri")},
		{"client_secret_expires_at", itReg(`"client_secret_expires_at":0`), nil,
			badRequest("client_secret_expires_at")},
		{"client_id_issued_at", itReg(`"client_id_issued_at":` + issuedAt), nil,
			badRequest("client_id_issued_at")},
		{"another client_id", itReg(`"client_id":"` + other.id + `"`), nil,
			badRequest("client_id")},
		{"wrong client_secret", itReg(`"client_secret":"` + c.secret + `x"`), nil,
			badRequest("client_secret")},
		{"another client's secret", itReg(`"client_secret":"` + other.secret + `"`), nil,
			badRequest("client_secret")},
		{"right client_id, wrong client_secret", itReg(`"client_id":"` + c.id +
			`","client_secret":"x"`), nil, badRequest("client_secret")},
		{"not JSON", "hello", nil, itRefusal{400, "invalid_client_metadata", "JSON"}},
		{"not a JSON object", "[]", nil,
			itRefusal{400, "invalid_client_metadata", "JSON object"}},
		{"content type", itValidBody, []string{"Content-Type: text/plain"},
			itRefusal{415, "invalid_request", "Content-Type"}},
		{"body too large", itPaddedBody(t, defaultMaxBody+1), nil,
			itRefusal{413, "invalid_request", fmt.Sprint(defaultMaxBody)}},
	}
	for _, tc := range refused {
		t.Run("refuses "+tc.name, func(t *testing.T) {
			before := s.lookup(t, c.id)
			r := s.manage(t, http.MethodPut, c.id, c.token, tc.body, tc.headers...)
			itAssertRefusal(t, r, tc.want)
			if _, ok := r.obj["registration_access_token"]; ok {
				t.Error("a refused update returned a token")
			}
			s.unchanged(t, c.id, before)
		})
	}
	// The refusals left the token as it was.
	itAssertOK(t, s.manage(t, http.MethodGet, c.id, c.token, ""), c.id)

	// An update names the full metadata: what it leaves out is removed
	// or falls back to the registration default, here the auth method.
	t.Run("replaces the metadata", func(t *testing.T) {
		start := time.Now().Unix()
		body := `{"redirect_uris":["https://new.example.com/cb"],` +
			`"client_name":"Renamed","client_id":"` + c.id +
			`","client_secret":"` + c.secret + `"}`
		r := s.manage(t, http.MethodPut, c.id, c.token, body)
		end := time.Now().Unix()
		got := itAssertOK(t, r, c.id)
		c.token = itString(t, got, "registration_access_token")

		want := map[string]any{
			"redirect_uris":              []any{"https://new.example.com/cb"},
			"client_name":                "Renamed",
			"grant_types":                []any{"authorization_code"},
			"response_types":             []any{"code"},
			"token_endpoint_auth_method": "client_secret_basic",
		}
		if !reflect.DeepEqual(itMetadata(got), want) {
			t.Errorf("metadata\n%v\nwant\n%v", itMetadata(got), want)
		}
		if got["client_id_issued_at"] != c.resp["client_id_issued_at"] {
			t.Errorf("client_id_issued_at %v, at registration %v",
				got["client_id_issued_at"], c.resp["client_id_issued_at"])
		}
		if itInt(t, got, "client_secret_expires_at") != 0 {
			t.Errorf("client_secret_expires_at %v, want 0", got["client_secret_expires_at"])
		}
		if v, ok := got["client_secret"]; ok {
			t.Errorf("client_secret %v returned without rotation", v)
		}
		if stored := s.storedMetadata(t, c.id); !reflect.DeepEqual(stored, want) {
			t.Errorf("stored metadata\n%v\nwant\n%v", stored, want)
		}
		stored := s.lookup(t, c.id)
		if stored.UpdatedAt < start || stored.UpdatedAt > end {
			t.Errorf("updated at %d, outside [%d, %d]", stored.UpdatedAt, start, end)
		}
		if !stored.VerifySecret(c.secret, time.Now()) {
			t.Error("the secret stopped working after an update without rotation")
		}
		read := itAssertOK(t, s.manage(t, http.MethodGet, c.id, c.token, ""), c.id)
		if !reflect.DeepEqual(itMetadata(read), want) {
			t.Errorf("read after update\n%v\nwant\n%v", itMetadata(read), want)
		}
	})

	t.Run("drops client_name and changes redirect_uris", func(t *testing.T) {
		body := `{"redirect_uris":["https://other.example.com/cb","http://[::1]/cb"]}`
		got := itAssertOK(t, s.manage(t, http.MethodPut, c.id, c.token, body), c.id)
		c.token = itString(t, got, "registration_access_token")
		if v, ok := got["client_name"]; ok {
			t.Errorf("client_name %v kept", v)
		}
		want := []string{"https://other.example.com/cb", "http://[::1]/cb"}
		if got := itStrings(got["redirect_uris"]); !slices.Equal(got, want) {
			t.Errorf("redirect_uris %v, want %v", got, want)
		}
		if stored := s.storedMetadata(t, c.id); !reflect.DeepEqual(stored, itMetadata(got)) {
			t.Errorf("stored metadata\n%v\nresponse\n%v", stored, itMetadata(got))
		}
	})

	// The other client was never touched by any of this.
	itAssertOK(t, s.manage(t, http.MethodGet, other.id, other.token, ""), other.id)
	if got := s.count(t); got != 2 {
		t.Errorf("store holds %d clients, want 2", got)
	}
}

func TestIntegrationManageRotateToken(t *testing.T) {
	tests := []struct {
		name    string
		options []string
		rotates bool
	}{
		{"on by default", nil, true},
		{"on", []string{"rotate_token on"}, true},
		{"off", []string{"rotate_token off"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := startDCR(t, tc.options...)
			c := s.registerManaged(t, itValidBody)

			for round := range 2 {
				old := c.token
				got := itAssertOK(t, s.manage(t, http.MethodPut, c.id, old, itValidBody), c.id)
				token, _ := got["registration_access_token"].(string)
				if rotated := token != old; rotated != tc.rotates {
					t.Fatalf("round %d: new token: %v, want %v", round, rotated, tc.rotates)
				}
				stored := s.lookup(t, c.id)
				if !tc.rotates {
					itAssertOK(t, s.manage(t, http.MethodGet, c.id, old, ""), c.id)
					if !stored.VerifyRegistrationToken(old) {
						t.Error("the token stopped verifying without rotation")
					}
					continue
				}

				if !itSecretPattern.MatchString(token) || token == old {
					t.Errorf("new token %q: want 43+ URL-safe characters, not the old", token)
				}
				for _, method := range []string{
					http.MethodGet, http.MethodPut, http.MethodDelete,
				} {
					body := ""
					if method == http.MethodPut {
						body = itValidBody
					}
					itAssertUnauthorized(t, s.manage(t, method, c.id, old, body))
				}
				if stored.VerifyRegistrationToken(old) || !stored.VerifyRegistrationToken(token) {
					t.Error("stored token hash is not the new token's")
				}
				itAssertOK(t, s.manage(t, http.MethodGet, c.id, token, ""), c.id)
				c.token = token
			}
			if got := s.count(t); got != 1 {
				t.Errorf("store holds %d clients, want 1", got)
			}
		})
	}
}

func TestIntegrationManageAuthMethod(t *testing.T) {
	s := startDCR(t)
	r := s.reader(t)
	c := s.registerManaged(t, itValidBody)
	first := c.secret

	t.Run("switch to none drops the secret", func(t *testing.T) {
		body := itReg(`"token_endpoint_auth_method":"none"`)
		got := itAssertOK(t, s.manage(t, http.MethodPut, c.id, c.token, body), c.id)
		c.token = itString(t, got, "registration_access_token")
		for _, k := range []string{"client_secret", "client_secret_expires_at"} {
			if v, ok := got[k]; ok {
				t.Errorf("%s %v for a client without a secret", k, v)
			}
		}

		stored := s.lookup(t, c.id)
		if stored.HasSecret() || stored.SecretExpiresAt != 0 ||
			stored.PreviousSecretHash != "" {
			t.Errorf("secret kept: hash %q, expiry %d, previous %q", stored.SecretHash,
				stored.SecretExpiresAt, stored.PreviousSecretHash)
		}
		if err := stored.CheckSecret(first, time.Now()); !errors.Is(err,
			clientdb.ErrSecretInvalid) {
			t.Errorf("CheckSecret of the dropped secret: %v, want ErrSecretInvalid", err)
		}
		if ok, err := r.VerifySecret(c.id, first, time.Now()); ok || err != nil {
			t.Errorf("Reader.VerifySecret of the dropped secret: %v, %v", ok, err)
		}
	})

	t.Run("switch from none issues a secret", func(t *testing.T) {
		body := itReg(`"token_endpoint_auth_method":"client_secret_post"`)
		got := itAssertOK(t, s.manage(t, http.MethodPut, c.id, c.token, body), c.id)
		c.token = itString(t, got, "registration_access_token")
		c.secret = itString(t, got, "client_secret")
		if !itSecretPattern.MatchString(c.secret) || c.secret == first {
			t.Errorf("client_secret %q: want a new 43+ character secret", c.secret)
		}
		if exp := itInt(t, got, "client_secret_expires_at"); exp != 0 {
			t.Errorf("client_secret_expires_at %d, want 0", exp)
		}
		if ok, err := r.VerifySecret(c.id, c.secret, time.Now()); !ok || err != nil {
			t.Errorf("Reader.VerifySecret of the issued secret: %v, %v", ok, err)
		}
		if ok, _ := r.VerifySecret(c.id, first, time.Now()); ok {
			t.Error("the secret dropped before verifies again")
		}
		if strings.Contains(string(s.fileBytes(t)), c.secret) {
			t.Error("the plaintext secret is in the store file")
		}

		// The secret is returned once, when issued.
		read := itAssertOK(t, s.manage(t, http.MethodGet, c.id, c.token, ""), c.id)
		if v, ok := read["client_secret"]; ok {
			t.Errorf("read returned client_secret %v", v)
		}
		if exp := itInt(t, read, "client_secret_expires_at"); exp != 0 {
			t.Errorf("read: client_secret_expires_at %d, want 0", exp)
		}
	})

	t.Run("switch between secret methods keeps the secret", func(t *testing.T) {
		body := itReg(`"token_endpoint_auth_method":"client_secret_basic"`)
		got := itAssertOK(t, s.manage(t, http.MethodPut, c.id, c.token, body), c.id)
		c.token = itString(t, got, "registration_access_token")
		if v, ok := got["client_secret"]; ok {
			t.Errorf("new client_secret %v without rotation", v)
		}
		if ok, err := r.VerifySecret(c.id, c.secret, time.Now()); !ok || err != nil {
			t.Errorf("Reader.VerifySecret of the kept secret: %v, %v", ok, err)
		}
	})

	// RFC 7592 section 2.2: omitted values fall back to the defaults, and
	// the default method, client_secret_basic, needs a secret.
	t.Run("an omitted method falls back to the default", func(t *testing.T) {
		pub := s.registerManaged(t, itReg(`"token_endpoint_auth_method":"none"`))
		got := itAssertOK(t, s.manage(t, http.MethodPut, pub.id, pub.token,
			itValidBody), pub.id)
		if m := got["token_endpoint_auth_method"]; m != "client_secret_basic" {
			t.Errorf("token_endpoint_auth_method %v, want client_secret_basic", m)
		}
		secret := itString(t, got, "client_secret")
		if ok, err := r.VerifySecret(pub.id, secret, time.Now()); !ok || err != nil {
			t.Errorf("Reader.VerifySecret of the issued secret: %v, %v", ok, err)
		}
	})

	t.Run("only within the policy", func(t *testing.T) {
		s := startDCR(t, "auth_methods client_secret_basic client_secret_post")
		c := s.registerManaged(t, itValidBody)
		before := s.lookup(t, c.id)
		r := s.manage(t, http.MethodPut, c.id, c.token,
			itReg(`"token_endpoint_auth_method":"none"`))
		itAssertRefusal(t, r, itRefusal{400, "invalid_client_metadata", `"none"`})
		s.unchanged(t, c.id, before)
		if !before.VerifySecret(c.secret, time.Now()) {
			t.Error("the secret does not verify after a refused switch")
		}
	})
}

func TestIntegrationManageRotateSecret(t *testing.T) {
	tests := []struct {
		name    string
		options []string
		rotates bool
		overlap int64 // seconds the old secret stays valid after rotation
		// capped: the overlap ends when the old secret expires
		capped bool
	}{
		{name: "off by default"},
		{name: "off", options: []string{"rotate_secret off", "secret_overlap 1h"}},
		{name: "on without overlap", options: []string{"rotate_secret on"},
			rotates: true},
		{name: "on with secret_overlap 1h",
			options: []string{"rotate_secret on", "secret_overlap 1h"},
			rotates: true, overlap: 3600},
		{name: "overlap ends with the old secret's lifetime",
			options: []string{"rotate_secret on", "secret_overlap 2h", "secret_lifetime 1h"},
			rotates: true, overlap: 7200, capped: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := startDCR(t, tc.options...)
			r := s.reader(t)
			c := s.registerManaged(t, itValidBody)
			old := c.secret
			oldExp := itInt(t, c.resp, "client_secret_expires_at")

			start := time.Now().Unix()
			body := itReg(`"client_secret":"` + old + `"`)
			got := itAssertOK(t, s.manage(t, http.MethodPut, c.id, c.token, body), c.id)
			end := time.Now().Unix()
			c.token = itString(t, got, "registration_access_token")
			exp := itInt(t, got, "client_secret_expires_at")
			stored := s.lookup(t, c.id)
			now := time.Now()

			if !tc.rotates {
				if v, ok := got["client_secret"]; ok {
					t.Errorf("client_secret %v without rotation", v)
				}
				if exp != oldExp {
					t.Errorf("client_secret_expires_at %d, want %d", exp, oldExp)
				}
				if err := stored.CheckSecret(old, now); err != nil {
					t.Errorf("CheckSecret of the kept secret: %v", err)
				}
				return
			}

			secret := itString(t, got, "client_secret")
			if !itSecretPattern.MatchString(secret) || secret == old {
				t.Errorf("client_secret %q: want a new 43+ character secret", secret)
			}
			if ok, err := r.VerifySecret(c.id, secret, now); !ok || err != nil {
				t.Errorf("Reader.VerifySecret of the new secret: %v, %v", ok, err)
			}
			if oldExp == 0 && exp != 0 {
				t.Errorf("client_secret_expires_at %d, want 0", exp)
			}
			if oldExp != 0 && (exp < start+3600 || exp > end+3600) {
				t.Errorf("client_secret_expires_at %d outside [%d, %d]", exp,
					start+3600, end+3600)
			}

			switch {
			case tc.overlap == 0:
				if err := stored.CheckSecret(old, now); err == nil {
					t.Error("the old secret still verifies without overlap")
				}
				if ok, _ := r.VerifySecret(c.id, old, now); ok {
					t.Error("Reader.VerifySecret accepts the old secret without overlap")
				}
			default:
				if err := stored.CheckSecret(old, now); err != nil {
					t.Errorf("CheckSecret of the old secret during the overlap: %v", err)
				}
				if ok, err := r.VerifySecret(c.id, old, now); !ok || err != nil {
					t.Errorf("Reader.VerifySecret of the old secret during the "+
						"overlap: %v, %v", ok, err)
				}
				until := stored.PreviousSecretExpiresAt
				lo, hi := start+tc.overlap, end+tc.overlap
				if tc.capped {
					lo, hi = oldExp, oldExp
				}
				if until < lo || until > hi {
					t.Errorf("old secret valid until %d, want within [%d, %d]",
						until, lo, hi)
				}
				err := stored.CheckSecret(old, time.Unix(until, 0))
				if !errors.Is(err, clientdb.ErrSecretExpired) {
					t.Errorf("CheckSecret of the old secret after the overlap: %v, "+
						"want ErrSecretExpired", err)
				}
				// With a lifetime, the new secret may expire in the same
				// second as the overlap.
				if exp == 0 || exp > until {
					err := stored.CheckSecret(secret, time.Unix(until, 0))
					if err != nil {
						t.Errorf("CheckSecret of the new secret after the overlap: %v", err)
					}
				}
			}

			// Only the current secret counts as the client's in an update,
			// even while the old one still authenticates.
			before := s.lookup(t, c.id)
			refused := s.manage(t, http.MethodPut, c.id, c.token,
				itReg(`"client_secret":"`+old+`"`))
			itAssertRefusal(t, refused, itRefusal{400, "invalid_request", "client_secret"})
			s.unchanged(t, c.id, before)

			// A client without a secret gets none from rotation.
			pub := s.registerManaged(t, itReg(`"token_endpoint_auth_method":"none"`))
			got = itAssertOK(t, s.manage(t, http.MethodPut, pub.id, pub.token,
				itReg(`"token_endpoint_auth_method":"none"`)), pub.id)
			if v, ok := got["client_secret"]; ok {
				t.Errorf("public client got client_secret %v", v)
			}
		})
	}
}

func TestIntegrationManageSecretExpiry(t *testing.T) {
	s := startDCR(t, "secret_lifetime 1s")
	c := s.registerManaged(t, itValidBody)
	issued := itInt(t, c.resp, "client_id_issued_at")
	exp := itInt(t, c.resp, "client_secret_expires_at")
	if exp != issued+1 {
		t.Fatalf("client_secret_expires_at %d, want %d", exp, issued+1)
	}

	stored := s.lookup(t, c.id)
	if err := stored.CheckSecret(c.secret, time.Unix(issued, 0)); err != nil {
		t.Errorf("CheckSecret before expiry: %v", err)
	}

	// A hang check, not a timing assertion: the second passes soon.
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Unix() < exp {
		if time.Now().After(deadline) {
			t.Fatal("the secret's expiry never came")
		}
		time.Sleep(100 * time.Millisecond)
	}

	stored = s.lookup(t, c.id)
	now := time.Now()
	if err := stored.CheckSecret(c.secret, now); !errors.Is(err, clientdb.ErrSecretExpired) {
		t.Errorf("CheckSecret of the expired secret: %v, want ErrSecretExpired", err)
	}
	if stored.VerifySecret(c.secret, now) {
		t.Error("VerifySecret accepts the expired secret")
	}
	if ok, err := s.reader(t).VerifySecret(c.id, c.secret, now); ok || err != nil {
		t.Errorf("Reader.VerifySecret of the expired secret: %v, %v", ok, err)
	}
	if err := stored.CheckSecret(c.secret+"x", now); !errors.Is(err,
		clientdb.ErrSecretInvalid) {
		t.Errorf("CheckSecret of a wrong secret: %v, want ErrSecretInvalid", err)
	}

	// The client still manages its registration, and sees the expiry.
	got := itAssertOK(t, s.manage(t, http.MethodGet, c.id, c.token, ""), c.id)
	if e := itInt(t, got, "client_secret_expires_at"); e != exp {
		t.Errorf("read: client_secret_expires_at %d, want %d", e, exp)
	}
}

// itReaderAnswer returns the next answer of a TestHelperReader child in
// "answer" mode, skipping the test framework's own output.
func itReaderAnswer(c *storeChild, d time.Duration) (string, error) {
	timeout := time.After(d)
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				<-c.done
				return "", fmt.Errorf("reader exited: %v\n%s", c.err,
					storeTail(c.stderr.Bytes()))
			}
			if strings.HasPrefix(l, "ok ") || strings.HasPrefix(l, "missing ") {
				return l, nil
			}
		case <-timeout:
			return "", fmt.Errorf("reader gave no answer within %s", d)
		}
	}
}

func TestIntegrationManageDelete(t *testing.T) {
	s := startDCR(t)
	c := s.registerManaged(t, itValidBody)
	keep := s.registerManaged(t, itValidBody)
	issued := itInt(t, c.resp, "client_id_issued_at")

	// A reader in another process, as an authorization server would be.
	child := storeStartChild(t, "^TestHelperReader$",
		envReaderDB+"="+s.store, envReaderMode+"=answer")
	if err := child.waitFor("ready", time.Minute); err != nil {
		t.Fatal(err)
	}
	ask := func(want string) {
		t.Helper()
		if err := child.send(c.id + " " + c.secret); err != nil {
			t.Fatalf("sending to reader: %v", err)
		}
		got, err := itReaderAnswer(child, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("reader process: %q, want %q", got, want)
		}
	}
	ask("ok " + c.id)

	start := time.Now().Unix()
	r := s.manage(t, http.MethodDelete, c.id, c.token, "")
	end := time.Now().Unix()
	if r.status != http.StatusNoContent || len(r.body) != 0 {
		t.Fatalf("DELETE: %d %q, want 204 and no body", r.status, r.body)
	}
	if got := r.header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", got)
	}

	// The deletion is durable once answered: the other process sees it.
	ask("missing " + c.id + " " + clientdb.ErrDeleted.Error())

	for _, method := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
		body := ""
		if method == http.MethodPut {
			body = itValidBody
		}
		itAssertUnauthorized(t, s.manage(t, method, c.id, c.token, body))
	}

	rd := s.reader(t)
	if _, err := rd.Lookup(c.id); !errors.Is(err, clientdb.ErrDeleted) {
		t.Errorf("Lookup: %v, want ErrDeleted", err)
	}
	if ok, err := rd.VerifySecret(c.id, c.secret, time.Now()); ok ||
		!errors.Is(err, clientdb.ErrDeleted) {
		t.Errorf("VerifySecret: %v, %v, want false, ErrDeleted", ok, err)
	}
	ts, err := rd.Tombstone(c.id)
	if err != nil {
		t.Fatalf("Tombstone: %v", err)
	}
	if ts.ID != c.id || ts.Reason != clientdb.ReasonDeleted || ts.IssuedAt != issued ||
		ts.DeletedAt < start || ts.DeletedAt > end {
		t.Errorf("tombstone %+v, want ID %s, reason deleted, issued %d, "+
			"deleted in [%d, %d]", ts, c.id, issued, start, end)
	}
	if _, err := rd.Lookup("never-issued"); !errors.Is(err, clientdb.ErrNotFound) {
		t.Errorf("Lookup of an unknown ID: %v, want ErrNotFound", err)
	}

	// Nothing secret survives in the tombstone, and the other client
	// lives on.
	file := string(s.fileBytes(t))
	for _, leak := range []string{c.token, c.secret} {
		if strings.Contains(file, leak) {
			t.Errorf("store file holds %.10q... of the deleted client", leak)
		}
	}
	if got := s.count(t); got != 1 {
		t.Errorf("store holds %d clients, want 1", got)
	}
	itAssertOK(t, s.manage(t, http.MethodGet, keep.id, keep.token, ""), keep.id)

	if _, err := child.finish(time.Minute); err != nil {
		t.Errorf("reader process: %v", err)
	}
}

func TestIntegrationManageUnauthorized(t *testing.T) {
	s := startDCR(t)
	a := s.registerManaged(t, itValidBody)
	b := s.registerManaged(t, itValidBody)
	gone := s.registerManaged(t, itValidBody)
	if r := s.manage(t, http.MethodDelete, gone.id, gone.token, ""); r.status != 204 {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}
	beforeA, beforeB := s.lookup(t, a.id), s.lookup(t, b.id)
	basic := base64.StdEncoding.EncodeToString([]byte(a.id + ":" + a.token))

	// Each case is a client ID and an Authorization header; every one of
	// them must get the same answer.
	tests := []struct {
		name, id, auth string
	}{
		{"missing header", a.id, "Authorization:"},
		{"Basic scheme", a.id, "Authorization: Basic " + basic},
		{"Basic scheme with the token", a.id, "Authorization: Basic " + a.token},
		{"scheme only", a.id, "Authorization: Bearer"},
		{"token without scheme", a.id, "Authorization: " + a.token},
		{"token with a space", a.id, "Authorization: Bearer " + a.token + " x"},
		{"over-long token", a.id, "Authorization: Bearer " + strings.Repeat("a", 5000)},
		{"wrong token", a.id, "Authorization: Bearer " + strings.Repeat("A", 43)},
		{"truncated token", a.id, "Authorization: Bearer " + a.token[:42]},
		{"another client's token", a.id, "Authorization: Bearer " + b.token},
		{"unknown client", "unknownclientid0000000", "Authorization: Bearer " + a.token},
		{"unknown client with its own-looking token", "x", "Authorization: Bearer x"},
		{"deleted client", gone.id, "Authorization: Bearer " + gone.token},
	}
	var ref *itResponse
	for _, method := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
		for _, tc := range tests {
			t.Run(method+" "+tc.name, func(t *testing.T) {
				body := ""
				if method == http.MethodPut {
					body = itValidBody
				}
				r := s.manage(t, method, tc.id, "", body, tc.auth)
				itAssertUnauthorized(t, r)
				if ref == nil {
					ref = r
					return
				}
				itSame(t, r, ref)
			})
		}
	}

	s.unchanged(t, a.id, beforeA)
	s.unchanged(t, b.id, beforeB)
	if _, err := s.reader(t).Lookup(gone.id); !errors.Is(err, clientdb.ErrDeleted) {
		t.Errorf("Lookup of the deleted client: %v, want ErrDeleted", err)
	}
	if got := s.count(t); got != 2 {
		t.Errorf("store holds %d clients, want 2", got)
	}
}

func TestIntegrationManageMethods(t *testing.T) {
	s := startDCR(t)
	c := s.registerManaged(t, itValidBody)
	before := s.lookup(t, c.id)

	for _, method := range []string{http.MethodPost, http.MethodPatch, http.MethodOptions} {
		for _, target := range []struct{ name, id, token string }{
			{"with the token", c.id, c.token},
			{"without a token", c.id, ""},
			{"unknown client", "unknownclientid0000000", c.token},
		} {
			t.Run(method+" "+target.name, func(t *testing.T) {
				r := s.manage(t, method, target.id, target.token, itValidBody)
				itAssertRefusal(t, r, itRefusal{405, "invalid_request", method})
				allow := strings.Split(r.header.Get("Allow"), ",")
				for i := range allow {
					allow[i] = strings.TrimSpace(allow[i])
				}
				slices.Sort(allow)
				if want := []string{"DELETE", "GET", "PUT"}; !slices.Equal(allow, want) {
					t.Errorf("Allow: %q, want GET, PUT and DELETE", r.header.Get("Allow"))
				}
			})
		}
	}
	s.unchanged(t, c.id, before)
	itAssertOK(t, s.manage(t, http.MethodGet, c.id, c.token, ""), c.id)
}

func TestIntegrationManageBaseURL(t *testing.T) {
	tests := []struct {
		name     string
		options  []string
		endpoint string
		want     string // registration_client_uri without the client ID
	}{
		{"host", []string{"base_url https://auth.example.com"}, "/register",
			"https://auth.example.com/register/"},
		{"trailing slash", []string{"base_url https://auth.example.com/"}, "/register",
			"https://auth.example.com/register/"},
		{"path prefix and endpoint", []string{"base_url https://auth.example.com/dcr",
			"endpoint /oauth/register"}, "/oauth/register",
			"https://auth.example.com/dcr/oauth/register/"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := startDCR(t, tc.options...)
			r := s.request(t, http.MethodPost, tc.endpoint, strings.NewReader(itValidBody))
			if r.status != http.StatusCreated {
				t.Fatalf("status %d, want 201; body %s", r.status, r.body)
			}
			id := itString(t, r.obj, "client_id")
			token := itString(t, r.obj, "registration_access_token")
			want := tc.want + id
			if got := itString(t, r.obj, "registration_client_uri"); got != want {
				t.Errorf("registration: registration_client_uri %q, want %q", got, want)
			}

			path := tc.endpoint + "/" + id
			for _, method := range []string{http.MethodGet, http.MethodPut} {
				body := ""
				if method == http.MethodPut {
					body = itValidBody
				}
				r := s.request(t, method, path, strings.NewReader(body),
					itManageHeaders(token, body, nil)...)
				if r.status != http.StatusOK {
					t.Fatalf("%s: status %d, want 200; body %s", method, r.status, r.body)
				}
				if got := itString(t, r.obj, "registration_client_uri"); got != want {
					t.Errorf("%s: registration_client_uri %q, want %q", method, got, want)
				}
				if next, ok := r.obj["registration_access_token"].(string); ok {
					token = next
				}
			}
		})
	}
}

// itRace runs fns at once, each in its own goroutine, released together.
func itRace(fns ...func()) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, fn := range fns {
		wg.Go(func() {
			<-start
			fn()
		})
	}
	close(start)
	wg.Wait()
}

// itRaceBody is the full metadata one racer sends: every member differs
// between racers, so a record mixing two updates would show.
func itRaceBody(name string) string {
	return `{"redirect_uris":["https://` + name + `.example.com/cb"],` +
		`"client_name":"` + name + `","software_id":"sw-` + name + `"}`
}

// itWatch looks client id up until stop is closed and returns every
// distinct metadata it saw, JSON-encoded, and the first error.
func itWatch(r *clientdb.Reader, id string, stop <-chan struct{}) (seen []string, err error) {
	for {
		select {
		case <-stop:
			return seen, err
		default:
		}
		c, lerr := r.Lookup(id)
		if lerr != nil {
			if err == nil {
				err = lerr
			}
			continue
		}
		b, merr := json.Marshal(c.Metadata)
		if merr != nil {
			return seen, merr
		}
		if !slices.Contains(seen, string(b)) {
			seen = append(seen, string(b))
		}
	}
}

func TestIntegrationManageConcurrentUpdates(t *testing.T) {
	const rounds = 10

	t.Run("rotate_token off", func(t *testing.T) {
		s := startDCR(t, "rotate_token off")
		rd := s.reader(t)
		for round := range rounds {
			c := s.registerManaged(t, itRaceBody("orig"))
			names := []string{"racer-a", "racer-b"}
			resps := make([]*itResponse, len(names))
			errs := make([]error, len(names))

			stop := make(chan struct{})
			var seen []string
			var watchErr error
			watched := make(chan struct{})
			go func() {
				seen, watchErr = itWatch(rd, c.id, stop)
				close(watched)
			}()
			itRace(func() {
				resps[0], errs[0] = s.manageAsync(http.MethodPut, c.id, c.token,
					itRaceBody(names[0]))
			}, func() {
				resps[1], errs[1] = s.manageAsync(http.MethodPut, c.id, c.token,
					itRaceBody(names[1]))
			})
			close(stop)
			<-watched

			var won []map[string]any
			for i, r := range resps {
				if errs[i] != nil {
					t.Fatalf("round %d: %s: %v", round, names[i], errs[i])
				}
				switch {
				case r.status == http.StatusOK:
					won = append(won, itMetadata(r.obj))
				case r.obj == nil || r.obj["error"] == nil:
					t.Errorf("round %d: %s: %d %s is not a clean failure",
						round, names[i], r.status, r.body)
				}
			}
			if len(won) == 0 {
				t.Fatalf("round %d: neither update succeeded", round)
			}
			final := s.storedMetadata(t, c.id)
			if !slices.ContainsFunc(won, func(m map[string]any) bool {
				return reflect.DeepEqual(m, final)
			}) {
				t.Errorf("round %d: stored metadata %v is none of the updates %v",
					round, final, won)
			}

			// Every state a reader saw is a whole record: the original's
			// or one racer's, never parts of two.
			if watchErr != nil {
				t.Errorf("round %d: reader: %v", round, watchErr)
			}
			for _, m := range seen {
				if !itWhole(itDecode(t, m)) {
					t.Errorf("round %d: a reader saw a mixed record %s", round, m)
				}
			}
		}
	})

	t.Run("rotate_token on", func(t *testing.T) {
		s := startDCR(t)
		for round := range rounds {
			c := s.registerManaged(t, itRaceBody("orig"))
			resps := make([]*itResponse, 2)
			errs := make([]error, 2)
			itRace(func() {
				resps[0], errs[0] = s.manageAsync(http.MethodPut, c.id, c.token,
					itRaceBody("racer-a"))
			}, func() {
				resps[1], errs[1] = s.manageAsync(http.MethodPut, c.id, c.token,
					itRaceBody("racer-b"))
			})

			var winner *itResponse
			for i, r := range resps {
				if errs[i] != nil {
					t.Fatalf("round %d: %v", round, errs[i])
				}
				switch r.status {
				case http.StatusOK:
					if winner != nil {
						t.Errorf("round %d: both updates answered 200 with one token", round)
					}
					winner = r
				case http.StatusUnauthorized:
					itAssertUnauthorized(t, r)
				default:
					t.Errorf("round %d: status %d, want 200 or 401; body %s",
						round, r.status, r.body)
				}
			}
			if winner == nil {
				t.Fatalf("round %d: no update answered 200", round)
			}
			if final := s.storedMetadata(t, c.id); !reflect.DeepEqual(final,
				itMetadata(winner.obj)) {
				t.Errorf("round %d: stored %v, winner %v", round, final,
					itMetadata(winner.obj))
			}
			token := itString(t, winner.obj, "registration_access_token")
			itAssertOK(t, s.manage(t, http.MethodGet, c.id, token, ""), c.id)
			itAssertUnauthorized(t, s.manage(t, http.MethodGet, c.id, c.token, ""))
		}
	})

	// Two updates that both name the current secret, with the secret
	// rotated: the one applied second named a secret that was no longer
	// the current one by then, which RFC 7592 section 2.2 refuses.
	t.Run("client_secret checked at commit", func(t *testing.T) {
		s := startDCR(t, "rotate_token off", "rotate_secret on")
		for round := range rounds {
			c := s.registerManaged(t, itValidBody)
			body := itReg(`"client_secret":"` + c.secret + `"`)
			resps := make([]*itResponse, 2)
			errs := make([]error, 2)
			itRace(func() {
				resps[0], errs[0] = s.manageAsync(http.MethodPut, c.id, c.token, body)
			}, func() {
				resps[1], errs[1] = s.manageAsync(http.MethodPut, c.id, c.token, body)
			})
			ok := 0
			for i, r := range resps {
				if errs[i] != nil {
					t.Fatalf("round %d: %v", round, errs[i])
				}
				switch r.status {
				case http.StatusOK:
					ok++
				case http.StatusBadRequest:
					itAssertRefusal(t, r, itRefusal{400, "invalid_request", "client_secret"})
				default:
					t.Errorf("round %d: status %d; body %s", round, r.status, r.body)
				}
			}
			if ok != 1 {
				t.Errorf("round %d: %d of two updates naming the same rotated "+
					"client_secret answered 200, want exactly 1", round, ok)
			}
		}
	})
}

// itWhole reports whether metadata from itRaceBody is one racer's
// throughout: redirect URI, name and software ID all name the same racer.
func itWhole(m map[string]any) bool {
	name, _ := m["client_name"].(string)
	uris := itStrings(m["redirect_uris"])
	return name != "" && len(uris) == 1 &&
		uris[0] == "https://"+name+".example.com/cb" && m["software_id"] == "sw-"+name
}

func TestIntegrationManageDeleteRacesUpdate(t *testing.T) {
	const clients = 20

	tests := []struct {
		name   string
		rotate bool
	}{
		{"rotate_token off", false},
		{"rotate_token on", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opt := "rotate_token off"
			if tc.rotate {
				opt = "rotate_token on"
			}
			s := startDCR(t, opt)
			rd := s.reader(t)

			cs := make([]*itManaged, clients)
			for i := range cs {
				cs[i] = s.registerManaged(t, itRaceBody("orig"))
			}

			// All pairs at once, so that deletes and updates share commit
			// groups in every order.
			type result struct {
				del, put       *itResponse
				delErr, putErr error
			}
			results := make([]result, clients)
			var fns []func()
			for i, c := range cs {
				fns = append(fns, func() {
					results[i].del, results[i].delErr =
						s.manageAsync(http.MethodDelete, c.id, c.token, "")
				}, func() {
					results[i].put, results[i].putErr =
						s.manageAsync(http.MethodPut, c.id, c.token, itRaceBody("racer"))
				})
			}
			itRace(fns...)

			var deleted int
			for i, c := range cs {
				res := results[i]
				if res.delErr != nil || res.putErr != nil {
					t.Fatalf("client %d: %v, %v", i, res.delErr, res.putErr)
				}
				del, put := res.del.status, res.put.status
				_, err := rd.Lookup(c.id)

				switch {
				case del == http.StatusNoContent:
					deleted++
					if !errors.Is(err, clientdb.ErrDeleted) {
						t.Errorf("client %d: Lookup after 204: %v, want ErrDeleted", i, err)
					}
					if put != http.StatusOK && put != http.StatusUnauthorized {
						t.Errorf("client %d: PUT %d %s", i, put, res.put.body)
					}
					if tc.rotate && put == http.StatusOK {
						t.Errorf("client %d: update and delete both succeeded "+
							"with one token that rotates", i)
					}
					itAssertUnauthorized(t, s.manage(t, http.MethodGet, c.id, c.token, ""))
				case tc.rotate && del == http.StatusUnauthorized &&
					put == http.StatusOK:
					// The update rotated the token first: the client lives,
					// as the update left it.
					if err != nil {
						t.Errorf("client %d: Lookup: %v, want the updated client", i, err)
					} else if got := s.storedMetadata(t, c.id); !reflect.DeepEqual(got,
						itMetadata(res.put.obj)) {
						t.Errorf("client %d: stored %v, want %v", i, got,
							itMetadata(res.put.obj))
					}
				default:
					t.Errorf("client %d: DELETE %d %s, PUT %d %s", i, del,
						res.del.body, put, res.put.body)
				}
			}
			if !tc.rotate && deleted != clients {
				t.Errorf("%d of %d clients deleted, want all", deleted, clients)
			}
			if got := s.count(t); got != clients-deleted {
				t.Errorf("store holds %d clients, want %d", got, clients-deleted)
			}
			t.Logf("%d of %d deletes won", deleted, clients)
		})
	}
}

func TestIntegrationManageTombstoneTTL(t *testing.T) {
	s := startDCR(t, "tombstone_ttl 1s")
	rd := s.reader(t)
	c := s.registerManaged(t, itValidBody)
	keep := s.registerManaged(t, itValidBody)

	if r := s.manage(t, http.MethodDelete, c.id, c.token, ""); r.status != 204 {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}
	if _, err := rd.Lookup(c.id); !errors.Is(err, clientdb.ErrDeleted) {
		t.Fatalf("Lookup right after the delete: %v, want ErrDeleted", err)
	}

	// A hang check, not a timing assertion: the sweeper runs every
	// second with this TTL.
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := rd.Lookup(c.id)
		if errors.Is(err, clientdb.ErrNotFound) {
			break
		}
		if !errors.Is(err, clientdb.ErrDeleted) {
			t.Fatalf("Lookup: %v, want ErrDeleted or ErrNotFound", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the tombstone was not swept within 15 s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := rd.Tombstone(c.id); !errors.Is(err, clientdb.ErrNotFound) {
		t.Errorf("Tombstone after the sweep: %v, want ErrNotFound", err)
	}

	// The sweep left live clients alone, and the swept ID stays dead.
	itAssertOK(t, s.manage(t, http.MethodGet, keep.id, keep.token, ""), keep.id)
	itAssertUnauthorized(t, s.manage(t, http.MethodGet, c.id, c.token, ""))
	if got := s.count(t); got != 1 {
		t.Errorf("store holds %d clients, want 1", got)
	}
}

func TestIntegrationManageReload(t *testing.T) {
	s := startDCR(t)
	c := s.registerManaged(t, itFullBody)

	// Another policy on the same store: the token still opens the client.
	s.load(t, "scopes openid profile email", "default_scope openid", "rotate_token off")
	got := itAssertOK(t, s.manage(t, http.MethodGet, c.id, c.token, ""), c.id)
	if !reflect.DeepEqual(itMetadata(got), itMetadata(c.resp)) {
		t.Errorf("metadata after reload\n%v\nat registration\n%v",
			itMetadata(got), itMetadata(c.resp))
	}

	// An update goes through the new policy.
	got = itAssertOK(t, s.manage(t, http.MethodPut, c.id, c.token, itValidBody), c.id)
	if got["scope"] != "openid" {
		t.Errorf("scope %v after an update under the new policy, want openid", got["scope"])
	}
	if got["registration_access_token"] != c.token {
		t.Error("token rotated with rotate_token off")
	}

	s.load(t, "require_https off")
	if r := s.manage(t, http.MethodDelete, c.id, c.token, ""); r.status != 204 {
		t.Fatalf("DELETE after reload: %d %s", r.status, r.body)
	}
	itAssertUnauthorized(t, s.manage(t, http.MethodGet, c.id, c.token, ""))
	if _, err := s.reader(t).Lookup(c.id); !errors.Is(err, clientdb.ErrDeleted) {
		t.Errorf("Lookup: %v, want ErrDeleted", err)
	}
}

func TestIntegrationManageLogging(t *testing.T) {
	s := startDCR(t, "rotate_secret on")
	c := s.registerManaged(t, itValidBody)
	firstToken, firstSecret := c.token, c.secret

	itAssertOK(t, s.manage(t, http.MethodGet, c.id, c.token, ""), c.id)
	body := `{"redirect_uris":["https://upd-marker-5e2b.example.com/cb"],` +
		`"software_id":"sw-marker-91c4","client_secret":"` + c.secret + `"}`
	got := itAssertOK(t, s.manage(t, http.MethodPut, c.id, c.token, body), c.id)
	c.token = itString(t, got, "registration_access_token")
	c.secret = itString(t, got, "client_secret")
	itAssertUnauthorized(t, s.manage(t, http.MethodGet, c.id, firstToken, ""))
	if r := s.manage(t, http.MethodDelete, c.id, c.token, ""); r.status != 204 {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}

	for _, tc := range []struct {
		msg  string
		want map[string]any
	}{
		{"client read", nil},
		{"client updated", map[string]any{"token_rotated": true, "secret_rotated": true}},
		{"client deleted", nil},
	} {
		t.Run(tc.msg, func(t *testing.T) {
			entries := s.logEntries(t, tc.msg, 1)
			if len(entries) != 1 {
				t.Fatalf("%d %q lines, want 1", len(entries), tc.msg)
			}
			want := map[string]any{
				"logger":    "http.handlers.dcr",
				"client_id": c.id,
				"client_ip": "127.0.0.1",
			}
			for k, v := range tc.want {
				want[k] = v
			}
			for k, v := range want {
				if !reflect.DeepEqual(entries[0][k], v) {
					t.Errorf("%s = %#v, want %#v", k, entries[0][k], v)
				}
			}
		})
	}

	// A refusal is logged, but not with the client ID the prober chose.
	refused := s.logEntries(t, "client management refused", 1)
	if len(refused) != 1 {
		t.Fatalf("%d refusal lines, want 1", len(refused))
	}
	if refused[0]["error"] != "invalid_token" || refused[0]["client_ip"] != "127.0.0.1" {
		t.Errorf("refusal logged as %v", refused[0])
	}
	if v, ok := refused[0]["client_id"]; ok {
		t.Errorf("refusal logged client_id %v", v)
	}

	raw, err := os.ReadFile(s.logFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, leak := range []string{
		firstToken, c.token, firstSecret, c.secret,
		clientdb.HashSecret(firstToken), clientdb.HashSecret(c.token),
		clientdb.HashSecret(firstSecret), clientdb.HashSecret(c.secret),
		"Bearer", "upd-marker-5e2b", "sw-marker-91c4",
	} {
		if strings.Contains(string(raw), leak) {
			t.Errorf("log file contains %.20q", leak)
		}
	}
}
