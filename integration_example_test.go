package dcr_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	_ "github.com/caddy-dcr/caddy-dcr/examples/ticketpolicy"
)

// The example policy module lives in its own package, which imports this
// one, so its test is in the external test package: it is built into the
// same test binary as a user's xcaddy build would build it into Caddy,
// and runs in the same in-process Caddy as the integration suite.

// exampleCaddyfile serves the dcr handler with the example policy.
const exampleCaddyfile = `{
	admin localhost:2999
	http_port 9080
	https_port 9443
	auto_https off
}
http://localhost:9080 {
	dcr {
		store %q
		rate_limit off
		policy ticket {
			prefix  CHG
			contact security@example.com
		}
	}
	respond "passed through" 200
}
`

// TestIntegrationExamplePolicy registers through the example policy: a
// client without a ticket is refused, one with a ticket in any case is
// stored with the ticket in canonical form and the operators' contact
// added, on registration and on update.
func TestIntegrationExamplePolicy(t *testing.T) {
	store := filepath.Join(t.TempDir(), "clients.db")
	tester := caddytest.NewTester(t)
	tester.InitServer(fmt.Sprintf(exampleCaddyfile, store), "caddyfile")
	t.Cleanup(func() {
		tester.InitServer("{\n\tadmin localhost:2999\n}\n", "caddyfile")
	})

	status, obj := examplePost(t, http.MethodPost, "/register", "",
		`{"redirect_uris":["https://app.example.com/cb"]}`)
	if status != http.StatusBadRequest || obj["error"] != "invalid_client_metadata" ||
		!strings.Contains(obj["error_description"].(string), "CHG-1234") {
		t.Fatalf("without a ticket: status %d, %v", status, obj)
	}

	status, obj = examplePost(t, http.MethodPost, "/register", "",
		`{"redirect_uris":["https://app.example.com/cb"],"software_id":"chg-42",`+
			`"contacts":["dev@app.example.com"]}`)
	if status != http.StatusCreated {
		t.Fatalf("with a ticket: status %d, %v", status, obj)
	}
	if obj["software_id"] != "CHG-42" {
		t.Errorf("software_id %v, want CHG-42", obj["software_id"])
	}
	contacts := exampleStrings(obj["contacts"])
	if !slices.Equal(contacts, []string{"dev@app.example.com", "security@example.com"}) {
		t.Errorf("contacts %q, want the client's and the operators'", contacts)
	}

	id, token := obj["client_id"].(string), obj["registration_access_token"].(string)
	secret := obj["client_secret"].(string)
	status, obj = examplePost(t, http.MethodPut, "/register/"+id, token,
		`{"redirect_uris":["https://app.example.com/cb"],"software_id":"TICKET-1",`+
			`"client_id":"`+id+`","client_secret":"`+secret+`"}`)
	if status != http.StatusBadRequest || obj["error"] != "invalid_client_metadata" {
		t.Errorf("update without a ticket: status %d, %v", status, obj)
	}
}

// examplePost sends a JSON request to the example's site.
func examplePost(t *testing.T, method, path, token, body string) (int, map[string]any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://localhost:9080"+path,
		strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var obj map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&obj); err != nil {
		t.Fatalf("%s %s: decoding the answer: %v", method, path, err)
	}
	return resp.StatusCode, obj
}

// exampleStrings returns a JSON array of strings as a slice.
func exampleStrings(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, e := range list {
		s, _ := e.(string)
		out = append(out, s)
	}
	return out
}
