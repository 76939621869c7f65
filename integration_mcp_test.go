package dcr

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestIntegrationMCPClientFlow plays an MCP-style client from start to
// finish with nothing but net/http: it discovers the registration endpoint
// through the backend's metadata served via Caddy, registers as a public
// native client with a loopback redirect URI and no application_type (as
// Claude Code does), then is held to that registration at /authorize and
// /token, and after deleting its registration is told to register again.
func TestIntegrationMCPClientFlow(t *testing.T) {
	b := newBackend(t)
	b.serve("/.well-known/oauth-authorization-server", itDoc{
		status: http.StatusOK,
		header: http.Header{"Content-Type": {"application/json"}},
		body: []byte(`{"issuer":"http://localhost:9080",` +
			`"authorization_endpoint":"http://localhost:9080/oauth/authorize",` +
			`"token_endpoint":"http://localhost:9080/oauth/token",` +
			`"response_types_supported":["code"],` +
			`"code_challenge_methods_supported":["S256"]}`),
	})
	startFront(t, b, itFrontConfig{dcr: itEnforce()})
	client := itClient()
	base := "http://localhost:9080"

	// Discovery, as a client library asks for it: with gzip accepted.
	req, _ := http.NewRequest(http.MethodGet, base+"/.well-known/oauth-authorization-server", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	var meta struct {
		Issuer               string   `json:"issuer"`
		RegistrationEndpoint string   `json:"registration_endpoint"`
		AuthorizationURL     string   `json:"authorization_endpoint"`
		TokenURL             string   `json:"token_endpoint"`
		AuthMethods          []string `json:"token_endpoint_auth_methods_supported"`
	}
	mcpJSON(t, client, req, http.StatusOK, &meta)
	if meta.RegistrationEndpoint != base+"/register" {
		t.Fatalf("registration_endpoint %q, want %q", meta.RegistrationEndpoint, base+"/register")
	}
	if meta.Issuer != base {
		t.Errorf("issuer changed to %q", meta.Issuer)
	}
	if !strings.Contains(strings.Join(meta.AuthMethods, " "), "none") {
		t.Errorf("token_endpoint_auth_methods_supported %q lacks none", meta.AuthMethods)
	}

	// Registration, public client, loopback redirect without a port.
	req, _ = http.NewRequest(http.MethodPost, meta.RegistrationEndpoint, strings.NewReader(
		`{"client_name":"MCP test client","redirect_uris":["http://127.0.0.1/callback"],`+
			`"grant_types":["authorization_code","refresh_token"],`+
			`"token_endpoint_auth_method":"none"}`))
	req.Header.Set("Content-Type", "application/json")
	var reg struct {
		ClientID     string   `json:"client_id"`
		ClientSecret string   `json:"client_secret"`
		RedirectURIs []string `json:"redirect_uris"`
		Token        string   `json:"registration_access_token"`
		ClientURI    string   `json:"registration_client_uri"`
	}
	mcpJSON(t, client, req, http.StatusCreated, &reg)
	if reg.ClientID == "" || reg.ClientSecret != "" || len(reg.RedirectURIs) != 1 {
		t.Fatalf("registration %+v: want a public client with its redirect URI echoed", reg)
	}

	// Authorization with PKCE on an ephemeral loopback port.
	verifier := "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
	sum := sha256.Sum256([]byte(verifier))
	challenge := base64.RawURLEncoding.EncodeToString(sum[:])
	redirect := "http://127.0.0.1:53117/callback"
	authz := meta.AuthorizationURL + "?" + url.Values{
		"response_type":         {"code"},
		"client_id":             {reg.ClientID},
		"redirect_uri":          {redirect},
		"code_challenge":        {challenge},
		"code_challenge_method": {"S256"},
		"state":                 {"xyz"},
	}.Encode()
	seen := mcpGet(t, client, authz, http.StatusOK)
	if got := seen.Header.Get("X-DCR-Client-ID"); got != reg.ClientID {
		t.Errorf("backend saw X-DCR-Client-ID %q, want %q", got, reg.ClientID)
	}
	if got := seen.Header.Get("X-DCR-Client-Type"); got != "public" {
		t.Errorf("backend saw X-DCR-Client-Type %q, want public", got)
	}

	// Held to the registration: another redirect URI and a missing
	// challenge never reach the backend and never redirect.
	for name, u := range map[string]string{
		"foreign redirect": strings.Replace(authz, url.QueryEscape(redirect),
			url.QueryEscape("https://evil.example/cb"), 1),
		"no PKCE": meta.AuthorizationURL + "?" + url.Values{
			"response_type": {"code"}, "client_id": {reg.ClientID},
			"redirect_uri": {redirect},
		}.Encode(),
	} {
		b.take()
		resp, err := client.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
			t.Errorf("%s: status %d, Location %q; want 400 without redirect",
				name, resp.StatusCode, resp.Header.Get("Location"))
		}
		if n := len(b.take()); n != 0 {
			t.Errorf("%s: the backend saw %d requests", name, n)
		}
	}

	// Token request as a public client.
	form := url.Values{
		"grant_type": {"authorization_code"}, "code": {"c"},
		"redirect_uri": {redirect}, "client_id": {reg.ClientID},
		"code_verifier": {verifier},
	}
	seen = mcpPost(t, client, meta.TokenURL, form, http.StatusOK)
	if got := seen.Header.Get("X-DCR-Client-ID"); got != reg.ClientID {
		t.Errorf("token: backend saw X-DCR-Client-ID %q", got)
	}
	if !strings.Contains(seen.Body, "code_verifier="+verifier) {
		t.Errorf("token: backend got body %q, want the client's form", seen.Body)
	}

	// A grant the client did not register.
	form.Set("grant_type", "client_credentials")
	mcpPost(t, client, meta.TokenURL, form, http.StatusBadRequest)

	// Delete the registration: the token endpoint now answers the 401
	// invalid_client that makes MCP clients register again.
	req, _ = http.NewRequest(http.MethodDelete, reg.ClientURI, nil)
	req.Header.Set("Authorization", "Bearer "+reg.Token)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE: status %d, want 204", resp.StatusCode)
	}
	form.Set("grant_type", "authorization_code")
	resp, err = client.PostForm(meta.TokenURL, form)
	if err != nil {
		t.Fatal(err)
	}
	var e errorBody
	json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || e.Error != "invalid_client" {
		t.Errorf("token after delete: %d %q, want 401 invalid_client", resp.StatusCode, e.Error)
	}
}

// mcpJSON sends req, checks the status and decodes the JSON answer into v.
func mcpJSON(t *testing.T, c *http.Client, req *http.Request, status int, v any) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d; body %s",
			req.Method, req.URL, resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s %s: Content-Type %q", req.Method, req.URL, ct)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("%s %s: %v in %s", req.Method, req.URL, err, body)
	}
}

// mcpGet requests u and returns what the backend stand-in saw.
func mcpGet(t *testing.T, c *http.Client, u string, status int) itSeen {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	var seen itSeen
	mcpJSON(t, c, req, status, &seen)
	return seen
}

// mcpPost posts a form to u and returns what the backend stand-in saw, or
// the zero value for an answer that is not the backend's.
func mcpPost(t *testing.T, c *http.Client, u string, form url.Values, status int) itSeen {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	var seen itSeen
	mcpJSON(t, c, req, status, &seen)
	return seen
}
