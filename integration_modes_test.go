package dcr

import (
	"os"
	"strings"
	"testing"
)

// TestIntegrationInitialAccessToken checks protected registration (RFC
// 7591 section 3): without one of the configured initial access tokens a
// registration answers 401 invalid_token with the Bearer challenge and
// stores nothing; with one, from the Caddyfile or a placeholder, it
// succeeds; no token ever reaches the log.
func TestIntegrationInitialAccessToken(t *testing.T) {
	t.Setenv("DCR_TEST_IAT", "iat-from-env-0123456789")
	s := startDCR(t, "initial_access_token iat-static-0123456789 {env.DCR_TEST_IAT}")

	refusals := []struct {
		name   string
		header []string
	}{
		{"no Authorization header", nil},
		{"wrong token", []string{"Authorization: Bearer iat-wrong"}},
		{"placeholder text", []string{"Authorization: Bearer {env.DCR_TEST_IAT}"}},
		{"Basic scheme", []string{"Authorization: Basic aWF0LXN0YXRpYw=="}},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			s.postRefused(t, itValidBody,
				itRefusal{401, "invalid_token", "initial access token"}, tc.header...)
			r := s.post(t, itValidBody, tc.header...)
			if got := r.header.Get("WWW-Authenticate"); got != `Bearer error="invalid_token"` {
				t.Errorf("WWW-Authenticate %q", got)
			}
		})
	}

	for _, tok := range []string{"iat-static-0123456789", "iat-from-env-0123456789"} {
		s.register(t, itValidBody, "Authorization: Bearer "+tok)
	}

	log, err := os.ReadFile(s.logFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"iat-static", "iat-from-env", "iat-wrong"} {
		if strings.Contains(string(log), secret) {
			t.Errorf("the log contains %q", secret)
		}
	}
}

// TestIntegrationRedirectHosts checks the allowlist of https redirect
// hosts: allowed hosts and subdomains register, others are refused with
// invalid_redirect_uri, and loopback and private-use redirect URIs are not
// affected.
func TestIntegrationRedirectHosts(t *testing.T) {
	s := startDCR(t, "redirect_hosts app.example.com *.partner.example")

	for _, uri := range []string{
		"https://app.example.com/cb",
		"https://a.partner.example/cb",
		"http://127.0.0.1:5000/cb",
		"com.example.app:/cb",
	} {
		t.Run("accepts "+uri, func(t *testing.T) {
			s.register(t, `{"redirect_uris":["`+uri+`"]}`)
		})
	}
	for _, uri := range []string{
		"https://evil.example/cb",
		"https://partner.example/cb",
		"https://app.example.com.evil.example/cb",
	} {
		t.Run("refuses "+uri, func(t *testing.T) {
			s.postRefused(t, `{"redirect_uris":["`+uri+`"]}`,
				itRefusal{400, "invalid_redirect_uri", uri})
		})
	}
}
