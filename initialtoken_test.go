package dcr

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestInitialTokens(t *testing.T) {
	t.Setenv("DCR_TEST_IAT", "from-env")
	toks, err := newInitialTokens([]string{"static-one", "{env.DCR_TEST_IAT}"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, header string
		want         bool
	}{
		{"static token", "Bearer static-one", true},
		{"token from a placeholder", "Bearer from-env", true},
		{"placeholder text itself", "Bearer {env.DCR_TEST_IAT}", false},
		{"wrong token", "Bearer static-two", false},
		{"prefix of a token", "Bearer static", false},
		{"missing", "", false},
		{"other scheme", "Basic c3RhdGljLW9uZQ==", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/register", nil)
			if tc.header != "" {
				r.Header.Set("Authorization", tc.header)
			}
			if got := allows(toks, r); got != tc.want {
				t.Errorf("allows = %v, want %v", got, tc.want)
			}
		})
	}

	// A secret file, as mounted by container runtimes, with its newline.
	file := filepath.Join(t.TempDir(), "iat")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fromFile, err := newInitialTokens([]string{"{file." + file + "}"})
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPost, "/register", nil)
	r.Header.Set("Authorization", "Bearer from-file")
	if !allows(fromFile, r) {
		t.Error("the token from a {file.*} placeholder was refused")
	}

	// No tokens: registration is open.
	if !allows(nil, httptest.NewRequest(http.MethodPost, "/", nil)) {
		t.Error("no tokens configured, yet a request was refused")
	}
	// A token that expands to nothing must not open registration.
	if _, err := newInitialTokens([]string{"{env.DCR_TEST_UNSET_IAT}"}); err == nil {
		t.Error("a token empty after placeholders was accepted")
	}
}

func TestHostAllowed(t *testing.T) {
	patterns := []string{"app.example.com", "*.partner.example"}
	tests := []struct {
		host string
		want bool
	}{
		{"app.example.com", true},
		{"APP.example.com", true},
		{"app.example.com.", true},
		{"evil.app.example.com", false},
		{"example.com", false},
		{"a.partner.example", true},
		{"a.b.partner.example", true},
		{"partner.example", false},
		{"evilpartner.example", false},
	}
	for _, tc := range tests {
		if got := hostAllowed(tc.host, patterns); got != tc.want {
			t.Errorf("hostAllowed(%q) = %v, want %v", tc.host, got, tc.want)
		}
	}
}

func TestValidHostPattern(t *testing.T) {
	for p, want := range map[string]bool{
		"app.example.com": true, "*.example.com": true, "localhost": true,
		"": false, "*.": false, "*": false, "a..b": false, ".a": false,
		"a.": false, "*.*.a": false, "a b": false, "https://a": false,
	} {
		if got := validHostPattern(p); got != want {
			t.Errorf("validHostPattern(%q) = %v, want %v", p, got, want)
		}
	}
}

func TestCaddyfileInitialTokenAndRedirectHosts(t *testing.T) {
	d := caddyfile.NewTestDispenser(`dcr {
		initial_access_token a {env.IAT}
		redirect_hosts app.example.com *.partner.example
	}`)
	var h Handler
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(h.InitialAccessTokens, []string{"a", "{env.IAT}"}) {
		t.Errorf("InitialAccessTokens %q", h.InitialAccessTokens)
	}
	if !slices.Equal(h.RedirectHosts, []string{"app.example.com", "*.partner.example"}) {
		t.Errorf("RedirectHosts %q", h.RedirectHosts)
	}
	for _, src := range []string{
		"dcr {\n initial_access_token\n}",
		"dcr {\n redirect_hosts\n}",
		"dcr {\n redirect_hosts a\n redirect_hosts b\n}",
	} {
		var h Handler
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(src)); err == nil {
			t.Errorf("%q parsed without error", src)
		}
	}
}

// allows reports whether the request carries one of the tokens, or no
// tokens are configured.
func allows(toks initialTokens, r *http.Request) bool {
	if len(toks) == 0 {
		return true
	}
	tok, ok := bearerToken(r)
	return ok && toks.matches(tok)
}
