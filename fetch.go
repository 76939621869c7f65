package dcr

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// Defaults and limits of the server's outgoing fetches.
const (
	defaultFetchTimeout = 5 * time.Second
	defaultFetchMaxSize = 64 << 10

	// maxFetchMaxSize caps max_size: fetched documents are key sets and
	// lists of URIs, and the whole body is held in memory.
	maxFetchMaxSize = 1 << 20

	// maxFetchRedirects is the number of redirects one fetch follows.
	maxFetchRedirects = 3

	fetchUserAgent = "caddy-dcr"
)

// FetchConfig configures the server's outgoing fetches: the documents that
// registration metadata points to, such as a client's
// sector_identifier_uri or a trusted issuer's JWKS. A URL in client
// metadata is chosen by whoever registers, so every fetch connects only to
// public addresses unless AllowNetworks says otherwise.
type FetchConfig struct {
	// AllowNetworks are CIDR prefixes, such as "10.1.0.0/16",
	// "127.0.0.1/32" or "::1/128", that fetches may connect to although
	// they are loopback, private, link-local or otherwise not public.
	// Addresses in these networks may be reached by anyone who can
	// register a client, so list only servers meant to be fetched.
	// Default: none.
	AllowNetworks []string `json:"allow_networks,omitempty"`

	// Timeout bounds one whole fetch: connecting, the TLS handshake, every
	// redirect and reading the body. Default: 5s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// MaxSize is the largest response body accepted, in bytes; a larger
	// response fails the fetch. Default: 65536 (64 KiB). At most 1048576
	// (1 MiB).
	MaxSize int64 `json:"max_size,omitempty"`

	// TrustedRoots are paths of PEM files holding CA certificates that
	// https fetches trust in addition to the system's roots, for servers
	// under a private PKI. Each file must hold at least one certificate.
	// Default: none, trusting the system's roots only.
	TrustedRoots []string `json:"trusted_roots,omitempty"`
}

// nonPublicNetworks are the address ranges a fetch refuses to connect to
// unless allow_networks lists them: addresses that reach the server's own
// host or private networks, or are not routed on the public Internet.
// IPv4-mapped IPv6 addresses are judged by their IPv4 form before they are
// compared with this list.
var nonPublicNetworks = mustPrefixes(
	// IPv4.
	"0.0.0.0/8",       // "this network", includes the unspecified address
	"10.0.0.0/8",      // private, RFC 1918
	"100.64.0.0/10",   // carrier-grade NAT, RFC 6598
	"127.0.0.0/8",     // loopback
	"169.254.0.0/16",  // link-local, includes cloud metadata services
	"172.16.0.0/12",   // private, RFC 1918
	"192.0.0.0/24",    // IETF protocol assignments, RFC 6890
	"192.0.2.0/24",    // documentation, RFC 5737
	"192.168.0.0/16",  // private, RFC 1918
	"198.18.0.0/15",   // benchmarking, RFC 2544
	"198.51.100.0/24", // documentation, RFC 5737
	"203.0.113.0/24",  // documentation, RFC 5737
	"224.0.0.0/4",     // multicast
	"240.0.0.0/4",     // reserved, includes broadcast 255.255.255.255

	// IPv6.
	"::/96",          // unspecified, loopback, deprecated IPv4-compatible
	"64:ff9b::/96",   // NAT64, RFC 6052: reaches IPv4 private space
	"64:ff9b:1::/48", // local-use NAT64, RFC 8215
	"100::/64",       // discard-only, RFC 6666
	"2001:db8::/32",  // documentation, RFC 3849
	"2002::/16",      // 6to4, RFC 3056: embeds any IPv4 address
	"fc00::/7",       // unique local, RFC 4193
	"fe80::/10",      // link-local unicast
	"ff00::/8",       // multicast
)

// mustPrefixes parses CIDR prefixes written in this file.
func mustPrefixes(cidrs ...string) []netip.Prefix {
	prefixes := make([]netip.Prefix, len(cidrs))
	for i, s := range cidrs {
		prefixes[i] = netip.MustParsePrefix(s)
	}
	return prefixes
}

// publicAddr reports whether addr is a public unicast address, outside
// every range of nonPublicNetworks.
func publicAddr(addr netip.Addr) bool {
	// A zoned address never matches a prefix, so drop the zone; an
	// IPv4-mapped address connects to its IPv4 form.
	addr = addr.WithZone("").Unmap()
	if !addr.IsValid() || !addr.IsGlobalUnicast() {
		return false
	}
	for _, p := range nonPublicNetworks {
		if p.Contains(addr) {
			return false
		}
	}
	return true
}

// addressError is the cause of a refused connection. It names the address
// for the log; the reason shown to the client does not.
type addressError struct {
	addr netip.Addr
}

// Error names the refused address.
func (e *addressError) Error() string {
	return "address " + e.addr.String() +
		" is not public and not in allow_networks"
}

// fetchError is a failed fetch. Reason is written for the client that
// supplied the URL and may be shown to it, for instance in an OAuth
// error_description: it never holds an address the host name resolved to
// or the text of an internal error. Err holds that detail for the log.
type fetchError struct {
	url    string // with any password redacted, for the log
	reason string
	err    error
}

// Error describes the failure for logs, with the cause.
func (e *fetchError) Error() string {
	s := "fetching " + e.url + ": " + e.reason
	if e.err != nil {
		s += ": " + e.err.Error()
	}
	return s
}

// Unwrap returns the internal cause.
func (e *fetchError) Unwrap() error { return e.err }

// Reason returns a description of the failure that is safe to show to the
// client that supplied the URL.
func (e *fetchError) Reason() string { return e.reason }

// fetched is a successful fetch.
type fetched struct {
	body   []byte
	header http.Header

	// url is the URL the body came from, after redirects.
	url string

	// response is the response, its body read and closed, for its
	// caching headers.
	response *http.Response
}

// fetcher makes the server's outgoing HTTP fetches. Its client is shared
// by all fetches so that connections are reused.
type fetcher struct {
	client  *http.Client
	allow   []netip.Prefix
	timeout time.Duration
	maxSize int64
}

// requireHTTPSKey is the context key under which a fetch tells the redirect
// policy whether it requires https.
type requireHTTPSKey struct{}

// noRedirectKey is the context key under which a fetch tells the redirect
// policy that it follows no redirect at all.
type noRedirectKey struct{}

// fetchRules are what one fetch requires beyond the fetcher's settings.
type fetchRules struct {
	// requireHTTPS requires https of the URL and of every redirect.
	requireHTTPS bool

	// noRedirect refuses every redirect.
	noRedirect bool

	// maxSize, when not 0 and below the fetcher's, bounds the body.
	maxSize int64
}

// newFetcher validates the configuration and builds a fetcher. A nil
// configuration means all defaults.
func (c *FetchConfig) newFetcher() (*fetcher, error) {
	if c == nil {
		c = &FetchConfig{}
	}
	f := &fetcher{
		timeout: defaultFetchTimeout,
		maxSize: defaultFetchMaxSize,
	}

	for _, s := range c.AllowNetworks {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("fetch allow_networks %q: %w", s, err)
		}
		// Addresses are unmapped before the check, so an IPv4-mapped
		// prefix must become the IPv4 prefix it stands for.
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		f.allow = append(f.allow, p.Masked())
	}

	switch d := time.Duration(c.Timeout); {
	case d < 0:
		return nil, fmt.Errorf("fetch timeout %q: must not be negative",
			d.String())
	case d > 0:
		f.timeout = d
	}

	switch {
	case c.MaxSize < 0 || c.MaxSize > maxFetchMaxSize:
		return nil, fmt.Errorf("fetch max_size %d: must be between 0 and %d",
			c.MaxSize, maxFetchMaxSize)
	case c.MaxSize > 0:
		f.maxSize = c.MaxSize
	}

	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(c.TrustedRoots) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil {
			// Without system roots, the configured ones still work.
			pool = x509.NewCertPool()
		}
		for _, path := range c.TrustedRoots {
			pem, err := os.ReadFile(path)
			if err != nil {
				return nil, fmt.Errorf("fetch trusted_roots %q: %w",
					path, err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("fetch trusted_roots %q: "+
					"no PEM certificate found", path)
			}
		}
		tlsConfig.RootCAs = pool
	}

	// The check runs in Control, after name resolution and before each
	// connection attempt, on the address actually dialed. A host name
	// that resolves to a public address for a check and to a private one
	// for the connection (DNS rebinding) therefore gains nothing.
	dialer := &net.Dialer{
		Timeout: f.timeout,
		Control: f.checkDial,
	}
	transport := &http.Transport{
		// Never use a proxy from the environment: the proxy would make
		// the connection, and the address check would see only the
		// proxy's address.
		Proxy:                  nil,
		DialContext:            dialer.DialContext,
		TLSClientConfig:        tlsConfig,
		TLSHandshakeTimeout:    f.timeout,
		ResponseHeaderTimeout:  f.timeout,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 64 << 10,
		MaxIdleConns:           16,
		IdleConnTimeout:        90 * time.Second,
		ForceAttemptHTTP2:      true,
	}
	f.client = &http.Client{
		Transport:     transport,
		CheckRedirect: checkRedirect,
		Timeout:       f.timeout,
	}
	return f, nil
}

// checkDial is the dialer's Control function: it refuses a connection to
// an address that is neither public nor allowed.
func (f *fetcher) checkDial(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("dialing %s %q: %w", network, address, err)
	}
	if !f.allowed(ap.Addr()) {
		return &addressError{addr: ap.Addr()}
	}
	return nil
}

// allowed reports whether a fetch may connect to addr.
func (f *fetcher) allowed(addr netip.Addr) bool {
	if publicAddr(addr) {
		return true
	}
	addr = addr.WithZone("").Unmap()
	for _, p := range f.allow {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// checkRedirect is the client's redirect policy. The target's address
// needs no check here: the connection to it goes through the dialer's
// Control like any other.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if no, _ := req.Context().Value(noRedirectKey{}).(bool); no {
		return &fetchError{reason: "redirects are not followed",
			err: fmt.Errorf("redirect to %s", req.URL.Redacted())}
	}
	if len(via) > maxFetchRedirects {
		return &fetchError{reason: "too many redirects",
			err: fmt.Errorf("redirect %d to %s", len(via),
				req.URL.Redacted())}
	}
	requireHTTPS, _ := req.Context().Value(requireHTTPSKey{}).(bool)
	if requireHTTPS && req.URL.Scheme != "https" {
		return &fetchError{reason: "redirect to a non-https URL refused",
			err: fmt.Errorf("redirect to %s", req.URL.Redacted())}
	}
	if reason := checkFetchURL(req.URL, requireHTTPS); reason != "" {
		return &fetchError{reason: "redirect refused: " + reason,
			err: fmt.Errorf("redirect to %s", req.URL.Redacted())}
	}
	return nil
}

// checkFetchURL returns why u may not be fetched, or "" if it may.
func checkFetchURL(u *url.URL, requireHTTPS bool) string {
	switch {
	case requireHTTPS && u.Scheme != "https":
		return "the URL must use https"
	case u.Scheme != "https" && u.Scheme != "http":
		return "the URL must use http or https"
	case u.User != nil:
		return "the URL must not contain user information"
	case u.Host == "" || u.Hostname() == "":
		return "the URL has no host"
	}
	return ""
}

// get fetches rawURL with GET and returns a response body of status 200.
// With requireHTTPS the URL and every redirect must use https. It follows
// at most three redirects, connects only to public or allowed addresses,
// and fails with a *fetchError.
func (f *fetcher) get(ctx context.Context, rawURL string,
	requireHTTPS bool) (*fetched, error) {
	return f.fetch(ctx, rawURL, fetchRules{requireHTTPS: requireHTTPS})
}

// fetch is get with the rules of one fetch.
func (f *fetcher) fetch(ctx context.Context, rawURL string,
	rules fetchRules) (*fetched, error) {
	requireHTTPS := rules.requireHTTPS
	maxSize := f.maxSize
	if rules.maxSize > 0 && rules.maxSize < maxSize {
		maxSize = rules.maxSize
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, &fetchError{url: rawURL,
			reason: "the URL is not valid", err: err}
	}
	// Errors name the URL for the log, which must not see a password.
	logURL := u.Redacted()
	if reason := checkFetchURL(u, requireHTTPS); reason != "" {
		return nil, &fetchError{url: logURL, reason: reason}
	}

	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	ctx = context.WithValue(ctx, requireHTTPSKey{}, requireHTTPS)
	if rules.noRedirect {
		ctx = context.WithValue(ctx, noRedirectKey{}, true)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		u.String(), nil)
	if err != nil {
		return nil, &fetchError{url: logURL,
			reason: "the URL is not valid", err: err}
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", fetchUserAgent)

	resp, err := f.client.Do(req)
	if err != nil {
		return nil, f.failed(logURL, err)
	}
	defer resp.Body.Close()

	if resp.StatusCode != http.StatusOK {
		return nil, &fetchError{url: logURL,
			reason: "status " + strconv.Itoa(resp.StatusCode)}
	}
	// Content-Length refuses a large body early; the limited read
	// catches a chunked one.
	if resp.ContentLength > maxSize {
		return nil, tooLarge(logURL, maxSize)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxSize+1))
	if err != nil {
		return nil, f.failed(logURL, err)
	}
	if int64(len(body)) > maxSize {
		return nil, tooLarge(logURL, maxSize)
	}

	return &fetched{
		body:     body,
		header:   resp.Header,
		url:      resp.Request.URL.String(),
		response: resp,
	}, nil
}

// tooLarge is the error for a body beyond the size limit.
func tooLarge(logURL string, limit int64) *fetchError {
	return &fetchError{url: logURL, reason: "response is larger than " +
		strconv.FormatInt(limit, 10) + " bytes"}
}

// failed turns an error of the HTTP client into a *fetchError with a
// reason safe to show.
func (f *fetcher) failed(logURL string, err error) *fetchError {
	var ue *url.Error
	if errors.As(err, &ue) {
		// The client's message repeats the URL; keep only the cause.
		err = ue.Err
	}
	fe := &fetchError{url: logURL, reason: "the fetch failed", err: err}

	var redirect *fetchError
	var addr *addressError
	var timeout interface{ Timeout() bool }
	var dns *net.DNSError
	var op *net.OpError
	switch {
	case errors.As(err, &redirect):
		fe.reason, fe.err = redirect.reason, redirect.err
	case errors.As(err, &addr):
		fe.reason = "the address is not public"
	case errors.Is(err, context.Canceled):
		fe.reason = "the fetch was canceled"
	case errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &timeout) && timeout.Timeout():
		fe.reason = "timed out after " + f.timeout.String()
	case isCertificateError(err):
		fe.reason = "the TLS certificate is not trusted"
	case isTLSError(err):
		fe.reason = "TLS handshake failed"
	case errors.As(err, &dns):
		fe.reason = "the host name could not be resolved"
	case errors.As(err, &op) && op.Op == "dial":
		fe.reason = "the connection failed"
	}
	return fe
}

// isCertificateError reports whether err is a failed verification of the
// server's certificate.
func isCertificateError(err error) bool {
	var verify *tls.CertificateVerificationError
	var authority x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	return errors.As(err, &verify) || errors.As(err, &authority) ||
		errors.As(err, &hostname) || errors.As(err, &invalid)
}

// isTLSError reports whether err is a failed TLS handshake. crypto/tls
// returns many of these as plain errors, recognised by their prefix.
func isTLSError(err error) bool {
	var record tls.RecordHeaderError
	var alert tls.AlertError
	if errors.As(err, &record) || errors.As(err, &alert) {
		return true
	}
	for ; err != nil; err = errors.Unwrap(err) {
		if strings.HasPrefix(err.Error(), "tls: ") {
			return true
		}
	}
	return false
}
