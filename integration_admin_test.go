package dcr

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

// The admin suite drives "caddy dcr" in process against the admin
// endpoint of caddytest's Caddy, which loads the admin.api.dcr module as
// any Caddy with the plugin does, and checks the effects through HTTP and
// through a clientdb Reader, as another process would see them.

// itAdminAddress is caddytest's admin endpoint.
const itAdminAddress = "localhost:2999"

// itCLI runs "caddy dcr" with args against the server's store and returns
// what it printed, failing the test on an error. Every output is checked
// for hashes.
func (s *itServer) itCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, err := s.itCLIErr(t, args...)
	if err != nil {
		t.Fatalf("caddy dcr %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// itCLIErr is itCLI for a command that may fail.
func (s *itServer) itCLIErr(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := runDCR(itAdminAddress, append(args, "--store", s.storeName(t)), &out)
	adNoHashes(t, "caddy dcr "+strings.Join(args, " "), out.Bytes())
	return out.String(), err
}

// itField returns the value of a "name:  value" line of the output.
func itField(t *testing.T, out, name string) string {
	t.Helper()
	for line := range strings.Lines(out) {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("output has no %s:\n%s", name, out)
	return ""
}

// itListed returns the client IDs and next of "list --json".
func (s *itServer) itListed(t *testing.T, args ...string) ([]string, string) {
	t.Helper()
	out := s.itCLI(t, append([]string{"list", "--json"}, args...)...)
	var page struct {
		Clients []struct {
			ID string `json:"client_id"`
		} `json:"clients"`
		Next string `json:"next"`
	}
	if err := json.Unmarshal([]byte(out), &page); err != nil {
		t.Fatalf("list --json printed %q: %v", out, err)
	}
	ids := []string{}
	for _, c := range page.Clients {
		ids = append(ids, c.ID)
	}
	return ids, page.Next
}

// itTokenRequest sends a token request authenticated with HTTP Basic and
// returns the status: 200 from the backend, or the refusal's.
func (s *itServer) itTokenRequest(t *testing.T, id, secret string) int {
	t.Helper()
	r := s.request(t, http.MethodPost, "/oauth/token",
		strings.NewReader("grant_type=authorization_code&code=c1"),
		"Content-Type: application/x-www-form-urlencoded", itBasic(id, secret))
	if r.status == http.StatusOK && !bytes.HasPrefix(r.body, []byte("backend POST")) {
		t.Fatalf("token request answered 200 but not by the backend: %s", r.body)
	}
	return r.status
}

// itAuditOps returns the store's audit events as "op actor subject".
func (s *itServer) itAuditOps(t *testing.T) []string {
	t.Helper()
	events, err := s.reader(t).EventsSince(0, 100)
	if err != nil {
		t.Fatalf("reading audit events: %v", err)
	}
	var out []string
	for _, e := range events {
		if e.Outcome != "" || e.Op == clientdb.OpRead {
			continue // reads and refusals, appended in batches
		}
		out = append(out, strings.Join(strings.Fields(
			e.Op+" "+e.Actor+" "+e.ClientID+" "+e.TokenID), " "))
	}
	return out
}

func TestIntegrationAdminClients(t *testing.T) {
	s := startDCR(t, itEnforce()...)

	// Three clients, in the order of their IDs for the listing checks.
	var cs []*itManaged
	for _, name := range []string{"Admin Alpha", "admin beta", "Gamma"} {
		cs = append(cs, s.registerManaged(t, itReg(`"client_name":"`+name+`"`)))
	}
	created := make([]string, len(cs))
	for i, c := range cs {
		created[i] = "create client " + c.id
	}
	slices.SortFunc(cs, func(a, b *itManaged) int { return strings.Compare(a.id, b.id) })
	ids := []string{cs[0].id, cs[1].id, cs[2].id}

	t.Run("list", func(t *testing.T) {
		if got, next := s.itListed(t); !slices.Equal(got, ids) || next != "" {
			t.Errorf("listed %q next %q, want %q", got, next, ids)
		}
		var admins []string
		for _, c := range cs {
			if strings.HasPrefix(strings.ToLower(c.resp["client_name"].(string)), "admin") {
				admins = append(admins, c.id)
			}
		}
		if got, _ := s.itListed(t, "--name", "ADMIN"); !slices.Equal(got, admins) {
			t.Errorf("--name ADMIN listed %q, want %q", got, admins)
		}

		// Pages of two, then the rest.
		got, next := s.itListed(t, "--limit", "2")
		if !slices.Equal(got, ids[:2]) || next != ids[1] {
			t.Errorf("first page %q next %q", got, next)
		}
		got, next = s.itListed(t, "--limit", "2", "--after", next)
		if !slices.Equal(got, ids[2:]) || next != "" {
			t.Errorf("second page %q next %q", got, next)
		}

		// The table names every client and says how to go on.
		out := s.itCLI(t, "list", "--limit", "2")
		for _, c := range cs[:2] {
			if !strings.Contains(out, c.id) || !strings.Contains(out,
				c.resp["client_name"].(string)) {
				t.Errorf("table lacks %s:\n%s", c.id, out)
			}
		}
		if !strings.Contains(out, "--after="+ids[1]) {
			t.Errorf("table does not say how to go on:\n%s", out)
		}

		// With only this Caddy's store in use, --store may be left out.
		if paths := storePaths(); len(paths) == 1 {
			var out bytes.Buffer
			if err := runDCR(itAdminAddress, []string{"list"}, &out); err != nil ||
				!strings.Contains(out.String(), ids[0]) {
				t.Errorf("list without --store: %v\n%s", err, out.String())
			}
		}
	})

	c := cs[0]
	t.Run("show", func(t *testing.T) {
		out := s.itCLI(t, "show", c.id)
		if itField(t, out, "client_id") != c.id || itField(t, out, "state") != "active" ||
			itField(t, out, "client_name") != c.resp["client_name"] {
			t.Errorf("show printed\n%s", out)
		}
		if strings.Contains(out, c.secret) || strings.Contains(out, c.token) {
			t.Errorf("show printed a secret or token:\n%s", out)
		}
	})

	t.Run("disable and enable", func(t *testing.T) {
		if code := s.itTokenRequest(t, c.id, c.secret); code != http.StatusOK {
			t.Fatalf("token request before: %d", code)
		}
		out := s.itCLI(t, "disable", c.id)
		if out != "client "+c.id+" is disabled\n" {
			t.Errorf("disable printed %q", out)
		}

		// Refused at once, by the configuration endpoint and by
		// enforcement, and seen as disabled by other processes.
		if r := s.manage(t, http.MethodGet, c.id, c.token, ""); r.status != 401 {
			t.Errorf("RFC 7592 read of a disabled client: %d %s", r.status, r.body)
		}
		if code := s.itTokenRequest(t, c.id, c.secret); code != http.StatusUnauthorized {
			t.Errorf("token request of a disabled client: %d", code)
		}
		if _, err := s.reader(t).Lookup(c.id); !errors.Is(err, clientdb.ErrDisabled) {
			t.Errorf("Lookup of a disabled client: %v", err)
		}
		ids, _ := s.itListed(t, "--state", "disabled")
		if !slices.Equal(ids, []string{c.id}) {
			t.Errorf("disabled clients %q, want %q", ids, c.id)
		}

		s.itCLI(t, "enable", c.id)
		if r := s.manage(t, http.MethodGet, c.id, c.token, ""); r.status != 200 {
			t.Errorf("RFC 7592 read after enable: %d %s", r.status, r.body)
		}
		if code := s.itTokenRequest(t, c.id, c.secret); code != http.StatusOK {
			t.Errorf("token request after enable: %d", code)
		}
	})

	rotated := cs[1]
	t.Run("rotate-secret", func(t *testing.T) {
		out := s.itCLI(t, "rotate-secret", rotated.id)
		secret := itField(t, out, "client_secret")
		if len(secret) < 43 || secret == rotated.secret {
			t.Fatalf("rotate-secret printed secret %q", secret)
		}
		if itField(t, out, "previous secret") != "no longer accepted" {
			t.Errorf("rotate-secret printed\n%s", out)
		}
		rd := s.reader(t)
		for _, tc := range []struct {
			secret string
			want   bool
		}{{rotated.secret, false}, {secret, true}} {
			ok, err := rd.VerifySecret(rotated.id, tc.secret, time.Now())
			if err != nil || ok != tc.want {
				t.Errorf("VerifySecret = %v, %v; want %v", ok, err, tc.want)
			}
		}
		if code := s.itTokenRequest(t, rotated.id, rotated.secret); code != 401 {
			t.Errorf("token request with the old secret: %d", code)
		}
		if code := s.itTokenRequest(t, rotated.id, secret); code != 200 {
			t.Errorf("token request with the new secret: %d", code)
		}
		// Shown once.
		if strings.Contains(s.itCLI(t, "show", rotated.id), secret) {
			t.Error("show prints the rotated secret")
		}
	})

	gone := cs[2]
	t.Run("delete", func(t *testing.T) {
		if out := s.itCLI(t, "delete", gone.id); out != "client "+gone.id+" is deleted\n" {
			t.Errorf("delete printed %q", out)
		}
		ts, err := s.reader(t).Tombstone(gone.id)
		if err != nil || ts.Reason != clientdb.ReasonDeleted {
			t.Errorf("tombstone %+v, %v", ts, err)
		}
		if r := s.manage(t, http.MethodGet, gone.id, gone.token, ""); r.status != 401 {
			t.Errorf("RFC 7592 read of a deleted client: %d", r.status)
		}
		_, err = s.itCLIErr(t, "show", gone.id)
		want := `client "` + gone.id + `" was deleted (HTTP 404)`
		if err == nil || err.Error() != want {
			t.Errorf("show of a deleted client: %v, want %q", err, want)
		}
		if got, _ := s.itListed(t); slices.Contains(got, gone.id) {
			t.Errorf("the deleted client is listed: %q", got)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"show", "nobody"}, `client "nobody" not found (HTTP 404)`},
			{[]string{"list", "--state", "gone"}, `state "gone"`},
			{[]string{"list", "--store", "/nowhere/clients.db"},
				"no dcr handler uses the client store /nowhere/clients.db"},
		} {
			var out bytes.Buffer
			err := runDCR(itAdminAddress, tc.args, &out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("dcr %s: %v, want %q", tc.args, err, tc.want)
			}
		}
	})

	// The trail holds the registrations, then the operator's changes, in
	// the order they were made.
	want := append(created,
		"disable operator "+c.id, "enable operator "+c.id,
		"rotate_secret operator "+rotated.id, "delete operator "+gone.id)
	if got := s.itAuditOps(t); !slices.Equal(got, want) {
		t.Errorf("audit trail\n got %q\nwant %q", got, want)
	}
}

func TestIntegrationAdminTokens(t *testing.T) {
	s := startDCR(t, "require_initial_access_token on")

	out := s.itCLI(t, "token", "create", "--label", "ci runner", "--max-uses", "2",
		"--expires-in", "1h", "--scopes", "openid,profile")
	token, id := itField(t, out, "token"), itField(t, out, "id")
	if !strings.HasPrefix(token, clientdb.InitialTokenPrefix) || id == "" ||
		itField(t, out, "policy") != "scopes=openid,profile" {
		t.Fatalf("token create printed\n%s", out)
	}
	stored := itIATStored(t, s, id)
	if stored.Label != "ci runner" || stored.MaxUses != 2 ||
		stored.ExpiresAt-stored.CreatedAt != 3600 {
		t.Errorf("stored token %+v", stored)
	}

	// The token opens registration, under its policy.
	c := itIATRegister(t, s, itReg(`"scope":"openid"`), itIATBearer(token))
	if c.InitialTokenID != id {
		t.Errorf("client records token %q, want %q", c.InitialTokenID, id)
	}
	s.postRefused(t, itReg(`"scope":"email"`),
		itRefusal{400, "invalid_client_metadata", "email"}, itIATBearer(token))

	list := s.itCLI(t, "token", "list")
	if !strings.Contains(list, id) || !strings.Contains(list, "1/2") ||
		strings.Contains(list, token) {
		t.Errorf("token list printed\n%s", list)
	}

	if out := s.itCLI(t, "token", "revoke", id); out != "token "+id+" is revoked\n" {
		t.Errorf("token revoke printed %q", out)
	}
	itIATRefused(t, s, itValidBody, itIATBearer(token))
	if _, err := s.itCLIErr(t, "token", "revoke", "nope"); err == nil ||
		!strings.Contains(err.Error(), "(HTTP 404)") {
		t.Errorf("revoke of an unknown token: %v", err)
	}

	want := []string{"token_create operator " + id, "create client " + c.ID + " " + id,
		"token_revoke operator " + id}
	if got := s.itAuditOps(t); !slices.Equal(got, want) {
		t.Errorf("audit trail\n got %q\nwant %q", got, want)
	}
	itIATAbsent(t, "store file", s.fileBytes(t), token)
}
