package dcr

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-dcr/caddy-dcr/clientdb"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// cimdServer serves client ID metadata documents over TLS on loopback,
// as a client's own web server would, with answers a test can change.
type cimdServer struct {
	*httptest.Server
	pem string // the server's certificate, for fetch trusted_roots

	mu    sync.Mutex
	docs  map[string]cimdDoc
	fetch map[string]int // fetches per path
}

// cimdDoc is the answer at one path.
type cimdDoc struct {
	status   int
	body     string
	header   map[string]string
	delay    time.Duration
	location string // a redirect target
}

func newCIMDServer(t *testing.T) *cimdServer {
	t.Helper()
	s := &cimdServer{docs: make(map[string]cimdDoc), fetch: make(map[string]int)}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.StartTLS()
	t.Cleanup(s.Close)
	s.pem = stmtWriteFile(t, "cimd-ca.pem", pem.EncodeToMemory(&pem.Block{
		Type: "CERTIFICATE", Bytes: s.Certificate().Raw,
	}))
	return s
}

func (s *cimdServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	d, ok := s.docs[r.URL.Path]
	s.fetch[r.URL.Path]++
	s.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	time.Sleep(d.delay)
	// No Date: the tests move the gateway's clock ahead of this
	// server's, which would make every document look old.
	w.Header()["Date"] = nil
	w.Header().Set("Content-Type", "application/json")
	for k, v := range d.header {
		w.Header().Set(k, v)
	}
	if d.location != "" {
		http.Redirect(w, r, d.location, http.StatusFound)
		return
	}
	w.WriteHeader(cmp(d.status, http.StatusOK))
	io.WriteString(w, d.body)
}

// cmp returns v, or def when v is 0.
func cmp(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// url returns the client ID of the document at path.
func (s *cimdServer) url(path string) string {
	return s.URL + path
}

// publish sets the answer at path.
func (s *cimdServer) publish(path string, d cimdDoc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.docs[path] = d
}

// fetches returns how often path was fetched.
func (s *cimdServer) fetches(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fetch[path]
}

// document returns a metadata document for the client ID id, with the
// members of extra added or replaced.
func cimdDocument(id string, extra map[string]any) string {
	doc := map[string]any{
		"client_id":                  id,
		"client_name":                "MCP Tool",
		"redirect_uris":              []string{"http://127.0.0.1:3000/callback"},
		"grant_types":                []string{"authorization_code", "refresh_token"},
		"response_types":             []string{"code"},
		"token_endpoint_auth_method": "none",
	}
	for k, v := range extra {
		if v == nil {
			delete(doc, k)
		} else {
			doc[k] = v
		}
	}
	b, _ := json.Marshal(doc)
	return string(b)
}

// cimdConfig is the dcr configuration of the CIMD tests: documents from
// the test's server on loopback, with its certificate, bounds of one
// minute to an hour, and enforcement.
func cimdConfig(srv *cimdServer, extra ...string) itFrontConfig {
	dcr := []string{
		"cimd on",
		"cimd_min_ttl 1m",
		"cimd_max_ttl 1h",
		"fetch {\n\t\t\tallow_networks 127.0.0.1/32\n\t\t\ttrusted_roots " + srv.pem +
			"\n\t\t\ttimeout 1s\n\t\t}",
	}
	dcr = append(dcr, extra...)
	return itFrontConfig{dcr: append(dcr, itEnforce()...)}
}

// cimdAuthorize sends an authorization request of the client id.
func (f *itFront) cimdAuthorize(t *testing.T, id string) *itResponse {
	t.Helper()
	return f.authorize(t, false, cimdParams(id))
}

// cimdParams returns the query of an authorization request of the client
// id, with PKCE as public clients must.
func cimdParams(id string) string {
	return itForm("response_type", "code", "client_id", id,
		"redirect_uri", "http://127.0.0.1:3000/callback", "state", "s",
		"code_challenge", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGHjsOQ3ut",
		"code_challenge_method", "S256")
}

// TestIntegrationCIMDFlow takes an MCP-style client whose client ID is the
// URL of its metadata document through the authorization and token
// endpoints of a backend that knows nothing of such documents: the
// gateway fetches the document once, stores the client, and passes the
// requests on with the client's identity; a reader process sees the
// client in the store.
func TestIntegrationCIMDFlow(t *testing.T) {
	srv := newCIMDServer(t)
	id := srv.url("/clients/mcp-tool.json")
	srv.publish("/clients/mcp-tool.json", cimdDoc{body: cimdDocument(id, nil),
		header: map[string]string{"Cache-Control": "max-age=600"}})
	b := newBackend(t)
	b.serve("/.well-known/oauth-authorization-server", itDoc{status: 200,
		body: []byte(`{"issuer":"http://localhost:9080","authorization_endpoint":` +
			`"http://localhost:9080/oauth/authorize"}`),
		header: http.Header{"Content-Type": {"application/json"}}})
	f := startFront(t, b, cimdConfig(srv))

	t.Run("discovery advertises documents", func(t *testing.T) {
		r := f.request(t, http.MethodGet, "/.well-known/oauth-authorization-server", nil)
		b.take()
		if r.obj["client_id_metadata_document_supported"] != true {
			t.Errorf("metadata %s: no client_id_metadata_document_supported", r.body)
		}
	})

	want := itIdentity{id, "MCP Tool", "public"}
	t.Run("authorize", func(t *testing.T) {
		seen := f.passed(t, f.cimdAuthorize(t, id))
		itAssertIdentity(t, seen.Header, want)
	})
	t.Run("token", func(t *testing.T) {
		seen := f.passed(t, f.token(t, itForm("grant_type", "authorization_code",
			"code", "c", "redirect_uri", "http://127.0.0.1:3000/callback",
			"client_id", id, "code_verifier", "v")))
		itAssertIdentity(t, seen.Header, want)
	})
	t.Run("stored as a client of kind cimd", func(t *testing.T) {
		c := f.lookup(t, id)
		if c.Kind != clientdb.KindMetadataDocument || c.HasSecret() ||
			c.RegistrationTokenHash != "" || c.Metadata.TokenEndpointAuthMethod != "none" {
			t.Errorf("stored %+v", c)
		}
		if got := srv.fetches("/clients/mcp-tool.json"); got != 1 {
			t.Errorf("document fetched %d times for two requests, want 1", got)
		}
	})
	t.Run("a reader process sees it", func(t *testing.T) {
		reader := storeStartChild(t, "^TestHelperReader$",
			envReaderDB+"="+f.store, envReaderMode+"=answer")
		if err := reader.waitFor("ready", time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := reader.send(id); err != nil {
			t.Fatal(err)
		}
		lines, err := reader.finish(time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		wantLine := "found " + id + " kind=cimd name=MCP Tool"
		if !slicesContains(lines, wantLine) {
			t.Errorf("reader answered %q, want %q", lines, wantLine)
		}
	})
	t.Run("an operator disables and enables it", func(t *testing.T) {
		f.itCLI(t, "disable", id)
		r := f.cimdAuthorize(t, id)
		f.refused(t)
		if r.status != http.StatusBadRequest {
			t.Errorf("disabled document client: status %d, want 400", r.status)
		}
		f.itCLI(t, "enable", id)
		f.passed(t, f.cimdAuthorize(t, id))
	})
	t.Run("the registered redirect URI holds", func(t *testing.T) {
		r := f.authorize(t, false, itForm("response_type", "code", "client_id", id,
			"redirect_uri", "https://evil.example/cb"))
		f.refused(t)
		if r.status != http.StatusBadRequest {
			t.Errorf("status %d for a redirect URI the document does not list", r.status)
		}
	})
}

// slicesContains reports whether list holds s.
func slicesContains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

// TestIntegrationCIMDRefusals serves documents the gateway must not use
// and checks each refusal names its reason, at the authorization endpoint
// as an error page and at the token endpoint as invalid_client, and that
// nothing is stored.
func TestIntegrationCIMDRefusals(t *testing.T) {
	srv := newCIMDServer(t)
	pub := func(path string, d cimdDoc) string {
		if d.body == "" && d.location == "" {
			d.body = cimdDocument(srv.url(path), nil)
		}
		srv.publish(path, d)
		return srv.url(path)
	}
	other, _ := url.Parse(srv.URL)
	otherHost := "https://localhost:" + other.Port() + "/c/valid"

	cases := []struct {
		name string
		id   string
		desc string
	}{
		{"oversized", pub("/c/big", cimdDoc{body: cimdDocument(srv.url("/c/big"),
			map[string]any{"client_name": strings.Repeat("x", 6000)})}),
			"larger than"},
		{"wrong client_id", pub("/c/wrong", cimdDoc{
			body: cimdDocument(srv.url("/c/other"), nil)}), "client_id"},
		{"carries a secret", pub("/c/secret", cimdDoc{body: cimdDocument(srv.url("/c/secret"),
			map[string]any{"client_secret": "s3cret"})}), "client_secret"},
		{"shared-secret auth", pub("/c/basic", cimdDoc{body: cimdDocument(srv.url("/c/basic"),
			map[string]any{"token_endpoint_auth_method": "client_secret_basic"})}),
			"token_endpoint_auth_method"},
		{"no redirect_uris", pub("/c/noredir", cimdDoc{body: cimdDocument(srv.url("/c/noredir"),
			map[string]any{"redirect_uris": nil})}), "redirect_uris"},
		{"private key", pub("/c/key", cimdDoc{body: cimdDocument(srv.url("/c/key"),
			map[string]any{"jwks": map[string]any{"keys": []any{map[string]any{
				"kty": "EC", "crv": "P-256", "x": "AQ", "y": "AQ", "d": "AQ"}}}})}),
			"private"},
		{"redirect to a private address", pub("/c/private", cimdDoc{
			location: "https://10.255.255.1/c/valid"}), "redirects are not followed"},
		{"redirect to another host", pub("/c/elsewhere", cimdDoc{location: otherHost}),
			"redirects are not followed"},
		{"redirect within the host", pub("/c/moved", cimdDoc{location: "/c/valid"}),
			"redirects are not followed"},
		{"not JSON", pub("/c/html", cimdDoc{body: cimdDocument(srv.url("/c/html"), nil),
			header: map[string]string{"Content-Type": "text/html"}}), "Content-Type"},
		{"slow", pub("/c/slow", cimdDoc{delay: 3 * time.Second}), "could not be fetched"},
		{"not found", srv.url("/c/missing"), "status 404"},
		{"policy refuses", pub("/c/implicit", cimdDoc{body: cimdDocument(srv.url("/c/implicit"),
			map[string]any{"grant_types": []string{"implicit"},
				"response_types": []string{"token"}})}), "implicit"},
		{"fragment in the URL", srv.url("/c/valid#frag"), "fragment"},
		{"dot segment", srv.url("/c/../c/valid"), "segment"},
		{"no path", srv.url(""), "path"},
		{"loopback not allowed", strings.Replace(srv.url("/c/valid"), "127.0.0.1", "[::1]", 1),
			"could not be fetched"},
	}
	pub("/c/valid", cimdDoc{})

	b := newBackend(t)
	f := startFront(t, b, cimdConfig(srv))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := f.cimdAuthorize(t, tc.id)
			f.refused(t)
			itAssertErrorPage(t, r, http.StatusBadRequest, "invalid_request", tc.desc)
			if !strings.Contains(string(r.body), "client metadata document") {
				t.Errorf("page does not say the metadata document failed:\n%s", r.body)
			}

			tr := f.token(t, itForm("grant_type", "authorization_code", "code", "c",
				"client_id", tc.id))
			f.refused(t)
			if tr.status != http.StatusUnauthorized || tr.obj["error"] != "invalid_client" {
				t.Errorf("token: status %d %s, want 401 invalid_client", tr.status, tr.body)
			}
			if _, err := f.reader(t).Lookup(tc.id); err == nil {
				t.Errorf("client %s stored", tc.id)
			}
			// The token request came within the failure's memory:
			// the document was not fetched for it again.
			if p, ok := strings.CutPrefix(tc.id, srv.URL); ok && srv.fetches(p) > 1 {
				t.Errorf("a failing document fetched %d times for two requests",
					srv.fetches(p))
			}
		})
	}

	t.Run("cimd_hosts", func(t *testing.T) {
		f.reload(t, cimdConfig(srv, "cimd_hosts *.example.com"))
		r := f.cimdAuthorize(t, srv.url("/c/valid"))
		f.refused(t)
		itAssertErrorPage(t, r, http.StatusBadRequest, "invalid_request",
			"not among the hosts")
	})
}

// TestIntegrationCIMDRefresh changes a document between fetches: it is
// fetched again when its caching headers say, within the configured
// bounds; a failed refresh keeps the last good copy for the grace period
// and no longer; concurrent first requests for one URL fetch it once.
func TestIntegrationCIMDRefresh(t *testing.T) {
	clock := itUseClock(t)
	srv := newCIMDServer(t)
	path := "/clients/changing.json"
	id := srv.url(path)
	version := func(name, cache string) {
		srv.publish(path, cimdDoc{
			body:   cimdDocument(id, map[string]any{"client_name": name}),
			header: map[string]string{"Cache-Control": cache},
		})
	}
	version("Tool v1", "max-age=600")
	b := newBackend(t)
	f := startFront(t, b, cimdConfig(srv, "cimd_grace 30m"))
	name := func() string {
		t.Helper()
		seen := f.passed(t, f.cimdAuthorize(t, id))
		return seen.Header.Get("X-DCR-Client-Name")
	}

	if got := name(); got != "Tool v1" {
		t.Fatalf("name %q, want Tool v1", got)
	}

	// A refresh that finds the document unchanged changes nothing.
	clock.advance(11 * time.Minute)
	name()
	if got := srv.fetches(path); got != 2 {
		t.Fatalf("document fetched %d times, want 2 after its max-age", got)
	}
	if n := cimdUpdates(t, f, id); n != 0 {
		t.Errorf("%d update events for an unchanged document", n)
	}

	version("Tool v2", "max-age=7200") // above cimd_max_ttl
	clock.advance(5 * time.Minute)
	if got := name(); got != "Tool v1" {
		t.Errorf("after 5 of max-age's 10 minutes: name %q, want the cached Tool v1", got)
	}
	clock.advance(6 * time.Minute)
	if got := name(); got != "Tool v2" {
		t.Errorf("after max-age: name %q, want Tool v2", got)
	}
	if got := f.lookup(t, id).Metadata.ClientName; got != "Tool v2" {
		t.Errorf("stored name %q, want Tool v2", got)
	}
	if n := cimdUpdates(t, f, id); n != 1 {
		t.Errorf("%d update events after the document changed, want 1", n)
	}
	fetched := srv.fetches(path)

	// max-age above cimd_max_ttl (1h) counts as an hour.
	clock.advance(59 * time.Minute)
	name()
	if got := srv.fetches(path); got != fetched {
		t.Errorf("fetched again before cimd_max_ttl")
	}
	srv.publish(path, cimdDoc{status: http.StatusInternalServerError, body: "{}"})
	clock.advance(2 * time.Minute)
	if got := name(); got != "Tool v2" {
		t.Errorf("refresh failed within the grace period: name %q, want the last good copy", got)
	}
	if got := srv.fetches(path); got <= fetched {
		t.Errorf("not fetched again after cimd_max_ttl")
	}
	clock.advance(30 * time.Minute)
	r := f.cimdAuthorize(t, id)
	f.refused(t)
	itAssertErrorPage(t, r, http.StatusBadRequest, "invalid_request", "status 500")

	t.Run("concurrent first requests fetch once", func(t *testing.T) {
		slow := "/clients/slow-once.json"
		sid := srv.url(slow)
		srv.publish(slow, cimdDoc{body: cimdDocument(sid, nil), delay: 300 * time.Millisecond})
		var wg sync.WaitGroup
		var passed atomic.Int32
		for range 8 {
			wg.Go(func() {
				r, err := f.do(http.MethodGet, "/oauth/authorize?"+cimdParams(sid), nil)
				if err == nil && r.status == http.StatusOK {
					passed.Add(1)
				}
			})
		}
		wg.Wait()
		b.take()
		if passed.Load() != 8 {
			t.Errorf("%d of 8 requests passed", passed.Load())
		}
		if got := srv.fetches(slow); got != 1 {
			t.Errorf("document fetched %d times for 8 concurrent requests, want 1", got)
		}
	})
}

// cimdUpdates returns the number of update events of the client id in the
// store's audit trail.
func cimdUpdates(t *testing.T, f *itFront, id string) int {
	t.Helper()
	n := 0
	err := f.reader(t).View(func(tx clientdb.Tx) error {
		events, err := tx.EventsSince(0, 10000)
		for _, e := range events {
			if e.ClientID == id && e.Op == clientdb.OpUpdate {
				n++
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// amendingAuthPolicy is a policy module of the tests that makes every
// client authenticate with a shared secret.
type amendingAuthPolicy struct{}

func init() { caddy.RegisterModule(amendingAuthPolicy{}) }

func (amendingAuthPolicy) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "dcr.policies.test_secret_auth",
		New: func() caddy.Module { return new(amendingAuthPolicy) }}
}

func (amendingAuthPolicy) Check(_ context.Context, in *PolicyInput) error {
	in.Metadata.TokenEndpointAuthMethod = "client_secret_basic"
	return nil
}

func (*amendingAuthPolicy) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	return nil
}

// TestIntegrationCIMDPolicyAmendment checks that the rules of metadata
// documents hold after the policy modules: a policy that gives a document
// client a shared-secret method is refused, not stored.
func TestIntegrationCIMDPolicyAmendment(t *testing.T) {
	srv := newCIMDServer(t)
	id := srv.url("/clients/amended.json")
	srv.publish("/clients/amended.json", cimdDoc{body: cimdDocument(id, nil)})
	b := newBackend(t)
	f := startFront(t, b, cimdConfig(srv, "policy test_secret_auth"))
	r := f.cimdAuthorize(t, id)
	f.refused(t)
	itAssertErrorPage(t, r, http.StatusBadRequest, "invalid_request", "shared secret")
	if _, err := f.reader(t).Lookup(id); err == nil {
		t.Errorf("client %s stored", id)
	}
}

// TestIntegrationCIMDExpiry lets a metadata document client go unused for
// expire_unused: it is removed without a tombstone, and its next request
// fetches the document again and passes, where a registered client would
// be told to register again.
func TestIntegrationCIMDExpiry(t *testing.T) {
	clock := itUseClock(t)
	srv := newCIMDServer(t)
	path := "/clients/idle.json"
	id := srv.url(path)
	srv.publish(path, cimdDoc{body: cimdDocument(id, nil)})
	b := newBackend(t)
	cfg := cimdConfig(srv, "expire_unused 1h")
	f := startFront(t, b, cfg)
	f.passed(t, f.cimdAuthorize(t, id))

	clock.advance(2 * time.Hour)
	f.reload(t, cfg)
	f.request(t, http.MethodGet, "/api", nil)
	b.take()
	_, err := itPollClient(t, f.reader(t), id, 20*time.Second,
		func(_ *clientdb.Client, err error) bool {
			return errors.Is(err, clientdb.ErrNotFound)
		})
	if !errors.Is(err, clientdb.ErrNotFound) {
		t.Fatalf("unused document client: %v, want it forgotten (ErrNotFound)", err)
	}
	f.passed(t, f.cimdAuthorize(t, id))
	if got := srv.fetches(path); got != 2 {
		t.Errorf("document fetched %d times, want 2: once more after expiry", got)
	}
}
