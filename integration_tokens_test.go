package dcr

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

// The initial access token suite (RFC 7591 section 3) drives the same
// in-process Caddy as the registration suite. Tokens are issued as an
// operator's tool would issue them: through a clientdb.Writer of the test
// process on the file Caddy uses, which the lock protocol serialises with
// Caddy's own writes.

// itIATRefusal is the answer to a registration without a valid initial
// access token.
var itIATRefusal = itRefusal{
	http.StatusUnauthorized, "invalid_token", "initial access token",
}

// itIATBearer returns the Authorization header that presents token.
func itIATBearer(token string) string {
	return "Authorization: Bearer " + token
}

// itIATMint issues a token on the server's store, created now.
func itIATMint(t *testing.T, s *itServer,
	spec clientdb.InitialTokenSpec) (string, *clientdb.InitialToken) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), storeWait)
	defer cancel()
	token, info, err := s.writer(t).CreateInitialToken(ctx, spec, time.Now())
	if err != nil {
		t.Fatalf("creating initial access token: %v", err)
	}
	return token, info
}

// itIATRevoke revokes token id on the server's store.
func itIATRevoke(t *testing.T, s *itServer, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), storeWait)
	defer cancel()
	if _, err := s.writer(t).RevokeInitialToken(ctx, id, time.Now()); err != nil {
		t.Fatalf("revoking initial access token %q: %v", id, err)
	}
}

// itIATStored returns the stored record of token id.
func itIATStored(t *testing.T, s *itServer, id string) *clientdb.InitialToken {
	t.Helper()
	var info *clientdb.InitialToken
	err := s.reader(t).View(func(tx clientdb.Tx) error {
		var err error
		info, err = tx.InitialToken(id)
		return err
	})
	if err != nil {
		t.Fatalf("reading initial access token %q: %v", id, err)
	}
	return info
}

// itIATUses fails unless token id has been used want times.
func itIATUses(t *testing.T, s *itServer, id string, want int) {
	t.Helper()
	if got := itIATStored(t, s, id).Uses; got != want {
		t.Errorf("token %s used %d times, want %d", id, got, want)
	}
}

// itIATClients returns the IDs of the stored clients registered with
// token id.
func itIATClients(t *testing.T, s *itServer, id string) []string {
	t.Helper()
	var ids []string
	err := s.reader(t).View(func(tx clientdb.Tx) error {
		return tx.ForEach(func(c *clientdb.Client) error {
			if c.InitialTokenID == id {
				ids = append(ids, c.ID)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatalf("reading clients: %v", err)
	}
	return ids
}

// itIATRefused posts body and checks the 401 of RFC 6750 section 3 and
// that nothing was stored.
func itIATRefused(t *testing.T, s *itServer, body string, headers ...string) {
	t.Helper()
	before := s.count(t)
	r := s.post(t, body, headers...)
	itAssertRefusal(t, r, itIATRefusal)
	if got := r.header.Get("WWW-Authenticate"); got != itUnauthorizedChallenge {
		t.Errorf("WWW-Authenticate %q, want %q", got, itUnauthorizedChallenge)
	}
	if after := s.count(t); after != before {
		t.Errorf("store holds %d clients after a refusal, want %d", after, before)
	}
}

// itIATRegister registers body with headers and returns the stored client.
func itIATRegister(t *testing.T, s *itServer, body string,
	headers ...string) *clientdb.Client {
	t.Helper()
	resp := s.register(t, body, headers...)
	return s.lookup(t, itString(t, resp, "client_id"))
}

// itIATAbsent fails if any of secrets occurs in raw, the bytes of the
// file called name.
func itIATAbsent(t *testing.T, name string, raw []byte, secrets ...string) {
	t.Helper()
	for _, secret := range secrets {
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("the %s contains the token %.12q...", name, secret)
		}
	}
}

func TestIntegrationTokenStatic(t *testing.T) {
	const (
		static = "iat-static-5b0e2c7a91d4"
		env    = "iat-env-0f8d3e61a2b7"
		file   = "iat-file-c4a9170e3d58"
	)
	t.Setenv("DCR_IT_TOKEN", env)
	// Secret files usually end in a newline, which must not become part
	// of the token.
	path := filepath.Join(t.TempDir(), "iat")
	if err := os.WriteFile(path, []byte(file+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startDCR(t, "initial_access_token "+static+
		" {env.DCR_IT_TOKEN} {file."+path+"}")

	refused := []struct {
		name   string
		header []string
	}{
		{"missing", nil},
		{"wrong token", []string{itIATBearer("iat-wrong-7d2f")}},
		{"prefix of a token", []string{itIATBearer(static[:len(static)-1])}},
		{"token with a suffix", []string{itIATBearer(static + "x")}},
		{"placeholder text", []string{itIATBearer("{env.DCR_IT_TOKEN}")}},
		{"Basic scheme", []string{"Authorization: Basic " + static}},
		{"token without scheme", []string{"Authorization: " + static}},
		{"scheme without token", []string{"Authorization: Bearer"}},
		{"issued-looking token", []string{itIATBearer(clientdb.InitialTokenPrefix +
			"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")}},
	}
	for _, tc := range refused {
		t.Run("refuses "+tc.name, func(t *testing.T) {
			itIATRefused(t, s, itValidBody, tc.header...)
		})
	}

	accepted := []struct {
		name, header string
	}{
		{"static", itIATBearer(static)},
		{"env placeholder", itIATBearer(env)},
		{"file placeholder", itIATBearer(file)},
		// RFC 6750 section 2.1 takes the scheme name without case.
		{"lower-case scheme", "Authorization: bearer " + static},
	}
	for _, tc := range accepted {
		t.Run("accepts "+tc.name, func(t *testing.T) {
			c := itIATRegister(t, s, itValidBody, tc.header)
			// A configured token is no issued token: nothing to record.
			if c.InitialTokenID != "" || c.Policy != nil {
				t.Errorf("client records token %q and policy %+v",
					c.InitialTokenID, c.Policy)
			}
		})
	}

	// Issued tokens open registration alongside the configured ones.
	issued, info := itIATMint(t, s, clientdb.InitialTokenSpec{})
	c := itIATRegister(t, s, itValidBody, itIATBearer(issued))
	if c.InitialTokenID != info.ID {
		t.Errorf("client records token %q, want %q", c.InitialTokenID, info.ID)
	}

	// The refusals were logged, so the log was written while the tokens
	// were presented, and yet names none of them.
	logged := s.logEntries(t, "registration refused", len(refused))
	if len(logged) < len(refused) {
		t.Fatalf("%d refusals logged, want %d", len(logged), len(refused))
	}
	s.logEntries(t, "client registered", len(accepted)+1)
	log, err := os.ReadFile(s.logFile)
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{static, env, file, "iat-wrong-7d2f", issued}
	itIATAbsent(t, "log", log, secrets...)
	itIATAbsent(t, "store file", s.fileBytes(t), secrets...)
}

func TestIntegrationTokenRequired(t *testing.T) {
	s := startDCR(t, "require_initial_access_token on")

	// The first requests find no store file at all: still a refusal,
	// not an error and not open registration.
	for _, tc := range []struct {
		name   string
		header []string
	}{
		{"no token", nil},
		{"unknown token", []string{itIATBearer(clientdb.InitialTokenPrefix + "nope")}},
		{"Basic scheme", []string{"Authorization: Basic dXNlcjpwYXNz"}},
	} {
		t.Run("refuses "+tc.name, func(t *testing.T) {
			itIATRefused(t, s, itValidBody, tc.header...)
		})
	}

	token, info := itIATMint(t, s, clientdb.InitialTokenSpec{Label: "partner-a"})
	if !strings.HasPrefix(token, clientdb.InitialTokenPrefix) {
		t.Errorf("token %.12q... lacks the prefix %q", token, clientdb.InitialTokenPrefix)
	}
	c := itIATRegister(t, s, itValidBody, itIATBearer(token))
	if c.InitialTokenID != info.ID {
		t.Errorf("client records token %q, want %q", c.InitialTokenID, info.ID)
	}
	if c.Policy != nil {
		t.Errorf("client has policy %+v from a token without one", c.Policy)
	}
	itIATUses(t, s, info.ID, 1)

	// Without a token, registration stays closed after one was issued.
	itIATRefused(t, s, itValidBody)
	itIATAbsent(t, "store file", s.fileBytes(t), token)
}

func TestIntegrationTokenMaxUses(t *testing.T) {
	s := startDCR(t, "require_initial_access_token on")
	token, info := itIATMint(t, s, clientdb.InitialTokenSpec{MaxUses: 2})

	itIATRegister(t, s, itValidBody, itIATBearer(token))
	itIATRegister(t, s, itValidBody, itIATBearer(token))
	itIATRefused(t, s, itValidBody, itIATBearer(token))

	got := itIATStored(t, s, info.ID)
	if got.Uses != 2 || got.State(time.Now()) != clientdb.TokenExhausted {
		t.Errorf("token used %d times, state %s; want 2, %s",
			got.Uses, got.State(time.Now()), clientdb.TokenExhausted)
	}
	if ids := itIATClients(t, s, info.ID); len(ids) != 2 {
		t.Errorf("%d clients registered with the token, want 2", len(ids))
	}
}

// itIATGate is a registration whose body waits until the test releases
// it.
type itIATGate struct {
	body string
	pw   *io.PipeWriter
	done chan struct{}
	resp *itResponse
	err  error
}

// itIATGated starts posting body with headers and returns once the
// handler has begun to read the body, which it does only after admitting
// the initial access token. The request carries "Expect: 100-continue",
// so the client holds the body back until the handler reads it; the
// first byte leaving the pipe is the sign. Call release to send the rest.
func itIATGated(t *testing.T, client *http.Client, body string,
	headers ...string) *itIATGate {
	t.Helper()
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodPost, itSite+"/register", pr)
	if err != nil {
		t.Fatal(err)
	}
	// A known length keeps the client from reading ahead to guess one.
	req.ContentLength = int64(len(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Expect", "100-continue")
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ":")
		req.Header.Set(name, strings.TrimSpace(value))
	}

	g := &itIATGate{body: body, pw: pw, done: make(chan struct{})}
	// A test that stops early must not leave the handler waiting.
	t.Cleanup(func() { pw.CloseWithError(errors.New("test ended")) })
	go func() {
		defer close(g.done)
		resp, err := client.Do(req)
		if err != nil {
			g.err = err
			return
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		g.resp, g.err = &itResponse{status: resp.StatusCode, header: resp.Header,
			body: raw}, err
	}()
	if _, err := pw.Write([]byte(body[:1])); err != nil {
		<-g.done
		t.Fatalf("request not admitted: %v; answer %+v", g.err, g.resp)
	}
	return g
}

// release sends the rest of the body and waits for the answer.
func (g *itIATGate) release() (*itResponse, error) {
	g.pw.Write([]byte(g.body[1:])) // fails only if the answer came early
	g.pw.Close()
	<-g.done
	if g.err != nil {
		return nil, g.err
	}
	r := g.resp
	if strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(r.body, &r.obj); err != nil {
			return nil, fmt.Errorf("decoding %q: %w", r.body, err)
		}
	}
	return r, nil
}

// itIATGateClient returns a client that waits for "100 Continue" before it
// sends a body, as itIATGated needs.
func itIATGateClient() *http.Client {
	c := itClient()
	c.Transport.(*http.Transport).ExpectContinueTimeout = time.Minute
	return c
}

// itIATReleaseRefused releases g and checks that it is refused as
// without a valid token and that nothing was stored.
func itIATReleaseRefused(t *testing.T, s *itServer, g *itIATGate) {
	t.Helper()
	before := s.count(t)
	r, err := g.release()
	if err != nil {
		t.Fatal(err)
	}
	itAssertRefusal(t, r, itIATRefusal)
	if got := r.header.Get("WWW-Authenticate"); got != itUnauthorizedChallenge {
		t.Errorf("WWW-Authenticate %q, want %q", got, itUnauthorizedChallenge)
	}
	if after := s.count(t); after != before {
		t.Errorf("store holds %d clients after a refusal, want %d", after, before)
	}
}

// TestIntegrationTokenConcurrentUses races more registrations than a
// token allows. Each is held after its token was checked and before its
// body arrives, until all of them are: every check sees an unused token,
// so only counting the use in the transaction that stores the client
// keeps the limit.
func TestIntegrationTokenConcurrentUses(t *testing.T) {
	const maxUses, attempts = 5, 20
	s := startDCR(t, "require_initial_access_token on")
	token, info := itIATMint(t, s, clientdb.InitialTokenSpec{MaxUses: maxUses})

	client := itIATGateClient()
	gated := make([]*itIATGate, attempts)
	for i := range gated {
		body := itReg(fmt.Sprintf(`"client_name":"racer %d"`, i))
		gated[i] = itIATGated(t, client, body, itIATBearer(token))
	}

	results := make([]*itResponse, attempts)
	errs := make([]error, attempts)
	var wg sync.WaitGroup
	for i, g := range gated {
		wg.Go(func() { results[i], errs[i] = g.release() })
	}
	wg.Wait()

	created := map[string]bool{}
	refused := 0
	for i, r := range results {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		switch r.status {
		case http.StatusCreated:
			created[itString(t, r.obj, "client_id")] = true
		case http.StatusUnauthorized:
			itAssertRefusal(t, r, itIATRefusal)
			refused++
		default:
			t.Errorf("status %d; body %s", r.status, r.body)
		}
	}
	if len(created) != maxUses || refused != attempts-maxUses {
		t.Errorf("%d created and %d refused, want %d and %d",
			len(created), refused, maxUses, attempts-maxUses)
	}

	stored := itIATClients(t, s, info.ID)
	if len(stored) != maxUses {
		t.Errorf("store holds %d clients of the token, want %d", len(stored), maxUses)
	}
	for _, id := range stored {
		if !created[id] {
			t.Errorf("stored client %s was not answered with 201", id)
		}
	}
	if n := s.count(t); n != maxUses {
		t.Errorf("store holds %d clients, want %d", n, maxUses)
	}
	itIATUses(t, s, info.ID, maxUses)
}

// TestIntegrationTokenExpiryAndRevocation checks that a token stops
// working when it expires or is revoked, including between the check
// that admitted a registration and the transaction that stores it.
func TestIntegrationTokenExpiryAndRevocation(t *testing.T) {
	clock := itUseClock(t)
	s := startDCR(t, "require_initial_access_token on")
	client := itIATGateClient()
	expiring, expInfo := itIATMint(t, s, clientdb.InitialTokenSpec{
		ExpiresAt: time.Now().Add(time.Hour),
	})
	lasting, lastInfo := itIATMint(t, s, clientdb.InitialTokenSpec{})

	itIATRegister(t, s, itValidBody, itIATBearer(expiring))
	g := itIATGated(t, client, itValidBody, itIATBearer(expiring))
	clock.advance(time.Hour)
	itIATReleaseRefused(t, s, g)
	itIATRefused(t, s, itValidBody, itIATBearer(expiring))

	// Only the expiring token is affected by the clock.
	first := itIATRegister(t, s, itValidBody, itIATBearer(lasting))
	g = itIATGated(t, client, itValidBody, itIATBearer(lasting))
	itIATRevoke(t, s, lastInfo.ID)
	itIATReleaseRefused(t, s, g)
	itIATRefused(t, s, itValidBody, itIATBearer(lasting))

	// Revocation stops new registrations; those made stay.
	if c := s.lookup(t, first.ID); c.InitialTokenID != lastInfo.ID {
		t.Errorf("client records token %q, want %q", c.InitialTokenID, lastInfo.ID)
	}
	itIATUses(t, s, expInfo.ID, 1)
	itIATUses(t, s, lastInfo.ID, 1)
}

// TestIntegrationTokenRefusalKeepsUse checks that a registration refused
// after its token was accepted gives the use back: a client that fixes its
// request must not find its single-use token spent.
func TestIntegrationTokenRefusalKeepsUse(t *testing.T) {
	s := startDCR(t, "require_initial_access_token on")
	token, info := itIATMint(t, s, clientdb.InitialTokenSpec{MaxUses: 1})
	auth := itIATBearer(token)

	tests := []struct {
		name    string
		body    string
		want    itRefusal
		headers []string
	}{
		{"bad redirect URI", `{"redirect_uris":["https://app.example.com/cb#frag"]}`,
			itRefusal{400, "invalid_redirect_uri", "fragment"}, nil},
		{"grant type not allowed", itReg(`"grant_types":["password"]`),
			itRefusal{400, "invalid_client_metadata", `"password"`}, nil},
		{"malformed JSON", `{"redirect_uris":`,
			itRefusal{400, "invalid_client_metadata", "JSON"}, nil},
		{"wrong content type", itValidBody,
			itRefusal{415, "invalid_request", "Content-Type"},
			[]string{"Content-Type: text/plain"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s.postRefused(t, tc.body, tc.want, append([]string{auth}, tc.headers...)...)
			itIATUses(t, s, info.ID, 0)
		})
	}

	itIATRegister(t, s, itValidBody, auth)
	itIATUses(t, s, info.ID, 1)
	itIATRefused(t, s, itValidBody, auth)
}

// itNarrowOptions allow more than the narrowed token of
// TestIntegrationTokenNarrowedPolicy does, on an open server.
var itNarrowOptions = []string{
	"grant_types authorization_code refresh_token client_credentials",
	"scopes a b c",
	"default_scope a b",
}

// itNarrowPolicy is the policy of the narrowed token.
var itNarrowPolicy = &clientdb.TokenPolicy{
	GrantTypes:    []string{"authorization_code"},
	Scopes:        []string{"a"},
	RedirectHosts: []string{"app.example.com"},
}

func TestIntegrationTokenNarrowedPolicy(t *testing.T) {
	s := startDCR(t, itNarrowOptions...)
	token, info := itIATMint(t, s, clientdb.InitialTokenSpec{Policy: itNarrowPolicy})
	auth := itIATBearer(token)
	uses := 0

	// Each body is sent without a token, which the server's policy
	// allows, and with the narrowed token. scope is "" when refused.
	tests := []struct {
		name      string
		body      string
		refusal   *itRefusal
		scope     string // registered with the token
		openScope string // registered without
	}{
		{name: "client_credentials",
			body: `{"grant_types":["client_credentials"]}`,
			refusal: &itRefusal{400, "invalid_client_metadata",
				`"client_credentials"`},
			openScope: "a b"},
		{name: "refresh_token",
			body: itReg(`"grant_types":["authorization_code","refresh_token"]`),
			refusal: &itRefusal{400, "invalid_client_metadata",
				`"refresh_token"`},
			openScope: "a b"},
		{name: "scope a b", body: itReg(`"scope":"a b"`),
			refusal:   &itRefusal{400, "invalid_client_metadata", `"b"`},
			openScope: "a b"},
		{name: "scope c", body: itReg(`"scope":"c"`),
			refusal:   &itRefusal{400, "invalid_client_metadata", `"c"`},
			openScope: "c"},
		{name: "other host",
			body:      `{"redirect_uris":["https://other.example.com/cb"]}`,
			refusal:   &itRefusal{400, "invalid_redirect_uri", "other.example.com"},
			openScope: "a b"},
		{name: "one allowed host of two",
			body: `{"redirect_uris":["https://app.example.com/cb",` +
				`"https://app.example.com.other.example/cb"]}`,
			refusal:   &itRefusal{400, "invalid_redirect_uri", "other.example"},
			openScope: "a b"},
		{name: "scope a", body: itReg(`"scope":"a"`),
			scope: "a", openScope: "a"},
		{name: "default scope filtered", body: itValidBody,
			scope: "a", openScope: "a b"},
		{name: "host in other case",
			body:  `{"redirect_uris":["https://APP.Example.com/cb"]}`,
			scope: "a", openScope: "a b"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			open := itIATRegister(t, s, tc.body)
			if open.Metadata.Scope != tc.openScope || open.InitialTokenID != "" ||
				open.Policy != nil {
				t.Errorf("without token: scope %q, token %q, policy %+v; "+
					"want scope %q and no token", open.Metadata.Scope,
					open.InitialTokenID, open.Policy, tc.openScope)
			}

			if tc.refusal != nil {
				s.postRefused(t, tc.body, *tc.refusal, auth)
				itIATUses(t, s, info.ID, uses)
				return
			}
			c := itIATRegister(t, s, tc.body, auth)
			uses++
			if c.Metadata.Scope != tc.scope {
				t.Errorf("with token: scope %q, want %q", c.Metadata.Scope, tc.scope)
			}
			if c.InitialTokenID != info.ID ||
				!reflect.DeepEqual(c.Policy, itNarrowPolicy) {
				t.Errorf("with token: token %q, policy %+v; want %q, %+v",
					c.InitialTokenID, c.Policy, info.ID, itNarrowPolicy)
			}
			itIATUses(t, s, info.ID, uses)
		})
	}
}

// TestIntegrationTokenNarrowedUpdate checks that a client registered
// with a narrowed token stays held to the narrowed policy when it updates
// its registration (RFC 7592 section 2.2), while a client registered
// without one may make the same changes.
func TestIntegrationTokenNarrowedUpdate(t *testing.T) {
	s := startDCR(t, itNarrowOptions...)
	token, _ := itIATMint(t, s, clientdb.InitialTokenSpec{Policy: itNarrowPolicy})

	const body = `{"redirect_uris":["https://app.example.com/cb"],"scope":"a"}`
	reg := func(headers ...string) *itManaged {
		resp := s.register(t, body, headers...)
		return &itManaged{
			id:    itString(t, resp, "client_id"),
			token: itString(t, resp, "registration_access_token"),
		}
	}
	narrowed, open := reg(itIATBearer(token)), reg()

	tests := []struct {
		name    string
		body    string
		refusal *itRefusal // for the narrowed client
	}{
		{"scope a b", `{"redirect_uris":["https://app.example.com/cb"],` +
			`"scope":"a b"}`,
			&itRefusal{400, "invalid_client_metadata", `"b"`}},
		{"other host", `{"redirect_uris":["https://app.example.com/cb",` +
			`"https://other.example.com/cb"],"scope":"a"}`,
			&itRefusal{400, "invalid_redirect_uri", "other.example.com"}},
		{"client_credentials", `{"redirect_uris":["https://app.example.com/cb"],` +
			`"grant_types":["authorization_code","client_credentials"],` +
			`"scope":"a"}`,
			&itRefusal{400, "invalid_client_metadata", `"client_credentials"`}},
		{"default scope filtered", `{"redirect_uris":["https://app.example.com/cb"]}`,
			nil},
		{"within the policy", `{"redirect_uris":["https://app.example.com/cb"],` +
			`"scope":"a","client_name":"Renamed"}`, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The open client's token rotates with every update.
			r := s.manage(t, http.MethodPut, open.id, open.token, tc.body)
			itAssertOK(t, r, open.id)
			open.token = itString(t, r.obj, "registration_access_token")

			before := s.lookup(t, narrowed.id)
			r = s.manage(t, http.MethodPut, narrowed.id, narrowed.token, tc.body)
			if tc.refusal != nil {
				itAssertRefusal(t, r, *tc.refusal)
				s.unchanged(t, narrowed.id, before)
				return
			}
			itAssertOK(t, r, narrowed.id)
			narrowed.token = itString(t, r.obj, "registration_access_token")
			after := s.lookup(t, narrowed.id)
			if after.Metadata.Scope != "a" {
				t.Errorf("scope %q after update, want %q", after.Metadata.Scope, "a")
			}
			// The narrowing outlives the update that could have lost it.
			if !reflect.DeepEqual(after.Policy, itNarrowPolicy) ||
				after.InitialTokenID != before.InitialTokenID {
				t.Errorf("after update: token %q, policy %+v; want %q, %+v",
					after.InitialTokenID, after.Policy,
					before.InitialTokenID, itNarrowPolicy)
			}
		})
	}
}

func TestIntegrationTokenOpenServer(t *testing.T) {
	clock := itUseClock(t)
	s := startDCR(t)

	valid, validInfo := itIATMint(t, s, clientdb.InitialTokenSpec{
		Policy: &clientdb.TokenPolicy{RedirectHosts: []string{"app.example.com"}},
	})
	revoked, revInfo := itIATMint(t, s, clientdb.InitialTokenSpec{})
	itIATRevoke(t, s, revInfo.ID)
	used, usedInfo := itIATMint(t, s, clientdb.InitialTokenSpec{MaxUses: 1})
	itIATRegister(t, s, itValidBody, itIATBearer(used))
	expiring, _ := itIATMint(t, s, clientdb.InitialTokenSpec{
		ExpiresAt: time.Now().Add(time.Hour),
	})
	clock.advance(time.Hour)

	// A client that presents a credential expects it to count; falling
	// back to open registration would hide that it does not.
	for _, tc := range []struct {
		name, header string
	}{
		{"unknown", itIATBearer(clientdb.InitialTokenPrefix + "unknown")},
		{"revoked", itIATBearer(revoked)},
		{"used up", itIATBearer(used)},
		{"expired", itIATBearer(expiring)},
		{"not a bearer token", "Authorization: Basic dXNlcjpwYXNz"},
		{"scheme without token", "Authorization: Bearer"},
	} {
		t.Run("refuses "+tc.name, func(t *testing.T) {
			itIATRefused(t, s, itValidBody, tc.header)
		})
	}
	itIATUses(t, s, usedInfo.ID, 1)

	t.Run("open without token", func(t *testing.T) {
		c := itIATRegister(t, s, `{"redirect_uris":["https://other.example.com/cb"]}`)
		if c.InitialTokenID != "" {
			t.Errorf("client records token %q", c.InitialTokenID)
		}
	})
	t.Run("valid token narrows", func(t *testing.T) {
		s.postRefused(t, `{"redirect_uris":["https://other.example.com/cb"]}`,
			itRefusal{400, "invalid_redirect_uri", "other.example.com"},
			itIATBearer(valid))
		c := itIATRegister(t, s, itValidBody, itIATBearer(valid))
		if c.InitialTokenID != validInfo.ID {
			t.Errorf("client records token %q, want %q", c.InitialTokenID, validInfo.ID)
		}
		itIATUses(t, s, validInfo.ID, 1)
	})
}

// TestIntegrationTokenListing checks what an operator's listing shows
// after registrations through the server, and that the store keeps only
// hashes of the tokens.
func TestIntegrationTokenListing(t *testing.T) {
	s := startDCR(t, "require_initial_access_token on")
	policy := &clientdb.TokenPolicy{Scopes: []string{"openid"}}

	type minted struct {
		token string
		info  *clientdb.InitialToken
	}
	mint := func(spec clientdb.InitialTokenSpec) minted {
		token, info := itIATMint(t, s, spec)
		return minted{token, info}
	}
	active := mint(clientdb.InitialTokenSpec{
		Label: "listing-active", MaxUses: 3, Policy: policy,
	})
	exhausted := mint(clientdb.InitialTokenSpec{Label: "listing-exhausted", MaxUses: 1})
	revoked := mint(clientdb.InitialTokenSpec{Label: "listing-revoked"})
	expiring := mint(clientdb.InitialTokenSpec{
		Label: "listing-expiring", ExpiresAt: time.Now().Add(time.Hour),
	})

	itIATRegister(t, s, itValidBody, itIATBearer(active.token))
	itIATRegister(t, s, itValidBody, itIATBearer(exhausted.token))
	itIATRegister(t, s, itValidBody, itIATBearer(revoked.token))
	itIATRevoke(t, s, revoked.info.ID)

	rd := s.reader(t)
	list, err := rd.InitialTokens()
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]*clientdb.InitialToken{}
	for _, info := range list {
		byID[info.ID] = info
	}
	if len(list) != 4 || len(byID) != 4 {
		t.Fatalf("listing holds %d tokens with %d IDs, want 4", len(list), len(byID))
	}

	now := time.Now()
	tests := []struct {
		name  string
		m     minted
		state string
		uses  int
	}{
		{"active", active, clientdb.TokenActive, 1},
		{"exhausted", exhausted, clientdb.TokenExhausted, 1},
		{"revoked", revoked, clientdb.TokenRevoked, 1},
		{"expiring", expiring, clientdb.TokenActive, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := byID[tc.m.info.ID]
			if got == nil {
				t.Fatalf("token %s is not listed", tc.m.info.ID)
			}
			if st := got.State(now); st != tc.state || got.Uses != tc.uses {
				t.Errorf("state %s with %d uses, want %s with %d",
					st, got.Uses, tc.state, tc.uses)
			}
			if got.Label != tc.m.info.Label || got.MaxUses != tc.m.info.MaxUses ||
				got.ExpiresAt != tc.m.info.ExpiresAt ||
				!reflect.DeepEqual(got.Policy, tc.m.info.Policy) {
				t.Errorf("listed %+v, created %+v", got, tc.m.info)
			}
			if got.Hash != clientdb.HashSecret(tc.m.token) {
				t.Errorf("hash %q is not the token's", got.Hash)
			}
		})
	}
	later := now.Add(time.Hour)
	if st := byID[expiring.info.ID].State(later); st != clientdb.TokenExpired {
		t.Errorf("state after the expiry %s, want %s", st, clientdb.TokenExpired)
	}

	// The file holds the labels and hashes, which shows the search below
	// reads the records, but none of the tokens.
	raw := s.fileBytes(t)
	for _, m := range []minted{active, exhausted, revoked, expiring} {
		if !bytes.Contains(raw, []byte(m.info.Label)) ||
			!bytes.Contains(raw, []byte(m.info.Hash)) {
			t.Errorf("store file lacks the record of %s", m.info.Label)
		}
		itIATAbsent(t, "store file", raw, m.token)
		itIATAbsent(t, "store file", raw,
			strings.TrimPrefix(m.token, clientdb.InitialTokenPrefix))
	}
}

// TestIntegrationTokenHostsPlainHTTP checks a token's redirect hosts
// against http redirect URIs on a server that does not require https: a
// host the token does not allow must not get in by dropping the s.
func TestIntegrationTokenHostsPlainHTTP(t *testing.T) {
	s := startDCR(t, "require_https off")
	token, _ := itIATMint(t, s, clientdb.InitialTokenSpec{
		Policy: &clientdb.TokenPolicy{RedirectHosts: []string{"app.example.com"}},
	})
	auth := itIATBearer(token)

	// Loopback redirect URIs are not bound to a host (RFC 8252).
	itIATRegister(t, s, `{"redirect_uris":["http://127.0.0.1:8400/cb"]}`, auth)
	itIATRegister(t, s, `{"redirect_uris":["http://app.example.com/cb"]}`, auth)

	body := `{"redirect_uris":["http://other.example.com/cb"]}`
	before := s.count(t)
	r := s.post(t, body, auth)
	itAssertRefusal(t, r, itRefusal{400, "invalid_redirect_uri", "other.example.com"})
	if after := s.count(t); after != before {
		t.Errorf("store holds %d clients after a refusal, want %d", after, before)
	}
}
