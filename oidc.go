package dcr

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

// Values of application_type (OpenID Connect Dynamic Client Registration
// 1.0, section 2).
const (
	appWeb    = "web"
	appNative = "native"
)

// JOSE algorithm names a client may register (RFC 7518, RFC 8037). RSA1_5
// and the password-based key algorithms are left out: the first is
// deprecated for its padding oracle, the second has no use between a
// client and a server.
var (
	jwsAlgs = []string{
		"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
		"ES256", "ES384", "ES512", "EdDSA",
		"HS256", "HS384", "HS512",
	}
	jweAlgs = []string{
		"RSA-OAEP", "RSA-OAEP-256",
		"ECDH-ES", "ECDH-ES+A128KW", "ECDH-ES+A192KW", "ECDH-ES+A256KW",
		"A128KW", "A192KW", "A256KW",
		"A128GCMKW", "A192GCMKW", "A256GCMKW", "dir",
	}
	jweEncs = []string{
		"A128CBC-HS256", "A192CBC-HS384", "A256CBC-HS512",
		"A128GCM", "A192GCM", "A256GCM",
	}
)

// defaultJWEEnc is the content encryption OpenID Connect registers when a
// key algorithm is given without one.
const defaultJWEEnc = "A128CBC-HS256"

// maxMaxAge bounds default_max_age, in seconds: ten years.
const maxMaxAge = 10 * 365 * 24 * 3600

// decodeOIDCMember decodes a member of OpenID Connect Dynamic Client
// Registration 1.0 into m. It reports false for any other name.
func decodeOIDCMember(m *clientdb.Metadata, name string,
	raw json.RawMessage) (bool, *protoError) {
	var err *protoError
	if p := oidcString(m, name); p != nil {
		*p, err = decodeString(name, raw)
		return true, err
	}
	if p := oidcList(m, name); p != nil {
		*p, err = decodeList(name, raw)
		return true, err
	}
	if p := oidcBool(m, name); p != nil {
		*p, err = decodeBool(name, raw)
		return true, err
	}
	if name == "default_max_age" {
		m.DefaultMaxAge, err = decodeInt(name, raw)
		return true, err
	}
	return false, nil
}

func oidcString(m *clientdb.Metadata, name string) *string {
	switch name {
	case "application_type":
		return &m.ApplicationType
	case "sector_identifier_uri":
		return &m.SectorIdentifierURI
	case "subject_type":
		return &m.SubjectType
	case "id_token_signed_response_alg":
		return &m.IDTokenSignedResponseAlg
	case "id_token_encrypted_response_alg":
		return &m.IDTokenEncryptedResponseAlg
	case "id_token_encrypted_response_enc":
		return &m.IDTokenEncryptedResponseEnc
	case "userinfo_signed_response_alg":
		return &m.UserinfoSignedResponseAlg
	case "userinfo_encrypted_response_alg":
		return &m.UserinfoEncryptedResponseAlg
	case "userinfo_encrypted_response_enc":
		return &m.UserinfoEncryptedResponseEnc
	case "request_object_signing_alg":
		return &m.RequestObjectSigningAlg
	case "request_object_encryption_alg":
		return &m.RequestObjectEncryptionAlg
	case "request_object_encryption_enc":
		return &m.RequestObjectEncryptionEnc
	case "token_endpoint_auth_signing_alg":
		return &m.TokenEndpointAuthSigningAlg
	case "initiate_login_uri":
		return &m.InitiateLoginURI
	case "frontchannel_logout_uri":
		return &m.FrontchannelLogoutURI
	case "backchannel_logout_uri":
		return &m.BackchannelLogoutURI
	}
	return nil
}

func oidcList(m *clientdb.Metadata, name string) *[]string {
	switch name {
	case "default_acr_values":
		return &m.DefaultACRValues
	case "request_uris":
		return &m.RequestURIs
	case "post_logout_redirect_uris":
		return &m.PostLogoutRedirectURIs
	}
	return nil
}

func oidcBool(m *clientdb.Metadata, name string) **bool {
	switch name {
	case "require_auth_time":
		return &m.RequireAuthTime
	case "frontchannel_logout_session_required":
		return &m.FrontchannelLogoutSessionRequired
	case "backchannel_logout_session_required":
		return &m.BackchannelLogoutSessionRequired
	}
	return nil
}

// applyApplicationType checks application_type and the redirect URIs
// against it, and infers "native" when the type is omitted and the
// redirect URIs are all a native app's. It runs after the redirect URIs
// passed their general checks.
//
// An omitted type is not read as OpenID Connect's default "web": plain
// OAuth clients send no type and often mix a loopback URI with an https
// one, which the web rules would refuse.
func (p *policy) applyApplicationType(m *clientdb.Metadata) *protoError {
	switch m.ApplicationType {
	case "":
		// The inferred type must hold for every URI, or the client could
		// not send its own metadata back in an update.
		if p.inferNative(m.RedirectURIs) &&
			!slices.ContainsFunc(m.PostLogoutRedirectURIs, func(u string) bool {
				return checkAppTypeURI(appNative, "post_logout_redirect_uris", u) != nil
			}) {
			m.ApplicationType = appNative
		}
		return nil
	case appWeb, appNative:
	default:
		return metadataError("application_type_known", fmt.Sprintf(
			`application_type %q is not "web" or "native"`,
			truncate(m.ApplicationType)))
	}

	for _, list := range []struct {
		name string
		uris []string
	}{
		{"redirect_uris", m.RedirectURIs},
		{"post_logout_redirect_uris", m.PostLogoutRedirectURIs},
	} {
		for _, raw := range list.uris {
			if err := checkAppTypeURI(m.ApplicationType, list.name, raw); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkAppTypeURI checks one redirect URI of an already valid form
// against the rules of its application type: a web client's are https and
// not on the local machine; a native app's use http on a loopback host or
// a private-use scheme (RFC 8252 section 7).
func checkAppTypeURI(appType, list, raw string) *protoError {
	u, err := url.Parse(raw)
	if err != nil {
		perr := redirectError("redirect_uri_absolute", fmt.Sprintf(
			"%s: %q is not an absolute URI", list, truncate(raw)))
		if list != "redirect_uris" {
			perr.Code = codeInvalidClientMetadata
		}
		return perr
	}
	loopback := isLoopback(u.Hostname())
	var why string
	switch appType {
	case appWeb:
		if u.Scheme != "https" || loopback {
			why = `must use https on a host other than the local machine ` +
				`for application_type "web"`
		}
	case appNative:
		if u.Scheme == "https" || (u.Scheme == "http" && !loopback) {
			why = `must use http on a loopback host or a private-use scheme ` +
				`for application_type "native"`
		}
	}
	if why == "" {
		return nil
	}
	perr := redirectError("redirect_uri_"+appType, fmt.Sprintf(
		"%s: %q %s", list, truncate(raw), why))
	if list != "redirect_uris" {
		perr.Code = codeInvalidClientMetadata
	}
	return perr
}

// inferNative reports whether every redirect URI is one only a native
// app uses: http on a loopback host and, with the mcp preset, a private-use
// scheme as well.
func (p *policy) inferNative(uris []string) bool {
	if len(uris) == 0 {
		return false
	}
	for _, raw := range uris {
		u, err := url.Parse(raw)
		if err != nil {
			return false
		}
		switch {
		case u.Scheme == "http" && isLoopback(u.Hostname()):
		case p.mcpPreset && u.Scheme != "http" && u.Scheme != "https":
		default:
			return false
		}
	}
	return true
}

// checkOIDC checks the remaining OpenID Connect metadata and fills in the
// content encryption defaults.
func (p *policy) checkOIDC(m *clientdb.Metadata) *protoError {
	switch m.SubjectType {
	case "", "public", "pairwise":
	default:
		return metadataError("subject_type_known", fmt.Sprintf(
			`subject_type %q is not "public" or "pairwise"`, truncate(m.SubjectType)))
	}
	if err := checkSigningAlgs(m); err != nil {
		return err
	}
	for _, e := range []struct {
		name     string
		alg, enc *string
	}{
		{"id_token_encrypted_response", &m.IDTokenEncryptedResponseAlg,
			&m.IDTokenEncryptedResponseEnc},
		{"userinfo_encrypted_response", &m.UserinfoEncryptedResponseAlg,
			&m.UserinfoEncryptedResponseEnc},
		{"request_object_encryption", &m.RequestObjectEncryptionAlg,
			&m.RequestObjectEncryptionEnc},
	} {
		if err := applyEncryption(e.name, e.alg, e.enc); err != nil {
			return err
		}
	}

	if m.DefaultMaxAge != nil && *m.DefaultMaxAge > maxMaxAge {
		return metadataError("default_max_age", fmt.Sprintf(
			"default_max_age is larger than %d seconds", maxMaxAge))
	}
	if err := checkList("default_acr_values", m.DefaultACRValues,
		maxStringLength); err != nil {
		return err
	}
	for _, v := range m.DefaultACRValues {
		if !validScopeToken(v) {
			return metadataError("acr_syntax", fmt.Sprintf(
				"default_acr_values entry %q is not a single printable word",
				truncate(v)))
		}
	}
	return p.checkOIDCURIs(m)
}

// checkSigningAlgs checks the JWS algorithms. "none" is accepted where
// OpenID Connect allows it: for request objects, and for ID tokens of a
// client that never receives one from the authorization endpoint.
func checkSigningAlgs(m *clientdb.Metadata) *protoError {
	idTokenAtAuthorize := slices.ContainsFunc(m.ResponseTypes, func(rt string) bool {
		return slices.Contains(strings.Split(rt, " "), "id_token")
	})
	for _, a := range []struct {
		name, value string
		none        bool
	}{
		{"id_token_signed_response_alg", m.IDTokenSignedResponseAlg, !idTokenAtAuthorize},
		{"userinfo_signed_response_alg", m.UserinfoSignedResponseAlg, false},
		{"request_object_signing_alg", m.RequestObjectSigningAlg, true},
		{"token_endpoint_auth_signing_alg", m.TokenEndpointAuthSigningAlg, false},
	} {
		if a.value == "" || slices.Contains(jwsAlgs, a.value) || (a.none && a.value == "none") {
			continue
		}
		return metadataError("jws_alg_known", fmt.Sprintf(
			"%s %q is not an accepted JWS algorithm", a.name, truncate(a.value)))
	}

	// A shared-key algorithm signs with the client secret, an asymmetric
	// one with the client's private key: each fits one method only.
	alg := m.TokenEndpointAuthSigningAlg
	hmac := strings.HasPrefix(alg, "HS")
	switch {
	case alg == "":
	case m.TokenEndpointAuthMethod == authClientSecretJWT && !hmac,
		m.TokenEndpointAuthMethod == authPrivateKeyJWT && hmac:
		return metadataError("auth_signing_alg", fmt.Sprintf(
			"token_endpoint_auth_signing_alg %q does not fit "+
				"token_endpoint_auth_method %q", alg, m.TokenEndpointAuthMethod))
	}
	return nil
}

// applyEncryption checks a pair of JWE members and fills in the default
// content encryption: an enc needs its alg (OpenID Connect Dynamic Client
// Registration 1.0, section 2).
func applyEncryption(name string, alg, enc *string) *protoError {
	if *alg == "" {
		if *enc != "" {
			return metadataError("jwe_alg_required", fmt.Sprintf(
				"%s_enc requires %s_alg", name, name))
		}
		return nil
	}
	if !slices.Contains(jweAlgs, *alg) {
		return metadataError("jwe_alg_known", fmt.Sprintf(
			"%s_alg %q is not an accepted JWE algorithm", name, truncate(*alg)))
	}
	if *enc == "" {
		*enc = defaultJWEEnc
	}
	if !slices.Contains(jweEncs, *enc) {
		return metadataError("jwe_enc_known", fmt.Sprintf(
			"%s_enc %q is not an accepted JWE content encryption", name, truncate(*enc)))
	}
	return nil
}

// checkOIDCURIs checks the URL-valued OpenID Connect members.
func (p *policy) checkOIDCURIs(m *clientdb.Metadata) *protoError {
	for _, f := range []struct {
		name, value string
		https       bool
	}{
		{"sector_identifier_uri", m.SectorIdentifierURI, true},
		{"initiate_login_uri", m.InitiateLoginURI, true},
		{"frontchannel_logout_uri", m.FrontchannelLogoutURI, false},
		{"backchannel_logout_uri", m.BackchannelLogoutURI, false},
	} {
		if f.value == "" {
			continue
		}
		if err := p.checkURL(f.name, f.value, true); err != nil {
			return err
		}
		if f.https && !isHTTPS(f.value) {
			return metadataError("url_https", fmt.Sprintf(
				"%s %q must use https", f.name, truncate(f.value)))
		}
		if strings.Contains(f.value, "#") {
			return metadataError("url_fragment", fmt.Sprintf(
				"%s %q must not contain a fragment", f.name, truncate(f.value)))
		}
	}
	if err := checkFrontchannelOrigin(m); err != nil {
		return err
	}

	// A request_uri may carry a fragment, which OpenID Connect uses for
	// a hash of the request object's contents.
	if err := checkList("request_uris", m.RequestURIs, maxURILength); err != nil {
		return err
	}
	for _, u := range m.RequestURIs {
		if err := p.checkURL("request_uris entry", u, true); err != nil {
			return err
		}
		if !isHTTPS(u) {
			return metadataError("url_https", fmt.Sprintf(
				"request_uris entry %q must use https", truncate(u)))
		}
	}

	if err := checkList("post_logout_redirect_uris", m.PostLogoutRedirectURIs,
		maxURILength); err != nil {
		return err
	}
	for _, u := range m.PostLogoutRedirectURIs {
		if err := p.checkRedirectURI(u); err != nil {
			err.Code = codeInvalidClientMetadata
			err.Description = "post_logout_redirect_uris: " + err.Description
			return err
		}
	}

	// OpenID Connect Core section 8.1: with several redirect hosts, the
	// pairwise sector cannot be told from the redirect URIs.
	if m.SubjectType == "pairwise" && m.SectorIdentifierURI == "" &&
		len(redirectHosts(m.RedirectURIs)) > 1 {
		return metadataError("sector_identifier_required",
			`subject_type "pairwise" with redirect URIs on several hosts `+
				"requires sector_identifier_uri")
	}
	return nil
}

// checkFrontchannelOrigin checks that the front-channel logout URI has the
// scheme, host and port of a redirect URI, as OpenID Connect Front-Channel
// Logout 1.0 section 2 requires.
func checkFrontchannelOrigin(m *clientdb.Metadata) *protoError {
	if m.FrontchannelLogoutURI == "" {
		return nil
	}
	want := origin(m.FrontchannelLogoutURI)
	for _, r := range m.RedirectURIs {
		if origin(r) == want {
			return nil
		}
	}
	return metadataError("frontchannel_origin",
		"frontchannel_logout_uri must have the scheme, host and port of a redirect URI")
}

// origin returns the scheme, host and port of a URL, in lower case and
// with the scheme's default port made explicit.
func origin(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[strings.ToLower(u.Scheme)]
	}
	return strings.ToLower(u.Scheme + "://" + u.Hostname() + ":" + port)
}

// isHTTPS reports whether raw parses as a URL with the https scheme, in
// any case.
func isHTTPS(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && strings.EqualFold(u.Scheme, "https")
}

// redirectHosts returns the distinct hosts of the URIs, in lower case.
func redirectHosts(uris []string) []string {
	var hosts []string
	for _, raw := range uris {
		u, err := url.Parse(raw)
		if err != nil {
			continue
		}
		h := strings.ToLower(u.Hostname())
		if !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	return hosts
}
