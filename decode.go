package dcr

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

// decodeMetadata parses the body of a registration request (RFC 7591
// section 3.1): one JSON object whose known members must have the types of
// section 2. Unknown members are dropped. A member given as null counts as
// absent. A list member that is present is returned non-nil even when
// empty, so that the policy can tell "[]" from absence.
//
// It never keeps a client_id or client_secret from the request: those are
// not metadata the client chooses.
func decodeMetadata(body []byte) (*clientdb.Metadata, *protoError) {
	req, err := decodeRequest(body)
	if err != nil {
		return nil, err
	}
	return &req.Metadata, nil
}

// issuedMembers are the members of a client information response that the
// server sets. A registration request's are ignored; an update request
// (RFC 7592 section 2.2) must not carry them, except client_id and
// client_secret, which it may repeat.
var issuedMembers = []string{
	"registration_access_token",
	"registration_client_uri",
	"client_secret_expires_at",
	"client_id_issued_at",
}

// request is a decoded registration or update request: the metadata, and
// the issued values the client sent back.
type request struct {
	clientdb.Metadata

	// clientID and clientSecret hold those members as sent, unchecked:
	// a registration ignores them and an update checks them.
	clientID     json.RawMessage
	clientSecret json.RawMessage

	// issued names the members of issuedMembers present, in order.
	issued []string

	// secret is client_secret once an update has decoded and checked it.
	secret *string
}

// decodeRequest is decodeMetadata keeping the issued values the client
// sent, for RFC 7592 updates. A software statement is dropped unread.
func decodeRequest(body []byte) (*request, *protoError) {
	return decodeRequestWith(body, nil)
}

// statementFunc verifies a software statement and returns its metadata
// claims as members.
type statementFunc func(statement string) ([]member, *protoError)

// decodeRequestWith is decodeRequest with software statements: a
// statement is verified with verify, and its claims take the place of the
// plain members of the same name (RFC 7591 section 3.1.1). With a nil
// verify the statement is dropped.
func decodeRequestWith(body []byte, verify statementFunc) (*request, *protoError) {
	if !utf8.Valid(body) {
		return nil, metadataError("json_utf8", "request body is not valid UTF-8")
	}
	members, err := splitObject(body)
	if err != nil {
		return nil, err
	}

	var statement string
	if verify != nil {
		i := slices.IndexFunc(members, func(m member) bool {
			return m.name == "software_statement"
		})
		if i >= 0 {
			statement, err = decodeString("software_statement", bytes.TrimSpace(members[i].value))
			if err != nil {
				return nil, err
			}
		}
		if statement != "" {
			claims, err := verify(statement)
			if err != nil {
				return nil, err
			}
			members = mergeMembers(members, claims)
		}
	}

	req := &request{}
	for _, mem := range members {
		var err *protoError
		switch {
		case mem.name == "client_id":
			req.clientID = mem.value
		case mem.name == "client_secret":
			req.clientSecret = mem.value
		case slices.Contains(issuedMembers, mem.name):
			req.issued = append(req.issued, mem.name)
		default:
			err = decodeMember(&req.Metadata, mem.name, mem.value)
		}
		if err != nil {
			return nil, err
		}
	}
	req.SoftwareStatement = statement
	return req, nil
}

// mergeMembers returns the request's members with the statement's claims
// in place of members of the same name. Claims that name values the
// server issues, or the statement itself, are ignored.
func mergeMembers(members, claims []member) []member {
	// Ignored claims are dropped first: they must not hide the body's
	// members either, such as the client_secret an update must prove.
	claims = slices.DeleteFunc(slices.Clone(claims), func(c member) bool {
		return c.name == "client_id" || c.name == "client_secret" ||
			c.name == "software_statement" || slices.Contains(issuedMembers, c.name)
	})
	// A claim also replaces the body's language-tagged variants of its
	// member: a statement that names the client must not be dressed in
	// names or logos of the presenter's choosing.
	out := make([]member, 0, len(members)+len(claims))
	for _, m := range members {
		base, _, _ := strings.Cut(m.name, "#")
		if !slices.ContainsFunc(claims, func(c member) bool {
			cbase, _, _ := strings.Cut(c.name, "#")
			return c.name == m.name || cbase == base
		}) {
			out = append(out, m)
		}
	}
	return append(out, claims...)
}

// decodeOptionalString decodes a string member that may be missing (nil
// raw) or null, returning nil then.
func decodeOptionalString(name string, raw json.RawMessage) (*string, *protoError) {
	raw = bytes.TrimSpace(raw)
	if raw == nil || isNull(raw) {
		return nil, nil
	}
	s, err := decodeString(name, raw)
	if err != nil {
		return nil, err
	}
	return &s, nil
}

type member struct {
	name  string
	value json.RawMessage
}

// splitObject returns the members of the JSON object in body, in order. It
// refuses anything else, trailing data and repeated member names: a name
// given twice would mean different things to different parsers.
//
// The body is validated as a whole first; the members are then cut out of
// it directly, without a token stream, which allocates for every value it
// reads.
func splitObject(body []byte) ([]member, *protoError) {
	if !json.Valid(body) {
		return nil, metadataError("json_syntax", "request body is not valid JSON")
	}
	i := skipSpace(body, 0)
	if body[i] != '{' {
		return nil, metadataError("json_object", "request body must be a JSON object")
	}

	var members []member
	for i = skipSpace(body, i+1); body[i] != '}'; {
		end := stringEnd(body, i)
		name := unquote(body[i:end])
		i = skipSpace(body, end)
		start := skipSpace(body, i+1) // past the colon
		end = valueEnd(body, start)
		value := json.RawMessage(body[start:end])

		if slices.ContainsFunc(members, func(m member) bool { return m.name == name }) {
			return nil, metadataError("json_duplicate", fmt.Sprintf(
				"member %q appears more than once", truncate(name)))
		}
		if len(members) == maxMembers {
			return nil, metadataError("json_members", fmt.Sprintf(
				"request body has more than %d members", maxMembers))
		}
		if jsonDepth(value) > maxDepth {
			return nil, metadataError("json_depth", fmt.Sprintf(
				"member %q nests arrays and objects deeper than %d levels",
				truncate(name), maxDepth))
		}
		members = append(members, member{name: name, value: value})

		i = skipSpace(body, end)
		if body[i] == ',' {
			i = skipSpace(body, i+1)
		}
	}
	return members, nil
}

// The helpers below walk JSON that json.Valid accepted, so they need not
// check what they read.

// skipSpace returns the index of the first non-space byte at or after i.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index just past the string starting at i.
func stringEnd(b []byte, i int) int {
	for i++; b[i] != '"'; i++ {
		if b[i] == '\\' {
			i++
		}
	}
	return i + 1
}

// valueEnd returns the index just past the value starting at i.
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for ; ; i++ {
			switch b[i] {
			case '"':
				i = stringEnd(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
	}
	for i < len(b) && !strings.ContainsRune(",}] \t\n\r", rune(b[i])) {
		i++
	}
	return i
}

// unquote returns the value of a JSON string literal.
func unquote(lit []byte) string {
	if !bytes.ContainsRune(lit, '\\') && utf8.Valid(lit) {
		return string(lit[1 : len(lit)-1])
	}
	var s string
	json.Unmarshal(lit, &s) // valid JSON: it cannot fail
	return s
}

// decodeMember stores one member of the request in m.
func decodeMember(m *clientdb.Metadata, name string, raw json.RawMessage) *protoError {
	raw = bytes.TrimSpace(raw)
	var err *protoError
	switch name {
	case "redirect_uris":
		m.RedirectURIs, err = decodeList(name, raw)
	case "grant_types":
		m.GrantTypes, err = decodeList(name, raw)
	case "response_types":
		m.ResponseTypes, err = decodeList(name, raw)
	case "contacts":
		m.Contacts, err = decodeList(name, raw)
	case "token_endpoint_auth_method":
		m.TokenEndpointAuthMethod, err = decodeString(name, raw)
	case "client_name":
		m.ClientName, err = decodeString(name, raw)
	case "client_uri":
		m.ClientURI, err = decodeString(name, raw)
	case "logo_uri":
		m.LogoURI, err = decodeString(name, raw)
	case "scope":
		m.Scope, err = decodeString(name, raw)
	case "tos_uri":
		m.TOSURI, err = decodeString(name, raw)
	case "policy_uri":
		m.PolicyURI, err = decodeString(name, raw)
	case "jwks_uri":
		m.JWKSURI, err = decodeString(name, raw)
	case "software_id":
		m.SoftwareID, err = decodeString(name, raw)
	case "software_version":
		m.SoftwareVersion, err = decodeString(name, raw)
	case "jwks":
		m.JWKS, err = decodeObject(name, raw)
	case "software_statement":
		// Only decodeRequestWith keeps it, once verified.
	default:
		if known, err := decodeOIDCMember(m, name, raw); known {
			return err
		}
		base, tag, ok := strings.Cut(name, "#")
		if _, known := localizable[base]; !ok || !known {
			return nil
		}
		if !validLanguageTag(tag) {
			return metadataError("language_tag", fmt.Sprintf(
				"member %q has an invalid language tag", truncate(name)))
		}
		var v string
		if v, err = decodeString(name, raw); err == nil && v != "" {
			if m.Localized == nil {
				m.Localized = make(map[string]string)
			}
			m.Localized[name] = v
		}
	}
	return err
}

// Limits on the shape of a request body, beyond its size: no metadata
// member needs more, and a body within max_body could otherwise hold
// thousands of members or deeply nested values for the decoder to walk.
const (
	maxMembers = 256
	maxDepth   = 8
)

// jsonDepth returns how deeply arrays and objects nest in a valid JSON
// value: 0 for a scalar, 1 for a flat array or object.
func jsonDepth(raw []byte) int {
	depth, deepest := 0, 0
	inString, escaped := false, false
	for _, c := range raw {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '[' || c == '{':
			depth++
			deepest = max(deepest, depth)
		case c == ']' || c == '}':
			depth--
		}
	}
	return deepest
}

func isNull(raw json.RawMessage) bool {
	return string(raw) == "null"
}

func typeError(name, want string) *protoError {
	return metadataError("json_type", fmt.Sprintf("%s must be %s", name, want))
}

func decodeString(name string, raw json.RawMessage) (string, *protoError) {
	if isNull(raw) {
		return "", nil
	}
	if raw[0] != '"' {
		return "", typeError(name, "a string")
	}
	return unquote(raw), nil
}

func decodeList(name string, raw json.RawMessage) ([]string, *protoError) {
	if isNull(raw) {
		return nil, nil
	}
	var items []json.RawMessage
	if raw[0] != '[' || json.Unmarshal(raw, &items) != nil {
		return nil, typeError(name, "an array of strings")
	}
	list := make([]string, 0, len(items))
	for _, item := range items {
		if item[0] != '"' {
			return nil, typeError(name, "an array of strings")
		}
		list = append(list, unquote(item))
	}
	return list, nil
}

// decodeInt decodes a non-negative JSON integer.
func decodeInt(name string, raw json.RawMessage) (*int64, *protoError) {
	if isNull(raw) {
		return nil, nil
	}
	var n int64
	if raw[0] == '-' || json.Unmarshal(raw, &n) != nil ||
		bytes.ContainsAny(raw, ".eE") {
		return nil, typeError(name, "a non-negative integer")
	}
	return &n, nil
}

// decodeBool decodes a JSON boolean.
func decodeBool(name string, raw json.RawMessage) (*bool, *protoError) {
	if isNull(raw) {
		return nil, nil
	}
	var b bool
	if json.Unmarshal(raw, &b) != nil {
		return nil, typeError(name, "true or false")
	}
	return &b, nil
}

func decodeObject(name string, raw json.RawMessage) (json.RawMessage, *protoError) {
	if isNull(raw) {
		return nil, nil
	}
	if raw[0] != '{' {
		return nil, typeError(name, "a JSON object")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, typeError(name, "a JSON object")
	}
	return buf.Bytes(), nil
}

// validLanguageTag reports whether tag has the shape of a BCP 47 language
// tag: alphanumeric subtags of one to eight characters joined by hyphens,
// the first one alphabetic.
func validLanguageTag(tag string) bool {
	if tag == "" || len(tag) > maxTagLength {
		return false
	}
	for i, sub := range strings.Split(tag, "-") {
		if len(sub) == 0 || len(sub) > 8 {
			return false
		}
		for _, c := range sub {
			alpha := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
			digit := c >= '0' && c <= '9'
			if !alpha && !(digit && i > 0) {
				return false
			}
		}
	}
	return true
}
