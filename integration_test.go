package dcr

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
	"github.com/caddy-dcr/caddy-dcr/internal/pgtest"

	"github.com/caddyserver/caddy/v2/caddytest"
)

// The integration suite drives the one in-process Caddy that caddytest
// starts per test binary: each test loads its own Caddyfile through the
// admin API and talks real HTTP to it. None of these tests may run in
// parallel, since they share that Caddy and its ports.

// itSite is the site the dcr handler serves. Everything the handler passes
// on goes through reverse_proxy to a stand-in backend on port 9081 that
// echoes what it received, so pass-through is checked end to end.
const itSite = "http://localhost:9080"

// itCaddyfile is the configuration every test loads. Its verbs fill in, in
// order, the log file, the store's arguments (see itServer.storeArgs) and
// the extra dcr subdirectives. The
// named log takes only the dcr module's entries, so the logging test sees
// exactly what the handler logs.
const itCaddyfile = `{
	admin localhost:2999
	http_port 9080
	https_port 9443
	auto_https off
	log dcr {
		output file %q
		format json
		include http.handlers.dcr
	}
}

http://localhost:9080 {
	dcr {
		store %s
%s	}
	reverse_proxy localhost:9081
}

http://localhost:9081 {
	respond "backend {method} {uri} probe={header.X-Probe} body={http.request.body}" 200
}
`

// itServer is the running Caddy as one test configured it.
type itServer struct {
	store   string // the bbolt file, or the PostgreSQL DSN, of the store
	pg      bool   // whether store is a PostgreSQL DSN
	logFile string // JSON lines written by the dcr module logger
	client  *http.Client

	// rd is the Reader of the store, opened on first use and kept
	// until owner, the test that started the server, ends.
	rd    *clientdb.Reader
	owner *testing.T
}

// itOnPostgres makes startDCR configure a new PostgreSQL database instead
// of a bbolt file; TestIntegrationPostgres sets it while it runs the
// suite. Integration tests never run in parallel, so one switch serves.
var itOnPostgres bool

// storeArgs returns the arguments of the store subdirective.
func (s *itServer) storeArgs() string {
	if s.pg {
		return "postgres " + strconv.Quote(s.store)
	}
	return strconv.Quote(s.store)
}

// storeName returns the name under which the admin API knows the store.
func (s *itServer) storeName(t *testing.T) string {
	t.Helper()
	if !s.pg {
		return s.store
	}
	name, err := clientdb.PostgresName(s.store)
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// startDCR loads itCaddyfile with a fresh store and log file in the test's
// temporary directory; options are dcr subdirectives, one per string.
func startDCR(t *testing.T, options ...string) *itServer {
	t.Helper()
	dir := t.TempDir()
	itUnloadAtEnd(t)
	s := &itServer{
		store:   filepath.Join(dir, "clients.db"),
		logFile: filepath.Join(dir, "dcr.log"),
		client:  itClient(),
		owner:   t,
	}
	if itOnPostgres {
		// Registered after itUnloadAtEnd, so it runs before it: the
		// database is dropped once Caddy no longer uses it.
		s.store, s.pg = pgtest.Database(t), true
		itUnloadAtEnd(t)
	}
	s.load(t, options...)
	return s
}

// itRateLimitOff turns registration rate limiting off unless the options
// configure it: most tests register more clients from one address than
// the default limit allows.
func itRateLimitOff(options []string) []string {
	for _, o := range options {
		if f := strings.Fields(o); len(f) > 0 && f[0] == "rate_limit" {
			return options
		}
	}
	return append([]string{"rate_limit off"}, options...)
}

// itUnloadAtEnd makes the test end by loading a config without the dcr
// handler, before its temporary directory is removed: the handler's
// Cleanup then waits for its background work, which would otherwise still
// be opening files in that directory while it is removed.
func itUnloadAtEnd(t *testing.T) {
	t.Cleanup(func() {
		caddytest.NewTester(t).InitServer("{\n\tadmin localhost:2999\n}\n", "caddyfile")
	})
}

// load loads itCaddyfile again with the same store and log file and the
// given dcr subdirectives: a config reload, as "caddy reload" does it.
func (s *itServer) load(t *testing.T, options ...string) {
	t.Helper()
	var opts strings.Builder
	for _, o := range itRateLimitOff(options) {
		opts.WriteString("\t\t" + o + "\n")
	}
	config := fmt.Sprintf(itCaddyfile, s.logFile, s.storeArgs(), opts.String())

	caddytest.NewTester(t).InitServer(config, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
}

// itClient returns a client that reaches every localhost address over
// IPv4, so that the client IP the handler logs is known, and that opens a
// new connection per request: a connection kept from before a config
// reload may be closed under a POST, which Go does not retry.
func itClient() *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives:     true,
			ExpectContinueTimeout: 5 * time.Second,
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
				_, port, err := net.SplitHostPort(addr)
				if err != nil {
					return nil, err
				}
				return d.DialContext(ctx, "tcp4", net.JoinHostPort("127.0.0.1", port))
			},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// itResponse is one answer of the server. obj is the decoded body when the
// answer is JSON, with numbers kept as json.Number so that their type can
// be checked.
type itResponse struct {
	status int
	header http.Header
	body   []byte
	obj    map[string]any
}

// post sends body to /register as application/json. Each header is
// "Name: value" and replaces the default; an empty value removes it.
func (s *itServer) post(t *testing.T, body string, headers ...string) *itResponse {
	t.Helper()
	return s.request(t, http.MethodPost, "/register", strings.NewReader(body), headers...)
}

// request sends one request to the site. A POST carries
// "Content-Type: application/json" unless headers say otherwise.
func (s *itServer) request(t *testing.T, method, path string, body io.Reader,
	headers ...string) *itResponse {
	t.Helper()
	r, err := s.do(method, path, body, headers...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// do is request for goroutines other than the test's own, which must not
// call t.Fatal: it returns what went wrong instead.
func (s *itServer) do(method, path string, body io.Reader,
	headers ...string) (*itResponse, error) {
	req, err := http.NewRequest(method, itSite+path, body)
	if err != nil {
		return nil, fmt.Errorf("building request: %w", err)
	}
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/json")
	}
	// Large bodies go with "Expect: 100-continue", as careful clients
	// send them: a server that refuses a body by its Content-Length then
	// answers before the body is sent, instead of closing a connection
	// the client is still writing to, which would reach the test as a
	// reset instead of the answer.
	if req.ContentLength > 16<<10 {
		req.Header.Set("Expect", "100-continue")
	}
	for _, h := range headers {
		name, value, ok := strings.Cut(h, ":")
		if !ok {
			return nil, fmt.Errorf("header %q: want \"Name: value\"", h)
		}
		if value = strings.TrimSpace(value); value == "" {
			req.Header.Del(name)
		} else {
			req.Header.Set(name, value)
		}
	}

	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading response to %s %s: %w", method, path, err)
	}

	r := &itResponse{status: resp.StatusCode, header: resp.Header, body: raw}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&r.obj); err != nil {
			return nil, fmt.Errorf("%s %s: decoding %q: %w", method, path, raw, err)
		}
	}
	return r, nil
}

// count returns the number of clients in the store, read through the
// same Reader another process would use.
func (s *itServer) count(t *testing.T) int {
	t.Helper()
	var n int
	err := s.reader(t).View(func(tx clientdb.Tx) error {
		n = tx.Count()
		return nil
	})
	if err != nil {
		t.Fatalf("reading store: %v", err)
	}
	return n
}

// lookup returns the stored client with the given ID.
func (s *itServer) lookup(t *testing.T, id string) *clientdb.Client {
	t.Helper()
	c, err := s.reader(t).Lookup(id)
	if err != nil {
		t.Fatalf("looking up client %q: %v", id, err)
	}
	return c
}

// fileBytes returns the raw bytes of the store file, or the text of every
// row of a PostgreSQL store.
func (s *itServer) fileBytes(t *testing.T) []byte {
	t.Helper()
	if s.pg {
		return itPostgresDump(t, s.store)
	}
	b, err := os.ReadFile(s.store)
	if err != nil {
		t.Fatalf("reading store file: %v", err)
	}
	return b
}

// register posts body, expects a 201 that stored exactly one more client,
// and returns the client information response.
func (s *itServer) register(t *testing.T, body string,
	headers ...string) map[string]any {
	t.Helper()
	before := s.count(t)
	r := s.post(t, body, headers...)
	if r.status != http.StatusCreated {
		t.Fatalf("status %d, want 201; body %s", r.status, r.body)
	}
	itAssertJSONHeaders(t, r)
	if after := s.count(t); after != before+1 {
		t.Errorf("store holds %d clients after a registration, want %d", after, before+1)
	}
	return r.obj
}

// itRefusal is the error response a request must get.
type itRefusal struct {
	status int
	code   string
	desc   string // a part of error_description: the offending member or value
}

// postRefused posts body and checks that it is refused as want says and
// that nothing was stored.
func (s *itServer) postRefused(t *testing.T, body string, want itRefusal,
	headers ...string) {
	t.Helper()
	before := s.count(t)
	r := s.post(t, body, headers...)
	itAssertRefusal(t, r, want)
	if after := s.count(t); after != before {
		t.Errorf("store holds %d clients after a itRefusal, want %d", after, before)
	}
}

// itAssertJSONHeaders checks the headers RFC 7591 section 3.2 requires on
// every answer of the registration endpoint.
func itAssertJSONHeaders(t *testing.T, r *itResponse) {
	t.Helper()
	for name, want := range map[string]string{
		"Content-Type":  "application/json",
		"Cache-Control": "no-store",
		"Pragma":        "no-cache",
	} {
		if got := r.header.Get(name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
}

// itAssertRefusal checks an error response of RFC 7591 section 3.2.2: the
// status, the headers, and a body of exactly "error" and
// "error_description".
func itAssertRefusal(t *testing.T, r *itResponse, want itRefusal) {
	t.Helper()
	if r.status != want.status {
		t.Errorf("status %d, want %d; body %s", r.status, want.status, r.body)
	}
	itAssertJSONHeaders(t, r)
	if r.obj == nil {
		t.Fatalf("body is not a JSON object: %q", r.body)
	}
	if got := r.obj["error"]; got != want.code {
		t.Errorf("error %v, want %q; body %s", got, want.code, r.body)
	}
	desc, _ := r.obj["error_description"].(string)
	if desc == "" || !strings.Contains(desc, want.desc) {
		t.Errorf("error_description %q does not name %q", desc, want.desc)
	}
	for k := range r.obj {
		if k != "error" && k != "error_description" {
			t.Errorf("error response has extra member %q", k)
		}
	}
}

// itString returns the member name of obj, failing unless it is a string.
func itString(t *testing.T, obj map[string]any, name string) string {
	t.Helper()
	v, ok := obj[name].(string)
	if !ok {
		t.Fatalf("%s is %#v, want a string", name, obj[name])
	}
	return v
}

// itInt returns the member name of obj, failing unless it is a JSON
// integer: clients reject timestamps sent as strings or fractions.
func itInt(t *testing.T, obj map[string]any, name string) int64 {
	t.Helper()
	n, ok := obj[name].(json.Number)
	if !ok {
		t.Fatalf("%s is %#v, want a number", name, obj[name])
	}
	v, err := n.Int64()
	if err != nil {
		t.Fatalf("%s is %s, want an integer", name, n)
	}
	return v
}

// itStrings returns a JSON array of strings as a Go slice, or nil if v is
// something else.
func itStrings(v any) []string {
	items, ok := v.([]any)
	if !ok {
		return nil
	}
	out := make([]string, 0, len(items))
	for _, it := range items {
		s, ok := it.(string)
		if !ok {
			return nil
		}
		out = append(out, s)
	}
	return out
}

// itDecode decodes a JSON object the way request decodes responses, so
// that request and response values compare with reflect.DeepEqual.
func itDecode(t *testing.T, src string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(src))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		t.Fatalf("decoding %s: %v", src, err)
	}
	return obj
}

// itIssued are the members of a registration response that the server
// issues rather than echoes, the last two for RFC 7592 management.
var itIssued = []string{
	"client_id", "client_id_issued_at", "client_secret", "client_secret_expires_at",
	"registration_access_token", "registration_client_uri",
}

// itMetadata returns the registered metadata of a client information
// response: everything but the issued values.
func itMetadata(resp map[string]any) map[string]any {
	m := maps.Clone(resp)
	for _, k := range itIssued {
		delete(m, k)
	}
	return m
}

// checkStored compares the stored record of a registered client with the
// response it got: the same ID, times and metadata, and the secret kept
// only as a hash that verifies.
func (s *itServer) checkStored(t *testing.T, resp map[string]any) {
	t.Helper()
	id := itString(t, resp, "client_id")
	c := s.lookup(t, id)

	if c.ID != id {
		t.Errorf("stored ID %q, want %q", c.ID, id)
	}
	if got := itInt(t, resp, "client_id_issued_at"); c.IssuedAt != got {
		t.Errorf("stored issued_at %d, response %d", c.IssuedAt, got)
	}
	stored, err := json.Marshal(c.Metadata)
	if err != nil {
		t.Fatalf("encoding stored metadata: %v", err)
	}
	got, want := itDecode(t, string(stored)), itMetadata(resp)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("stored metadata\n%v\nresponse metadata\n%v", got, want)
	}

	file := s.fileBytes(t)
	if !bytes.Contains(file, []byte(id)) {
		t.Errorf("client ID %q not found in the store file", id)
	}

	// The registration access token, like the secret, is kept only as a
	// hash that verifies.
	if token, ok := resp["registration_access_token"].(string); ok {
		if !c.VerifyRegistrationToken(token) {
			t.Error("VerifyRegistrationToken is false for the issued token")
		}
		if c.VerifyRegistrationToken(token + "x") {
			t.Error("VerifyRegistrationToken is true for a different token")
		}
		if bytes.Contains(file, []byte(token)) {
			t.Error("the plaintext registration access token is in the store file")
		}
	} else if c.RegistrationTokenHash != "" {
		t.Errorf("client issued no token has token hash %q", c.RegistrationTokenHash)
	}

	secret, hasSecret := resp["client_secret"].(string)
	if !hasSecret {
		if c.HasSecret() || c.SecretExpiresAt != 0 {
			t.Errorf("client without a secret stored hash %q, expiry %d",
				c.SecretHash, c.SecretExpiresAt)
		}
		return
	}
	if c.SecretHash == "" || strings.Contains(c.SecretHash, secret) {
		t.Errorf("stored secret hash %q: want a hash, not the secret", c.SecretHash)
	}
	if !c.VerifySecret(secret, time.Now()) {
		t.Error("VerifySecret is false for the issued secret")
	}
	if c.VerifySecret(secret+"x", time.Now()) {
		t.Error("VerifySecret is true for a different secret")
	}
	if got := itInt(t, resp, "client_secret_expires_at"); c.SecretExpiresAt != got {
		t.Errorf("stored secret expiry %d, response %d", c.SecretExpiresAt, got)
	}
	if bytes.Contains(file, []byte(secret)) {
		t.Error("the plaintext secret appears in the store file")
	}
}

// itValidBody is a body that registers with all defaults.
const itValidBody = `{"redirect_uris":["https://app.example.com/cb"]}`

// itReg returns a body with one https redirect URI followed by the
// members in rest, a JSON fragment such as `"scope":"openid"`.
func itReg(rest string) string {
	return `{"redirect_uris":["https://app.example.com/cb"],` + rest + `}`
}

// Issued values: a client ID is the issue time in 12 hex digits and 128
// random bits in base64url; a secret or a registration access token is
// 256 random bits in base64url, without padding.
var (
	itClientIDPattern = regexp.MustCompile(`^[0-9a-f]{12}[A-Za-z0-9_-]{22}$`)
	itSecretPattern   = regexp.MustCompile(`^[A-Za-z0-9_-]{43,}$`)
)

func TestIntegrationRegisterDefaults(t *testing.T) {
	s := startDCR(t)

	start := time.Now().Unix()
	resp := s.register(t, itValidBody)
	end := time.Now().Unix()

	want := map[string]any{
		"redirect_uris":              []any{"https://app.example.com/cb"},
		"grant_types":                []any{"authorization_code"},
		"response_types":             []any{"code"},
		"token_endpoint_auth_method": "client_secret_basic",
	}
	if got := itMetadata(resp); !reflect.DeepEqual(got, want) {
		t.Errorf("metadata %v, want %v", got, want)
	}
	if id := itString(t, resp, "client_id"); !itClientIDPattern.MatchString(id) {
		t.Errorf("client_id %q is not 12 hex digits and 22 URL-safe characters", id)
	}
	if at := itInt(t, resp, "client_id_issued_at"); at < start || at > end {
		t.Errorf("client_id_issued_at %d outside [%d, %d]", at, start, end)
	}
	if secret := itString(t, resp, "client_secret"); !itSecretPattern.MatchString(secret) {
		t.Errorf("client_secret %q is not 43+ URL-safe characters", secret)
	}
	// Without secret_lifetime the secret never expires, which RFC 7591
	// section 3.2.1 spells as 0; clients require the member to be there.
	if exp := itInt(t, resp, "client_secret_expires_at"); exp != 0 {
		t.Errorf("client_secret_expires_at %d, want 0", exp)
	}

	// Management is on by default: RFC 7592 section 3 members are there.
	token := itString(t, resp, "registration_access_token")
	if !itSecretPattern.MatchString(token) {
		t.Errorf("registration_access_token %q is not 43+ URL-safe characters", token)
	}
	if token == resp["client_secret"] {
		t.Error("registration_access_token equals client_secret")
	}
	id := itString(t, resp, "client_id")
	uri := itString(t, resp, "registration_client_uri")
	if want := itSite + "/register/" + id; uri != want {
		t.Errorf("registration_client_uri %q, want %q", uri, want)
	}
	s.checkStored(t, resp)
}

func TestIntegrationManagementOff(t *testing.T) {
	s := startDCR(t, "management off")

	resp := s.register(t, itValidBody)
	for _, k := range []string{"registration_access_token", "registration_client_uri"} {
		if v, ok := resp[k]; ok {
			t.Errorf("%s present (%v) with management off", k, v)
		}
	}
	s.checkStored(t, resp)
	id := itString(t, resp, "client_id")
	before := s.lookup(t, id)

	// Without management the configuration endpoint does not exist, for
	// any method and with or without a token; it is not passed on either.
	for _, method := range []string{
		http.MethodGet, http.MethodPut, http.MethodDelete, http.MethodPost,
	} {
		for _, auth := range []string{"Authorization:", "Authorization: Bearer x"} {
			t.Run(method+" "+auth, func(t *testing.T) {
				r := s.request(t, method, "/register/"+id,
					strings.NewReader(itValidBody),
					"Content-Type: application/json", auth)
				if r.status != http.StatusNotFound {
					t.Errorf("status %d, want 404; body %s", r.status, r.body)
				}
				if bytes.HasPrefix(r.body, []byte("backend")) {
					t.Errorf("passed through to the backend: %s", r.body)
				}
			})
		}
	}
	if after := s.lookup(t, id); !reflect.DeepEqual(after, before) {
		t.Errorf("client changed:\n%+v\nwas\n%+v", after, before)
	}
}

func TestIntegrationRegisterEchoesMetadata(t *testing.T) {
	s := startDCR(t)

	// Every metadata member of RFC 7591 section 2 but jwks, which may not
	// appear with jwks_uri; plus values the client has no say in.
	body := `{
		"redirect_uris": ["https://app.example.com/cb", "http://127.0.0.1:8400/cb"],
		"token_endpoint_auth_method": "client_secret_post",
		"grant_types": ["authorization_code", "refresh_token"],
		"response_types": ["code"],
		"client_name": "Echo Test",
		"client_name#ja-Jpan-JP": "エコー・テスト",
		"client_uri": "https://app.example.com/",
		"logo_uri": "https://app.example.com/logo.png",
		"scope": "openid profile offline_access",
		"contacts": ["ops@app.example.com", "dev@app.example.com"],
		"tos_uri": "https://app.example.com/tos",
		"policy_uri": "https://app.example.com/privacy",
		"jwks_uri": "https://app.example.com/jwks.json",
		"software_id": "4NRB1-0XZABZI9E6-5SM3R",
		"software_version": "2.1.0",
		"client_id": "chosen-by-the-client",
		"client_secret": "chosen-secret-by-the-client",
		"x_unknown_member": "unknown-member-value"
	}`
	resp := s.register(t, body)

	want := itDecode(t, body)
	for _, k := range []string{"client_id", "client_secret", "x_unknown_member"} {
		delete(want, k)
	}
	if got := itMetadata(resp); !reflect.DeepEqual(got, want) {
		t.Errorf("metadata echoed\n%v\nwant\n%v", got, want)
	}
	for _, k := range itIssued {
		if _, ok := resp[k]; !ok {
			t.Errorf("response lacks %s", k)
		}
	}
	if id := itString(t, resp, "client_id"); id == "chosen-by-the-client" {
		t.Error("the client_id from the request was used")
	}
	if sec := itString(t, resp, "client_secret"); sec == "chosen-secret-by-the-client" {
		t.Error("the client_secret from the request was used")
	}
	s.checkStored(t, resp)

	file := s.fileBytes(t)
	for _, v := range []string{
		"chosen-by-the-client", "chosen-secret-by-the-client",
		"x_unknown_member", "unknown-member-value",
	} {
		if bytes.Contains(file, []byte(v)) {
			t.Errorf("store file holds %q from the request", v)
		}
	}
}

// itJWKS returns a fresh P-256 public key as a JWK Set, and the private
// half as one, for metadata tests that need a well-formed key.
func itJWKS(t *testing.T) (public, private string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	set := func(k any) string {
		b, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
			{Key: k, KeyID: "k1", Algorithm: "ES256", Use: "sig"},
		}})
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	return set(&key.PublicKey), set(key)
}

func TestIntegrationRegisterClients(t *testing.T) {
	s := startDCR(t)
	jwks, _ := itJWKS(t)

	tests := []struct {
		name   string
		body   string
		secret bool
		want   map[string]any // members that must be in the response as given
		absent []string       // members that must not be
	}{
		{
			name:   "public client",
			body:   itReg(`"token_endpoint_auth_method":"none"`),
			want:   map[string]any{"token_endpoint_auth_method": "none"},
			absent: []string{"client_secret", "client_secret_expires_at"},
		},
		{
			name:   "every grant type kept",
			body:   itReg(`"grant_types":["authorization_code","refresh_token"]`),
			secret: true,
			want: map[string]any{
				"grant_types":    []any{"authorization_code", "refresh_token"},
				"response_types": []any{"code"},
			},
		},
		{
			name: "jwks by value",
			body: itReg(`"token_endpoint_auth_method":"none","jwks":` + jwks),
			want: map[string]any{"jwks": itDecode(t, jwks)},
			absent: []string{
				"client_secret", "client_secret_expires_at", "jwks_uri",
			},
		},
		{
			name:   "client_secret_post",
			body:   itReg(`"token_endpoint_auth_method":"client_secret_post"`),
			secret: true,
			want:   map[string]any{"token_endpoint_auth_method": "client_secret_post"},
		},
		{
			name:   "null members count as absent",
			body:   itReg(`"client_name":null,"grant_types":null,"jwks":null`),
			secret: true,
			want:   map[string]any{"grant_types": []any{"authorization_code"}},
			absent: []string{"client_name", "jwks"},
		},
		{
			name:   "any scope without a scopes allowlist",
			body:   itReg(`"scope":"anything:goes read"`),
			secret: true,
			want:   map[string]any{"scope": "anything:goes read"},
		},
		{
			name:   "no scope and no default_scope",
			body:   itValidBody,
			secret: true,
			absent: []string{"scope"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := s.register(t, tc.body)
			for k, v := range tc.want {
				if !reflect.DeepEqual(resp[k], v) {
					t.Errorf("%s: %#v, want %#v", k, resp[k], v)
				}
			}
			for _, k := range tc.absent {
				if v, ok := resp[k]; ok {
					t.Errorf("%s present (%#v), want it absent", k, v)
				}
			}
			if _, ok := resp["client_secret"]; ok != tc.secret {
				t.Errorf("client_secret issued: %v, want %v", ok, tc.secret)
			}
			if tc.secret {
				itInt(t, resp, "client_secret_expires_at")
			}
			s.checkStored(t, resp)
		})
	}
}

func TestIntegrationSecretLifetime(t *testing.T) {
	s := startDCR(t, "secret_lifetime 1h")

	resp := s.register(t, itValidBody)
	issued := itInt(t, resp, "client_id_issued_at")
	exp := itInt(t, resp, "client_secret_expires_at")
	if exp != issued+3600 {
		t.Errorf("client_secret_expires_at %d, want issued_at %d + 3600", exp, issued)
	}
	s.checkStored(t, resp)

	c := s.lookup(t, itString(t, resp, "client_id"))
	secret := itString(t, resp, "client_secret")
	if c.VerifySecret(secret, time.Unix(exp, 0)) {
		t.Error("the secret still verifies at its expiry time")
	}

	// A public client has no secret, so nothing expires.
	pub := s.register(t, itReg(`"token_endpoint_auth_method":"none"`))
	if v, ok := pub["client_secret_expires_at"]; ok {
		t.Errorf("public client got client_secret_expires_at %v", v)
	}
}

func TestIntegrationIssuedValuesAreDistinct(t *testing.T) {
	s := startDCR(t)

	const n = 50
	seen := make(map[string]bool)
	for range n {
		resp := s.register(t, itValidBody)
		id := itString(t, resp, "client_id")
		secret := itString(t, resp, "client_secret")
		token := itString(t, resp, "registration_access_token")
		if !itClientIDPattern.MatchString(id) {
			t.Errorf("client_id %q is not 12 hex digits and 22 URL-safe characters", id)
		}
		for _, v := range []string{secret, token} {
			if !itSecretPattern.MatchString(v) {
				t.Errorf("%q is not 43+ URL-safe characters", v)
			}
		}
		for _, v := range []string{id, secret, token} {
			if seen[v] {
				t.Errorf("value %q issued twice", v)
			}
			seen[v] = true
		}
	}
	if got := s.count(t); got != n {
		t.Errorf("store holds %d clients, want %d", got, n)
	}
}

const (
	itJWTBearer   = "urn:ietf:params:oauth:grant-type:jwt-bearer"
	itSAML2Bearer = "urn:ietf:params:oauth:grant-type:saml2-bearer"
)

func TestIntegrationGrantTypesRefusedByDefault(t *testing.T) {
	s := startDCR(t)

	tests := []struct {
		name, body, desc string
	}{
		{"password", itReg(`"grant_types":["password"]`), `"password"`},
		{"client_credentials", itReg(`"grant_types":["client_credentials"]`),
			`"client_credentials"`},
		{"jwt-bearer", itReg(`"grant_types":["` + itJWTBearer + `"]`), itJWTBearer},
		{"saml2-bearer", itReg(`"grant_types":["` + itSAML2Bearer + `"]`), itSAML2Bearer},
		{"implicit", itReg(`"grant_types":["implicit"]`), `"implicit"`},
		{"implicit through response_types", itReg(`"response_types":["token"]`),
			`"implicit"`},
		{"password beside allowed ones",
			itReg(`"grant_types":["authorization_code","password"]`), `"password"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s.postRefused(t, tc.body, itRefusal{400, "invalid_client_metadata", tc.desc})
		})
	}
}

func TestIntegrationGrantTypesAllowed(t *testing.T) {
	s := startDCR(t, "grant_types authorization_code refresh_token implicit "+
		"password client_credentials "+itJWTBearer+" "+itSAML2Bearer)

	tests := []struct {
		name      string
		body      string
		grants    []string
		responses []string
	}{
		{"password", `{"grant_types":["password"]}`, []string{"password"}, []string{}},
		{"client_credentials", `{"grant_types":["client_credentials"]}`,
			[]string{"client_credentials"}, []string{}},
		{"jwt-bearer", `{"grant_types":["` + itJWTBearer + `"]}`,
			[]string{itJWTBearer}, []string{}},
		{"saml2-bearer", `{"grant_types":["` + itSAML2Bearer + `"]}`,
			[]string{itSAML2Bearer}, []string{}},
		{"implicit", itReg(`"grant_types":["implicit"]`),
			[]string{"implicit"}, []string{"token"}},
		{"mixed", itReg(`"grant_types":["authorization_code","refresh_token","password"]`),
			[]string{"authorization_code", "refresh_token", "password"}, []string{"code"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := s.register(t, tc.body)
			if got := itStrings(resp["grant_types"]); !slices.Equal(got, tc.grants) {
				t.Errorf("grant_types %v, want %v", got, tc.grants)
			}
			if got := itStrings(resp["response_types"]); got == nil ||
				!slices.Equal(got, tc.responses) {
				t.Errorf("response_types %#v, want %v", resp["response_types"], tc.responses)
			}
			s.checkStored(t, resp)
		})
	}

	// A grant type the list does not name stays refused.
	s.postRefused(t, `{"grant_types":["urn:ietf:params:oauth:grant-type:device_code"]}`,
		itRefusal{400, "invalid_client_metadata", "device_code"})
}

func TestIntegrationAuthMethods(t *testing.T) {
	s := startDCR(t, "auth_methods client_secret_post none")

	// RFC 7591's default, client_secret_basic, is not allowed here, so a
	// request that names no method gets the first allowed one.
	t.Run("omitted gets the first allowed method", func(t *testing.T) {
		resp := s.register(t, itValidBody)
		if got := resp["token_endpoint_auth_method"]; got != "client_secret_post" {
			t.Errorf("token_endpoint_auth_method %v, want client_secret_post", got)
		}
		if _, ok := resp["client_secret"]; !ok {
			t.Error("no client_secret for a client_secret_post client")
		}
		s.checkStored(t, resp)
	})

	for _, method := range []string{"client_secret_post", "none"} {
		t.Run("accepts "+method, func(t *testing.T) {
			resp := s.register(t, itReg(`"token_endpoint_auth_method":"`+method+`"`))
			if got := resp["token_endpoint_auth_method"]; got != method {
				t.Errorf("token_endpoint_auth_method %v, want %s", got, method)
			}
			s.checkStored(t, resp)
		})
	}

	tests := []struct {
		name, body, desc string
	}{
		{"client_secret_basic",
			itReg(`"token_endpoint_auth_method":"client_secret_basic"`),
			`"client_secret_basic"`},
		{"private_key_jwt", itReg(`"token_endpoint_auth_method":"private_key_jwt"`),
			`"private_key_jwt"`},
		{"unknown method", itReg(`"token_endpoint_auth_method":"magic"`), `"magic"`},
	}
	for _, tc := range tests {
		t.Run("refuses "+tc.name, func(t *testing.T) {
			s.postRefused(t, tc.body, itRefusal{400, "invalid_client_metadata", tc.desc})
		})
	}
}

func TestIntegrationScopes(t *testing.T) {
	s := startDCR(t, "scopes openid profile email", "default_scope openid")

	accepted := []struct {
		name, body, want string
	}{
		{"default_scope applied", itValidBody, "openid"},
		{"empty scope gets the default", itReg(`"scope":""`), "openid"},
		{"allowed scopes", itReg(`"scope":"openid profile"`), "openid profile"},
	}
	for _, tc := range accepted {
		t.Run(tc.name, func(t *testing.T) {
			resp := s.register(t, tc.body)
			if got := resp["scope"]; got != tc.want {
				t.Errorf("scope %v, want %q", got, tc.want)
			}
			s.checkStored(t, resp)
		})
	}

	refused := []struct {
		name, body, desc string
	}{
		{"scope not allowed", itReg(`"scope":"openid admin"`), `"admin"`},
		{"scope listed twice", itReg(`"scope":"openid openid"`), `"openid"`},
		{"not a scope token", itReg(`"scope":"openid  profile"`), "scope"},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			s.postRefused(t, tc.body, itRefusal{400, "invalid_client_metadata", tc.desc})
		})
	}
}

func TestIntegrationRequireHTTPS(t *testing.T) {
	tests := []struct {
		name    string
		options []string
		accept  []string // redirect URIs that register
		refuse  []string // redirect URIs that are refused
		jwks    string   // a jwks_uri that must be refused, if any
	}{
		{
			name: "on by default",
			accept: []string{
				"https://app.example.com/cb",
				"http://127.0.0.1:3000/cb",
				"http://127.0.0.1/cb",
				"http://[::1]:8080/cb",
				"http://[::1]/cb",
				"http://localhost/cb",
				"http://localhost:4000/cb",
			},
			refuse: []string{
				"http://app.example.com/cb",
				"http://127.0.0.1.example.com/cb",
				"http://localhost.example.com/cb",
			},
			jwks: "http://keys.example.com/jwks.json",
		},
		{
			name:    "on",
			options: []string{"require_https on"},
			accept:  []string{"http://127.0.0.1:3000/cb"},
			refuse:  []string{"http://app.example.com/cb"},
			jwks:    "http://keys.example.com/jwks.json",
		},
		{
			name:    "off",
			options: []string{"require_https off"},
			accept: []string{
				"http://app.example.com/cb",
				"https://app.example.com/cb",
				"http://127.0.0.1:3000/cb",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := startDCR(t, tc.options...)
			for _, u := range tc.accept {
				resp := s.register(t, `{"redirect_uris":["`+u+`"]}`)
				if got := itStrings(resp["redirect_uris"]); !slices.Equal(got, []string{u}) {
					t.Errorf("redirect_uris %v, want [%s]", got, u)
				}
			}
			for _, u := range tc.refuse {
				s.postRefused(t, `{"redirect_uris":["`+u+`"]}`,
					itRefusal{400, "invalid_redirect_uri", u})
			}
			if tc.jwks != "" {
				s.postRefused(t, itReg(`"jwks_uri":"`+tc.jwks+`"`),
					itRefusal{400, "invalid_client_metadata", "jwks_uri"})
			} else {
				s.register(t, itReg(`"jwks_uri":"http://keys.example.com/jwks.json"`))
			}
		})
	}
}

func TestIntegrationRedirectSchemes(t *testing.T) {
	tests := []struct {
		name    string
		options []string
		accept  []string
		refuse  map[string]string // URI to the part the description names
	}{
		{
			name:   "default",
			accept: []string{"com.example.app:/cb", "com.example.app:/oauth2redirect"},
			refuse: map[string]string{
				"myapp:/cb":    `"myapp"`,
				"otherapp:/cb": `"otherapp"`,
			},
		},
		{
			name:    "myapp allowed",
			options: []string{"redirect_schemes myapp"},
			accept:  []string{"myapp:/cb", "MyApp:/cb", "com.example.app:/cb"},
			refuse:  map[string]string{"otherapp:/cb": `"otherapp"`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := startDCR(t, tc.options...)
			for _, u := range tc.accept {
				resp := s.register(t, `{"redirect_uris":["`+u+`"]}`)
				s.checkStored(t, resp)
			}
			for u, desc := range tc.refuse {
				s.postRefused(t, `{"redirect_uris":["`+u+`"]}`,
					itRefusal{400, "invalid_redirect_uri", desc})
			}
		})
	}
}

func TestIntegrationMetadataRules(t *testing.T) {
	s := startDCR(t)
	jwks, private := itJWKS(t)

	redirect := func(u string) string { return `{"redirect_uris":["` + u + `"]}` }
	badRedirect := func(desc string) itRefusal {
		return itRefusal{400, "invalid_redirect_uri", desc}
	}
	badMeta := func(desc string) itRefusal {
		return itRefusal{400, "invalid_client_metadata", desc}
	}

	tests := []struct {
		name string
		body string
		want itRefusal
	}{
		{"fragment", redirect("https://app.example.com/cb#frag"),
			badRedirect("https://app.example.com/cb#frag")},
		{"javascript", redirect("javascript:alert(1)"), badRedirect(`"javascript"`)},
		{"javascript upper case", redirect("JAVASCRIPT:alert(1)"),
			badRedirect(`"javascript"`)},
		{"data", redirect("data:text/html,hi"), badRedirect(`"data"`)},
		{"vbscript", redirect("vbscript:msgbox(1)"), badRedirect(`"vbscript"`)},
		{"file", redirect("file:///etc/passwd"), badRedirect(`"file"`)},
		{"blob", redirect("blob:https://app.example.com/1234"), badRedirect(`"blob"`)},
		{"relative", redirect("/cb"), badRedirect(`"/cb"`)},
		{"user information", redirect("https://user@app.example.com/cb"),
			badRedirect("https://user@app.example.com/cb")},
		{"space", redirect("https://app.example.com/a b"),
			badRedirect("https://app.example.com/a b")},
		{"https without a host", redirect("https:///cb"), badRedirect(`"https:///cb"`)},

		{"no redirect_uris for authorization_code", `{"client_name":"x"}`,
			badRedirect("redirect_uris")},
		{"empty redirect_uris", `{"redirect_uris":[]}`, badRedirect("redirect_uris")},

		{"jwks and jwks_uri", itReg(
			`"jwks_uri":"https://app.example.com/jwks","jwks":` + jwks), badMeta("jwks")},
		{"jwks with a private key", itReg(`"jwks":` + private), badMeta("jwks")},
		{"jwks without keys", itReg(`"jwks":{"keys":[]}`), badMeta("jwks")},
		{"jwks not a key set", itReg(`"jwks":{"keys":"x"}`), badMeta("jwks")},

		{"client_uri ftp", itReg(`"client_uri":"ftp://app.example.com/"`),
			badMeta("client_uri")},
		{"logo_uri relative", itReg(`"logo_uri":"/logo.png"`), badMeta("logo_uri")},
		{"tos_uri javascript", itReg(`"tos_uri":"javascript:alert(1)"`),
			badMeta("tos_uri")},
		{"policy_uri without scheme", itReg(`"policy_uri":"app.example.com/p"`),
			badMeta("policy_uri")},
		{"jwks_uri ftp", itReg(`"jwks_uri":"ftp://app.example.com/jwks"`),
			badMeta("jwks_uri")},
		{"localized client_uri relative",
			itReg(`"client_uri#fr":"/accueil"`), badMeta("client_uri#fr")},
		{"invalid language tag", itReg(`"client_name#":"x"`),
			badMeta("client_name#")},

		{"code grant with token response", itReg(
			`"grant_types":["authorization_code"],"response_types":["token"]`),
			badMeta(`"implicit"`)},
		{"code response without code grant", itReg(
			`"grant_types":["refresh_token"],"response_types":["code"]`),
			badMeta(`"authorization_code"`)},
		{"code grant without response types", itReg(
			`"grant_types":["authorization_code"],"response_types":[]`),
			badMeta(`"code"`)},
		{"unknown response type", itReg(`"response_types":["magic"]`),
			badMeta(`"magic"`)},

		{"control character in client_name", itReg(`"client_name":"a\nb"`),
			badMeta("client_name")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s.postRefused(t, tc.body, tc.want)
		})
	}
}

// itPaddedBody returns a valid registration body of exactly n bytes.
func itPaddedBody(t *testing.T, n int) string {
	t.Helper()
	head := `{"redirect_uris":["https://app.example.com/cb"],"client_name":"`
	tail := `"}`
	pad := n - len(head) - len(tail)
	if pad < 0 {
		t.Fatalf("cannot pad a body to %d bytes", n)
	}
	return head + strings.Repeat("a", pad) + tail
}

// itChunked hides a reader's length so that the request goes out with
// chunked transfer encoding and the handler has to count for itself.
type itChunked struct{ io.Reader }

func TestIntegrationMaxBody(t *testing.T) {
	s := startDCR(t, "max_body 1KiB")

	s.register(t, itPaddedBody(t, 1000))
	s.register(t, itPaddedBody(t, 1024))

	tooLarge := itRefusal{413, "invalid_request", "1024"}
	for _, n := range []int{1025, 2048} {
		t.Run(fmt.Sprintf("%d bytes", n), func(t *testing.T) {
			s.postRefused(t, itPaddedBody(t, n), tooLarge)
		})
		t.Run(fmt.Sprintf("%d bytes chunked", n), func(t *testing.T) {
			before := s.count(t)
			r := s.request(t, http.MethodPost, "/register",
				itChunked{strings.NewReader(itPaddedBody(t, n))})
			itAssertRefusal(t, r, tooLarge)
			if got := s.count(t); got != before {
				t.Errorf("store holds %d clients, want %d", got, before)
			}
		})
	}
}

func TestIntegrationEndpoint(t *testing.T) {
	s := startDCR(t, "endpoint /oauth/register")

	before := s.count(t)
	r := s.request(t, http.MethodPost, "/oauth/register", strings.NewReader(itValidBody))
	if r.status != http.StatusCreated {
		t.Fatalf("status %d, want 201; body %s", r.status, r.body)
	}
	itAssertJSONHeaders(t, r)
	s.checkStored(t, r.obj)
	id := itString(t, r.obj, "client_id")
	uri := itString(t, r.obj, "registration_client_uri")
	if want := itSite + "/oauth/register/" + id; uri != want {
		t.Errorf("registration_client_uri %q, want %q", uri, want)
	}
	token := itString(t, r.obj, "registration_access_token")
	got := s.request(t, http.MethodGet, "/oauth/register/"+id, nil,
		"Authorization: Bearer "+token)
	if got.status != http.StatusOK || got.obj["client_id"] != id {
		t.Errorf("GET %s: %d %s, want 200 and the client", uri, got.status, got.body)
	}

	// The default paths are now ordinary paths for the backend.
	r = s.post(t, itValidBody)
	want := "backend POST /register probe= body=" + itValidBody
	if r.status != http.StatusOK || string(r.body) != want {
		t.Errorf("POST /register: %d %q, want 200 %q", r.status, r.body, want)
	}
	r = s.request(t, http.MethodGet, "/register/"+id, nil, "Authorization: Bearer "+token)
	want = "backend GET /register/" + id + " probe= body="
	if r.status != http.StatusOK || string(r.body) != want {
		t.Errorf("GET /register/<id>: %d %q, want 200 %q", r.status, r.body, want)
	}

	r = s.request(t, http.MethodGet, "/oauth/register", nil)
	itAssertRefusal(t, r, itRefusal{405, "invalid_request", "GET"})

	if got := s.count(t); got != before+1 {
		t.Errorf("store holds %d clients, want %d", got, before+1)
	}
}

func TestIntegrationBadInput(t *testing.T) {
	s := startDCR(t)

	badMeta := func(desc string) itRefusal {
		return itRefusal{400, "invalid_client_metadata", desc}
	}
	tests := []struct {
		name string
		body string
		want itRefusal
	}{
		{"empty body", "", badMeta("JSON")},
		{"not JSON", "hello", badMeta("JSON")},
		{"truncated JSON", `{"redirect_uris":`, badMeta("JSON")},
		{"JSON array", `[` + itValidBody + `]`, badMeta("JSON object")},
		{"JSON string", `"` + "redirect_uris" + `"`, badMeta("JSON object")},
		{"JSON number", `42`, badMeta("JSON object")},
		{"JSON null", `null`, badMeta("JSON object")},
		{"trailing data", itValidBody + `{}`, badMeta("JSON")},
		{"trailing garbage", itValidBody + `x`, badMeta("JSON")},

		{"redirect_uris a string", `{"redirect_uris":"https://app.example.com/cb"}`,
			badMeta("redirect_uris")},
		{"client_name a number", itReg(`"client_name":5`), badMeta("client_name")},
		{"grant_types of numbers", itReg(`"grant_types":[1]`),
			badMeta("grant_types")},
		{"scope a list", itReg(`"scope":["openid"]`), badMeta("scope")},
		{"jwks a string", itReg(`"jwks":"x"`), badMeta("jwks")},
		{"contacts an object", itReg(`"contacts":{"a":"b"}`), badMeta("contacts")},
		{"token_endpoint_auth_method a bool",
			itReg(`"token_endpoint_auth_method":true`),
			badMeta("token_endpoint_auth_method")},
		{"localized a number", itReg(`"client_name#en":1`),
			badMeta("client_name#en")},

		{"empty grant_types", itReg(`"grant_types":[]`), badMeta("grant_types")},

		{"duplicate redirect_uris", `{"redirect_uris":["https://app.example.com/cb",` +
			`"https://app.example.com/cb"]}`,
			itRefusal{400, "invalid_redirect_uri", "https://app.example.com/cb"}},
		{"duplicate grant_types",
			itReg(`"grant_types":["authorization_code","authorization_code"]`),
			badMeta("grant_types")},
		{"duplicate response_types", itReg(`"response_types":["code","code"]`),
			badMeta("response_types")},
		{"duplicate contacts", itReg(`"contacts":["a@example.com","a@example.com"]`),
			badMeta("contacts")},

		{"duplicate member names", itReg(`"client_name":"a","client_name":"b"`),
			badMeta(`"client_name"`)},
		{"duplicate unknown member names", itReg(`"x":1,"x":2`), badMeta(`"x"`)},
		{"duplicate redirect_uris member", `{"redirect_uris":["https://a.example.com/cb"],` +
			`"redirect_uris":["https://b.example.com/cb"]}`, badMeta(`"redirect_uris"`)},

		{"invalid UTF-8", itReg("\"client_name\":\"\xff\xfe\""), badMeta("UTF-8")},
		{"invalid UTF-8 in a member name", itReg("\"\xc3\":1"), badMeta("UTF-8")},

		{"over 64 KiB", itPaddedBody(t, defaultMaxBody+1),
			itRefusal{413, "invalid_request", fmt.Sprint(defaultMaxBody)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s.postRefused(t, tc.body, tc.want)
		})
	}
}

func TestIntegrationContentType(t *testing.T) {
	s := startDCR(t)

	unsupported := itRefusal{415, "invalid_request", "Content-Type"}
	refused := []struct {
		name   string
		header string
	}{
		{"missing", "Content-Type:"},
		{"text/plain", "Content-Type: text/plain"},
		{"form", "Content-Type: application/x-www-form-urlencoded"},
		{"json lookalike", "Content-Type: application/jsonp"},
		{"malformed", "Content-Type: application/json; charset"},
	}
	for _, tc := range refused {
		t.Run("refuses "+tc.name, func(t *testing.T) {
			s.postRefused(t, itValidBody, unsupported, tc.header)
		})
	}

	accepted := []string{
		"Content-Type: application/json; charset=utf-8",
		"Content-Type: Application/JSON",
	}
	for _, h := range accepted {
		t.Run("accepts "+h, func(t *testing.T) {
			s.checkStored(t, s.register(t, itValidBody, h))
		})
	}
}

func TestIntegrationMethods(t *testing.T) {
	s := startDCR(t)

	for _, method := range []string{
		http.MethodGet, http.MethodPut, http.MethodDelete, http.MethodPatch,
	} {
		t.Run(method, func(t *testing.T) {
			before := s.count(t)
			r := s.request(t, method, "/register", strings.NewReader(itValidBody),
				"Content-Type: application/json")
			itAssertRefusal(t, r, itRefusal{405, "invalid_request", method})
			if got := r.header.Get("Allow"); got != "POST" {
				t.Errorf("Allow: %q, want POST", got)
			}
			if got := s.count(t); got != before {
				t.Errorf("store holds %d clients, want %d", got, before)
			}
		})
	}
}

func TestIntegrationHostileBodies(t *testing.T) {
	// A large limit lets the hostile shapes reach the decoder instead of
	// being cut off at the default 64 KiB.
	s := startDCR(t, "max_body 1MiB")

	const r0 = `"redirect_uris":["https://app.example.com/cb"]`
	many := func(n int, format string) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = fmt.Sprintf(format, i)
		}
		return strings.Join(parts, ",")
	}

	tests := []struct {
		name   string
		body   string
		status int
	}{
		{"deeply nested arrays in an unknown member",
			`{` + r0 + `,"x":` + strings.Repeat("[", 400000) +
				strings.Repeat("]", 400000) + `}`, 400},
		{"deeply nested objects in jwks",
			`{` + r0 + `,"jwks":` + strings.Repeat(`{"a":`, 100000) + "1" +
				strings.Repeat("}", 100000) + `}`, 400},
		{"deeply nested arrays at the top",
			strings.Repeat("[", 500000) + strings.Repeat("]", 500000), 400},
		{"unterminated nesting", `{` + r0 + `,"x":` + strings.Repeat("[", 500000), 400},
		{"huge exponent in an unknown member", `{` + r0 + `,"x":1e999999999}`, 201},
		{"huge exponent as client_name", `{` + r0 + `,"client_name":1e999999999}`, 400},
		{"long integer in an unknown member",
			`{` + r0 + `,"x":` + strings.Repeat("9", 500000) + `}`, 201},
		{"long integer as issued_at",
			`{` + r0 + `,"client_id_issued_at":` + strings.Repeat("9", 1000) + `}`, 201},
		{"very long client_name",
			`{` + r0 + `,"client_name":"` + strings.Repeat("a", 1000000) + `"}`, 400},
		{"very long redirect URI",
			`{"redirect_uris":["https://app.example.com/` +
				strings.Repeat("a", 1000000) + `"]}`, 400},
		{"very long unknown member name",
			`{` + r0 + `,"` + strings.Repeat("n", 1000000) + `":1}`, 201},
		{"very long duplicate member name",
			`{` + r0 + `,"` + strings.Repeat("n", 500000) + `":1,"` +
				strings.Repeat("n", 500000) + `":2}`, 400},
		{"escaped NUL in client_name", `{` + r0 + `,"client_name":"a\u0000b"}`, 400},
		{"escaped NUL in a redirect URI",
			`{"redirect_uris":["https://app.example.com/\u0000"]}`, 400},
		{"escaped NUL in scope", `{` + r0 + `,"scope":"openid\u0000"}`, 400},
		{"raw NUL byte", `{` + r0 + ",\x00}", 400},
		{"raw NUL byte in a string", `{` + r0 + ",\"client_name\":\"a\x00b\"}", 400},
		{"lone surrogate in client_name", `{` + r0 + `,"client_name":"\ud800"}`, 201},
		{"byte order mark", "\ufeff" + itValidBody, 400},
		{"many unknown members", `{` + r0 + `,` + many(40000, `"m%d":0`) + `}`, 400},
		{"many language-tagged names",
			`{` + r0 + `,` + many(1000, `"client_name#en-x%d":"n"`) + `}`, 400},
		{"many redirect URIs",
			`{"redirect_uris":[` + many(10000, `"https://app.example.com/%d"`) + `]}`, 400},
		{"many contacts",
			`{` + r0 + `,"contacts":[` + many(50000, `"c%d@example.com"`) + `]}`, 400},
		{"many scopes", `{` + r0 + `,"scope":"` +
			strings.TrimSpace(strings.Repeat("s ", 100000)) + `"}`, 400},
		{"many junk keys in jwks",
			`{` + r0 + `,"jwks":{"keys":[` + many(20000, `{"kty":"x%d"}`) + `]}}`, 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := s.count(t)
			r := s.post(t, tc.body)
			if r.status >= 500 {
				t.Fatalf("status %d; body %.200s", r.status, r.body)
			}
			if r.status != tc.status {
				t.Errorf("status %d, want %d; body %.200s", r.status, tc.status, r.body)
			}
			itAssertJSONHeaders(t, r)

			want := before
			if r.status == http.StatusCreated {
				want++
			} else {
				code, _ := r.obj["error"].(string)
				desc, _ := r.obj["error_description"].(string)
				if code == "" || desc == "" {
					t.Errorf("error response without error and description: %.200s", r.body)
				}
				// An answer never echoes a large input back.
				if len(r.body) > 512 {
					t.Errorf("error response is %d bytes long", len(r.body))
				}
			}
			if got := s.count(t); got != want {
				t.Errorf("store holds %d clients, want %d", got, want)
			}
		})
	}
}

func TestIntegrationPassThrough(t *testing.T) {
	s := startDCR(t)

	tests := []struct {
		name    string
		method  string
		path    string
		body    string
		headers []string
		want    string
	}{
		{"authorize", http.MethodGet, "/authorize?response_type=code&client_id=abc", "",
			nil, "backend GET /authorize?response_type=code&client_id=abc probe= body="},
		{"token", http.MethodPost, "/token", "grant_type=authorization_code&code=xyz",
			[]string{"Content-Type: application/x-www-form-urlencoded", "X-Probe: p1"},
			"backend POST /token probe=p1 body=grant_type=authorization_code&code=xyz"},
		{"endpoint with a trailing slash", http.MethodPost, "/register/", itValidBody,
			nil, "backend POST /register/ probe= body=" + itValidBody},
		{"two levels below the endpoint", http.MethodGet, "/register/x/y?z=1", "",
			nil, "backend GET /register/x/y?z=1 probe= body="},
		{"prefix of the endpoint", http.MethodGet, "/registerx", "", nil,
			"backend GET /registerx probe= body="},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := s.count(t)
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			r := s.request(t, tc.method, tc.path, body, tc.headers...)
			if r.status != http.StatusOK || string(r.body) != tc.want {
				t.Errorf("%d %q, want 200 %q", r.status, r.body, tc.want)
			}
			if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("Content-Type %q: the answer is not the backend's", ct)
			}
			if got := s.count(t); got != before {
				t.Errorf("store holds %d clients, want %d", got, before)
			}
		})
	}

	// One level below the endpoint is the RFC 7592 client configuration
	// endpoint, which the handler answers itself.
	notPassed := []struct {
		name   string
		method string
		status int
	}{
		{"GET without a token", http.MethodGet, http.StatusUnauthorized},
		{"PUT without a token", http.MethodPut, http.StatusUnauthorized},
		{"DELETE without a token", http.MethodDelete, http.StatusUnauthorized},
		{"POST", http.MethodPost, http.StatusMethodNotAllowed},
	}
	for _, tc := range notPassed {
		t.Run("below the endpoint "+tc.name, func(t *testing.T) {
			r := s.request(t, tc.method, "/register/x?y=1",
				strings.NewReader(itValidBody), "Content-Type: application/json")
			if r.status != tc.status {
				t.Errorf("status %d, want %d; body %s", r.status, tc.status, r.body)
			}
			itAssertJSONHeaders(t, r)
			if bytes.HasPrefix(r.body, []byte("backend")) {
				t.Errorf("passed through to the backend: %s", r.body)
			}
		})
	}
}

// logEntries returns the JSON lines of the dcr log whose message is msg,
// waiting briefly for them to appear.
func (s *itServer) logEntries(t *testing.T, msg string, want int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var found []map[string]any
		raw, err := os.ReadFile(s.logFile)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("reading log: %v", err)
		}
		for line := range strings.SplitSeq(string(raw), "\n") {
			if line == "" {
				continue
			}
			var e map[string]any
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatalf("log line is not JSON: %q", line)
			}
			if e["msg"] == msg {
				found = append(found, e)
			}
		}
		if len(found) >= want || time.Now().After(deadline) {
			return found
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestIntegrationLogging(t *testing.T) {
	s := startDCR(t)

	okBody := `{"redirect_uris":["https://log-marker-ok.example.com/cb"],` +
		`"client_name":"Log Test App","software_id":"sw-marker-7f3a",` +
		`"grant_types":["authorization_code","refresh_token"]}`
	resp := s.register(t, okBody)
	id := itString(t, resp, "client_id")
	secret := itString(t, resp, "client_secret")
	token := itString(t, resp, "registration_access_token")

	badBody := `{"redirect_uris":["https://log-marker-bad.example.com/cb#frag-9c1d"]}`
	s.postRefused(t, badBody, itRefusal{400, "invalid_redirect_uri", "fragment"})

	registered := s.logEntries(t, "client registered", 1)
	if len(registered) != 1 {
		t.Fatalf("%d \"client registered\" lines, want 1", len(registered))
	}
	e := registered[0]
	want := map[string]any{
		"logger":      "http.handlers.dcr",
		"client_id":   id,
		"client_name": "Log Test App",
		"grant_types": []any{"authorization_code", "refresh_token"},
		"client_ip":   "127.0.0.1",
	}
	for k, v := range want {
		if !reflect.DeepEqual(e[k], v) {
			t.Errorf("client registered: %s = %#v, want %#v", k, e[k], v)
		}
	}

	refused := s.logEntries(t, "registration refused", 1)
	if len(refused) != 1 {
		t.Fatalf("%d \"registration refused\" lines, want 1", len(refused))
	}
	e = refused[0]
	want = map[string]any{
		"logger":    "http.handlers.dcr",
		"error":     "invalid_redirect_uri",
		"rule":      "redirect_uri_fragment",
		"client_ip": "127.0.0.1",
	}
	for k, v := range want {
		if !reflect.DeepEqual(e[k], v) {
			t.Errorf("registration refused: %s = %#v, want %#v", k, e[k], v)
		}
	}

	raw, err := os.ReadFile(s.logFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, leak := range []string{
		secret, token, okBody, badBody, "sw-marker-7f3a", "log-marker-ok",
		"log-marker-bad", "frag-9c1d",
	} {
		if strings.Contains(string(raw), leak) {
			t.Errorf("log file contains %.60q", leak)
		}
	}
}

// TestIntegrationUnstorableJWKS registers a JWKS whose key carries a
// member with U+0000 or an unpaired surrogate, which the key parser
// ignores but PostgreSQL cannot store: both stores refuse it alike.
func TestIntegrationUnstorableJWKS(t *testing.T) {
	s := startDCR(t, "auth_methods client_secret_basic private_key_jwt")
	jwks, _ := itJWKS(t)
	for _, tc := range []struct{ name, value string }{
		{"nul", `"a\u0000b"`},
		{"unpaired surrogate", `"a\ud800b"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := strings.Replace(jwks, `"kid":`, `"note":`+tc.value+`,"kid":`, 1)
			s.postRefused(t, itReg(`"token_endpoint_auth_method":"private_key_jwt",`+
				`"jwks":`+bad), itRefusal{400, "invalid_client_metadata", "U+0000"})
		})
	}
}
