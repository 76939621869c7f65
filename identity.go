package dcr

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/caddy-dcr/caddy-dcr/clientdb"

	"github.com/caddyserver/caddy/v2"
)

// admit passes the checked client's identity to the backend in headers and
// to other handlers as placeholders, and records its use.
func (h *Handler) admit(r *http.Request, c *clientdb.Client) {
	kind := "confidential"
	if c.Metadata.TokenEndpointAuthMethod == authNone {
		kind = "public"
	}
	r.Header.Set(h.identity.ClientIDHeader, c.ID)
	r.Header.Set(h.identity.ClientNameHeader, headerSafe(c.Metadata.ClientName))
	r.Header.Set(h.identity.ClientTypeHeader, kind)

	setPlaceholders(r, c.ID, c.Metadata.ClientName, kind)
	h.usage.touch(c.ID, h.now())
}

// setPlaceholders sets the client identity placeholders of the request.
func setPlaceholders(r *http.Request, id, name, kind string) {
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("http.dcr.client_id", id)
		repl.Set("http.dcr.client_name", name)
		repl.Set("http.dcr.client_type", kind)
	}
}

// headerFolder maps the characters that CGI-style backends treat as a
// hyphen in header names (PHP folds both) to a hyphen.
var headerFolder = strings.NewReplacer("_", "-", ".", "-")

// stripIdentity removes identity headers a caller sent, so that the backend
// can trust the ones the handler sets. Spellings with underscores or dots
// go too: CGI-style backends, FastCGI among them, read "X-DCR-Client_ID"
// as the same variable as "X-DCR-Client-ID".
func (h *Handler) stripIdentity(r *http.Request) {
	for name := range r.Header {
		canon := headerFolder.Replace(name)
		if strings.EqualFold(canon, h.identity.ClientIDHeader) ||
			strings.EqualFold(canon, h.identity.ClientNameHeader) ||
			strings.EqualFold(canon, h.identity.ClientTypeHeader) {
			delete(r.Header, name)
		}
	}
}

// headerSafe makes a client name fit an HTTP header value: a name with
// non-ASCII or control characters, or with a "%", is percent-encoded, so
// that every proxy passes it unchanged and a backend that decodes it
// always gets the registered name back.
func headerSafe(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f || s[i] == '%' {
			return url.PathEscape(s)
		}
	}
	return s
}

// reservedHeaders may not carry the client's identity: stripping them from
// callers' requests would break authentication, routing or framing.
var reservedHeaders = []string{
	"Authorization", "Proxy-Authorization", "Cookie", "Host", "Connection",
	"Keep-Alive", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
	"Content-Length", "Content-Type", "Content-Encoding", "Forwarded",
	"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto",
}

// validateIdentityHeaders checks the identity header names: valid field
// names, distinct even after the folding CGI backends apply, and none the
// request needs for anything else.
func validateIdentityHeaders(e *Enforce) error {
	names := []struct{ sub, value string }{
		{"client_id_header", e.ClientIDHeader},
		{"client_name_header", e.ClientNameHeader},
		{"client_type_header", e.ClientTypeHeader},
	}
	for i, n := range names {
		if n.value == "" {
			continue // the default applies
		}
		if !httpguts.ValidHeaderFieldName(n.value) {
			return fmt.Errorf("enforce %s %q: not a valid header name", n.sub, n.value)
		}
		for _, r := range reservedHeaders {
			if strings.EqualFold(headerFolder.Replace(n.value), r) {
				return fmt.Errorf("enforce %s %q: header is needed for other purposes",
					n.sub, n.value)
			}
		}
		for _, m := range names[:i] {
			if m.value != "" && strings.EqualFold(headerFolder.Replace(m.value),
				headerFolder.Replace(n.value)) {
				return fmt.Errorf("enforce %s %q: same header as %s", n.sub, n.value, m.sub)
			}
		}
	}
	return nil
}
