// Package dcr is a Caddy HTTP handler that adds OAuth 2.0 Dynamic Client
// Registration (RFC 7591) in front of an existing authorization server. It
// answers registration requests itself, keeps registered clients in a bbolt
// file that other processes can read through package clientdb, and passes
// every other request to the next handler.
package dcr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	pathpkg "path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// timeNow is the clock of provisioned handlers; tests replace it to move
// time forward for expiry.
var timeNow = time.Now

// Defaults of the handler's configuration.
const (
	defaultEndpoint     = "/register"
	defaultMaxBody      = 64 << 10
	defaultTombstoneTTL = 30 * 24 * time.Hour

	defaultRateLimitRequests = 20
	defaultRateLimitWindow   = time.Hour
	defaultAuditRetention    = 90 * 24 * time.Hour

	// maxMaxBody caps max_body: registration metadata is small, and the
	// whole body is held in memory.
	maxMaxBody = 1 << 20
)

// Handler answers OAuth 2.0 Dynamic Client Registration requests (RFC 7591)
// at its endpoint and passes every other request to the next handler.
type Handler struct {
	// Endpoint is the path of the registration endpoint. Requests to any
	// other path pass through. Default: "/register".
	Endpoint string `json:"endpoint,omitempty"`

	// Store is the path of the bbolt file that holds registered clients.
	// Placeholders such as {env.VAR} are expanded. Default:
	// "dcr/clients.db" under Caddy's data directory.
	Store string `json:"store,omitempty"`

	// Postgres, when set, keeps clients in a PostgreSQL database instead
	// of a bbolt file, so that several Caddy instances share them. It
	// excludes Store. Default: unset (bbolt).
	Postgres *PostgresStore `json:"postgres,omitempty"`

	// GrantTypes are the grant types clients may register. Default:
	// authorization_code and refresh_token. implicit, password,
	// client_credentials and the JWT and SAML 2.0 bearer assertion grants
	// are refused unless listed here.
	GrantTypes []string `json:"grant_types,omitempty"`

	// AuthMethods are the token_endpoint_auth_method values clients may
	// register. A request that names no method gets client_secret_basic
	// (the RFC 7591 default) if it is listed, else the first method
	// listed. Default: client_secret_basic, client_secret_post and none.
	AuthMethods []string `json:"auth_methods,omitempty"`

	// Scopes are the scopes clients may register; a request naming any
	// other scope is refused. Default: empty, meaning any scope.
	Scopes []string `json:"scopes,omitempty"`

	// DefaultScope is registered for clients whose request names no
	// scope. Default: empty, registering no scope.
	DefaultScope []string `json:"default_scope,omitempty"`

	// RequireHTTPS requires redirect URIs and jwks_uri to use https,
	// except http on loopback hosts as RFC 8252 allows native apps.
	// Default: true.
	RequireHTTPS *bool `json:"require_https,omitempty"`

	// RedirectSchemes are private-use URI schemes allowed in redirect
	// URIs besides reverse-domain ones (those containing a dot, which are
	// always allowed). Default: none.
	RedirectSchemes []string `json:"redirect_schemes,omitempty"`

	// SecretLifetime is how long an issued client secret stays valid;
	// client_secret_expires_at is the issue time plus this. Default: 0,
	// secrets never expire.
	SecretLifetime caddy.Duration `json:"secret_lifetime,omitempty"`

	// MaxBody is the largest registration request body accepted, in
	// bytes; larger ones are answered with 413. Default: 65536. At most
	// 1 MiB.
	MaxBody int64 `json:"max_body,omitempty"`

	// InitialAccessTokens, when set, make registration require
	// "Authorization: Bearer <token>" with one of them (RFC 7591 section
	// 3). Placeholders such as {env.DCR_IAT} and {file./run/secrets/iat}
	// are expanded; a token that expands to nothing is an error. Tokens
	// are compared in constant time and never logged. Default: empty,
	// registration is open.
	InitialAccessTokens []string `json:"initial_access_tokens,omitempty"`

	// RedirectHosts, when set, is the allowlist of hosts for https (and,
	// under require_https off, http) redirect URIs: exact host names, or
	// "*.example.com" for any subdomain of example.com (not example.com
	// itself). Registered URIs stay exact. Loopback http and private-use
	// schemes are not affected.
	// Default: empty, any host.
	RedirectHosts []string `json:"redirect_hosts,omitempty"`

	// Management enables the client configuration endpoint of RFC 7592
	// at <endpoint>/<client_id>: registrations then return a
	// registration access token and the endpoint's URL. When off, the
	// endpoint answers 404. Default: true.
	Management *bool `json:"management,omitempty"`

	// BaseURL is the scheme and host, and any path prefix, under which
	// clients reach the endpoint, such as "https://auth.example.com". It
	// forms registration_client_uri. Set it when Caddy is behind another
	// proxy. Default: empty, taking the scheme and host of each request.
	BaseURL string `json:"base_url,omitempty"`

	// RotateToken makes every successful RFC 7592 update return a new
	// registration access token; the old one stops working. Reads never
	// rotate. Default: true.
	RotateToken *bool `json:"rotate_token,omitempty"`

	// RotateSecret makes every successful RFC 7592 update of a client
	// that has a secret return a new secret, as RFC 7592 section 2.2
	// allows. Default: false.
	RotateSecret bool `json:"rotate_secret,omitempty"`

	// SecretOverlap is how long a secret replaced by rotation stays
	// valid, so that running deployments can roll over. It never extends
	// past the old secret's own expiry. Default: 0, the old secret stops
	// working at once.
	SecretOverlap caddy.Duration `json:"secret_overlap,omitempty"`

	// Discovery adds registration_endpoint to the backend's authorization
	// server metadata (RFC 8414, OpenID Connect Discovery) as it passes
	// through, and lists what the registration policy allows among the
	// supported auth methods, grant types and response types. Default:
	// true.
	Discovery *bool `json:"discovery,omitempty"`

	// Enforce, when set, holds registered clients to their registration
	// at the backend's authorization and token endpoints and passes their
	// identity to the backend. Default: unset, not enforced.
	Enforce *Enforce `json:"enforce,omitempty"`

	// ExpireUnused deletes clients, leaving a tombstone, that have not
	// been used at an enforced endpoint for this long, or never since
	// registration. Use is only seen where enforcement runs. Default: 0,
	// clients never expire.
	ExpireUnused caddy.Duration `json:"expire_unused,omitempty"`

	// RequireInitialAccessToken makes registration require an initial
	// access token even when InitialAccessTokens is empty: then only
	// tokens issued through the store (see clientdb.InitialToken) open
	// it. Default: false; giving InitialAccessTokens implies true.
	RequireInitialAccessToken bool `json:"require_initial_access_token,omitempty"`

	// SoftwareStatements are the issuers whose software statements (RFC
	// 7591 section 2.3) are trusted. A registration may carry a
	// statement from one of them; its claims take precedence over the
	// plain members. Default: none, and any statement is refused as
	// unapproved.
	SoftwareStatements []SoftwareStatementIssuer `json:"software_statements,omitempty"`

	// RequireSoftwareStatement refuses registrations and updates that
	// carry no software statement. Default: false.
	RequireSoftwareStatement bool `json:"require_software_statement,omitempty"`

	// RedirectPreset names a set of redirect URI rules. "mcp" is what
	// MCP clients and other native apps need: http on a loopback host
	// with any port, private-use schemes in reverse-domain form (RFC 8252
	// section 7.1) or listed in RedirectSchemes, https subject to
	// RedirectHosts, never http on another host; and application_type
	// "native" inferred when every redirect URI is loopback http or a
	// private-use scheme. Default: empty, the general rules.
	RedirectPreset string `json:"redirect_preset,omitempty"`

	// Fetch configures the server's outgoing fetches (sector identifier
	// documents, issuers' key sets). Default: public addresses only, 5s,
	// 64 KiB.
	Fetch *FetchConfig `json:"fetch,omitempty"`

	// RateLimit limits registration requests per client IP (as Caddy
	// determines it, honouring the server's trusted_proxies), counting
	// every attempt. Over the limit the answer is 429 with Retry-After
	// and nothing is stored. Default: 20 requests per hour.
	RateLimit *RateLimit `json:"rate_limit,omitempty"`

	// RateLimitExempt are CIDR prefixes whose clients are not rate
	// limited, such as the shared egress of a known hosted client.
	// Default: none.
	RateLimitExempt []string `json:"rate_limit_exempt,omitempty"`

	// MaxClients refuses new registrations while the store holds this
	// many live clients (disabled ones included). Limits that bound time,
	// such as ExpireUnused, are usually the better tool. Default: 0,
	// unlimited.
	MaxClients int `json:"max_clients,omitempty"`

	// CORSOrigins are the origins whose browser-based clients may call
	// the registration and client configuration endpoints (CORS), as
	// "https://app.example.com", or "*" for any. Default: none.
	CORSOrigins []string `json:"cors_origins,omitempty"`

	// AuditRetention is how long audit events are kept in the store's
	// audit trail before a background sweeper removes them. Default:
	// 2160h (90 days).
	AuditRetention caddy.Duration `json:"audit_retention,omitempty"`

	// TombstoneTTL is how long a deleted client's tombstone is kept, so
	// that readers can tell it from a client that never existed. A
	// background sweeper removes older ones. Default: 720h (30 days).
	TombstoneTTL caddy.Duration `json:"tombstone_ttl,omitempty"`

	// PoliciesRaw are policy modules (namespace dcr.policies) that vet
	// every registration and RFC 7592 update after the built-in rules,
	// in the order listed; each may refuse or amend the metadata, and
	// amended metadata passes the built-in rules again. Built in:
	// "expression" (a CEL expression) and "reserved_names". Default:
	// none.
	PoliciesRaw []json.RawMessage `json:"policies,omitempty" caddy:"namespace=dcr.policies inline_key=policy"`

	// HooksRaw are hook modules (namespace dcr.hooks) that receive an
	// event for every client created, updated, deleted, expired, rotated,
	// disabled or enabled, once the change is durable. Events wait in an
	// outbox in the store until the hook took them, so none is lost to
	// a hook that is down or to a restart. Built in: "webhook". Default:
	// none.
	HooksRaw []json.RawMessage `json:"hooks,omitempty" caddy:"namespace=dcr.hooks inline_key=hook"`

	// CIMD accepts client IDs that are https URLs of client ID metadata
	// documents (draft-ietf-oauth-client-id-metadata-document) at the
	// enforced endpoints: the document is fetched, held to the same
	// policy as a registration and kept in the store as a public client
	// of kind "cimd", and discovery advertises
	// client_id_metadata_document_supported. Needs enforce. Default:
	// false.
	CIMD bool `json:"cimd,omitempty"`

	// CIMDHosts, when set, is the allowlist of hosts whose metadata
	// documents are accepted: host names, or "*.example.com" for any
	// subdomain. Default: empty, any host whose address is public (or
	// allowed by fetch allow_networks).
	CIMDHosts []string `json:"cimd_hosts,omitempty"`

	// CIMDMinTTL is the shortest time a fetched metadata document is
	// used before it is fetched again, whatever its caching headers say
	// (no-store included). Default: 5m.
	CIMDMinTTL caddy.Duration `json:"cimd_min_ttl,omitempty"`

	// CIMDMaxTTL is the longest time a fetched metadata document is used
	// before it is fetched again; between the two bounds its HTTP caching
	// headers decide. Default: 24h.
	CIMDMaxTTL caddy.Duration `json:"cimd_max_ttl,omitempty"`

	// CIMDGrace is how long past its refresh time the last good copy of
	// a document is still used while fetching it again fails. Default:
	// 1h; 0 means the default, so the shortest grace is 1ns.
	CIMDGrace caddy.Duration `json:"cimd_grace,omitempty"`

	cimd          *cimdResolver
	policies      []namedPolicy
	hooks         []*hook
	startTimer    *time.Timer
	logger        *zap.Logger
	policy        *policy
	initialTokens initialTokens
	fetcher       *fetcher
	statements    *statementVerifier
	limiter       *rateLimiter
	limiterKey    string
	assertions    *assertionChecker
	sectors       *sectorCache
	cors          *corsPolicy
	store         *sharedStore
	storeKey      string
	released      bool
	stop          chan struct{}

	ctx        context.Context
	background *sync.Once
	workers    *sync.WaitGroup
	workersMu  *sync.Mutex // orders starting work against Cleanup
	now        func() time.Time
	usage      *usageTracker

	// identity is the enforcement config, or its defaults when
	// enforcement is off, so that identity headers are always stripped.
	identity *Enforce
}

// RateLimit is a number of requests per window of time.
type RateLimit struct {
	// Requests is how many requests one client IP may make per Window;
	// it is also the burst allowed at once.
	Requests int `json:"requests,omitempty"`

	// Window is the period over which Requests are allowed.
	Window caddy.Duration `json:"window,omitempty"`

	// Off disables rate limiting.
	Off bool `json:"off,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.dcr",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision fills in defaults, expands placeholders in the store path and
// acquires the shared store. It opens no database file, so it never waits
// for another process.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.now = timeNow

	if h.Endpoint == "" {
		h.Endpoint = defaultEndpoint
	}
	if h.MaxBody == 0 {
		h.MaxBody = defaultMaxBody
	}
	if h.GrantTypes == nil {
		h.GrantTypes = slices.Clone(defaultGrantTypes)
	}
	if h.AuthMethods == nil {
		h.AuthMethods = slices.Clone(defaultAuthMethods)
	}
	h.RequireHTTPS = orTrue(h.RequireHTTPS)
	h.Management = orTrue(h.Management)
	h.RotateToken = orTrue(h.RotateToken)
	h.Discovery = orTrue(h.Discovery)
	h.identity = &Enforce{}
	if h.Enforce != nil {
		h.identity = h.Enforce
	}
	h.identity.provision()
	if h.TombstoneTTL == 0 {
		h.TombstoneTTL = caddy.Duration(defaultTombstoneTTL)
	}
	if h.AuditRetention == 0 {
		h.AuditRetention = caddy.Duration(defaultAuditRetention)
	}
	if h.RateLimit == nil {
		h.RateLimit = &RateLimit{
			Requests: defaultRateLimitRequests,
			Window:   caddy.Duration(defaultRateLimitWindow),
		}
	}
	h.BaseURL = strings.TrimSuffix(h.BaseURL, "/")
	if h.Store == "" && h.Postgres == nil {
		h.Store = filepath.Join(caddy.AppDataDir(), "dcr", "clients.db")
	}
	h.Store = caddy.NewReplacer().ReplaceKnown(h.Store, "")
	if h.Postgres != nil {
		if h.Store != "" {
			return errors.New("store: give a bbolt path or postgres, not both")
		}
		if err := h.Postgres.validate(); err != nil {
			return err
		}
	}

	h.policy = &policy{
		grantTypes:      h.GrantTypes,
		authMethods:     h.AuthMethods,
		scopes:          nonEmpty(h.Scopes),
		defaultScope:    strings.Join(h.DefaultScope, " "),
		requireHTTPS:    *h.RequireHTTPS,
		redirectSchemes: lowerAll(h.RedirectSchemes),
		redirectHosts:   lowerAll(h.RedirectHosts),
		secretLifetime:  time.Duration(h.SecretLifetime),
		mcpPreset:       h.RedirectPreset == presetMCP,
	}

	toks, err := newInitialTokens(h.InitialAccessTokens)
	if err != nil {
		return err
	}
	h.initialTokens = toks

	h.fetcher, err = h.Fetch.newFetcher()
	if err != nil {
		return err
	}
	h.statements, err = newStatementVerifier(h.SoftwareStatements, h.fetcher, h.logger)
	if err != nil {
		return err
	}
	h.assertions = newAssertionChecker(h.fetcher)
	h.sectors = newSectorCache()

	h.cors, err = newCORSPolicy(h.CORSOrigins)
	if err != nil {
		return err
	}
	if err := metrics.register(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}

	if err := h.loadGuests(ctx); err != nil {
		return err
	}
	if h.CIMD {
		h.cimd = &cimdResolver{
			hosts:  lowerAll(h.CIMDHosts),
			minTTL: orDefault(time.Duration(h.CIMDMinTTL), defaultCIMDMinTTL),
			maxTTL: orDefault(time.Duration(h.CIMDMaxTTL), defaultCIMDMaxTTL),
			grace:  orDefault(time.Duration(h.CIMDGrace), defaultCIMDGrace),
			failures: newTTLCache[*protoError](cimdFailureTTL,
				maxCIMDFailures),
		}
	}

	var exempt []netip.Prefix
	if rl := h.RateLimit; !rl.Off {
		if rl.Requests < 1 || rl.Window <= 0 {
			return fmt.Errorf("rate_limit %d %s: want at least one request per "+
				"positive window", rl.Requests, time.Duration(rl.Window))
		}
		if exempt, err = parsePrefixes("rate_limit_exempt", h.RateLimitExempt); err != nil {
			return err
		}
	}

	// Background work starts with the first request, not here: "caddy
	// validate" provisions handlers that never serve, and they must not
	// change the store. It stops when the config is unloaded or cleaned
	// up.
	h.stop = make(chan struct{})
	h.ctx = ctx
	h.background = new(sync.Once)
	h.workers = new(sync.WaitGroup)
	h.workersMu = new(sync.Mutex)

	// Nothing may fail after the store is acquired: Cleanup after a
	// failed Provision releases it, but keeping the order simple keeps
	// that path simple too.
	store, key, err := h.acquireStore()
	if err != nil {
		return err
	}
	h.store, h.storeKey = store, key
	h.usage = &store.usage
	if !h.RateLimit.Off {
		// The limiter lives with the store, so that a reload keeps
		// what each address has used.
		h.limiter, h.limiterKey = store.limiter(h.RateLimit.Requests,
			time.Duration(h.RateLimit.Window), exempt)
	}
	store.settings.Store(&storeSettings{
		secretLifetime: time.Duration(h.SecretLifetime),
		secretOverlap:  time.Duration(h.SecretOverlap),
	})
	if len(h.hooks) > 0 {
		// Events may wait from before a restart, and delivering them
		// must not wait for a request. "caddy validate" cleans the
		// handler up long before this fires, and Cleanup stops it.
		h.startTimer = time.AfterFunc(hookStartDelay, func() {
			h.background.Do(h.startBackground)
		})
	}
	return nil
}

// hookStartDelay is how long after Provision the background work starts
// when hooks are configured, if no request started it before.
const hookStartDelay = 2 * time.Second

// Validate checks the configuration. It changes nothing.
func (h *Handler) Validate() error {
	if !strings.HasPrefix(h.Endpoint, "/") {
		return fmt.Errorf("endpoint %q: must be a path starting with /", h.Endpoint)
	}
	if h.MaxBody < 0 || h.MaxBody > maxMaxBody {
		return fmt.Errorf("max_body %d: must be between 1 and %d bytes", h.MaxBody, maxMaxBody)
	}
	if h.MaxClients < 0 {
		return fmt.Errorf("max_clients %d: must not be negative", h.MaxClients)
	}
	for _, d := range []struct {
		name  string
		value caddy.Duration
	}{
		{"audit_retention", h.AuditRetention},
		{"secret_lifetime", h.SecretLifetime},
		{"secret_overlap", h.SecretOverlap},
		{"tombstone_ttl", h.TombstoneTTL},
		{"expire_unused", h.ExpireUnused},
		{"cimd_min_ttl", h.CIMDMinTTL},
		{"cimd_max_ttl", h.CIMDMaxTTL},
		{"cimd_grace", h.CIMDGrace},
	} {
		if d.value < 0 {
			return fmt.Errorf("%s %s: must not be negative", d.name, time.Duration(d.value))
		}
	}
	if e := h.Enforce; e != nil {
		for _, p := range []struct{ name, path string }{
			{"authorize", e.Authorize}, {"token", e.Token},
		} {
			if p.path != "" && !strings.HasPrefix(p.path, "/") {
				return fmt.Errorf("enforce %s %q: must be a path starting with /", p.name, p.path)
			}
			if p.path == h.Endpoint || strings.HasPrefix(p.path, h.Endpoint+"/") {
				return fmt.Errorf("enforce %s %q: is the registration endpoint or under it",
					p.name, p.path)
			}
			if p.path != "" && pathpkg.Clean(p.path) != p.path {
				return fmt.Errorf("enforce %s %q: must be a clean path (try %q)",
					p.name, p.path, pathpkg.Clean(p.path))
			}
		}
		if e.Authorize == "" && e.Token == "" {
			return fmt.Errorf("enforce: name the authorize or the token endpoint, or both")
		}
		if e.Authorize == e.Token {
			return fmt.Errorf("enforce: authorize and token name the same path %q", e.Token)
		}
		if err := validateIdentityHeaders(e); err != nil {
			return err
		}
	}
	if h.CIMD && (h.Enforce == nil || h.Enforce.Authorize == "" && h.Enforce.Token == "") {
		return fmt.Errorf("cimd: needs an enforce block naming the authorize or " +
			"token endpoint, where metadata document client IDs are resolved")
	}
	for _, p := range h.CIMDHosts {
		if !validHostPattern(p) {
			return fmt.Errorf("cimd_hosts %q: want a host name or *.domain", p)
		}
	}
	if len(h.CIMDHosts) > 0 && !h.CIMD {
		return fmt.Errorf("cimd_hosts: needs cimd on")
	}
	if c := h.cimd; c != nil && c.minTTL > c.maxTTL {
		return fmt.Errorf("cimd_min_ttl %s: is above cimd_max_ttl %s",
			c.minTTL, c.maxTTL)
	}
	if h.ExpireUnused > 0 && h.Enforce == nil {
		return fmt.Errorf("expire_unused: needs an enforce block, since use is " +
			"only seen at enforced endpoints; without it every client would expire")
	}
	if h.BaseURL != "" {
		u, err := url.Parse(h.BaseURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") ||
			u.Host == "" || u.User != nil || strings.ContainsAny(h.BaseURL, "?#") {
			return fmt.Errorf("base_url %q: must be an absolute http(s) URL "+
				"without user information, query or fragment", h.BaseURL)
		}
	}
	switch h.RedirectPreset {
	case "":
	case presetMCP:
		if !*h.RequireHTTPS {
			return fmt.Errorf("redirect_preset mcp: conflicts with require_https off, " +
				"since the preset allows http only on loopback hosts")
		}
	default:
		return fmt.Errorf("redirect_preset %q: unknown preset; known: %s",
			h.RedirectPreset, presetMCP)
	}
	if err := validateIssuers(h.SoftwareStatements); err != nil {
		return err
	}
	if len(h.GrantTypes) == 0 {
		return fmt.Errorf("grant_types: at least one grant type is required")
	}
	if len(h.AuthMethods) == 0 {
		return fmt.Errorf("auth_methods: at least one method is required")
	}
	for _, list := range []struct {
		name   string
		values []string
	}{
		{"grant_types", h.GrantTypes},
		{"auth_methods", h.AuthMethods},
		{"scopes", h.Scopes},
		{"default_scope", h.DefaultScope},
		{"redirect_schemes", h.RedirectSchemes},
	} {
		for _, v := range list.values {
			if v == "" || strings.ContainsAny(v, " \t\r\n") {
				return fmt.Errorf("%s: invalid value %q", list.name, v)
			}
		}
	}
	for _, s := range append(slices.Clone(h.Scopes), h.DefaultScope...) {
		if !validScopeToken(s) {
			return fmt.Errorf("scope %q: not a valid scope token (RFC 6749 section 3.3)", s)
		}
	}
	for _, s := range h.DefaultScope {
		if len(h.Scopes) > 0 && !slices.Contains(h.Scopes, s) {
			return fmt.Errorf("default_scope %q: not among scopes %q", s, h.Scopes)
		}
	}
	for _, p := range h.RedirectHosts {
		if !validHostPattern(p) {
			return fmt.Errorf("redirect_hosts %q: want a host name or *.domain", p)
		}
	}
	for _, s := range h.RedirectSchemes {
		s = strings.ToLower(s)
		if s == "http" || s == "https" || slices.Contains(forbiddenSchemes, s) {
			return fmt.Errorf("redirect_schemes %q: not a private-use scheme", s)
		}
	}
	return nil
}

// acquireStore takes a use of the configured store.
func (h *Handler) acquireStore() (*sharedStore, string, error) {
	if h.Postgres != nil {
		s, key, err := acquirePostgres(h.Postgres, h.logger)
		if err != nil {
			return nil, "", fmt.Errorf("opening client store: %w", err)
		}
		return s, key, nil
	}
	s, key, err := acquireStore(h.Store)
	if err != nil {
		return nil, "", fmt.Errorf("opening client store %s: %w", h.Store, err)
	}
	s.logger.Store(h.logger)
	return s, key, nil
}

// Cleanup releases the shared store. It is safe to call more than once and
// after a failed Provision. It leaves h.store in place: after a reload the
// old instance may still be serving requests, and the store stays usable
// for them.
func (h *Handler) Cleanup() error {
	if h.store == nil || h.released {
		return nil
	}
	h.released = true
	if h.startTimer != nil {
		h.startTimer.Stop()
	}
	if h.workersMu != nil {
		h.workersMu.Lock()
		close(h.stop)
		h.workersMu.Unlock()
	} else if h.stop != nil {
		close(h.stop)
	}
	h.waitBackground()
	if h.limiterKey != "" {
		h.store.releaseLimiter(h.limiterKey)
	}
	return releaseStore(h.storeKey)
}

// cleanupWait bounds how long Cleanup waits for background work to stop.
// Reloads wait for Cleanup, so it must be short; a step of background work
// in progress is bounded by the store's own timeouts.
const cleanupWait = 5 * time.Second

// waitBackground waits, for at most cleanupWait, until the background
// work has stopped, so that nothing touches the store after Cleanup
// returns.
func (h *Handler) waitBackground() {
	if h.workers == nil {
		return
	}
	done := make(chan struct{})
	go func() {
		h.workers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(cleanupWait):
		h.logger.Warn("background work still running after cleanup",
			zap.Duration("waited", cleanupWait))
	}
}

// goBackground runs fn as background work that Cleanup waits for, unless
// the handler is already cleaned up: an old instance may still serve a
// request after a reload.
func (h *Handler) goBackground(fn func(context.Context)) {
	h.workersMu.Lock()
	defer h.workersMu.Unlock()
	select {
	case <-h.stop:
		return
	default:
	}
	h.workers.Add(1)
	go func() {
		defer h.workers.Done()
		fn(h.ctx)
	}()
}

// ServeHTTP answers requests to the registration endpoint and passes all
// others to next.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	h.background.Do(h.startBackground)
	h.stripIdentity(r)
	// Empty until enforcement admits a client, so that a config using
	// them never sends the placeholder's own text.
	setPlaceholders(r, "", "", "")

	path := r.URL.Path
	if path != h.Endpoint {
		if id, ok := strings.CutPrefix(path, h.Endpoint+"/"); ok &&
			id != "" && !strings.Contains(id, "/") {
			if h.management() && h.cors.handle(w, r, managementMethods) {
				return nil
			}
			return h.manage(w, r, id)
		}
		return h.forward(w, r, next)
	}
	if h.cors.handle(w, r, registrationMethods) {
		return nil
	}
	if r.Method != http.MethodPost {
		perr := requestError(http.StatusMethodNotAllowed, "method",
			fmt.Sprintf("method %s is not allowed; use POST", r.Method))
		h.refused(r, perr)
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, perr)
		return nil
	}
	return h.register(w, r)
}

// The methods of the registration and client configuration endpoints,
// as CORS preflight answers name them.
var (
	registrationMethods = []string{http.MethodPost}
	managementMethods   = []string{http.MethodGet, http.MethodPut, http.MethodDelete}
)

// startBackground starts the handler's background work: the tombstone
// and audit sweepers, and with enforcement the usage flusher and the expiry of unused
// clients.
func (h *Handler) startBackground() {
	// The admin API's changes reach the hooks of the config that serves
	// last, not of one that was provisioned and then refused.
	select {
	case <-h.stop:
		return
	default:
		h.store.hooks.setHooks(h.hooks)
	}
	h.goBackground(h.sweepTombstones)
	h.goBackground(h.sweepAudit)
	h.goBackground(h.sweepOutbox)
	h.goBackground(h.flushAudit)
	if h.ExpireUnused > 0 {
		h.goBackground(h.expireUnused)
	}
	if h.Enforce != nil {
		h.goBackground(h.flushUsage)
	}
	if len(h.hooks) > 0 {
		h.goBackground(h.deliverHooks)
	}
}

// forward passes a request that is not for the registration endpoints on
// to next, through discovery or enforcement where configured.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	switch {
	case *h.Discovery && r.Method == http.MethodGet && isMetadataPath(r.URL.Path):
		return h.serveMetadata(w, r, next)
	case h.Enforce == nil:
		return next.ServeHTTP(w, r)
	}

	// Backends often serve a path in other spellings (case, repeated or
	// trailing slashes); each of them must be checked as well.
	path := pathpkg.Clean("/" + r.URL.Path)
	switch {
	case isEndpoint(path, h.Enforce.Authorize):
		return h.enforceAuthorize(w, r, next)
	case isEndpoint(path, h.Enforce.Token):
		return h.enforceToken(w, r, next)
	}
	return next.ServeHTTP(w, r)
}

// clientIP returns the client's IP address as Caddy determined it, which
// honours the server's trusted_proxies.
func clientIP(r *http.Request) string {
	ip, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	return ip
}

// management reports whether the RFC 7592 endpoint is enabled.
func (h *Handler) management() bool {
	return *h.Management
}

// parsePrefixes parses CIDR prefixes of the named setting.
func parsePrefixes(name string, list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", name, s, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// orTrue returns b, or a pointer to true when b is unset.
func orTrue(b *bool) *bool {
	if b == nil {
		on := true
		return &on
	}
	return b
}

// nonEmpty returns list, or nil for an empty list, which the policy reads
// as "no restriction".
func nonEmpty(list []string) []string {
	if len(list) == 0 {
		return nil
	}
	return list
}

func lowerAll(list []string) []string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = strings.ToLower(s)
	}
	return out
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
