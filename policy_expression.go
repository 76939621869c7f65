package dcr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
	"cel.dev/cel-go/ext"

	"github.com/caddy-dcr/caddy-dcr/clientdb"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func init() {
	caddy.RegisterModule(PolicyExpression{})
}

// Limits and defaults of expression policies.
const (
	// expressionCostLimit bounds the work of one evaluation in CEL's
	// cost units: about one per operation or variable read, more for
	// string functions in proportion to the length of their input.
	// Ordinary policies cost tens of units.
	expressionCostLimit = 100000

	// expressionInterruptEvery is how many comprehension iterations
	// run between checks of whether the request was cancelled.
	expressionInterruptEvery = 100

	// defaultExpressionDescription is the error_description of a
	// refusal when the policy names none. It does not quote the
	// expression, which is the server's business.
	defaultExpressionDescription = "refused by the server's " +
		"registration policy"
)

// expressionCodes are the RFC 7591 section 3.2.2 error codes a refusal
// may carry.
var expressionCodes = []string{
	codeInvalidClientMetadata,
	codeInvalidRedirectURI,
	codeInvalidStatement,
	codeUnapprovedStatement,
}

// PolicyExpression is a registration policy written as a CEL expression
// (https://cel.dev), module dcr.policies.expression. It runs on every
// registration and every RFC 7592 update, after the built-in rules.
//
// The expression sees each member of the client metadata (RFC 7591
// section 2 and OpenID Connect Dynamic Client Registration 1.0 section 2)
// as a variable under its JSON name, normalised as the built-in rules
// left it. Strings such as client_name and scope are string, empty when
// absent; lists such as redirect_uris and grant_types are list(string),
// empty when absent; default_max_age is int, 0 when absent; the three
// booleans such as require_auth_time are bool, false when absent; jwks
// is the decoded key set, or null. Besides those:
//
//   - localized is a map(string, string) of the language-tagged
//     variants, such as localized["client_name#ja"];
//   - operation is "register", "update" or "metadata_document";
//   - client_id is the client being updated, the URL of a metadata
//     document, or "" on registration;
//   - client_ip is the client's address as Caddy determines it.
//
// The strings extension of CEL is available, so that for example
// client_name.lowerAscii().contains("acme") works.
//
// The result decides:
//
//   - true accepts the metadata;
//   - false refuses it with Error and Description;
//   - a map amends it: each key names a metadata member (or a
//     language-tagged variant such as "client_name#de") and its value
//     replaces that member, or removes it when null. The empty map {}
//     accepts without amending. The built-in rules then check the
//     amended metadata again.
//
// The branches of a conditional must have one type, so
// `c ? {"scope": "openid"} : true` does not compile: write {} in place
// of true, or wrap the map in dyn().
//
// A map key that names no member, a value of the wrong type, a failed
// evaluation (such as a missing map key) and an evaluation that exceeds
// the cost limit fail the request with 500 server_error; the cause goes
// to the log only. The cost limit, 100000 of CEL's units (about one per
// operation or variable read, more for string functions on long input),
// is far above what a policy over one registration needs and keeps a
// careless or hostile expression (nested comprehensions, say) from
// holding a request for long; evaluation also stops when the request is
// cancelled.
type PolicyExpression struct {
	// Expression is the CEL expression, compiled and type-checked once
	// at provisioning. Its result type must be bool or map(string, dyn),
	// or dyn, whose value is then checked on each evaluation; anything
	// else is a provisioning error. Required.
	Expression string `json:"expression"`

	// Error is the OAuth error code of a refusal: one of
	// invalid_client_metadata, invalid_redirect_uri,
	// invalid_software_statement and unapproved_software_statement
	// (RFC 7591 section 3.2.2). Default: invalid_client_metadata.
	Error string `json:"error,omitempty"`

	// Description is the error_description of a refusal, shown to the
	// client. Default: "refused by the server's registration policy".
	Description string `json:"description,omitempty"`

	program cel.Program
}

// CaddyModule returns the Caddy module information.
func (PolicyExpression) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "dcr.policies.expression",
		New: func() caddy.Module { return new(PolicyExpression) },
	}
}

// Provision fills in defaults and compiles the expression.
func (p *PolicyExpression) Provision(caddy.Context) error {
	if strings.TrimSpace(p.Expression) == "" {
		return errors.New("policy expression: no expression given")
	}
	if p.Error == "" {
		p.Error = codeInvalidClientMetadata
	}
	if p.Description == "" {
		p.Description = defaultExpressionDescription
	}

	env, err := expressionEnv()
	if err != nil {
		return fmt.Errorf("policy expression: creating environment: %w",
			err)
	}
	ast, iss := env.Compile(p.Expression)
	if err := iss.Err(); err != nil {
		hint := ""
		if strings.Contains(err.Error(), "'_?_:_'") {
			hint = "\n(the branches of ?: must have one type: " +
				"write {} rather than true beside a map, " +
				"or wrap the map in dyn())"
		}
		return fmt.Errorf("policy expression %q: compiling: %w%s",
			truncate(p.Expression), err, hint)
	}
	if out := ast.OutputType(); !expressionResultOK(out) {
		return fmt.Errorf("policy expression %q: result is %s, "+
			"want bool or map(string, dyn)", truncate(p.Expression), out)
	}

	p.program, err = env.Program(ast,
		cel.CostLimit(expressionCostLimit),
		cel.InterruptCheckFrequency(expressionInterruptEvery))
	if err != nil {
		return fmt.Errorf("policy expression %q: planning: %w",
			truncate(p.Expression), err)
	}
	return nil
}

// Validate checks the error code of refusals.
func (p *PolicyExpression) Validate() error {
	if p.Error == "" {
		return nil
	}
	return checkExpressionCode(p.Error)
}

// checkExpressionCode checks that code is an RFC 7591 error code.
func checkExpressionCode(code string) error {
	if !slices.Contains(expressionCodes, code) {
		return fmt.Errorf("policy expression: error %q is not an "+
			"RFC 7591 error code; want one of %s",
			code, strings.Join(expressionCodes, ", "))
	}
	return nil
}

// Check evaluates the expression on in and accepts, refuses or amends
// the metadata as its result says.
func (p *PolicyExpression) Check(ctx context.Context, in *PolicyInput) error {
	out, _, err := p.program.ContextEval(ctx, &expressionVars{in: in})
	if err != nil {
		return fmt.Errorf("policy expression %q: evaluating: %w",
			truncate(p.Expression), err)
	}

	switch v := out.(type) {
	case types.Bool:
		if v {
			return nil
		}
		return Refuse(p.Error, p.Description)
	case traits.Mapper:
		if err := amendMetadata(in.Metadata, v); err != nil {
			return fmt.Errorf("policy expression %q: amending "+
				"metadata: %w", truncate(p.Expression), err)
		}
		return nil
	}
	return fmt.Errorf("policy expression %q: result is %s, "+
		"want bool or map", truncate(p.Expression), out.Type())
}

// UnmarshalCaddyfile sets up the policy from the tokens of the handler's
// policy subdirective, starting at the module name. Syntax:
//
//	policy expression <cel...> {
//		error       <code>
//		description <text>
//	}
//
// The block is optional. The arguments after "expression" are joined
// with single spaces to form the expression. The Caddyfile splits the
// line at spaces and takes quotes as such only around a whole token, so
// an expression without spaces in its string literals is written as it
// is:
//
//	policy expression !client_name.lowerAscii().contains("acme")
//
// Put any other expression in backticks, or in a heredoc to spread it
// over several lines: one whose string literals hold spaces (several
// spaces would become one), one with a token that starts with a double
// quote (the Caddyfile would strip it), and one with a map literal (its
// braces could end the block).
//
//	policy expression `client_name == "" ? {"client_name": "unnamed"} : {}`
//
// A quoted token among several is an error, since its quotes are lost.
// A description with spaces is quoted as one argument.
func (p *PolicyExpression) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the module name

	var parts []string
	quoted := false
	for d.NextArg() {
		parts = append(parts, d.Val())
		quoted = quoted || d.Token().Quoted()
	}
	if len(parts) == 0 {
		return d.Errf("policy expression: give the CEL expression")
	}
	if len(parts) > 1 && quoted {
		return d.Errf("policy expression: the Caddyfile strips the " +
			"quotes of a quoted token; put the whole expression in " +
			"backticks")
	}
	p.Expression = strings.Join(parts, " ")

	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if seen[name] {
			return d.Errf("policy expression: subdirective %s given "+
				"more than once", name)
		}
		seen[name] = true

		switch name {
		case "error":
			if !d.NextArg() {
				return d.ArgErr()
			}
			p.Error = d.Val()
			if err := checkExpressionCode(p.Error); err != nil {
				return d.Errf("%w", err)
			}
		case "description":
			if !d.NextArg() {
				return d.ArgErr()
			}
			p.Description = d.Val()
		default:
			return d.Errf("policy expression: unknown subdirective %s",
				name)
		}
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	return nil
}

// expressionResultOK reports whether a result of type t can be acted on:
// bool, a map with string keys, or dyn, whose value is checked when the
// expression runs.
func expressionResultOK(t *cel.Type) bool {
	switch t.Kind() {
	case types.BoolKind, types.DynKind:
		return true
	case types.MapKind:
		key := t.Parameters()[0].Kind()
		return key == types.StringKind || key == types.DynKind
	}
	return false
}

// Kinds of metadata members, by their Go type.
const (
	memberString = iota // string
	memberList          // []string
	memberInt           // *int64
	memberBool          // *bool
	memberJSON          // json.RawMessage
)

// metadataMember is a member of clientdb.Metadata as an expression
// variable.
type metadataMember struct {
	name  string // the JSON name
	field int    // index of the struct field
	kind  int    // one of the member constants
}

// metadataMembers are the members of clientdb.Metadata by JSON name,
// taken from its struct tags so that a new member reaches expressions
// without further code. A field of a Go type not listed in memberKind
// is left out; a test catches that.
var metadataMembers = func() map[string]metadataMember {
	t := reflect.TypeFor[clientdb.Metadata]()
	out := make(map[string]metadataMember, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		kind, ok := memberKind[f.Type]
		if name == "" || name == "-" || !ok {
			continue
		}
		out[name] = metadataMember{name: name, field: i, kind: kind}
	}
	return out
}()

// memberKind maps the Go types of metadata fields to member kinds.
var memberKind = map[reflect.Type]int{
	reflect.TypeFor[string]():          memberString,
	reflect.TypeFor[[]string]():        memberList,
	reflect.TypeFor[*int64]():          memberInt,
	reflect.TypeFor[*bool]():           memberBool,
	reflect.TypeFor[json.RawMessage](): memberJSON,
}

// celType returns the type under which the member is declared.
func (mm metadataMember) celType() *cel.Type {
	switch mm.kind {
	case memberString:
		return cel.StringType
	case memberList:
		return cel.ListType(cel.StringType)
	case memberInt:
		return cel.IntType
	case memberBool:
		return cel.BoolType
	}
	return cel.DynType
}

// value returns the member's value in m. It decodes JSON members, which
// expressionVars therefore caches.
func (mm metadataMember) value(m *clientdb.Metadata) ref.Val {
	f := reflect.ValueOf(m).Elem().Field(mm.field)
	switch mm.kind {
	case memberString:
		return types.String(f.String())
	case memberList:
		return types.NewStringList(types.DefaultTypeAdapter,
			f.Interface().([]string))
	case memberInt:
		if f.IsNil() {
			return types.Int(0)
		}
		return types.Int(f.Elem().Int())
	case memberBool:
		return types.Bool(!f.IsNil() && f.Elem().Bool())
	}

	raw := f.Bytes()
	if len(raw) == 0 {
		return types.NullValue
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return types.NewErr("decoding %s: %v", mm.name, err)
	}
	return types.DefaultTypeAdapter.NativeToValue(v)
}

// Variables of expressions beside the metadata members.
const (
	varOperation = "operation"
	varClientID  = "client_id"
	varClientIP  = "client_ip"
	varLocalized = "localized"
)

// expressionEnv returns the CEL environment of expression policies,
// made once: it is safe for concurrent use.
var expressionEnv = sync.OnceValues(func() (*cel.Env, error) {
	opts := []cel.EnvOption{
		ext.Strings(),
		cel.Variable(varOperation, cel.StringType),
		cel.Variable(varClientID, cel.StringType),
		cel.Variable(varClientIP, cel.StringType),
		cel.Variable(varLocalized,
			cel.MapType(cel.StringType, cel.StringType)),
	}
	for _, mm := range metadataMembers {
		opts = append(opts, cel.Variable(mm.name, mm.celType()))
	}
	return cel.NewEnv(opts...)
})

// expressionVars is the activation of one evaluation: it reads each
// variable from the input when the expression first refers to it, with
// no copy of the metadata.
type expressionVars struct {
	in      *PolicyInput
	decoded map[string]ref.Val // JSON members, once decoded
}

// ResolveName returns the value of the named variable.
func (v *expressionVars) ResolveName(name string) (any, bool) {
	switch name {
	case varOperation:
		return types.String(v.in.Operation), true
	case varClientID:
		return types.String(v.in.ClientID), true
	case varClientIP:
		if v.in.Request == nil {
			return types.String(""), true
		}
		return types.String(clientIP(v.in.Request)), true
	case varLocalized:
		return types.NewStringStringMap(types.DefaultTypeAdapter,
			v.in.Metadata.Localized), true
	}

	mm, ok := metadataMembers[name]
	if !ok {
		return nil, false
	}
	if mm.kind != memberJSON {
		return mm.value(v.in.Metadata), true
	}
	if val, ok := v.decoded[name]; ok {
		return val, true
	}
	val := mm.value(v.in.Metadata)
	if v.decoded == nil {
		v.decoded = make(map[string]ref.Val, 1)
	}
	v.decoded[name] = val
	return val, true
}

// Parent returns nil: there is no enclosing activation.
func (v *expressionVars) Parent() cel.Activation {
	return nil
}

// amendMetadata replaces the members of m that changes names with their
// values, removing those whose value is null. It goes through the JSON
// form of the metadata, which is slow but simple, and amendments are
// rare. m is left as it was when an error is returned.
func amendMetadata(m *clientdb.Metadata, changes traits.Mapper) error {
	raw, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encoding metadata: %w", err)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return fmt.Errorf("decoding metadata: %w", err)
	}

	it := changes.Iterator()
	for it.HasNext() == types.True {
		key := it.Next()
		name, ok := key.(types.String)
		if !ok {
			return fmt.Errorf("key %v is %s, want a member name",
				key, key.Type())
		}
		if !amendable(string(name)) {
			return fmt.Errorf("%q is not a client metadata member",
				string(name))
		}
		val, err := celToJSON(changes.Get(key))
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if val == nil {
			delete(obj, string(name))
			continue
		}
		if obj[string(name)], err = json.Marshal(val); err != nil {
			return fmt.Errorf("encoding %s: %w", name, err)
		}
	}

	if raw, err = json.Marshal(obj); err != nil {
		return fmt.Errorf("encoding metadata: %w", err)
	}
	var amended clientdb.Metadata
	if err := json.Unmarshal(raw, &amended); err != nil {
		return err
	}
	*m = amended
	return nil
}

// amendable reports whether an amendment may set the member name: a
// metadata member, or a language-tagged variant of a human-readable
// one.
func amendable(name string) bool {
	if _, ok := metadataMembers[name]; ok {
		return true
	}
	base, tag, ok := strings.Cut(name, "#")
	_, known := localizable[base]
	return ok && known && validLanguageTag(tag)
}

// celToJSON converts a CEL value to its JSON form as encoding/json takes
// it: nil for null, and maps with string keys.
func celToJSON(v ref.Val) (any, error) {
	switch v := v.(type) {
	case types.Null:
		return nil, nil
	case types.Bool:
		return bool(v), nil
	case types.Int:
		return int64(v), nil
	case types.Uint:
		return uint64(v), nil
	case types.Double:
		return float64(v), nil
	case types.String:
		return string(v), nil
	case traits.Mapper:
		out := make(map[string]any)
		it := v.Iterator()
		for it.HasNext() == types.True {
			key := it.Next()
			name, ok := key.(types.String)
			if !ok {
				return nil, fmt.Errorf("map key %v is %s, not a string",
					key, key.Type())
			}
			e, err := celToJSON(v.Get(key))
			if err != nil {
				return nil, err
			}
			out[string(name)] = e
		}
		return out, nil
	case traits.Lister:
		n, _ := v.Size().(types.Int)
		out := make([]any, 0, n)
		for i := range n {
			e, err := celToJSON(v.Get(i))
			if err != nil {
				return nil, err
			}
			out = append(out, e)
		}
		return out, nil
	}
	return nil, fmt.Errorf("a value of type %s has no JSON form", v.Type())
}

// Interface guards
var (
	_ Policy                = (*PolicyExpression)(nil)
	_ caddy.Provisioner     = (*PolicyExpression)(nil)
	_ caddy.Validator       = (*PolicyExpression)(nil)
	_ caddyfile.Unmarshaler = (*PolicyExpression)(nil)
	_ cel.Activation        = (*expressionVars)(nil)
)
