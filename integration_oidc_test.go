package dcr

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The OpenID Connect suite registers through the same in-process Caddy
// as the registration suite. Sector identifier documents come from a
// local https server (startSectorServer) that the handler may reach only
// through its fetch block.

// itFetch returns the lines of a fetch block: with allow, loopback
// addresses may be fetched; roots, unless empty, is a PEM file to trust;
// extra lines go inside the block.
func itFetch(allow bool, roots string, extra ...string) []string {
	lines := []string{"fetch {"}
	if allow {
		lines = append(lines, "\tallow_networks 127.0.0.1/32 ::1/128")
	}
	if roots != "" {
		lines = append(lines, fmt.Sprintf("\ttrusted_roots %q", roots))
	}
	for _, e := range extra {
		lines = append(lines, "\t"+e)
	}
	return append(lines, "}")
}

// itRefusedDesc posts body, checks that it is refused with code and
// status 400 and that nothing was stored, and returns the description.
func (s *itServer) itRefusedDesc(t *testing.T, body, code string) string {
	t.Helper()
	before := s.count(t)
	r := s.post(t, body)
	itAssertRefusal(t, r, itRefusal{http.StatusBadRequest, code, ""})
	if after := s.count(t); after != before {
		t.Errorf("store holds %d clients after a refusal, want %d", after, before)
	}
	desc, _ := r.obj["error_description"].(string)
	return desc
}

// itContains fails unless s contains every one of want.
func itContains(t *testing.T, what, s string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(s, w) {
			t.Errorf("%s %q does not contain %q", what, s, w)
		}
	}
}

// itUpdateBody returns an RFC 7592 update body: the metadata of a client
// information response with the changes applied (a nil value removes a
// member), and the client's ID.
func itUpdateBody(t *testing.T, c *itManaged, changes map[string]any) string {
	t.Helper()
	m := itMetadata(c.resp)
	for k, v := range changes {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	m["client_id"] = c.id
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// itOIDCFull registers every OpenID Connect member; %q is the
// sector_identifier_uri, whose document lists both redirect URIs.
const itOIDCFull = `{
	"redirect_uris": ["https://app.example.com/cb", "https://app.example.com/cb2"],
	"token_endpoint_auth_method": "client_secret_jwt",
	"client_name": "OIDC RP",
	"scope": "openid profile",
	"application_type": "web",
	"sector_identifier_uri": %q,
	"subject_type": "pairwise",
	"id_token_signed_response_alg": "ES256",
	"id_token_encrypted_response_alg": "RSA-OAEP-256",
	"id_token_encrypted_response_enc": "A256GCM",
	"userinfo_signed_response_alg": "RS256",
	"userinfo_encrypted_response_alg": "ECDH-ES",
	"request_object_signing_alg": "none",
	"request_object_encryption_alg": "RSA-OAEP",
	"request_object_encryption_enc": "A128GCM",
	"token_endpoint_auth_signing_alg": "HS256",
	"default_max_age": 3600,
	"require_auth_time": true,
	"default_acr_values": ["urn:mace:incommon:iap:silver", "0"],
	"initiate_login_uri": "https://app.example.com/login",
	"request_uris": ["https://app.example.com/req.jwt#5f2a"],
	"post_logout_redirect_uris": ["https://app.example.com/bye"],
	"frontchannel_logout_uri": "https://app.example.com/fc-logout",
	"frontchannel_logout_session_required": true,
	"backchannel_logout_uri": "https://rp-backend.example.net/bc-logout",
	"backchannel_logout_session_required": false
}`

// itOIDCSector lists the redirect URIs of itOIDCFull.
const itOIDCSector = `["https://app.example.com/cb","https://app.example.com/cb2"]`

func TestIntegrationOIDCFullRegistration(t *testing.T) {
	srv := startSectorServer(t, map[string]sectorDoc{
		"/sector.json": {http.StatusOK, itOIDCSector},
	})
	s := startDCR(t, append([]string{
		"auth_methods client_secret_basic client_secret_jwt",
	}, itFetch(true, srv.roots)...)...)

	body := fmt.Sprintf(itOIDCFull, srv.URL+"/sector.json")
	c := s.registerManaged(t, body)

	// Every member is echoed as sent, and the content encryption that
	// was left out is filled in.
	sent := itDecode(t, body)
	for name, want := range sent {
		if got := c.resp[name]; !reflect.DeepEqual(got, want) {
			t.Errorf("%s: echoed %#v, sent %#v", name, got, want)
		}
	}
	if got := c.resp["userinfo_encrypted_response_enc"]; got != "A128CBC-HS256" {
		t.Errorf("userinfo_encrypted_response_enc %#v, want the default "+
			"A128CBC-HS256", got)
	}
	if c.secret == "" {
		t.Error("a client_secret_jwt client got no secret")
	}
	if n := srv.hits.Load(); n != 1 {
		t.Errorf("the sector document was fetched %d times, want 1", n)
	}

	// Stored as echoed, with the typed values intact.
	s.checkStored(t, c.resp)
	m := s.lookup(t, c.id).Metadata
	if m.ApplicationType != "web" || m.SubjectType != "pairwise" {
		t.Errorf("stored application_type %q, subject_type %q",
			m.ApplicationType, m.SubjectType)
	}
	if m.DefaultMaxAge == nil || *m.DefaultMaxAge != 3600 {
		t.Errorf("stored default_max_age %v, want 3600", m.DefaultMaxAge)
	}
	if m.BackchannelLogoutSessionRequired == nil ||
		*m.BackchannelLogoutSessionRequired {
		t.Errorf("stored backchannel_logout_session_required %v, want false",
			m.BackchannelLogoutSessionRequired)
	}

	// RFC 7592: a read returns the same metadata, and an update that
	// sends it back, as the RFC has clients do, changes nothing.
	got := itAssertOK(t, s.manage(t, http.MethodGet, c.id, c.token, ""), c.id)
	if !reflect.DeepEqual(itMetadata(got), itMetadata(c.resp)) {
		t.Errorf("read metadata\n%v\nregistered\n%v",
			itMetadata(got), itMetadata(c.resp))
	}
	r := s.manage(t, http.MethodPut, c.id, c.token, itUpdateBody(t, c, nil))
	got = itAssertOK(t, r, c.id)
	if !reflect.DeepEqual(itMetadata(got), itMetadata(c.resp)) {
		t.Errorf("updated metadata\n%v\nregistered\n%v",
			itMetadata(got), itMetadata(c.resp))
	}
	if n := srv.hits.Load(); n != 1 {
		t.Errorf("the sector document was fetched %d times, want 1: "+
			"the update within minutes uses the copy fetched at registration", n)
	}
}

func TestIntegrationApplicationType(t *testing.T) {
	s := startDCR(t)

	// Claude Code registers a public client with loopback redirect URIs
	// by name and by address, and no application_type.
	claude := `{"client_name":"Claude Code",` +
		`"redirect_uris":["http://localhost:53682/callback",` +
		`"http://127.0.0.1:53682/callback"],` +
		`"grant_types":["authorization_code","refresh_token"],` +
		`"response_types":["code"],"token_endpoint_auth_method":"none"}`
	c := s.registerManaged(t, claude)
	if got := c.resp["application_type"]; got != "native" {
		t.Errorf("Claude Code style: application_type %#v, want native", got)
	}
	if c.secret != "" {
		t.Error("a public client got a secret")
	}
	s.checkStored(t, c.resp)
	if got := s.lookup(t, c.id).Metadata.ApplicationType; got != "native" {
		t.Errorf("stored application_type %q, want native", got)
	}

	// VS Code mixes a loopback URI and an https one: no type is
	// inferred, and the web rules are not applied.
	vscode := `{"client_name":"Visual Studio Code",` +
		`"redirect_uris":["http://127.0.0.1:33418/",` +
		`"https://vscode.dev/redirect"],` +
		`"grant_types":["authorization_code","refresh_token"],` +
		`"token_endpoint_auth_method":"none"}`
	resp := s.register(t, vscode)
	if got, ok := resp["application_type"]; ok {
		t.Errorf("VS Code style: application_type %#v echoed, want none", got)
	}
	s.checkStored(t, resp)

	refused := []struct {
		name string
		body string
		code string
		want []string
	}{
		{
			"web with loopback",
			`{"application_type":"web","redirect_uris":` +
				`["https://app.example.com/cb","http://127.0.0.1:8400/cb"]}`,
			"invalid_redirect_uri",
			[]string{"http://127.0.0.1:8400/cb", `"web"`},
		},
		{
			"web with https on localhost",
			`{"application_type":"web","redirect_uris":["https://localhost/cb"]}`,
			"invalid_redirect_uri",
			[]string{"https://localhost/cb", `"web"`},
		},
		{
			"native with https",
			`{"application_type":"native","redirect_uris":` +
				`["http://127.0.0.1:8400/cb","https://app.example.com/cb"]}`,
			"invalid_redirect_uri",
			[]string{"https://app.example.com/cb", `"native"`},
		},
		{
			"native with https post-logout URI",
			`{"application_type":"native",` +
				`"redirect_uris":["http://127.0.0.1:8400/cb"],` +
				`"post_logout_redirect_uris":["https://app.example.com/bye"]}`,
			"invalid_client_metadata",
			[]string{"post_logout_redirect_uris", `"native"`},
		},
		{
			"unknown type",
			itReg(`"application_type":"service"`),
			"invalid_client_metadata",
			[]string{"application_type", `"service"`},
		},
		{
			"type not a string",
			itReg(`"application_type":1`),
			"invalid_client_metadata",
			[]string{"application_type"},
		},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			desc := s.itRefusedDesc(t, tc.body, tc.code)
			itContains(t, "error_description", desc, tc.want...)
		})
	}

	// RFC 7592: sending back the echoed, inferred type is accepted; an
	// update to web with the loopback URIs is not, and changes nothing.
	t.Run("update", func(t *testing.T) {
		r := s.manage(t, http.MethodPut, c.id, c.token,
			itUpdateBody(t, c, map[string]any{"client_name": "Claude Code 2"}))
		got := itAssertOK(t, r, c.id)
		if got["application_type"] != "native" {
			t.Errorf("after update: application_type %#v, want native",
				got["application_type"])
		}
		token := itString(t, got, "registration_access_token")
		c.resp = got

		before := s.lookup(t, c.id)
		r = s.manage(t, http.MethodPut, c.id, token,
			itUpdateBody(t, c, map[string]any{"application_type": "web"}))
		itAssertRefusal(t, r, itRefusal{http.StatusBadRequest,
			"invalid_redirect_uri", `"web"`})
		s.unchanged(t, c.id, before)
	})

	// A registration whose type is inferred from its redirect URIs must
	// survive an update that sends back what was echoed.
	t.Run("inferred type with a web post-logout URI", func(t *testing.T) {
		c := s.registerManaged(t, `{"redirect_uris":`+
			`["http://127.0.0.1:8400/cb"],`+
			`"post_logout_redirect_uris":["https://app.example.com/bye"]}`)
		r := s.manage(t, http.MethodPut, c.id, c.token,
			itUpdateBody(t, c, nil))
		itAssertOK(t, r, c.id)
	})
}

func TestIntegrationPresetMCP(t *testing.T) {
	s := startDCR(t, "redirect_preset mcp")

	appType := func(body string) any {
		t.Helper()
		resp := s.register(t, body)
		s.checkStored(t, resp)
		return resp["application_type"]
	}

	// A desktop app with its own scheme and a loopback fallback.
	mixed := `{"redirect_uris":["com.example.app:/cb",` +
		`"http://127.0.0.1:8400/callback"],"token_endpoint_auth_method":"none"}`
	if got := appType(mixed); got != "native" {
		t.Errorf("private-use and loopback: application_type %#v, want native", got)
	}
	if got := appType(`{"redirect_uris":["com.example.app:/cb"]}`); got != "native" {
		t.Errorf("private-use only: application_type %#v, want native", got)
	}
	if got := appType(`{"redirect_uris":["com.example.app:/cb",` +
		`"https://app.example.com/cb"]}`); got != nil {
		t.Errorf("private-use and https: application_type %#v, want none", got)
	}

	for _, tc := range []struct{ name, uri string }{
		{"http on another host", "http://app.example.com/cb"},
		{"single-word scheme", "myapp:/cb"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := `{"redirect_uris":["` + tc.uri + `"]}`
			desc := s.itRefusedDesc(t, body, "invalid_redirect_uri")
			itContains(t, "error_description", desc, tc.uri)
		})
	}

	// Without the preset, a private-use scheme infers nothing.
	s.load(t)
	if got := appType(mixed); got != nil {
		t.Errorf("without the preset: application_type %#v, want none", got)
	}
}

// TestIntegrationPresetConfig loads configurations that Validate must
// refuse through the admin API, and checks that the running one keeps
// serving.
func TestIntegrationPresetConfig(t *testing.T) {
	s := startDCR(t)

	for _, tc := range []struct {
		name    string
		options []string
		want    []string
	}{
		{
			"mcp with require_https off",
			[]string{"redirect_preset mcp", "require_https off"},
			[]string{"redirect_preset mcp", "require_https off"},
		},
		{
			"unknown preset",
			[]string{"redirect_preset native"},
			// The answer is JSON, so the quotes around the name are
			// escaped.
			[]string{"redirect_preset", "native", "unknown preset"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var opts strings.Builder
			for _, o := range tc.options {
				opts.WriteString("\t\t" + o + "\n")
			}
			config := fmt.Sprintf(itCaddyfile, s.logFile, s.storeArgs(), opts.String())
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := storeLoadConfig(ctx, storeAdmin, config)
			if err == nil {
				t.Fatal("the config was loaded")
			}
			itContains(t, "load error", err.Error(), tc.want...)

			s.checkStored(t, s.register(t, itValidBody))
		})
	}
}

func TestIntegrationSectorIdentifier(t *testing.T) {
	const (
		cb1 = "https://app.example.com/cb"
		cb2 = "http://127.0.0.1:8400/cb"
	)
	listed, _ := json.Marshal([]string{"https://other.example.com/cb", cb1, cb2})
	srv := startSectorServer(t, map[string]sectorDoc{
		"/all":     {http.StatusOK, string(listed)},
		"/partial": {http.StatusOK, `["` + cb1 + `"]`},
		"/text":    {http.StatusOK, "<html>not JSON</html>"},
		"/object":  {http.StatusOK, `{"redirect_uris":` + string(listed) + `}`},
		"/big":     {http.StatusOK, `["` + strings.Repeat("x", 1100) + `"]`},
	})
	s := startDCR(t, itFetch(true, srv.roots, "max_size 1KiB")...)

	body := func(sector string, uris ...string) string {
		b, _ := json.Marshal(map[string]any{
			"redirect_uris":         uris,
			"sector_identifier_uri": sector,
			"subject_type":          "pairwise",
		})
		return string(b)
	}

	c := s.registerManaged(t, body(srv.URL+"/all", cb1, cb2))
	if got := c.resp["sector_identifier_uri"]; got != srv.URL+"/all" {
		t.Errorf("sector_identifier_uri echoed as %#v", got)
	}
	s.checkStored(t, c.resp)

	refused := []struct {
		name    string
		path    string
		fetched bool
		want    []string
	}{
		{"a redirect URI not listed", "/partial", true, []string{cb2}},
		{"status 404", "/missing", true, []string{"404"}},
		{"not JSON", "/text", true, []string{"JSON array"}},
		{"a JSON object", "/object", true, []string{"JSON array"}},
		{"larger than max_size", "/big", true, []string{"larger", "1024"}},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			before := srv.hits.Load()
			desc := s.itRefusedDesc(t, body(srv.URL+tc.path, cb1, cb2),
				"invalid_client_metadata")
			itContains(t, "error_description", desc,
				append([]string{"sector_identifier_uri"}, tc.want...)...)
			if srv.hits.Load() == before {
				t.Error("the sector document was not fetched")
			}
		})
	}

	t.Run("over http", func(t *testing.T) {
		before := srv.hits.Load()
		sector := strings.Replace(srv.URL, "https:", "http:", 1) + "/all"
		desc := s.itRefusedDesc(t, body(sector, cb1, cb2),
			"invalid_client_metadata")
		itContains(t, "error_description", desc,
			"sector_identifier_uri", "https")
		if n := srv.hits.Load() - before; n != 0 {
			t.Errorf("the server got %d requests", n)
		}
	})

	// RFC 7592: an update is held to the document too.
	t.Run("update with a redirect URI not listed", func(t *testing.T) {
		before := s.lookup(t, c.id)
		r := s.manage(t, http.MethodPut, c.id, c.token,
			itUpdateBody(t, c, map[string]any{
				"redirect_uris": []string{cb1, cb2, "https://app.example.com/new"},
			}))
		itAssertRefusal(t, r, itRefusal{http.StatusBadRequest,
			"invalid_client_metadata", "https://app.example.com/new"})
		s.unchanged(t, c.id, before)
	})

	// Without trusted_roots the test server's certificate fails.
	s.load(t, itFetch(true, "")...)
	t.Run("untrusted certificate", func(t *testing.T) {
		desc := s.itRefusedDesc(t, body(srv.URL+"/all", cb1, cb2),
			"invalid_client_metadata")
		itContains(t, "error_description", desc,
			"sector_identifier_uri", "certificate")
	})

	// Without allow_networks the loopback address is refused before any
	// connection, and the client is not told what the name resolved to;
	// the log tells the operator.
	s.load(t, itFetch(false, srv.roots)...)
	t.Run("loopback not allowed", func(t *testing.T) {
		const msg = "registration refused"
		prior := len(s.logEntries(t, msg, 0))
		before := srv.hits.Load()
		sector := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1) + "/all"
		desc := s.itRefusedDesc(t, body(sector, cb1, cb2),
			"invalid_client_metadata")
		itContains(t, "error_description", desc,
			"sector_identifier_uri", "not public")
		for _, ip := range []string{"127.0.0.1", "::1"} {
			if strings.Contains(desc, ip) {
				t.Errorf("error_description %q names %s", desc, ip)
			}
		}
		if n := srv.hits.Load() - before; n != 0 {
			t.Errorf("the server got %d requests", n)
		}

		var logged bool
		for _, e := range s.logEntries(t, msg, prior+1)[prior:] {
			cause, _ := e["cause"].(string)
			if e["rule"] == "sector_identifier_fetch" &&
				strings.Contains(cause, "allow_networks") {
				logged = true
			}
		}
		if !logged {
			t.Error("no refusal logged with rule sector_identifier_fetch " +
				"and the address check as its cause")
		}
	})
}
