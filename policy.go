package dcr

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-jose/go-jose/v4"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

// Grant types named by RFC 6749, RFC 7522, RFC 7523 and RFC 8628.
const (
	grantAuthorizationCode = "authorization_code"
	grantImplicit          = "implicit"
	grantRefreshToken      = "refresh_token"
	grantPassword          = "password"
	grantClientCredentials = "client_credentials"
	grantJWTBearer         = "urn:ietf:params:oauth:grant-type:jwt-bearer"
	grantSAML2Bearer       = "urn:ietf:params:oauth:grant-type:saml2-bearer"
)

// Token endpoint authentication methods of RFC 7591 section 2 and OpenID
// Connect Core section 9.
const (
	authNone              = "none"
	authClientSecretBasic = "client_secret_basic"
	authClientSecretPost  = "client_secret_post"
	authClientSecretJWT   = "client_secret_jwt"
	authPrivateKeyJWT     = "private_key_jwt"
)

// Defaults of the policy subdirectives.
var (
	// defaultGrantTypes leaves out the grants RFC 9700 advises against
	// (implicit, password) and those that let a client act without a user
	// (client_credentials, the assertion grants): an operator enables them
	// by name.
	defaultGrantTypes = []string{grantAuthorizationCode, grantRefreshToken}

	defaultAuthMethods = []string{
		authClientSecretBasic, authClientSecretPost, authNone,
	}
)

// Size limits for members of a registration request. Together with the body
// limit they bound the work and storage one request can cause.
const (
	maxURILength    = 2048
	maxStringLength = 1024
	maxListLength   = 32
	maxLocalized    = 32
	maxTagLength    = 35
)

// forbiddenSchemes are never accepted in a redirect URI: they run code or
// read local data in the user agent instead of reaching a client.
var forbiddenSchemes = []string{"javascript", "data", "vbscript", "file", "blob"}

// secretMethods are the authentication methods that use a client secret
// issued by the server.
var secretMethods = []string{
	authClientSecretBasic, authClientSecretPost, authClientSecretJWT,
}

// localizable are the members that may carry a language tag (RFC 7591
// section 2.2); the URL-valued ones are checked as URLs.
var localizable = map[string]bool{
	"client_name": false,
	"client_uri":  true,
	"logo_uri":    true,
	"tos_uri":     true,
	"policy_uri":  true,
}

// policy is the compiled registration policy. It is read-only after
// Provision and safe for concurrent use.
type policy struct {
	grantTypes      []string
	authMethods     []string
	scopes          []string // nil: any scope
	defaultScope    string
	requireHTTPS    bool
	redirectSchemes []string
	redirectHosts   []string // nil: any host
	secretLifetime  time.Duration

	// mcpPreset widens native inference to private-use schemes.
	mcpPreset bool

	// tokenHosts is the allowlist of https redirect hosts of an initial
	// access token, checked as well as redirectHosts; nil: no token
	// restriction.
	tokenHosts []string
}

// presetMCP names the redirect URI rules for MCP clients.
const presetMCP = "mcp"

// narrow returns the policy narrowed by an initial access token's policy,
// or p itself when tp is nil.
func (p *policy) narrow(tp *clientdb.TokenPolicy) *policy {
	if tp == nil {
		return p
	}
	n := *p
	if len(tp.GrantTypes) > 0 {
		n.grantTypes = intersect(p.grantTypes, tp.GrantTypes)
	}
	if len(tp.Scopes) > 0 {
		n.scopes = tp.Scopes
		if p.scopes != nil {
			n.scopes = intersect(p.scopes, tp.Scopes)
		}
		var def []string
		for _, s := range strings.Fields(p.defaultScope) {
			if slices.Contains(n.scopes, s) {
				def = append(def, s)
			}
		}
		n.defaultScope = strings.Join(def, " ")
	}
	if len(tp.RedirectHosts) > 0 {
		n.tokenHosts = lowerAll(tp.RedirectHosts)
	}
	return &n
}

// intersect returns the members of a that b holds too, in a's order,
// never nil.
func intersect(a, b []string) []string {
	out := []string{}
	for _, v := range a {
		if slices.Contains(b, v) {
			out = append(out, v)
		}
	}
	return out
}

// apply checks registration metadata against the policy and fills in the
// defaults, in place. The first rule that fails is returned.
func (p *policy) apply(m *clientdb.Metadata) *protoError {
	if err := p.applyAuthMethod(m); err != nil {
		return err
	}
	if err := p.applyGrantTypes(m); err != nil {
		return err
	}
	if err := p.checkRedirectURIs(m); err != nil {
		return err
	}
	if err := p.applyApplicationType(m); err != nil {
		return err
	}
	if err := p.applyScope(m); err != nil {
		return err
	}
	if err := p.checkKeys(m); err != nil {
		return err
	}
	if err := p.checkDescriptive(m); err != nil {
		return err
	}
	return p.checkOIDC(m)
}

// issuesSecret reports whether a client with this metadata gets a secret.
func issuesSecret(m *clientdb.Metadata) bool {
	return slices.Contains(secretMethods, m.TokenEndpointAuthMethod)
}

func (p *policy) applyAuthMethod(m *clientdb.Metadata) *protoError {
	// RFC 7591's default, unless the operator does not allow it: a client
	// that named no method should not be refused for a method it did not
	// choose.
	if m.TokenEndpointAuthMethod == "" {
		m.TokenEndpointAuthMethod = authClientSecretBasic
		if !slices.Contains(p.authMethods, authClientSecretBasic) {
			m.TokenEndpointAuthMethod = p.authMethods[0]
		}
	}
	if !slices.Contains(p.authMethods, m.TokenEndpointAuthMethod) {
		return metadataError("auth_method_allowed", fmt.Sprintf(
			"token_endpoint_auth_method %q is not allowed; allowed: %s",
			truncate(m.TokenEndpointAuthMethod), strings.Join(p.authMethods, ", ")))
	}
	return nil
}

// applyGrantTypes fills in grant_types and response_types and checks that
// they agree as RFC 7591 section 2.1 lays out. When only one of them is
// given, the other is derived from it: the RFC's fixed defaults would
// contradict, for example, a client_credentials client that names no
// response type.
func (p *policy) applyGrantTypes(m *clientdb.Metadata) *protoError {
	if m.GrantTypes != nil && len(m.GrantTypes) == 0 {
		return metadataError("grant_types_empty", "grant_types must not be an empty list")
	}
	if err := checkList("grant_types", m.GrantTypes, maxStringLength); err != nil {
		return err
	}
	if err := checkList("response_types", m.ResponseTypes, maxStringLength); err != nil {
		return err
	}

	for _, rt := range m.ResponseTypes {
		if !validResponseType(rt) {
			return metadataError("response_type_known", fmt.Sprintf(
				"response type %q is not supported", truncate(rt)))
		}
	}

	switch {
	case m.GrantTypes == nil && m.ResponseTypes == nil:
		m.GrantTypes = []string{grantAuthorizationCode}
		m.ResponseTypes = []string{"code"}
	case m.GrantTypes == nil:
		m.GrantTypes = grantsFor(m.ResponseTypes)
		if len(m.GrantTypes) == 0 {
			return metadataError("grant_types_required",
				"grant_types must be given when response_types names "+
					"no redirect-based response type")
		}
	case m.ResponseTypes == nil:
		m.ResponseTypes = responsesFor(m.GrantTypes)
	}

	for _, g := range m.GrantTypes {
		if !slices.Contains(p.grantTypes, g) {
			return metadataError("grant_type_allowed", fmt.Sprintf(
				"grant type %q is not allowed; allowed: %s",
				truncate(g), strings.Join(p.grantTypes, ", ")))
		}
	}

	// RFC 7591 section 2.1: each response type needs its grant type.
	for _, g := range grantsFor(m.ResponseTypes) {
		if !slices.Contains(m.GrantTypes, g) {
			return metadataError("grant_response_agree", fmt.Sprintf(
				"response_types %q require grant type %q in grant_types",
				m.ResponseTypes, g))
		}
	}
	// And each redirect-based grant type needs its response type.
	if slices.Contains(m.GrantTypes, grantAuthorizationCode) &&
		!slices.Contains(grantsFor(m.ResponseTypes), grantAuthorizationCode) {
		return metadataError("grant_response_agree",
			`grant type "authorization_code" requires response type "code"`)
	}
	if slices.Contains(m.GrantTypes, grantImplicit) &&
		!slices.Contains(grantsFor(m.ResponseTypes), grantImplicit) {
		return metadataError("grant_response_agree",
			`grant type "implicit" requires response type "token" or "id_token"`)
	}

	// A client without credentials cannot act on its own behalf.
	if m.TokenEndpointAuthMethod == authNone &&
		slices.Contains(m.GrantTypes, grantClientCredentials) {
		return metadataError("public_client_credentials",
			`grant type "client_credentials" requires a `+
				`token_endpoint_auth_method other than "none"`)
	}
	return nil
}

// validResponseType reports whether rt is a space-separated set of the
// response type values of RFC 6749 and OpenID Connect Core.
func validResponseType(rt string) bool {
	parts := strings.Split(rt, " ")
	for i, v := range parts {
		switch v {
		case "code", "token", "id_token":
		case "none":
			if len(parts) != 1 {
				return false
			}
		default:
			return false
		}
		if slices.Contains(parts[:i], v) {
			return false
		}
	}
	return true
}

// grantsFor returns the grant types that response types need: "code" needs
// authorization_code, "token" and "id_token" need implicit.
func grantsFor(responseTypes []string) []string {
	var grants []string
	for _, rt := range responseTypes {
		for _, v := range strings.Split(rt, " ") {
			g := ""
			switch v {
			case "code":
				g = grantAuthorizationCode
			case "token", "id_token":
				g = grantImplicit
			}
			if g != "" && !slices.Contains(grants, g) {
				grants = append(grants, g)
			}
		}
	}
	return grants
}

// responsesFor returns the response types that grant types imply; it is
// an empty, non-nil list when no grant type is redirect-based.
func responsesFor(grantTypes []string) []string {
	rts := []string{}
	if slices.Contains(grantTypes, grantAuthorizationCode) {
		rts = append(rts, "code")
	}
	if slices.Contains(grantTypes, grantImplicit) {
		rts = append(rts, "token")
	}
	return rts
}

// redirectBased reports whether any grant type sends the user agent back to
// the client through a redirect URI.
func redirectBased(grantTypes []string) bool {
	return slices.Contains(grantTypes, grantAuthorizationCode) ||
		slices.Contains(grantTypes, grantImplicit)
}

func (p *policy) checkRedirectURIs(m *clientdb.Metadata) *protoError {
	if redirectBased(m.GrantTypes) && len(m.RedirectURIs) == 0 {
		return redirectError("redirect_uri_required", fmt.Sprintf(
			"redirect_uris must hold at least one URI for grant types %q",
			m.GrantTypes))
	}
	if len(m.RedirectURIs) > maxListLength {
		return redirectError("list_length", fmt.Sprintf(
			"redirect_uris holds more than %d URIs", maxListLength))
	}
	for i, u := range m.RedirectURIs {
		if slices.Contains(m.RedirectURIs[:i], u) {
			return redirectError("duplicate_entry", fmt.Sprintf(
				"redirect_uris lists %q more than once", truncate(u)))
		}
		if err := p.checkRedirectURI(u); err != nil {
			return err
		}
	}
	return nil
}

// checkRedirectURI checks one redirect URI: absolute, printable ASCII, no
// fragment or user information, no scheme that runs code in the browser;
// https, or http on a loopback host (RFC 8252 section 7.3) unless https is
// not required; other schemes only if reverse-domain (RFC 8252 section
// 7.1) or allowed by name.
func (p *policy) checkRedirectURI(raw string) *protoError {
	bad := func(rule, why string) *protoError {
		return redirectError(rule, fmt.Sprintf(
			"redirect URI %q %s", truncate(raw), why))
	}

	if len(raw) > maxURILength {
		return bad("string_length", fmt.Sprintf("is longer than %d bytes", maxURILength))
	}
	if !printableASCII(raw) {
		return bad("redirect_uri_chars",
			"contains spaces, control or non-ASCII characters")
	}
	if strings.Contains(raw, "#") {
		return bad("redirect_uri_fragment", "must not contain a fragment")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return bad("redirect_uri_absolute", "is not an absolute URI")
	}
	if u.User != nil {
		return bad("redirect_uri_userinfo", "must not contain user information")
	}
	if slices.Contains(forbiddenSchemes, u.Scheme) {
		return bad("redirect_uri_scheme", fmt.Sprintf(
			"uses the forbidden scheme %q", u.Scheme))
	}

	switch u.Scheme {
	case "https":
		if u.Host == "" || u.Hostname() == "" {
			return bad("redirect_uri_absolute", "has no host")
		}
		if err := p.checkRedirectHost(u.Hostname(), bad); err != nil {
			return err
		}
	case "http":
		if u.Host == "" || u.Hostname() == "" {
			return bad("redirect_uri_absolute", "has no host")
		}
		if isLoopback(u.Hostname()) {
			break
		}
		if p.requireHTTPS {
			return bad("redirect_uri_https",
				"must use https; http is allowed only on loopback hosts")
		}
		if err := p.checkRedirectHost(u.Hostname(), bad); err != nil {
			return err
		}
	default:
		if !strings.Contains(u.Scheme, ".") &&
			!slices.Contains(p.redirectSchemes, u.Scheme) {
			return bad("redirect_uri_scheme", fmt.Sprintf(
				"uses the private-use scheme %q, which is neither "+
					"reverse-domain nor allowed", u.Scheme))
		}
	}
	return nil
}

// checkRedirectHost checks the host of an http(s) redirect URI that is
// not on the local machine against the server's and the initial access
// token's allowlists.
func (p *policy) checkRedirectHost(host string,
	bad func(rule, why string) *protoError) *protoError {
	if len(p.redirectHosts) > 0 && !hostAllowed(host, p.redirectHosts) {
		return bad("redirect_uri_host", "is on a host that is not allowed")
	}
	if len(p.tokenHosts) > 0 && !hostAllowed(host, p.tokenHosts) {
		return bad("redirect_uri_host",
			"is on a host that the initial access token does not allow")
	}
	return nil
}

// hostAllowed reports whether host matches one of the patterns: a host
// name, or "*.domain" for any subdomain of domain. Names compare without
// case and without a trailing dot.
func hostAllowed(host string, patterns []string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	for _, p := range patterns {
		if suffix, ok := strings.CutPrefix(p, "*."); ok {
			if strings.HasSuffix(host, "."+suffix) {
				return true
			}
		} else if host == p {
			return true
		}
	}
	return false
}

// validHostPattern reports whether p is a host name or "*." and a host
// name, in the letters, digits, hyphens and dots of DNS names.
func validHostPattern(p string) bool {
	p = strings.TrimPrefix(p, "*.")
	if p == "" || len(p) > 253 || strings.HasPrefix(p, ".") || strings.HasSuffix(p, ".") {
		return false
	}
	for _, c := range p {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '.') {
			return false
		}
	}
	return !strings.Contains(p, "..")
}

// isLoopback reports whether host names the local machine: "localhost" or
// a loopback IP address.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (p *policy) applyScope(m *clientdb.Metadata) *protoError {
	if m.Scope == "" {
		m.Scope = p.defaultScope
		return nil
	}
	if len(m.Scope) > maxStringLength {
		return metadataError("string_length", fmt.Sprintf(
			"scope is longer than %d bytes", maxStringLength))
	}
	tokens := strings.Split(m.Scope, " ")
	for i, s := range tokens {
		if !validScopeToken(s) {
			return metadataError("scope_syntax", fmt.Sprintf(
				"scope %q is not a space-separated list of scope tokens",
				truncate(m.Scope)))
		}
		if slices.Contains(tokens[:i], s) {
			return metadataError("duplicate_entry", fmt.Sprintf(
				"scope lists %q more than once", s))
		}
		if p.scopes != nil && !slices.Contains(p.scopes, s) {
			return metadataError("scope_allowed", fmt.Sprintf(
				"scope %q is not allowed; allowed: %s",
				s, strings.Join(p.scopes, " ")))
		}
	}
	return nil
}

// validScopeToken reports whether s is a scope-token of RFC 6749 section
// 3.3: one or more of %x21 / %x23-5B / %x5D-7E.
func validScopeToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

func (p *policy) checkKeys(m *clientdb.Metadata) *protoError {
	if m.JWKSURI != "" && m.JWKS != nil {
		return metadataError("jwks_exclusive",
			"jwks and jwks_uri must not both be present")
	}
	if m.TokenEndpointAuthMethod == authPrivateKeyJWT &&
		m.JWKSURI == "" && m.JWKS == nil {
		return metadataError("jwks_required",
			`token_endpoint_auth_method "private_key_jwt" requires jwks or jwks_uri`)
	}
	if m.JWKSURI != "" {
		if err := p.checkURL("jwks_uri", m.JWKSURI, true); err != nil {
			return err
		}
	}
	if m.JWKS != nil {
		var set jose.JSONWebKeySet
		if err := json.Unmarshal(m.JWKS, &set); err != nil {
			return metadataError("jwks_valid",
				"jwks is not a valid JSON Web Key Set")
		}
		if len(set.Keys) == 0 {
			return metadataError("jwks_valid", "jwks holds no keys")
		}
		if len(set.Keys) > maxListLength {
			return metadataError("list_length", fmt.Sprintf(
				"jwks holds more than %d keys", maxListLength))
		}
		for i, k := range set.Keys {
			if !k.Valid() || !k.IsPublic() {
				return metadataError("jwks_public", fmt.Sprintf(
					"jwks key %d is not a valid public key", i))
			}
		}
	}
	return nil
}

// checkDescriptive checks the human-readable and informational members.
func (p *policy) checkDescriptive(m *clientdb.Metadata) *protoError {
	for _, f := range []struct{ name, value string }{
		{"client_name", m.ClientName},
		{"software_id", m.SoftwareID},
		{"software_version", m.SoftwareVersion},
	} {
		if err := checkText(f.name, f.value); err != nil {
			return err
		}
	}
	for _, f := range []struct{ name, value string }{
		{"client_uri", m.ClientURI},
		{"logo_uri", m.LogoURI},
		{"tos_uri", m.TOSURI},
		{"policy_uri", m.PolicyURI},
	} {
		if f.value == "" {
			continue
		}
		if err := p.checkURL(f.name, f.value, false); err != nil {
			return err
		}
	}

	if err := checkList("contacts", m.Contacts, maxStringLength); err != nil {
		return err
	}
	for _, c := range m.Contacts {
		if err := checkText("contacts", c); err != nil {
			return err
		}
	}
	if len(m.Contacts) == 0 {
		m.Contacts = nil
	}

	if len(m.Localized) > maxLocalized {
		return metadataError("list_length", fmt.Sprintf(
			"more than %d language-tagged members", maxLocalized))
	}
	for name, v := range m.Localized {
		base, _, _ := strings.Cut(name, "#")
		if localizable[base] {
			if err := p.checkURL(name, v, false); err != nil {
				return err
			}
		} else if err := checkText(name, v); err != nil {
			return err
		}
	}
	return nil
}

// checkURL checks a URL-valued member: absolute http or https with a host.
// With strict, the rule for redirect URIs applies: https, or http on a
// loopback host, unless https is not required.
func (p *policy) checkURL(name, raw string, strict bool) *protoError {
	bad := func(rule, why string) *protoError {
		return metadataError(rule, fmt.Sprintf("%s %q %s", name, truncate(raw), why))
	}
	if len(raw) > maxURILength {
		return bad("string_length", fmt.Sprintf("is longer than %d bytes", maxURILength))
	}
	if !printableASCII(raw) {
		return bad("url_chars", "contains spaces, control or non-ASCII characters")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") ||
		u.Hostname() == "" {
		return bad("url_absolute", "is not an absolute http or https URL")
	}
	if u.User != nil {
		return bad("url_userinfo", "must not contain user information")
	}
	if strict && p.requireHTTPS && u.Scheme == "http" && !isLoopback(u.Hostname()) {
		return bad("url_https", "must use https")
	}
	return nil
}

// checkText checks a free-text member: bounded length, no control
// characters, and none of the bidirectional formatting or line separator
// characters that could disguise a name on a consent screen. Invalid UTF-8
// never gets this far.
func checkText(name, v string) *protoError {
	if len(v) > maxStringLength {
		return metadataError("string_length", fmt.Sprintf(
			"%s is longer than %d bytes", name, maxStringLength))
	}
	for _, r := range v {
		if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) ||
			unicode.In(r, unicode.Zl, unicode.Zp) {
			return metadataError("text_chars", fmt.Sprintf(
				"%s contains control or formatting characters", name))
		}
	}
	return nil
}

// checkList checks the length of a list and that no entry repeats.
func checkList(name string, list []string, maxEntry int) *protoError {
	if len(list) > maxListLength {
		return metadataError("list_length", fmt.Sprintf(
			"%s holds more than %d entries", name, maxListLength))
	}
	for i, v := range list {
		if len(v) > maxEntry {
			return metadataError("string_length", fmt.Sprintf(
				"an entry of %s is longer than %d bytes", name, maxEntry))
		}
		if slices.Contains(list[:i], v) {
			return metadataError("duplicate_entry", fmt.Sprintf(
				"%s lists %q more than once", name, truncate(v)))
		}
	}
	return nil
}

// printableASCII reports whether s holds only printable ASCII characters
// other than space.
func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= 0x20 || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// truncate shortens a client-supplied value for an error description, so
// that an answer never echoes a large input.
func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
