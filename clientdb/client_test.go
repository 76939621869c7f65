package clientdb

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// fullMetadata sets every member, so that a round trip through JSON checks
// each field's name and encoding. Its slices are non-empty or nil because
// omitempty turns an empty slice into an absent member, which decodes as nil.
func fullMetadata() Metadata {
	return Metadata{
		RedirectURIs:            []string{"https://app.example/cb"},
		TokenEndpointAuthMethod: "client_secret_basic",
		GrantTypes:              []string{"authorization_code", "refresh_token"},
		ResponseTypes:           []string{"code"},
		ClientName:              "Demo",
		ClientURI:               "https://app.example/",
		LogoURI:                 "https://app.example/logo.png",
		Scope:                   "openid profile",
		Contacts:                []string{"ops@app.example"},
		TOSURI:                  "https://app.example/tos",
		PolicyURI:               "https://app.example/privacy",
		JWKSURI:                 "https://app.example/jwks.json",
		JWKS:                    json.RawMessage(`{"keys":[{"kty":"OKP"}]}`),
		SoftwareID:              "4NRB1-0XZABZI9E6-5SM3R",
		SoftwareVersion:         "2.1",
		Localized: map[string]string{
			"client_name#ja-Jpan-JP": "デモ",
			"tos_uri#de":             "https://app.example/agb",
		},
	}
}

// members decodes a JSON object into its raw members.
func members(t *testing.T, data []byte) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("decoding %s: %v", data, err)
	}
	return m
}

func TestMetadataJSONRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   Metadata
	}{
		{"full with language tags", fullMetadata()},
		{"only the fixed members", Metadata{
			TokenEndpointAuthMethod: "none",
			GrantTypes:              []string{"authorization_code"},
			ResponseTypes:           []string{"code"},
			RedirectURIs:            []string{"http://127.0.0.1/cb"},
		}},
		{"one language tag", Metadata{
			TokenEndpointAuthMethod: "none",
			GrantTypes:              []string{"client_credentials"},
			ResponseTypes:           []string{},
			Localized:               map[string]string{"client_name#fr": "Démo"},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data, err := json.Marshal(tc.in)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}

			// Language-tagged members sit beside the fixed ones, not in
			// a nested object, as RFC 7591 section 2.2 writes them.
			got := members(t, data)
			for name, want := range tc.in.Localized {
				var v string
				if err := json.Unmarshal(got[name], &v); err != nil || v != want {
					t.Errorf("member %q = %s, want %q", name, got[name], want)
				}
			}
			if _, ok := got["Localized"]; ok {
				t.Errorf("Localized leaked into JSON: %s", data)
			}

			var back Metadata
			if err := json.Unmarshal(data, &back); err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if !reflect.DeepEqual(back, tc.in) {
				t.Errorf("round trip:\n got %+v\nwant %+v\njson %s",
					back, tc.in, data)
			}
		})
	}
}

func TestMetadataLocalizedNames(t *testing.T) {
	const doc = `{
		"token_endpoint_auth_method": "none",
		"grant_types": ["authorization_code"],
		"response_types": ["code"],
		"client_name": "Demo",
		"client_name#ja-Jpan-JP": "デモ",
		"logo_uri#en": "https://app.example/en.png",
		"unknown_member": "ignored"
	}`
	var m Metadata
	if err := json.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	want := map[string]string{
		"client_name#ja-Jpan-JP": "デモ",
		"logo_uri#en":            "https://app.example/en.png",
	}
	if !reflect.DeepEqual(m.Localized, want) {
		t.Errorf("Localized = %v, want %v", m.Localized, want)
	}
	if m.ClientName != "Demo" {
		t.Errorf("ClientName = %q, want the untagged value", m.ClientName)
	}
}

func TestMetadataUnmarshalErrors(t *testing.T) {
	tests := []struct {
		name string
		doc  string
	}{
		{"tagged member not a string", `{"client_name#en": 7}`},
		{"tagged member an object", `{"client_name#en": {"a": "b"}}`},
		{"fixed member of the wrong type", `{"grant_types": "code"}`},
		{"not an object", `["client_name"]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var m Metadata
			if err := json.Unmarshal([]byte(tc.doc), &m); err == nil {
				t.Errorf("Unmarshal(%s) = nil error, metadata %+v", tc.doc, m)
			}
		})
	}
}

func TestMetadataResponseTypesEmpty(t *testing.T) {
	tests := []struct {
		name string
		rt   []string
	}{
		{name: "empty slice", rt: []string{}},
		// Callers outside the policy may leave the slice nil; the
		// documented JSON form is still an empty list, never null.
		{
			name: "nil slice",
			rt:   nil,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := Metadata{
				TokenEndpointAuthMethod: "client_secret_basic",
				GrantTypes:              []string{"client_credentials"},
				ResponseTypes:           tc.rt,
			}
			data, err := json.Marshal(m)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			got := string(members(t, data)["response_types"])
			if got != "[]" {
				t.Errorf("response_types = %q, want []; json %s", got, data)
			}
		})
	}
}

func TestClientJSONMembers(t *testing.T) {
	tests := []struct {
		name   string
		client Client
		want   []string
	}{
		{
			name: "with secret",
			client: Client{
				ID:              "abc",
				IssuedAt:        1796314153,
				SecretHash:      HashSecret("s3cret"),
				SecretExpiresAt: 1796400000,
				Metadata:        fullMetadata(),
			},
			want: []string{
				"client_id", "client_id_issued_at",
				"client_secret_expires_at", "client_secret_hash",
				"metadata",
			},
		},
		{
			// The hash is absent for a public client, but the expiry
			// stays, as 0, because clients expect a number.
			name: "without secret",
			client: Client{
				ID:       "pub",
				IssuedAt: 1796314153,
				Metadata: Metadata{
					TokenEndpointAuthMethod: "none",
					GrantTypes:              []string{"authorization_code"},
					ResponseTypes:           []string{"code"},
				},
			},
			want: []string{
				"client_id", "client_id_issued_at",
				"client_secret_expires_at", "metadata",
			},
		},
		{
			name: "rotated and managed",
			client: Client{
				ID:                      "rot",
				IssuedAt:                1796314153,
				SecretHash:              HashSecret("new"),
				SecretExpiresAt:         1796400000,
				PreviousSecretHash:      HashSecret("old"),
				PreviousSecretExpiresAt: 1796317753,
				RegistrationTokenHash:   HashSecret("token"),
				UpdatedAt:               1796314200,
				Metadata:                fullMetadata(),
			},
			want: []string{
				"client_id", "client_id_issued_at",
				"client_secret_expires_at", "client_secret_hash",
				"client_updated_at", "metadata",
				"previous_secret_expires_at", "previous_secret_hash",
				"registration_access_token_hash",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data, err := json.Marshal(&tc.client)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			got := members(t, data)
			var names []string
			for name := range got {
				names = append(names, name)
			}
			slices.Sort(names)
			if !slices.Equal(names, tc.want) {
				t.Errorf("members = %q, want %q", names, tc.want)
			}
			if string(got["client_secret_expires_at"]) !=
				jsonInt(tc.client.SecretExpiresAt) {
				t.Errorf("client_secret_expires_at = %s, want %d",
					got["client_secret_expires_at"],
					tc.client.SecretExpiresAt)
			}

			var back Client
			if err := json.Unmarshal(data, &back); err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if !reflect.DeepEqual(back, tc.client) {
				t.Errorf("round trip:\n got %+v\nwant %+v", back, tc.client)
			}
		})
	}
}

func jsonInt(v int64) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestClientDocumentedForm decodes the example of the README's schema
// section, which readers in other languages are written against.
func TestClientDocumentedForm(t *testing.T) {
	const doc = `{
	  "client_id": "o9I24PPfH9MrOdV5aqarfA",
	  "client_id_issued_at": 1796314153,
	  "client_secret_hash": "sha256:47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU",
	  "client_secret_expires_at": 0,
	  "metadata": {
	    "redirect_uris": ["http://127.0.0.1:3000/callback"],
	    "token_endpoint_auth_method": "client_secret_basic",
	    "grant_types": ["authorization_code"],
	    "response_types": ["code"],
	    "client_name": "demo",
	    "client_name#ja-Jpan-JP": "デモ",
	    "scope": "openid"
	  }
	}`
	var c Client
	if err := json.Unmarshal([]byte(doc), &c); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	want := Client{
		ID:         "o9I24PPfH9MrOdV5aqarfA",
		IssuedAt:   1796314153,
		SecretHash: "sha256:47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU",
		Metadata: Metadata{
			RedirectURIs:            []string{"http://127.0.0.1:3000/callback"},
			TokenEndpointAuthMethod: "client_secret_basic",
			GrantTypes:              []string{"authorization_code"},
			ResponseTypes:           []string{"code"},
			ClientName:              "demo",
			Scope:                   "openid",
			Localized: map[string]string{
				"client_name#ja-Jpan-JP": "デモ",
			},
		},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("decoded:\n got %+v\nwant %+v", c, want)
	}
	if !c.VerifySecret("", time.Now()) {
		t.Error("the example hash is that of the empty secret")
	}
}

// randomSecret makes a secret the way the server issues them: 256 random
// bits, base64url.
func randomSecret(t testing.TB) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestHashSecretFormat(t *testing.T) {
	// SHA-256 of the empty string, base64url without padding: a fixed
	// vector, so the test does not restate the implementation.
	const emptyHash = "sha256:47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
	if got := HashSecret(""); got != emptyHash {
		t.Errorf("HashSecret(\"\") = %q, want %q", got, emptyHash)
	}

	seen := map[string]bool{}
	for range 20 {
		secret := randomSecret(t)
		h := HashSecret(secret)
		if strings.Contains(h, secret) {
			t.Errorf("hash %q contains the secret", h)
		}
		if !strings.HasPrefix(h, "sha256:") || len(h) != len(emptyHash) {
			t.Errorf("hash %q is not sha256: and 43 characters", h)
		}
		if h != HashSecret(secret) {
			t.Errorf("HashSecret is not deterministic for %q", secret)
		}
		if seen[h] {
			t.Errorf("two secrets share the hash %q", h)
		}
		seen[h] = true
	}
}

func TestVerifySecret(t *testing.T) {
	secret := randomSecret(t)
	hash := HashSecret(secret)
	digest := strings.TrimPrefix(hash, "sha256:")
	std := base64.StdEncoding.EncodeToString(mustDecode(t, digest))

	tests := []struct {
		name   string
		hash   string
		secret string
		want   bool
	}{
		{"right secret", hash, secret, true},
		{"wrong secret", hash, secret + "x", false},
		{"secret with a flipped case", hash, strings.ToUpper(secret), false},
		{"empty secret", hash, "", false},
		{"empty hash", "", secret, false},
		{"prefix only", "sha256:", secret, false},
		{"missing prefix", digest, secret, false},
		{"other algorithm", "sha512:" + digest, secret, false},
		{"upper-case prefix", "SHA256:" + digest, secret, false},
		{"padded base64", hash + "=", secret, false},
		{"standard base64", "sha256:" + std, secret, false},
		{"not base64", "sha256:!!!!", secret, false},
		{"short digest", "sha256:" + digest[:22], secret, false},
		{"long digest", hash + "AAAA", secret, false},
		{"the secret as hash", secret, secret, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := VerifySecret(tc.hash, tc.secret); got != tc.want {
				t.Errorf("VerifySecret(%q, %q) = %v, want %v",
					tc.hash, tc.secret, got, tc.want)
			}
		})
	}
}

func mustDecode(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestClientVerifySecret(t *testing.T) {
	const secret = "correct horse"
	expiry := time.Unix(1796400000, 0)

	tests := []struct {
		name   string
		client Client
		secret string
		now    time.Time
		want   bool
	}{
		{
			name:   "never expires",
			client: Client{SecretHash: HashSecret(secret)},
			secret: secret,
			now:    time.Unix(1<<40, 0),
			want:   true,
		},
		{
			name:   "wrong secret",
			client: Client{SecretHash: HashSecret(secret)},
			secret: "incorrect horse",
			now:    expiry.Add(-time.Hour),
		},
		{
			name: "before expiry",
			client: Client{
				SecretHash:      HashSecret(secret),
				SecretExpiresAt: expiry.Unix(),
			},
			secret: secret,
			now:    expiry.Add(-time.Second),
			want:   true,
		},
		{
			// The expiry is the first second at which it is invalid.
			name: "at expiry",
			client: Client{
				SecretHash:      HashSecret(secret),
				SecretExpiresAt: expiry.Unix(),
			},
			secret: secret,
			now:    expiry,
		},
		{
			name: "after expiry",
			client: Client{
				SecretHash:      HashSecret(secret),
				SecretExpiresAt: expiry.Unix(),
			},
			secret: secret,
			now:    expiry.Add(time.Hour),
		},
		{
			// A public client has no secret; not even the empty one.
			name:   "no secret",
			client: Client{ID: "public"},
			secret: "",
			now:    expiry,
		},
		{
			name:   "no secret, some secret presented",
			client: Client{ID: "public"},
			secret: secret,
			now:    expiry,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.client.VerifySecret(tc.secret, tc.now)
			if got != tc.want {
				t.Errorf("VerifySecret = %v, want %v", got, tc.want)
			}
			if tc.client.HasSecret() != (tc.client.SecretHash != "") {
				t.Errorf("HasSecret = %v with hash %q",
					tc.client.HasSecret(), tc.client.SecretHash)
			}
		})
	}
}

// TestClientRotationMembers decodes the members of rotation and management
// by the names the README documents, then encodes them back: a swap of two
// tags of the same type would pass a round trip but not this.
func TestClientRotationMembers(t *testing.T) {
	const doc = `{
	  "client_id": "rot",
	  "client_id_issued_at": 1796314153,
	  "client_secret_hash": "sha256:47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU",
	  "client_secret_expires_at": 1796400000,
	  "previous_secret_hash": "sha256:previous",
	  "previous_secret_expires_at": 1796317753,
	  "registration_access_token_hash": "sha256:token",
	  "client_updated_at": 1796314200,
	  "metadata": {
	    "token_endpoint_auth_method": "client_secret_basic",
	    "grant_types": ["client_credentials"],
	    "response_types": []
	  }
	}`
	var c Client
	if err := json.Unmarshal([]byte(doc), &c); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	want := Client{
		ID:                      "rot",
		IssuedAt:                1796314153,
		SecretHash:              "sha256:47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU",
		SecretExpiresAt:         1796400000,
		PreviousSecretHash:      "sha256:previous",
		PreviousSecretExpiresAt: 1796317753,
		RegistrationTokenHash:   "sha256:token",
		UpdatedAt:               1796314200,
		Metadata: Metadata{
			TokenEndpointAuthMethod: "client_secret_basic",
			GrantTypes:              []string{"client_credentials"},
			ResponseTypes:           []string{},
		},
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("decoded:\n got %+v\nwant %+v", c, want)
	}

	data, err := json.Marshal(&c)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	got := members(t, data)
	for name, v := range members(t, []byte(doc)) {
		if name == "metadata" {
			continue
		}
		if string(got[name]) != string(v) {
			t.Errorf("member %q = %s, want %s", name, got[name], v)
		}
	}
}

func TestClientCheckSecret(t *testing.T) {
	const current, previous = "current secret", "previous secret"
	now := time.Unix(1796400000, 0)
	at := func(d time.Duration) int64 { return now.Add(d).Unix() }

	// rotated has both secrets, each expiring at the given time.
	rotated := func(currentExp, previousExp int64) Client {
		return Client{
			SecretHash:              HashSecret(current),
			SecretExpiresAt:         currentExp,
			PreviousSecretHash:      HashSecret(previous),
			PreviousSecretExpiresAt: previousExp,
		}
	}

	tests := []struct {
		name   string
		client Client
		secret string
		want   error
	}{
		{
			name:   "current, never expires",
			client: Client{SecretHash: HashSecret(current)},
			secret: current,
		},
		{
			name:   "current, a second before expiry",
			client: rotated(at(time.Second), at(time.Second)),
			secret: current,
		},
		{
			// The expiry is the first second at which it is invalid.
			name:   "current, at expiry",
			client: rotated(at(0), at(time.Hour)),
			secret: current,
			want:   ErrSecretExpired,
		},
		{
			name:   "current, after expiry",
			client: rotated(at(-time.Hour), at(-2*time.Hour)),
			secret: current,
			want:   ErrSecretExpired,
		},
		{
			name:   "previous, within the overlap",
			client: rotated(0, at(time.Hour)),
			secret: previous,
		},
		{
			name:   "previous, a second before its expiry",
			client: rotated(0, at(time.Second)),
			secret: previous,
		},
		{
			name:   "previous, at its expiry",
			client: rotated(0, at(0)),
			secret: previous,
			want:   ErrSecretExpired,
		},
		{
			name:   "previous, after its expiry",
			client: rotated(0, at(-time.Hour)),
			secret: previous,
			want:   ErrSecretExpired,
		},
		{
			name:   "current, after the previous expired",
			client: rotated(0, at(-time.Hour)),
			secret: current,
		},
		{
			name:   "wrong secret",
			client: rotated(0, at(time.Hour)),
			secret: "guess",
			want:   ErrSecretInvalid,
		},
		{
			// Only the client's own secret learns that it expired.
			name:   "wrong secret, both expired",
			client: rotated(at(-time.Hour), at(-time.Hour)),
			secret: "guess",
			want:   ErrSecretInvalid,
		},
		{
			name:   "empty secret",
			client: rotated(0, at(time.Hour)),
			secret: "",
			want:   ErrSecretInvalid,
		},
		{
			name:   "no secret, empty presented",
			client: Client{ID: "public"},
			secret: "",
			want:   ErrSecretInvalid,
		},
		{
			name:   "no secret, some presented",
			client: Client{ID: "public"},
			secret: current,
			want:   ErrSecretInvalid,
		},
		{
			name:   "the hash as the secret",
			client: rotated(0, at(time.Hour)),
			secret: HashSecret(current),
			want:   ErrSecretInvalid,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.client.CheckSecret(tc.secret, now)
			if !errors.Is(err, tc.want) {
				t.Errorf("CheckSecret = %v, want %v", err, tc.want)
			}
			got := tc.client.VerifySecret(tc.secret, now)
			if got != (tc.want == nil) {
				t.Errorf("VerifySecret = %v, want %v", got, tc.want == nil)
			}
		})
	}
}

func TestClientVerifyRegistrationToken(t *testing.T) {
	token := randomSecret(t)
	tests := []struct {
		name  string
		hash  string
		token string
		want  bool
	}{
		{"right token", HashSecret(token), token, true},
		{"wrong token", HashSecret(token), token + "x", false},
		{"empty token", HashSecret(token), "", false},
		{"the hash as the token", HashSecret(token), HashSecret(token), false},
		// No hash means management is off: nothing opens it.
		{"no hash, empty token", "", "", false},
		{"no hash, some token", "", token, false},
		{"malformed hash, empty token", "sha256:", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := Client{ID: "c", RegistrationTokenHash: tc.hash}
			if got := c.VerifyRegistrationToken(tc.token); got != tc.want {
				t.Errorf("VerifyRegistrationToken(%q) = %v, want %v",
					tc.token, got, tc.want)
			}
		})
	}
}
