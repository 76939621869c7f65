package dcr

import (
	"bytes"
	"encoding/json"
	"flag"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	// Registers reverse_proxy for the golden cases that use it.
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

var update = flag.Bool("update", false,
	"rewrite the golden files in testdata/caddyfile")

// handlerFields are the JSON names of the handler's config as documented
// on Handler, plus the "handler" member naming the module.
var handlerFields = []string{
	"handler", "endpoint", "store", "grant_types", "auth_methods",
	"scopes", "default_scope", "require_https", "redirect_schemes",
	"secret_lifetime", "max_body", "management", "base_url",
	"rotate_token", "rotate_secret", "secret_overlap", "tombstone_ttl",
	"discovery", "enforce", "expire_unused", "initial_access_tokens",
	"redirect_hosts", "require_initial_access_token", "software_statements",
	"require_software_statement", "redirect_preset", "fetch", "rate_limit",
	"rate_limit_exempt", "max_clients", "cors_origins", "audit_retention",
	"postgres", "policies", "hooks",
}

// enforceFields are the JSON names of the enforce block as documented on
// Enforce.
var enforceFields = []string{
	"authorize", "token", "registered_only", "client_id_header",
	"client_name_header", "client_type_header",
}

// TestCaddyfileAdapt adapts Caddyfiles with the caddyfile adapter and
// compares the JSON with testdata/caddyfile/<name>.json. Run with -update
// to rewrite those files after a deliberate change, then read the diff.
func TestCaddyfileAdapt(t *testing.T) {
	on, off := true, false
	cases := []struct {
		name      string
		caddyfile string
		// want is the dcr handler the JSON must decode to.
		want Handler
	}{
		{
			name: "minimal",
			caddyfile: `:8080 {
	dcr
}
`,
			want: Handler{},
		},
		{
			name: "all_subdirectives",
			caddyfile: `:8080 {
	dcr {
		endpoint /oauth/register
		store /var/lib/caddy/dcr/clients.db
		grant_types authorization_code refresh_token client_credentials
		auth_methods client_secret_basic none private_key_jwt
		scopes openid profile email offline_access
		default_scope openid profile
		require_https off
		redirect_schemes myapp
		secret_lifetime 720h
		max_body 16KiB
		management on
		base_url https://auth.example.com/idp
		rotate_token on
		rotate_secret on
		secret_overlap 1h30m
		tombstone_ttl 7d
	}
}
`,
			want: Handler{
				Endpoint: "/oauth/register",
				Store:    "/var/lib/caddy/dcr/clients.db",
				GrantTypes: []string{
					"authorization_code", "refresh_token",
					"client_credentials",
				},
				AuthMethods: []string{
					"client_secret_basic", "none", "private_key_jwt",
				},
				Scopes: []string{
					"openid", "profile", "email", "offline_access",
				},
				DefaultScope:    []string{"openid", "profile"},
				RequireHTTPS:    &off,
				RedirectSchemes: []string{"myapp"},
				SecretLifetime:  caddy.Duration(720 * time.Hour),
				MaxBody:         16 << 10,
				Management:      &on,
				BaseURL:         "https://auth.example.com/idp",
				RotateToken:     &on,
				RotateSecret:    true,
				SecretOverlap:   caddy.Duration(90 * time.Minute),
				TombstoneTTL:    caddy.Duration(7 * 24 * time.Hour),
			},
		},
		{
			// Guest modules, in the order written, each parsed
			// by its own module.
			name: "guests",
			caddyfile: `:8080 {
	dcr {
		policy expression !client_name.lowerAscii().contains("acme") {
			description "acme names are ours"
		}
		policy reserved_names Acme "Acme Console"
		hook webhook https://backend.example/dcr-events {
			secret {env.DCR_WEBHOOK_SECRET}
			include_secret
			timeout 5s
		}
	}
}
`,
			want: Handler{
				PoliciesRaw: []json.RawMessage{
					json.RawMessage(`{"description":"acme names are ours",` +
						`"expression":"!client_name.lowerAscii().contains(\"acme\")",` +
						`"policy":"expression"}`),
					json.RawMessage(`{"names":["Acme","Acme Console"],` +
						`"policy":"reserved_names"}`),
				},
				HooksRaw: []json.RawMessage{
					json.RawMessage(`{"hook":"webhook","include_secret":true,` +
						`"secret":"{env.DCR_WEBHOOK_SECRET}","timeout":5000000000,` +
						`"url":"https://backend.example/dcr-events"}`),
				},
			},
		},
		{
			// Who may register: tokens, trusted statement issuers,
			// the MCP preset and the fetch rules.
			name: "registration_modes",
			caddyfile: `:8080 {
	dcr {
		initial_access_token {env.DCR_IAT} {file./run/secrets/iat}
		require_initial_access_token on
		software_statement {
			issuer https://issuer.example
			jwks_url https://issuer.example/jwks.json
		}
		software_statement {
			issuer partner
			jwks_file /etc/caddy/partner-jwks.json
			algorithms ES256 EdDSA
		}
		require_software_statement on
		redirect_preset mcp
		redirect_hosts app.example.com *.partner.example
		fetch {
			allow_networks 10.1.0.0/16 ::1/128
			timeout 3s
			max_size 32KiB
			trusted_roots /etc/caddy/ca.pem
		}
	}
}
`,
			want: Handler{
				InitialAccessTokens: []string{
					"{env.DCR_IAT}", "{file./run/secrets/iat}",
				},
				RequireInitialAccessToken: true,
				SoftwareStatements: []SoftwareStatementIssuer{
					{
						Issuer:  "https://issuer.example",
						JWKSURL: "https://issuer.example/jwks.json",
					},
					{
						Issuer:     "partner",
						JWKSFile:   "/etc/caddy/partner-jwks.json",
						Algorithms: []string{"ES256", "EdDSA"},
					},
				},
				RequireSoftwareStatement: true,
				RedirectPreset:           "mcp",
				RedirectHosts:            []string{"app.example.com", "*.partner.example"},
				Fetch: &FetchConfig{
					AllowNetworks: []string{"10.1.0.0/16", "::1/128"},
					Timeout:       caddy.Duration(3 * time.Second),
					MaxSize:       32 << 10,
					TrustedRoots:  []string{"/etc/caddy/ca.pem"},
				},
			},
		},
		{
			// Production limits and the audit trail.
			name: "limits",
			caddyfile: `:8080 {
	dcr {
		rate_limit 5 10m
		rate_limit_exempt 203.0.113.0/24 2001:db8::/32
		max_clients 100000
		cors_origins https://app.example.com http://localhost:5173
		audit_retention 30d
	}
}
`,
			want: Handler{
				RateLimit:       &RateLimit{Requests: 5, Window: caddy.Duration(10 * time.Minute)},
				RateLimitExempt: []string{"203.0.113.0/24", "2001:db8::/32"},
				MaxClients:      100000,
				CORSOrigins:     []string{"https://app.example.com", "http://localhost:5173"},
				AuditRetention:  caddy.Duration(30 * 24 * time.Hour),
			},
		},
		{
			name: "rate_limit_off",
			caddyfile: `:8080 {
	dcr {
		rate_limit off
	}
}
`,
			want: Handler{RateLimit: &RateLimit{Off: true}},
		},
		{
			// "off" must survive into the JSON as false, not be
			// dropped as empty and then defaulted back to on.
			name: "management_off",
			caddyfile: `:8080 {
	dcr {
		management off
		rotate_token off
		rotate_secret off
		tombstone_ttl 0s
	}
}
`,
			want: Handler{Management: &off, RotateToken: &off},
		},
		{
			// reverse_proxy comes first in the file; the directive
			// order must still put dcr ahead of it.
			name: "reverse_proxy",
			caddyfile: `http://auth.example.com {
	reverse_proxy localhost:9000
	dcr {
		store {env.DCR_STORE}
		require_https on
	}
}
`,
			want: Handler{Store: "{env.DCR_STORE}", RequireHTTPS: &on},
		},
		{
			// In a route block the order is the file's, as Caddy
			// documents for route.
			name: "route_block",
			caddyfile: `:8080 {
	route /oauth/* {
		dcr {
			endpoint /oauth/register
		}
		reverse_proxy localhost:9000
	}
}
`,
			want: Handler{Endpoint: "/oauth/register"},
		},
		{
			// Fronting a backend: discovery, enforcement with every
			// subdirective, and expiry of unused clients.
			name: "enforce",
			caddyfile: `auth.example.com {
	dcr {
		discovery off
		expire_unused 90d
		enforce {
			authorize /oauth/authorize
			token /oauth/token
			registered_only
			client_id_header X-Client-ID
			client_name_header X-Client-Name
			client_type_header X-Client-Type
		}
	}
	reverse_proxy localhost:9000
}
`,
			want: Handler{
				Discovery:    &off,
				ExpireUnused: caddy.Duration(90 * 24 * time.Hour),
				Enforce: &Enforce{
					Authorize:        "/oauth/authorize",
					Token:            "/oauth/token",
					RegisteredOnly:   true,
					ClientIDHeader:   "X-Client-ID",
					ClientNameHeader: "X-Client-Name",
					ClientTypeHeader: "X-Client-Type",
				},
			},
		},
		{
			// Only the token endpoint; discovery stays at its
			// default, which the JSON leaves out.
			name: "enforce_token_only",
			caddyfile: `:8080 {
	dcr {
		endpoint /oauth/register
		enforce {
			token /oauth/token
		}
	}
	reverse_proxy localhost:9000
}
`,
			want: Handler{
				Endpoint: "/oauth/register",
				Enforce:  &Enforce{Token: "/oauth/token"},
			},
		},
	}

	adapter := caddyconfig.GetAdapter("caddyfile")
	if adapter == nil {
		t.Fatal("no caddyfile adapter registered")
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw, warnings, err := adapter.Adapt([]byte(tc.caddyfile), nil)
			if err != nil {
				t.Fatalf("adapting: %v", err)
			}
			for _, w := range warnings {
				t.Errorf("warning: %s", w)
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, raw, "", "\t"); err != nil {
				t.Fatalf("indenting: %v", err)
			}
			pretty.WriteByte('\n')

			golden := filepath.Join("testdata", "caddyfile", tc.name+".json")
			if *update {
				if err := os.WriteFile(golden, pretty.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("reading golden file (run with -update): %v", err)
			}
			if !bytes.Equal(pretty.Bytes(), want) {
				t.Errorf("adapted JSON differs from %s; got:\n%s",
					golden, pretty.Bytes())
			}

			// Beyond the golden text: the handler order, the JSON
			// names and the values they decode to.
			var cfg any
			if err := json.Unmarshal(raw, &cfg); err != nil {
				t.Fatal(err)
			}
			var handlers []map[string]any
			collectHandlers(cfg, &handlers)
			names := make([]string, len(handlers))
			for i, h := range handlers {
				names[i], _ = h["handler"].(string)
			}
			d := slices.Index(names, "dcr")
			if d < 0 || slices.Index(names[d+1:], "dcr") >= 0 {
				t.Fatalf("handlers %q: want exactly one dcr", names)
			}
			if rp := slices.Index(names, "reverse_proxy"); rp >= 0 && rp < d {
				t.Errorf("handlers %q: reverse_proxy before dcr", names)
			}

			for k := range handlers[d] {
				if !slices.Contains(handlerFields, k) {
					t.Errorf("undocumented JSON member %q", k)
				}
			}
			enforce, _ := handlers[d]["enforce"].(map[string]any)
			for k := range enforce {
				if !slices.Contains(enforceFields, k) {
					t.Errorf("undocumented JSON member enforce.%s", k)
				}
			}
			b, _ := json.Marshal(handlers[d])
			var got Handler
			dec := json.NewDecoder(bytes.NewReader(b))
			if err := dec.Decode(&got); err != nil {
				t.Fatalf("decoding handler %s: %v", b, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("handler =\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
}

// collectHandlers appends every object with a "handler" member, which is
// how Caddy's JSON names a handler, in config order: lists in their
// order, object members by name.
func collectHandlers(v any, out *[]map[string]any) {
	switch v := v.(type) {
	case map[string]any:
		if _, ok := v["handler"]; ok {
			*out = append(*out, v)
		}
		for _, k := range slices.Sorted(maps.Keys(v)) {
			collectHandlers(v[k], out)
		}
	case []any:
		for _, c := range v {
			collectHandlers(c, out)
		}
	}
}

// TestCaddyfileUnmarshal covers what each subdirective sets.
func TestCaddyfileUnmarshal(t *testing.T) {
	on, off := true, false
	cases := []struct {
		name  string
		input string
		want  Handler
	}{
		{"bare", "dcr", Handler{}},
		{"empty block", "dcr {\n}", Handler{}},
		{"endpoint", "dcr {\n endpoint /r\n}", Handler{Endpoint: "/r"}},
		{"store", "dcr {\n store \"/a b/c.db\"\n}", Handler{Store: "/a b/c.db"}},
		{
			"store postgres",
			"dcr {\n store postgres {env.DB}\n}",
			Handler{Postgres: &PostgresStore{DSN: "{env.DB}"}},
		},
		{
			"store postgres pool",
			"dcr {\n store postgres \"host=db user=dcr\" {\n max_conns 20\n" +
				" min_conns 2\n connect_timeout 3s\n max_conn_lifetime 2h\n" +
				" max_conn_idle_time 10m\n }\n}",
			Handler{Postgres: &PostgresStore{
				DSN: "host=db user=dcr", MaxConns: 20, MinConns: 2,
				ConnectTimeout:  caddy.Duration(3 * time.Second),
				MaxConnLifetime: caddy.Duration(2 * time.Hour),
				MaxConnIdleTime: caddy.Duration(10 * time.Minute),
			}},
		},
		{
			"grant_types", "dcr {\n grant_types implicit password\n}",
			Handler{GrantTypes: []string{"implicit", "password"}},
		},
		{
			"auth_methods", "dcr {\n auth_methods none\n}",
			Handler{AuthMethods: []string{"none"}},
		},
		{
			"scopes", "dcr {\n scopes a b c\n}",
			Handler{Scopes: []string{"a", "b", "c"}},
		},
		{
			"default_scope", "dcr {\n default_scope a\n}",
			Handler{DefaultScope: []string{"a"}},
		},
		{
			"require_https on", "dcr {\n require_https on\n}",
			Handler{RequireHTTPS: &on},
		},
		{
			"require_https off", "dcr {\n require_https off\n}",
			Handler{RequireHTTPS: &off},
		},
		{
			"redirect_schemes", "dcr {\n redirect_schemes myapp other\n}",
			Handler{RedirectSchemes: []string{"myapp", "other"}},
		},
		{
			"secret_lifetime days", "dcr {\n secret_lifetime 30d\n}",
			Handler{SecretLifetime: caddy.Duration(30 * 24 * time.Hour)},
		},
		{
			"secret_lifetime zero", "dcr {\n secret_lifetime 0s\n}",
			Handler{},
		},
		{"max_body bytes", "dcr {\n max_body 4096\n}", Handler{MaxBody: 4096}},
		{"max_body 1MiB", "dcr {\n max_body 1MiB\n}", Handler{MaxBody: 1 << 20}},
		{"max_body 1MB", "dcr {\n max_body 1MB\n}", Handler{MaxBody: 1000000}},
		{"management on", "dcr {\n management on\n}", Handler{Management: &on}},
		{"management off", "dcr {\n management off\n}", Handler{Management: &off}},
		{
			"base_url", "dcr {\n base_url https://a.example/p/\n}",
			Handler{BaseURL: "https://a.example/p/"},
		},
		{
			// Checked by Validate, which sees JSON configs too.
			"base_url unchecked", "dcr {\n base_url ftp://a\n}",
			Handler{BaseURL: "ftp://a"},
		},
		{"rotate_token on", "dcr {\n rotate_token on\n}", Handler{RotateToken: &on}},
		{"rotate_token off", "dcr {\n rotate_token off\n}", Handler{RotateToken: &off}},
		{"rotate_secret on", "dcr {\n rotate_secret on\n}", Handler{RotateSecret: true}},
		{"rotate_secret off", "dcr {\n rotate_secret off\n}", Handler{}},
		{
			"secret_overlap", "dcr {\n secret_overlap 90s\n}",
			Handler{SecretOverlap: caddy.Duration(90 * time.Second)},
		},
		{"secret_overlap zero", "dcr {\n secret_overlap 0\n}", Handler{}},
		{
			"tombstone_ttl days", "dcr {\n tombstone_ttl 90d\n}",
			Handler{TombstoneTTL: caddy.Duration(90 * 24 * time.Hour)},
		},
		{
			"all management subdirectives",
			"dcr {\n management off\n base_url http://h:8080\n" +
				" rotate_token off\n rotate_secret on\n" +
				" secret_overlap 1h\n tombstone_ttl 1h\n}",
			Handler{
				Management:    &off,
				BaseURL:       "http://h:8080",
				RotateToken:   &off,
				RotateSecret:  true,
				SecretOverlap: caddy.Duration(time.Hour),
				TombstoneTTL:  caddy.Duration(time.Hour),
			},
		},
		{"discovery on", "dcr {\n discovery on\n}", Handler{Discovery: &on}},
		{"discovery off", "dcr {\n discovery off\n}", Handler{Discovery: &off}},
		{
			"expire_unused", "dcr {\n expire_unused 30d\n}",
			Handler{ExpireUnused: caddy.Duration(30 * 24 * time.Hour)},
		},
		{"expire_unused zero", "dcr {\n expire_unused 0s\n}", Handler{}},
		{
			// Checked by Validate, which sees JSON configs too.
			"enforce empty block", "dcr {\n enforce {\n }\n}",
			Handler{Enforce: &Enforce{}},
		},
		{"enforce without block", "dcr {\n enforce\n}", Handler{Enforce: &Enforce{}}},
		{
			"enforce authorize", "dcr {\n enforce {\n  authorize /a\n }\n}",
			Handler{Enforce: &Enforce{Authorize: "/a"}},
		},
		{
			"enforce token", "dcr {\n enforce {\n  token /t\n }\n}",
			Handler{Enforce: &Enforce{Token: "/t"}},
		},
		{
			"enforce registered_only",
			"dcr {\n enforce {\n  token /t\n  registered_only\n }\n}",
			Handler{Enforce: &Enforce{Token: "/t", RegisteredOnly: true}},
		},
		{
			"enforce headers",
			"dcr {\n enforce {\n  client_id_header A\n" +
				"  client_name_header B\n  client_type_header C\n }\n}",
			Handler{Enforce: &Enforce{
				ClientIDHeader: "A", ClientNameHeader: "B", ClientTypeHeader: "C",
			}},
		},
		{
			// Subdirectives after the enforce block belong to dcr.
			"after enforce",
			"dcr {\n enforce {\n  token /t\n }\n endpoint /r\n discovery off\n}",
			Handler{
				Endpoint:  "/r",
				Discovery: &off,
				Enforce:   &Enforce{Token: "/t"},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var h Handler
			d := caddyfile.NewTestDispenser(tc.input)
			if err := h.UnmarshalCaddyfile(d); err != nil {
				t.Fatalf("UnmarshalCaddyfile: %v", err)
			}
			if !reflect.DeepEqual(h, tc.want) {
				t.Errorf("handler =\n%+v\nwant\n%+v", h, tc.want)
			}
		})
	}
}

// TestCaddyfileErrors covers Caddyfile input that must be refused, with a
// message that names the problem and the line.
func TestCaddyfileErrors(t *testing.T) {
	argc := []string{"wrong argument count"}
	cases := []struct {
		name  string
		input string
		want  []string
	}{
		{
			"unknown subdirective", "dcr {\n endpoint /r\n enpoint /x\n}",
			[]string{"unknown subdirective enpoint", "Testfile:3"},
		},
		{
			"duplicate subdirective", "dcr {\n scopes a\n scopes b\n}",
			[]string{"scopes given more than once", "Testfile:3"},
		},
		{
			"argument on directive line", "dcr /register",
			[]string{"wrong argument count", "Testfile:1"},
		},
		{
			"argument before block", "dcr /register {\n endpoint /r\n}",
			[]string{"wrong argument count"},
		},
		{
			"endpoint missing", "dcr {\n endpoint\n}",
			[]string{"wrong argument count", "Testfile:2"},
		},
		{"endpoint two", "dcr {\n endpoint /a /b\n}", argc},
		{
			"policy without module", "dcr {\n policy\n}",
			[]string{"policy: name the module", "Testfile:2"},
		},
		{
			"policy unknown module", "dcr {\n policy nosuch x\n}",
			[]string{"dcr.policies.nosuch", "Testfile:2"},
		},
		{
			"hook without module", "dcr {\n hook\n}",
			[]string{"hook: name the module", "webhook"},
		},
		{
			"hook unknown module", "dcr {\n hook nosuch\n}",
			[]string{"dcr.hooks.nosuch", "Testfile:2"},
		},
		{
			"webhook without secret", "dcr {\n hook webhook https://x.example\n}",
			[]string{"secret"},
		},
		{"store missing", "dcr {\n store\n}", argc},
		{
			"store postgres without DSN", "dcr {\n store postgres\n}",
			[]string{"store: want <path> or postgres <dsn>", "Testfile:2"},
		},
		{
			"store other kind", "dcr {\n store redis x\n}",
			[]string{"store: want <path> or postgres <dsn>"},
		},
		{
			"store file with block", "dcr {\n store /a.db {\n max_conns 2\n }\n}",
			[]string{"a bbolt file takes no block"},
		},
		{
			"store postgres unknown", "dcr {\n store postgres x {\n pool 2\n }\n}",
			[]string{"unknown subdirective pool"},
		},
		{
			"store postgres twice", "dcr {\n store postgres x {\n max_conns 2\n max_conns 3\n }\n}",
			[]string{"max_conns given more than once"},
		},
		{
			"store postgres max_conns zero", "dcr {\n store postgres x {\n max_conns 0\n }\n}",
			[]string{"max_conns \"0\": want a positive integer", "Testfile:3"},
		},
		{"grant_types missing", "dcr {\n grant_types\n}", argc},
		{"auth_methods missing", "dcr {\n auth_methods\n}", argc},
		{"scopes missing", "dcr {\n scopes\n}", argc},
		{"default_scope missing", "dcr {\n default_scope\n}", argc},
		{"redirect_schemes missing", "dcr {\n redirect_schemes\n}", argc},
		{"require_https missing", "dcr {\n require_https\n}", argc},
		{"require_https two", "dcr {\n require_https on off\n}", argc},
		{
			"require_https bad", "dcr {\n require_https yes\n}",
			[]string{"require_https", `"yes"`, "on or off"},
		},
		{
			"require_https capitals", "dcr {\n require_https ON\n}",
			[]string{"require_https", `"ON"`},
		},
		{"secret_lifetime missing", "dcr {\n secret_lifetime\n}", argc},
		{
			"secret_lifetime bad", "dcr {\n secret_lifetime forever\n}",
			[]string{"secret_lifetime", `"forever"`, "Testfile:2"},
		},
		{
			"secret_lifetime no unit", "dcr {\n secret_lifetime 30\n}",
			[]string{"secret_lifetime", `"30"`},
		},
		{
			"secret_lifetime negative", "dcr {\n secret_lifetime -1h\n}",
			[]string{"secret_lifetime", `"-1h"`, "negative"},
		},
		{"max_body missing", "dcr {\n max_body\n}", argc},
		{
			"max_body bad", "dcr {\n max_body lots\n}",
			[]string{"max_body", `"lots"`, "Testfile:2"},
		},
		{
			"max_body negative", "dcr {\n max_body -1\n}",
			[]string{"max_body", `"-1"`},
		},
		{
			"max_body zero", "dcr {\n max_body 0\n}",
			[]string{"max_body", `"0"`, "between"},
		},
		{
			"max_body above 1MiB", "dcr {\n max_body 1048577\n}",
			[]string{"max_body", `"1048577"`, "1MiB"},
		},
		{
			"max_body 2MiB", "dcr {\n max_body 2MiB\n}",
			[]string{"max_body", `"2MiB"`},
		},
		{"management missing", "dcr {\n management\n}", argc},
		{"management two", "dcr {\n management on off\n}", argc},
		{
			"management bad", "dcr {\n management enabled\n}",
			[]string{"management", `"enabled"`, "on or off", "Testfile:2"},
		},
		{
			"management true", "dcr {\n management true\n}",
			[]string{"management", `"true"`},
		},
		{
			"management duplicate", "dcr {\n management on\n management off\n}",
			[]string{"management given more than once", "Testfile:3"},
		},
		{
			"software_statement without issuer",
			"dcr {\n software_statement {\n  jwks_file /k\n }\n}",
			[]string{"software_statement: issuer is required"},
		},
		{
			"software_statement unknown subdirective",
			"dcr {\n software_statement {\n  issuer a\n  key /k\n }\n}",
			[]string{"software_statement: unknown subdirective key", "Testfile:4"},
		},
		{
			"software_statement duplicate subdirective",
			"dcr {\n software_statement {\n  issuer a\n  issuer b\n }\n}",
			[]string{"software_statement: subdirective issuer given more than once"},
		},
		{
			"software_statement argument",
			"dcr {\n software_statement a {\n  issuer a\n }\n}", argc,
		},
		{"algorithms missing", "dcr {\n software_statement {\n  issuer a\n  algorithms\n }\n}", argc},
		{
			"require_software_statement bad", "dcr {\n require_software_statement yes\n}",
			[]string{"require_software_statement", `"yes"`, "on or off"},
		},
		{
			"require_initial_access_token duplicate",
			"dcr {\n require_initial_access_token on\n require_initial_access_token on\n}",
			[]string{"require_initial_access_token given more than once"},
		},
		{"redirect_preset missing", "dcr {\n redirect_preset\n}", argc},
		{
			"fetch unknown subdirective", "dcr {\n fetch {\n  proxy x\n }\n}",
			[]string{"fetch: unknown subdirective proxy", "Testfile:3"},
		},
		{
			"fetch max_size bad", "dcr {\n fetch {\n  max_size lots\n }\n}",
			[]string{"fetch max_size", `"lots"`},
		},
		{
			"fetch timeout bad", "dcr {\n fetch {\n  timeout soon\n }\n}",
			[]string{"fetch timeout", `"soon"`},
		},
		{"fetch allow_networks missing", "dcr {\n fetch {\n  allow_networks\n }\n}", argc},
		{
			"rate_limit one argument", "dcr {\n rate_limit 5\n}",
			[]string{"rate_limit: want <requests> <window> or off"},
		},
		{
			"rate_limit zero", "dcr {\n rate_limit 0 1h\n}",
			[]string{"rate_limit", `"0"`, "positive integer"},
		},
		{
			"rate_limit bad window", "dcr {\n rate_limit 5 soon\n}",
			[]string{"rate_limit window", `"soon"`},
		},
		{
			"rate_limit negative window", "dcr {\n rate_limit 5 -1h\n}",
			[]string{"rate_limit window", `"-1h"`},
		},
		{"rate_limit_exempt missing", "dcr {\n rate_limit_exempt\n}", argc},
		{
			"max_clients negative", "dcr {\n max_clients -1\n}",
			[]string{"max_clients", `"-1"`, "non-negative"},
		},
		{
			"max_clients word", "dcr {\n max_clients many\n}",
			[]string{"max_clients", `"many"`},
		},
		{"cors_origins missing", "dcr {\n cors_origins\n}", argc},
		{
			"audit_retention bad", "dcr {\n audit_retention forever\n}",
			[]string{"audit_retention", `"forever"`},
		},
		{"base_url missing", "dcr {\n base_url\n}", argc},
		{"base_url two", "dcr {\n base_url https://a https://b\n}", argc},
		{
			"base_url duplicate", "dcr {\n base_url https://a\n base_url https://a\n}",
			[]string{"base_url given more than once"},
		},
		{"rotate_token missing", "dcr {\n rotate_token\n}", argc},
		{
			"rotate_token bad", "dcr {\n rotate_token 1\n}",
			[]string{"rotate_token", `"1"`, "on or off"},
		},
		{
			"rotate_token duplicate", "dcr {\n rotate_token on\n rotate_token on\n}",
			[]string{"rotate_token given more than once"},
		},
		{"rotate_secret missing", "dcr {\n rotate_secret\n}", argc},
		{"rotate_secret two", "dcr {\n rotate_secret on on\n}", argc},
		{
			"rotate_secret bad", "dcr {\n rotate_secret Off\n}",
			[]string{"rotate_secret", `"Off"`, "on or off"},
		},
		{
			"rotate_secret duplicate",
			"dcr {\n rotate_secret off\n rotate_secret on\n}",
			[]string{"rotate_secret given more than once", "Testfile:3"},
		},
		{"secret_overlap missing", "dcr {\n secret_overlap\n}", argc},
		{"secret_overlap two", "dcr {\n secret_overlap 1h 2h\n}", argc},
		{
			"secret_overlap bad", "dcr {\n secret_overlap soon\n}",
			[]string{"secret_overlap", `"soon"`, "Testfile:2"},
		},
		{
			"secret_overlap negative", "dcr {\n secret_overlap -5m\n}",
			[]string{"secret_overlap", `"-5m"`, "negative"},
		},
		{
			"secret_overlap duplicate",
			"dcr {\n secret_overlap 1h\n secret_overlap 1h\n}",
			[]string{"secret_overlap given more than once"},
		},
		{"tombstone_ttl missing", "dcr {\n tombstone_ttl\n}", argc},
		{
			"tombstone_ttl bad", "dcr {\n tombstone_ttl 30days\n}",
			[]string{"tombstone_ttl", `"30days"`, "Testfile:2"},
		},
		{
			"tombstone_ttl no unit", "dcr {\n tombstone_ttl 30\n}",
			[]string{"tombstone_ttl", `"30"`},
		},
		{
			"tombstone_ttl negative", "dcr {\n tombstone_ttl -1d\n}",
			[]string{"tombstone_ttl", `"-1d"`, "negative"},
		},
		{
			"tombstone_ttl duplicate", "dcr {\n tombstone_ttl 1d\n tombstone_ttl 2d\n}",
			[]string{"tombstone_ttl given more than once"},
		},
		{
			// A nested block is not part of the syntax.
			"nested block", "dcr {\n endpoint /r {\n  x\n }\n}",
			[]string{"unknown subdirective"},
		},
		{"discovery missing", "dcr {\n discovery\n}", argc},
		{
			"discovery bad", "dcr {\n discovery yes\n}",
			[]string{"discovery", `"yes"`, "on or off", "Testfile:2"},
		},
		{
			"discovery duplicate", "dcr {\n discovery on\n discovery off\n}",
			[]string{"discovery given more than once", "Testfile:3"},
		},
		{"expire_unused missing", "dcr {\n expire_unused\n}", argc},
		{"expire_unused two", "dcr {\n expire_unused 1d 2d\n}", argc},
		{
			"expire_unused bad", "dcr {\n expire_unused never\n}",
			[]string{"expire_unused", `"never"`, "Testfile:2"},
		},
		{
			"expire_unused negative", "dcr {\n expire_unused -1h\n}",
			[]string{"expire_unused", `"-1h"`, "negative"},
		},
		{
			"enforce argument", "dcr {\n enforce /oauth {\n  token /t\n }\n}",
			[]string{"wrong argument count", "Testfile:2"},
		},
		{
			"enforce duplicate",
			"dcr {\n enforce {\n  token /t\n }\n enforce {\n  token /t\n }\n}",
			[]string{"enforce given more than once", "Testfile:5"},
		},
		{
			"enforce unknown",
			"dcr {\n enforce {\n  token /t\n  tokne /x\n }\n}",
			[]string{"enforce: unknown subdirective tokne", "Testfile:4"},
		},
		{
			// dcr's own subdirectives do not belong in the block.
			"enforce dcr subdirective", "dcr {\n enforce {\n  endpoint /r\n }\n}",
			[]string{"enforce: unknown subdirective endpoint"},
		},
		{
			"enforce subdirective duplicate",
			"dcr {\n enforce {\n  token /t\n  token /u\n }\n}",
			[]string{"enforce: subdirective token given more than once", "Testfile:4"},
		},
		{
			"registered_only duplicate",
			"dcr {\n enforce {\n  registered_only\n  registered_only\n }\n}",
			[]string{"registered_only given more than once"},
		},
		{
			"registered_only argument",
			"dcr {\n enforce {\n  registered_only yes\n }\n}",
			[]string{"wrong argument count", "Testfile:3"},
		},
		{
			"registered_only off", "dcr {\n enforce {\n  registered_only off\n }\n}",
			argc,
		},
		{"authorize missing", "dcr {\n enforce {\n  authorize\n }\n}", argc},
		{"authorize two", "dcr {\n enforce {\n  authorize /a /b\n }\n}", argc},
		{"token missing", "dcr {\n enforce {\n  token\n }\n}", argc},
		{"client_id_header missing", "dcr {\n enforce {\n  client_id_header\n }\n}", argc},
		{
			"client_name_header two",
			"dcr {\n enforce {\n  client_name_header A B\n }\n}", argc,
		},
		{
			"client_type_header missing",
			"dcr {\n enforce {\n  client_type_header\n }\n}", argc,
		},
		{
			"nested block in enforce",
			"dcr {\n enforce {\n  token /t {\n   x\n  }\n }\n}",
			[]string{"enforce: unknown subdirective"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if err == nil {
				t.Fatalf("no error; handler %+v", h)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// provisioned returns a handler configured as Provision leaves an empty
// config, without acquiring a store.
func provisioned() Handler {
	on := true
	return Handler{
		Endpoint:     defaultEndpoint,
		MaxBody:      defaultMaxBody,
		GrantTypes:   slices.Clone(defaultGrantTypes),
		AuthMethods:  slices.Clone(defaultAuthMethods),
		RequireHTTPS: &on,
		Store:        "clients.db",
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name   string
		change func(*Handler)
		want   string // substring of the error; "" for none
	}{
		{"defaults", func(*Handler) {}, ""},
		{
			"identity header is Authorization", func(h *Handler) {
				h.Enforce = &Enforce{Token: "/t", ClientIDHeader: "authorization"}
			}, `client_id_header "authorization"`,
		},
		{
			"identity header invalid", func(h *Handler) {
				h.Enforce = &Enforce{Token: "/t", ClientNameHeader: "X Name"}
			}, "not a valid header name",
		},
		{
			"identity headers the same after folding", func(h *Handler) {
				h.Enforce = &Enforce{Token: "/t", ClientIDHeader: "X-Client",
					ClientTypeHeader: "x_client"}
			}, "same header as client_id_header",
		},
		{
			"identity headers custom", func(h *Handler) {
				h.Enforce = &Enforce{Token: "/t", ClientIDHeader: "X-App-ID"}
			}, "",
		},
		{
			"full", func(h *Handler) {
				h.Endpoint = "/oauth/register"
				h.Scopes = []string{"openid", "profile", "urn:x:read"}
				h.DefaultScope = []string{"openid"}
				h.RedirectSchemes = []string{"myapp", "com.example.app"}
				h.SecretLifetime = caddy.Duration(time.Hour)
				h.MaxBody = maxMaxBody
			}, "",
		},
		{
			"default_scope without scopes", func(h *Handler) {
				h.DefaultScope = []string{"anything"}
			}, "",
		},
		{
			"endpoint without slash", func(h *Handler) {
				h.Endpoint = "register"
			}, `endpoint "register"`,
		},
		{
			"endpoint URL", func(h *Handler) {
				h.Endpoint = "https://a.example/register"
			}, "endpoint",
		},
		{
			"default_scope not in scopes", func(h *Handler) {
				h.Scopes = []string{"openid"}
				h.DefaultScope = []string{"openid", "email"}
			}, `default_scope "email"`,
		},
		{
			"invalid scope token", func(h *Handler) {
				h.Scopes = []string{`open"id`}
			}, `scope "open\"id"`,
		},
		{
			"invalid default scope token", func(h *Handler) {
				h.DefaultScope = []string{"é"}
			}, "not a valid scope token",
		},
		{
			"scope with space", func(h *Handler) {
				h.Scopes = []string{"a b"}
			}, "scopes",
		},
		{
			"empty scope", func(h *Handler) {
				h.Scopes = []string{""}
			}, "scopes",
		},
		{
			"redirect_schemes http", func(h *Handler) {
				h.RedirectSchemes = []string{"http"}
			}, `redirect_schemes "http"`,
		},
		{
			"redirect_schemes HTTPS", func(h *Handler) {
				h.RedirectSchemes = []string{"HTTPS"}
			}, `redirect_schemes "https"`,
		},
		{
			"redirect_schemes javascript", func(h *Handler) {
				h.RedirectSchemes = []string{"myapp", "javascript"}
			}, `redirect_schemes "javascript"`,
		},
		{
			"redirect_schemes data", func(h *Handler) {
				h.RedirectSchemes = []string{"Data"}
			}, `redirect_schemes "data"`,
		},
		{
			"max_body negative", func(h *Handler) {
				h.MaxBody = -1
			}, "max_body",
		},
		{
			"max_body too large", func(h *Handler) {
				h.MaxBody = maxMaxBody + 1
			}, "max_body",
		},
		{
			"secret_lifetime negative", func(h *Handler) {
				h.SecretLifetime = caddy.Duration(-time.Second)
			}, "secret_lifetime",
		},
		{
			"no grant types", func(h *Handler) {
				h.GrantTypes = []string{}
			}, "grant_types",
		},
		{
			"no auth methods", func(h *Handler) {
				h.AuthMethods = []string{}
			}, "auth_methods",
		},
		{
			"management settings", func(h *Handler) {
				off := false
				h.Management = &off
				h.RotateToken = &off
				h.RotateSecret = true
				h.SecretOverlap = caddy.Duration(time.Hour)
				h.TombstoneTTL = caddy.Duration(time.Hour)
			}, "",
		},
		{"base_url https", func(h *Handler) { h.BaseURL = "https://a.example" }, ""},
		{
			"base_url with port and path", func(h *Handler) {
				h.BaseURL = "http://localhost:8080/idp/"
			}, "",
		},
		{
			"base_url relative", func(h *Handler) { h.BaseURL = "/idp" },
			`base_url "/idp"`,
		},
		{
			"base_url without scheme", func(h *Handler) {
				h.BaseURL = "auth.example.com"
			}, `base_url "auth.example.com"`,
		},
		{
			"base_url host only with port", func(h *Handler) {
				h.BaseURL = "auth.example.com:443"
			}, "base_url",
		},
		{
			"base_url ftp", func(h *Handler) { h.BaseURL = "ftp://a.example" },
			`base_url "ftp://a.example"`,
		},
		{
			"base_url without host", func(h *Handler) { h.BaseURL = "https:///idp" },
			"base_url",
		},
		{
			"base_url with query", func(h *Handler) {
				h.BaseURL = "https://a.example/?x=1"
			}, "query",
		},
		{
			"base_url with fragment", func(h *Handler) {
				h.BaseURL = "https://a.example/#f"
			}, "base_url",
		},
		{
			"base_url unparsable", func(h *Handler) {
				h.BaseURL = "https://a.example:port/"
			}, "base_url",
		},
		{
			"secret_overlap negative", func(h *Handler) {
				h.SecretOverlap = caddy.Duration(-time.Minute)
			}, "secret_overlap -1m0s: must not be negative",
		},
		{
			"tombstone_ttl negative", func(h *Handler) {
				h.TombstoneTTL = caddy.Duration(-time.Nanosecond)
			}, "tombstone_ttl -1ns: must not be negative",
		},
		{
			"grant type with space", func(h *Handler) {
				h.GrantTypes = []string{"authorization_code refresh_token"}
			}, "grant_types",
		},
		{
			"expire_unused negative", func(h *Handler) {
				h.ExpireUnused = caddy.Duration(-time.Hour)
			}, "expire_unused -1h0m0s: must not be negative",
		},
		{
			"enforce both", func(h *Handler) {
				h.Enforce = &Enforce{Authorize: "/oauth/authorize", Token: "/oauth/token"}
				h.ExpireUnused = caddy.Duration(time.Hour)
			}, "",
		},
		{
			"enforce authorize only", func(h *Handler) {
				h.Enforce = &Enforce{Authorize: "/authorize"}
			}, "",
		},
		{
			"enforce token only", func(h *Handler) {
				h.Enforce = &Enforce{Token: "/token", RegisteredOnly: true}
			}, "",
		},
		{
			"enforce neither", func(h *Handler) {
				h.Enforce = &Enforce{RegisteredOnly: true}
			}, "enforce: name the authorize or the token endpoint",
		},
		{
			"enforce authorize without slash", func(h *Handler) {
				h.Enforce = &Enforce{Authorize: "oauth/authorize"}
			}, `enforce authorize "oauth/authorize": must be a path`,
		},
		{
			"enforce token URL", func(h *Handler) {
				h.Enforce = &Enforce{Authorize: "/a", Token: "https://as.example/token"}
			}, `enforce token "https://as.example/token"`,
		},
		{
			"enforce authorize is the endpoint", func(h *Handler) {
				h.Enforce = &Enforce{Authorize: "/register"}
			}, `enforce authorize "/register": is the registration endpoint`,
		},
		{
			"enforce token is a custom endpoint", func(h *Handler) {
				h.Endpoint = "/oauth/register"
				h.Enforce = &Enforce{Authorize: "/a", Token: "/oauth/register"}
			}, `enforce token "/oauth/register": is the registration endpoint`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := provisioned()
			tc.change(&h)
			before := h
			err := h.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("Validate accepted %+v", h)
			case err != nil && !strings.Contains(err.Error(), tc.want):
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if !reflect.DeepEqual(h, before) {
				t.Errorf("Validate changed the handler: %+v", h)
			}
		})
	}
}

// TestValidateEmptyScopes checks that an empty scopes list in JSON means
// any scope, as the Scopes godoc says, like an absent one does.
func TestValidateEmptyScopes(t *testing.T) {
	var h Handler
	if err := json.Unmarshal([]byte(
		`{"scopes":[],"default_scope":["openid"]}`), &h); err != nil {
		t.Fatal(err)
	}
	v := provisioned()
	v.Scopes, v.DefaultScope = h.Scopes, h.DefaultScope
	if err := v.Validate(); err != nil {
		t.Errorf(`"scopes": [] refuses every scope: %v`, err)
	}
}

// TestValidateBaseURLEmptyQuery shows that a base_url ending in a bare "?"
// or "#" passes Validate although it carries a (empty) query or fragment:
// url.Parse reports neither in RawQuery or Fragment. The endpoint path is
// then appended after the "?" or "#", so registration_client_uri points at
// the base URL itself.
func TestValidateBaseURLEmptyQuery(t *testing.T) {
	for _, base := range []string{"https://a.example/?", "https://a.example#"} {
		t.Run(base, func(t *testing.T) {
			h := provisioned()
			h.BaseURL = base
			if err := h.Validate(); err == nil {
				r := httptest.NewRequest(http.MethodPost, "/register", nil)
				t.Errorf("Validate accepted base_url %q; client URI %q",
					base, h.clientURI(r, "id"))
			}
		})
	}
}

// TestValidateEnforceUnderEndpoint shows that Validate accepts an enforced
// path below the registration endpoint, such as /register/token, although
// ServeHTTP answers every such path as an RFC 7592 client configuration
// request: the path is never enforced and never reaches the backend.
func TestValidateEnforceUnderEndpoint(t *testing.T) {
	h := provisioned()
	h.Enforce = &Enforce{Token: "/register/token"}
	if err := h.Validate(); err == nil {
		t.Error("Validate accepted enforce token /register/token")
	}
}

// TestCaddyfileExample checks that the example the README starts with
// adapts and validates as "caddy validate" would, without touching its
// store.
func TestCaddyfileExample(t *testing.T) {
	body, err := os.ReadFile("Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	adapter := caddyconfig.GetAdapter("caddyfile")
	raw, warn, err := adapter.Adapt(body, map[string]any{"filename": "Caddyfile.example"})
	if err != nil {
		t.Fatalf("adapting: %v", err)
	}
	if len(warn) > 0 {
		t.Errorf("adapter warnings: %v", warn)
	}
	if !bytes.Contains(raw, []byte(`"redirect_preset":"mcp"`)) {
		t.Errorf("adapted config lacks the mcp preset:\n%s", raw)
	}
	var cfg caddy.Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&cfg); err != nil {
		t.Fatalf("validating: %v", err)
	}
	if _, err := os.Stat("data"); err == nil {
		t.Error("validating created the example's store directory")
	}
}
