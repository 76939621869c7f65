package dcr

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

// The command tests run "caddy dcr" in process against a stand-in for
// Caddy's admin endpoint that answers as the admin API would, so that
// the output can be compared exactly. The integration suite runs it
// against the real API.

// cmdSeen is a request the stand-in received.
type cmdSeen struct {
	method, uri, origin, contentType, body string
}

// cmdAdmin is the stand-in admin endpoint: it answers "METHOD path" from
// answers, and 404 as Caddy's mux does for anything else.
type cmdAdmin struct {
	addr    string
	answers map[string]cmdAnswer

	mu   sync.Mutex
	seen []cmdSeen
}

// cmdAnswer is a canned answer.
type cmdAnswer struct {
	status int
	body   string
}

// newCmdAdmin starts a stand-in with the given answers.
func newCmdAdmin(t *testing.T, answers map[string]cmdAnswer) *cmdAdmin {
	t.Helper()
	a := &cmdAdmin{answers: answers}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		a.mu.Lock()
		a.seen = append(a.seen, cmdSeen{r.Method, r.URL.RequestURI(),
			r.Header.Get("Origin"), r.Header.Get("Content-Type"), string(body)})
		a.mu.Unlock()
		ans, ok := a.answers[r.Method+" "+r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(ans.status)
		io.WriteString(w, ans.body)
	}))
	t.Cleanup(srv.Close)
	a.addr = srv.Listener.Addr().String()
	return a
}

// requests returns what the stand-in received.
func (a *cmdAdmin) requests() []cmdSeen {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]cmdSeen(nil), a.seen...)
}

// cmdJSON encodes v as the admin API would.
func cmdJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// cmdRun runs the command against a and returns what it printed.
func cmdRun(t *testing.T, a *cmdAdmin, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := runDCR(a.addr, args, &out)
	return out.String(), err
}

// cmdClients are the clients the stand-in serves.
func cmdClients(t *testing.T) (active, disabled *adminClient) {
	t.Helper()
	c := adClient("c-active", "Alpha App", 0)
	c.InitialTokenID = "tok-1"
	c.Policy = &clientdb.TokenPolicy{Scopes: []string{"read", "write"}}
	c.Metadata.Scope = "read"
	d := adClient("c-off", "", 1767000200)
	d.SecretHash, d.PreviousSecretHash = "", ""
	d.Metadata.TokenEndpointAuthMethod = "none"
	d.LastUsedAt = 0
	return newAdminClient(c), newAdminClient(d)
}

func TestCommandOutput(t *testing.T) {
	active, disabled := cmdClients(t)
	rotated, _ := cmdClients(t)
	rotated.ClientSecret = "the-new-secret"
	rotated.ClientSecretExpiresAt = 1767086400
	rotated.PreviousSecretExpiresAt = 1767000600
	token := &adminToken{Token: "dcr_iat_secret", ID: "tok-1", Label: "partner a",
		State: "active", CreatedAt: 1767000000, ExpiresAt: 1767604800, MaxUses: 3,
		Policy: &clientdb.TokenPolicy{Scopes: []string{"read"},
			RedirectHosts: []string{"*.example.com"}}}
	plain := &adminToken{ID: "tok-2", State: "revoked", CreatedAt: 1767000100,
		Uses: 2, RevokedAt: 1767000200}

	a := newCmdAdmin(t, map[string]cmdAnswer{
		"GET /dcr/clients": {200, cmdJSON(t, clientList{
			Clients: []*adminClient{active, disabled}, Next: "c-off"})},
		"GET /dcr/clients/c-active":                {200, cmdJSON(t, active)},
		"POST /dcr/clients/c-off/disable":          {200, cmdJSON(t, disabled)},
		"POST /dcr/clients/c-active/enable":        {200, cmdJSON(t, active)},
		"POST /dcr/clients/c-active/rotate-secret": {200, cmdJSON(t, rotated)},
		"DELETE /dcr/clients/c-active": {200, cmdJSON(t, clientdb.Tombstone{
			ID: "c-active", IssuedAt: 1767000000, DeletedAt: 1767000300,
			Reason: "deleted"})},
		"POST /dcr/tokens": {201, cmdJSON(t, token)},
		"GET /dcr/tokens": {200, cmdJSON(t, tokenList{
			Tokens: []*adminToken{{ID: "tok-1", Label: "partner a", State: "active",
				CreatedAt: 1767000000, ExpiresAt: 1767604800, MaxUses: 3}, plain}})},
		"DELETE /dcr/tokens/tok-2": {200, cmdJSON(t, plain)},
	})

	cases := []struct {
		name string
		args []string
		want string
	}{
		// Rows are split where the columns are: the table is wide.
		{"list", []string{"list"}, "" +
			"CLIENT ID  NAME       STATE     AUTH METHOD          " +
			"REGISTERED            LAST USED\n" +
			"c-active   Alpha App  active    client_secret_basic  " +
			"2025-12-29T09:20:00Z  2025-12-29T09:21:10Z\n" +
			"c-off      -          disabled  none                 " +
			"2025-12-29T09:20:00Z  never\n" +
			"more clients follow: list again with --after=c-off\n"},
		{"show", []string{"show", "c-active"}, "" +
			"client_id:         c-active\n" +
			"client_name:       Alpha App\n" +
			"state:             active\n" +
			"registered:        2025-12-29T09:20:00Z\n" +
			"updated:           2025-12-29T09:20:50Z\n" +
			"last_used:         2025-12-29T09:21:10Z\n" +
			"auth_method:       client_secret_basic\n" +
			"secret:            expires 2033-05-18T03:33:19Z; " +
			"previous secret valid until 2025-12-29T09:21:40Z\n" +
			"grant_types:       authorization_code\n" +
			"response_types:    code\n" +
			"redirect_uris:     https://app.example/cb\n" +
			"scope:             read\n" +
			"initial_token_id:  tok-1\n" +
			"policy:            scopes=read,write\n"},
		{"disable", []string{"disable", "c-off"}, "client c-off is disabled\n"},
		{"enable", []string{"enable", "c-active"}, "client c-active is enabled\n"},
		{"delete", []string{"delete", "c-active"}, "client c-active is deleted\n"},
		{"rotate-secret", []string{"rotate-secret", "c-active"}, "" +
			"client_id:        c-active\n" +
			"client_secret:    the-new-secret\n" +
			"expires:          2025-12-30T09:20:00Z\n" +
			"previous secret:  accepted until 2025-12-29T09:30:00Z\n" +
			"The secret is shown only this once; hand it to the client now.\n"},
		{"token create", []string{"token", "create"}, "" +
			"token:     dcr_iat_secret\n" +
			"id:        tok-1\n" +
			"label:     partner a\n" +
			"expires:   2026-01-05T09:20:00Z\n" +
			"max_uses:  3\n" +
			"policy:    scopes=read redirect_hosts=*.example.com\n" +
			"The token is shown only this once; hand it on now.\n"},
		{"token list", []string{"token", "list"}, "" +
			"TOKEN ID  LABEL      STATE    USES         CREATED               EXPIRES\n" +
			"tok-1     partner a  active   0/3          2025-12-29T09:20:00Z  " +
			"2026-01-05T09:20:00Z\n" +
			"tok-2     -          revoked  2/unlimited  2025-12-29T09:21:40Z  never\n"},
		{"token revoke", []string{"token", "revoke", "tok-2"}, "token tok-2 is revoked\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := cmdRun(t, a, tc.args...)
			if err != nil {
				t.Fatalf("dcr %s: %v", tc.args, err)
			}
			if got != tc.want {
				t.Errorf("dcr %s printed\n%s\nwant\n%s", tc.args, got, tc.want)
			}
			adNoHashes(t, "output", []byte(got))
		})
	}
}

func TestCommandEmptyLists(t *testing.T) {
	a := newCmdAdmin(t, map[string]cmdAnswer{
		"GET /dcr/clients": {200, `{"clients":[],"next":""}`},
		"GET /dcr/tokens":  {200, `{"tokens":[]}`},
	})
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"list"}, "no clients\n"},
		{[]string{"token", "list"}, "no initial access tokens\n"},
	} {
		got, err := cmdRun(t, a, tc.args...)
		if err != nil || got != tc.want {
			t.Errorf("dcr %s: %q, %v; want %q", tc.args, got, err, tc.want)
		}
	}
}

func TestCommandJSON(t *testing.T) {
	active, _ := cmdClients(t)
	answers := map[string]cmdAnswer{
		"GET /dcr/clients":          {200, cmdJSON(t, clientList{Clients: []*adminClient{active}})},
		"GET /dcr/clients/c-active": {200, cmdJSON(t, active)},
		"POST /dcr/tokens":          {201, `{"token":"dcr_iat_x","id":"t"}`},
	}
	a := newCmdAdmin(t, answers)
	for _, tc := range []struct {
		args []string
		key  string
	}{
		{[]string{"list", "--json"}, "GET /dcr/clients"},
		{[]string{"--json", "show", "c-active"}, "GET /dcr/clients/c-active"},
		{[]string{"token", "create", "--json"}, "POST /dcr/tokens"},
	} {
		got, err := cmdRun(t, a, tc.args...)
		if err != nil {
			t.Fatalf("dcr %s: %v", tc.args, err)
		}
		// The API's JSON, indented for people, with nothing else.
		var want bytes.Buffer
		json.Indent(&want, []byte(answers[tc.key].body), "", "  ")
		if got != want.String()+"\n" {
			t.Errorf("dcr %s printed\n%s\nwant\n%s", tc.args, got, want.String())
		}
	}
}

func TestCommandRequests(t *testing.T) {
	a := newCmdAdmin(t, map[string]cmdAnswer{
		"GET /dcr/clients":         {200, `{"clients":[],"next":""}`},
		"POST /dcr/tokens":         {201, `{"token":"x","id":"t"}`},
		"POST /dcr/clients/a/b/c":  {200, `{}`},
		"DELETE /dcr/tokens/tok 1": {200, `{"id":"tok 1"}`},
	})
	origin := "http://" + a.addr
	cases := []struct {
		name string
		args []string
		want cmdSeen
	}{
		{"list filters", []string{"list", "--name", "My App", "--state", "active",
			"--limit", "7", "--after", "c9"},
			cmdSeen{"GET", "/dcr/clients?after=c9&limit=7&name=My+App&state=active",
				origin, "", ""}},
		{"store", []string{"list", "--store", "/srv/dcr/clients.db"},
			cmdSeen{"GET", "/dcr/clients?store=%2Fsrv%2Fdcr%2Fclients.db", origin, "", ""}},
		{"token create", []string{"token", "create", "--label", "ci",
			"--expires-in", "168h", "--max-uses", "2", "--grant-types",
			"authorization_code,refresh_token", "--scopes", "read",
			"--redirect-hosts", "a.example,*.b.example"},
			cmdSeen{"POST", "/dcr/tokens", origin, "application/json",
				`{"label":"ci","expires_in":"168h","max_uses":2,"policy":` +
					`{"grant_types":["authorization_code","refresh_token"],` +
					`"scopes":["read"],"redirect_hosts":["a.example","*.b.example"]}}`}},
		{"token create, no flags", []string{"token", "create"},
			cmdSeen{"POST", "/dcr/tokens", origin, "application/json",
				`{"label":"","expires_in":"","max_uses":0,"policy":{}}`}},
		// IDs are escaped, so that every ID names one client.
		{"escaped ID", []string{"enable", "a/b"},
			cmdSeen{"POST", "/dcr/clients/a%2Fb/enable", origin, "", ""}},
		{"escaped token ID", []string{"token", "revoke", "tok 1"},
			cmdSeen{"DELETE", "/dcr/tokens/tok%201", origin, "", ""}},
		// Base64url IDs may begin with a dash and are still IDs, among
		// flags in any order and spelling.
		{"ID with a dash", []string{"disable", "-Zx", "--store", "/s.db"},
			cmdSeen{"POST", "/dcr/clients/-Zx/disable?store=%2Fs.db", origin, "", ""}},
		{"ID with two dashes", []string{"--store=/s.db", "enable", "--Zx"},
			cmdSeen{"POST", "/dcr/clients/--Zx/enable?store=%2Fs.db", origin, "", ""}},
		{"ID after --", []string{"delete", "--json", "--", "--store"},
			cmdSeen{"DELETE", "/dcr/clients/--store", origin, "", ""}},
		{"token ID with a dash", []string{"token", "revoke", "-t", "--json"},
			cmdSeen{"DELETE", "/dcr/tokens/-t", origin, "", ""}},
		{"list after an ID with a dash", []string{"list", "--after", "-Zx"},
			cmdSeen{"GET", "/dcr/clients?after=-Zx", origin, "", ""}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(a.requests())
			cmdRun(t, a, tc.args...)
			seen := a.requests()[before:]
			if len(seen) != 1 || seen[0] != tc.want {
				t.Errorf("sent %+v\nwant %+v", seen, tc.want)
			}
		})
	}
}

func TestCommandErrors(t *testing.T) {
	a := newCmdAdmin(t, map[string]cmdAnswer{
		"GET /dcr/clients/gone": {404, `{"error":"client \"gone\" was deleted"}` + "\n"},
		"POST /dcr/clients/pub/rotate-secret": {409,
			`{"error":"client \"pub\" has no secret to rotate"}`},
		"GET /dcr/tokens": {500, "boom"},
	})
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"API error", []string{"show", "gone"}, `client "gone" was deleted (HTTP 404)`},
		{"conflict", []string{"rotate-secret", "pub"},
			`client "pub" has no secret to rotate (HTTP 409)`},
		{"not JSON", []string{"token", "list"}, "boom (HTTP 500)"},
		{"no dcr plugin", []string{"list"}, "the Caddy at " + a.addr +
			" has no dcr admin API: is it built with the dcr plugin? (HTTP 404)"},
		{"missing ID", []string{"show"}, "want one ID, got 0 arguments"},
		{"two IDs", []string{"delete", "a", "b"}, "want one ID, got 2 arguments"},
		{"flag without value", []string{"show", "x", "--store"},
			"flag needs an argument: --store"},
		{"bad flag value", []string{"show", "x", "--json=maybe"},
			`invalid argument "maybe" for --json`},
		{"extra argument", []string{"list", "x"}, `unknown command "x"`},
		{"unknown flag", []string{"list", "--colour"}, "unknown flag: --colour"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := cmdRun(t, a, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("dcr %s: error %v, want one saying %q", tc.args, err, tc.want)
			}
			if out != "" {
				t.Errorf("dcr %s printed %q with an error", tc.args, out)
			}
		})
	}
}

func TestCommandCaddyNotRunning(t *testing.T) {
	// A port that was just free: nothing listens on it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	var out bytes.Buffer
	err = runDCR(addr, []string{"list"}, &out)
	want := "cannot reach Caddy's admin endpoint at " + addr +
		": is Caddy running? (connection refused)"
	if err == nil || err.Error() != want {
		t.Errorf("error %v, want %q", err, want)
	}
	if out.Len() != 0 {
		t.Errorf("printed %q", out.String())
	}
}

func TestCommandHelp(t *testing.T) {
	a := newCmdAdmin(t, nil)
	for _, args := range [][]string{
		{"show", "--help"}, {"show", "x", "-h"}, {"token", "revoke", "--help"},
		{"list", "--help"},
	} {
		out, err := cmdRun(t, a, args...)
		if err != nil || !strings.Contains(out, "Usage:") ||
			!strings.Contains(out, "--store") {
			t.Errorf("dcr %s: %v\n%s", args, err, out)
		}
	}
	if seen := a.requests(); len(seen) != 0 {
		t.Errorf("help sent requests: %+v", seen)
	}
}
