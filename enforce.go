package dcr

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/caddy-dcr/caddy-dcr/clientdb"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Enforce names the backend's endpoints at which the handler holds
// registered clients to their registration.
type Enforce struct {
	// Authorize is the path of the backend's authorization endpoint.
	// Requests there from registered clients must use a registered
	// redirect URI and response type, and public clients must use PKCE
	// with S256. Default: empty, not checked.
	Authorize string `json:"authorize,omitempty"`

	// Token is the path of the backend's token endpoint. Requests there
	// from registered clients must authenticate as registered and use a
	// registered grant type. Default: empty, not checked.
	Token string `json:"token,omitempty"`

	// RegisteredOnly refuses client IDs the store does not know at both
	// endpoints. Default: false, so that clients the backend already had
	// keep working.
	RegisteredOnly bool `json:"registered_only,omitempty"`

	// ClientIDHeader carries the checked client ID to the backend.
	// Default: "X-DCR-Client-ID".
	ClientIDHeader string `json:"client_id_header,omitempty"`

	// ClientNameHeader carries the client's registered name. Default:
	// "X-DCR-Client-Name".
	ClientNameHeader string `json:"client_name_header,omitempty"`

	// ClientTypeHeader carries "confidential" or "public". Default:
	// "X-DCR-Client-Type".
	ClientTypeHeader string `json:"client_type_header,omitempty"`
}

// provision fills in the header names.
func (e *Enforce) provision() {
	if e.ClientIDHeader == "" {
		e.ClientIDHeader = "X-DCR-Client-ID"
	}
	if e.ClientNameHeader == "" {
		e.ClientNameHeader = "X-DCR-Client-Name"
	}
	if e.ClientTypeHeader == "" {
		e.ClientTypeHeader = "X-DCR-Client-Type"
	}
}

// maxFormBody bounds the form bodies read at the enforced endpoints.
const maxFormBody = 64 << 10

// Errors of RFC 6749 sections 4.1.2.1 and 5.2 used by enforcement.
const (
	codeInvalidClient      = "invalid_client"
	codeUnauthorizedClient = "unauthorized_client"
)

// enforceAuthorize checks an authorization request (RFC 6749 section
// 4.1.1) of a registered client and passes it on with the client's
// identity. It never redirects on a violation: the redirect URI may be the
// attacker's.
func (h *Handler) enforceAuthorize(w http.ResponseWriter, r *http.Request,
	next caddyhttp.Handler) error {
	params, perr := readParams(r, true)
	if perr == nil {
		perr = checkSingle(params)
	}
	if perr != nil {
		return h.errorPage(w, r, perr)
	}
	id := params.Get("client_id")
	if id == "" {
		return next.ServeHTTP(w, r)
	}

	c, err := h.lookupClient(r, id)
	var refusal *protoError
	switch {
	case errors.As(err, &refusal):
		// A copy: requests that shared one fetch share its error.
		e := *refusal
		if e.Rule == "cimd" {
			// A metadata document that cannot be used; the
			// authorization endpoint's code for a bad parameter.
			e.Code = codeInvalidRequest
		}
		return h.errorPage(w, r, &e)
	case errors.Is(err, clientdb.ErrNotFound):
		if h.Enforce.RegisteredOnly {
			return h.errorPage(w, r, enforceError(http.StatusBadRequest,
				codeUnauthorizedClient, "unknown_client", "the client is not registered"))
		}
		return next.ServeHTTP(w, r)
	case errors.Is(err, clientdb.ErrDeleted):
		return h.errorPage(w, r, enforceError(http.StatusBadRequest,
			codeUnauthorizedClient, "deleted_client",
			"the client was deleted; register again"))
	case err != nil:
		return h.errorPage(w, r, storeError(err))
	}

	if perr := checkAuthorization(c, params); perr != nil {
		return h.errorPage(w, r, perr)
	}
	h.admit(r, c)
	return next.ServeHTTP(w, r)
}

// checkAuthorization applies the registration to an authorization
// request's parameters.
func checkAuthorization(c *clientdb.Client, params url.Values) *protoError {
	m := &c.Metadata

	redirect := params.Get("redirect_uri")
	switch {
	case redirect == "" && len(m.RedirectURIs) != 1:
		return enforceError(http.StatusBadRequest, codeInvalidRequest,
			"redirect_uri_missing",
			"redirect_uri is required: the client registered several")
	case redirect != "" && !slices.ContainsFunc(m.RedirectURIs, func(reg string) bool {
		return redirectMatches(reg, redirect)
	}):
		return enforceError(http.StatusBadRequest, codeInvalidRequest,
			"redirect_uri_registered",
			"redirect_uri is not registered for this client")
	}

	rt := params.Get("response_type")
	if rt == "" {
		return enforceError(http.StatusBadRequest, codeInvalidRequest,
			"response_type_missing", "response_type is required")
	}
	if !slices.ContainsFunc(m.ResponseTypes, func(reg string) bool {
		return sameWords(reg, rt)
	}) {
		return enforceError(http.StatusBadRequest, codeUnauthorizedClient,
			"response_type_registered", fmt.Sprintf(
				"response_type %q is not registered for this client", truncate(rt)))
	}

	// Public clients have no secret to protect the code: RFC 9700 section
	// 2.1.1 makes PKCE the defence, and plain offers none against a
	// leaked request.
	if m.TokenEndpointAuthMethod == authNone &&
		(params.Get("code_challenge") == "" || params.Get("code_challenge_method") != "S256") {
		return enforceError(http.StatusBadRequest, codeInvalidRequest,
			"pkce_required",
			"public clients must send a code_challenge with code_challenge_method S256")
	}
	return nil
}

// redirectMatches reports whether a presented redirect URI matches a
// registered one: exactly, or differing only in the port when the
// registered one is http on a loopback address (RFC 8252 section 7.3).
func redirectMatches(registered, presented string) bool {
	if registered == presented {
		return true
	}
	reg, err := url.Parse(registered)
	if err != nil || reg.Scheme != "http" || !isLoopback(reg.Hostname()) {
		return false
	}
	got, err := url.Parse(presented)
	if err != nil || got.Scheme != "http" || got.Hostname() != reg.Hostname() {
		return false
	}
	reg.Host, got.Host = reg.Hostname(), got.Hostname()
	if strings.Contains(reg.Host, ":") {
		reg.Host, got.Host = "["+reg.Host+"]", "["+got.Host+"]"
	}
	return reg.String() == got.String() && got.User == nil
}

// sameWords reports whether two space-separated lists hold the same words
// in any order, as response types compare (OAuth 2.0 Multiple Response
// Type Encoding Practices).
func sameWords(a, b string) bool {
	wa, wb := strings.Fields(a), strings.Fields(b)
	slices.Sort(wa)
	slices.Sort(wb)
	return len(wa) > 0 && slices.Equal(wa, wb)
}

// enforceToken checks a token request (RFC 6749 section 3.2) of a
// registered client: its authentication as registered, including secret
// expiry, and its grant type.
func (h *Handler) enforceToken(w http.ResponseWriter, r *http.Request,
	next caddyhttp.Handler) error {
	switch r.Method {
	case http.MethodPost:
	case http.MethodOptions:
		// CORS preflight of browser-based clients: the backend answers.
		return next.ServeHTTP(w, r)
	default:
		// RFC 6749 section 3.2: a backend that took token requests by
		// another method would take them unchecked.
		w.Header().Set("Allow", "POST, OPTIONS")
		return h.tokenError(w, r, enforceError(http.StatusMethodNotAllowed,
			codeInvalidRequest, "method", "token requests must use POST"), false)
	}
	form, perr := readParams(r, false)
	if perr == nil {
		perr = checkSingle(form)
	}
	if perr != nil {
		return h.tokenError(w, r, perr, false)
	}

	basicID, basicSecret, hasBasic, malformed := basicCredentials(r)
	if malformed {
		return h.tokenError(w, r, invalidClient("basic_malformed",
			"the Authorization header does not hold form-encoded client credentials"), true)
	}
	id := form.Get("client_id")
	if hasBasic {
		if id != "" && id != basicID {
			return h.tokenError(w, r, enforceError(http.StatusBadRequest,
				codeInvalidRequest, "client_id_conflict",
				"client_id differs from the client authenticated by "+
					"the Authorization header"), false)
		}
		id = basicID
	}
	if id == "" {
		// The client is named only inside its assertion; the check
		// below verifies that it signed it.
		id = assertionIssuer(form)
	}
	if id == "" {
		return next.ServeHTTP(w, r)
	}

	c, err := h.lookupClient(r, id)
	var refusal *protoError
	switch {
	case errors.As(err, &refusal):
		e := *refusal // requests that shared one fetch share its error
		if e.Rule == "cimd" {
			e.Status = http.StatusUnauthorized
		}
		return h.tokenError(w, r, &e, hasBasic)
	case errors.Is(err, clientdb.ErrNotFound):
		if h.Enforce.RegisteredOnly {
			return h.tokenError(w, r, invalidClient("unknown_client",
				"the client is not registered"), hasBasic)
		}
		return next.ServeHTTP(w, r)
	case errors.Is(err, clientdb.ErrDeleted):
		return h.tokenError(w, r, invalidClient("deleted_client",
			"the client was deleted or expired; register again"), hasBasic)
	case err != nil:
		return h.tokenError(w, r, storeError(err), false)
	}

	if !gatewayAuthenticates(c) {
		// client_secret_jwt is signed with the plaintext secret, which
		// the store does not keep: the backend checks it, and no
		// identity headers vouch for a client the gateway did not
		// authenticate.
		return next.ServeHTTP(w, r)
	}
	if perr := h.authenticateClient(r, c, form, hasBasic, basicSecret); perr != nil {
		return h.tokenError(w, r, perr, hasBasic)
	}
	g := form.Get("grant_type")
	if g == "" {
		return h.tokenError(w, r, enforceError(http.StatusBadRequest,
			codeInvalidRequest, "grant_type_missing", "grant_type is required"), false)
	}
	if !slices.Contains(c.Metadata.GrantTypes, g) {
		return h.tokenError(w, r, enforceError(http.StatusBadRequest,
			codeUnauthorizedClient, "grant_type_registered", fmt.Sprintf(
				"grant_type %q is not registered for this client", truncate(g))), false)
	}

	h.admit(r, c)
	return next.ServeHTTP(w, r)
}

// authenticateClient checks a token request's client authentication
// against the registered method and the stored secret.
func (h *Handler) authenticateClient(r *http.Request, c *clientdb.Client, form url.Values,
	hasBasic bool, basicSecret string) *protoError {
	postSecret, hasPost := form["client_secret"]
	if hasBasic && hasPost {
		// RFC 6749 section 2.3: one method per request.
		return invalidClient("auth_multiple", "the client used more than one authentication method")
	}

	var secret string
	switch c.Metadata.TokenEndpointAuthMethod {
	case authClientSecretBasic:
		if !hasBasic {
			return invalidClient("auth_method",
				"the client must authenticate with client_secret_basic")
		}
		secret = basicSecret
	case authClientSecretPost:
		if !hasPost || len(postSecret) != 1 {
			return invalidClient("auth_method",
				"the client must authenticate with client_secret_post")
		}
		secret = postSecret[0]
	case authNone:
		if hasBasic || hasPost {
			return invalidClient("auth_method",
				"the client is registered as public and has no secret")
		}
		return nil
	case authPrivateKeyJWT:
		if hasBasic || hasPost {
			return invalidClient("auth_method",
				"the client must authenticate with private_key_jwt")
		}
		return h.assertions.check(r.Context(), r, c, form, h.tokenAudiences(r), h.now())
	default:
		// Not reached: enforceToken passes such clients on unchecked.
		return nil
	}

	switch err := c.CheckSecret(secret, h.now()); {
	case errors.Is(err, clientdb.ErrSecretExpired):
		return invalidClient("secret_expired", "the client secret has expired; register again")
	case err != nil:
		return invalidClient("secret_invalid", "client authentication failed")
	}
	return nil
}

// gatewayAuthenticates reports whether the gateway can check the client's
// token endpoint authentication itself: a shared secret, none, or a JWT
// signed with the client's private key.
func gatewayAuthenticates(c *clientdb.Client) bool {
	switch c.Metadata.TokenEndpointAuthMethod {
	case authClientSecretBasic, authClientSecretPost, authNone, authPrivateKeyJWT:
		return true
	}
	return false
}

// basicCredentials returns the client credentials of an HTTP Basic
// Authorization header, form-decoded as RFC 6749 section 2.3.1 requires.
// malformed reports a Basic header whose credentials cannot be decoded:
// such a request must not pass as unauthenticated.
func basicCredentials(r *http.Request) (id, secret string, ok, malformed bool) {
	user, pass, ok := r.BasicAuth()
	if !ok {
		scheme, _, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		return "", "", false, strings.EqualFold(scheme, "Basic")
	}
	id, err1 := url.QueryUnescape(user)
	secret, err2 := url.QueryUnescape(pass)
	if err1 != nil || err2 != nil {
		return "", "", false, true
	}
	return id, secret, true, false
}

// readParams returns a request's OAuth parameters: the query, and for a
// form POST the body, which is restored for the backend. withQuery keeps
// the query parameters (authorization requests); token requests take
// parameters from the body only.
func readParams(r *http.Request, withQuery bool) (url.Values, *protoError) {
	// Parsed strictly: a pair that a lenient parser would drop (a bad
	// escape, a ";") could carry a value the backend reads and the
	// gateway never checked.
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, enforceError(http.StatusBadRequest, codeInvalidRequest,
			"query_syntax", "the query string is not valid form encoding")
	}
	params := url.Values{}
	if withQuery {
		params = query
	} else if slices.ContainsFunc(singleValued, query.Has) {
		// RFC 6749 section 3.2: token request parameters travel in the
		// body; a backend that also reads the query must not see any
		// the gateway did not check.
		return nil, enforceError(http.StatusBadRequest, codeInvalidRequest,
			"token_query", "token request parameters must be sent in the request body")
	}
	if r.Method != http.MethodPost {
		return params, nil
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/x-www-form-urlencoded" {
		if r.ContentLength != 0 {
			// A body the gateway cannot read may hold parameters the
			// backend reads.
			return nil, enforceError(http.StatusUnsupportedMediaType, codeInvalidRequest,
				"form_type", "the request body must be application/x-www-form-urlencoded")
		}
		return params, nil
	}

	body, err := io.ReadAll(io.LimitReader(r.Body, maxFormBody+1))
	if err != nil {
		return nil, enforceError(http.StatusBadRequest, codeInvalidRequest,
			"read_body", "request body could not be read")
	}
	if len(body) > maxFormBody {
		return nil, enforceError(http.StatusRequestEntityTooLarge, codeInvalidRequest,
			"max_body", fmt.Sprintf("request body is larger than %d bytes", maxFormBody))
	}
	r.Body = io.NopCloser(bytes.NewReader(body))

	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, enforceError(http.StatusBadRequest, codeInvalidRequest,
			"form_syntax", "request body is not a valid form")
	}
	for k, v := range form {
		params[k] = append(params[k], v...)
	}
	return params, nil
}

// singleValued are the parameters that RFC 6749 section 3.1 and its
// extensions allow once per request. Others, such as the resource
// indicators of RFC 8707, may repeat.
var singleValued = []string{
	"client_id", "client_secret", "redirect_uri", "response_type",
	"response_mode", "code_challenge", "code_challenge_method",
	"grant_type", "code", "code_verifier", "refresh_token", "scope",
	"state", "nonce", "client_assertion", "client_assertion_type",
}

// checkSingle refuses a request that repeats a single-valued parameter:
// the handler and the backend could read different values.
func checkSingle(params url.Values) *protoError {
	for _, name := range singleValued {
		if values := params[name]; len(values) > 1 {
			return enforceError(http.StatusBadRequest, codeInvalidRequest,
				"parameter_repeated", fmt.Sprintf(
					"parameter %q is given more than once", truncate(name)))
		}
	}
	return nil
}

func enforceError(status int, code, rule, description string) *protoError {
	return &protoError{Status: status, Code: code, Description: description, Rule: rule}
}

func invalidClient(rule, description string) *protoError {
	return enforceError(http.StatusUnauthorized, codeInvalidClient, rule, description)
}

// tokenError answers a token request with the JSON error of RFC 6749
// section 5.2; basic adds the challenge that section requires when the
// client tried HTTP Basic authentication.
func (h *Handler) tokenError(w http.ResponseWriter, r *http.Request,
	e *protoError, basic bool) error {
	h.logEnforcement(r, "token", e)
	if basic && e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="token", charset="UTF-8"`)
	}
	writeError(w, e)
	return nil
}

// errorPageTemplate is the page shown to the user when an authorization
// request is refused; it is not sent back to the client's redirect URI.
var errorPageTemplate = template.Must(template.New("error").Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Authorization error</title></head>
<body><h1>Authorization error</h1>
<p>The application's request was refused.</p>
<dl><dt>error</dt><dd id="error">{{.Code}}</dd>
<dt>error_description</dt><dd id="error_description">{{.Description}}</dd></dl>
</body></html>
`))

// errorPage answers a refused authorization request with an OAuth error
// page: the error code and description, in HTML for the user's browser.
func (h *Handler) errorPage(w http.ResponseWriter, r *http.Request, e *protoError) error {
	h.logEnforcement(r, "authorize", e)
	hdr := w.Header()
	hdr.Set("Content-Type", "text/html; charset=utf-8")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")
	if e.Status >= 500 {
		hdr.Set("Retry-After", "1")
	}
	w.WriteHeader(e.Status)
	return errorPageTemplate.Execute(w, e)
}

// logEnforcement logs a request that enforcement refused or could not
// check.
func (h *Handler) logEnforcement(r *http.Request, endpoint string, e *protoError) {
	outcome := "refused"
	if e.Status >= 500 {
		outcome = "failed"
	}
	logProtoError(h.logger, "request refused by enforcement", "enforcement failed",
		r, e, zap.String("operation", "enforce_"+endpoint), zap.String("outcome", outcome),
		zap.String("endpoint", endpoint))
}

// isEndpoint reports whether a cleaned request path reaches the enforced
// endpoint ep: equal ignoring case, or followed by a format suffix
// (".json", routed to the same action by some frameworks) or path
// parameters (";jsessionid=...", dropped by servlet containers).
func isEndpoint(path, ep string) bool {
	if ep == "" || len(path) < len(ep) || !strings.EqualFold(path[:len(ep)], ep) {
		return false
	}
	return len(path) == len(ep) || path[len(ep)] == '.' || path[len(ep)] == ';'
}
