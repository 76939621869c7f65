package dcr

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/fcgi"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
	"github.com/caddy-dcr/caddy-dcr/internal/pgtest"

	"github.com/caddyserver/caddy/v2/caddytest"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy/fastcgi"
)

// The fronting suite puts the dcr handler in front of an OAuth backend
// stand-in written here: an httptest server that serves metadata
// documents as each test sets them and echoes, as JSON, every other
// request that reaches it. Caddy is caddytest's in-process one, as in the
// registration suite, so these tests cannot run in parallel either.

// itFrontCaddyfile is the configuration of the fronting tests. Its verbs
// fill in more global options, the log file, a number that makes every
// load a new config, the store, the dcr subdirectives, other directives of
// the site, the backend's address and the reverse_proxy subdirectives.
const itFrontCaddyfile = `{
	admin localhost:2999
	http_port 9080
	https_port 9443
	auto_https off
%s	log dcr {
		output file %q
		format json
		include http.handlers.dcr
	}
}

http://localhost:9080 {
	vars test_config_generation %d
	dcr {
		store %s
%s	}
%s	reverse_proxy %s {
%s	}
}
`

// itFrontConfig is what a fronting test configures.
type itFrontConfig struct {
	global []string // more global options
	dcr    []string // dcr subdirectives, one a line
	site   []string // other directives of the site
	proxy  []string // reverse_proxy subdirectives
}

// itLines indents lines by depth tabs, each ending in a newline.
func itLines(depth int, lines []string) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(strings.Repeat("\t", depth) + l + "\n")
	}
	return b.String()
}

// itEnforce returns an enforce block for the backend's endpoints, with
// extra lines inside it.
func itEnforce(extra ...string) []string {
	lines := []string{"enforce {", "\tauthorize /oauth/authorize", "\ttoken /oauth/token"}
	for _, e := range extra {
		lines = append(lines, "\t"+e)
	}
	return append(lines, "}")
}

// itCompressionOff makes reverse_proxy ask the backend for nothing but
// what the client, through the handler, asked for: Go's transport
// otherwise adds "Accept-Encoding: gzip" to a request without one and
// decompresses the answer itself.
var itCompressionOff = []string{"transport http {", "\tcompression off", "}"}

// itFront is the running Caddy with the dcr handler in front of a
// backend stand-in.
type itFront struct {
	*itServer
	backend *itBackend
	loads   int // configs loaded so far
}

// startFront loads cfg with a fresh store and log file, proxying to b.
func startFront(t *testing.T, b *itBackend, cfg itFrontConfig) *itFront {
	t.Helper()
	dir := t.TempDir()
	itUnloadAtEnd(t)
	f := &itFront{
		itServer: &itServer{
			store:   filepath.Join(dir, "clients.db"),
			logFile: filepath.Join(dir, "dcr.log"),
			client:  itClient(),
		},
		backend: b,
	}
	if itOnPostgres {
		// Registered after itUnloadAtEnd, so it runs before it: the
		// database is dropped once Caddy no longer uses it.
		f.store, f.pg = pgtest.Database(t), true
		itUnloadAtEnd(t)
	}
	f.reload(t, cfg)
	return f
}

// reload loads cfg with the same store, log file and backend: a config
// reload, which also makes the old handler write the use it recorded.
// Caddy ignores a load of the config it runs, so each load differs in a
// number.
func (f *itFront) reload(t *testing.T, cfg itFrontConfig) {
	t.Helper()
	f.loads++
	config := fmt.Sprintf(itFrontCaddyfile, itLines(1, cfg.global), f.logFile, f.loads, f.storeArgs(),
		itLines(2, itRateLimitOff(cfg.dcr)), itLines(1, cfg.site), f.backend.addr, itLines(2, cfg.proxy))
	caddytest.NewTester(t).InitServer(config, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
}

// raw sends a request to the site and returns the answer as it came,
// without decoding it.
func (f *itFront) raw(t *testing.T, method, path string, headers ...string) *itResponse {
	t.Helper()
	req, err := http.NewRequest(method, itSite+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ":")
		req.Header.Set(name, strings.TrimSpace(value))
	}
	resp, err := f.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return &itResponse{status: resp.StatusCode, header: resp.Header, body: body}
}

// authorize sends an authorization request with params, as a GET query
// or, with post, as a form body.
func (f *itFront) authorize(t *testing.T, post bool, params string,
	headers ...string) *itResponse {
	t.Helper()
	if post {
		return f.request(t, http.MethodPost, "/oauth/authorize", strings.NewReader(params),
			append([]string{"Content-Type: application/x-www-form-urlencoded"}, headers...)...)
	}
	return f.request(t, http.MethodGet, "/oauth/authorize?"+params, nil, headers...)
}

// token sends a token request with form as its body.
func (f *itFront) token(t *testing.T, form string, headers ...string) *itResponse {
	t.Helper()
	return f.request(t, http.MethodPost, "/oauth/token", strings.NewReader(form),
		append([]string{"Content-Type: application/x-www-form-urlencoded"}, headers...)...)
}

// itForm returns name-value pairs form-encoded in the order given.
func itForm(kv ...string) string {
	var b strings.Builder
	for i := 0; i+1 < len(kv); i += 2 {
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(url.QueryEscape(kv[i]) + "=" + url.QueryEscape(kv[i+1]))
	}
	return b.String()
}

// itBasic returns the Authorization header of client_secret_basic, with
// both parts form-encoded as RFC 6749 section 2.3.1 requires.
func itBasic(id, secret string) string {
	creds := url.QueryEscape(id) + ":" + url.QueryEscape(secret)
	return "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(creds))
}

// itBackend is the OAuth backend stand-in. It serves the metadata
// documents set with serve, answers 404 for other well-known paths, and
// answers every other request with itSeen as JSON. It records every
// request that reaches it.
type itBackend struct {
	addr string

	mu   sync.Mutex
	docs map[string]itDoc
	seen []itSeen
}

// itDoc is an answer the backend gives at a path.
type itDoc struct {
	status      int
	header      http.Header
	body        []byte
	gzipIfAsked bool // compress when the request accepts gzip
	chunked     bool // send without Content-Length
}

// itSeen is a request as it reached the backend.
type itSeen struct {
	Method string      `json:"method"`
	Path   string      `json:"path"`
	Query  string      `json:"query"`
	Body   string      `json:"body"`
	Header http.Header `json:"header"`
}

// newBackend starts a backend stand-in on a loopback port.
func newBackend(t *testing.T) *itBackend {
	b := &itBackend{docs: make(map[string]itDoc)}
	srv := httptest.NewServer(b)
	t.Cleanup(srv.Close)
	b.addr = srv.Listener.Addr().String()
	return b
}

// newFCGIBackend starts a backend stand-in that speaks FastCGI, as a PHP
// application behind php_fastcgi would.
func newFCGIBackend(t *testing.T) *itBackend {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &itBackend{docs: make(map[string]itDoc), addr: l.Addr().String()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fcgi.Serve(l, b)
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
	})
	return b
}

// serve makes the backend answer d at path.
func (b *itBackend) serve(path string, d itDoc) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.docs[path] = d
}

// take returns the requests seen since the last call.
func (b *itBackend) take() []itSeen {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.seen
	b.seen = nil
	return s
}

func (b *itBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	seen := itSeen{
		Method: r.Method,
		Path:   r.URL.Path,
		Query:  r.URL.RawQuery,
		Body:   string(body),
		Header: r.Header.Clone(),
	}
	b.mu.Lock()
	b.seen = append(b.seen, seen)
	d, ok := b.docs[r.URL.Path]
	b.mu.Unlock()

	switch {
	case ok:
		d.write(w, r)
	case strings.Contains(r.URL.Path, "/.well-known/"):
		http.NotFound(w, r)
	default:
		out, _ := json.Marshal(seen)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Backend", "echo")
		w.Write(out)
	}
}

func (d itDoc) write(w http.ResponseWriter, r *http.Request) {
	body := d.body
	for k, v := range d.header {
		w.Header()[k] = slices.Clone(v)
	}
	if d.gzipIfAsked && strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		body = itGzip(body)
		w.Header().Set("Content-Encoding", "gzip")
	}
	if !d.chunked {
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	}
	w.WriteHeader(d.status)
	if !d.chunked {
		w.Write(body)
		return
	}
	// Flushing a part first makes net/http send the rest chunked.
	half := len(body) / 2
	w.Write(body[:half])
	w.(http.Flusher).Flush()
	w.Write(body[half:])
}

// itGzip compresses b.
func itGzip(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// itJSONDoc is a 200 JSON document with the headers a metadata endpoint
// typically sends.
func itJSONDoc(body string) itDoc {
	return itDoc{
		status: http.StatusOK,
		header: http.Header{
			"Content-Type":                {"application/json; charset=utf-8"},
			"Cache-Control":               {"public, max-age=3600"},
			"Access-Control-Allow-Origin": {"*"},
			"X-Backend-Marker":            {"meta-7d41"},
		},
		body: []byte(body),
	}
}

// itIssuerDoc is backend metadata for issuer, with odd but valid JSON
// (escapes, a number with a trailing zero, nesting) that must survive.
func itIssuerDoc(issuer string) string {
	return `{
  "issuer": "` + issuer + `",
  "authorization_endpoint": "` + issuer + `/oauth/authorize",
  "token_endpoint": "` + issuer + `/oauth/token",
  "jwks_uri": "` + issuer + `/jwks.json",
  "scopes_supported": ["openid", "profile"],
  "response_types_supported": ["code"],
  "token_endpoint_auth_methods_supported": ["client_secret_basic"],
  "grant_types_supported": ["authorization_code"],
  "code_challenge_methods_supported": ["S256"],
  "x_vendor": {"nested": [1, 2.50, true, null], "text": "caf\u00e9 \/ <b>"},
  "service_documentation": "https://docs.example.com/?a=1&b=2"
}`
}

// itMember is one member of a JSON object as sent.
type itMember struct {
	name  string
	value json.RawMessage
}

// itMembers returns the members of the JSON object body in order.
func itMembers(t *testing.T, body []byte) []itMember {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not a JSON object: %q", body)
	}
	var out []itMember
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("decoding %q: %v", body, err)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("decoding %q: %v", body, err)
		}
		out = append(out, itMember{tok.(string), v})
	}
	if _, err := dec.Token(); err != nil {
		t.Fatalf("decoding %q: %v", body, err)
	}
	if dec.More() {
		t.Fatalf("trailing data after the object in %q", body)
	}
	return out
}

// itCompact returns raw JSON without insignificant whitespace, so that a
// value can be compared with the one the backend sent byte for byte.
func itCompact(t *testing.T, raw []byte) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		t.Fatalf("compacting %q: %v", raw, err)
	}
	return b.String()
}

// itInjectCase is a metadata document and how the handler must change it.
type itInjectCase struct {
	name    string
	dcr     []string   // the dcr subdirectives
	path    string     // where the backend serves the document
	changed []itChange // members the handler sets in place
	added   []itChange // members the handler appends, in order
}

// itChange is a member the handler sets, with its value compacted.
type itChange struct {
	name, value string
}

func TestIntegrationDiscoveryInjects(t *testing.T) {
	b := newBackend(t)
	const site = "http://localhost:9080"
	const registration = `"` + site + `/register"`

	// Every path a client may derive from an issuer: RFC 8414 inserts the
	// issuer's path after the well-known part, OpenID Connect Discovery
	// appends the well-known part to the issuer.
	paths := []struct {
		name, path, issuer string
	}{
		{"oauth", "/.well-known/oauth-authorization-server", site},
		{"oauth with path insertion", "/.well-known/oauth-authorization-server/tenant/a",
			site + "/tenant/a"},
		{"openid", "/.well-known/openid-configuration", site},
		{"openid below the issuer path", "/tenant/a/.well-known/openid-configuration",
			site + "/tenant/a"},
		{"openid with path insertion", "/.well-known/openid-configuration/tenant/a",
			site + "/tenant/a"},
	}
	for _, p := range paths {
		b.serve(p.path, itJSONDoc(itIssuerDoc(p.issuer)))
	}
	// A document sent without Content-Length is changed all the same.
	chunked := itJSONDoc(itIssuerDoc(site + "/chunked"))
	chunked.chunked = true
	paths = append(paths, struct{ name, path, issuer string }{
		"chunked", "/.well-known/oauth-authorization-server/chunked", site + "/chunked"})
	b.serve(paths[len(paths)-1].path, chunked)
	const bare = "/.well-known/oauth-authorization-server/bare"
	b.serve(bare, itJSONDoc(`{"issuer":"`+site+`/bare","token_endpoint":"`+
		site+`/oauth/token"}`))
	const own = "/.well-known/oauth-authorization-server/own"
	b.serve(own, itJSONDoc(`{"issuer":"`+site+`/own",`+
		`"registration_endpoint":"https://elsewhere.example.com/reg",`+
		`"response_types_supported":["code","code id_token"]}`))

	tests := []itInjectCase{}
	for _, p := range paths {
		tests = append(tests, itInjectCase{
			name: p.name, path: p.path,
			changed: []itChange{
				{"token_endpoint_auth_methods_supported",
					`["client_secret_basic","client_secret_post","none"]`},
				{"grant_types_supported", `["authorization_code","refresh_token"]`},
			},
			added: []itChange{{"registration_endpoint", registration}},
		})
	}
	tests = append(tests, itInjectCase{
		// The policy decides what is listed: no public clients here, and
		// one more grant type.
		name: "confidential policy",
		dcr: []string{"auth_methods client_secret_post",
			"grant_types authorization_code client_credentials"},
		path: paths[0].path,
		changed: []itChange{
			{"token_endpoint_auth_methods_supported",
				`["client_secret_basic","client_secret_post"]`},
			{"grant_types_supported", `["authorization_code","client_credentials"]`},
		},
		added: []itChange{{"registration_endpoint", registration}},
	}, itInjectCase{
		name: "lists absent",
		path: bare,
		added: []itChange{
			{"registration_endpoint", registration},
			{"token_endpoint_auth_methods_supported",
				`["client_secret_basic","client_secret_post","none"]`},
			{"grant_types_supported", `["authorization_code","refresh_token"]`},
			{"response_types_supported", `["code"]`},
		},
	}, itInjectCase{
		name:    "registration endpoint replaced",
		path:    own,
		changed: []itChange{{"registration_endpoint", registration}},
		added: []itChange{
			{"token_endpoint_auth_methods_supported",
				`["client_secret_basic","client_secret_post","none"]`},
			{"grant_types_supported", `["authorization_code","refresh_token"]`},
		},
	})

	f := startFront(t, b, itFrontConfig{proxy: itCompressionOff})
	loaded := ""
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if cfg := strings.Join(tc.dcr, "\n"); cfg != loaded {
				f.reload(t, itFrontConfig{dcr: tc.dcr, proxy: itCompressionOff})
				loaded = cfg
			}
			b.mu.Lock()
			orig := b.docs[tc.path]
			b.mu.Unlock()
			b.take()

			// Clients send Accept-Encoding by default; the handler must
			// still get a document it can change.
			r := f.raw(t, http.MethodGet, tc.path,
				"Accept-Encoding: gzip, deflate, br")
			if r.status != http.StatusOK {
				t.Fatalf("status %d, want 200; body %s", r.status, r.body)
			}
			for _, s := range b.take() {
				if ae := s.Header.Values("Accept-Encoding"); len(ae) != 0 {
					t.Errorf("the backend saw Accept-Encoding %q", ae)
				}
			}
			for name, want := range orig.header {
				if got := r.header.Values(name); !slices.Equal(got, want) {
					t.Errorf("header %s: %q, want the backend's %q", name, got, want)
				}
			}
			if got, want := r.header.Get("Content-Length"), fmt.Sprint(len(r.body)); got != want {
				t.Errorf("Content-Length %s, body is %s bytes", got, want)
			}
			if ce := r.header.Get("Content-Encoding"); ce != "" {
				t.Errorf("Content-Encoding %q on a document the backend sent plain", ce)
			}

			// The backend's members in their order, each unchanged but
			// those the handler sets; then the appended ones.
			got := itMembers(t, r.body)
			want := itMembers(t, orig.body)
			set := map[string]string{}
			for _, c := range tc.changed {
				set[c.name] = c.value
			}
			if len(got) != len(want)+len(tc.added) {
				t.Fatalf("%d members, want %d + %d added:\n%s",
					len(got), len(want), len(tc.added), r.body)
			}
			for i, m := range want {
				g := got[i]
				if g.name != m.name {
					t.Errorf("member %d is %q, want %q", i, g.name, m.name)
					continue
				}
				w, ok := set[m.name]
				if !ok {
					w = itCompact(t, m.value)
				}
				if v := itCompact(t, g.value); v != w {
					t.Errorf("%s: %s, want %s", m.name, v, w)
				}
			}
			for i, a := range tc.added {
				g := got[len(want)+i]
				if g.name != a.name || itCompact(t, g.value) != a.value {
					t.Errorf("member %d: %s %s, want %s %s", len(want)+i,
						g.name, g.value, a.name, a.value)
				}
			}
		})
	}
}

func TestIntegrationDiscoveryPassThrough(t *testing.T) {
	b := newBackend(t)
	meta := itIssuerDoc("http://localhost:9080")

	gz := itJSONDoc("")
	gz.body = itGzip([]byte(meta))
	gz.header.Set("Content-Encoding", "gzip")
	gz.header.Set("Vary", "Accept-Encoding")

	html := itJSONDoc("<html><body>metadata lives elsewhere</body></html>")
	html.header.Set("Content-Type", "text/html; charset=utf-8")

	notFound := itJSONDoc(`{"error":"not_found"}`)
	notFound.status = http.StatusNotFound

	failed := itJSONDoc(`{"error":"server_error"}`)
	failed.status = http.StatusInternalServerError

	// Above the 1 MiB the handler rewrites, announced by Content-Length
	// or found out while reading.
	big := itJSONDoc(`{"issuer":"http://localhost:9080","padding":"` +
		strings.Repeat("x", 1<<20) + `"}`)
	bigChunked := big
	bigChunked.chunked = true

	docs := []struct {
		name string
		path string
		doc  itDoc
		req  string // the request method
	}{
		{"gzip", "/.well-known/oauth-authorization-server", gz, http.MethodGet},
		{"html", "/.well-known/openid-configuration", html, http.MethodGet},
		{"404 with JSON", "/.well-known/oauth-authorization-server/t404", notFound,
			http.MethodGet},
		{"500 with JSON", "/.well-known/oauth-authorization-server/t500", failed,
			http.MethodGet},
		{"JSON array", "/t/array/.well-known/openid-configuration",
			itJSONDoc(`[{"issuer":"x"}]`), http.MethodGet},
		{"JSON with a repeated member", "/t/dup/.well-known/openid-configuration",
			itJSONDoc(`{"issuer":"a","issuer":"b"}`), http.MethodGet},
		{"broken JSON", "/t/broken/.well-known/openid-configuration",
			itJSONDoc(`{"issuer":`), http.MethodGet},
		{"JSON string", "/t/string/.well-known/openid-configuration",
			itJSONDoc(`"issuer"`), http.MethodGet},
		{"larger than 1 MiB", "/t/big/.well-known/openid-configuration", big,
			http.MethodGet},
		{"larger than 1 MiB, chunked", "/t/bigc/.well-known/openid-configuration",
			bigChunked, http.MethodGet},
		{"POST", "/t/post/.well-known/openid-configuration", itJSONDoc(meta),
			http.MethodPost},
		{"HEAD", "/t/head/.well-known/openid-configuration", itJSONDoc(meta),
			http.MethodHead},
	}
	for _, d := range docs {
		b.serve(d.path, d.doc)
	}
	f := startFront(t, b, itFrontConfig{proxy: itCompressionOff})

	for _, d := range docs {
		t.Run(d.name, func(t *testing.T) {
			b.take()
			// Asking for gzip explicitly keeps Go's client from
			// decompressing, so the body is compared as sent.
			r := f.raw(t, d.req, d.path, "Accept-Encoding: gzip")
			if r.status != d.doc.status {
				t.Errorf("status %d, want %d", r.status, d.doc.status)
			}
			want := d.doc.body
			if d.req == http.MethodHead {
				want = nil
			}
			if !bytes.Equal(r.body, want) {
				t.Errorf("body changed:\n%.300q\nwant\n%.300q", r.body, want)
			}
			length := fmt.Sprint(len(d.doc.body))
			if d.doc.chunked {
				length = ""
			}
			if got := r.header.Get("Content-Length"); got != length {
				t.Errorf("Content-Length %q, want the backend's %q", got, length)
			}
			for name, v := range d.doc.header {
				if got := r.header.Values(name); !slices.Equal(got, v) {
					t.Errorf("header %s: %q, want %q", name, got, v)
				}
			}
			if seen := b.take(); len(seen) != 1 {
				t.Errorf("the backend saw %d requests, want 1", len(seen))
			} else if d.req == http.MethodGet && seen[0].Header.Get("Accept-Encoding") != "" {
				t.Errorf("the backend saw Accept-Encoding %q",
					seen[0].Header.Get("Accept-Encoding"))
			}
		})
	}

	// A backend without metadata: its 404 reaches the client as it was.
	for _, path := range []string{
		"/.well-known/oauth-authorization-server/none",
		"/none/.well-known/openid-configuration",
	} {
		t.Run("no metadata at "+path, func(t *testing.T) {
			r := f.raw(t, http.MethodGet, path, "Accept-Encoding: gzip")
			if r.status != http.StatusNotFound || string(r.body) != "404 page not found\n" {
				t.Errorf("%d %q, want the backend's 404", r.status, r.body)
			}
			if strings.Contains(string(r.body), "registration_endpoint") {
				t.Error("metadata invented for a backend that has none")
			}
		})
	}

	// With discovery off even a document the handler could change passes
	// as it was.
	plain := itJSONDoc(meta)
	b.serve("/.well-known/oauth-authorization-server/off", plain)
	f.reload(t, itFrontConfig{dcr: []string{"discovery off"}, proxy: itCompressionOff})
	t.Run("discovery off", func(t *testing.T) {
		r := f.raw(t, http.MethodGet, "/.well-known/oauth-authorization-server/off",
			"Accept-Encoding: gzip")
		if r.status != http.StatusOK || !bytes.Equal(r.body, plain.body) {
			t.Errorf("%d %q, want the document as the backend sent it", r.status, r.body)
		}
		if got, want := r.header.Get("Content-Length"), fmt.Sprint(len(plain.body)); got != want {
			t.Errorf("Content-Length %s, want %s", got, want)
		}
	})
}

func TestIntegrationDiscoveryAcceptEncoding(t *testing.T) {
	b := newBackend(t)
	const path = "/.well-known/oauth-authorization-server"
	doc := itJSONDoc(itIssuerDoc("http://localhost:9080"))
	doc.gzipIfAsked = true
	b.serve(path, doc)

	// A backend that compresses when asked: whatever the proxy's
	// transport does, the client gets the document with the registration
	// endpoint in it.
	tests := []struct {
		name  string
		proxy []string
		// what the backend may see: nothing, or the gzip that Go's
		// transport adds on its own and undoes itself
		backendAE string
	}{
		{"compression off", itCompressionOff, ""},
		{"default transport", nil, "gzip"},
	}
	f := startFront(t, b, itFrontConfig{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f.reload(t, itFrontConfig{proxy: tc.proxy})
			b.take()
			r := f.raw(t, http.MethodGet, path, "Accept-Encoding: gzip, br")
			if r.status != http.StatusOK {
				t.Fatalf("status %d; body %q", r.status, r.body)
			}
			if ce := r.header.Get("Content-Encoding"); ce != "" {
				t.Fatalf("Content-Encoding %q: the document was not rewritten", ce)
			}
			var obj map[string]any
			if err := json.Unmarshal(r.body, &obj); err != nil {
				t.Fatalf("body is not JSON: %v", err)
			}
			if got := obj["registration_endpoint"]; got != "http://localhost:9080/register" {
				t.Errorf("registration_endpoint %v", got)
			}
			if got, want := r.header.Get("Content-Length"), fmt.Sprint(len(r.body)); got != want {
				t.Errorf("Content-Length %s, body is %s bytes", got, want)
			}
			seen := b.take()
			if len(seen) != 1 {
				t.Fatalf("the backend saw %d requests, want 1", len(seen))
			}
			if got := seen[0].Header.Get("Accept-Encoding"); got != tc.backendAE {
				t.Errorf("the backend saw Accept-Encoding %q, want %q", got, tc.backendAE)
			}
		})
	}
}

// Registrations of the enforcement tests.
const (
	itConfBody = `{"redirect_uris":["https://app.example.com/cb",` +
		`"https://app.example.com/cb2"],"client_name":"Confidential App",` +
		`"grant_types":["authorization_code","refresh_token"]}`
	itOneBody = `{"redirect_uris":["https://one.example.com/cb"],` +
		`"client_name":"One URI App"}`
	itPostBody = `{"redirect_uris":["https://post.example.com/cb"],` +
		`"client_name":"Post App","token_endpoint_auth_method":"client_secret_post"}`
)

// itPublicBody registers a public client with one redirect URI.
func itPublicBody(name, redirect string) string {
	return `{"redirect_uris":["` + redirect + `"],"client_name":"` + name +
		`","token_endpoint_auth_method":"none"}`
}

// itIdentity is who the backend must be told a request comes from; the
// zero value means nobody: no identity headers at all.
type itIdentity struct {
	id, name, kind string
}

// identity returns the identity the handler vouches for when it admits c.
func (c *itManaged) identity(kind string) itIdentity {
	name, _ := c.resp["client_name"].(string)
	return itIdentity{c.id, name, kind}
}

// itAssertIdentity checks the identity headers a request reached the
// backend with: exactly one value each, or none.
func itAssertIdentity(t *testing.T, h http.Header, want itIdentity, names ...string) {
	t.Helper()
	if len(names) == 0 {
		names = []string{"X-DCR-Client-ID", "X-DCR-Client-Name", "X-DCR-Client-Type"}
	}
	for i, v := range []string{want.id, want.name, want.kind} {
		got := h.Values(names[i])
		switch {
		case want == itIdentity{} && len(got) != 0:
			t.Errorf("%s reached the backend as %q, want none", names[i], got)
		case want != itIdentity{} && !slices.Equal(got, []string{v}):
			t.Errorf("%s reached the backend as %q, want %q", names[i], got, v)
		}
	}
}

// passed checks that r is the backend's echo of the one request it saw
// and returns that request.
func (f *itFront) passed(t *testing.T, r *itResponse) itSeen {
	t.Helper()
	if r.status != http.StatusOK || r.header.Get("X-Backend") != "echo" {
		t.Fatalf("not passed to the backend: %d %s", r.status, r.body)
	}
	var echo itSeen
	if err := json.Unmarshal(r.body, &echo); err != nil {
		t.Fatalf("decoding echo %q: %v", r.body, err)
	}
	seen := f.backend.take()
	if len(seen) != 1 || !reflect.DeepEqual(seen[0], echo) {
		t.Fatalf("the backend saw %+v, echoed %+v", seen, echo)
	}
	return echo
}

// itAssertErrorPage checks the answer to a refused authorization request:
// a 400 page for the user that names the error, and no redirect.
func itAssertErrorPage(t *testing.T, r *itResponse, status int, code, desc string) {
	t.Helper()
	if r.status != status {
		t.Errorf("status %d, want %d; body %s", r.status, status, r.body)
	}
	if loc := r.header.Get("Location"); loc != "" {
		t.Errorf("redirected to %q", loc)
	}
	for name, want := range map[string]string{
		"Content-Type":  "text/html; charset=utf-8",
		"Cache-Control": "no-store",
	} {
		if got := r.header.Get(name); got != want {
			t.Errorf("%s %q, want %q", name, got, want)
		}
	}
	body := string(r.body)
	if !strings.Contains(body, `<dd id="error">`+code+`</dd>`) {
		t.Errorf("page does not name error %s:\n%s", code, body)
	}
	if !strings.Contains(body, html.EscapeString(desc)) {
		t.Errorf("page does not say %q:\n%s", desc, body)
	}
}

// refused checks that the backend saw no request.
func (f *itFront) refused(t *testing.T) {
	t.Helper()
	if seen := f.backend.take(); len(seen) != 0 {
		t.Errorf("a refused request reached the backend: %+v", seen)
	}
}

func TestIntegrationEnforceAuthorize(t *testing.T) {
	b := newBackend(t)
	cfg := itFrontConfig{dcr: itEnforce()}
	f := startFront(t, b, cfg)

	conf := f.registerManaged(t, itConfBody)
	one := f.registerManaged(t, itOneBody)
	v4 := f.registerManaged(t, itPublicBody("Loopback v4", "http://127.0.0.1:8400/cb"))
	v6 := f.registerManaged(t, itPublicBody("Loopback v6", "http://[::1]:8400/cb"))
	lh := f.registerManaged(t, itPublicBody("Localhost", "http://localhost:8400/cb"))
	const challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"

	// params returns an authorization request of c with these members
	// replaced, or left out when given as "-".
	params := func(c *itManaged, redirect string, more ...string) string {
		kv := []string{"response_type", "code", "client_id", c.id,
			"redirect_uri", redirect, "state", "st-1", "scope", "openid"}
		if c.resp["token_endpoint_auth_method"] == "none" {
			kv = append(kv, "code_challenge", challenge, "code_challenge_method", "S256")
		}
		for i := 0; i+1 < len(more); i += 2 {
			if j := slices.Index(kv, more[i]); j >= 0 && j%2 == 0 {
				kv[j+1] = more[i+1]
			} else {
				kv = append(kv, more[i], more[i+1])
			}
		}
		var out []string
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] != "-" {
				out = append(out, kv[i], kv[i+1])
			}
		}
		return itForm(out...)
	}

	confID, pubID := conf.identity("confidential"), v4.identity("public")
	tests := []struct {
		name   string
		params string
		want   itIdentity // for a request that passes
		code   string     // for a refused one
		desc   string
	}{
		{"exact redirect_uri", params(conf, "https://app.example.com/cb"), confID, "", ""},
		{"second registered redirect_uri", params(conf, "https://app.example.com/cb2"),
			confID, "", ""},
		{"unregistered host", params(conf, "https://evil.example.com/cb"), itIdentity{},
			"invalid_request", "redirect_uri is not registered for this client"},
		{"other path", params(conf, "https://app.example.com/cb/x"), itIdentity{},
			"invalid_request", "redirect_uri is not registered"},
		{"added query", params(conf, "https://app.example.com/cb?x=1"), itIdentity{},
			"invalid_request", "redirect_uri is not registered"},
		{"other port on https", params(conf, "https://app.example.com:8443/cb"),
			itIdentity{}, "invalid_request", "redirect_uri is not registered"},
		{"case of the host", params(conf, "https://APP.example.com/cb"), itIdentity{},
			"invalid_request", "redirect_uri is not registered"},
		{"missing with two registered", params(conf, "-"), itIdentity{},
			"invalid_request", "redirect_uri is required"},
		{"missing with one registered", params(one, "-"), one.identity("confidential"),
			"", ""},
		{"v4 loopback, registered port", params(v4, "http://127.0.0.1:8400/cb"), pubID,
			"", ""},
		{"v4 loopback, other port", params(v4, "http://127.0.0.1:51234/cb"), pubID, "", ""},
		{"v4 loopback, no port", params(v4, "http://127.0.0.1/cb"), pubID, "", ""},
		{"v4 loopback, other path", params(v4, "http://127.0.0.1:51234/other"),
			itIdentity{}, "invalid_request", "redirect_uri is not registered"},
		{"v4 loopback, other loopback host", params(v4, "http://localhost:51234/cb"),
			itIdentity{}, "invalid_request", "redirect_uri is not registered"},
		{"v4 loopback, https", params(v4, "https://127.0.0.1:8400/cb"), itIdentity{},
			"invalid_request", "redirect_uri is not registered"},
		{"v4 loopback, user info", params(v4, "http://evil@127.0.0.1:8400/cb"),
			itIdentity{}, "invalid_request", "redirect_uri is not registered"},
		{"v6 loopback, other port", params(v6, "http://[::1]:40000/cb"),
			v6.identity("public"), "", ""},
		{"v6 loopback, other path", params(v6, "http://[::1]:40000/x"), itIdentity{},
			"invalid_request", "redirect_uri is not registered"},
		{"localhost, other port", params(lh, "http://localhost:40000/cb"),
			lh.identity("public"), "", ""},
		{"localhost, other path", params(lh, "http://localhost:40000/cb/"), itIdentity{},
			"invalid_request", "redirect_uri is not registered"},
		{"response_type not registered", params(conf, "https://app.example.com/cb",
			"response_type", "token"), itIdentity{}, "unauthorized_client",
			`response_type "token" is not registered for this client`},
		{"response_type missing", params(conf, "https://app.example.com/cb",
			"response_type", "-"), itIdentity{}, "invalid_request",
			"response_type is required"},
		{"response_type escaped on the page", params(conf, "https://app.example.com/cb",
			"response_type", "<script>x</script>"), itIdentity{}, "unauthorized_client",
			`response_type "<script>x</script>" is not registered`},
		{"public without code_challenge", params(v4, "http://127.0.0.1:8400/cb",
			"code_challenge", "-", "code_challenge_method", "-"), itIdentity{},
			"invalid_request", "code_challenge_method S256"},
		{"public without code_challenge_method", params(v4, "http://127.0.0.1:8400/cb",
			"code_challenge_method", "-"), itIdentity{},
			"invalid_request", "code_challenge_method S256"},
		{"public with plain", params(v4, "http://127.0.0.1:8400/cb",
			"code_challenge_method", "plain"), itIdentity{},
			"invalid_request", "code_challenge_method S256"},
		{"confidential with PKCE", params(conf, "https://app.example.com/cb",
			"code_challenge", challenge, "code_challenge_method", "S256"), confID, "", ""},
		{"unknown client", itForm("response_type", "code", "client_id", "not-registered",
			"redirect_uri", "https://evil.example.com/cb"), itIdentity{}, "", ""},
		{"no client_id", itForm("response_type", "code"), itIdentity{}, "", ""},
	}
	for _, tc := range tests {
		for _, post := range []bool{false, true} {
			name := tc.name + " GET"
			if post {
				name = tc.name + " POST"
			}
			t.Run(name, func(t *testing.T) {
				b.take()
				r := f.authorize(t, post, tc.params)
				if tc.code != "" {
					itAssertErrorPage(t, r, http.StatusBadRequest, tc.code, tc.desc)
					f.refused(t)
					return
				}
				seen := f.passed(t, r)
				wantQuery, wantBody, wantMethod := tc.params, "", http.MethodGet
				if post {
					wantQuery, wantBody, wantMethod = "", tc.params, http.MethodPost
				}
				if seen.Method != wantMethod || seen.Path != "/oauth/authorize" ||
					seen.Query != wantQuery || seen.Body != wantBody {
					t.Errorf("backend saw %s %s?%s body %q, want %s ?%s body %q",
						seen.Method, seen.Path, seen.Query, seen.Body,
						wantMethod, wantQuery, wantBody)
				}
				itAssertIdentity(t, seen.Header, tc.want)
			})
		}
	}

	// A client deleted through RFC 7592 is refused, not passed on as
	// unknown.
	if r := f.manage(t, http.MethodDelete, conf.id, conf.token, ""); r.status != 204 {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}
	t.Run("deleted client", func(t *testing.T) {
		b.take()
		r := f.authorize(t, false, params(conf, "https://app.example.com/cb"))
		itAssertErrorPage(t, r, http.StatusBadRequest, "unauthorized_client",
			"the client was deleted")
		f.refused(t)
	})

	// registered_only refuses what the store does not know, and still
	// admits what it does.
	f.reload(t, itFrontConfig{dcr: itEnforce("registered_only")})
	t.Run("registered_only unknown client", func(t *testing.T) {
		b.take()
		r := f.authorize(t, false, itForm("response_type", "code",
			"client_id", "not-registered", "redirect_uri", "https://app.example.com/cb"))
		itAssertErrorPage(t, r, http.StatusBadRequest, "unauthorized_client",
			"the client is not registered")
		f.refused(t)
	})
	t.Run("registered_only known client", func(t *testing.T) {
		b.take()
		seen := f.passed(t, f.authorize(t, true, params(one, "https://one.example.com/cb")))
		itAssertIdentity(t, seen.Header, one.identity("confidential"))
	})
}

// itTokenCase is one token request and what must come of it.
type itTokenCase struct {
	name    string
	form    string
	headers []string
	want    itIdentity // for a request that passes
	status  int        // for a refused one
	code    string
	desc    string
	basic   bool // the refusal carries a Basic challenge
}

// run sends the request of tc and checks the outcome.
func (tc itTokenCase) run(t *testing.T, f *itFront) {
	t.Helper()
	f.backend.take()
	r := f.token(t, tc.form, tc.headers...)
	if tc.status != 0 {
		itAssertRefusal(t, r, itRefusal{tc.status, tc.code, tc.desc})
		ch := r.header.Get("WWW-Authenticate")
		if tc.basic && !strings.HasPrefix(ch, "Basic ") {
			t.Errorf("WWW-Authenticate %q, want a Basic challenge", ch)
		}
		if !tc.basic && ch != "" {
			t.Errorf("WWW-Authenticate %q without HTTP Basic", ch)
		}
		f.refused(t)
		return
	}
	seen := f.passed(t, r)
	if seen.Method != http.MethodPost || seen.Path != "/oauth/token" ||
		seen.Body != tc.form {
		t.Errorf("backend saw %s %s body %q, want POST /oauth/token body %q",
			seen.Method, seen.Path, seen.Body, tc.form)
	}
	if ct := seen.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
		t.Errorf("backend saw Content-Type %q", ct)
	}
	// Authentication goes on to the backend, which may check it again.
	for _, h := range tc.headers {
		if name, value, _ := strings.Cut(h, ": "); name == "Authorization" &&
			seen.Header.Get(name) != value {
			t.Errorf("backend saw Authorization %q, want %q", seen.Header.Get(name), value)
		}
	}
	itAssertIdentity(t, seen.Header, tc.want)
}

func TestIntegrationEnforceToken(t *testing.T) {
	b := newBackend(t)
	f := startFront(t, b, itFrontConfig{dcr: itEnforce()})

	basic := f.registerManaged(t, itConfBody)
	post := f.registerManaged(t, itPostBody)
	pub := f.registerManaged(t, itPublicBody("Public App", "http://127.0.0.1:8400/cb"))
	other := f.registerManaged(t, itConfBody)
	basicID := basic.identity("confidential")

	// A body the backend must get byte for byte: escapes, a plus for a
	// space, an empty parameter, non-ASCII text.
	const odd = "code=a%2Bb+c%2F%3D&redirect_uri=https%3A%2F%2Fapp.example.com%2Fcb" +
		"&x=%E2%9C%93&empty="
	code := func(more string) string {
		return "grant_type=authorization_code&" + odd + more
	}

	tests := []itTokenCase{
		{name: "basic", form: code(""), headers: []string{itBasic(basic.id, basic.secret)},
			want: basicID},
		{name: "basic with the same client_id in the body",
			form: code("&client_id=" + basic.id), want: basicID,
			headers: []string{itBasic(basic.id, basic.secret)}},
		{name: "basic, refresh_token", form: "grant_type=refresh_token&refresh_token=r1",
			headers: []string{itBasic(basic.id, basic.secret)}, want: basicID},
		{name: "basic, wrong secret", form: code(""),
			headers: []string{itBasic(basic.id, basic.secret+"x")},
			status:  401, code: "invalid_client", desc: "client authentication failed",
			basic: true},
		{name: "basic, another client's secret", form: code(""),
			headers: []string{itBasic(basic.id, other.secret)},
			status:  401, code: "invalid_client", desc: "authentication failed", basic: true},
		{name: "basic, empty secret", form: code(""),
			headers: []string{itBasic(basic.id, "")},
			status:  401, code: "invalid_client", desc: "authentication failed", basic: true},
		{name: "basic, not base64", form: code(""),
			headers: []string{"Authorization: Basic !!not-base64!!"},
			status:  401, code: "invalid_client", desc: "Authorization header", basic: true},
		{name: "basic, bad form encoding", form: code(""),
			headers: []string{"Authorization: Basic " + base64.StdEncoding.EncodeToString(
				[]byte(basic.id+"%zz:"+basic.secret))},
			status: 401, code: "invalid_client", desc: "Authorization header", basic: true},
		{name: "basic client sends no secret", form: code("&client_id=" + basic.id),
			status: 401, code: "invalid_client", desc: "client_secret_basic"},
		{name: "basic client uses the body",
			form:   code("&client_id=" + basic.id + "&client_secret=" + basic.secret),
			status: 401, code: "invalid_client", desc: "client_secret_basic"},
		{name: "both methods at once",
			form:    code("&client_secret=" + basic.secret),
			headers: []string{itBasic(basic.id, basic.secret)},
			status:  401, code: "invalid_client", desc: "more than one", basic: true},
		{name: "grant type not registered",
			form:    "grant_type=client_credentials&scope=openid",
			headers: []string{itBasic(basic.id, basic.secret)},
			status:  400, code: "unauthorized_client",
			desc: `grant_type "client_credentials" is not registered`},
		{name: "client_id in header and body differ",
			form:    code("&client_id=" + other.id),
			headers: []string{itBasic(basic.id, basic.secret)},
			status:  400, code: "invalid_request", desc: "client_id differs"},
		{name: "post",
			form: code("&client_id=" + post.id + "&client_secret=" + post.secret),
			want: post.identity("confidential")},
		{name: "post, wrong secret",
			form:   code("&client_id=" + post.id + "&client_secret=x" + post.secret),
			status: 401, code: "invalid_client", desc: "authentication failed"},
		{name: "post, no secret", form: code("&client_id=" + post.id),
			status: 401, code: "invalid_client", desc: "client_secret_post"},
		{name: "post client uses basic", form: code(""),
			headers: []string{itBasic(post.id, post.secret)},
			status:  401, code: "invalid_client", desc: "client_secret_post", basic: true},
		{name: "post, refresh_token not registered",
			form: "grant_type=refresh_token&refresh_token=r1&client_id=" + post.id +
				"&client_secret=" + post.secret,
			status: 400, code: "unauthorized_client", desc: `"refresh_token"`},
		{name: "public", form: code("&client_id=" + pub.id + "&code_verifier=v"),
			want: pub.identity("public")},
		{name: "public with a secret in the body",
			form:   code("&client_id=" + pub.id + "&client_secret=s"),
			status: 401, code: "invalid_client", desc: "registered as public"},
		{name: "public with basic", form: code(""),
			headers: []string{itBasic(pub.id, "s")},
			status:  401, code: "invalid_client", desc: "registered as public", basic: true},
		{name: "unknown client in the body",
			form: code("&client_id=not-registered&client_secret=s")},
		{name: "unknown client with basic", form: code(""),
			headers: []string{itBasic("not-registered", "s")}},
		{name: "no client at all", form: code("")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, f) })
	}

	t.Run("GET refused", func(t *testing.T) {
		b.take()
		r := f.request(t, http.MethodGet, "/oauth/token?client_id="+basic.id, nil,
			"X-DCR-Client-ID: spoofed")
		if r.status != http.StatusMethodNotAllowed || r.header.Get("Allow") != "POST, OPTIONS" {
			t.Errorf("status %d, Allow %q; want 405 with POST, OPTIONS",
				r.status, r.header.Get("Allow"))
		}
		if n := len(b.take()); n != 0 {
			t.Errorf("the backend saw %d requests", n)
		}
	})

	// A deleted client gets what makes clients register again.
	for _, c := range []*itManaged{basic, post} {
		if r := f.manage(t, http.MethodDelete, c.id, c.token, ""); r.status != 204 {
			t.Fatalf("DELETE: %d %s", r.status, r.body)
		}
	}
	for _, tc := range []itTokenCase{
		{name: "deleted, basic", form: code(""),
			headers: []string{itBasic(basic.id, basic.secret)},
			status:  401, code: "invalid_client", desc: "register again", basic: true},
		{name: "deleted, post",
			form:   code("&client_id=" + post.id + "&client_secret=" + post.secret),
			status: 401, code: "invalid_client", desc: "register again"},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, f) })
	}

	f.reload(t, itFrontConfig{dcr: itEnforce("registered_only")})
	for _, tc := range []itTokenCase{
		{name: "registered_only, unknown in the body",
			form:   code("&client_id=not-registered&client_secret=s"),
			status: 401, code: "invalid_client", desc: "not registered"},
		{name: "registered_only, unknown with basic", form: code(""),
			headers: []string{itBasic("not-registered", "s")},
			status:  401, code: "invalid_client", desc: "not registered", basic: true},
		{name: "registered_only, known", form: code(""),
			headers: []string{itBasic(other.id, other.secret)},
			want:    other.identity("confidential")},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, f) })
	}

	// Refusals are logged without the credentials that were refused.
	if got := f.logEntries(t, "request refused by enforcement", 1); len(got) == 0 {
		t.Error("no refusal was logged")
	}
	raw, err := os.ReadFile(f.logFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, leak := range []string{basic.secret, post.secret, other.secret, "a%2Bb"} {
		if strings.Contains(string(raw), leak) {
			t.Errorf("log contains %.12q...", leak)
		}
	}
}

// itFakeClock is a clock that tests move forward: real time plus an
// offset.
type itFakeClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *itFakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *itFakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// itUseClock makes handlers provisioned from now on read a clock the test
// moves, until the test ends. Handlers keep the clock function they were
// provisioned with, so a handler loaded now sees every later advance.
func itUseClock(t *testing.T) *itFakeClock {
	c := &itFakeClock{}
	prev := timeNow
	timeNow = c.now
	t.Cleanup(func() { timeNow = prev })
	return c
}

func TestIntegrationEnforceSecretExpiry(t *testing.T) {
	clock := itUseClock(t)
	b := newBackend(t)
	f := startFront(t, b, itFrontConfig{dcr: append([]string{"secret_lifetime 1h"},
		itEnforce()...)})
	basic := f.registerManaged(t, itConfBody)
	post := f.registerManaged(t, itPostBody)
	postForm := "grant_type=authorization_code&code=c&client_id=" + post.id +
		"&client_secret=" + post.secret

	itTokenCase{name: "basic before expiry", form: "grant_type=authorization_code&code=c",
		headers: []string{itBasic(basic.id, basic.secret)},
		want:    basic.identity("confidential")}.run(t, f)
	itTokenCase{name: "post before expiry", form: postForm,
		want: post.identity("confidential")}.run(t, f)

	clock.advance(time.Hour + time.Minute)
	for _, tc := range []itTokenCase{
		{name: "basic after expiry", form: "grant_type=authorization_code&code=c",
			headers: []string{itBasic(basic.id, basic.secret)},
			status:  401, code: "invalid_client", desc: "expired", basic: true},
		{name: "post after expiry", form: postForm,
			status: 401, code: "invalid_client", desc: "expired"},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, f) })
	}

	// The authorization endpoint takes no secret, so an expired one does
	// not stop the user from being sent there.
	b.take()
	seen := f.passed(t, f.authorize(t, false, itForm("response_type", "code",
		"client_id", basic.id, "redirect_uri", "https://app.example.com/cb")))
	itAssertIdentity(t, seen.Header, basic.identity("confidential"))
}

// itSpoofed are identity headers a caller sends to pose as a client.
var itSpoofed = []string{
	"X-DCR-Client-ID: spoofed-id",
	"X-DCR-Client-Name: Spoofed Name",
	"X-DCR-Client-Type: confidential",
}

func TestIntegrationEnforceHeaderStripping(t *testing.T) {
	b := newBackend(t)
	const meta = "/.well-known/oauth-authorization-server"
	f := startFront(t, b, itFrontConfig{dcr: itEnforce()})
	c := f.registerManaged(t, itConfBody)
	b.serve(meta, itJSONDoc(itIssuerDoc("http://localhost:9080")))

	// A request of each kind, sent with the spoofed headers, and the
	// identity the backend must see for it.
	type sent struct {
		name string
		want itIdentity
		do   func(t *testing.T, spoof []string) *itResponse
	}
	requests := func(c *itManaged) []sent {
		return []sent{
			{"other path", itIdentity{}, func(t *testing.T, h []string) *itResponse {
				return f.request(t, http.MethodGet, "/api/resource?x=1", nil, h...)
			}},
			{"other path POST", itIdentity{}, func(t *testing.T, h []string) *itResponse {
				return f.request(t, http.MethodPost, "/api/resource", strings.NewReader("{}"),
					h...)
			}},
			{"authorize, unknown client", itIdentity{},
				func(t *testing.T, h []string) *itResponse {
					return f.authorize(t, false, "response_type=code&client_id=nobody", h...)
				}},
			{"authorize, no client_id", itIdentity{},
				func(t *testing.T, h []string) *itResponse {
					return f.authorize(t, false, "response_type=code", h...)
				}},
			{"token, unknown client", itIdentity{},
				func(t *testing.T, h []string) *itResponse {
					return f.token(t, "grant_type=authorization_code&client_id=nobody", h...)
				}},
			{"authorize, admitted", c.identity("confidential"),
				func(t *testing.T, h []string) *itResponse {
					return f.authorize(t, true, itForm("response_type", "code",
						"client_id", c.id, "redirect_uri", "https://app.example.com/cb"), h...)
				}},
			{"token, admitted", c.identity("confidential"),
				func(t *testing.T, h []string) *itResponse {
					return f.token(t, "grant_type=refresh_token&refresh_token=r",
						append([]string{itBasic(c.id, c.secret)}, h...)...)
				}},
		}
	}
	check := func(t *testing.T, spoof []string, names ...string) {
		for _, s := range requests(c) {
			t.Run(s.name, func(t *testing.T) {
				b.take()
				seen := f.passed(t, s.do(t, spoof))
				itAssertIdentity(t, seen.Header, s.want, names...)
			})
		}
		// Metadata is not echoed: look at what the backend saw.
		t.Run("metadata", func(t *testing.T) {
			b.take()
			r := f.request(t, http.MethodGet, meta, nil, spoof...)
			if r.status != http.StatusOK {
				t.Fatalf("status %d", r.status)
			}
			for _, seen := range b.take() {
				itAssertIdentity(t, seen.Header, itIdentity{}, names...)
			}
		})
	}

	t.Run("default names", func(t *testing.T) { check(t, itSpoofed) })

	// Without enforcement nothing is vouched for, and nothing a caller
	// sends under those names gets through either.
	f.reload(t, itFrontConfig{})
	t.Run("no enforce block", func(t *testing.T) {
		for _, path := range []string{"/api/resource", "/oauth/token", "/oauth/authorize"} {
			b.take()
			seen := f.passed(t, f.request(t, http.MethodGet, path+"?client_id="+c.id, nil,
				itSpoofed...))
			itAssertIdentity(t, seen.Header, itIdentity{})
		}
	})

	// Configured names are the ones set and stripped.
	names := []string{"X-Auth-Client", "X-Auth-Client-Label", "X-Auth-Client-Kind"}
	f.reload(t, itFrontConfig{dcr: itEnforce(
		"client_id_header "+names[0],
		"client_name_header "+names[1],
		"client_type_header "+names[2])})
	t.Run("configured names", func(t *testing.T) {
		var spoof []string
		for _, n := range names {
			spoof = append(spoof, n+": spoofed")
		}
		check(t, spoof, names...)

		// The default names are no longer the handler's: it sets none.
		b.take()
		seen := f.passed(t, f.token(t, "grant_type=refresh_token&refresh_token=r",
			itBasic(c.id, c.secret)))
		itAssertIdentity(t, seen.Header, itIdentity{})
		itAssertIdentity(t, seen.Header, c.identity("confidential"), names...)
	})
}

func TestIntegrationEnforceClientName(t *testing.T) {
	b := newBackend(t)
	f := startFront(t, b, itFrontConfig{dcr: itEnforce()})

	// Non-ASCII names reach the backend percent-encoded, so that every
	// proxy passes them unchanged; placeholders carry the name as is.
	const name = "Café ☕ App"
	c := f.registerManaged(t, `{"redirect_uris":["https://app.example.com/cb"],`+
		`"client_name":"`+name+`"}`)
	b.take()
	seen := f.passed(t, f.token(t, "grant_type=authorization_code&code=c",
		itBasic(c.id, c.secret)))
	itAssertIdentity(t, seen.Header, itIdentity{c.id, url.PathEscape(name), "confidential"})

	// A name that looks percent-encoded is encoded again, so that decoding
	// always gives the registered name.
	const pct = "100% Caf%C3%A9"
	p := f.registerManaged(t, `{"redirect_uris":["https://app.example.com/cb"],`+
		`"client_name":"`+pct+`"}`)
	b.take()
	seen = f.passed(t, f.token(t, "grant_type=authorization_code&code=c",
		itBasic(p.id, p.secret)))
	itAssertIdentity(t, seen.Header, itIdentity{p.id, url.PathEscape(pct), "confidential"})
	if got, _ := url.PathUnescape(seen.Header.Get("X-DCR-Client-Name")); got != pct {
		t.Errorf("client name decodes to %q, want %q", got, pct)
	}

	// A client without a name is vouched for with an empty name.
	anon := f.registerManaged(t, `{"redirect_uris":["https://app.example.com/cb"]}`)
	b.take()
	seen = f.passed(t, f.token(t, "grant_type=authorization_code&code=c",
		itBasic(anon.id, anon.secret)))
	itAssertIdentity(t, seen.Header, itIdentity{anon.id, "", "confidential"})
}

func TestIntegrationEnforcePlaceholders(t *testing.T) {
	b := newBackend(t)
	cfg := itFrontConfig{
		dcr: itEnforce(),
		// Deferred, so that it is evaluated when the answer is written,
		// after the handler ran.
		site: []string{`header >X-Answered-For "{http.dcr.client_id}"`},
		proxy: []string{
			`header_up X-Seen-Client-ID "{http.dcr.client_id}"`,
			`header_up X-Seen-Client-Name "{http.dcr.client_name}"`,
			`header_up X-Seen-Client-Type "{http.dcr.client_type}"`,
		},
	}
	f := startFront(t, b, cfg)
	seenNames := []string{"X-Seen-Client-ID", "X-Seen-Client-Name", "X-Seen-Client-Type"}

	conf := f.registerManaged(t, itConfBody)
	pub := f.registerManaged(t, itPublicBody("Public App", "http://127.0.0.1:8400/cb"))

	b.take()
	r := f.token(t, "grant_type=authorization_code&code=c", itBasic(conf.id, conf.secret))
	seen := f.passed(t, r)
	itAssertIdentity(t, seen.Header, conf.identity("confidential"), seenNames...)
	if got := r.header.Get("X-Answered-For"); got != conf.id {
		t.Errorf("X-Answered-For %q, want %q", got, conf.id)
	}

	b.take()
	r = f.authorize(t, false, itForm("response_type", "code", "client_id", pub.id,
		"code_challenge", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
		"code_challenge_method", "S256"))
	seen = f.passed(t, r)
	itAssertIdentity(t, seen.Header, pub.identity("public"), seenNames...)
	if got := r.header.Get("X-Answered-For"); got != pub.id {
		t.Errorf("X-Answered-For %q, want %q", got, pub.id)
	}
}

// itPollClient waits up to d for the stored client id to satisfy ok and
// returns it; it is a hang check, not a timing assertion.
func itPollClient(t *testing.T, rd *clientdb.Reader, id string, d time.Duration,
	ok func(*clientdb.Client, error) bool) (*clientdb.Client, error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		c, err := rd.Lookup(id)
		if ok(c, err) || time.Now().After(deadline) {
			return c, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// itLastUsed waits for the stored last_used_at of client id to fall in
// [from, to] and fails if it does not within d.
func itLastUsed(t *testing.T, rd *clientdb.Reader, id string, from, to int64,
	d time.Duration) {
	t.Helper()
	c, err := itPollClient(t, rd, id, d, func(c *clientdb.Client, err error) bool {
		return err == nil && c.LastUsedAt >= from && c.LastUsedAt <= to
	})
	if err != nil {
		t.Fatalf("Lookup %s: %v", id, err)
	}
	if c.LastUsedAt < from || c.LastUsedAt > to {
		t.Fatalf("last_used_at %d after %s, want within [%d, %d]", c.LastUsedAt, d, from, to)
	}
}

func TestIntegrationEnforceLastUsed(t *testing.T) {
	clock := itUseClock(t)
	b := newBackend(t)
	cfg := itFrontConfig{dcr: itEnforce()}
	f := startFront(t, b, cfg)
	rd := f.reader(t)

	used := f.registerManaged(t, itConfBody)
	idle := f.registerManaged(t, itConfBody)
	gone := f.registerManaged(t, itConfBody)
	if r := f.manage(t, http.MethodDelete, gone.id, gone.token, ""); r.status != 204 {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}
	before := f.count(t)

	// Admitted at the token endpoint: written within the flush interval.
	from := clock.now().Unix()
	b.take()
	f.passed(t, f.token(t, "grant_type=authorization_code&code=c",
		itBasic(used.id, used.secret)))
	to := clock.now().Unix()

	// Refused and unknown clients are not admitted, so not recorded.
	r := f.token(t, "grant_type=authorization_code&code=c", itBasic(gone.id, gone.secret))
	if r.status != http.StatusUnauthorized {
		t.Errorf("deleted client: status %d, want 401", r.status)
	}
	b.take()
	f.passed(t, f.token(t, "grant_type=authorization_code&client_id=unknown-id"))

	itLastUsed(t, rd, used.id, from, to, 20*time.Second)
	if c, err := rd.Lookup(idle.id); err != nil || c.LastUsedAt != 0 {
		t.Errorf("unused client: %+v, %v, want last_used_at 0", c, err)
	}
	if _, err := rd.Lookup("unknown-id"); !errors.Is(err, clientdb.ErrNotFound) {
		t.Errorf("unknown client: %v, want ErrNotFound", err)
	}
	if ts, err := rd.Tombstone(gone.id); err != nil || ts.Reason != clientdb.ReasonDeleted {
		t.Errorf("deleted client: tombstone %+v, %v", ts, err)
	}
	if got := f.count(t); got != before {
		t.Errorf("store holds %d clients, want %d", got, before)
	}

	// Use at the authorization endpoint counts too, and a reload writes
	// what the old config recorded: the new one starts afresh, so what
	// the old one held is written then or never.
	clock.advance(time.Hour)
	from = clock.now().Unix()
	b.take()
	f.passed(t, f.authorize(t, false, itForm("response_type", "code",
		"client_id", idle.id, "redirect_uri", "https://app.example.com/cb")))
	b.take()
	f.passed(t, f.token(t, "grant_type=authorization_code&code=c",
		itBasic(used.id, used.secret)))
	to = clock.now().Unix()

	// A client deleted after it was admitted is not brought back by the
	// write of its use.
	late := f.registerManaged(t, itConfBody)
	b.take()
	f.passed(t, f.token(t, "grant_type=authorization_code&code=c",
		itBasic(late.id, late.secret)))
	if r := f.manage(t, http.MethodDelete, late.id, late.token, ""); r.status != 204 {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}

	f.reload(t, cfg)
	itLastUsed(t, rd, idle.id, from, to, 20*time.Second)
	itLastUsed(t, rd, used.id, from, to, 20*time.Second)
	if _, err := rd.Lookup(late.id); !errors.Is(err, clientdb.ErrDeleted) {
		t.Errorf("client deleted after use: %v, want ErrDeleted", err)
	}
}

func TestIntegrationEnforceExpireUnused(t *testing.T) {
	clock := itUseClock(t)
	b := newBackend(t)
	cfg := itFrontConfig{dcr: append([]string{"expire_unused 1h"}, itEnforce()...)}
	f := startFront(t, b, cfg)
	rd := f.reader(t)

	never := f.registerManaged(t, itConfBody)
	early := f.registerManaged(t, itConfBody)
	recent := f.registerManaged(t, itConfBody)
	admit := func(c *itManaged) {
		t.Helper()
		b.take()
		f.passed(t, f.token(t, "grant_type=authorization_code&code=c",
			itBasic(c.id, c.secret)))
	}
	start := clock.now().Unix()
	admit(early)
	end := clock.now().Unix()

	// Two hours later only recent has been used within the hour.
	clock.advance(2 * time.Hour)
	moved := clock.now().Unix()
	admit(recent)
	itLastUsed(t, rd, recent.id, moved, clock.now().Unix(), 20*time.Second)
	itLastUsed(t, rd, early.id, start, end, time.Second)

	// The expiry sweep runs when a config starts serving.
	f.reload(t, cfg)
	f.request(t, http.MethodGet, "/api", nil)
	for _, c := range []*itManaged{never, early} {
		_, err := itPollClient(t, rd, c.id, 20*time.Second,
			func(_ *clientdb.Client, err error) bool {
				return errors.Is(err, clientdb.ErrDeleted)
			})
		if !errors.Is(err, clientdb.ErrDeleted) {
			t.Fatalf("unused client %s: %v, want ErrDeleted", c.id, err)
		}
		ts, err := rd.Tombstone(c.id)
		if err != nil {
			t.Fatalf("Tombstone: %v", err)
		}
		if ts.Reason != clientdb.ReasonExpired || ts.DeletedAt < moved {
			t.Errorf("tombstone %+v, want reason expired, deleted at or after %d", ts, moved)
		}
	}
	if _, err := rd.Lookup(recent.id); err != nil {
		t.Errorf("recently used client: %v, want it kept", err)
	}

	// An expired client is told to register again.
	for _, c := range []*itManaged{never, early} {
		itTokenCase{name: "expired", form: "grant_type=authorization_code&code=c",
			headers: []string{itBasic(c.id, c.secret)},
			status:  401, code: "invalid_client", desc: "register again", basic: true,
		}.run(t, f)
	}
	admit(recent)
}

func TestIntegrationEnforceRepeatedParams(t *testing.T) {
	b := newBackend(t)
	f := startFront(t, b, itFrontConfig{dcr: itEnforce()})
	c := f.registerManaged(t, itConfBody)
	p := f.registerManaged(t, itPostBody)
	const good, evil = "https://app.example.com/cb", "https://evil.example.com/cb"

	// The handler would check one value and the backend might use the
	// other: the registered redirect URI first and the attacker's second,
	// or an unknown client first to skip the checks altogether.
	authz := []struct {
		name, path, body, param string
	}{
		{"redirect_uri twice", "/oauth/authorize?" + itForm("response_type", "code",
			"client_id", c.id, "redirect_uri", good, "redirect_uri", evil), "",
			"redirect_uri"},
		{"client_id twice", "/oauth/authorize?" + itForm("response_type", "code",
			"client_id", "not-registered", "client_id", c.id, "redirect_uri", evil), "",
			"client_id"},
		{"redirect_uri in query and body", "/oauth/authorize?" +
			itForm("redirect_uri", evil), itForm("response_type", "code",
			"client_id", c.id, "redirect_uri", good), "redirect_uri"},
	}
	for _, tc := range authz {
		t.Run(tc.name, func(t *testing.T) {
			b.take()
			method, headers := http.MethodGet, []string(nil)
			var body io.Reader
			if tc.body != "" {
				method = http.MethodPost
				body = strings.NewReader(tc.body)
				headers = []string{"Content-Type: application/x-www-form-urlencoded"}
			}
			r := f.request(t, method, tc.path, body, headers...)
			itAssertErrorPage(t, r, http.StatusBadRequest, "invalid_request",
				`parameter "`+tc.param+`" is given more than once`)
			f.refused(t)
		})
	}

	for _, tc := range []itTokenCase{
		{name: "token client_id twice",
			form:    "grant_type=authorization_code&code=c&client_id=" + c.id + "&client_id=x",
			headers: []string{itBasic(c.id, c.secret)},
			status:  400, code: "invalid_request", desc: `"client_id" is given more than once`},
		{name: "token client_secret twice",
			form: "grant_type=authorization_code&code=c&client_id=" + p.id +
				"&client_secret=" + p.secret + "&client_secret=x",
			status: 400, code: "invalid_request", desc: `"client_secret" is given more than once`},
		{name: "token grant_type twice",
			form:    "grant_type=authorization_code&grant_type=client_credentials&code=c",
			headers: []string{itBasic(c.id, c.secret)},
			status:  400, code: "invalid_request", desc: `"grant_type" is given more than once`},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, f) })
	}
}

func TestIntegrationEnforceRepeatedResource(t *testing.T) {
	b := newBackend(t)
	f := startFront(t, b, itFrontConfig{dcr: itEnforce()})
	c := f.registerManaged(t, itConfBody)
	resources := "&resource=" + url.QueryEscape("https://mcp.example.com/a") +
		"&resource=" + url.QueryEscape("https://mcp.example.com/b")

	t.Run("authorize", func(t *testing.T) {
		b.take()
		seen := f.passed(t, f.authorize(t, false, itForm("response_type", "code",
			"client_id", c.id, "redirect_uri", "https://app.example.com/cb")+resources))
		itAssertIdentity(t, seen.Header, c.identity("confidential"))
	})
	for _, tc := range []itTokenCase{
		{name: "token", form: "grant_type=authorization_code&code=c" + resources,
			headers: []string{itBasic(c.id, c.secret)},
			want:    c.identity("confidential")},
		// The backend's own clients are not the handler's to refuse.
		{name: "token, unknown client",
			form: "grant_type=authorization_code&code=c&client_id=legacy" + resources},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, f) })
	}
}

func TestIntegrationEnforcePathSpellings(t *testing.T) {
	b := newBackend(t)
	f := startFront(t, b, itFrontConfig{dcr: itEnforce()})
	c := f.registerManaged(t, itConfBody)
	if r := f.manage(t, http.MethodDelete, c.id, c.token, ""); r.status != 204 {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}
	query := "?" + itForm("response_type", "code", "client_id", c.id,
		"redirect_uri", "https://app.example.com/cb")

	// Spellings that backends commonly route to the same endpoint must
	// not skip the checks: a deleted client is refused under each.
	for _, path := range []string{
		"/oauth/authorize/", "/OAuth/Authorize", "//oauth//authorize",
		"/oauth/./authorize", "/oauth/x/../authorize", "/oauth%2Fauthorize",
	} {
		t.Run("authorize "+path, func(t *testing.T) {
			b.take()
			r := f.request(t, http.MethodGet, path+query, nil)
			itAssertErrorPage(t, r, http.StatusBadRequest, "unauthorized_client",
				"the client was deleted")
			f.refused(t)
		})
	}
	for _, path := range []string{"/oauth/token/", "/OAUTH/TOKEN", "//oauth/token"} {
		t.Run("token "+path, func(t *testing.T) {
			b.take()
			r := f.request(t, http.MethodPost, path,
				strings.NewReader("grant_type=authorization_code&code=c"),
				"Content-Type: application/x-www-form-urlencoded", itBasic(c.id, c.secret))
			itAssertRefusal(t, r, itRefusal{401, "invalid_client", "register again"})
			f.refused(t)
		})
	}

	// Other endpoints are the backend's business.
	for _, path := range []string{"/oauth/authorizex", "/oauth/authorize/x", "/oauth"} {
		t.Run("other "+path, func(t *testing.T) {
			b.take()
			seen := f.passed(t, f.request(t, http.MethodGet, path+query, nil))
			itAssertIdentity(t, seen.Header, itIdentity{})
		})
	}
}

func TestIntegrationEnforcePathFormatSuffix(t *testing.T) {
	b := newBackend(t)
	f := startFront(t, b, itFrontConfig{dcr: itEnforce()})
	c := f.registerManaged(t, itConfBody)
	if r := f.manage(t, http.MethodDelete, c.id, c.token, ""); r.status != 204 {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}
	for _, path := range []string{"/oauth/token.json", "/oauth/token;jsessionid=1"} {
		t.Run(path, func(t *testing.T) {
			b.take()
			r := f.request(t, http.MethodPost, path,
				strings.NewReader("grant_type=authorization_code&code=c"),
				"Content-Type: application/x-www-form-urlencoded", itBasic(c.id, c.secret))
			itAssertRefusal(t, r, itRefusal{401, "invalid_client", "register again"})
			f.refused(t)
		})
	}
}

// itIdentityAlias reports whether a header name is one of the identity
// headers to a CGI-style backend, which folds "_" and "." into "-" (PHP
// registers every one of them as the same $_SERVER variable).
func itIdentityAlias(name string) bool {
	folded := strings.NewReplacer("_", "-", ".", "-").Replace(name)
	for _, id := range []string{"X-DCR-Client-ID", "X-DCR-Client-Name", "X-DCR-Client-Type"} {
		if strings.EqualFold(folded, id) {
			return true
		}
	}
	return false
}

// itAssertNoAlias fails if a header spelled with "_" or "." reached the
// backend that a CGI-style backend would read as an identity header.
func itAssertNoAlias(t *testing.T, h http.Header) {
	t.Helper()
	for name, v := range h {
		if strings.ContainsAny(name, "_.") && itIdentityAlias(name) {
			t.Errorf("%s: %q reached the backend", name, v)
		}
	}
}

func TestIntegrationEnforceUnderscoreHeaders(t *testing.T) {
	// FastCGI passes headers as CGI variables, in which "X_DCR_Client_ID"
	// and "X-DCR-Client-ID" are both HTTP_X_DCR_CLIENT_ID. Caddy drops
	// headers with underscores unless the server lets them through; the
	// handler must not rely on that.
	b := newFCGIBackend(t)
	spoof := []string{
		"X_DCR_Client_ID: spoofed-id",
		"X-DCR-Client_Name: Spoofed Name",
		"x_dcr_client_type: confidential",
	}
	configs := []struct {
		name   string
		global []string
	}{
		{"caddy's default", nil},
		{"underscores let through", []string{"servers {",
			"\texpected_underscore_headers X_DCR_Client_ID X-DCR-Client_Name x_dcr_client_type",
			"}"}},
	}
	f := startFront(t, b, itFrontConfig{dcr: itEnforce(), proxy: []string{"transport fastcgi"}})
	c := f.registerManaged(t, itConfBody)

	for _, cfg := range configs {
		t.Run(cfg.name, func(t *testing.T) {
			f.reload(t, itFrontConfig{global: cfg.global, dcr: itEnforce(),
				proxy: []string{"transport fastcgi"}})
			tests := []struct {
				name string
				want itIdentity
				do   func(t *testing.T) *itResponse
			}{
				{"other path", itIdentity{}, func(t *testing.T) *itResponse {
					return f.request(t, http.MethodGet, "/api/resource", nil, spoof...)
				}},
				{"token, unknown client", itIdentity{}, func(t *testing.T) *itResponse {
					return f.token(t, "grant_type=authorization_code&client_id=nobody",
						spoof...)
				}},
				{"token, admitted", c.identity("confidential"),
					func(t *testing.T) *itResponse {
						return f.token(t, "grant_type=authorization_code&code=c",
							append([]string{itBasic(c.id, c.secret)}, spoof...)...)
					}},
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					b.take()
					seen := f.passed(t, tc.do(t))
					itAssertIdentity(t, seen.Header, tc.want)
				})
			}
		})
	}
}

func TestIntegrationEnforceDotHeaders(t *testing.T) {
	b := newFCGIBackend(t)
	f := startFront(t, b, itFrontConfig{
		global: []string{"servers {", "\texpected_dot_headers X.DCR.*", "}"},
		dcr:    itEnforce(),
		proxy:  []string{"transport fastcgi"},
	})
	b.take()
	seen := f.passed(t, f.request(t, http.MethodGet, "/api/resource", nil,
		"X.DCR.Client.ID: spoofed-id"))
	itAssertNoAlias(t, seen.Header)
}

func TestIntegrationEnforcePlaceholdersUnknown(t *testing.T) {
	b := newBackend(t)
	f := startFront(t, b, itFrontConfig{
		dcr:   itEnforce(),
		proxy: []string{`header_up X-Seen-Client-ID "{http.dcr.client_id}"`},
	})
	for _, path := range []string{
		"/oauth/authorize?client_id=unknown", "/api",
	} {
		t.Run(path, func(t *testing.T) {
			b.take()
			seen := f.passed(t, f.request(t, http.MethodGet, path, nil))
			if v := seen.Header.Get("X-Seen-Client-ID"); strings.Contains(v, "{") {
				t.Errorf("X-Seen-Client-ID reached the backend as %q, want it empty", v)
			}
		})
	}
}

func TestIntegrationEnforceExpireUsedBeforeReload(t *testing.T) {
	clock := itUseClock(t)
	b := newBackend(t)
	cfg := itFrontConfig{dcr: append([]string{"expire_unused 1h"}, itEnforce()...)}
	f := startFront(t, b, cfg)
	rd := f.reader(t)
	c := f.registerManaged(t, itConfBody)

	clock.advance(2 * time.Hour)
	moved := clock.now().Unix()
	b.take()
	f.passed(t, f.token(t, "grant_type=authorization_code&code=c", itBasic(c.id, c.secret)))
	f.reload(t, cfg)
	// The first request starts the new config's expiry pass.
	f.request(t, http.MethodGet, "/api", nil)

	got, err := itPollClient(t, rd, c.id, 20*time.Second,
		func(got *clientdb.Client, err error) bool {
			return err != nil || got.LastUsedAt >= moved
		})
	if err != nil {
		t.Fatalf("client used a moment before the reload: %v, want it kept", err)
	}
	if got.LastUsedAt < moved {
		t.Errorf("last_used_at %d, want at least %d", got.LastUsedAt, moved)
	}
}
