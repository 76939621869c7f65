package dcr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"cel.dev/cel-go/cel"

	"github.com/caddy-dcr/caddy-dcr/clientdb"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// hugeComprehension iterates 10^5 times, well past the cost limit.
const hugeComprehension = "[0,1,2,3,4,5,6,7,8,9].map(a, " +
	"[0,1,2,3,4,5,6,7,8,9].map(b, [0,1,2,3,4,5,6,7,8,9].map(c, " +
	"[0,1,2,3,4,5,6,7,8,9].map(d, [0,1,2,3,4,5,6,7,8,9].map(e, " +
	"a + b + c + d + e))))).size() > 0"

// provisionedExpression returns p provisioned and validated.
func provisionedExpression(t testing.TB, p *PolicyExpression) *PolicyExpression {
	t.Helper()
	if err := p.Provision(caddy.Context{}); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	if err := p.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	return p
}

// expressionInput returns a policy input for m whose request comes from
// ip.
func expressionInput(m *clientdb.Metadata, op, clientID, ip string) *PolicyInput {
	r := httptest.NewRequest("POST", "/register", nil)
	vars := map[string]any{caddyhttp.ClientIPVarKey: ip}
	r = r.WithContext(context.WithValue(r.Context(),
		caddyhttp.VarsCtxKey, vars))
	return &PolicyInput{
		Operation: op,
		ClientID:  clientID,
		Metadata:  m,
		Request:   r,
	}
}

func TestPolicyExpressionProvision(t *testing.T) {
	cases := []struct {
		name string
		expr string
		want []string // substrings of the error; none for success
	}{
		{name: "bool", expr: `!client_name.lowerAscii().contains("acme")`},
		{name: "map", expr: `{"scope": "openid"}`},
		{name: "empty map", expr: `{}`},
		{name: "map or empty map",
			expr: `client_name == "" ? {"client_name": "unnamed"} : {}`},
		{name: "dyn",
			expr: `client_name == "" ? dyn({"client_name": "x"}) : true`},
		{name: "no expression", expr: " ",
			want: []string{"policy expression: no expression given"}},
		{name: "bad syntax", expr: "client_name ==",
			want: []string{`policy expression "client_name ==": compiling: `,
				"Syntax error"}},
		{name: "undeclared variable", expr: `client_nam == ""`,
			want: []string{`policy expression "client_nam == \"\"": `,
				"compiling: ERROR: <input>:1:1: undeclared reference " +
					"to 'client_nam'"}},
		{name: "wrong member type", expr: `redirect_uris == "x"`,
			want: []string{"compiling: ", "no matching overload"}},
		{name: "string result", expr: "client_name",
			want: []string{`policy expression "client_name": result is ` +
				"string, want bool or map(string, dyn)"}},
		{name: "map with int keys", expr: "{1: true}",
			want: []string{"result is map(int, bool)"}},
		{name: "list result", expr: "redirect_uris",
			want: []string{"result is list(string)"}},
		{name: "map and true in a conditional",
			expr: `client_name == "" ? {"client_name": "unnamed"} : true`,
			want: []string{"compiling: ", "'_?_:_'",
				"write {} rather than true beside a map"}},
		{name: "long expression is cut",
			expr: strings.Repeat("client_name + ", 20) + "1",
			want: []string{`..."`, "compiling: "}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := &PolicyExpression{Expression: tc.expr}
			err := p.Provision(caddy.Context{})
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Provision: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Provision succeeded, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestPolicyExpressionDefaults(t *testing.T) {
	p := provisionedExpression(t, &PolicyExpression{Expression: "true"})
	if p.Error != "invalid_client_metadata" {
		t.Errorf("Error = %q, want invalid_client_metadata", p.Error)
	}
	if p.Description != "refused by the server's registration policy" {
		t.Errorf("Description = %q", p.Description)
	}
}

func TestPolicyExpressionValidate(t *testing.T) {
	cases := []struct {
		code string
		ok   bool
	}{
		{"", true},
		{"invalid_client_metadata", true},
		{"invalid_redirect_uri", true},
		{"invalid_software_statement", true},
		{"unapproved_software_statement", true},
		{"invalid_request", false},
		{"server_error", false},
		{"Invalid_Client_Metadata", false},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("code %q", tc.code), func(t *testing.T) {
			p := &PolicyExpression{Expression: "true", Error: tc.code}
			err := p.Validate()
			if tc.ok && err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if !tc.ok && (err == nil ||
				!strings.Contains(err.Error(), "not an RFC 7591 error code")) {
				t.Fatalf("Validate = %v, want a refusal of the code", err)
			}
		})
	}
}

// TestPolicyExpressionMembers checks that every JSON member of
// clientdb.Metadata is a variable of the declared type and reads the
// field it names, set and unset.
func TestPolicyExpressionMembers(t *testing.T) {
	env, err := expressionEnv()
	if err != nil {
		t.Fatal(err)
	}
	mt := reflect.TypeFor[clientdb.Metadata]()
	for i := range mt.NumField() {
		f := mt.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			if _, ok := metadataMembers[name]; !ok {
				t.Fatalf("member %s (%s) is not an expression variable",
					name, f.Type)
			}

			// Each value is one the field would hold only if read
			// from this field.
			var set clientdb.Metadata
			fv := reflect.ValueOf(&set).Elem().Field(i)
			var whenSet, whenUnset string
			var wantType *cel.Type
			switch f.Type {
			case reflect.TypeFor[string]():
				fv.SetString("v-" + name)
				whenSet = fmt.Sprintf("%s == %q", name, "v-"+name)
				whenUnset = name + ` == ""`
				wantType = cel.StringType
			case reflect.TypeFor[[]string]():
				fv.Set(reflect.ValueOf([]string{"a", "v-" + name}))
				whenSet = fmt.Sprintf(`%s == ["a", %q]`, name, "v-"+name)
				whenUnset = name + ".size() == 0"
				wantType = cel.ListType(cel.StringType)
			case reflect.TypeFor[*int64]():
				n := int64(i + 1000)
				fv.Set(reflect.ValueOf(&n))
				whenSet = fmt.Sprintf("%s == %d", name, n)
				whenUnset = name + " == 0"
				wantType = cel.IntType
			case reflect.TypeFor[*bool]():
				b := true
				fv.Set(reflect.ValueOf(&b))
				whenSet = name
				whenUnset = "!" + name
				wantType = cel.BoolType
			case reflect.TypeFor[json.RawMessage]():
				fv.SetBytes([]byte(`{"keys": [{"kty": "OKP"}]}`))
				whenSet = name + `.keys[0].kty == "OKP"`
				whenUnset = name + " == null"
				wantType = cel.DynType
			default:
				t.Fatalf("no test for a member of type %s", f.Type)
			}

			ast, iss := env.Compile(name)
			if iss.Err() != nil {
				t.Fatal(iss.Err())
			}
			if got := ast.OutputType(); !got.IsExactType(wantType) {
				t.Errorf("type %s, want %s", got, wantType)
			}

			for _, c := range []struct {
				expr string
				m    clientdb.Metadata
			}{{whenSet, set}, {whenUnset, clientdb.Metadata{}}} {
				p := provisionedExpression(t,
					&PolicyExpression{Expression: c.expr})
				err := p.Check(context.Background(),
					expressionInput(&c.m, OperationRegister, "", ""))
				if err != nil {
					t.Errorf("%s: %v", c.expr, err)
				}
			}
		})
	}
}

func TestPolicyExpressionCheck(t *testing.T) {
	named := func(name string) *clientdb.Metadata {
		return &clientdb.Metadata{
			RedirectURIs: []string{"https://app.example.com/cb"},
			ClientName:   name,
			LogoURI:      "https://app.example.com/logo.png",
			Scope:        "profile",
			Localized: map[string]string{
				"client_name#ja": "アクメ",
				"client_name#de": "Acme Werkzeug",
			},
		}
	}

	type outcome int
	const (
		accept outcome = iota
		refuse
		fail
	)
	cases := []struct {
		name     string
		policy   PolicyExpression
		m        *clientdb.Metadata
		op       string
		clientID string
		ctx      context.Context

		want     outcome
		code     string                         // of a refusal
		desc     string                         // of a refusal
		errHas   []string                       // of a failure
		wantMeta func(*clientdb.Metadata) error // after acceptance
	}{
		{
			name: "accepts",
			policy: PolicyExpression{
				Expression: `!client_name.lowerAscii().contains("acme")`},
			m:    named("Tools"),
			want: accept,
		},
		{
			name: "refuses with the defaults",
			policy: PolicyExpression{
				Expression: `!client_name.lowerAscii().contains("acme")`},
			m:    named("ACME Tools"),
			want: refuse,
			code: "invalid_client_metadata",
			desc: "refused by the server's registration policy",
		},
		{
			name: "refuses with its code and description",
			policy: PolicyExpression{
				Expression: `redirect_uris.all(u, ` +
					`u.startsWith("https://app.example.com/"))`,
				Error:       "invalid_redirect_uri",
				Description: "redirect URIs must be on app.example.com",
			},
			m: &clientdb.Metadata{RedirectURIs: []string{
				"https://app.example.com/cb", "https://evil.example/cb"}},
			want: refuse,
			code: "invalid_redirect_uri",
			desc: "redirect URIs must be on app.example.com",
		},
		{
			name: "localized variants",
			policy: PolicyExpression{Expression: `!localized.exists(k, ` +
				`k.startsWith("client_name#") && ` +
				`localized[k].lowerAscii().contains("acme"))`},
			m:    named("Tools"),
			want: refuse,
			code: "invalid_client_metadata",
		},
		{
			name: "one localized variant",
			policy: PolicyExpression{
				Expression: `localized["client_name#ja"] == "アクメ"`},
			m:    named("Tools"),
			want: accept,
		},
		{
			name: "missing localized variant fails",
			policy: PolicyExpression{
				Expression: `localized["client_name#fr"] == ""`},
			m:      named("Tools"),
			want:   fail,
			errHas: []string{"evaluating: ", "no such key"},
		},
		{
			name: "register has no client_id",
			policy: PolicyExpression{Expression: `operation == "register"` +
				` && client_id == ""`},
			m:    named("Tools"),
			op:   OperationRegister,
			want: accept,
		},
		{
			name: "update names the client",
			policy: PolicyExpression{Expression: `operation == "update"` +
				` && client_id == "c-123"`},
			m:        named("Tools"),
			op:       OperationUpdate,
			clientID: "c-123",
			want:     accept,
		},
		{
			name: "updates may not rename",
			policy: PolicyExpression{
				Expression: `operation != "update" || client_name == "Tools"`},
			m:        named("Tools 2"),
			op:       OperationUpdate,
			clientID: "c-123",
			want:     refuse,
		},
		{
			name: "client address",
			policy: PolicyExpression{
				Expression: `client_ip.startsWith("192.0.2.")`},
			m:    named("Tools"),
			want: accept,
		},
		{
			name:   "amends the scope",
			policy: PolicyExpression{Expression: `{"scope": "openid"}`},
			m:      named("Tools"),
			want:   accept,
			wantMeta: func(m *clientdb.Metadata) error {
				if m.Scope != "openid" {
					return fmt.Errorf("scope %q, want openid", m.Scope)
				}
				if m.ClientName != "Tools" || len(m.Localized) != 2 {
					return fmt.Errorf("other members changed: %+v", m)
				}
				return nil
			},
		},
		{
			name: "names the unnamed",
			policy: PolicyExpression{Expression: `client_name == "" ? ` +
				`{"client_name": "unnamed"} : {}`},
			m:    named(""),
			want: accept,
			wantMeta: func(m *clientdb.Metadata) error {
				if m.ClientName != "unnamed" {
					return fmt.Errorf("name %q, want unnamed", m.ClientName)
				}
				return nil
			},
		},
		{
			name: "leaves the named",
			policy: PolicyExpression{Expression: `client_name == "" ? ` +
				`{"client_name": "unnamed"} : {}`},
			m:    named("Tools"),
			want: accept,
			wantMeta: func(m *clientdb.Metadata) error {
				if m.ClientName != "Tools" {
					return fmt.Errorf("name %q, want Tools", m.ClientName)
				}
				return nil
			},
		},
		{
			name: "dyn map or true",
			policy: PolicyExpression{Expression: `client_name == "" ? ` +
				`dyn({"client_name": "unnamed"}) : true`},
			m:    named(""),
			want: accept,
			wantMeta: func(m *clientdb.Metadata) error {
				if m.ClientName != "unnamed" {
					return fmt.Errorf("name %q, want unnamed", m.ClientName)
				}
				return nil
			},
		},
		{
			name: "amends several members",
			policy: PolicyExpression{Expression: `{` +
				`"grant_types": ["authorization_code"], ` +
				`"default_max_age": 3600, "require_auth_time": true, ` +
				`"logo_uri": null, "client_name#de": "Werkzeug", ` +
				`"jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519"}]}}`},
			m:    named("Tools"),
			want: accept,
			wantMeta: func(m *clientdb.Metadata) error {
				switch {
				case !reflect.DeepEqual(m.GrantTypes,
					[]string{"authorization_code"}):
					return fmt.Errorf("grant_types %q", m.GrantTypes)
				case m.DefaultMaxAge == nil || *m.DefaultMaxAge != 3600:
					return fmt.Errorf("default_max_age %v", m.DefaultMaxAge)
				case m.RequireAuthTime == nil || !*m.RequireAuthTime:
					return fmt.Errorf("require_auth_time %v",
						m.RequireAuthTime)
				case m.LogoURI != "":
					return fmt.Errorf("logo_uri %q, want none", m.LogoURI)
				case m.Localized["client_name#de"] != "Werkzeug" ||
					m.Localized["client_name#ja"] != "アクメ":
					return fmt.Errorf("localized %q", m.Localized)
				case !strings.Contains(string(m.JWKS), `"Ed25519"`):
					return fmt.Errorf("jwks %s", m.JWKS)
				}
				return nil
			},
		},
		{
			name:   "amending a member that does not exist fails",
			policy: PolicyExpression{Expression: `{"client_secret": "s"}`},
			m:      named("Tools"),
			want:   fail,
			errHas: []string{"amending metadata: ",
				`"client_secret" is not a client metadata member`},
		},
		{
			name:   "amending a variable that is no member fails",
			policy: PolicyExpression{Expression: `{"operation": "update"}`},
			m:      named("Tools"),
			want:   fail,
			errHas: []string{`"operation" is not a client metadata member`},
		},
		{
			name: "amending a language variant of a non-text fails",
			policy: PolicyExpression{
				Expression: `{"scope#de": "profil"}`},
			m:      named("Tools"),
			want:   fail,
			errHas: []string{`"scope#de" is not a client metadata member`},
		},
		{
			name:   "amending with the wrong type fails",
			policy: PolicyExpression{Expression: `{"scope": 1}`},
			m:      named("Tools"),
			want:   fail,
			errHas: []string{"amending metadata: ", "scope"},
		},
		{
			name: "amending with bytes fails",
			policy: PolicyExpression{
				Expression: `{"client_name": b"x"}`},
			m:      named("Tools"),
			want:   fail,
			errHas: []string{"client_name: ", "bytes has no JSON form"},
		},
		{
			name:   "non-string key fails",
			policy: PolicyExpression{Expression: `dyn({1: "x"})`},
			m:      named("Tools"),
			want:   fail,
			errHas: []string{"key 1 is int"},
		},
		{
			name:   "result of another type fails",
			policy: PolicyExpression{Expression: `dyn(client_name)`},
			m:      named("Tools"),
			want:   fail,
			errHas: []string{"result is string, want bool or map"},
		},
		{
			name:   "cost limit",
			policy: PolicyExpression{Expression: hugeComprehension},
			m:      named("Tools"),
			want:   fail,
			errHas: []string{"evaluating: ", "cost limit exceeded"},
		},
		{
			name:   "cancelled request",
			policy: PolicyExpression{Expression: hugeComprehension},
			m:      named("Tools"),
			ctx:    cancelledContext(),
			want:   fail,
			errHas: []string{"evaluating: ", "context canceled"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := provisionedExpression(t, &tc.policy)
			op := tc.op
			if op == "" {
				op = OperationRegister
			}
			ctx := tc.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			before, err := json.Marshal(tc.m)
			if err != nil {
				t.Fatal(err)
			}

			err = p.Check(ctx,
				expressionInput(tc.m, op, tc.clientID, "192.0.2.7"))
			var pe *PolicyError
			switch tc.want {
			case accept:
				if err != nil {
					t.Fatalf("Check = %v, want acceptance", err)
				}
				if tc.wantMeta != nil {
					if err := tc.wantMeta(tc.m); err != nil {
						t.Error(err)
					}
				}
				return
			case refuse:
				if !errors.As(err, &pe) {
					t.Fatalf("Check = %v, want a refusal", err)
				}
				if tc.code != "" && pe.Code != tc.code {
					t.Errorf("code %q, want %q", pe.Code, tc.code)
				}
				if tc.desc != "" && pe.Description != tc.desc {
					t.Errorf("description %q, want %q",
						pe.Description, tc.desc)
				}
			case fail:
				if err == nil || errors.As(err, &pe) {
					t.Fatalf("Check = %v, want a plain error", err)
				}
				for _, w := range tc.errHas {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
			}

			// A policy that does not accept leaves the metadata as it was.
			after, _ := json.Marshal(tc.m)
			if string(after) != string(before) {
				t.Errorf("metadata changed to %s", after)
			}
		})
	}
}

// cancelledContext returns a context that is already cancelled.
func cancelledContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// TestPolicyExpressionNoRequest checks that client_ip is empty when the
// input carries no request, as when a policy is called outside HTTP.
func TestPolicyExpressionNoRequest(t *testing.T) {
	p := provisionedExpression(t,
		&PolicyExpression{Expression: `client_ip == ""`})
	err := p.Check(context.Background(), &PolicyInput{
		Operation: OperationRegister,
		Metadata:  &clientdb.Metadata{},
	})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
}

// TestPolicyExpressionCaddyfileLexer pins down how the Caddyfile lexer
// splits an expression line, which the syntax documented on
// UnmarshalCaddyfile relies on: quotes inside a token are kept, quotes
// around a whole token are removed.
func TestPolicyExpressionCaddyfileLexer(t *testing.T) {
	cases := []struct {
		name   string
		input  string
		tokens []string
		quoted []bool
	}{
		{
			name:  "quotes inside a token",
			input: `expression !client_name.lowerAscii().contains("acme")`,
			tokens: []string{"expression",
				`!client_name.lowerAscii().contains("acme")`},
			quoted: []bool{false, false},
		},
		{
			name:  "space inside a string literal",
			input: `expression client_name.contains("acme  corp")`,
			tokens: []string{"expression",
				`client_name.contains("acme`, `corp")`},
			quoted: []bool{false, false, false},
		},
		{
			name:   "a token that starts with a quote",
			input:  `expression client_name == "acme"`,
			tokens: []string{"expression", "client_name", "==", "acme"},
			quoted: []bool{false, false, false, true},
		},
		{
			name:   "backticks",
			input:  "expression `client_name == \"acme\"`",
			tokens: []string{"expression", `client_name == "acme"`},
			quoted: []bool{false, true},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := caddyfile.NewTestDispenser(tc.input)
			var tokens []string
			var quoted []bool
			for d.Next() {
				tokens = append(tokens, d.Val())
				quoted = append(quoted, d.Token().Quoted())
			}
			if !reflect.DeepEqual(tokens, tc.tokens) {
				t.Errorf("tokens %q, want %q", tokens, tc.tokens)
			}
			if !reflect.DeepEqual(quoted, tc.quoted) {
				t.Errorf("quoted %v, want %v", quoted, tc.quoted)
			}
		})
	}
}

func TestPolicyExpressionCaddyfile(t *testing.T) {
	cases := []struct {
		name  string
		input string
		want  PolicyExpression
		err   []string
	}{
		{
			name:  "quotes inside a token",
			input: `expression !client_name.lowerAscii().contains("acme")`,
			want: PolicyExpression{
				Expression: `!client_name.lowerAscii().contains("acme")`},
		},
		{
			name:  "several tokens",
			input: `expression client_name.size()  >   3 && scope != ''`,
			want: PolicyExpression{
				Expression: `client_name.size() > 3 && scope != ''`},
		},
		{
			name: "backticks",
			input: "expression `client_name == \"\" ? " +
				"{\"client_name\": \"unnamed\"} : {}`",
			want: PolicyExpression{Expression: `client_name == "" ? ` +
				`{"client_name": "unnamed"} : {}`},
		},
		{
			name: "heredoc",
			input: "expression <<CEL\n" +
				"\tclient_name != \"\" &&\n\tscope != \"\"\n\tCEL",
			want: PolicyExpression{
				Expression: "client_name != \"\" &&\nscope != \"\""},
		},
		{
			name: "block",
			input: "expression redirect_uris.size() == 1 {\n" +
				"\terror invalid_redirect_uri\n" +
				"\tdescription \"register one redirect URI\"\n}",
			want: PolicyExpression{
				Expression:  "redirect_uris.size() == 1",
				Error:       "invalid_redirect_uri",
				Description: "register one redirect URI",
			},
		},
		{
			name:  "no expression",
			input: "expression",
			err:   []string{"give the CEL expression", "Testfile:1"},
		},
		{
			name:  "no expression before the block",
			input: "expression {\n\terror invalid_client_metadata\n}",
			err:   []string{"give the CEL expression"},
		},
		{
			name:  "quoted token among several",
			input: `expression client_name == "acme"`,
			err: []string{"strips the quotes",
				"put the whole expression in backticks"},
		},
		{
			name:  "unknown subdirective",
			input: "expression true {\n\tcode invalid_client_metadata\n}",
			err:   []string{"unknown subdirective code", "Testfile:2"},
		},
		{
			name: "duplicate subdirective",
			input: "expression true {\n\tdescription a\n" +
				"\tdescription b\n}",
			err: []string{"subdirective description given more than once",
				"Testfile:3"},
		},
		{
			name:  "unknown error code",
			input: "expression true {\n\terror access_denied\n}",
			err: []string{`error "access_denied" is not an RFC 7591`,
				"Testfile:2"},
		},
		{
			name:  "error without code",
			input: "expression true {\n\terror\n}",
			err:   []string{"wrong argument count", "Testfile:2"},
		},
		{
			name:  "description of several arguments",
			input: "expression true {\n\tdescription not allowed\n}",
			err:   []string{"wrong argument count", "Testfile:2"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var p PolicyExpression
			err := p.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if tc.err != nil {
				if err == nil {
					t.Fatalf("parsed as %+v, want an error", p)
				}
				for _, w := range tc.err {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("UnmarshalCaddyfile: %v", err)
			}
			if !reflect.DeepEqual(p, tc.want) {
				t.Errorf("got %+v, want %+v", p, tc.want)
			}
		})
	}
}

// TestPolicyExpressionUnmarshalModule parses a policy line as the
// handler's parser does, through the module registry with the dispenser
// at the module name, and runs the result.
func TestPolicyExpressionUnmarshalModule(t *testing.T) {
	d := caddyfile.NewTestDispenser(
		"policy expression !client_name.lowerAscii().contains(\"acme\") {\n" +
			"\tdescription \"acme is ours\"\n}\nendpoint /r")
	d.Next() // policy
	if !d.NextArg() {
		t.Fatal("no module name")
	}
	unm, err := caddyfile.UnmarshalModule(d, "dcr.policies.expression")
	if err != nil {
		t.Fatalf("UnmarshalModule: %v", err)
	}
	p, ok := unm.(*PolicyExpression)
	if !ok {
		t.Fatalf("module is %T", unm)
	}
	if !d.NextLine() || d.Val() != "endpoint" {
		t.Errorf("the module consumed the next line, at %q", d.Val())
	}

	provisionedExpression(t, p)
	err = p.Check(context.Background(), expressionInput(
		&clientdb.Metadata{ClientName: "My Acme App"},
		OperationRegister, "", "192.0.2.7"))
	var pe *PolicyError
	if !errors.As(err, &pe) || pe.Description != "acme is ours" {
		t.Fatalf("Check = %v, want the refusal of the Caddyfile", err)
	}
	err = p.Check(context.Background(), expressionInput(
		&clientdb.Metadata{ClientName: "Tools"},
		OperationRegister, "", "192.0.2.7"))
	if err != nil {
		t.Fatalf("Check = %v, want acceptance", err)
	}
}

func TestPolicyExpressionModule(t *testing.T) {
	mod, err := caddy.GetModule("dcr.policies.expression")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := mod.New().(*PolicyExpression); !ok {
		t.Fatalf("New returns %T", mod.New())
	}
}

func BenchmarkPolicyExpression(b *testing.B) {
	p := provisionedExpression(b, &PolicyExpression{
		Expression: `!client_name.lowerAscii().contains("acme") && ` +
			`redirect_uris.all(u, u.startsWith("https://"))`})
	m := &clientdb.Metadata{
		RedirectURIs: []string{"https://app.example.com/cb"},
		ClientName:   "Tools",
	}
	in := expressionInput(m, OperationRegister, "", "192.0.2.7")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Check(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
}
