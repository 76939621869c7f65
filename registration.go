package dcr

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

// Lengths of issued values in random bytes: 256 bits for a secret or a
// registration access token. Client IDs, which are public, carry 128
// random bits (clientdb.NewClientID).
const (
	secretBytes = 32
	tokenBytes  = 32
)

// registrationResponse is the client information response of RFC 7591
// section 3.2.1: the issued values followed by all registered metadata as
// top-level members.
type registrationResponse struct {
	ClientID              string `json:"client_id"`
	ClientIDIssuedAt      int64  `json:"client_id_issued_at"`
	ClientSecret          string `json:"client_secret,omitempty"`
	ClientSecretExpiresAt *int64 `json:"client_secret_expires_at,omitempty"`

	// RFC 7592 section 3: how the client manages its registration.
	RegistrationAccessToken string `json:"registration_access_token,omitempty"`
	RegistrationClientURI   string `json:"registration_client_uri,omitempty"`

	Metadata clientdb.Metadata `json:"-"`
}

// clientInformation returns the client information response for a stored
// client, without any plaintext secret or token: the caller adds those it
// has just issued.
func clientInformation(c *clientdb.Client) registrationResponse {
	resp := registrationResponse{
		ClientID:         c.ID,
		ClientIDIssuedAt: c.IssuedAt,
		Metadata:         c.Metadata,
	}
	if c.HasSecret() {
		// A copy: the response must not alias the record.
		expires := c.SecretExpiresAt
		resp.ClientSecretExpiresAt = &expires
	}
	return resp
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
	return joinObjects(head, meta), nil
}

// joinObjects joins two JSON objects that both have members into one.
func joinObjects(a, b []byte) []byte {
	out := make([]byte, 0, len(a)+len(b))
	out = append(out, a[:len(a)-1]...)
	out = append(out, ',')
	return append(out, b[1:]...)
}

// register answers a client registration request (RFC 7591 section 3.1)
// with a client information response (section 3.2.1) or an error response
// (section 3.2.2). A client is stored, durably, before the 201 is sent.
func (h *Handler) register(w http.ResponseWriter, r *http.Request) error {
	if perr := h.checkRate(w, r); perr != nil {
		h.refused(r, perr)
		writeError(w, perr)
		return nil
	}
	adm, perr := h.admitRegistration(r)
	if perr != nil {
		h.refuseToken(w, r, perr)
		return nil
	}

	body, perr := h.readBody(w, r)
	var req *request
	if perr == nil {
		req, perr = h.decodeVerified(r, body)
	}
	if perr == nil {
		perr = h.vetMetadata(r, &req.Metadata, adm.policy(), OperationRegister, "")
	}
	if perr != nil {
		h.refused(r, perr)
		writeError(w, perr)
		return nil
	}
	m := &req.Metadata

	now := h.now()
	c := &clientdb.Client{
		ID:       clientdb.NewClientID(now),
		IssuedAt: now.Unix(),
		Metadata: *m,
	}
	if adm.token != nil {
		c.InitialTokenID = adm.token.ID
		c.Policy = adm.token.Policy
	}
	var secret, token string
	if issuesSecret(m) {
		secret = h.issueSecret(c, now)
	}
	if h.management() {
		token = randomString(tokenBytes)
		c.RegistrationTokenHash = clientdb.HashSecret(token)
	}
	resp := clientInformation(c)
	resp.ClientSecret = secret
	if token != "" {
		resp.RegistrationAccessToken = token
		resp.RegistrationClientURI = h.clientURI(r, c.ID)
	}

	ctx, cancel := writeContext(r)
	defer cancel()
	err := h.store.Update(ctx, func(tx clientdb.Tx) error {
		// The use is counted in the same transaction as the client, so
		// a token's last use admits one registration only.
		if adm.issued != "" {
			if _, err := tx.UseInitialToken(adm.issued, now); err != nil {
				return err
			}
		}
		if h.MaxClients > 0 && tx.Count() >= h.MaxClients {
			return errMaxClients(h.MaxClients)
		}
		if err := tx.Create(c); err != nil {
			return err
		}
		return recordEvent(tx, h.hooks, &clientdb.Event{
			Time:     now.Unix(),
			Op:       clientdb.OpCreate,
			Actor:    clientdb.ActorClient,
			ClientID: c.ID,
			TokenID:  c.InitialTokenID,
			ClientIP: clientIP(r),
		}, c, secret)
	})
	if errors.Is(err, clientdb.ErrTokenInvalid) {
		h.refuseToken(w, r, errInitialToken())
		return nil
	}
	if errors.As(err, &perr) {
		h.refused(r, perr)
		writeError(w, perr)
		return nil
	}
	if err != nil {
		perr := storeError(err)
		h.refused(r, perr)
		writeError(w, perr)
		return nil
	}

	metrics.registration("created", "")
	h.logger.Info("client registered",
		zap.String("operation", clientdb.OpCreate),
		zap.String("outcome", "ok"),
		zap.String("client_id", c.ID),
		zap.String("client_name", m.ClientName),
		zap.Strings("grant_types", m.GrantTypes),
		zap.String("token_endpoint_auth_method", m.TokenEndpointAuthMethod),
		zap.String("initial_token_id", c.InitialTokenID),
		zap.Bool("software_statement", m.SoftwareStatement != ""),
		zap.String("client_ip", clientIP(r)))
	writeJSON(w, http.StatusCreated, resp)
	return nil
}

// readBody checks the content type and reads the body within the size
// limit.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *protoError) {
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
	return body, nil
}

// refuseToken answers a registration without a valid initial access
// token (RFC 6750 section 3).
func (h *Handler) refuseToken(w http.ResponseWriter, r *http.Request, perr *protoError) {
	h.refused(r, perr)
	if perr.Status == http.StatusUnauthorized {
		// Also when no token was sent, though RFC 6750 section 3.1
		// would leave the error code out then: clients of this
		// endpoint, and its documented interface, expect one answer.
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	}
	writeError(w, perr)
}

// refused logs and counts a refused or failed registration.
func (h *Handler) refused(r *http.Request, e *protoError) {
	outcome := "refused"
	if e.Status >= 500 {
		outcome = "failed"
	}
	metrics.registration(outcome, e.Code)
	h.auditRequest(r, clientdb.OpCreate, "", e)
	logProtoError(h.logger, "registration refused", "registration failed", r, e,
		zap.String("operation", clientdb.OpCreate), zap.String("outcome", outcome))
}

// errMaxClients is the answer to a registration while the store holds
// max_clients live clients.
func errMaxClients(limit int) *protoError {
	return &protoError{
		Status: http.StatusForbidden,
		Code:   "access_denied",
		Description: fmt.Sprintf("registration is closed: the server holds its "+
			"maximum of %d clients (max_clients)", limit),
		Rule: "max_clients",
	}
}

// issueSecret gives c a new secret valid from now for the configured
// lifetime and returns its plaintext.
func (h *Handler) issueSecret(c *clientdb.Client, now time.Time) string {
	secret := randomString(secretBytes)
	c.SecretHash = clientdb.HashSecret(secret)
	c.SecretExpiresAt = 0
	if h.policy.secretLifetime > 0 {
		c.SecretExpiresAt = now.Add(h.policy.secretLifetime).Unix()
	}
	return secret
}

// randomString returns n bytes from crypto/rand, base64url-encoded without
// padding.
func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails; it aborts the program instead
	return base64.RawURLEncoding.EncodeToString(b)
}
