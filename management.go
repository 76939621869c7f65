package dcr

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

// unknownClientHash is compared against tokens presented for clients that
// do not exist; no token matches it.
var unknownClientHash = clientdb.HashSecret("")

// errInvalidToken marks a management request whose registration access
// token does not open the client it names, for whatever reason.
var errInvalidToken = errors.New("invalid registration access token")

// manage answers a request to the client configuration endpoint of RFC
// 7592 section 2: read (GET), update (PUT) or delete (DELETE) the
// registration of client id, authenticated by its registration access
// token.
func (h *Handler) manage(w http.ResponseWriter, r *http.Request, id string) error {
	if !h.management() {
		writeError(w, &protoError{
			Status:      http.StatusNotFound,
			Code:        codeInvalidRequest,
			Description: "client configuration endpoint is not enabled",
			Rule:        "management_off",
		})
		return nil
	}

	switch r.Method {
	case http.MethodGet:
		return h.readClient(w, r, id)
	case http.MethodPut:
		return h.updateClient(w, r, id)
	case http.MethodDelete:
		return h.deleteClient(w, r, id)
	default:
		w.Header().Set("Allow", "GET, PUT, DELETE")
		writeError(w, requestError(http.StatusMethodNotAllowed, "method",
			"method "+r.Method+" is not allowed; use GET, PUT or DELETE"))
		return nil
	}
}

// authenticate returns the client that the request's registration access
// token opens. Every failure gives the same answer, so that nobody can
// learn which client IDs exist.
func (h *Handler) authenticate(r *http.Request, id string) (*clientdb.Client, string, error) {
	token, ok := bearerToken(r)
	if !ok {
		return nil, "", errInvalidToken
	}
	c, err := h.store.Client(id)
	if errors.Is(err, clientdb.ErrNotFound) || errors.Is(err, clientdb.ErrDeleted) {
		// Hash the token anyway, so that an unknown client costs the
		// same as a wrong token.
		clientdb.VerifySecret(unknownClientHash, token)
		return nil, "", errInvalidToken
	}
	if err != nil {
		return nil, "", err
	}
	if !c.VerifyRegistrationToken(token) {
		return nil, "", errInvalidToken
	}
	return c, token, nil
}

// bearerToken returns the token of an "Authorization: Bearer" header (RFC
// 6750 section 2.1).
func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimLeft(token, " ")
	if token == "" || len(token) > maxStringLength || !printableASCII(token) {
		return "", false
	}
	return token, true
}

// readClient answers RFC 7592 section 2.1: the client information as
// registered. The plaintext secret is not stored, so it is not returned.
func (h *Handler) readClient(w http.ResponseWriter, r *http.Request, id string) error {
	c, token, err := h.authenticate(r, id)
	if err != nil {
		h.manageFailed(w, r, "read", "", err)
		return nil
	}
	// RFC 7592 section 3 makes the token part of every client
	// information response. Only its hash is stored, so the answer
	// repeats the one the client presented: a read never rotates it.
	resp := clientInformation(c)
	resp.RegistrationAccessToken = token
	resp.RegistrationClientURI = h.clientURI(r, c.ID)

	metrics.managementOp("read", "ok")
	h.auditRequest(r, clientdb.OpRead, c.ID, nil)
	h.logger.Info("client read",
		zap.String("operation", "read"),
		zap.String("outcome", "ok"),
		zap.String("client_id", c.ID),
		zap.String("client_ip", clientIP(r)))
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// updateClient answers RFC 7592 section 2.2: the request carries the full
// metadata, which replaces the registered metadata after the same policy
// as a registration.
func (h *Handler) updateClient(w http.ResponseWriter, r *http.Request, id string) error {
	c, token, err := h.authenticate(r, id)
	if err != nil {
		h.manageFailed(w, r, "update", "", err)
		return nil
	}

	// The policy the client registered under, narrowed by its initial
	// access token if it had one, holds for every update too.
	req, perr := h.readUpdate(w, r, c)
	if perr == nil {
		perr = h.vetMetadata(r, &req.Metadata, c.Policy, OperationUpdate, id)
	}
	if perr != nil {
		h.manageFailed(w, r, "update", id, perr)
		return nil
	}

	// Issue new values before the transaction: the change function may
	// run more than once and must do the same each time.
	now := h.now()
	newSecret := randomString(secretBytes)
	newToken := ""
	if *h.RotateToken {
		newToken = randomString(tokenBytes)
	}

	var updated *clientdb.Client
	var issuedSecret string
	ctx, cancel := writeContext(r)
	defer cancel()
	err = h.store.Update(ctx, func(tx clientdb.Tx) error {
		cur, err := currentClient(tx, id, token)
		if err != nil {
			return err
		}
		// Checked again here: a concurrent update may have rotated the
		// secret since readUpdate looked.
		if req.secret != nil && !clientdb.VerifySecret(cur.SecretHash, *req.secret) {
			return errWrongSecret()
		}
		next, secret := h.applyUpdate(cur, &req.Metadata, newSecret, newToken, now)
		updated, issuedSecret = next, secret
		if err := tx.Put(next); err != nil {
			return err
		}
		ev := &clientdb.Event{Time: now.Unix(), Op: clientdb.OpUpdate,
			Actor: clientdb.ActorClient, ClientID: id, ClientIP: clientIP(r)}
		if err := recordEvent(tx, h.hooks, ev, next, ""); err != nil {
			return err
		}
		if secret == "" {
			return nil
		}
		rot := *ev
		rot.Op = clientdb.OpRotateSecret
		return recordEvent(tx, h.hooks, &rot, next, "")
	})
	if err != nil {
		h.manageFailed(w, r, "update", id, err)
		return nil
	}

	resp := clientInformation(updated)
	resp.ClientSecret = issuedSecret
	resp.RegistrationAccessToken = newToken
	if newToken == "" {
		resp.RegistrationAccessToken = token
	}
	resp.RegistrationClientURI = h.clientURI(r, id)

	metrics.managementOp("update", "ok")
	h.logger.Info("client updated",
		zap.String("operation", "update"),
		zap.String("outcome", "ok"),
		zap.String("client_id", id),
		zap.String("client_name", updated.Metadata.ClientName),
		zap.Strings("grant_types", updated.Metadata.GrantTypes),
		zap.Bool("secret_rotated", issuedSecret != ""),
		zap.Bool("token_rotated", newToken != ""),
		zap.String("client_ip", clientIP(r)))
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// applyUpdate returns the client that replaces cur with metadata m, and
// the plaintext of a secret it issued, if any. Switching to a method
// without a secret drops the secret; switching from one issues a secret;
// an expired secret is replaced; with secret rotation on, every update of
// a client with a secret issues a new one and the old one stays valid for
// the overlap.
func (h *Handler) applyUpdate(cur *clientdb.Client, m *clientdb.Metadata,
	newSecret, newToken string, now time.Time) (*clientdb.Client, string) {
	next := *cur
	next.Metadata = *m
	next.UpdatedAt = now.Unix()
	if newToken != "" {
		next.RegistrationTokenHash = clientdb.HashSecret(newToken)
	}

	issued := ""
	switch {
	case !issuesSecret(m):
		next.SecretHash, next.SecretExpiresAt = "", 0
		next.PreviousSecretHash, next.PreviousSecretExpiresAt = "", 0
	case !cur.HasSecret():
		issued = newSecret
	case cur.SecretExpiresAt != 0 && now.Unix() >= cur.SecretExpiresAt:
		// An update is how a client renews an expired secret.
		issued = newSecret
		next.PreviousSecretHash, next.PreviousSecretExpiresAt = "", 0
	case h.RotateSecret:
		issued = newSecret
		rotated := rotatedClient(cur, newSecret, storeSettings{
			secretLifetime: h.policy.secretLifetime,
			secretOverlap:  time.Duration(h.SecretOverlap),
		}, now)
		next.PreviousSecretHash = rotated.PreviousSecretHash
		next.PreviousSecretExpiresAt = rotated.PreviousSecretExpiresAt
	}
	if issued != "" {
		next.SecretHash = clientdb.HashSecret(issued)
		next.SecretExpiresAt = 0
		if h.policy.secretLifetime > 0 {
			next.SecretExpiresAt = now.Add(h.policy.secretLifetime).Unix()
		}
	}
	return &next, issued
}

// readUpdate reads and decodes an update request and checks the members
// RFC 7592 section 2.2 constrains: no issued values other than client_id
// and client_secret, which must be the current ones.
func (h *Handler) readUpdate(w http.ResponseWriter, r *http.Request,
	c *clientdb.Client) (*request, *protoError) {
	body, perr := h.readBody(w, r)
	if perr != nil {
		return nil, perr
	}
	req, perr := h.decodeVerified(r, body)
	if perr != nil {
		return nil, perr
	}

	if len(req.issued) > 0 {
		return nil, requestError(http.StatusBadRequest, "update_issued_member",
			"an update must not carry "+req.issued[0])
	}
	clientID, perr := decodeOptionalString("client_id", req.clientID)
	if perr != nil {
		return nil, perr
	}
	if clientID != nil && *clientID != c.ID {
		return nil, requestError(http.StatusBadRequest, "update_client_id",
			"client_id does not match the client being updated")
	}
	secret, perr := decodeOptionalString("client_secret", req.clientSecret)
	if perr != nil {
		return nil, perr
	}
	if secret != nil && !clientdb.VerifySecret(c.SecretHash, *secret) {
		return nil, errWrongSecret()
	}
	req.secret = secret
	return req, nil
}

// currentClient returns client id as a write transaction sees it, if
// token still opens it: a concurrent update may have rotated the token,
// or a delete removed the client, since authenticate read it.
func currentClient(tx clientdb.Tx, id, token string) (*clientdb.Client, error) {
	cur, err := tx.Client(id)
	if errors.Is(err, clientdb.ErrNotFound) || errors.Is(err, clientdb.ErrDeleted) {
		return nil, errInvalidToken
	}
	if err != nil {
		return nil, err
	}
	if cur.Disabled() || !cur.VerifyRegistrationToken(token) {
		return nil, errInvalidToken
	}
	return cur, nil
}

// errWrongSecret is the answer to an update whose client_secret is not the
// client's current secret (RFC 7592 section 2.2).
func errWrongSecret() *protoError {
	return requestError(http.StatusBadRequest, "update_client_secret",
		"client_secret is not the client's current secret")
}

// deleteClient answers RFC 7592 section 2.3: the client, its secret and
// its token stop working at once, and a tombstone keeps its ID known.
func (h *Handler) deleteClient(w http.ResponseWriter, r *http.Request, id string) error {
	_, token, err := h.authenticate(r, id)
	if err != nil {
		h.manageFailed(w, r, "delete", "", err)
		return nil
	}

	now := h.now()
	ctx, cancel := writeContext(r)
	defer cancel()
	err = h.store.Update(ctx, func(tx clientdb.Tx) error {
		if _, err := currentClient(tx, id, token); err != nil {
			return err
		}
		if err := tx.Delete(id, clientdb.ReasonDeleted, now); err != nil {
			return err
		}
		return recordEvent(tx, h.hooks, &clientdb.Event{Time: now.Unix(),
			Op: clientdb.OpDelete, Actor: clientdb.ActorClient, ClientID: id,
			ClientIP: clientIP(r)}, nil, "")
	})
	if err != nil {
		h.manageFailed(w, r, "delete", id, err)
		return nil
	}

	metrics.managementOp("delete", "ok")
	h.logger.Info("client deleted",
		zap.String("operation", "delete"),
		zap.String("outcome", "ok"),
		zap.String("client_id", id),
		zap.String("client_ip", clientIP(r)))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// manageFailed answers and logs a failed management request. An
// authentication failure is one uniform 401. Callers pass the client ID
// only once the token has opened the client, so that a probe cannot fill
// the log with IDs of its choosing; it is "" before.
func (h *Handler) manageFailed(w http.ResponseWriter, r *http.Request, op, id string, err error) {
	var perr *protoError
	switch {
	case errors.Is(err, errInvalidToken):
		metrics.managementOp(op, "refused")
		h.auditRequest(r, op, "", &protoError{Status: http.StatusUnauthorized,
			Code: "invalid_token", Rule: "registration_access_token"})
		h.logger.Info("client management refused",
			zap.String("operation", op),
			zap.String("outcome", "refused"),
			zap.String("rule", "registration_access_token"),
			zap.String("error", "invalid_token"),
			zap.String("client_ip", clientIP(r)))
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		writeError(w, &protoError{
			Status:      http.StatusUnauthorized,
			Code:        "invalid_token",
			Description: "the registration access token is missing, invalid or not for this client",
		})
		return
	case errors.As(err, &perr):
	default:
		perr = storeError(err)
	}

	outcome := "refused"
	if perr.Status >= 500 {
		outcome = "failed"
	}
	metrics.managementOp(op, outcome)
	h.auditRequest(r, op, id, perr)
	extra := []zap.Field{zap.String("operation", op), zap.String("outcome", outcome)}
	if id != "" {
		extra = append(extra, zap.String("client_id", id))
	}
	logProtoError(h.logger, "client management refused", "client management failed",
		r, perr, extra...)
	writeError(w, perr)
}

// clientURI returns registration_client_uri for a client: the base URL if
// configured, else the request's scheme and host, then the endpoint and
// the client ID.
func (h *Handler) clientURI(r *http.Request, id string) string {
	return h.baseURL(r) + h.Endpoint + "/" + url.PathEscape(id)
}

// baseURL returns the configured base URL, or the request's scheme and
// host.
func (h *Handler) baseURL(r *http.Request) string {
	if h.BaseURL != "" {
		return h.BaseURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}
