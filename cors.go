package dcr

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// CORS answers: the request headers a browser client may send, the
// response headers its script may read, and how long a browser may cache
// a preflight answer.
const (
	corsAllowHeaders  = "Authorization, Content-Type"
	corsExposeHeaders = "WWW-Authenticate, Retry-After"
	corsMaxAge        = "600" // seconds
)

// corsPreflightVary names what a preflight answer depends on, for caches.
const corsPreflightVary = "Origin, Access-Control-Request-Method, " +
	"Access-Control-Request-Headers"

// corsPolicy answers CORS for the allowed origins; nil allows none.
type corsPolicy struct {
	anyOrigin bool
	origins   map[string]struct{} // normalised by normalizeOrigin
}

// newCORSPolicy returns a policy for origins, each "*" (any origin) or a
// serialized origin scheme://host[:port] with scheme http or https. It
// returns nil, which allows none, when origins is empty.
func newCORSPolicy(origins []string) (*corsPolicy, error) {
	if len(origins) == 0 {
		return nil, nil
	}

	c := &corsPolicy{origins: make(map[string]struct{})}
	for _, o := range origins {
		if o == "*" {
			c.anyOrigin = true
			continue
		}
		norm, err := normalizeOrigin(o)
		if err != nil {
			return nil, fmt.Errorf("cors_origins %q: %w", o, err)
		}
		c.origins[norm] = struct{}{}
	}
	return c, nil
}

// normalizeOrigin checks that s is a serialized origin (RFC 6454 section
// 6.2) with scheme http or https, and returns it with scheme and host in
// lower case and the scheme's default port left out, the form in which
// two equal origins compare equal.
func normalizeOrigin(s string) (string, error) {
	scheme, hostport, ok := strings.Cut(s, "://")
	if !ok {
		return "", errors.New("not of the form scheme://host[:port]")
	}
	scheme = strings.ToLower(scheme)
	if scheme != "http" && scheme != "https" {
		return "", fmt.Errorf("scheme %q is not http or https", scheme)
	}

	// A browser's Origin header never carries these, so an entry with
	// them would never match.
	if strings.ContainsAny(hostport, "/?#@\\") {
		return "", errors.New("must not have a path, trailing slash, " +
			"query, fragment or user info")
	}
	// Browsers send international names in punycode and never escape.
	for _, r := range hostport {
		if !originHostChar(r) {
			return "", fmt.Errorf("character %q is not allowed in a "+
				"host (use the punycode form of an international "+
				"name)", r)
		}
	}

	u, err := url.Parse(scheme + "://" + hostport)
	if err != nil {
		return "", fmt.Errorf("parsing host and port: %w", err)
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if host == "" {
		return "", errors.New("missing host")
	}
	if strings.HasSuffix(hostport, ":") {
		return "", errors.New("empty port")
	}
	if strings.Contains(host, ":") {
		// Browsers serialize an IPv6 literal in its canonical form.
		addr, err := netip.ParseAddr(host)
		if err != nil {
			return "", fmt.Errorf("IPv6 address: %w", err)
		}
		host = "[" + addr.String() + "]"
	}
	if port == "" {
		return scheme + "://" + host, nil
	}

	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return "", fmt.Errorf("port %q is not between 1 and 65535", port)
	}
	if (scheme == "http" && p == 80) || (scheme == "https" && p == 443) {
		return scheme + "://" + host, nil
	}
	return scheme + "://" + host + ":" + strconv.Itoa(p), nil
}

// originHostChar reports whether r may appear in the host and port of
// an origin: a DNS name, an IPv4 address or a bracketed IPv6 address.
func originHostChar(r rune) bool {
	switch {
	case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9':
		return true
	}
	return strings.ContainsRune("-._:[]", r)
}

// allows reports whether a request's Origin header value is allowed.
func (c *corsPolicy) allows(origin string) bool {
	if c.anyOrigin {
		return true
	}
	norm, err := normalizeOrigin(origin)
	if err != nil {
		return false
	}
	_, ok := c.origins[norm]
	return ok
}

// handle adds the CORS response headers for an allowed Origin and
// answers preflight requests, per the Fetch standard's CORS protocol.
// methods are those the endpoint allows (e.g. POST for registration;
// GET, PUT, DELETE for client configuration). It returns true when it
// has answered the request itself (a preflight), and then the caller
// does nothing more.
//
// The allowed Origin is echoed rather than answered with "*", so one
// code path serves both kinds of policy; no cookies are involved, so
// this grants nothing "*" would not.
func (c *corsPolicy) handle(w http.ResponseWriter, r *http.Request,
	methods []string) bool {
	if c == nil {
		return false
	}

	h := w.Header()
	origin := r.Header.Get("Origin")
	reqMethod := r.Header.Get("Access-Control-Request-Method")
	if r.Method == http.MethodOptions && origin != "" && reqMethod != "" {
		h.Add("Vary", corsPreflightVary)
		c.preflight(w, r, origin, reqMethod, methods)
		return true
	}

	// The answer depends on Origin even when it grants nothing, so a
	// cache must not hand one origin's answer to another.
	h.Add("Vary", "Origin")
	if origin != "" && c.allows(origin) {
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
	}
	return false
}

// preflight answers a CORS preflight request: 204 with the allowed
// methods and headers, or 403 naming what is not allowed.
func (c *corsPolicy) preflight(w http.ResponseWriter, r *http.Request,
	origin, reqMethod string, methods []string) {
	if !c.allows(origin) {
		writeError(w, requestError(http.StatusForbidden, "cors_origin",
			fmt.Sprintf("origin %q is not allowed", origin)))
		return
	}
	if !slices.Contains(methods, reqMethod) {
		writeError(w, requestError(http.StatusForbidden, "cors_method",
			fmt.Sprintf("method %q is not allowed; allowed: %s",
				reqMethod, strings.Join(methods, ", "))))
		return
	}
	if bad := corsBadHeader(r); bad != "" {
		writeError(w, requestError(http.StatusForbidden, "cors_header",
			fmt.Sprintf("request header %q is not allowed; allowed: %s",
				bad, corsAllowHeaders)))
		return
	}

	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Allow-Methods", strings.Join(methods, ", "))
	h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
	h.Set("Access-Control-Max-Age", corsMaxAge)
	w.WriteHeader(http.StatusNoContent)
}

// corsBadHeader returns the first header named in the request's
// Access-Control-Request-Headers that a client may not send, or "" when
// all are allowed.
func corsBadHeader(r *http.Request) string {
	for _, v := range r.Header.Values("Access-Control-Request-Headers") {
		for name := range strings.SplitSeq(v, ",") {
			name = strings.TrimSpace(name)
			switch strings.ToLower(name) {
			case "", "authorization", "content-type":
			default:
				return name
			}
		}
	}
	return ""
}
