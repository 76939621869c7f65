package dcr

import (
	"encoding/json"
	"strconv"

	"github.com/dustin/go-humanize"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("dcr", parseCaddyfile)

	// Registration must be answered before routing directives hand the
	// request to reverse_proxy. Users who want another place use the
	// global "order" option or a route block.
	httpcaddyfile.RegisterDirectiveOrder("dcr", httpcaddyfile.Before, "invoke")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var d Handler
	err := d.UnmarshalCaddyfile(h.Dispenser)
	return &d, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	dcr {
//		endpoint         <path>
//		store            <file>
//		grant_types      <type...>
//		auth_methods     <method...>
//		scopes           <scope...>
//		default_scope    <scope...>
//		require_https    on|off
//		redirect_schemes <scheme...>
//		secret_lifetime  <duration>
//		max_body         <size>
//		initial_access_token <token...>
//		require_initial_access_token on|off
//		software_statement {
//			issuer     <iss>
//			jwks_file  <file>
//			jwks_url   <https-url>
//			algorithms <alg...>
//		}
//		require_software_statement on|off
//		redirect_preset  mcp
//		fetch {
//			allow_networks <cidr...>
//			timeout        <duration>
//			max_size       <size>
//			trusted_roots  <pem-file...>
//		}
//		redirect_hosts   <pattern...>
//		management       on|off
//		base_url         <url>
//		rotate_token     on|off
//		rotate_secret    on|off
//		secret_overlap   <duration>
//		tombstone_ttl    <duration>
//		discovery        on|off
//		expire_unused    <duration>
//		rate_limit       <n> <window> | off
//		rate_limit_exempt <cidr...>
//		max_clients      <n>
//		cors_origins     <origin...>
//		audit_retention  <duration>
//		enforce {
//			authorize          <path>
//			token              <path>
//			registered_only
//			client_id_header   <name>
//			client_name_header <name>
//			client_type_header <name>
//		}
//		cimd             on|off
//		cimd_hosts       <pattern...>
//		cimd_min_ttl     <duration>
//		cimd_max_ttl     <duration>
//		cimd_grace       <duration>
//		policy <module> [<args...>] [{ ... }]
//		hook   <module> [<args...>] [{ ... }]
//	}
//
// Every subdirective is optional and may appear once, except
// software_statement, which is given once per trusted issuer, and policy
// and hook, given once per module in the order they run. A policy or hook
// module parses the rest of its line and its block itself: see
// PolicyExpression, PolicyReservedNames and Webhook.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.ArgErr()
	}

	seen := make(map[string]bool)
	for d.NextBlock(0) {
		name := d.Val()
		if seen[name] && !repeatable[name] {
			return d.Errf("subdirective %s given more than once", name)
		}
		seen[name] = true

		var err error
		switch name {
		case "endpoint":
			h.Endpoint, err = oneArg(d)
		case "store":
			err = h.parseStore(d)
		case "grant_types":
			h.GrantTypes, err = someArgs(d)
		case "auth_methods":
			h.AuthMethods, err = someArgs(d)
		case "scopes":
			h.Scopes, err = someArgs(d)
		case "default_scope":
			h.DefaultScope, err = someArgs(d)
		case "require_https":
			h.RequireHTTPS, err = onOff(d, name)
		case "redirect_schemes":
			h.RedirectSchemes, err = someArgs(d)
		case "secret_lifetime":
			h.SecretLifetime, err = duration(d, name)
		case "max_body":
			err = h.parseMaxBody(d)
		case "initial_access_token":
			h.InitialAccessTokens, err = someArgs(d)
		case "require_initial_access_token":
			err = onOffInto(d, name, &h.RequireInitialAccessToken)
		case "software_statement":
			var iss SoftwareStatementIssuer
			iss, err = parseStatementIssuer(d)
			h.SoftwareStatements = append(h.SoftwareStatements, iss)
		case "require_software_statement":
			err = onOffInto(d, name, &h.RequireSoftwareStatement)
		case "redirect_preset":
			h.RedirectPreset, err = oneArg(d)
		case "fetch":
			h.Fetch, err = parseFetch(d)
		case "redirect_hosts":
			h.RedirectHosts, err = someArgs(d)
		case "management":
			h.Management, err = onOff(d, name)
		case "base_url":
			h.BaseURL, err = oneArg(d)
		case "rotate_token":
			h.RotateToken, err = onOff(d, name)
		case "rotate_secret":
			err = onOffInto(d, name, &h.RotateSecret)
		case "secret_overlap":
			h.SecretOverlap, err = duration(d, name)
		case "tombstone_ttl":
			h.TombstoneTTL, err = duration(d, name)
		case "discovery":
			h.Discovery, err = onOff(d, name)
		case "expire_unused":
			h.ExpireUnused, err = duration(d, name)
		case "enforce":
			h.Enforce, err = parseEnforce(d)
		case "rate_limit":
			h.RateLimit, err = parseRateLimit(d)
		case "rate_limit_exempt":
			h.RateLimitExempt, err = someArgs(d)
		case "max_clients":
			h.MaxClients, err = count(d, name)
		case "cors_origins":
			h.CORSOrigins, err = someArgs(d)
		case "audit_retention":
			h.AuditRetention, err = duration(d, name)
		case "cimd":
			err = onOffInto(d, name, &h.CIMD)
		case "cimd_hosts":
			h.CIMDHosts, err = someArgs(d)
		case "cimd_min_ttl":
			h.CIMDMinTTL, err = duration(d, name)
		case "cimd_max_ttl":
			h.CIMDMaxTTL, err = duration(d, name)
		case "cimd_grace":
			h.CIMDGrace, err = duration(d, name)
		case "policy":
			var raw json.RawMessage
			raw, err = parseGuest(d, "policy", "dcr.policies.")
			h.PoliciesRaw = append(h.PoliciesRaw, raw)
		case "hook":
			var raw json.RawMessage
			raw, err = parseGuest(d, "hook", "dcr.hooks.")
			h.HooksRaw = append(h.HooksRaw, raw)
		default:
			return d.Errf("unknown subdirective %s", name)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// repeatable are the subdirectives that may be given more than once.
var repeatable = map[string]bool{
	"software_statement": true,
	"policy":             true,
	"hook":               true,
}

// parseGuest parses "<kind> <module> [args...] [{ ... }]" into the JSON of
// the named module in the namespace that prefix starts, with the module's
// own Caddyfile parser, which receives the tokens from the module name on.
func parseGuest(d *caddyfile.Dispenser, kind, prefix string) (json.RawMessage, error) {
	if !d.NextArg() {
		return nil, d.Errf("%s: name the module, such as %s", kind, guestExample[kind])
	}
	name := d.Val()
	unm, err := caddyfile.UnmarshalModule(d, prefix+name)
	if err != nil {
		return nil, err
	}
	return caddyconfig.JSONModuleObject(unm, kind, name, nil), nil
}

// guestExample names a built-in module of each kind, for error messages.
var guestExample = map[string]string{
	"policy": "expression or reserved_names",
	"hook":   "webhook",
}

// parseEnforce parses the enforce block.
func parseEnforce(d *caddyfile.Dispenser) (*Enforce, error) {
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	e := &Enforce{}
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if seen[name] {
			return nil, d.Errf("enforce: subdirective %s given more than once", name)
		}
		seen[name] = true

		var err error
		switch name {
		case "authorize":
			e.Authorize, err = oneArg(d)
		case "token":
			e.Token, err = oneArg(d)
		case "registered_only":
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			e.RegisteredOnly = true
		case "client_id_header":
			e.ClientIDHeader, err = oneArg(d)
		case "client_name_header":
			e.ClientNameHeader, err = oneArg(d)
		case "client_type_header":
			e.ClientTypeHeader, err = oneArg(d)
		default:
			return nil, d.Errf("enforce: unknown subdirective %s", name)
		}
		if err != nil {
			return nil, err
		}
	}
	return e, nil
}

// parseStatementIssuer parses a software_statement block.
func parseStatementIssuer(d *caddyfile.Dispenser) (SoftwareStatementIssuer, error) {
	var iss SoftwareStatementIssuer
	if d.NextArg() {
		return iss, d.ArgErr()
	}
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if seen[name] {
			return iss, d.Errf("software_statement: subdirective %s given more than once", name)
		}
		seen[name] = true

		var err error
		switch name {
		case "issuer":
			iss.Issuer, err = oneArg(d)
		case "jwks_file":
			iss.JWKSFile, err = oneArg(d)
		case "jwks_url":
			iss.JWKSURL, err = oneArg(d)
		case "algorithms":
			iss.Algorithms, err = someArgs(d)
		default:
			return iss, d.Errf("software_statement: unknown subdirective %s", name)
		}
		if err != nil {
			return iss, err
		}
	}
	if iss.Issuer == "" {
		return iss, d.Err("software_statement: issuer is required")
	}
	return iss, nil
}

// parseFetch parses the fetch block.
func parseFetch(d *caddyfile.Dispenser) (*FetchConfig, error) {
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	f := &FetchConfig{}
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if seen[name] {
			return nil, d.Errf("fetch: subdirective %s given more than once", name)
		}
		seen[name] = true

		var err error
		switch name {
		case "allow_networks":
			f.AllowNetworks, err = someArgs(d)
		case "timeout":
			f.Timeout, err = duration(d, "fetch timeout")
		case "max_size":
			var v string
			if v, err = oneArg(d); err == nil {
				var size uint64
				size, err = humanize.ParseBytes(v)
				if err != nil {
					return nil, d.Errf("fetch max_size %q: %v", v, err)
				}
				f.MaxSize = int64(size)
			}
		case "trusted_roots":
			f.TrustedRoots, err = someArgs(d)
		default:
			return nil, d.Errf("fetch: unknown subdirective %s", name)
		}
		if err != nil {
			return nil, err
		}
	}
	return f, nil
}

// parseRateLimit parses "rate_limit <n> <window>" or "rate_limit off".
func parseRateLimit(d *caddyfile.Dispenser) (*RateLimit, error) {
	args := d.RemainingArgs()
	switch {
	case len(args) == 1 && args[0] == "off":
		return &RateLimit{Off: true}, nil
	case len(args) != 2:
		return nil, d.Errf("rate_limit: want <requests> <window> or off, got %d arguments",
			len(args))
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 1 {
		return nil, d.Errf("rate_limit %q: the number of requests must be a positive integer",
			args[0])
	}
	window, err := caddy.ParseDuration(args[1])
	if err != nil || window <= 0 {
		return nil, d.Errf("rate_limit window %q: want a positive duration such as 1h",
			args[1])
	}
	return &RateLimit{Requests: n, Window: caddy.Duration(window)}, nil
}

// count parses the single non-negative integer argument of the current
// subdirective.
func count(d *caddyfile.Dispenser, name string) (int, error) {
	v, err := oneArg(d)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, d.Errf("%s %q: want a non-negative integer", name, v)
	}
	return n, nil
}

// duration parses the single, non-negative duration argument of the
// current subdirective.
func duration(d *caddyfile.Dispenser, name string) (caddy.Duration, error) {
	v, err := oneArg(d)
	if err != nil {
		return 0, err
	}
	dur, err := caddy.ParseDuration(v)
	if err != nil {
		return 0, d.Errf("%s %q: %v", name, v, err)
	}
	if dur < 0 {
		return 0, d.Errf("%s %q: must not be negative", name, v)
	}
	return caddy.Duration(dur), nil
}

func (h *Handler) parseMaxBody(d *caddyfile.Dispenser) error {
	v, err := oneArg(d)
	if err != nil {
		return err
	}
	size, err := humanize.ParseBytes(v)
	if err != nil {
		return d.Errf("max_body %q: %v", v, err)
	}
	if size == 0 || size > maxMaxBody {
		return d.Errf("max_body %q: must be between 1 byte and 1MiB", v)
	}
	h.MaxBody = int64(size)
	return nil
}

// oneArg returns the single argument of the current subdirective.
func oneArg(d *caddyfile.Dispenser) (string, error) {
	args := d.RemainingArgs()
	if len(args) != 1 {
		return "", d.ArgErr()
	}
	return args[0], nil
}

// someArgs returns the one or more arguments of the current subdirective.
func someArgs(d *caddyfile.Dispenser) ([]string, error) {
	args := d.RemainingArgs()
	if len(args) == 0 {
		return nil, d.ArgErr()
	}
	return args, nil
}

// onOff parses the single on|off argument of the current subdirective.
func onOff(d *caddyfile.Dispenser, name string) (*bool, error) {
	v, err := oneArg(d)
	if err != nil {
		return nil, err
	}
	var b bool
	switch v {
	case "on":
		b = true
	case "off":
	default:
		return nil, d.Errf("%s: expected on or off, got %q", name, v)
	}
	return &b, nil
}

// onOffInto parses the single on|off argument of the current subdirective
// into b.
func onOffInto(d *caddyfile.Dispenser, name string, b *bool) error {
	on, err := onOff(d, name)
	if err == nil {
		*b = *on
	}
	return err
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
