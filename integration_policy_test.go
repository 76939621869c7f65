package dcr

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// TestIntegrationPolicies runs the built-in policy modules through a real
// Caddy, on registration and on RFC 7592 update: a CEL expression that
// refuses, one that amends, and reserved names with look-alikes.
func TestIntegrationPolicies(t *testing.T) {
	s := startDCR(t, "rate_limit off",
		"policy expression !client_name.lowerAscii().contains(\"internal\") {\n"+
			"\t\t\tdescription \"names with internal are kept for our own apps\"\n\t\t}",
		"policy expression `scope == \"\" ? {\"scope\": \"profile\"} : {}`",
		`policy reserved_names Acme "Acme Console"`)

	refused := []struct {
		name string
		body string
		want itRefusal
	}{
		{"expression refuses", itReg(`"client_name":"Internal Tools"`),
			itRefusal{400, "invalid_client_metadata", "kept for our own apps"}},
		{"reserved name", itReg(`"client_name":"Acme"`),
			itRefusal{400, "invalid_client_metadata", "reserved"}},
		{"reserved name, other case and a trailing space", itReg(`"client_name":"ACME "`),
			itRefusal{400, "invalid_client_metadata", "reserved"}},
		{"reserved name with a Greek capital alpha", itReg(`"client_name":"Αcme"`),
			itRefusal{400, "invalid_client_metadata", "reserved"}},
		{"reserved name in a language variant", itReg(`"client_name":"Tool",` +
			`"client_name#de":"ACME Console"`),
			itRefusal{400, "invalid_client_metadata", "reserved"}},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			s.postRefused(t, tc.body, tc.want)
		})
	}

	var c *itManaged
	t.Run("expression amends", func(t *testing.T) {
		c = s.registerManaged(t, itReg(`"client_name":"Partner App"`))
		if got := c.resp["scope"]; got != "profile" {
			t.Errorf("scope %v, want the policy's profile", got)
		}
		if got := s.lookup(t, c.id).Metadata.Scope; got != "profile" {
			t.Errorf("stored scope %q, want profile", got)
		}
		kept := s.registerManaged(t, itReg(`"scope":"email"`))
		if got := kept.resp["scope"]; got != "email" {
			t.Errorf("scope %v, want the client's own email", got)
		}
	})
	if c == nil {
		t.FailNow()
	}

	t.Run("update passes the policies too", func(t *testing.T) {
		body := `{"redirect_uris":["https://app.example.com/cb"],` +
			`"client_name":"acme","client_id":"` + c.id +
			`","client_secret":"` + c.secret + `"}`
		r := s.manage(t, http.MethodPut, c.id, c.token, body)
		itAssertRefusal(t, r, itRefusal{400, "invalid_client_metadata", "reserved"})
		if got := s.lookup(t, c.id).Metadata.ClientName; got != "Partner App" {
			t.Errorf("stored name %q after a refused update", got)
		}

		body = `{"redirect_uris":["https://app.example.com/cb"],` +
			`"client_name":"Partner App 2","client_id":"` + c.id +
			`","client_secret":"` + c.secret + `"}`
		got := itAssertOK(t, s.manage(t, http.MethodPut, c.id, c.token, body), c.id)
		if got["scope"] != "profile" {
			t.Errorf("updated scope %v, want the policy's profile", got["scope"])
		}
	})
}

// TestIntegrationPolicyAmendmentRechecked checks that what a policy
// amends passes the built-in rules again: an expression that adds a grant
// type the Caddyfile does not allow is refused, not stored.
func TestIntegrationPolicyAmendmentRechecked(t *testing.T) {
	s := startDCR(t, "rate_limit off",
		"policy expression `{\"grant_types\": [\"password\"]}`")
	s.postRefused(t, itValidBody,
		itRefusal{400, "invalid_client_metadata", "password"})
}

// TestIntegrationPolicyBadExpression checks that a CEL expression that
// does not compile fails the config load, as "caddy validate" would
// report it, with CEL's message.
func TestIntegrationPolicyBadExpression(t *testing.T) {
	site := storeSite{admin: "localhost:2992", port: 9197,
		db:    filepath.Join(t.TempDir(), "clients.db"),
		extra: "policy expression `client_nam == \"x\"`"}
	err := storeValidate(site.caddyfile())
	if err == nil || !strings.Contains(err.Error(), "undeclared reference") ||
		!strings.Contains(err.Error(), "client_nam") {
		t.Fatalf("validating a config with a bad expression: %v, want CEL's "+
			"undeclared reference error", err)
	}
}

// failingPolicy is a policy module of the tests that fails: a policy
// that cannot decide.
type failingPolicy struct{}

func init() { caddy.RegisterModule(failingPolicy{}) }

func (failingPolicy) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "dcr.policies.test_failing",
		New: func() caddy.Module { return new(failingPolicy) }}
}

func (failingPolicy) Check(context.Context, *PolicyInput) error {
	return errors.New("partner list unavailable")
}

func (*failingPolicy) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	return nil
}

// TestIntegrationPolicyFails checks that a policy that fails answers 500
// server_error without its cause, stores nothing, and logs the cause.
func TestIntegrationPolicyFails(t *testing.T) {
	s := startDCR(t, "policy test_failing")
	s.postRefused(t, itValidBody, itRefusal{500, "server_error", "policy of the server failed"})
	r := s.post(t, itValidBody)
	if strings.Contains(string(r.body), "partner list") {
		t.Errorf("the answer shows the policy's error: %s", r.body)
	}
	log, err := os.ReadFile(s.logFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "partner list unavailable") ||
		!strings.Contains(string(log), `"rule":"policy test_failing"`) {
		t.Errorf("the log does not name the failing policy and its cause:\n%s", log)
	}
}
