package dcr

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pquerna/cachecontrol/cacheobject"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

// The checks of draft-ietf-oauth-client-id-metadata-document that need no
// network: whether a client_id may be a Client Identifier URL (its section
// "Client Identifier URL"), whether a fetched Client ID Metadata Document
// may be used ("Client ID Metadata Document" and "Credential and Key
// Material Restrictions"), and for how long ("Metadata Caching"). The
// draft's section numbers move between revisions, so its titles are
// cited. cimd.go fetches, caches and stores; everything here is pure.

// maxCIMDLength bounds a client_id that is a metadata document URL. It is
// the policy's limit on URL-valued members, so that such a client ID fits
// wherever a URL does.
const maxCIMDLength = maxURILength

// cimdScheme is how every Client Identifier URL begins.
const cimdScheme = "https://"

// looksLikeCIMD reports whether the client_id id is meant as a Client
// Identifier URL: it begins with "https://", in any letter case. It is a
// cheap routing test, not validation: enforcement sends such IDs to
// cimdURLProblem, whose answer names what is wrong with them, rather than
// to the store, which would only report an unknown client. The server
// issues no client ID that begins this way (clientdb.NewClientID makes
// hex and base64url characters only), as the draft asks of a server that
// also registers clients ("Supporting Both Pre-Registered and
// Unregistered Clients").
func looksLikeCIMD(id string) bool {
	return len(id) >= len(cimdScheme) &&
		strings.EqualFold(id[:len(cimdScheme)], cimdScheme)
}

// cimdURLProblem returns "" when raw may be a Client Identifier URL as
// section "Client Identifier URL" of
// draft-ietf-oauth-client-id-metadata-document defines it, or else a
// short reason, safe to show the client, why it may not.
//
// The draft's requirements: the https scheme; no userinfo; a path; no
// "." or ".." path segments; no fragment. A port is allowed, and so is a
// query, which the draft discourages but permits. Beyond the draft:
//
//   - The path must be more than "/". The draft advises against a
//     document at the root of a site, where it competes with the site's
//     own content; a client that puts it there has most likely mistaken
//     its home page for its client_id.
//   - The scheme must be written in lower case, as RFC 3986 section
//     6.2.2.1 normalises it. The ID is compared as a plain string, so
//     "HTTPS://" would name a second client fetched from the same URL;
//     it is far likelier a mistake than a client's intent.
//   - Dot segments are also found percent-encoded ("%2e", "%2E"), with
//     path parameters (";x") cut off, and across encoded slashes and
//     backslashes ("%2f", "%5c"): some servers decode or normalise those
//     before resolving the path, which would serve another path's
//     document under this client_id.
//   - Only characters RFC 3986 allows in a URL, valid percent-encodings,
//     a host that is a DNS name or an IP address literal, and a port from
//     1 to 65535. An ID is displayed to users and compared as a string;
//     anything else would mean different things to different readers.
//   - At most maxCIMDLength bytes.
func cimdURLProblem(raw string) string {
	switch {
	case len(raw) > maxCIMDLength:
		return fmt.Sprintf("the client_id URL must not be longer than %d bytes",
			maxCIMDLength)
	case looksLikeCIMD(raw) && !strings.HasPrefix(raw, cimdScheme):
		return "the client_id URL must begin with https:// in lower case"
	case !strings.HasPrefix(raw, cimdScheme):
		return "the client_id URL must use https"
	case !urlChars(raw):
		return "the client_id URL contains a character not allowed in a URL"
	case strings.Contains(raw, "#"):
		return "the client_id URL must not have a fragment"
	case !validEscapes(raw):
		return "the client_id URL contains an invalid percent-encoding"
	}

	// Cut the URL as RFC 3986 section 3 does: the query begins at the
	// first "?", the authority ends at the first "/" after the scheme.
	rest, _, _ := strings.Cut(raw[len(cimdScheme):], "?")
	authority, path := rest, ""
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		authority, path = rest[:i], rest[i:]
	}
	if strings.Contains(authority, "@") {
		return "the client_id URL must not contain user information"
	}
	if problem := authorityProblem(authority); problem != "" {
		return problem
	}
	if strings.ContainsAny(raw[len(cimdScheme)+len(authority):], "[]") {
		return "the client_id URL contains a character not allowed in a URL"
	}

	switch {
	case path == "":
		return "the client_id URL must have a path"
	case path == "/":
		return "the client_id URL must have a path other than /"
	case hasDotSegment(path):
		return "the client_id URL must not contain . or .. path segments"
	}

	// url.Parse should find nothing left to refuse. Asking it anyway
	// means no URL is accepted that the fetcher could not read.
	if _, err := url.Parse(raw); err != nil {
		return "the client_id is not a valid URL"
	}
	return ""
}

// urlChars reports whether s holds only the characters RFC 3986 section 2
// allows in a URI: unreserved and reserved characters, and "%".
func urlChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-._~:/?#[]@!$&'()*+,;=%", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validEscapes reports whether every "%" in s begins a percent-encoding
// of two hexadecimal digits.
func validEscapes(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			continue
		}
		if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
			return false
		}
		i += 2
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// authorityProblem checks the host and port of a Client Identifier URL,
// its userinfo already refused, and returns what is wrong, or "".
func authorityProblem(authority string) string {
	host, port := authority, ""
	hasPort := false
	if strings.HasPrefix(authority, "[") {
		end := strings.IndexByte(authority, ']')
		if end < 0 {
			return "the client_id URL has an invalid host"
		}
		host = authority[:end+1]
		after := authority[end+1:]
		if after != "" {
			if after[0] != ':' {
				return "the client_id URL has an invalid host"
			}
			port, hasPort = after[1:], true
		}
	} else if i := strings.LastIndexByte(authority, ':'); i >= 0 {
		host, port, hasPort = authority[:i], authority[i+1:], true
	}

	switch {
	case host == "":
		return "the client_id URL has no host"
	case !validHost(host):
		return "the client_id URL has an invalid host"
	case hasPort && !validPort(port):
		return "the client_id URL has an invalid port"
	}
	return ""
}

// validHost reports whether host is a DNS name of letters, digits and
// hyphens in dot-separated labels, or an IPv6 literal in brackets without
// a zone. IPv4 addresses have the shape of a DNS name. Which addresses
// may be fetched is the fetcher's concern, not this check's.
func validHost(host string) bool {
	if strings.HasPrefix(host, "[") {
		addr, err := netip.ParseAddr(strings.Trim(host, "[]"))
		return err == nil && addr.Is6() && addr.Zone() == "" &&
			strings.Count(host, "[") == 1 && strings.HasSuffix(host, "]")
	}
	if len(host) > 253 {
		return false
	}
	for label := range strings.SplitSeq(host, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' ||
				'0' <= c && c <= '9' || c == '-'
			if !ok {
				return false
			}
		}
	}
	return true
}

// validPort reports whether port is a decimal number from 1 to 65535.
func validPort(port string) bool {
	if port == "" || strings.Trim(port, "0123456789") != "" {
		return false
	}
	n, err := strconv.ParseUint(port, 10, 16)
	return err == nil && n > 0
}

// hasDotSegment reports whether the path holds a "." or ".." segment,
// literally or once %2e, %2f and %5c are decoded, each segment read
// without its ";" parameters.
func hasDotSegment(path string) bool {
	decoded := path
	for _, r := range []struct{ from, to string }{
		{"%2e", "."}, {"%2E", "."},
		{"%2f", "/"}, {"%2F", "/"},
		{"%5c", "/"}, {"%5C", "/"},
	} {
		decoded = strings.ReplaceAll(decoded, r.from, r.to)
	}
	for seg := range strings.SplitSeq(decoded, "/") {
		seg, _, _ = strings.Cut(seg, ";")
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// privateKeyMembers are the JSON Web Key members (RFC 7518 section 6) that
// hold private or symmetric key material: the private parts of EC, RSA and
// OKP keys, and the key of an "oct" key.
var privateKeyMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

// parseCIMDDocument decodes a Client ID Metadata Document fetched from
// clientID and applies the rules of the sections "Client ID Metadata
// Document" and "Credential and Key Material Restrictions" of
// draft-ietf-oauth-client-id-metadata-document. Every member is decoded
// and type-checked as in a registration request (decodeRequest); then the
// document is refused when:
//
//   - client_id is missing, not a string, or not exactly clientID: the
//     draft requires simple string comparison, so nothing is normalised;
//   - client_secret is present, even as null;
//   - client_secret_expires_at or another value a server issues at
//     registration is present (issuedMembers);
//   - token_endpoint_auth_method is a method with a shared secret;
//   - redirect_uris is missing or empty;
//   - jwks holds a key with private or symmetric key material, or is not
//     an object with a "keys" array of objects without repeated members.
//
// A missing token_endpoint_auth_method becomes "none": with no secret to
// share, the client is public unless it names a key-based method. The
// registration policy still applies to the result; this function only
// enforces what the draft requires of every document.
//
// Errors are 400 invalid_client_metadata with a description safe to show
// the client, without the "client metadata document" prefix the caller
// adds. A software_statement member is dropped unread.
func parseCIMDDocument(body []byte,
	clientID string) (*clientdb.Metadata, *protoError) {
	req, perr := decodeRequest(body)
	if perr != nil {
		// The decoder's words are for a request body.
		if rest, ok := strings.CutPrefix(perr.Description, "request body "); ok {
			perr.Description = "the document " + rest
		}
		return nil, perr
	}

	id := bytes.TrimSpace(req.clientID)
	switch {
	case len(id) == 0 || isNull(id):
		return nil, documentError("cimd_client_id", "client_id is missing")
	case id[0] != '"':
		return nil, documentError("cimd_client_id", "client_id must be a string")
	}
	if got := unquote(id); got != clientID {
		return nil, documentError("cimd_client_id",
			"client_id %q does not equal the URL the document was fetched from",
			truncate(got))
	}

	if req.clientSecret != nil {
		return nil, documentError("cimd_client_secret",
			"client_secret must not be present: there is no secret to share")
	}
	if len(req.issued) > 0 {
		return nil, documentError("cimd_issued",
			"%s must not be present: only a server issues it", req.issued[0])
	}

	m := &req.Metadata
	if perr := checkDocumentMetadata(m); perr != nil {
		return nil, perr
	}
	if m.TokenEndpointAuthMethod == "" {
		m.TokenEndpointAuthMethod = authNone
	}
	return m, nil
}

// checkDocumentMetadata applies the rules of a metadata document that hold
// for its metadata alone: no shared-secret authentication method, at
// least one redirect URI, no private key material. They are checked again
// after the policy modules, which may amend the metadata.
func checkDocumentMetadata(m *clientdb.Metadata) *protoError {
	if slices.Contains(secretMethods, m.TokenEndpointAuthMethod) {
		return documentError("cimd_auth_method",
			"token_endpoint_auth_method %q needs a shared secret, "+
				"which a metadata document cannot have",
			m.TokenEndpointAuthMethod)
	}
	if len(m.RedirectURIs) == 0 {
		return documentError("cimd_redirect_uris",
			"redirect_uris must list at least one redirect URI")
	}
	if m.JWKS != nil {
		return checkPublicJWKS(m.JWKS)
	}
	return nil
}

// checkPublicJWKS refuses a JWK Set that holds private or symmetric key
// material. JSON parsers disagree on names given twice and on letter
// case: encoding/json, which go-jose uses, matches "Keys", or "d" as
// "D", to its fields, with Unicode case folding. So names are compared
// folded, and a set with two members for "keys" is refused: neither may
// hide a key from this check that another reader then sees.
func checkPublicJWKS(jwks json.RawMessage) *protoError {
	set, perr := splitObject(jwks)
	if perr != nil {
		return documentError("cimd_jwks",
			"jwks must be a JSON Web Key Set without repeated members")
	}
	set = slices.DeleteFunc(set, func(m member) bool {
		return !strings.EqualFold(m.name, "keys")
	})
	switch {
	case len(set) == 0:
		return nil
	case len(set) > 1:
		return documentError("cimd_jwks",
			"jwks must be a JSON Web Key Set without repeated members")
	}

	var keys []json.RawMessage
	if err := json.Unmarshal(set[0].value, &keys); err != nil {
		return documentError("cimd_jwks", "jwks keys must be an array")
	}
	for n, raw := range keys {
		key, perr := splitObject(raw)
		if perr != nil {
			return documentError("cimd_jwks",
				"jwks key %d must be an object without repeated members", n)
		}
		for _, mem := range key {
			i := slices.IndexFunc(privateKeyMembers, func(name string) bool {
				return strings.EqualFold(mem.name, name)
			})
			if i >= 0 {
				return documentError("cimd_private_key",
					"jwks key %d holds private or symmetric key material "+
						"(member %q); publish only public keys",
					n, privateKeyMembers[i])
			}
		}
	}
	return nil
}

// documentError returns the 400 invalid_client_metadata refusal of a
// metadata document, for the log under rule.
func documentError(rule, format string, args ...any) *protoError {
	return metadataError(rule, fmt.Sprintf(format, args...))
}

// cimdTTL returns how long a metadata document fetched in resp at now may
// be used before it is fetched again: what its HTTP caching headers allow
// (RFC 9111), clamped to [minTTL, maxTTL] as the draft's section
// "Metadata Caching" permits. When maxTTL is below minTTL, maxTTL wins:
// it bounds how stale a client's metadata can get, which matters more
// than how often the document is fetched.
//
// The server is the document's only user, so it counts as a private
// cache: "private" does not prevent caching and s-maxage is ignored. The
// headers are read with github.com/pquerna/cachecontrol, with these
// choices on top:
//
//   - no-store, no-cache (qualified or not), max-age=0, an Expires in the
//     past or one that is not a date (RFC 9111 section 5.3: "0" is
//     expired), and a Cache-Control the library cannot parse all mean
//     minTTL. So does any reason the library gives against caching, such
//     as a request with an Authorization header.
//   - max-age wins over Expires; Expires counts from the response's
//     Date, or from now without one.
//   - The document's age is subtracted (RFC 9111 section 4.2.3): the Age
//     header, or the time since Date, whichever is greater. A document a
//     CDN has held for most of its max-age is soon due again.
//   - Without explicit freshness, a Last-Modified gives the library's
//     heuristic, a tenth of the time since then, at most a day. With no
//     caching headers at all the result is minTTL: a document that says
//     nothing is checked again as often as the server allows.
//
// A nil resp means minTTL. A nil resp.Request, or one without a method,
// is taken for a plain GET, which is what the fetcher makes.
func cimdTTL(resp *http.Response, now time.Time,
	minTTL, maxTTL time.Duration) time.Duration {
	return min(max(cimdFreshness(resp, now), minTTL), maxTTL)
}

// cimdFreshness returns how much longer resp stays fresh at now, or 0.
func cimdFreshness(resp *http.Response, now time.Time) time.Duration {
	if resp == nil {
		return 0
	}
	method, reqHeader := http.MethodGet, http.Header{}
	if resp.Request != nil {
		if resp.Request.Method != "" {
			method = resp.Request.Method
		}
		if resp.Request.Header != nil {
			reqHeader = resp.Request.Header
		}
	}

	// A directive may come on any of several Cache-Control lines.
	respDir, err := cacheobject.ParseResponseCacheControl(
		strings.Join(resp.Header.Values("Cache-Control"), ", "))
	if err != nil || respDir.NoCachePresent {
		return 0
	}
	reqDir, err := cacheobject.ParseRequestCacheControl(
		strings.Join(reqHeader.Values("Cache-Control"), ", "))
	if err != nil {
		return 0
	}

	var expires, date, modified time.Time
	if v := resp.Header.Get("Expires"); v != "" {
		if expires, err = http.ParseTime(v); err != nil {
			return 0
		}
	}
	// A Date or Last-Modified that is not a date is only left unused.
	date, _ = http.ParseTime(resp.Header.Get("Date"))
	modified, _ = http.ParseTime(resp.Header.Get("Last-Modified"))

	obj := &cacheobject.Object{
		CacheIsPrivate:         true,
		RespDirectives:         respDir,
		RespHeaders:            resp.Header,
		RespStatusCode:         resp.StatusCode,
		RespExpiresHeader:      expires.UTC(),
		RespDateHeader:         date.UTC(),
		RespLastModifiedHeader: modified.UTC(),
		ReqDirectives:          reqDir,
		ReqHeaders:             reqHeader,
		ReqMethod:              method,
		NowUTC:                 now.UTC(),
	}
	var rv cacheobject.ObjectResults
	cacheobject.CachableObject(obj, &rv)
	if rv.OutErr != nil || len(rv.OutReasons) > 0 {
		return 0
	}
	cacheobject.ExpirationObject(obj, &rv)
	if rv.OutErr != nil || rv.OutExpirationTime.IsZero() {
		return 0
	}
	return max(rv.OutExpirationTime.Sub(now)-documentAge(resp.Header, date, now), 0)
}

// documentAge is the age of a response at now as RFC 9111 section 4.2.3
// estimates it without the request time: the greater of its Age header
// and the time since its Date. An Age that is not a number is ignored;
// one too large to read is taken as 2^31 seconds, as section 1.2.2 asks.
func documentAge(h http.Header, date, now time.Time) time.Duration {
	var age time.Duration
	if !date.IsZero() {
		age = max(now.Sub(date), 0)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(h.Get("Age")), 10, 31)
	if errors.Is(err, strconv.ErrRange) {
		n, err = math.MaxInt32+1, nil
	}
	if err == nil {
		age = max(age, time.Duration(n)*time.Second)
	}
	return age
}
