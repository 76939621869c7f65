package dcr

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/caddy-dcr/caddy-dcr/clientdb"

	"github.com/caddyserver/caddy/v2"
)

// adminToken is an initial access token as the admin API shows it:
// without its hash, with its state, and with the token itself only in
// the answer that created it.
type adminToken struct {
	Token     string                `json:"token,omitempty"`
	ID        string                `json:"id"`
	Label     string                `json:"label"`
	State     string                `json:"state"`
	CreatedAt int64                 `json:"created_at"`
	ExpiresAt int64                 `json:"expires_at"`
	MaxUses   int                   `json:"max_uses"`
	Uses      int                   `json:"uses"`
	RevokedAt int64                 `json:"revoked_at"`
	Policy    *clientdb.TokenPolicy `json:"policy,omitempty"`
}

// newAdminToken returns the admin view of info at now.
func newAdminToken(info *clientdb.InitialToken, now time.Time) *adminToken {
	return &adminToken{
		ID:        info.ID,
		Label:     info.Label,
		State:     info.State(now),
		CreatedAt: info.CreatedAt,
		ExpiresAt: info.ExpiresAt,
		MaxUses:   info.MaxUses,
		Uses:      info.Uses,
		RevokedAt: info.RevokedAt,
		Policy:    info.Policy,
	}
}

// tokenList is the answer to GET /dcr/tokens.
type tokenList struct {
	Tokens []*adminToken `json:"tokens"`
}

// listTokens answers GET /dcr/tokens: every token, in the order they
// were created.
func (a *AdminAPI) listTokens(w http.ResponseWriter, r *http.Request, s *adminStore) error {
	var all []*clientdb.InitialToken
	err := s.View(func(tx clientdb.Tx) error {
		var err error
		all, err = tx.InitialTokens()
		return err
	})
	if err != nil {
		return storeAPIError(err)
	}
	now := a.now()
	list := tokenList{Tokens: []*adminToken{}}
	for _, info := range all {
		list.Tokens = append(list.Tokens, newAdminToken(info, now))
	}
	return writeAdminJSON(w, http.StatusOK, list)
}

// tokenRequest is the body of POST /dcr/tokens.
type tokenRequest struct {
	// Label is the operator's note on what the token is for.
	Label string `json:"label"`

	// ExpiresIn is how long the token is accepted, such as "168h" or
	// "7d"; empty: for ever.
	ExpiresIn string `json:"expires_in"`

	// MaxUses is how many registrations the token allows; 0: any
	// number.
	MaxUses int `json:"max_uses"`

	// Policy narrows the registration policy for the token's clients.
	Policy *clientdb.TokenPolicy `json:"policy"`
}

// createToken answers POST /dcr/tokens with 201 and the new token, which
// is shown in this answer only.
func (a *AdminAPI) createToken(w http.ResponseWriter, r *http.Request, s *adminStore) error {
	now := a.now()
	spec, err := readTokenRequest(w, r, now)
	if err != nil {
		return err
	}

	var token string
	var info *clientdb.InitialToken
	err = a.update(r, s, func(tx clientdb.Tx) error {
		var err error
		token, info, err = tx.CreateInitialToken(*spec, now)
		if err != nil {
			return err
		}
		return tx.AppendEvent(operatorEvent(clientdb.OpTokenCreate, now, "", info.ID))
	})
	tokenID := ""
	if err == nil {
		tokenID = info.ID
	}
	a.logChange(s, clientdb.OpTokenCreate, zap.String("token_id", tokenID), err, true)
	if err != nil {
		return storeAPIError(err)
	}

	v := newAdminToken(info, now)
	v.Token = token
	return writeAdminJSON(w, http.StatusCreated, v)
}

// readTokenRequest reads and checks the body of a token creation.
func readTokenRequest(w http.ResponseWriter, r *http.Request,
	now time.Time) (*clientdb.InitialTokenSpec, error) {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	var req tokenRequest
	err := dec.Decode(&req)
	if errors.Is(err, io.EOF) {
		err = errors.New("empty body; want a JSON object")
	}
	if err == nil && dec.Decode(&struct{}{}) != io.EOF {
		err = errors.New("more than one JSON value")
	}
	if err != nil {
		return nil, apiError(http.StatusBadRequest, "decoding request: %v", err)
	}

	spec := &clientdb.InitialTokenSpec{Label: req.Label, MaxUses: req.MaxUses}
	switch {
	case len(req.Label) > clientdb.MaxInitialTokenLabel:
		return nil, apiError(http.StatusBadRequest,
			"label: longer than %d bytes", clientdb.MaxInitialTokenLabel)
	case !utf8.ValidString(req.Label) || strings.ContainsFunc(req.Label, unicode.IsControl):
		// A control character would garble listings.
		return nil, apiError(http.StatusBadRequest,
			"label: want UTF-8 text without control characters")
	case req.MaxUses < 0:
		return nil, apiError(http.StatusBadRequest,
			"max_uses %d: want 0 (any number) or more", req.MaxUses)
	}
	if req.ExpiresIn != "" {
		d, err := caddy.ParseDuration(req.ExpiresIn)
		if err != nil || d < time.Second {
			return nil, apiError(http.StatusBadRequest,
				"expires_in %q: want a duration of a second or more, such as 168h",
				req.ExpiresIn)
		}
		spec.ExpiresAt = now.Add(d)
	}
	if p := req.Policy; p != nil &&
		len(p.GrantTypes)+len(p.Scopes)+len(p.RedirectHosts) > 0 {
		if err := checkTokenPolicy(p); err != nil {
			return nil, err
		}
		spec.Policy = p
	}
	return spec, nil
}

// checkTokenPolicy checks the lists of a token policy: each entry must be
// something a registration could match.
func checkTokenPolicy(p *clientdb.TokenPolicy) error {
	for _, g := range p.GrantTypes {
		if g == "" || len(g) > maxStringLength || !printableASCII(g) ||
			strings.Contains(g, " ") {
			return apiError(http.StatusBadRequest,
				"policy.grant_types %q: not a grant type", g)
		}
	}
	for _, s := range p.Scopes {
		if !validScopeToken(s) {
			return apiError(http.StatusBadRequest,
				"policy.scopes %q: not a scope token (RFC 6749 section 3.3)", s)
		}
	}
	for _, h := range p.RedirectHosts {
		if !validHostPattern(h) {
			return apiError(http.StatusBadRequest,
				"policy.redirect_hosts %q: want a host name or *.domain", h)
		}
	}
	return nil
}

// revokeToken answers DELETE /dcr/tokens/<id>: the token stops opening
// registration; clients registered with it stay.
func (a *AdminAPI) revokeToken(w http.ResponseWriter, r *http.Request,
	s *adminStore, id string) error {
	missing := apiError(http.StatusNotFound, "initial access token %q not found", id)
	if !plausibleClientID(id) {
		return missing
	}
	now := a.now()
	var info *clientdb.InitialToken
	var changed bool
	err := a.update(r, s, func(tx clientdb.Tx) error {
		cur, err := tx.InitialToken(id)
		if err != nil {
			return err
		}
		info, changed = cur, cur.RevokedAt == 0
		if !changed {
			return nil
		}
		if info, err = tx.RevokeInitialToken(id, now); err != nil {
			return err
		}
		return tx.AppendEvent(operatorEvent(clientdb.OpTokenRevoke, now, "", id))
	})
	a.logChange(s, clientdb.OpTokenRevoke, zap.String("token_id", id), err, changed)
	if errors.Is(err, clientdb.ErrTokenNotFound) {
		return missing
	}
	if err != nil {
		return storeAPIError(err)
	}
	return writeAdminJSON(w, http.StatusOK, newAdminToken(info, now))
}
