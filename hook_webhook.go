package dcr

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func init() {
	caddy.RegisterModule(Webhook{})
}

// Defaults and limits of the webhook hook.
const (
	defaultWebhookTimeout = 10 * time.Second

	// minWebhookSecret is the shortest HMAC key accepted, in bytes.
	minWebhookSecret = 16

	// webhookDrain is how much of a response body is read before the
	// connection is closed or reused; receivers have nothing to say
	// beyond their status.
	webhookDrain = 4 << 10

	// webhookSecretInfo is the HKDF info string of the key that seals
	// client secrets in the outbox. Changing it loses waiting secrets.
	webhookSecretInfo = "caddy-dcr outbox secret"
)

// Headers of a webhook request.
const (
	// WebhookSignatureHeader carries "t=<unix seconds>,v1=<hex>", where
	// the hex is the HMAC-SHA256 of "<t>." followed by the body.
	WebhookSignatureHeader = "X-DCR-Signature"

	// WebhookEventHeader carries the event type, such as "created".
	WebhookEventHeader = "X-DCR-Event"

	// WebhookEventIDHeader carries the event ID, the same on every
	// attempt to deliver the event.
	WebhookEventIDHeader = "X-DCR-Event-ID"
)

// Errors of VerifyWebhookSignature.
var (
	// ErrWebhookSignatureFormat is returned when the signature header is
	// missing, has no timestamp or has no v1 signature.
	ErrWebhookSignatureFormat = errors.New("malformed webhook signature")

	// ErrWebhookSignatureExpired is returned when the timestamp of the
	// signature is further from now than the tolerance allows.
	ErrWebhookSignatureExpired = errors.New(
		"webhook signature timestamp outside tolerance")

	// ErrWebhookSignatureMismatch is returned when no v1 signature in the
	// header matches the body and the secret.
	ErrWebhookSignatureMismatch = errors.New(
		"webhook signature does not match")
)

// Webhook is a hook that posts every event as JSON to an HTTP endpoint,
// signed with HMAC-SHA256. Each call to Deliver makes one attempt; the
// dispatcher retries a failed one. An attempt succeeds when the endpoint
// answers with a 2xx status; any other status, a redirect included, and
// any transport error fail it.
//
// The request is a POST with the JSON form of HookEvent as its body and
// these headers: Content-Type: application/json, User-Agent: caddy-dcr,
// X-DCR-Event (the event type), X-DCR-Event-ID (the event ID) and
// X-DCR-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>,
// where t is the time of the attempt. Receivers written in Go can check
// it with VerifyWebhookSignature.
//
// Requests trust the system's CA roots and go through the proxy that the
// HTTPS_PROXY, HTTP_PROXY and NO_PROXY environment variables name, if any.
type Webhook struct {
	// URL is the endpoint events are posted to, an absolute http or
	// https URL with a host and no user info. Placeholders such as
	// {env.DCR_WEBHOOK_URL} are expanded at provisioning. Events wait
	// in a queue named after the expanded URL, so changing the URL
	// starts a new, empty queue and leaves events waiting in the old
	// one undelivered. Required.
	URL string `json:"url"`

	// Secret is the HMAC-SHA256 key that signs every request, at least
	// 16 bytes after placeholders such as {env.DCR_WEBHOOK_SECRET} or
	// {file./run/secrets/dcr_webhook} are expanded at provisioning.
	// Prefer a placeholder to writing the key into the configuration.
	// It is never logged. With IncludeSecret, it also derives the key
	// that seals waiting client secrets, so changing it loses client
	// secrets of created events still waiting. Required.
	Secret string `json:"secret"`

	// IncludeSecret makes created events carry the plaintext
	// client_secret issued at registration. While the event waits for
	// delivery the secret is stored sealed with a key derived from
	// Secret. Without it, no body ever holds a client secret. Use it
	// only with an https URL. Default: false.
	IncludeSecret bool `json:"include_secret,omitempty"`

	// Timeout bounds one delivery attempt: connecting, sending the
	// request and reading the answer. Zero means the default. Default:
	// 10s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	url     string // URL with placeholders expanded
	display string // url without user info, query or fragment
	secret  []byte // Secret with placeholders expanded
	sealKey []byte // key returned by SecretKey, or nil
	timeout time.Duration
	client  *http.Client
	now     func() time.Time
	logger  *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Webhook) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "dcr.hooks.webhook",
		New: func() caddy.Module { return new(Webhook) },
	}
}

// Provision expands placeholders in URL and Secret, fills in the default
// timeout and builds the HTTP client.
func (w *Webhook) Provision(ctx caddy.Context) error {
	w.logger = ctx.Logger()
	if w.now == nil {
		w.now = time.Now
	}

	repl := caddy.NewReplacer()
	w.url = repl.ReplaceKnown(w.URL, "")
	w.display = redactURL(w.url)
	w.secret = []byte(repl.ReplaceKnown(w.Secret, ""))

	w.timeout = time.Duration(w.Timeout)
	if w.timeout == 0 {
		w.timeout = defaultWebhookTimeout
	}

	w.sealKey = nil
	if w.IncludeSecret && len(w.secret) > 0 {
		key, err := hkdf.Key(sha256.New, w.secret, nil,
			webhookSecretInfo, 32)
		if err != nil {
			return fmt.Errorf("deriving webhook outbox key: %w", err)
		}
		w.sealKey = key
	}

	transport := http.DefaultTransport.(*http.Transport).Clone()
	w.client = &http.Client{
		Transport: transport,
		Timeout:   w.timeout,
		// A redirect could carry the signed body, and the client
		// secret, to a host nobody configured; it fails the attempt.
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}

	return nil
}

// Validate checks the provisioned configuration. Its errors never hold the
// secret or the query string of the URL.
func (w *Webhook) Validate() error {
	if w.url == "" {
		return errors.New("webhook url is required")
	}
	u, err := url.Parse(w.url)
	if err != nil {
		return fmt.Errorf("parsing webhook url: %w", unwrapURLError(err))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("webhook url %s: scheme must be http or https",
			w.display)
	}
	if u.Host == "" {
		return fmt.Errorf("webhook url %s: no host", w.display)
	}
	if u.User != nil {
		return fmt.Errorf("webhook url %s: must not hold user info",
			w.display)
	}
	if w.IncludeSecret && u.Scheme == "http" && !isLoopback(u.Hostname()) {
		return fmt.Errorf("webhook url %s: include_secret needs https, "+
			"or http on a loopback host, since the body carries client "+
			"secrets", w.display)
	}

	if len(w.secret) == 0 {
		return errors.New("webhook secret is required")
	}
	if len(w.secret) < minWebhookSecret {
		return fmt.Errorf("webhook secret must be at least %d bytes "+
			"after placeholder expansion", minWebhookSecret)
	}
	// A misspelt placeholder is left in place and would otherwise become
	// a key anyone reading the configuration knows.
	if unexpandedPlaceholder(w.secret) {
		return errors.New("webhook secret is an unknown placeholder")
	}

	if w.Timeout < 0 {
		return errors.New("webhook timeout must not be negative")
	}
	return nil
}

// Cleanup closes idle connections to the endpoint. It is safe to call
// more than once and after a failed Provision.
func (w *Webhook) Cleanup() error {
	if w.client != nil {
		w.client.CloseIdleConnections()
	}
	return nil
}

// HookQueue returns "webhook ", the scheme and host of the URL, and the
// first 16 hex digits of the SHA-256 of the whole URL with placeholders
// expanded: each endpoint has its own queue, changing the URL starts a new
// one, and the name, which is stored and may be logged, never holds a
// path or a query, where some receivers take a credential.
func (w *Webhook) HookQueue() string {
	sum := sha256.Sum256([]byte(w.url))
	host := "(invalid url)"
	if u, err := url.Parse(w.url); err == nil {
		host = u.Scheme + "://" + u.Host
	}
	return "webhook " + truncateBytes(host, 150) + " " + hex.EncodeToString(sum[:8])
}

// truncateBytes returns s cut to at most n bytes.
func truncateBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// SecretKey returns nil unless IncludeSecret is set. Otherwise it returns
// the 32-byte key that seals client secrets waiting in the outbox, derived
// from the expanded Secret with HKDF-SHA256 (no salt, info "caddy-dcr
// outbox secret"), so it stays the same for as long as Secret does.
func (w *Webhook) SecretKey() []byte {
	if w.sealKey == nil {
		return nil
	}
	return bytes.Clone(w.sealKey)
}

// Deliver makes one attempt to post e to the endpoint. It fails unless the
// endpoint answers with a 2xx status. Without IncludeSecret the body never
// holds a client secret.
func (w *Webhook) Deliver(ctx context.Context, e *HookEvent) error {
	ev := *e
	if !w.IncludeSecret {
		ev.ClientSecret = ""
	}
	body, err := json.Marshal(&ev)
	if err != nil {
		return fmt.Errorf("encoding event %s: %w", e.ID, err)
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url,
		bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("building request to %s: %w", w.display,
			unwrapURLError(err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", fetchUserAgent)
	req.Header.Set(WebhookEventHeader, e.Type)
	req.Header.Set(WebhookEventIDHeader, e.ID)
	req.Header.Set(WebhookSignatureHeader,
		signWebhook(w.secret, w.now(), body))

	resp, err := w.client.Do(req)
	if err != nil {
		return fmt.Errorf("posting event to %s: %w", w.display,
			unwrapURLError(err))
	}
	_, _ = io.CopyN(io.Discard, resp.Body, webhookDrain)
	_ = resp.Body.Close()

	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return fmt.Errorf("posting event to %s: status %s, "+
			"redirects are not followed", w.display, resp.Status)
	default:
		return fmt.Errorf("posting event to %s: status %s",
			w.display, resp.Status)
	}
}

// UnmarshalCaddyfile sets up the webhook from Caddyfile tokens, starting
// at the module name. Syntax:
//
//	webhook <url> {
//		secret         <key>
//		include_secret
//		timeout        <duration>
//	}
//
// The URL and secret are required.
func (w *Webhook) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the module name

	args := d.RemainingArgs()
	if len(args) != 1 {
		return d.ArgErr()
	}
	w.URL = args[0]

	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if seen[name] {
			return d.Errf("webhook: subdirective %s given more "+
				"than once", name)
		}
		seen[name] = true

		switch name {
		case "secret":
			// Not oneArg: its ArgErr would quote the last token,
			// which may be part of the secret.
			args := d.RemainingArgs()
			if len(args) != 1 {
				return d.Err("webhook: secret wants exactly one " +
					"argument")
			}
			w.Secret = args[0]
		case "include_secret":
			if d.NextArg() {
				return d.ArgErr()
			}
			w.IncludeSecret = true
		case "timeout":
			t, err := duration(d, "timeout")
			if err != nil {
				return err
			}
			w.Timeout = t
		default:
			return d.Errf("webhook: unknown subdirective %s", name)
		}
	}

	if w.Secret == "" {
		return d.Err("webhook: secret is required")
	}
	return nil
}

// VerifyWebhookSignature checks a webhook request's X-DCR-Signature header
// against its raw body: the timestamp t must be within tolerance of now,
// and one of the v1 values must be the HMAC-SHA256, keyed with secret, of
// t, a dot and the body. Several v1 values are accepted so that a sender
// may sign with an old and a new secret while the secret changes; other
// keys are ignored. The errors are ErrWebhookSignatureFormat,
// ErrWebhookSignatureExpired and ErrWebhookSignatureMismatch. A tolerance
// of five minutes suits clocks kept by NTP; keep the event ID to drop a
// repeat within it.
func VerifyWebhookSignature(secret []byte, header string, body []byte,
	now time.Time, tolerance time.Duration) error {
	if len(secret) == 0 {
		return errors.New("verifying webhook signature: empty secret")
	}

	var (
		ts     string
		haveTS bool
		sigs   []string
	)
	for part := range strings.SplitSeq(header, ",") {
		key, value, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return ErrWebhookSignatureFormat
		}
		switch key {
		case "t":
			if haveTS {
				return ErrWebhookSignatureFormat
			}
			ts, haveTS = value, true
		case "v1":
			sigs = append(sigs, value)
		}
	}
	if !haveTS || len(sigs) == 0 {
		return ErrWebhookSignatureFormat
	}
	// Digits only, no sign: at most 2^63-1 seconds, which time.Unix
	// and Sub keep far outside any tolerance rather than wrapping.
	t, err := strconv.ParseUint(ts, 10, 63)
	if err != nil {
		return ErrWebhookSignatureFormat
	}

	age := now.Sub(time.Unix(int64(t), 0))
	if age > tolerance || age < -tolerance {
		return ErrWebhookSignatureExpired
	}

	want := webhookMAC(secret, ts, body)
	for _, s := range sigs {
		got, err := hex.DecodeString(s)
		if err != nil {
			continue
		}
		if hmac.Equal(got, want) {
			return nil
		}
	}
	return ErrWebhookSignatureMismatch
}

// signWebhook returns the signature header of body sent at now.
func signWebhook(secret []byte, now time.Time, body []byte) string {
	ts := strconv.FormatInt(now.Unix(), 10)
	return "t=" + ts + ",v1=" +
		hex.EncodeToString(webhookMAC(secret, ts, body))
}

// webhookMAC returns HMAC-SHA256(secret, ts + "." + body).
func webhookMAC(secret []byte, ts string, body []byte) []byte {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return mac.Sum(nil)
}

// redactURL returns the scheme and host of raw, and "/…" for a path, for
// messages: a path or a query string may hold a credential. It returns a
// fixed text when raw does not parse.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(invalid url)"
	}
	out := u.Scheme + "://" + u.Host
	if u.Path != "" && u.Path != "/" {
		out += "/…"
	}
	return out
}

// unwrapURLError returns the cause of a *url.Error, which would otherwise
// repeat the whole URL, query string included.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// unexpandedPlaceholder reports whether s is a single placeholder the
// replacer did not know, such as a misspelt {evn.NAME}.
func unexpandedPlaceholder(s []byte) bool {
	if len(s) < 3 || s[0] != '{' || s[len(s)-1] != '}' {
		return false
	}
	inner := s[1 : len(s)-1]
	return bytes.IndexAny(inner, "{} \t") < 0 &&
		bytes.IndexByte(inner, '.') > 0
}

// Interface guards
var (
	_ caddy.Module          = (*Webhook)(nil)
	_ caddy.Provisioner     = (*Webhook)(nil)
	_ caddy.Validator       = (*Webhook)(nil)
	_ caddy.CleanerUpper    = (*Webhook)(nil)
	_ caddyfile.Unmarshaler = (*Webhook)(nil)
	_ Hook                  = (*Webhook)(nil)
	_ HookQueue             = (*Webhook)(nil)
	_ SecretReceiver        = (*Webhook)(nil)
)
