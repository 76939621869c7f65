package clientdb

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Client is one registered client as stored in the "clients" bucket.
type Client struct {
	// ID is the client identifier issued at registration.
	ID string `json:"client_id"`

	// IssuedAt is when the client was registered, in seconds since the
	// Unix epoch.
	IssuedAt int64 `json:"client_id_issued_at"`

	// SecretHash is the hash of the client secret as made by
	// [HashSecret], or empty for clients that were issued no secret.
	SecretHash string `json:"client_secret_hash,omitempty"`

	// SecretExpiresAt is when the secret expires, in seconds since the
	// Unix epoch, or 0 if it never does. It is 0 when there is no secret.
	SecretExpiresAt int64 `json:"client_secret_expires_at"`

	// PreviousSecretHash is the hash of the secret that a rotation
	// replaced, while it is still accepted; empty otherwise.
	PreviousSecretHash string `json:"previous_secret_hash,omitempty"`

	// PreviousSecretExpiresAt is when the previous secret stops being
	// accepted, in seconds since the Unix epoch.
	PreviousSecretExpiresAt int64 `json:"previous_secret_expires_at,omitempty"`

	// RegistrationTokenHash is the hash, in the form [HashSecret] makes,
	// of the registration access token with which the client manages its
	// registration (RFC 7592), or empty when management is off.
	RegistrationTokenHash string `json:"registration_access_token_hash,omitempty"`

	// UpdatedAt is when the registration was last changed through RFC
	// 7592, in seconds since the Unix epoch, or 0 if never.
	UpdatedAt int64 `json:"client_updated_at,omitempty"`

	// LastUsedAt is when the gateway last admitted the client at the
	// backend's authorization or token endpoint, in seconds since the
	// Unix epoch, or 0 if never. It is written in the background and may
	// lag by a few seconds.
	LastUsedAt int64 `json:"last_used_at,omitempty"`

	// DisabledAt is when an operator disabled the client, in Unix
	// seconds, or 0. A disabled client must be treated as deleted until
	// it is enabled again; [Reader.Lookup] reports it as [ErrDisabled].
	DisabledAt int64 `json:"disabled_at,omitempty"`

	// InitialTokenID is the ID of the issued initial access token (see
	// [InitialToken]) the client was registered with, or empty.
	InitialTokenID string `json:"initial_token_id,omitempty"`

	// Policy, when set, narrows the server's registration policy for
	// this client, for its registration and every later update. It comes
	// from the initial access token it was registered with.
	Policy *TokenPolicy `json:"policy,omitempty"`

	// Kind is how the client came to be known: empty for a client that
	// registered, [KindMetadataDocument] for one whose ID is the URL of
	// its client ID metadata document, fetched by the server.
	Kind string `json:"kind,omitempty"`

	// DocumentFetchedAt is when the client's metadata document was last
	// fetched and accepted, in Unix seconds; 0 for a registered client.
	DocumentFetchedAt int64 `json:"document_fetched_at,omitempty"`

	// DocumentRefreshAt is when the metadata document is due to be
	// fetched again, from its caching headers within the server's
	// bounds, in Unix seconds; 0 for a registered client.
	DocumentRefreshAt int64 `json:"document_refresh_at,omitempty"`

	// Metadata is the client metadata as registered, after the server
	// applied its defaults.
	Metadata Metadata `json:"metadata"`
}

// KindMetadataDocument is the [Client.Kind] of a client whose ID is the
// https URL of its client ID metadata document: a public client with no
// secret and no registration access token, whose metadata the server
// fetched from that URL and refreshes from there.
const KindMetadataDocument = "cimd"

// TokenPolicy narrows the server's registration policy. Each list that is
// set is intersected with what the server allows; an empty list leaves the
// server's rule as it is.
type TokenPolicy struct {
	// GrantTypes are the grant types a client may register.
	GrantTypes []string `json:"grant_types,omitempty"`

	// Scopes are the scopes a client may register.
	Scopes []string `json:"scopes,omitempty"`

	// RedirectHosts are the hosts allowed in http(s) redirect URIs off
	// the local machine: host names, or "*.example.com" for any
	// subdomain of example.com. Loopback http and private-use schemes
	// are not affected.
	RedirectHosts []string `json:"redirect_hosts,omitempty"`
}

// Disabled reports whether an operator disabled the client.
func (c *Client) Disabled() bool {
	return c.DisabledAt != 0
}

// HasSecret reports whether the client was issued a secret.
func (c *Client) HasSecret() bool {
	return c.SecretHash != ""
}

// VerifySecret reports whether secret is a secret of the client that is
// valid at now: the current one before it expires, or the one a rotation
// replaced while its overlap lasts. The comparison takes constant time in
// the secret.
func (c *Client) VerifySecret(secret string, now time.Time) bool {
	return c.CheckSecret(secret, now) == nil
}

// CheckSecret is VerifySecret with the reason for a refusal: nil when
// secret is valid at now, [ErrSecretExpired] when it is the client's secret
// but expired, [ErrSecretInvalid] otherwise.
func (c *Client) CheckSecret(secret string, now time.Time) error {
	// Both hashes are always compared, so that the time taken does not
	// tell which one matched.
	current := c.HasSecret() && VerifySecret(c.SecretHash, secret)
	previous := c.PreviousSecretHash != "" &&
		VerifySecret(c.PreviousSecretHash, secret)

	switch {
	case current && !expired(c.SecretExpiresAt, now):
		return nil
	case previous && !expired(c.PreviousSecretExpiresAt, now):
		return nil
	case current || previous:
		return ErrSecretExpired
	default:
		return ErrSecretInvalid
	}
}

// VerifyRegistrationToken reports whether token is the client's
// registration access token. It compares in constant time.
func (c *Client) VerifyRegistrationToken(token string) bool {
	return c.RegistrationTokenHash != "" &&
		VerifySecret(c.RegistrationTokenHash, token)
}

// expired reports whether a time in Unix seconds, 0 meaning never, has
// passed at now.
func expired(at int64, now time.Time) bool {
	return at != 0 && now.Unix() >= at
}

// secretHashPrefix names the hash function in a stored secret hash.
const secretHashPrefix = "sha256:"

// HashSecret returns the stored form of a client secret: "sha256:" followed
// by the unpadded base64url encoding of the SHA-256 digest of the secret.
//
// A fast hash is enough because secrets are 256-bit random values issued by
// the server: there is no password to guess, so a slow hash would add cost
// without adding protection.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return secretHashPrefix + base64.RawURLEncoding.EncodeToString(sum[:])
}

// VerifySecret reports whether secret matches hash, a value made by
// [HashSecret]. It compares digests in constant time.
func VerifySecret(hash, secret string) bool {
	want, ok := strings.CutPrefix(hash, secretHashPrefix)
	if !ok {
		return false
	}
	wantSum, err := base64.RawURLEncoding.DecodeString(want)
	if err != nil || len(wantSum) != sha256.Size {
		return false
	}
	sum := sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(sum[:], wantSum) == 1
}

// Metadata is the client metadata of RFC 7591 section 2 that the server
// keeps. Its JSON form uses the RFC's member names.
type Metadata struct {
	// RedirectURIs are the registered redirection URIs.
	RedirectURIs []string `json:"redirect_uris,omitempty"`

	// TokenEndpointAuthMethod is how the client authenticates at the
	// token endpoint, for example "client_secret_basic" or "none".
	TokenEndpointAuthMethod string `json:"token_endpoint_auth_method"`

	// GrantTypes are the grant types the client may use.
	GrantTypes []string `json:"grant_types"`

	// ResponseTypes are the response types the client may use at the
	// authorization endpoint. It is empty, not absent, for clients
	// without a redirect-based grant.
	ResponseTypes []string `json:"response_types"`

	// ClientName is the name shown to the end user.
	ClientName string `json:"client_name,omitempty"`

	// ClientURI is the client's home page.
	ClientURI string `json:"client_uri,omitempty"`

	// LogoURI is the client's logo.
	LogoURI string `json:"logo_uri,omitempty"`

	// Scope is the space-separated list of scopes the client may request.
	Scope string `json:"scope,omitempty"`

	// Contacts are the addresses of people responsible for the client.
	Contacts []string `json:"contacts,omitempty"`

	// TOSURI is the client's terms of service.
	TOSURI string `json:"tos_uri,omitempty"`

	// PolicyURI is the client's privacy policy.
	PolicyURI string `json:"policy_uri,omitempty"`

	// JWKSURI is where the client publishes its public keys.
	JWKSURI string `json:"jwks_uri,omitempty"`

	// JWKS is the client's public key set, by value.
	JWKS json.RawMessage `json:"jwks,omitempty"`

	// SoftwareID identifies the client software.
	SoftwareID string `json:"software_id,omitempty"`

	// SoftwareVersion is the version of the client software.
	SoftwareVersion string `json:"software_version,omitempty"`

	// SoftwareStatement is the signed software statement (RFC 7591
	// section 2.3) the client registered with, exactly as sent.
	SoftwareStatement string `json:"software_statement,omitempty"`

	// The members below are those of OpenID Connect Dynamic Client
	// Registration 1.0, section 2, under the same names.

	// ApplicationType is "web" or "native".
	ApplicationType string `json:"application_type,omitempty"`

	// SectorIdentifierURI lists the redirect URIs of the client's
	// sector, for pairwise subject identifiers.
	SectorIdentifierURI string `json:"sector_identifier_uri,omitempty"`

	// SubjectType is "public" or "pairwise".
	SubjectType string `json:"subject_type,omitempty"`

	// IDTokenSignedResponseAlg is the JWS algorithm of ID tokens.
	IDTokenSignedResponseAlg string `json:"id_token_signed_response_alg,omitempty"`

	// IDTokenEncryptedResponseAlg is the JWE key algorithm of ID tokens.
	IDTokenEncryptedResponseAlg string `json:"id_token_encrypted_response_alg,omitempty"`

	// IDTokenEncryptedResponseEnc is the JWE content encryption of ID
	// tokens.
	IDTokenEncryptedResponseEnc string `json:"id_token_encrypted_response_enc,omitempty"`

	// UserinfoSignedResponseAlg is the JWS algorithm of UserInfo
	// responses.
	UserinfoSignedResponseAlg string `json:"userinfo_signed_response_alg,omitempty"`

	// UserinfoEncryptedResponseAlg is the JWE key algorithm of UserInfo
	// responses.
	UserinfoEncryptedResponseAlg string `json:"userinfo_encrypted_response_alg,omitempty"`

	// UserinfoEncryptedResponseEnc is the JWE content encryption of
	// UserInfo responses.
	UserinfoEncryptedResponseEnc string `json:"userinfo_encrypted_response_enc,omitempty"`

	// RequestObjectSigningAlg is the JWS algorithm of request objects.
	RequestObjectSigningAlg string `json:"request_object_signing_alg,omitempty"`

	// RequestObjectEncryptionAlg is the JWE key algorithm of request
	// objects.
	RequestObjectEncryptionAlg string `json:"request_object_encryption_alg,omitempty"`

	// RequestObjectEncryptionEnc is the JWE content encryption of
	// request objects.
	RequestObjectEncryptionEnc string `json:"request_object_encryption_enc,omitempty"`

	// TokenEndpointAuthSigningAlg is the JWS algorithm of the client's
	// authentication JWTs at the token endpoint.
	TokenEndpointAuthSigningAlg string `json:"token_endpoint_auth_signing_alg,omitempty"`

	// DefaultMaxAge is the default maximum authentication age, in
	// seconds, or nil.
	DefaultMaxAge *int64 `json:"default_max_age,omitempty"`

	// RequireAuthTime asks for the auth_time claim in ID tokens, or is
	// nil when not given.
	RequireAuthTime *bool `json:"require_auth_time,omitempty"`

	// DefaultACRValues are the default authentication context classes.
	DefaultACRValues []string `json:"default_acr_values,omitempty"`

	// InitiateLoginURI is where a third party can start a login.
	InitiateLoginURI string `json:"initiate_login_uri,omitempty"`

	// RequestURIs are the request_uri values the client may use.
	RequestURIs []string `json:"request_uris,omitempty"`

	// PostLogoutRedirectURIs are where the user agent may go after
	// logout (OpenID Connect RP-Initiated Logout 1.0).
	PostLogoutRedirectURIs []string `json:"post_logout_redirect_uris,omitempty"`

	// FrontchannelLogoutURI is the client's front-channel logout URI
	// (OpenID Connect Front-Channel Logout 1.0).
	FrontchannelLogoutURI string `json:"frontchannel_logout_uri,omitempty"`

	// FrontchannelLogoutSessionRequired asks for iss and sid on
	// front-channel logout, or is nil when not given.
	FrontchannelLogoutSessionRequired *bool `json:"frontchannel_logout_session_required,omitempty"`

	// BackchannelLogoutURI is the client's back-channel logout URI
	// (OpenID Connect Back-Channel Logout 1.0).
	BackchannelLogoutURI string `json:"backchannel_logout_uri,omitempty"`

	// BackchannelLogoutSessionRequired asks for sid in logout tokens, or
	// is nil when not given.
	BackchannelLogoutSessionRequired *bool `json:"backchannel_logout_session_required,omitempty"`

	// Localized holds the language-tagged variants of the human-readable
	// members, keyed by their full member name such as
	// "client_name#ja-Jpan-JP". In JSON they are top-level members.
	Localized map[string]string `json:"-"`
}

// metadataFields is Metadata without its methods, so that the JSON
// functions below can use the default encoding for the fixed members.
type metadataFields Metadata

// MarshalJSON encodes the metadata with the language-tagged variants as
// top-level members.
func (m Metadata) MarshalJSON() ([]byte, error) {
	// Both lists are always present in the JSON form, if only empty.
	if m.GrantTypes == nil {
		m.GrantTypes = []string{}
	}
	if m.ResponseTypes == nil {
		m.ResponseTypes = []string{}
	}
	fixed, err := json.Marshal(metadataFields(m))
	if err != nil || len(m.Localized) == 0 {
		return fixed, err
	}
	extra, err := json.Marshal(m.Localized)
	if err != nil {
		return nil, err
	}

	// Both are non-empty JSON objects: join them into one.
	out := make([]byte, 0, len(fixed)+len(extra))
	out = append(out, fixed[:len(fixed)-1]...)
	out = append(out, ',')
	return append(out, extra[1:]...), nil
}

// UnmarshalJSON decodes the metadata, collecting members whose name has a
// language tag ("name#tag") into Localized.
func (m *Metadata) UnmarshalJSON(data []byte) error {
	var fixed metadataFields
	if err := json.Unmarshal(data, &fixed); err != nil {
		return err
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(data, &all); err != nil {
		return err
	}
	for name, raw := range all {
		if !strings.Contains(name, "#") {
			continue
		}
		var v string
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("decoding %q: %w", name, err)
		}
		if fixed.Localized == nil {
			fixed.Localized = make(map[string]string)
		}
		fixed.Localized[name] = v
	}
	*m = Metadata(fixed)
	return nil
}
