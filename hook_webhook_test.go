package dcr

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

const testWebhookSecret = "0123456789abcdef-webhook-secret"

// webhookNow is the clock of provisioned test webhooks.
var webhookNow = time.Unix(1_760_000_000, 0)

// webhookRequest is one request a test endpoint heard.
type webhookRequest struct {
	header http.Header
	body   []byte
	method string
}

// webhookEndpoint is an httptest server that records requests and answers
// with status.
type webhookEndpoint struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []webhookRequest
}

func newWebhookEndpoint(t *testing.T, h http.HandlerFunc) *webhookEndpoint {
	t.Helper()
	ep := &webhookEndpoint{}
	ep.Server = httptest.NewServer(http.HandlerFunc(
		func(rw http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			ep.mu.Lock()
			ep.reqs = append(ep.reqs, webhookRequest{r.Header.Clone(), body,
				r.Method})
			ep.mu.Unlock()
			if h != nil {
				h(rw, r)
			}
		}))
	t.Cleanup(ep.Close)
	return ep
}

func (ep *webhookEndpoint) requests() []webhookRequest {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	return append([]webhookRequest(nil), ep.reqs...)
}

// provisionWebhook provisions and validates w with a fixed clock, returning
// the first error.
func provisionWebhook(t *testing.T, w *Webhook) error {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{
		Context: context.Background(),
	})
	t.Cleanup(cancel)
	t.Cleanup(func() { _ = w.Cleanup() })
	w.now = func() time.Time { return webhookNow }
	if err := w.Provision(ctx); err != nil {
		return err
	}
	return w.Validate()
}

func mustWebhook(t *testing.T, w *Webhook) *Webhook {
	t.Helper()
	if err := provisionWebhook(t, w); err != nil {
		t.Fatalf("provisioning webhook: %v", err)
	}
	return w
}

func testEvent() *HookEvent {
	return &HookEvent{
		ID:           "evt-1",
		Type:         EventCreated,
		Time:         1_759_999_990,
		ClientID:     "client-1",
		Actor:        "client",
		Client:       json.RawMessage(`{"client_id":"client-1"}`),
		ClientSecret: "plaintext-client-secret",
	}
}

func TestWebhookDeliverSigned(t *testing.T) {
	ep := newWebhookEndpoint(t, nil)
	w := mustWebhook(t, &Webhook{URL: ep.URL + "/hook",
		Secret: testWebhookSecret})

	if err := w.Deliver(context.Background(), testEvent()); err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	reqs := ep.requests()
	if len(reqs) != 1 {
		t.Fatalf("endpoint got %d requests, want 1", len(reqs))
	}
	got := reqs[0]

	if got.method != http.MethodPost {
		t.Errorf("method %s, want POST", got.method)
	}
	wantHeaders := map[string]string{
		"Content-Type":   "application/json",
		"User-Agent":     "caddy-dcr",
		"X-DCR-Event":    EventCreated,
		"X-DCR-Event-ID": "evt-1",
	}
	for k, v := range wantHeaders {
		if g := got.header.Get(k); g != v {
			t.Errorf("header %s = %q, want %q", k, g, v)
		}
	}
	sig := got.header.Get("X-DCR-Signature")
	if !strings.HasPrefix(sig, "t=1760000000,v1=") {
		t.Errorf("signature header %q: want t of the attempt", sig)
	}

	var ev map[string]any
	if err := json.Unmarshal(got.body, &ev); err != nil {
		t.Fatalf("body is not JSON: %v", err)
	}
	for _, k := range []string{"id", "type", "time", "client_id",
		"actor", "client"} {
		if _, ok := ev[k]; !ok {
			t.Errorf("body lacks %s: %s", k, got.body)
		}
	}

	secret := []byte(testWebhookSecret)
	tampered := bytes.Replace(got.body, []byte("client-1"),
		[]byte("client-2"), 1)
	cases := []struct {
		name   string
		secret []byte
		header string
		body   []byte
		now    time.Time
		want   error
	}{
		{"valid", secret, sig, got.body, webhookNow, nil},
		{"valid within tolerance", secret, sig, got.body,
			webhookNow.Add(4 * time.Minute), nil},
		{"tampered body", secret, sig, tampered, webhookNow,
			ErrWebhookSignatureMismatch},
		{"old timestamp", secret, sig, got.body,
			webhookNow.Add(6 * time.Minute), ErrWebhookSignatureExpired},
		{"future timestamp", secret, sig, got.body,
			webhookNow.Add(-6 * time.Minute), ErrWebhookSignatureExpired},
		{"wrong secret", []byte("another-secret-of-length"), sig,
			got.body, webhookNow, ErrWebhookSignatureMismatch},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyWebhookSignature(tc.secret, tc.header, tc.body,
				tc.now, 5*time.Minute)
			if !errors.Is(err, tc.want) {
				t.Errorf("VerifyWebhookSignature = %v, want %v",
					err, tc.want)
			}
		})
	}
}

func TestVerifyWebhookSignatureHeader(t *testing.T) {
	secret := []byte(testWebhookSecret)
	other := []byte("the-previous-secret-key")
	body := []byte(`{"id":"evt-1"}`)
	good := signWebhook(secret, webhookNow, body)
	v1 := strings.TrimPrefix(good, "t=1760000000,")
	oldV1 := strings.TrimPrefix(signWebhook(other, webhookNow, body),
		"t=1760000000,")

	cases := []struct {
		name   string
		header string
		want   error
	}{
		{"signed", good, nil},
		{"spaces", "t=1760000000, " + v1, nil},
		{"order", v1 + ",t=1760000000", nil},
		{"rotation new first", "t=1760000000," + v1 + "," + oldV1, nil},
		{"rotation old first", "t=1760000000," + oldV1 + "," + v1, nil},
		{"unknown key ignored", "t=1760000000,v0=abc," + v1, nil},
		{"only old secret", "t=1760000000," + oldV1,
			ErrWebhookSignatureMismatch},
		{"bad hex", "t=1760000000,v1=zz", ErrWebhookSignatureMismatch},
		{"uppercase hex", "t=1760000000,v1=" +
			strings.ToUpper(strings.TrimPrefix(v1, "v1=")), nil},
		{"uppercase key", "t=1760000000,V1=" +
			strings.TrimPrefix(v1, "v1="), ErrWebhookSignatureFormat},
		{"timestamp changed", strings.Replace(good, "t=1760000000",
			"t=1760000001", 1), ErrWebhookSignatureMismatch},
		{"empty", "", ErrWebhookSignatureFormat},
		{"no timestamp", v1, ErrWebhookSignatureFormat},
		{"no v1", "t=1760000000", ErrWebhookSignatureFormat},
		{"two timestamps", "t=1760000000,t=1760000000," + v1,
			ErrWebhookSignatureFormat},
		{"bad timestamp", "t=soon," + v1, ErrWebhookSignatureFormat},
		{"signed timestamp", "t=+1760000000," + v1,
			ErrWebhookSignatureFormat},
		{"negative timestamp", "t=-1," + v1, ErrWebhookSignatureFormat},
		{"huge timestamp", "t=9223372036854775807," + v1,
			ErrWebhookSignatureExpired},
		{"no equals", "t=1760000000,v1", ErrWebhookSignatureFormat},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyWebhookSignature(secret, tc.header, body,
				webhookNow, 5*time.Minute)
			if !errors.Is(err, tc.want) {
				t.Errorf("VerifyWebhookSignature(%q) = %v, want %v",
					tc.header, err, tc.want)
			}
		})
	}

	t.Run("empty secret", func(t *testing.T) {
		err := VerifyWebhookSignature(nil, signWebhook(nil, webhookNow,
			body), body, webhookNow, time.Minute)
		if err == nil {
			t.Error("VerifyWebhookSignature accepted an empty secret")
		}
	})
}

func TestWebhookClientSecret(t *testing.T) {
	cases := []struct {
		name    string
		include bool
		want    bool
	}{
		{"omitted by default", false, false},
		{"included", true, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ep := newWebhookEndpoint(t, nil)
			w := mustWebhook(t, &Webhook{URL: ep.URL,
				Secret: testWebhookSecret, IncludeSecret: tc.include})

			e := testEvent()
			if err := w.Deliver(context.Background(), e); err != nil {
				t.Fatalf("Deliver: %v", err)
			}
			if e.ClientSecret != "plaintext-client-secret" {
				t.Error("Deliver changed the caller's event")
			}

			body := ep.requests()[0].body
			var ev map[string]any
			if err := json.Unmarshal(body, &ev); err != nil {
				t.Fatalf("body is not JSON: %v", err)
			}
			_, has := ev["client_secret"]
			if has != tc.want {
				t.Errorf("body has client_secret %v, want %v: %s",
					has, tc.want, body)
			}
			leaked := bytes.Contains(body,
				[]byte("plaintext-client-secret"))
			if leaked != tc.want {
				t.Errorf("body holds the plaintext %v, want %v",
					leaked, tc.want)
			}
		})
	}
}

func TestWebhookDeliverErrors(t *testing.T) {
	var targetHit bool
	var mu sync.Mutex
	target := newWebhookEndpoint(t, func(http.ResponseWriter,
		*http.Request) {
		mu.Lock()
		targetHit = true
		mu.Unlock()
	})

	cases := []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{
		{"server error", func(rw http.ResponseWriter, _ *http.Request) {
			http.Error(rw, "boom", http.StatusInternalServerError)
		}, "500"},
		{"not found", http.NotFound, "404"},
		{"redirect", func(rw http.ResponseWriter, r *http.Request) {
			http.Redirect(rw, r, target.URL, http.StatusFound)
		}, "302"},
		{"permanent redirect", func(rw http.ResponseWriter,
			r *http.Request) {
			http.Redirect(rw, r, target.URL,
				http.StatusPermanentRedirect)
		}, "308"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ep := newWebhookEndpoint(t, tc.handler)
			w := mustWebhook(t, &Webhook{
				URL:    ep.URL + "/hook?token=query-credential",
				Secret: testWebhookSecret,
			})

			err := w.Deliver(context.Background(), testEvent())
			if err == nil {
				t.Fatal("Deliver succeeded")
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) {
				t.Errorf("error %q does not name status %s", msg,
					tc.want)
			}
			if !strings.Contains(msg, ep.URL+"/…") {
				t.Errorf("error %q does not name the host", msg)
			}
			if strings.Contains(msg, "/hook") {
				t.Errorf("error %q holds the path", msg)
			}
			if strings.Contains(msg, "query-credential") {
				t.Errorf("error %q holds the query string", msg)
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if targetHit {
		t.Error("a redirect was followed")
	}

	t.Run("2xx", func(t *testing.T) {
		for _, code := range []int{200, 202, 204} {
			ep := newWebhookEndpoint(t, func(rw http.ResponseWriter,
				_ *http.Request) {
				rw.WriteHeader(code)
				if code != http.StatusNoContent {
					_, _ = rw.Write(bytes.Repeat([]byte("x"), 1<<20))
				}
			})
			w := mustWebhook(t, &Webhook{URL: ep.URL,
				Secret: testWebhookSecret})
			if err := w.Deliver(context.Background(),
				testEvent()); err != nil {
				t.Errorf("status %d: Deliver: %v", code, err)
			}
		}
	})

	t.Run("connection refused", func(t *testing.T) {
		ep := newWebhookEndpoint(t, nil)
		u := ep.URL + "/hook?token=query-credential"
		ep.Close()
		w := mustWebhook(t, &Webhook{URL: u, Secret: testWebhookSecret})
		err := w.Deliver(context.Background(), testEvent())
		if err == nil {
			t.Fatal("Deliver succeeded")
		}
		if strings.Contains(err.Error(), "query-credential") {
			t.Errorf("error %q holds the query string", err)
		}
		if !strings.Contains(err.Error(), ep.URL+"/…") {
			t.Errorf("error %q does not name the host", err)
		}
	})
}

func TestWebhookTimeout(t *testing.T) {
	release := make(chan struct{})
	ep := newWebhookEndpoint(t, func(http.ResponseWriter,
		*http.Request) {
		<-release
	})
	defer close(release)

	cases := []struct {
		name    string
		timeout time.Duration
		ctx     func() (context.Context, context.CancelFunc)
	}{
		{"timeout", 100 * time.Millisecond,
			func() (context.Context, context.CancelFunc) {
				return context.Background(), func() {}
			}},
		{"context", time.Minute,
			func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(),
					100*time.Millisecond)
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := mustWebhook(t, &Webhook{URL: ep.URL,
				Secret:  testWebhookSecret,
				Timeout: caddy.Duration(tc.timeout)})
			ctx, cancel := tc.ctx()
			defer cancel()

			start := time.Now()
			err := w.Deliver(ctx, testEvent())
			if err == nil {
				t.Fatal("Deliver succeeded")
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("Deliver took %v", d)
			}
		})
	}
}

func TestWebhookCaddyfile(t *testing.T) {
	cases := []struct {
		name  string
		input string
		want  Webhook
		err   string
	}{
		{
			name: "full",
			input: `webhook https://hooks.example.com/dcr {
				secret {env.DCR_WEBHOOK_SECRET}
				include_secret
				timeout 3s
			}`,
			want: Webhook{
				URL:           "https://hooks.example.com/dcr",
				Secret:        "{env.DCR_WEBHOOK_SECRET}",
				IncludeSecret: true,
				Timeout:       caddy.Duration(3 * time.Second),
			},
		},
		{
			name: "minimal",
			input: `webhook http://127.0.0.1:9000/ {
				secret 0123456789abcdef
			}`,
			want: Webhook{URL: "http://127.0.0.1:9000/",
				Secret: "0123456789abcdef"},
		},
		{name: "no url", input: "webhook {\n secret x\n}",
			err: "wrong argument count"},
		{name: "two urls",
			input: "webhook https://a/ https://b/ {\n secret x\n}",
			err:   "wrong argument count"},
		{name: "no block", input: "webhook https://a/",
			err: "secret is required"},
		{name: "no secret",
			input: "webhook https://a/ {\n timeout 1s\n}",
			err:   "secret is required"},
		{name: "secret without value",
			input: "webhook https://a/ {\n secret\n}",
			err:   "secret wants exactly one argument"},
		{name: "secret two values",
			input: "webhook https://a/ {\n secret abc hidden-part\n}",
			err:   "secret wants exactly one argument"},
		{name: "duplicate secret",
			input: "webhook https://a/ {\n secret a\n secret b\n}",
			err:   "secret given more than once"},
		{name: "duplicate timeout",
			input: "webhook https://a/ {\n secret a\n timeout 1s\n" +
				" timeout 2s\n}",
			err: "timeout given more than once"},
		{name: "include_secret argument",
			input: "webhook https://a/ {\n secret a\n" +
				" include_secret yes\n}",
			err: "wrong argument count"},
		{name: "bad timeout",
			input: "webhook https://a/ {\n secret a\n timeout soon\n}",
			err:   "timeout \"soon\""},
		{name: "negative timeout",
			input: "webhook https://a/ {\n secret a\n timeout -1s\n}",
			err:   "must not be negative"},
		{name: "unknown",
			input: "webhook https://a/ {\n secret a\n retries 3\n}",
			err:   "unknown subdirective retries"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var w Webhook
			err := w.UnmarshalCaddyfile(
				caddyfile.NewTestDispenser(tc.input))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q",
						err, tc.err)
				}
				if strings.Contains(err.Error(), "hidden-part") {
					t.Errorf("error %q quotes the secret", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("UnmarshalCaddyfile: %v", err)
			}
			if w.URL != tc.want.URL || w.Secret != tc.want.Secret ||
				w.IncludeSecret != tc.want.IncludeSecret ||
				w.Timeout != tc.want.Timeout {
				t.Errorf("got %+v, want %+v", w, tc.want)
			}
		})
	}
}

// TestWebhookUnmarshalModule parses a hook line as the handler's parser
// does: through the module registry, with the dispenser at the module
// name.
func TestWebhookUnmarshalModule(t *testing.T) {
	d := caddyfile.NewTestDispenser(`hook webhook https://a.example/ {
		secret 0123456789abcdef
	}`)
	d.Next() // hook
	d.Next() // webhook
	unm, err := caddyfile.UnmarshalModule(d, "dcr.hooks.webhook")
	if err != nil {
		t.Fatalf("UnmarshalModule: %v", err)
	}
	w, ok := unm.(*Webhook)
	if !ok {
		t.Fatalf("UnmarshalModule returned %T", unm)
	}
	if w.URL != "https://a.example/" || w.Secret != "0123456789abcdef" {
		t.Errorf("got %+v", w)
	}
	if d.NextArg() || d.Next() {
		t.Errorf("tokens left after the module: %q", d.Val())
	}
}

func TestWebhookValidate(t *testing.T) {
	cases := []struct {
		name string
		w    Webhook
		err  string
	}{
		{"no url", Webhook{Secret: testWebhookSecret},
			"url is required"},
		{"relative", Webhook{URL: "/hook", Secret: testWebhookSecret},
			"scheme must be http or https"},
		{"ftp", Webhook{URL: "ftp://a.example/",
			Secret: testWebhookSecret}, "scheme must be http or https"},
		{"no host", Webhook{URL: "https:///hook",
			Secret: testWebhookSecret}, "no host"},
		{"user info", Webhook{
			URL:    "https://user:pass-in-url@a.example/",
			Secret: testWebhookSecret}, "must not hold user info"},
		{"unparsable", Webhook{URL: "https://a example/?k=hidden-part",
			Secret: testWebhookSecret}, "parsing webhook url"},
		{"no secret", Webhook{URL: "https://a.example/"},
			"secret is required"},
		{"short secret", Webhook{URL: "https://a.example/",
			Secret: "hidden-part"}, "at least 16 bytes"},
		{"unset env secret", Webhook{URL: "https://a.example/",
			Secret: "{env.DCR_TEST_WEBHOOK_UNSET}"},
			"secret is required"},
		{"misspelt placeholder", Webhook{URL: "https://a.example/",
			Secret: "{evn.DCR_WEBHOOK_SECRET}"}, "unknown placeholder"},
		{"secret over plain http", Webhook{URL: "http://a.example/",
			Secret: testWebhookSecret, IncludeSecret: true},
			"include_secret needs https"},
		{"negative timeout", Webhook{URL: "https://a.example/",
			Secret:  testWebhookSecret,
			Timeout: caddy.Duration(-time.Second)}, "negative"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := provisionWebhook(t, &tc.w)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want one containing %q", err,
					tc.err)
			}
			for _, hidden := range []string{"hidden-part",
				"pass-in-url", testWebhookSecret} {
				if strings.Contains(err.Error(), hidden) {
					t.Errorf("error %q holds %q", err, hidden)
				}
			}
		})
	}
}

func TestWebhookPlaceholders(t *testing.T) {
	envSecret := "secret-from-the-environment"
	t.Setenv("DCR_TEST_WEBHOOK_SECRET", envSecret)
	fileSecret := "secret-from-a-file-0123"
	secretFile := filepath.Join(t.TempDir(), "webhook_secret")
	if err := os.WriteFile(secretFile, []byte(fileSecret+"\n"),
		0o600); err != nil {
		t.Fatal(err)
	}
	ep := newWebhookEndpoint(t, nil)
	t.Setenv("DCR_TEST_WEBHOOK_PATH", "/from-env")

	cases := []struct {
		name   string
		secret string
		want   string
	}{
		{"env", "{env.DCR_TEST_WEBHOOK_SECRET}", envSecret},
		{"file", "{file." + secretFile + "}", fileSecret},
		{"mixed", "prefix-{env.DCR_TEST_WEBHOOK_SECRET}",
			"prefix-" + envSecret},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := mustWebhook(t, &Webhook{
				URL:    ep.URL + "{env.DCR_TEST_WEBHOOK_PATH}",
				Secret: tc.secret,
			})
			if err := w.Deliver(context.Background(),
				testEvent()); err != nil {
				t.Fatalf("Deliver: %v", err)
			}
			reqs := ep.requests()
			got := reqs[len(reqs)-1]
			err := VerifyWebhookSignature([]byte(tc.want),
				got.header.Get("X-DCR-Signature"), got.body,
				webhookNow, time.Minute)
			if err != nil {
				t.Errorf("signature with the expanded secret: %v", err)
			}
			if w.Secret != tc.secret {
				t.Errorf("Provision changed Secret to %q", w.Secret)
			}
			want := "webhook " + ep.URL + " " +
				hexSHA256(ep.URL + "/from-env")[:16]
			if q := w.HookQueue(); q != want {
				t.Errorf("HookQueue = %q, want %q", q, want)
			}
		})
	}
}

func TestWebhookSecretKey(t *testing.T) {
	const u = "https://a.example/hook"
	off := mustWebhook(t, &Webhook{URL: u, Secret: testWebhookSecret})
	if k := off.SecretKey(); k != nil {
		t.Errorf("SecretKey without include_secret = %x, want nil", k)
	}

	a := mustWebhook(t, &Webhook{URL: u, Secret: testWebhookSecret,
		IncludeSecret: true})
	b := mustWebhook(t, &Webhook{URL: u, Secret: testWebhookSecret,
		IncludeSecret: true})
	c := mustWebhook(t, &Webhook{URL: u, Secret: testWebhookSecret + "x",
		IncludeSecret: true})

	ka := a.SecretKey()
	if len(ka) != 32 {
		t.Fatalf("SecretKey is %d bytes, want 32", len(ka))
	}
	if !bytes.Equal(ka, b.SecretKey()) {
		t.Error("SecretKey differs between two provisionings")
	}
	if bytes.Equal(ka, c.SecretKey()) {
		t.Error("SecretKey is the same for two secrets")
	}
	if bytes.Contains(ka, []byte(testWebhookSecret[:16])) {
		t.Error("SecretKey holds the secret")
	}
	want, err := hkdf.Key(sha256.New, []byte(testWebhookSecret), nil,
		"caddy-dcr outbox secret", 32)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ka, want) {
		t.Errorf("SecretKey = %x, want %x", ka, want)
	}

	ka[0] ^= 0xff
	if bytes.Equal(ka, a.SecretKey()) {
		t.Error("SecretKey returned its own slice")
	}
}

func TestWebhookQueue(t *testing.T) {
	cases := []struct {
		name string
		url  string
		want string
	}{
		{"plain", "https://a.example/hook",
			"webhook https://a.example " +
				hexSHA256("https://a.example/hook")[:16]},
		{"query", "https://a.example/hook?token=1",
			"webhook https://a.example " +
				hexSHA256("https://a.example/hook?token=1")[:16]},
		{"credential in the path", "https://hooks.example/T0/B0/secret",
			"webhook https://hooks.example " +
				hexSHA256("https://hooks.example/T0/B0/secret")[:16]},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := mustWebhook(t, &Webhook{URL: tc.url,
				Secret: testWebhookSecret})
			if got := w.HookQueue(); got != tc.want {
				t.Errorf("HookQueue = %q, want %q", got, tc.want)
			}
		})
	}

	t.Run("long", func(t *testing.T) {
		long := "https://a.example/" + strings.Repeat("p", 300)
		w := mustWebhook(t, &Webhook{URL: long,
			Secret: testWebhookSecret})
		got := w.HookQueue()
		if len(got) > 200 || strings.Contains(got, "ppp") {
			t.Errorf("HookQueue = %q", got)
		}
		other := mustWebhook(t, &Webhook{URL: long + "q",
			Secret: testWebhookSecret})
		if other.HookQueue() == got {
			t.Error("two long URLs share a queue")
		}
	})
}

// hexSHA256 returns the SHA-256 of s in hex.
func hexSHA256(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
