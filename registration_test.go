package dcr

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

// TestRegistrationResponseJSON checks the client information response of
// RFC 7591 section 3.2.1 as clients parse it: one object with the issued
// values and the metadata as top-level members, each name once.
func TestRegistrationResponseJSON(t *testing.T) {
	zero, later := int64(0), int64(1767225600)
	web := clientdb.Metadata{
		RedirectURIs:            []string{"https://app.example/cb"},
		TokenEndpointAuthMethod: authClientSecretBasic,
		GrantTypes:              []string{grantAuthorizationCode},
		ResponseTypes:           []string{"code"},
		ClientName:              "Demo",
		Scope:                   "openid",
	}

	cases := []struct {
		name string
		resp registrationResponse
		want map[string]any // every member, decoded
	}{
		{
			// Clients require a numeric client_secret_expires_at
			// whenever a secret is issued, 0 meaning never.
			name: "secret that never expires",
			resp: registrationResponse{
				ClientID:              "id1",
				ClientIDIssuedAt:      1700000000,
				ClientSecret:          "s3cret",
				ClientSecretExpiresAt: &zero,
				Metadata:              web,
			},
			want: map[string]any{
				"client_id":                  "id1",
				"client_id_issued_at":        1700000000.0,
				"client_secret":              "s3cret",
				"client_secret_expires_at":   0.0,
				"redirect_uris":              []any{"https://app.example/cb"},
				"token_endpoint_auth_method": "client_secret_basic",
				"grant_types":                []any{"authorization_code"},
				"response_types":             []any{"code"},
				"client_name":                "Demo",
				"scope":                      "openid",
			},
		},
		{
			name: "secret that expires",
			resp: registrationResponse{
				ClientID:              "id2",
				ClientIDIssuedAt:      1700000000,
				ClientSecret:          "s3cret",
				ClientSecretExpiresAt: &later,
				Metadata:              web,
			},
			want: map[string]any{
				"client_id":                  "id2",
				"client_id_issued_at":        1700000000.0,
				"client_secret":              "s3cret",
				"client_secret_expires_at":   1767225600.0,
				"redirect_uris":              []any{"https://app.example/cb"},
				"token_endpoint_auth_method": "client_secret_basic",
				"grant_types":                []any{"authorization_code"},
				"response_types":             []any{"code"},
				"client_name":                "Demo",
				"scope":                      "openid",
			},
		},
		{
			// A client without a secret gets neither member, and an
			// empty response_types list stays in the answer.
			name: "public client without secret",
			resp: registrationResponse{
				ClientID:         "id3",
				ClientIDIssuedAt: 1,
				Metadata: clientdb.Metadata{
					TokenEndpointAuthMethod: authNone,
					GrantTypes:              []string{grantRefreshToken},
					ResponseTypes:           []string{},
				},
			},
			want: map[string]any{
				"client_id":                  "id3",
				"client_id_issued_at":        1.0,
				"token_endpoint_auth_method": "none",
				"grant_types":                []any{"refresh_token"},
				"response_types":             []any{},
			},
		},
		{
			name: "language-tagged members and jwks at top level",
			resp: registrationResponse{
				ClientID:         "id4",
				ClientIDIssuedAt: 2,
				Metadata: clientdb.Metadata{
					TokenEndpointAuthMethod: authPrivateKeyJWT,
					GrantTypes:              []string{grantAuthorizationCode},
					ResponseTypes:           []string{"code"},
					RedirectURIs:            []string{"http://127.0.0.1/cb"},
					JWKS:                    json.RawMessage(`{"keys":[]}`),
					Contacts:                []string{"ops@app.example"},
					Localized: map[string]string{
						"client_name#ja-Jpan-JP": "デモ",
						"tos_uri#fr":             "https://app.example/fr",
					},
				},
			},
			want: map[string]any{
				"client_id":                  "id4",
				"client_id_issued_at":        2.0,
				"token_endpoint_auth_method": "private_key_jwt",
				"grant_types":                []any{"authorization_code"},
				"response_types":             []any{"code"},
				"redirect_uris":              []any{"http://127.0.0.1/cb"},
				"jwks":                       map[string]any{"keys": []any{}},
				"contacts":                   []any{"ops@app.example"},
				"client_name#ja-Jpan-JP":     "デモ",
				"tos_uri#fr":                 "https://app.example/fr",
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body, err := json.Marshal(tc.resp)
			if err != nil {
				t.Fatalf("encoding: %v", err)
			}

			// splitObject refuses repeated names and trailing data, as
			// a strict client would.
			if _, perr := splitObject(body); perr != nil {
				t.Fatalf("response %s: %v", body, perr)
			}
			var got map[string]any
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("decoding %s: %v", body, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("response =\n%v\nwant\n%v", got, tc.want)
			}

			// A client can read its metadata back from the response.
			m, perr := decodeMetadata(body)
			if perr != nil {
				t.Fatalf("decodeMetadata(response): %v", perr)
			}
			if !reflect.DeepEqual(*m, tc.resp.Metadata) {
				t.Errorf("metadata read back =\n%#v\nwant\n%#v",
					*m, tc.resp.Metadata)
			}
		})
	}
}

// TestRegistrationResponseOrder checks that the issued values come first,
// which keeps the answer easy to read in logs and curl output.
func TestRegistrationResponseOrder(t *testing.T) {
	zero := int64(0)
	body, err := json.Marshal(registrationResponse{
		ClientID:              "id",
		ClientIDIssuedAt:      1,
		ClientSecret:          "s",
		ClientSecretExpiresAt: &zero,
		Metadata: clientdb.Metadata{
			TokenEndpointAuthMethod: authClientSecretPost,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	members, perr := splitObject(body)
	if perr != nil {
		t.Fatal(perr)
	}
	var names []string
	for _, m := range members {
		names = append(names, m.name)
	}
	want := []string{
		"client_id", "client_id_issued_at", "client_secret",
		"client_secret_expires_at", "token_endpoint_auth_method",
		"grant_types", "response_types",
	}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("members = %q, want %q", names, want)
	}
}
