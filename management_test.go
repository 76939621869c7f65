package dcr

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-dcr/caddy-dcr/clientdb"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// mgEpoch is the fake clock's start: a fixed time, so that issued
// timestamps can be compared exactly.
var mgEpoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// mgClock is a clock the test moves by hand. The sweeper reads it from
// its own goroutine, hence the lock.
type mgClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *mgClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *mgClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// mgHandler returns a handler set up as Provision leaves an empty config,
// with its own store in a temporary directory, a fake clock and a logger
// whose entries the test can read. change, if not nil, adjusts it
// afterwards. No sweeper runs.
func mgHandler(t testing.TB, change func(*Handler)) (
	*Handler, *mgClock, *observer.ObservedLogs) {
	t.Helper()
	store, key, err := acquireStore(filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatalf("acquireStore: %v", err)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	clock := &mgClock{t: mgEpoch}
	h := &Handler{
		Endpoint:     defaultEndpoint,
		MaxBody:      defaultMaxBody,
		Management:   orTrue(nil),
		RotateToken:  orTrue(nil),
		TombstoneTTL: caddy.Duration(defaultTombstoneTTL),
		policy:       defaultPolicy(),
		logger:       zap.New(core),
		now:          clock.now,
		store:        store,
		storeKey:     key,
		stop:         make(chan struct{}),
		Discovery:    orTrue(nil),
		identity:     &Enforce{},
		usage:        &store.usage,
		// Background work stays off; tests that want it start it.
		background: doneOnce(),
	}
	h.identity.provision()
	f, err := (*FetchConfig)(nil).newFetcher()
	if err != nil {
		t.Fatalf("newFetcher: %v", err)
	}
	h.fetcher, h.assertions = f, newAssertionChecker(f)
	// Cleanup is idempotent, so a test may call it first.
	t.Cleanup(func() {
		if err := h.Cleanup(); err != nil {
			t.Errorf("Cleanup: %v", err)
		}
	})
	if change != nil {
		change(h)
	}
	return h, clock, logs
}

// doneOnce returns a sync.Once that has already run.
func doneOnce() *sync.Once {
	o := new(sync.Once)
	o.Do(func() {})
	return o
}

// mgReq builds a request; auth is the whole Authorization header, and a
// body is sent as application/json.
func mgReq(method, target, auth, body string) *http.Request {
	var r *http.Request
	if body == "" {
		r = httptest.NewRequest(method, target, nil)
	} else {
		r = httptest.NewRequest(method, target, strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
	}
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	return r
}

// mgServe runs r through h.ServeHTTP and reports whether the next handler
// was called.
func mgServe(t *testing.T, h *Handler, r *http.Request) (
	*httptest.ResponseRecorder, bool) {
	t.Helper()
	called := false
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		called = true
		w.WriteHeader(http.StatusTeapot)
		return nil
	})
	w := httptest.NewRecorder()
	if err := h.ServeHTTP(w, r, next); err != nil {
		t.Fatalf("ServeHTTP(%s %s): %v", r.Method, r.URL, err)
	}
	return w, called
}

// mgJSON decodes a JSON object response.
func mgJSON(t *testing.T, w *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
		t.Fatalf("response %d %q is not a JSON object: %v",
			w.Code, w.Body.Bytes(), err)
	}
	return v
}

// mgRegBody is a registration every default policy accepts; it gets a
// secret.
const mgRegBody = `{"redirect_uris":["https://app.example/cb"],` +
	`"client_name":"Demo"}`

// mgClient is what a registration returned.
type mgClient struct {
	id, secret, token, uri string
}

func (c mgClient) bearer() string { return "Bearer " + c.token }

// mgRegister registers a client through ServeHTTP.
func mgRegister(t *testing.T, h *Handler, body string) mgClient {
	t.Helper()
	w, _ := mgServe(t, h, mgReq(http.MethodPost, "/register", "", body))
	if w.Code != http.StatusCreated {
		t.Fatalf("register: %d %s", w.Code, w.Body.Bytes())
	}
	v := mgJSON(t, w)
	c := mgClient{}
	c.id, _ = v["client_id"].(string)
	c.secret, _ = v["client_secret"].(string)
	c.token, _ = v["registration_access_token"].(string)
	c.uri, _ = v["registration_client_uri"].(string)
	if c.id == "" {
		t.Fatalf("register: no client_id in %s", w.Body.Bytes())
	}
	return c
}

// mgStored returns the stored client, failing the test if it is not live.
func mgStored(t *testing.T, h *Handler, id string) *clientdb.Client {
	t.Helper()
	c, err := h.store.Client(id)
	if err != nil {
		t.Fatalf("store.Client(%s): %v", id, err)
	}
	return c
}

// mgUnauthorized checks the one answer every failed authentication gets
// and returns its body, which must be the same for all of them.
func mgUnauthorized(t *testing.T, what string,
	w *httptest.ResponseRecorder) string {
	t.Helper()
	if w.Code != http.StatusUnauthorized {
		t.Errorf("%s: status %d %s, want 401", what, w.Code, w.Body.Bytes())
	}
	if got := w.Header().Get("WWW-Authenticate"); got != `Bearer error="invalid_token"` {
		t.Errorf("%s: WWW-Authenticate %q", what, got)
	}
	if got := w.Header().Get("Content-Type"); got != "application/json" {
		t.Errorf("%s: Content-Type %q", what, got)
	}
	if got := w.Header().Get("Cache-Control"); got != "no-store" {
		t.Errorf("%s: Cache-Control %q", what, got)
	}
	return w.Body.String()
}

// mgNoSecretsLogged fails the test if any log entry carries one of the
// given values, in its message or any field.
func mgNoSecretsLogged(t *testing.T, logs *observer.ObservedLogs,
	secrets ...string) {
	t.Helper()
	for _, e := range logs.All() {
		line, _ := json.Marshal(e.ContextMap())
		for _, s := range secrets {
			if s == "" {
				continue
			}
			if strings.Contains(e.Message, s) || bytes.Contains(line, []byte(s)) {
				t.Errorf("log entry %q %s carries a secret or token",
					e.Message, line)
			}
		}
	}
}

// TestManageCycle walks one client through RFC 7592: register, read,
// update, delete, and a read after the delete.
func TestManageCycle(t *testing.T) {
	h, clock, logs := mgHandler(t, func(h *Handler) {
		h.policy.secretLifetime = 24 * time.Hour
	})
	c := mgRegister(t, h, mgRegBody)
	if c.secret == "" || c.token == "" {
		t.Fatalf("registration without secret or token: %+v", c)
	}
	if want := "http://example.com/register/" + c.id; c.uri != want {
		t.Errorf("registration_client_uri = %q, want %q", c.uri, want)
	}
	if c.token == c.secret {
		t.Error("token and secret are the same value")
	}

	// Read: the client information, without any secret or token.
	w, _ := mgServe(t, h, mgReq(http.MethodGet, c.uri, c.bearer(), ""))
	if w.Code != http.StatusOK {
		t.Fatalf("GET: %d %s", w.Code, w.Body.Bytes())
	}
	if got := w.Header().Get("Cache-Control"); got != "no-store" {
		t.Errorf("GET: Cache-Control %q", got)
	}
	v := mgJSON(t, w)
	wantExpiry := float64(mgEpoch.Add(24 * time.Hour).Unix())
	for k, want := range map[string]any{
		"client_id":                  c.id,
		"client_id_issued_at":        float64(mgEpoch.Unix()),
		"client_secret_expires_at":   wantExpiry,
		"registration_client_uri":    c.uri,
		"client_name":                "Demo",
		"token_endpoint_auth_method": authClientSecretBasic,
	} {
		if !reflect.DeepEqual(v[k], want) {
			t.Errorf("GET: %s = %v, want %v", k, v[k], want)
		}
	}
	for _, k := range []string{
		"client_secret", "client_secret_hash", "registration_access_token_hash",
	} {
		if _, ok := v[k]; ok {
			t.Errorf("GET: response carries %s", k)
		}
	}

	// A read never rotates: the token still opens the client.
	w, _ = mgServe(t, h, mgReq(http.MethodGet, c.uri, c.bearer(), ""))
	if w.Code != http.StatusOK {
		t.Fatalf("second GET: %d %s", w.Code, w.Body.Bytes())
	}

	// Update: the full metadata, repeating client_id and client_secret.
	clock.advance(time.Hour)
	put := `{"client_id":"` + c.id + `","client_secret":"` + c.secret + `",` +
		`"redirect_uris":["https://app.example/cb2"],"client_name":"Renamed"}`
	w, _ = mgServe(t, h, mgReq(http.MethodPut, c.uri, c.bearer(), put))
	if w.Code != http.StatusOK {
		t.Fatalf("PUT: %d %s", w.Code, w.Body.Bytes())
	}
	v = mgJSON(t, w)
	newToken, _ := v["registration_access_token"].(string)
	if newToken == "" || newToken == c.token {
		t.Errorf("PUT: registration_access_token %q, want a new one", newToken)
	}
	if _, ok := v["client_secret"]; ok {
		t.Error("PUT: a secret was returned with rotate_secret off")
	}
	if v["client_secret_expires_at"] != wantExpiry {
		t.Errorf("PUT: client_secret_expires_at = %v, want %v unchanged",
			v["client_secret_expires_at"], wantExpiry)
	}
	if v["client_name"] != "Renamed" || v["registration_client_uri"] != c.uri {
		t.Errorf("PUT: response %s", w.Body.Bytes())
	}
	if got := v["redirect_uris"]; !reflect.DeepEqual(got, []any{"https://app.example/cb2"}) {
		t.Errorf("PUT: redirect_uris = %v", got)
	}
	stored := mgStored(t, h, c.id)
	if stored.UpdatedAt != mgEpoch.Add(time.Hour).Unix() {
		t.Errorf("stored UpdatedAt = %d", stored.UpdatedAt)
	}
	if !stored.VerifySecret(c.secret, clock.now()) {
		t.Error("the secret stopped working after an update without rotation")
	}

	// The old token stopped working; the new one reads the update.
	var bodies []string
	w, _ = mgServe(t, h, mgReq(http.MethodGet, c.uri, c.bearer(), ""))
	bodies = append(bodies, mgUnauthorized(t, "GET with the replaced token", w))
	w, _ = mgServe(t, h, mgReq(http.MethodGet, c.uri, "Bearer "+newToken, ""))
	if w.Code != http.StatusOK || mgJSON(t, w)["client_name"] != "Renamed" {
		t.Fatalf("GET with the new token: %d %s", w.Code, w.Body.Bytes())
	}

	// Delete, then nothing opens the client any more.
	w, _ = mgServe(t, h, mgReq(http.MethodDelete, c.uri, "Bearer "+newToken, ""))
	if w.Code != http.StatusNoContent || w.Body.Len() != 0 {
		t.Fatalf("DELETE: %d %q", w.Code, w.Body.Bytes())
	}
	for _, m := range []string{http.MethodGet, http.MethodDelete} {
		w, _ = mgServe(t, h, mgReq(m, c.uri, "Bearer "+newToken, ""))
		bodies = append(bodies, mgUnauthorized(t, m+" after DELETE", w))
	}
	w, _ = mgServe(t, h, mgReq(http.MethodPut, c.uri, "Bearer "+newToken, put))
	bodies = append(bodies, mgUnauthorized(t, "PUT after DELETE", w))

	if _, err := h.store.Client(c.id); !errors.Is(err, clientdb.ErrDeleted) {
		t.Errorf("store.Client after DELETE: %v, want ErrDeleted", err)
	}
	for _, b := range bodies[1:] {
		if b != bodies[0] {
			t.Errorf("401 bodies differ: %q and %q", bodies[0], b)
		}
	}
	mgNoSecretsLogged(t, logs, c.secret, c.token, newToken)
}

// TestManageUnauthorized checks that every way a token can fail gets the
// same answer, so that nobody can probe which client IDs exist, and that a
// refused request changes nothing.
func TestManageUnauthorized(t *testing.T) {
	h, _, logs := mgHandler(t, nil)
	a := mgRegister(t, h, mgRegBody)
	b := mgRegister(t, h, mgRegBody)
	gone := mgRegister(t, h, mgRegBody)
	w, _ := mgServe(t, h, mgReq(http.MethodDelete, gone.uri, gone.bearer(), ""))
	if w.Code != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", w.Code, w.Body.Bytes())
	}
	bBefore := mgStored(t, h, b.id)

	unknown := "/register/" + strings.Repeat("A", 22)
	long := "Bearer " + strings.Repeat("t", maxStringLength+1)
	put := `{"redirect_uris":["https://evil.example/cb"]}`
	cases := []struct {
		name, method, target, auth, body string
	}{
		{"no header", http.MethodGet, a.uri, "", ""},
		{"empty bearer", http.MethodGet, a.uri, "Bearer ", ""},
		{"wrong token", http.MethodGet, a.uri, "Bearer wrong", ""},
		{"basic scheme", http.MethodGet, a.uri, "Basic " + a.token, ""},
		{"token without scheme", http.MethodGet, a.uri, a.token, ""},
		{"over-long token", http.MethodGet, a.uri, long, ""},
		{"token of another client", http.MethodGet, b.uri, a.bearer(), ""},
		{"unknown client", http.MethodGet, unknown, a.bearer(), ""},
		{"deleted client", http.MethodGet, gone.uri, gone.bearer(), ""},
		{"deleted client, another token", http.MethodGet, gone.uri, a.bearer(), ""},
		{"PUT with another client's token", http.MethodPut, b.uri, a.bearer(), put},
		{"PUT without token", http.MethodPut, b.uri, "", put},
		{"PUT unknown client", http.MethodPut, unknown, a.bearer(), put},
		{"DELETE with another client's token", http.MethodDelete, b.uri, a.bearer(), ""},
		{"DELETE unknown client", http.MethodDelete, unknown, a.bearer(), ""},
		{"DELETE deleted client", http.MethodDelete, gone.uri, gone.bearer(), ""},
	}
	first := ""
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(logs.All())
			w, next := mgServe(t, h, mgReq(tc.method, tc.target, tc.auth, tc.body))
			if next {
				t.Fatal("passed to the next handler")
			}
			body := mgUnauthorized(t, tc.name, w)
			if first == "" {
				first = body
			} else if body != first {
				t.Errorf("body %q differs from %q", body, first)
			}

			// A probe must not be able to write IDs of its choosing
			// into the log.
			for _, e := range logs.All()[before:] {
				if _, ok := e.ContextMap()["client_id"]; ok {
					t.Errorf("log entry %q names a client_id", e.Message)
				}
			}
		})
	}

	if got := mgStored(t, h, b.id); !reflect.DeepEqual(got, bBefore) {
		t.Errorf("client changed by refused requests:\n%+v\nwas\n%+v", got, bBefore)
	}
	mgStored(t, h, a.id)
	mgNoSecretsLogged(t, logs, a.token, b.token, gone.token, a.secret, b.secret)
}

// TestManageUpdateRefused checks that a refused update answers the right
// error and changes nothing, not even the token.
func TestManageUpdateRefused(t *testing.T) {
	h, _, _ := mgHandler(t, func(h *Handler) {
		h.RotateSecret = true
		h.MaxBody = 512
	})
	c := mgRegister(t, h, mgRegBody)
	before := mgStored(t, h, c.id)

	valid := `"redirect_uris":["https://app.example/cb"]`
	cases := []struct {
		name, contentType, body string
		status                  int
		code                    string
		want                    string // substring of error_description
	}{
		{
			"registration_access_token", "",
			`{` + valid + `,"registration_access_token":"` + c.token + `"}`,
			400, codeInvalidRequest, "registration_access_token",
		},
		{
			"registration_client_uri", "",
			`{` + valid + `,"registration_client_uri":"` + c.uri + `"}`,
			400, codeInvalidRequest, "registration_client_uri",
		},
		{
			"client_secret_expires_at", "",
			`{` + valid + `,"client_secret_expires_at":0}`,
			400, codeInvalidRequest, "client_secret_expires_at",
		},
		{
			"client_id_issued_at", "",
			`{` + valid + `,"client_id_issued_at":1}`,
			400, codeInvalidRequest, "client_id_issued_at",
		},
		{
			"other client_id", "",
			`{` + valid + `,"client_id":"someone-else"}`,
			400, codeInvalidRequest, "client_id",
		},
		{
			"wrong client_secret", "",
			`{` + valid + `,"client_secret":"guess"}`,
			400, codeInvalidRequest, "client_secret",
		},
		{
			"policy refuses grant", "",
			`{` + valid + `,"grant_types":["password"]}`,
			400, codeInvalidClientMetadata, "password",
		},
		{
			"policy refuses redirect", "",
			`{"redirect_uris":["http://app.example/cb"]}`,
			400, codeInvalidRedirectURI, "",
		},
		{
			"not JSON", "", `{`, 400, codeInvalidClientMetadata, "JSON",
		},
		{
			"wrong content type", "text/plain", `{` + valid + `}`,
			415, codeInvalidRequest, "Content-Type",
		},
		{
			"body too large", "",
			`{` + valid + `,"x":"` + strings.Repeat("x", 600) + `"}`,
			413, codeInvalidRequest, "larger",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := mgReq(http.MethodPut, c.uri, c.bearer(), tc.body)
			if tc.contentType != "" {
				r.Header.Set("Content-Type", tc.contentType)
			}
			w, _ := mgServe(t, h, r)
			if w.Code != tc.status {
				t.Fatalf("status %d %s, want %d", w.Code, w.Body.Bytes(), tc.status)
			}
			v := mgJSON(t, w)
			desc, _ := v["error_description"].(string)
			if v["error"] != tc.code || !strings.Contains(desc, tc.want) {
				t.Errorf("error %v %q, want %s naming %q",
					v["error"], desc, tc.code, tc.want)
			}
			if got := mgStored(t, h, c.id); !reflect.DeepEqual(got, before) {
				t.Errorf("client changed:\n%+v\nwas\n%+v", got, before)
			}
		})
	}

	// The token survived every refusal.
	w, _ := mgServe(t, h, mgReq(http.MethodGet, c.uri, c.bearer(), ""))
	if w.Code != http.StatusOK {
		t.Errorf("GET after refused updates: %d %s", w.Code, w.Body.Bytes())
	}
}

// TestManageRotation covers what a successful update issues under each
// rotation setting, and which old values keep working.
func TestManageRotation(t *testing.T) {
	cases := []struct {
		name         string
		rotateToken  bool
		rotateSecret bool
		overlap      time.Duration
		// After the update, at the update's time and once the overlap
		// has passed:
		wantNewToken  bool
		wantNewSecret bool
		oldSecretNow  bool
		oldSecretLate bool
	}{
		{"defaults", true, false, 0, true, false, true, true},
		{"no token rotation", false, false, 0, false, false, true, true},
		{"secret rotation", true, true, 0, true, true, false, false},
		{"secret rotation with overlap", true, true, time.Hour, true, true, true, false},
		{"only secret rotation", false, true, time.Hour, false, true, true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, clock, logs := mgHandler(t, func(h *Handler) {
				*h.RotateToken = tc.rotateToken
				h.RotateSecret = tc.rotateSecret
				h.SecretOverlap = caddy.Duration(tc.overlap)
				h.policy.secretLifetime = 30 * 24 * time.Hour
			})
			c := mgRegister(t, h, mgRegBody)
			clock.advance(time.Minute)

			w, _ := mgServe(t, h, mgReq(http.MethodPut, c.uri, c.bearer(), mgRegBody))
			if w.Code != http.StatusOK {
				t.Fatalf("PUT: %d %s", w.Code, w.Body.Bytes())
			}
			v := mgJSON(t, w)
			token, _ := v["registration_access_token"].(string)
			secret, _ := v["client_secret"].(string)

			// Without rotation the answer repeats the presented token.
			if (token != c.token) != tc.wantNewToken || token == "" {
				t.Errorf("registration_access_token %q, want new: %v",
					token, tc.wantNewToken)
			}
			if (secret != "") != tc.wantNewSecret || secret == c.secret {
				t.Errorf("client_secret %q, want new: %v",
					secret, tc.wantNewSecret)
			}
			wantExp := mgEpoch.Add(30 * 24 * time.Hour).Unix()
			if tc.wantNewSecret {
				wantExp = clock.now().Add(30 * 24 * time.Hour).Unix()
			}
			if v["client_secret_expires_at"] != float64(wantExp) {
				t.Errorf("client_secret_expires_at = %v, want %d",
					v["client_secret_expires_at"], wantExp)
			}

			// The old token works exactly when none was issued.
			w, _ = mgServe(t, h, mgReq(http.MethodGet, c.uri, c.bearer(), ""))
			if oldWorks := w.Code == http.StatusOK; oldWorks == tc.wantNewToken {
				t.Errorf("GET with the old token: %d", w.Code)
			}
			if token != "" {
				r := mgReq(http.MethodGet, c.uri, "Bearer "+token, "")
				w, _ = mgServe(t, h, r)
				if w.Code != http.StatusOK {
					t.Errorf("GET with the new token: %d", w.Code)
				}
			}

			stored := mgStored(t, h, c.id)
			if secret != "" && !stored.VerifySecret(secret, clock.now()) {
				t.Error("the new secret does not verify")
			}
			now := clock.now()
			if got := stored.VerifySecret(c.secret, now); got != tc.oldSecretNow {
				t.Errorf("old secret valid right after the update: %v, want %v",
					got, tc.oldSecretNow)
			}
			late := now.Add(tc.overlap + time.Second)
			if got := stored.VerifySecret(c.secret, late); got != tc.oldSecretLate {
				t.Errorf("old secret valid after the overlap: %v, want %v",
					got, tc.oldSecretLate)
			}
			mgNoSecretsLogged(t, logs, c.secret, c.token, secret, token)
		})
	}
}

// TestManageSwitchAuthMethod checks that an update to "none" drops the
// secret and an update back issues a new one.
func TestManageSwitchAuthMethod(t *testing.T) {
	h, _, _ := mgHandler(t, nil)
	c := mgRegister(t, h, mgRegBody)

	public := `{"redirect_uris":["https://app.example/cb"],` +
		`"token_endpoint_auth_method":"none"}`
	w, _ := mgServe(t, h, mgReq(http.MethodPut, c.uri, c.bearer(), public))
	if w.Code != http.StatusOK {
		t.Fatalf("PUT to none: %d %s", w.Code, w.Body.Bytes())
	}
	v := mgJSON(t, w)
	for _, k := range []string{"client_secret", "client_secret_expires_at"} {
		if _, ok := v[k]; ok {
			t.Errorf("PUT to none: response carries %s", k)
		}
	}
	if s := mgStored(t, h, c.id); s.HasSecret() || s.VerifySecret(c.secret, mgEpoch) {
		t.Errorf("secret kept after a switch to none: %+v", s)
	}

	token, _ := v["registration_access_token"].(string)
	w, _ = mgServe(t, h, mgReq(http.MethodPut, c.uri, "Bearer "+token, mgRegBody))
	if w.Code != http.StatusOK {
		t.Fatalf("PUT back: %d %s", w.Code, w.Body.Bytes())
	}
	v = mgJSON(t, w)
	secret, _ := v["client_secret"].(string)
	if secret == "" || secret == c.secret {
		t.Errorf("PUT back: client_secret %q, want a new one", secret)
	}
	if v["client_secret_expires_at"] != 0.0 {
		t.Errorf("PUT back: client_secret_expires_at = %v", v["client_secret_expires_at"])
	}
	if !mgStored(t, h, c.id).VerifySecret(secret, mgEpoch) {
		t.Error("the issued secret does not verify")
	}
}

// mgBreakStore replaces the store's file with one bbolt refuses to open,
// standing in for a broken disk.
func mgBreakStore(t *testing.T, h *Handler) {
	t.Helper()
	junk := bytes.Repeat([]byte{0xab}, 1<<14)
	if err := os.WriteFile(h.store.db.(*clientdb.Writer).Path(), junk, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestManageStoreUnavailable checks that a store failure is a 503 the
// client may retry, not a 401 that would make it give up its client.
func TestManageStoreUnavailable(t *testing.T) {
	h, _, logs := mgHandler(t, nil)
	c := mgRegister(t, h, mgRegBody)

	mgBreakStore(t, h)
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
		t.Run(m, func(t *testing.T) {
			w, _ := mgServe(t, h, mgReq(m, c.uri, c.bearer(), mgRegBody))
			if w.Code != http.StatusServiceUnavailable {
				t.Fatalf("status %d %s, want 503", w.Code, w.Body.Bytes())
			}
			if got := w.Header().Get("Retry-After"); got != "1" {
				t.Errorf("Retry-After %q", got)
			}
			if got := mgJSON(t, w)["error"]; got != codeServerError {
				t.Errorf("error %v", got)
			}
		})
	}
	if n := logs.FilterLevelExact(zapcore.ErrorLevel).Len(); n != 3 {
		t.Errorf("%d error log entries, want 3", n)
	}
}

// TestManageStoreFailureLogsNoProbedID checks that a store failure does
// not log the client ID from the request path: no token has opened that
// client, and a probe must not write IDs of its choosing into the log.
func TestManageStoreFailureLogsNoProbedID(t *testing.T) {
	h, _, logs := mgHandler(t, nil)
	mgBreakStore(t, h)
	// An ID of the issued shape, so that the store is asked.
	r := mgReq(http.MethodGet, "/register/AAAAAAAAAAAAAAAAAAAAAA", "Bearer x", "")
	w, _ := mgServe(t, h, r)
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d %s, want 503", w.Code, w.Body.Bytes())
	}
	for _, e := range logs.All() {
		if id, ok := e.ContextMap()["client_id"]; ok {
			t.Errorf("log entry %q names client_id %v", e.Message, id)
		}
	}
}

// TestDispatch checks which requests the handler answers as registration,
// which as client configuration, and which it passes on.
func TestDispatch(t *testing.T) {
	const (
		id  = "/register/abc"
		gpd = "GET, PUT, DELETE"
	)
	cases := []struct {
		name       string
		off        bool // management off
		method     string
		path       string
		body       string
		wantNext   bool
		wantStatus int
		wantAllow  string
	}{
		{"registration", false, "POST", "/register", mgRegBody, false, 201, ""},
		{"registration GET", false, "GET", "/register", "", false, 405, "POST"},
		{"configuration GET", false, "GET", id, "", false, 401, ""},
		{"configuration PUT", false, "PUT", id, mgRegBody, false, 401, ""},
		{"configuration DELETE", false, "DELETE", id, "", false, 401, ""},
		{"configuration POST", false, "POST", id, mgRegBody, false, 405, gpd},
		{"configuration PATCH", false, "PATCH", id, "", false, 405, gpd},
		{"endpoint with slash", false, "GET", "/register/", "", true, 0, ""},
		{"two segments", false, "GET", "/register/a/b", "", true, 0, ""},
		{"trailing slash", false, "GET", id + "/", "", true, 0, ""},
		{"longer name", false, "POST", "/registerx", mgRegBody, true, 0, ""},
		{"longer name with ID", false, "GET", "/registerx/abc", "", true, 0, ""},
		{"root", false, "GET", "/", "", true, 0, ""},
		{"endpoint deeper", false, "POST", "/api/register", mgRegBody, true, 0, ""},
		{"off: registration", true, "POST", "/register", mgRegBody, false, 201, ""},
		{"off: GET", true, "GET", id, "", false, 404, ""},
		{"off: PUT", true, "PUT", id, mgRegBody, false, 404, ""},
		{"off: DELETE", true, "DELETE", id, "", false, 404, ""},
		{"off: PATCH", true, "PATCH", id, "", false, 404, ""},
		{"off: endpoint with slash", true, "GET", "/register/", "", true, 0, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, _, _ := mgHandler(t, func(h *Handler) {
				*h.Management = !tc.off
			})
			w, next := mgServe(t, h, mgReq(tc.method, tc.path, "", tc.body))
			if next != tc.wantNext {
				t.Fatalf("next called: %v, want %v (status %d %s)",
					next, tc.wantNext, w.Code, w.Body.Bytes())
			}
			if tc.wantNext {
				return
			}
			if w.Code != tc.wantStatus {
				t.Fatalf("status %d %s, want %d",
					w.Code, w.Body.Bytes(), tc.wantStatus)
			}
			if got := w.Header().Get("Allow"); got != tc.wantAllow {
				t.Errorf("Allow %q, want %q", got, tc.wantAllow)
			}
			v := mgJSON(t, w)
			if w.Code >= 400 && v["error"] == nil {
				t.Errorf("error response without error member: %s", w.Body.Bytes())
			}
			if w.Code == http.StatusNotFound && v["error"] != codeInvalidRequest {
				t.Errorf("404 error %v", v["error"])
			}
			_, hasToken := v["registration_access_token"]
			_, hasURI := v["registration_client_uri"]
			if w.Code == http.StatusCreated && (hasToken == tc.off || hasURI == tc.off) {
				t.Errorf("management %v: token %v, URI %v in %s",
					!tc.off, hasToken, hasURI, w.Body.Bytes())
			}
		})
	}
}

// TestManageOffStoresNoToken checks that with management off no token is
// stored, so that turning it on later does not open old clients.
func TestManageOffStoresNoToken(t *testing.T) {
	h, _, _ := mgHandler(t, func(h *Handler) { *h.Management = false })
	c := mgRegister(t, h, mgRegBody)
	if c.token != "" || c.uri != "" {
		t.Errorf("management off issued %+v", c)
	}
	if s := mgStored(t, h, c.id); s.RegistrationTokenHash != "" {
		t.Errorf("stored token hash %q", s.RegistrationTokenHash)
	}

	*h.Management = true
	w, _ := mgServe(t, h, mgReq(http.MethodGet, "/register/"+c.id, "Bearer x", ""))
	mgUnauthorized(t, "GET after turning management on", w)
}

// TestManageClientURI covers how registration_client_uri is formed.
func TestManageClientURI(t *testing.T) {
	cases := []struct {
		name     string
		base     string
		endpoint string
		target   string
		tls      bool
		id       string
		want     string
	}{
		{
			"request host", "", "/register", "http://auth.example:8080/register",
			false, "abc", "http://auth.example:8080/register/abc",
		},
		{
			"request over TLS", "", "/register", "https://auth.example/register",
			true, "abc", "https://auth.example/register/abc",
		},
		{
			"base URL", "https://idp.example", "/register",
			"http://internal:9000/register", false, "abc",
			"https://idp.example/register/abc",
		},
		{
			"base URL with path prefix", "https://idp.example/auth", "/oauth/register",
			"http://internal:9000/oauth/register", false, "abc",
			"https://idp.example/auth/oauth/register/abc",
		},
		{
			"base URL wins over TLS", "http://idp.example", "/register",
			"https://auth.example/register", true, "abc",
			"http://idp.example/register/abc",
		},
		{
			"ID escaped", "", "/register", "http://a.example/register",
			false, "a b/c?", "http://a.example/register/a%20b%2Fc%3F",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := &Handler{Endpoint: tc.endpoint, BaseURL: tc.base}
			r := httptest.NewRequest(http.MethodPost, tc.target, nil)
			r.TLS = nil
			if tc.tls {
				r.TLS = &tls.ConnectionState{}
			}
			if got := h.clientURI(r, tc.id); got != tc.want {
				t.Errorf("clientURI = %q, want %q", got, tc.want)
			}
		})
	}

	// Through a registration, the URI leads back to the handler.
	h, _, _ := mgHandler(t, func(h *Handler) {
		h.BaseURL = "https://idp.example/auth"
	})
	c := mgRegister(t, h, mgRegBody)
	if want := "https://idp.example/auth/register/" + c.id; c.uri != want {
		t.Errorf("registration_client_uri = %q, want %q", c.uri, want)
	}
	h2, _, _ := mgHandler(t, nil)
	r := mgReq(http.MethodPost, "https://auth.example/register", "", mgRegBody)
	w, _ := mgServe(t, h2, r)
	if got := mgJSON(t, w)["registration_client_uri"]; got == nil ||
		!strings.HasPrefix(got.(string), "https://auth.example/register/") {
		t.Errorf("registration over TLS: registration_client_uri %v", got)
	}
}

// TestBearerToken covers the Authorization headers of RFC 6750 section
// 2.1 that open a client, and those that must not.
func TestBearerToken(t *testing.T) {
	max := strings.Repeat("t", maxStringLength)
	cases := []struct {
		name   string
		header []string // nil: no header
		want   string
		ok     bool
	}{
		{"bearer", []string{"Bearer abc-_.~+/="}, "abc-_.~+/=", true},
		{"lower case scheme", []string{"bearer abc"}, "abc", true},
		{"upper case scheme", []string{"BEARER abc"}, "abc", true},
		{"extra spaces", []string{"Bearer    abc"}, "abc", true},
		{"longest token", []string{"Bearer " + max}, max, true},
		{"no header", nil, "", false},
		{"empty header", []string{""}, "", false},
		{"scheme only", []string{"Bearer"}, "", false},
		{"scheme and space", []string{"Bearer "}, "", false},
		{"scheme and spaces", []string{"Bearer   "}, "", false},
		{"no space", []string{"Bearerabc"}, "", false},
		{"tab separator", []string{"Bearer\tabc"}, "", false},
		{"basic", []string{"Basic YTpi"}, "", false},
		{"token alone", []string{"abc"}, "", false},
		{"space inside token", []string{"Bearer abc def"}, "", false},
		{"trailing space", []string{"Bearer abc "}, "", false},
		{"over-long", []string{"Bearer " + max + "t"}, "", false},
		{"non-ASCII", []string{"Bearer tökén"}, "", false},
		{"control character", []string{"Bearer ab\x01c"}, "", false},
		{"DEL", []string{"Bearer ab\x7fc"}, "", false},
		{"first header counts", []string{"Basic x", "Bearer abc"}, "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/register/x", nil)
			for _, v := range tc.header {
				r.Header.Add("Authorization", v)
			}
			got, ok := bearerToken(r)
			if got != tc.want || ok != tc.ok {
				t.Errorf("bearerToken = %q, %v; want %q, %v",
					got, ok, tc.want, tc.ok)
			}
		})
	}
}

// TestApplyUpdate covers how an update replaces a stored client: the
// secret across method switches and rotation, the token, and that the
// stored value passed in is left alone.
func TestApplyUpdate(t *testing.T) {
	now := mgEpoch
	at := func(d time.Duration) int64 { return now.Add(d).Unix() }
	// Secrets are named; the client stores their hashes.
	hash := func(name string) string {
		if name == "" {
			return ""
		}
		return clientdb.HashSecret(name)
	}
	nameOf := func(h string) string {
		for _, name := range []string{"", "old", "prev", "new"} {
			if h == hash(name) {
				return name
			}
		}
		return "unknown hash " + h
	}
	type secrets struct {
		current  string
		expires  int64
		previous string
		prevExp  int64
	}
	cases := []struct {
		name     string
		rotate   bool
		overlap  time.Duration
		lifetime time.Duration
		cur      secrets
		method   string
		token    string // new registration access token; "" keeps it
		issued   bool   // whether the new secret is issued
		want     secrets
	}{
		{
			name:   "to none drops secret and previous secret",
			cur:    secrets{"old", at(time.Hour), "prev", at(time.Minute)},
			method: authNone,
			want:   secrets{},
		},
		{
			name:   "to none with rotation drops everything",
			rotate: true, overlap: time.Hour,
			cur:    secrets{"old", 0, "", 0},
			method: authNone,
			want:   secrets{},
		},
		{
			name:   "to private_key_jwt drops secret",
			cur:    secrets{"old", 0, "", 0},
			method: authPrivateKeyJWT,
			want:   secrets{},
		},
		{
			name:   "from none issues a secret",
			cur:    secrets{},
			method: authClientSecretBasic,
			issued: true,
			want:   secrets{"new", 0, "", 0},
		},
		{
			name:     "from none issues a secret with lifetime",
			lifetime: 24 * time.Hour,
			cur:      secrets{},
			method:   authClientSecretPost,
			issued:   true,
			want:     secrets{"new", at(24 * time.Hour), "", 0},
		},
		{
			name:   "from none with rotation keeps no previous",
			rotate: true, overlap: time.Hour,
			cur:    secrets{},
			method: authClientSecretBasic,
			issued: true,
			want:   secrets{"new", 0, "", 0},
		},
		{
			name:     "rotation off keeps secret and previous",
			lifetime: time.Hour,
			cur:      secrets{"old", at(10 * time.Minute), "prev", at(time.Minute)},
			method:   authClientSecretBasic,
			want:     secrets{"old", at(10 * time.Minute), "prev", at(time.Minute)},
		},
		{
			name:   "rotation off, switch between secret methods",
			cur:    secrets{"old", 0, "", 0},
			method: authClientSecretJWT,
			want:   secrets{"old", 0, "", 0},
		},
		{
			// An update is how a client renews an expired secret,
			// with or without rotation.
			name:     "rotation off renews an expired secret",
			lifetime: time.Hour,
			cur:      secrets{"old", at(-time.Minute), "prev", at(time.Minute)},
			method:   authClientSecretBasic,
			issued:   true,
			want:     secrets{"new", at(time.Hour), "", 0},
		},
		{
			name:     "rotation without overlap",
			rotate:   true,
			lifetime: time.Hour,
			cur:      secrets{"old", at(time.Minute), "prev", at(time.Minute)},
			method:   authClientSecretBasic,
			issued:   true,
			want:     secrets{"new", at(time.Hour), "", 0},
		},
		{
			name:   "overlap for a secret that never expires",
			rotate: true, overlap: time.Hour,
			cur:    secrets{"old", 0, "prev", at(time.Minute)},
			method: authClientSecretBasic,
			issued: true,
			want:   secrets{"new", 0, "old", at(time.Hour)},
		},
		{
			name:   "overlap capped by the old secret's expiry",
			rotate: true, overlap: time.Hour, lifetime: 24 * time.Hour,
			cur:    secrets{"old", at(5 * time.Minute), "", 0},
			method: authClientSecretBasic,
			issued: true,
			want:   secrets{"new", at(24 * time.Hour), "old", at(5 * time.Minute)},
		},
		{
			name:   "overlap shorter than the old secret's life",
			rotate: true, overlap: time.Hour,
			cur:    secrets{"old", at(2 * time.Hour), "", 0},
			method: authClientSecretBasic,
			issued: true,
			want:   secrets{"new", 0, "old", at(time.Hour)},
		},
		{
			name:   "no overlap for an expired secret",
			rotate: true, overlap: time.Hour,
			cur:    secrets{"old", at(-time.Second), "prev", at(time.Minute)},
			method: authClientSecretBasic,
			issued: true,
			want:   secrets{"new", 0, "", 0},
		},
		{
			// A secret is expired from its expiry time on.
			name:   "no overlap for a secret expiring now",
			rotate: true, overlap: time.Hour,
			cur:    secrets{"old", at(0), "", 0},
			method: authClientSecretBasic,
			issued: true,
			want:   secrets{"new", 0, "", 0},
		},
		{
			name:   "token replaced",
			cur:    secrets{"old", 0, "", 0},
			method: authClientSecretBasic,
			token:  "new-token",
			want:   secrets{"old", 0, "", 0},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := &Handler{
				RotateSecret:  tc.rotate,
				SecretOverlap: caddy.Duration(tc.overlap),
				policy:        defaultPolicy(),
			}
			h.policy.secretLifetime = tc.lifetime
			cur := &clientdb.Client{
				ID:                      "cid",
				IssuedAt:                at(-48 * time.Hour),
				SecretHash:              hash(tc.cur.current),
				SecretExpiresAt:         tc.cur.expires,
				PreviousSecretHash:      hash(tc.cur.previous),
				PreviousSecretExpiresAt: tc.cur.prevExp,
				RegistrationTokenHash:   hash("old-token"),
				UpdatedAt:               at(-time.Hour),
				Metadata: clientdb.Metadata{
					TokenEndpointAuthMethod: authClientSecretBasic,
					RedirectURIs:            []string{"https://old.example/cb"},
					ClientName:              "Old",
				},
			}
			snapshot, _ := json.Marshal(cur)
			m := &clientdb.Metadata{
				TokenEndpointAuthMethod: tc.method,
				RedirectURIs:            []string{"https://new.example/cb"},
				GrantTypes:              []string{grantAuthorizationCode},
			}

			next, issued := h.applyUpdate(cur, m, "new", tc.token, now)

			if after, _ := json.Marshal(cur); !bytes.Equal(after, snapshot) {
				t.Errorf("cur modified:\n%s\nwas\n%s", after, snapshot)
			}
			if next == cur {
				t.Fatal("applyUpdate returned cur itself")
			}
			wantIssued := ""
			if tc.issued {
				wantIssued = "new"
			}
			if issued != wantIssued {
				t.Errorf("issued %q, want %q", issued, wantIssued)
			}
			got := secrets{
				current:  nameOf(next.SecretHash),
				expires:  next.SecretExpiresAt,
				previous: nameOf(next.PreviousSecretHash),
				prevExp:  next.PreviousSecretExpiresAt,
			}
			if got != tc.want {
				t.Errorf("secrets = %+v, want %+v", got, tc.want)
			}

			wantToken := hash("old-token")
			if tc.token != "" {
				wantToken = hash(tc.token)
			}
			if next.RegistrationTokenHash != wantToken {
				t.Errorf("token hash %q, want %q",
					next.RegistrationTokenHash, wantToken)
			}
			if next.UpdatedAt != now.Unix() {
				t.Errorf("UpdatedAt = %d, want %d", next.UpdatedAt, now.Unix())
			}
			if next.ID != cur.ID || next.IssuedAt != cur.IssuedAt {
				t.Errorf("ID, IssuedAt = %q, %d; want %q, %d",
					next.ID, next.IssuedAt, cur.ID, cur.IssuedAt)
			}
			if !reflect.DeepEqual(next.Metadata, *m) {
				t.Errorf("metadata = %+v, want %+v", next.Metadata, *m)
			}
		})
	}
}

// TestReadUpdate covers the members RFC 7592 section 2.2 constrains in an
// update request.
func TestReadUpdate(t *testing.T) {
	c := &clientdb.Client{
		ID:                 "cid",
		SecretHash:         clientdb.HashSecret("current"),
		PreviousSecretHash: clientdb.HashSecret("previous"),
	}
	public := &clientdb.Client{ID: "cid"}
	const meta = `"client_name":"Demo"`
	cases := []struct {
		name   string
		client *clientdb.Client // nil: c
		body   string
		status int    // 0: accepted
		code   string // default codeInvalidRequest
		rule   string
		want   string
	}{
		{"metadata only", nil, `{` + meta + `}`, 0, "", "", ""},
		{"matching client_id", nil, `{"client_id":"cid",` + meta + `}`, 0, "", "", ""},
		{"null client_id", nil, `{"client_id":null,` + meta + `}`, 0, "", "", ""},
		{
			"matching client_id and secret", nil,
			`{"client_id":"cid","client_secret":"current",` + meta + `}`,
			0, "", "", "",
		},
		{
			"null client_secret", public,
			`{"client_secret":null,` + meta + `}`, 0, "", "", "",
		},
		{
			"registration_access_token", nil,
			`{"registration_access_token":"t",` + meta + `}`,
			400, "", "update_issued_member", "registration_access_token",
		},
		{
			"registration_client_uri", nil,
			`{` + meta + `,"registration_client_uri":"https://a.example/r/cid"}`,
			400, "", "update_issued_member", "registration_client_uri",
		},
		{
			"client_secret_expires_at", nil,
			`{"client_secret_expires_at":0}`,
			400, "", "update_issued_member", "client_secret_expires_at",
		},
		{
			"client_id_issued_at", nil,
			`{"client_id":"cid","client_id_issued_at":1700000000}`,
			400, "", "update_issued_member", "client_id_issued_at",
		},
		{
			"issued member given null", nil,
			`{"client_id_issued_at":null}`,
			400, "", "update_issued_member", "client_id_issued_at",
		},
		{
			"first issued member named", nil,
			`{"client_id_issued_at":1,"registration_access_token":"t"}`,
			400, "", "update_issued_member", "client_id_issued_at",
		},
		{
			"client_id mismatch", nil, `{"client_id":"other"}`,
			400, "", "update_client_id", "client_id",
		},
		{
			"client_id differs in case", nil, `{"client_id":"CID"}`,
			400, "", "update_client_id", "client_id",
		},
		{
			"client_id number", nil, `{"client_id":42}`,
			400, codeInvalidClientMetadata, "json_type", "client_id must be a string",
		},
		{
			"client_id list", nil, `{"client_id":["cid"]}`,
			400, codeInvalidClientMetadata, "json_type", "client_id must be a string",
		},
		{
			"wrong client_secret", nil, `{"client_id":"cid","client_secret":"guess"}`,
			400, "", "update_client_secret", "client_secret",
		},
		{
			"previous client_secret", nil, `{"client_secret":"previous"}`,
			400, "", "update_client_secret", "client_secret",
		},
		{
			"client_secret of a public client", public, `{"client_secret":""}`,
			400, "", "update_client_secret", "client_secret",
		},
		{
			"client_secret number", nil, `{"client_secret":1}`,
			400, codeInvalidClientMetadata, "json_type",
			"client_secret must be a string",
		},
		{
			"duplicate client_id", nil, `{"client_id":"cid","client_id":"cid"}`,
			400, codeInvalidClientMetadata, "json_duplicate", "client_id",
		},
		{
			"metadata of wrong type", nil, `{"client_id":"cid","client_name":1}`,
			400, codeInvalidClientMetadata, "json_type", "client_name",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			client := tc.client
			if client == nil {
				client = c
			}
			h := &Handler{MaxBody: defaultMaxBody, policy: defaultPolicy(), now: time.Now}
			r := mgReq(http.MethodPut, "/register/cid", "", tc.body)
			req, perr := h.readUpdate(httptest.NewRecorder(), r, client)
			if tc.status == 0 {
				if perr != nil {
					t.Fatalf("readUpdate: %v (rule %s)", perr, perr.Rule)
				}
				if req.ClientName != "Demo" {
					t.Errorf("metadata = %+v", req.Metadata)
				}
				return
			}
			if req != nil {
				t.Errorf("request = %+v, want nil", req)
			}
			code := tc.code
			if code == "" {
				code = codeInvalidRequest
			}
			checkProtoErr(t, perr, code, tc.status, tc.rule, tc.want)
		})
	}
}

// mgRace sends the requests at once and returns the answers in order.
func mgRace(t *testing.T, h *Handler,
	reqs ...*http.Request) []*httptest.ResponseRecorder {
	t.Helper()
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		t.Error("passed to the next handler")
		return nil
	})
	out := make([]*httptest.ResponseRecorder, len(reqs))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, r := range reqs {
		out[i] = httptest.NewRecorder()
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if err := h.ServeHTTP(out[i], r, next); err != nil {
				t.Errorf("ServeHTTP: %v", err)
			}
		}()
	}
	close(start)
	wg.Wait()
	return out
}

// TestManageConcurrentUpdates races updates that carry the same token on
// one client: one wins whole, the others fail.
func TestManageConcurrentUpdates(t *testing.T) {
	h, _, _ := mgHandler(t, nil)
	// Several rounds, since whether the requests overlap is up to the
	// scheduler.
	for round := range 8 {
		c := mgRegister(t, h, mgRegBody)
		const n = 16
		reqs := make([]*http.Request, n)
		for i := range reqs {
			body := fmt.Sprintf(`{"redirect_uris":["https://app.example/cb"],`+
				`"client_name":"writer %d"}`, i)
			reqs[i] = mgReq(http.MethodPut, c.uri, c.bearer(), body)
		}
		winner := -1
		for i, w := range mgRace(t, h, reqs...) {
			switch w.Code {
			case http.StatusOK:
				if winner >= 0 {
					t.Errorf("round %d: updates %d and %d both won",
						round, winner, i)
				}
				winner = i
			case http.StatusUnauthorized:
			default:
				t.Errorf("round %d: update %d: %d %s",
					round, i, w.Code, w.Body.Bytes())
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no update won", round)
		}

		// The stored client is the winner's.
		got := mgStored(t, h, c.id).Metadata.ClientName
		if want := fmt.Sprintf("writer %d", winner); got != want {
			t.Errorf("round %d: stored client_name %q, want %q",
				round, got, want)
		}
	}
}

// TestManageDeleteRacesUpdate races a delete against an update with the
// same token: a client once deleted is never brought back.
func TestManageDeleteRacesUpdate(t *testing.T) {
	for _, rotate := range []bool{true, false} {
		t.Run(fmt.Sprintf("rotate_token %v", rotate), func(t *testing.T) {
			h, _, _ := mgHandler(t, func(h *Handler) {
				*h.RotateToken = rotate
			})
			for round := range 10 {
				c := mgRegister(t, h, mgRegBody)
				ws := mgRace(t, h,
					mgReq(http.MethodDelete, c.uri, c.bearer(), ""),
					mgReq(http.MethodPut, c.uri, c.bearer(), mgRegBody))
				deleted := ws[0].Code == http.StatusNoContent
				updated := ws[1].Code == http.StatusOK

				_, err := h.store.Client(c.id)
				switch {
				case deleted && !errors.Is(err, clientdb.ErrDeleted):
					t.Errorf("round %d: deleted client (PUT %d) reads "+
						"back: %v", round, ws[1].Code, err)
				case !deleted && (!updated || err != nil):
					t.Errorf("round %d: DELETE %d, PUT %d, client %v",
						round, ws[0].Code, ws[1].Code, err)
				case rotate && deleted && updated:
					// The update rotated the token the delete used.
					t.Errorf("round %d: both won with one token", round)
				}
			}
		})
	}
}
