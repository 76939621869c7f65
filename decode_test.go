package dcr

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

// Members of RFC 7591 section 2 by the JSON type decodeMetadata demands.
var (
	stringMembers = []string{
		"token_endpoint_auth_method", "client_name", "client_uri",
		"logo_uri", "scope", "tos_uri", "policy_uri", "jwks_uri",
		"software_id", "software_version",
	}
	listMembers = []string{
		"redirect_uris", "grant_types", "response_types", "contacts",
	}
)

// TestDecodeMetadataRefused covers bodies that must be refused, and that
// the refusal is a 400 invalid_client_metadata naming what is wrong.
func TestDecodeMetadataRefused(t *testing.T) {
	type tc struct {
		name string
		body string
		rule string
		want string // substring of the description
	}
	cases := []tc{
		{"empty body", ``, "json_syntax", "not valid JSON"},
		{"not JSON", `redirect_uris=x`, "json_syntax", "not valid JSON"},
		{"truncated object", `{"client_name":"a"`, "json_syntax", "not valid JSON"},
		{"missing colon", `{"client_name" "a"}`, "json_syntax", "not valid JSON"},
		{"trailing comma", `{"client_name":"a",}`, "json_syntax", "not valid JSON"},
		{"single quotes", `{'client_name':'a'}`, "json_syntax", "not valid JSON"},
		{"array", `[{"client_name":"a"}]`, "json_object", "JSON object"},
		{"string", `"client_name"`, "json_object", "JSON object"},
		{"number", `42`, "json_object", "JSON object"},
		{"null", `null`, "json_object", "JSON object"},
		{"bool", `true`, "json_object", "JSON object"},
		{"trailing object", `{} {}`, "json_syntax", "not valid JSON"},
		{"trailing garbage", `{"client_name":"a"}x`, "json_syntax", "not valid JSON"},
		{"trailing bracket", `{}]`, "json_syntax", "not valid JSON"},
		{"trailing number", "{}\n1", "json_syntax", "not valid JSON"},
		{
			"duplicate member",
			`{"client_name":"a","client_name":"b"}`,
			"json_duplicate", `"client_name"`,
		},
		{
			// Both spell the same name once unescaped.
			"duplicate member escaped",
			`{"scope":"a","sc\u006fpe":"b"}`,
			"json_duplicate", `"scope"`,
		},
		{
			"duplicate unknown member",
			`{"x_custom":1,"x_custom":2}`,
			"json_duplicate", `"x_custom"`,
		},
		{
			"duplicate null member",
			`{"jwks":null,"jwks":{"keys":[]}}`,
			"json_duplicate", `"jwks"`,
		},
		{
			"invalid UTF-8 in value",
			"{\"client_name\":\"caf\xe9\"}",
			"json_utf8", "UTF-8",
		},
		{
			"invalid UTF-8 in name",
			"{\"\xff\":\"a\"}",
			"json_utf8", "UTF-8",
		},
		{
			"UTF-16 surrogate bytes",
			"{\"client_name\":\"\xed\xa0\x80\"}",
			"json_utf8", "UTF-8",
		},
		{"jwks array", `{"jwks":[]}`, "json_type", "jwks must be a JSON object"},
		{"jwks string", `{"jwks":"{}"}`, "json_type", "jwks must be a JSON object"},
		{"jwks number", `{"jwks":1}`, "json_type", "jwks must be a JSON object"},
		{"jwks bool", `{"jwks":false}`, "json_type", "jwks must be a JSON object"},
		{
			"language tag empty",
			`{"client_name#":"a"}`,
			"language_tag", `"client_name#"`,
		},
		{
			"language tag starts with digit",
			`{"client_name#1en":"a"}`,
			"language_tag", `"client_name#1en"`,
		},
		{
			"language tag empty subtag",
			`{"client_name#en--US":"a"}`,
			"language_tag", `"client_name#en--US"`,
		},
		{
			"language tag subtag too long",
			`{"logo_uri#abcdefghi":"https://a.example/l.png"}`,
			"language_tag", `"logo_uri#abcdefghi"`,
		},
		{
			"language tag underscore",
			`{"tos_uri#en_US":"https://a.example/tos"}`,
			"language_tag", `"tos_uri#en_US"`,
		},
		{
			"language tag second hash",
			`{"client_name#en#x":"a"}`,
			"language_tag", `"client_name#en#x"`,
		},
		{
			"language tag too long",
			`{"client_name#` + strings.Repeat("abcdefg-", 5) + `a":"a"}`,
			"language_tag", "invalid language tag",
		},
		{
			"language-tagged number",
			`{"client_name#en":7}`,
			"json_type", "client_name#en must be a string",
		},
		{
			"language-tagged object",
			`{"policy_uri#de":{}}`,
			"json_type", "policy_uri#de must be a string",
		},
	}

	// Every string member given every other JSON type.
	for _, name := range stringMembers {
		for _, v := range []string{
			`1`, `-0.5e3`, `[]`, `["a"]`, `{}`, `true`, `false`,
		} {
			cases = append(cases, tc{
				name: name + " given " + v,
				body: fmt.Sprintf(`{%q:%s}`, name, v),
				rule: "json_type",
				want: name + " must be a string",
			})
		}
	}
	// Every list member given a non-list, or a list with a non-string.
	for _, name := range listMembers {
		for _, v := range []string{
			`"https://a.example/cb"`, `1`, `{}`, `true`,
			`[1]`, `["a",2]`, `["a",null]`, `[["a"]]`, `[{}]`, `[true]`,
		} {
			cases = append(cases, tc{
				name: name + " given " + v,
				body: fmt.Sprintf(`{%q:%s}`, name, v),
				rule: "json_type",
				want: name + " must be an array of strings",
			})
		}
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := decodeMetadata([]byte(tc.body))
			if m != nil {
				t.Errorf("metadata = %+v, want nil", m)
			}
			checkProtoErr(t, err, codeInvalidClientMetadata,
				http.StatusBadRequest, tc.rule, tc.want)
		})
	}
}

// TestDecodeMetadataAccepted covers bodies that decode, and what they
// decode to.
func TestDecodeMetadataAccepted(t *testing.T) {
	cases := []struct {
		name string
		body string
		want clientdb.Metadata
	}{
		{"empty object", `{}`, clientdb.Metadata{}},
		{"whitespace around", " \n\t{ } \r\n", clientdb.Metadata{}},
		{
			"every member",
			`{
				"redirect_uris": ["https://a.example/cb", "https://a.example/cb2"],
				"token_endpoint_auth_method": "client_secret_post",
				"grant_types": ["authorization_code", "refresh_token"],
				"response_types": ["code"],
				"client_name": "Demo",
				"client_uri": "https://a.example/",
				"logo_uri": "https://a.example/logo.png",
				"scope": "openid profile",
				"contacts": ["ops@a.example"],
				"tos_uri": "https://a.example/tos",
				"policy_uri": "https://a.example/policy",
				"jwks_uri": "https://a.example/jwks.json",
				"jwks": { "keys" : [ ] },
				"software_id": "4NRB1-0XZABZI9E6-5SM3R",
				"software_version": "2.1"
			}`,
			clientdb.Metadata{
				RedirectURIs: []string{
					"https://a.example/cb", "https://a.example/cb2",
				},
				TokenEndpointAuthMethod: "client_secret_post",
				GrantTypes: []string{
					"authorization_code", "refresh_token",
				},
				ResponseTypes:   []string{"code"},
				ClientName:      "Demo",
				ClientURI:       "https://a.example/",
				LogoURI:         "https://a.example/logo.png",
				Scope:           "openid profile",
				Contacts:        []string{"ops@a.example"},
				TOSURI:          "https://a.example/tos",
				PolicyURI:       "https://a.example/policy",
				JWKSURI:         "https://a.example/jwks.json",
				JWKS:            json.RawMessage(`{"keys":[]}`),
				SoftwareID:      "4NRB1-0XZABZI9E6-5SM3R",
				SoftwareVersion: "2.1",
			},
		},
		{
			"null members are absent",
			`{"redirect_uris":null,"grant_types":null,
			  "response_types":null,"contacts":null,"client_name":null,
			  "scope":null,"jwks":null,"jwks_uri":null,
			  "token_endpoint_auth_method":null,"client_name#en":null}`,
			clientdb.Metadata{},
		},
		{
			// The policy must be able to tell [] from absence.
			"empty lists kept non-nil",
			`{"redirect_uris":[],"grant_types":[],"response_types":[],
			  "contacts":[]}`,
			clientdb.Metadata{
				RedirectURIs:  []string{},
				GrantTypes:    []string{},
				ResponseTypes: []string{},
				Contacts:      []string{},
			},
		},
		{
			"unknown members ignored",
			`{"x_custom":{"a":[1,2]},"application_kind":"native",
			  "client_name":"a","#en":"b","":"c","scope#en":"d",
			  "id_token_signing_alg":"RS256"}`,
			clientdb.Metadata{ClientName: "a"},
		},
		{
			// encoding/json would match these case-insensitively.
			"member names are case-sensitive",
			`{"Client_Name":"a","REDIRECT_URIS":1,"Jwks":[]}`,
			clientdb.Metadata{},
		},
		{
			// These are issued by the server, never chosen by the client.
			"client_id and client_secret ignored",
			`{"client_id":"chosen","client_secret":"s3cret",
			  "client_id_issued_at":1,"client_secret_expires_at":0,
			  "registration_access_token":"t","client_name":"a"}`,
			clientdb.Metadata{ClientName: "a"},
		},
		{
			"client_id of wrong type ignored",
			`{"client_id":42,"client_secret":["x"]}`,
			clientdb.Metadata{},
		},
		{
			// A registration ignores what an update must refuse.
			"issued members of any type ignored",
			`{"registration_access_token":1,"registration_client_uri":{},
			  "client_id_issued_at":"x","client_secret_expires_at":[],
			  "client_id":null,"client_name":"a"}`,
			clientdb.Metadata{ClientName: "a"},
		},
		{
			"language-tagged members",
			`{"client_name":"Demo","client_name#ja-Jpan-JP":"デモ",
			  "client_uri#fr":"https://a.example/fr",
			  "logo_uri#de-CH-1901":"https://a.example/l.png",
			  "client_name#x-private1":"p"}`,
			clientdb.Metadata{
				ClientName: "Demo",
				Localized: map[string]string{
					"client_name#ja-Jpan-JP": "デモ",
					"client_uri#fr":          "https://a.example/fr",
					"logo_uri#de-CH-1901":    "https://a.example/l.png",
					"client_name#x-private1": "p",
				},
			},
		},
		{
			"language-tagged empty string dropped",
			`{"client_name#en":""}`,
			clientdb.Metadata{},
		},
		{
			// An unknown base name is ignored whatever follows the '#'.
			"unknown base with bad tag ignored",
			`{"scope#":"a","software_id#1":"b","foo#bar#baz":1}`,
			clientdb.Metadata{},
		},
		{
			"string escapes decoded",
			`{"client_name":"a\"b\\c\u00e9\n"}`,
			clientdb.Metadata{ClientName: "a\"b\\c\u00e9\n"},
		},
		{
			"empty strings",
			`{"client_name":"","scope":""}`,
			clientdb.Metadata{},
		},
		{
			"jwks compacted",
			"{\"jwks\":{\n \"keys\" : [ {\"kty\" : \"EC\"} ]\n}}",
			clientdb.Metadata{
				JWKS: json.RawMessage(`{"keys":[{"kty":"EC"}]}`),
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := decodeMetadata([]byte(tc.body))
			if err != nil {
				t.Fatalf("decodeMetadata: %v", err)
			}
			if !reflect.DeepEqual(*m, tc.want) {
				t.Errorf("metadata =\n%#v\nwant\n%#v", *m, tc.want)
			}
		})
	}
}

// TestDecodeMetadataLongName checks that an error description quotes a
// long member name only in part, so that an answer never echoes a large
// input.
func TestDecodeMetadataLongName(t *testing.T) {
	name := strings.Repeat("n", 5000)
	body := fmt.Sprintf(`{%q:1,%q:2}`, name, name)
	_, err := decodeMetadata([]byte(body))
	checkProtoErr(t, err, codeInvalidClientMetadata,
		http.StatusBadRequest, "json_duplicate", "...")
	if len(err.Description) > 200 {
		t.Errorf("description is %d bytes long", len(err.Description))
	}
}

// TestDecodeRequest covers what decodeRequest keeps beyond the metadata
// for an RFC 7592 update: the issued members present, in the order sent,
// and client_id and client_secret exactly as sent, whatever their type.
func TestDecodeRequest(t *testing.T) {
	cases := []struct {
		name         string
		body         string
		issued       []string
		clientID     string // raw; "" for absent
		clientSecret string
		meta         clientdb.Metadata
	}{
		{
			name: "none",
			body: `{"client_name":"a"}`,
			meta: clientdb.Metadata{ClientName: "a"},
		},
		{
			name: "issued members in order",
			body: `{"client_id_issued_at":1,"client_name":"a",
				"registration_client_uri":"https://a.example/r/x",
				"registration_access_token":"t",
				"client_secret_expires_at":0}`,
			issued: []string{
				"client_id_issued_at", "registration_client_uri",
				"registration_access_token", "client_secret_expires_at",
			},
			meta: clientdb.Metadata{ClientName: "a"},
		},
		{
			// Presence counts, not the value.
			name: "issued members of any type",
			body: `{"client_secret_expires_at":null,
				"registration_access_token":{"a":1}}`,
			issued: []string{
				"client_secret_expires_at", "registration_access_token",
			},
		},
		{
			name:   "issued member spelled with an escape",
			body:   `{"client_id_issued_\u0061t":1}`,
			issued: []string{"client_id_issued_at"},
		},
		{
			name:         "client_id and client_secret strings",
			body:         `{"client_secret":"s3cret","client_id":"abc"}`,
			clientID:     `"abc"`,
			clientSecret: `"s3cret"`,
		},
		{
			name:         "client_id and client_secret of other types",
			body:         `{"client_id":42,"client_secret":["x"]}`,
			clientID:     `42`,
			clientSecret: `["x"]`,
		},
		{
			name:         "client_id and client_secret null",
			body:         `{"client_id":null,"client_secret":null}`,
			clientID:     `null`,
			clientSecret: `null`,
		},
		{
			name:     "client_id escapes kept",
			body:     `{"client_id":"a\u0062c"}`,
			clientID: `"a\u0062c"`,
		},
		{
			// Not metadata: a look-alike name is an unknown member.
			name: "client_id in other case",
			body: `{"Client_ID":"abc","CLIENT_SECRET":"s"}`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := decodeRequest([]byte(tc.body))
			if err != nil {
				t.Fatalf("decodeRequest: %v", err)
			}
			if !reflect.DeepEqual(req.issued, tc.issued) {
				t.Errorf("issued = %q, want %q", req.issued, tc.issued)
			}
			for _, raw := range []struct {
				name string
				got  json.RawMessage
				want string
			}{
				{"client_id", req.clientID, tc.clientID},
				{"client_secret", req.clientSecret, tc.clientSecret},
			} {
				if string(raw.got) != raw.want {
					t.Errorf("%s = %#q, want %#q", raw.name, raw.got, raw.want)
				}
			}
			if !reflect.DeepEqual(req.Metadata, tc.meta) {
				t.Errorf("metadata =\n%#v\nwant\n%#v", req.Metadata, tc.meta)
			}
		})
	}
}

// TestDecodeRequestRefused checks that the members decodeRequest keeps
// aside are still subject to the rules for the whole object.
func TestDecodeRequestRefused(t *testing.T) {
	cases := []struct {
		name, body, rule, want string
	}{
		{
			"duplicate client_id", `{"client_id":"a","client_id":"a"}`,
			"json_duplicate", `"client_id"`,
		},
		{
			"duplicate client_secret", `{"client_secret":"a","client_secret":"b"}`,
			"json_duplicate", `"client_secret"`,
		},
		{
			"duplicate issued member",
			`{"client_id_issued_at":1,"client_id_issued_at":1}`,
			"json_duplicate", `"client_id_issued_at"`,
		},
		{
			"metadata error after issued member",
			`{"registration_access_token":"t","grant_types":"code"}`,
			"json_type", "grant_types must be an array of strings",
		},
		{"not an object", `["client_id"]`, "json_object", "JSON object"},
		{"trailing data", `{"client_id":"a"} 1`, "json_syntax", "not valid JSON"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := decodeRequest([]byte(tc.body))
			if req != nil {
				t.Errorf("request = %+v, want nil", req)
			}
			checkProtoErr(t, err, codeInvalidClientMetadata,
				http.StatusBadRequest, tc.rule, tc.want)
		})
	}
}

func TestDecodeShapeLimits(t *testing.T) {
	deep := func(n int) string {
		return `{"x":` + strings.Repeat("[", n) + strings.Repeat("]", n) + `}`
	}
	many := func(n int) string {
		var b strings.Builder
		b.WriteString("{")
		for i := range n {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `"m%d":1`, i)
		}
		return b.String() + "}"
	}
	cases := []struct {
		name string
		body string
		rule string // "" accepted
	}{
		{"depth at the limit", deep(maxDepth), ""},
		{"depth over the limit", deep(maxDepth + 1), "json_depth"},
		{"brackets inside strings do not count", `{"x":"[[[[[[[[[[[[{{{{{{{{{{"}`, ""},
		{"escaped quote inside a string", `{"x":"\"[[[[[[[[[[["}`, ""},
		{"nested jwks within the limit", `{"jwks":{"keys":[{"kty":"EC","x5c":["a"]}]}}`, ""},
		{"members at the limit", many(maxMembers), ""},
		{"members over the limit", many(maxMembers + 1), "json_members"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, perr := decodeMetadata([]byte(tc.body))
			switch {
			case tc.rule == "" && perr != nil:
				t.Fatalf("refused: %v (rule %s)", perr, perr.Rule)
			case tc.rule != "" && perr == nil:
				t.Fatalf("accepted, want rule %s", tc.rule)
			case tc.rule != "" && perr.Rule != tc.rule:
				t.Fatalf("rule %s, want %s", perr.Rule, tc.rule)
			case tc.rule != "" && !strings.Contains(perr.Description, "than"):
				t.Errorf("description %q does not name the limit", perr.Description)
			}
		})
	}
}
