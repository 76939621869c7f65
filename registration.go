package dcr

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	"go.uber.org/zap"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

// Lengths of issued values in random bytes: 128 bits for a client ID, which
// is public, and 256 bits for a secret.
const (
	clientIDBytes = 16
	secretBytes   = 32
)

// registrationResponse is the client information response of RFC 7591
// section 3.2.1: the issued values followed by all registered metadata as
// top-level members.
type registrationResponse struct {
	ClientID              string `json:"client_id"`
	ClientIDIssuedAt      int64  `json:"client_id_issued_at"`
	ClientSecret          string `json:"client_secret,omitempty"`
	ClientSecretExpiresAt *int64 `json:"client_secret_expires_at,omitempty"`

	Metadata clientdb.Metadata `json:"-"`
}

// MarshalJSON encodes the issued values and the metadata as one object.
func (r registrationResponse) MarshalJSON() ([]byte, error) {
	type issued registrationResponse
	head, err := json.Marshal(issued(r))
	if err != nil {
		return nil, err
	}
	meta, err := json.Marshal(r.Metadata)
	if err != nil {
		return nil, err
	}

	// head always has members; meta always has token_endpoint_auth_method.
	out := make([]byte, 0, len(head)+len(meta))
	out = append(out, head[:len(head)-1]...)
	out = append(out, ',')
	return append(out, meta[1:]...), nil
}

// register answers a client registration request (RFC 7591 section 3.1)
// with a client information response (section 3.2.1) or an error response
// (section 3.2.2). A client is stored, durably, before the 201 is sent.
func (h *Handler) register(w http.ResponseWriter, r *http.Request) error {
	m, perr := h.readMetadata(w, r)
	if perr == nil {
		perr = h.policy.apply(m)
	}
	if perr != nil {
		h.refused(r, perr)
		writeError(w, perr)
		return nil
	}

	now := h.now()
	c := &clientdb.Client{
		ID:       randomString(clientIDBytes),
		IssuedAt: now.Unix(),
		Metadata: *m,
	}
	resp := registrationResponse{
		ClientID:         c.ID,
		ClientIDIssuedAt: c.IssuedAt,
		Metadata:         c.Metadata,
	}
	if issuesSecret(m) {
		secret := randomString(secretBytes)
		c.SecretHash = clientdb.HashSecret(secret)
		if h.policy.secretLifetime > 0 {
			c.SecretExpiresAt = now.Add(h.policy.secretLifetime).Unix()
		}
		resp.ClientSecret = secret
		resp.ClientSecretExpiresAt = &c.SecretExpiresAt
	}

	// The commit goes on if the client hangs up: it may be in a group
	// already, and a 503 must not be logged for a client that was stored.
	ctx := context.WithoutCancel(r.Context())
	if err := h.store.Create(ctx, c); err != nil {
		perr := &protoError{
			Status:      http.StatusServiceUnavailable,
			Code:        codeServerError,
			Description: "the client store is unavailable; try again later",
			Rule:        "store",
			Cause:       err,
		}
		h.refused(r, perr)
		w.Header().Set("Retry-After", "1")
		writeError(w, perr)
		return nil
	}

	h.logger.Info("client registered",
		zap.String("client_id", c.ID),
		zap.String("client_name", m.ClientName),
		zap.Strings("grant_types", m.GrantTypes),
		zap.String("token_endpoint_auth_method", m.TokenEndpointAuthMethod),
		zap.String("client_ip", clientIP(r)))
	writeJSON(w, http.StatusCreated, resp)
	return nil
}

// readMetadata checks the content type, reads the body within the size
// limit and decodes it.
func (h *Handler) readMetadata(w http.ResponseWriter, r *http.Request) (*clientdb.Metadata, *protoError) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return nil, requestError(http.StatusUnsupportedMediaType,
			"content_type", "Content-Type must be application/json")
	}

	tooLarge := requestError(http.StatusRequestEntityTooLarge, "max_body",
		fmt.Sprintf("request body is larger than %d bytes", h.MaxBody))
	if r.ContentLength > h.MaxBody {
		return nil, tooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.MaxBody))
	var maxErr *http.MaxBytesError
	if errors.As(err, &maxErr) {
		return nil, tooLarge
	}
	if err != nil {
		return nil, requestError(http.StatusBadRequest, "read_body",
			"request body could not be read")
	}
	return decodeMetadata(body)
}

// refused logs a refused registration with the rule that fired. The
// description is left out: it may quote what the client sent.
func (h *Handler) refused(r *http.Request, e *protoError) {
	fields := []zap.Field{
		zap.String("error", e.Code),
		zap.String("rule", e.Rule),
		zap.Int("status", e.Status),
		zap.String("client_ip", clientIP(r)),
	}
	if e.Cause != nil {
		fields = append(fields, zap.NamedError("cause", e.Cause))
	}
	if e.Status >= 500 {
		h.logger.Error("registration failed", fields...)
		return
	}
	h.logger.Info("registration refused", fields...)
}

// randomString returns n bytes from crypto/rand, base64url-encoded without
// padding.
func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails; it aborts the program instead
	return base64.RawURLEncoding.EncodeToString(b)
}
