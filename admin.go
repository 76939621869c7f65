package dcr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/caddy-dcr/caddy-dcr/clientdb"

	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// Bounds of the admin API.
const (
	// defaultListLimit and maxListLimit are the default and the largest
	// number of clients in one page of a listing.
	defaultListLimit = 50
	maxListLimit     = 500

	// maxAdminBody bounds the body of a token creation request.
	maxAdminBody = 64 << 10
)

// maxListScan bounds the clients one listing reads. The writer waits
// while a read lasts, so a filter that matches little must not hold up
// registrations while it reads the whole store; the page then ends early
// and "next" says where to go on. Tests lower it.
var maxListScan = 10_000

// AdminAPI is the dcr handler's part of Caddy's admin API, at /dcr/. It
// lets operators list, inspect, disable, enable and delete registered
// clients, rotate their secrets, and issue and revoke initial access
// tokens, in the stores that loaded dcr handlers use:
//
//	GET    /dcr/clients?name=&state=&after=&limit=
//	GET    /dcr/clients/<id>
//	DELETE /dcr/clients/<id>
//	POST   /dcr/clients/<id>/disable
//	POST   /dcr/clients/<id>/enable
//	POST   /dcr/clients/<id>/rotate-secret
//	GET    /dcr/tokens
//	POST   /dcr/tokens
//	DELETE /dcr/tokens/<id>
//
// Every path takes the query parameter store=<absolute path> to choose a
// store; it may be left out while only one is in use. Answers are JSON
// and never carry a hash; a plaintext secret or token appears only in the
// answer that issued it. Every change is committed together with its
// audit event (actor "operator") and goes through the store's writer,
// which clears the handlers' client cache, so that it holds from the next
// request on.
//
// Caddy loads every admin.api module by itself; it needs no
// configuration. The admin endpoint's own access rules protect it.
type AdminAPI struct {
	logger *zap.Logger
	now    func() time.Time
}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.dcr",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Provision sets up the logger and the clock.
func (a *AdminAPI) Provision(ctx caddy.Context) error {
	// Admin routers are provisioned outside any module, so the logger
	// is named for this one explicitly.
	a.logger = ctx.Logger(a)
	a.now = timeNow
	return nil
}

// Routes returns the route of the dcr admin API.
func (a *AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{
		Pattern: "/dcr/",
		Handler: caddy.AdminHandlerFunc(a.serve),
	}}
}

// adminOp answers one method at one path, on the chosen store.
type adminOp func(w http.ResponseWriter, r *http.Request, s *adminStore) error

// idOp is an adminOp on the client or token named in the path.
type idOp func(w http.ResponseWriter, r *http.Request, s *adminStore, id string) error

// adminStore is the store an admin request acts on.
type adminStore struct {
	*boltStore
	path string
}

// serve routes a request under /dcr/.
func (a *AdminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	ops, err := a.route(r)
	if err != nil {
		return err
	}
	op, ok := ops[r.Method]
	if !ok {
		allowed := slices.Sorted(maps.Keys(ops))
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		return apiError(http.StatusMethodNotAllowed,
			"method %s is not allowed here; use %s", r.Method,
			strings.Join(allowed, " or "))
	}

	s, err := selectStore(r.URL.Query().Get("store"))
	if err != nil {
		return err
	}
	return op(w, r, s)
}

// route returns the operations at the request's path, by method.
func (a *AdminAPI) route(r *http.Request) (map[string]adminOp, error) {
	rest, _ := strings.CutPrefix(r.URL.EscapedPath(), "/dcr/")
	var segs []string
	for raw := range strings.SplitSeq(rest, "/") {
		// IDs are escaped in the path, so that any ID can be named.
		seg, err := url.PathUnescape(raw)
		if err != nil {
			return nil, apiError(http.StatusBadRequest,
				"path %q: %v", r.URL.EscapedPath(), err)
		}
		segs = append(segs, seg)
	}

	with := func(id string, fn idOp) adminOp {
		return func(w http.ResponseWriter, r *http.Request, s *adminStore) error {
			return fn(w, r, s, id)
		}
	}
	switch {
	case len(segs) == 1 && segs[0] == "clients":
		return map[string]adminOp{http.MethodGet: a.listClients}, nil
	case len(segs) == 2 && segs[0] == "clients" && segs[1] != "":
		return map[string]adminOp{
			http.MethodGet:    with(segs[1], a.showClient),
			http.MethodDelete: with(segs[1], a.deleteClient),
		}, nil
	case len(segs) == 3 && segs[0] == "clients" && segs[1] != "":
		var fn idOp
		switch segs[2] {
		case "disable":
			fn = a.disableClient
		case "enable":
			fn = a.enableClient
		case "rotate-secret":
			fn = a.rotateSecret
		}
		if fn != nil {
			return map[string]adminOp{http.MethodPost: with(segs[1], fn)}, nil
		}
	case len(segs) == 1 && segs[0] == "tokens":
		return map[string]adminOp{
			http.MethodGet:  a.listTokens,
			http.MethodPost: a.createToken,
		}, nil
	case len(segs) == 2 && segs[0] == "tokens" && segs[1] != "":
		return map[string]adminOp{
			http.MethodDelete: with(segs[1], a.revokeToken),
		}, nil
	}
	return nil, apiError(http.StatusNotFound, "no dcr admin API at %s", r.URL.Path)
}

// selectStore returns the store named by the store parameter, or the one
// store in use when the parameter is empty.
func selectStore(param string) (*adminStore, error) {
	path, err := pickStore(param, storePaths())
	if err != nil {
		return nil, err
	}
	s, ok := storeAt(path)
	if !ok {
		// A reload released it since storePaths looked.
		return nil, apiError(http.StatusNotFound,
			"no dcr handler uses the client store %s any more", path)
	}
	return &adminStore{boltStore: s, path: path}, nil
}

// pickStore chooses among the absolute paths of the stores in use: the one
// named by param, or the only one when param is empty.
func pickStore(param string, inUse []string) (string, error) {
	switch {
	case len(inUse) == 0:
		return "", apiError(http.StatusNotFound,
			"no dcr handler is loaded, so no client store is in use")
	case param == "" && len(inUse) == 1:
		return inUse[0], nil
	case param == "":
		return "", apiError(http.StatusBadRequest,
			"%d client stores are in use; choose one with the store parameter: %s",
			len(inUse), strings.Join(inUse, ", "))
	case !filepath.IsAbs(param):
		return "", apiError(http.StatusBadRequest,
			"store %q: want an absolute path", param)
	}
	path := filepath.Clean(param)
	if !slices.Contains(inUse, path) {
		return "", apiError(http.StatusNotFound,
			"no dcr handler uses the client store %s; in use: %s",
			path, strings.Join(inUse, ", "))
	}
	return path, nil
}

// adminClient is a client as the admin API shows it: what the store keeps
// apart from the hashes, with the registered metadata as top-level
// members as in RFC 7591.
type adminClient struct {
	ClientID                string                `json:"client_id"`
	ClientIDIssuedAt        int64                 `json:"client_id_issued_at"`
	ClientUpdatedAt         int64                 `json:"client_updated_at"`
	LastUsedAt              int64                 `json:"last_used_at"`
	DisabledAt              int64                 `json:"disabled_at"`
	State                   string                `json:"state"`
	HasSecret               bool                  `json:"has_secret"`
	ClientSecret            string                `json:"client_secret,omitempty"`
	ClientSecretExpiresAt   int64                 `json:"client_secret_expires_at"`
	PreviousSecretExpiresAt int64                 `json:"previous_secret_expires_at,omitempty"`
	InitialTokenID          string                `json:"initial_token_id,omitempty"`
	Policy                  *clientdb.TokenPolicy `json:"policy,omitempty"`

	Metadata clientdb.Metadata `json:"-"`
}

// States of a client in the admin API.
const (
	stateActive   = "active"
	stateDisabled = "disabled"
)

// newAdminClient returns the admin view of c.
func newAdminClient(c *clientdb.Client) *adminClient {
	v := &adminClient{
		ClientID:         c.ID,
		ClientIDIssuedAt: c.IssuedAt,
		ClientUpdatedAt:  c.UpdatedAt,
		LastUsedAt:       c.LastUsedAt,
		DisabledAt:       c.DisabledAt,
		State:            stateActive,
		HasSecret:        c.HasSecret(),
		InitialTokenID:   c.InitialTokenID,
		Policy:           c.Policy,
		Metadata:         c.Metadata,
	}
	if c.Disabled() {
		v.State = stateDisabled
	}
	if c.HasSecret() {
		v.ClientSecretExpiresAt = c.SecretExpiresAt
	}
	if c.PreviousSecretHash != "" {
		v.PreviousSecretExpiresAt = c.PreviousSecretExpiresAt
	}
	return v
}

// MarshalJSON encodes the client's values and its metadata as one object.
func (v adminClient) MarshalJSON() ([]byte, error) {
	type fields adminClient
	head, err := json.Marshal(fields(v))
	if err != nil {
		return nil, err
	}
	meta, err := json.Marshal(v.Metadata)
	if err != nil {
		return nil, err
	}
	return joinObjects(head, meta), nil
}

// clientList is the answer to a listing: a page of clients, and the ID
// to pass as after for the next page, or "" after the last.
type clientList struct {
	Clients []*adminClient `json:"clients"`
	Next    string         `json:"next"`
}

// listFilter is what a listing asks for.
type listFilter struct {
	name  string // lower case; "": any
	state string // "": any
	after string
	limit int
}

// parseListFilter reads the query parameters of a listing.
func parseListFilter(q url.Values) (*listFilter, error) {
	f := &listFilter{
		name:  strings.ToLower(q.Get("name")),
		state: q.Get("state"),
		after: q.Get("after"),
		limit: defaultListLimit,
	}
	switch f.state {
	case "", stateActive, stateDisabled:
	default:
		return nil, apiError(http.StatusBadRequest,
			"state %q: want %s or %s", f.state, stateActive, stateDisabled)
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return nil, apiError(http.StatusBadRequest,
				"limit %q: want a positive whole number", s)
		}
		f.limit = min(n, maxListLimit)
	}
	return f, nil
}

// matches reports whether c is one of the clients the filter asks for.
// The name matches client_name and its language-tagged variants.
func (f *listFilter) matches(c *clientdb.Client) bool {
	if f.state == stateActive && c.Disabled() ||
		f.state == stateDisabled && !c.Disabled() {
		return false
	}
	if f.name == "" ||
		strings.Contains(strings.ToLower(c.Metadata.ClientName), f.name) {
		return true
	}
	for k, v := range c.Metadata.Localized {
		if strings.HasPrefix(k, "client_name#") &&
			strings.Contains(strings.ToLower(v), f.name) {
			return true
		}
	}
	return false
}

// listClients answers GET /dcr/clients: clients in ID order, filtered by
// name and state, limit at a time.
func (a *AdminAPI) listClients(w http.ResponseWriter, r *http.Request, s *adminStore) error {
	f, err := parseListFilter(r.URL.Query())
	if err != nil {
		return err
	}

	var list clientList
	err = s.View(func(tx *clientdb.Tx) error {
		list = clientList{Clients: []*adminClient{}}
		scanned := 0
		return tx.Clients(f.after, func(c *clientdb.Client) (bool, error) {
			scanned++
			if f.matches(c) {
				if len(list.Clients) == f.limit {
					// Another match: the page is full and not the
					// last.
					list.Next = list.Clients[f.limit-1].ClientID
					return false, nil
				}
				list.Clients = append(list.Clients, newAdminClient(c))
			}
			if scanned == maxListScan {
				list.Next = c.ID
				return false, nil
			}
			return true, nil
		})
	})
	if err != nil {
		return storeAPIError(err)
	}
	return writeAdminJSON(w, http.StatusOK, list)
}

// showClient answers GET /dcr/clients/<id>.
func (a *AdminAPI) showClient(w http.ResponseWriter, r *http.Request,
	s *adminStore, id string) error {
	if !plausibleClientID(id) {
		return clientMissing(id, clientdb.ErrNotFound)
	}
	var c *clientdb.Client
	err := s.View(func(tx *clientdb.Tx) error {
		var err error
		c, err = tx.Client(id)
		return err
	})
	if err != nil {
		return clientMissing(id, err)
	}
	return writeAdminJSON(w, http.StatusOK, newAdminClient(c))
}

// deleteClient answers DELETE /dcr/clients/<id>: the client is removed
// as through RFC 7592, leaving a tombstone, which is the answer.
func (a *AdminAPI) deleteClient(w http.ResponseWriter, r *http.Request,
	s *adminStore, id string) error {
	if !plausibleClientID(id) {
		return clientMissing(id, clientdb.ErrNotFound)
	}
	now := a.now()
	var ts *clientdb.Tombstone
	err := a.update(r, s, func(tx *clientdb.Tx) error {
		if err := tx.Delete(id, clientdb.ReasonDeleted, now); err != nil {
			return err
		}
		var err error
		if ts, err = tx.Tombstone(id); err != nil {
			return err
		}
		return tx.AppendEvent(operatorEvent(clientdb.OpDelete, now, id, ""))
	})
	a.logChange(s, clientdb.OpDelete, zap.String("client_id", id), err, true)
	if err != nil {
		return clientMissing(id, err)
	}
	return writeAdminJSON(w, http.StatusOK, ts)
}

// disableClient answers POST /dcr/clients/<id>/disable: the client is
// refused everywhere as if deleted until it is enabled again.
func (a *AdminAPI) disableClient(w http.ResponseWriter, r *http.Request,
	s *adminStore, id string) error {
	return a.setDisabled(w, r, s, id, true)
}

// enableClient answers POST /dcr/clients/<id>/enable.
func (a *AdminAPI) enableClient(w http.ResponseWriter, r *http.Request,
	s *adminStore, id string) error {
	return a.setDisabled(w, r, s, id, false)
}

// setDisabled disables or enables a client and answers with it. A client
// already in that state is left as it is, with no audit event.
func (a *AdminAPI) setDisabled(w http.ResponseWriter, r *http.Request,
	s *adminStore, id string, disable bool) error {
	if !plausibleClientID(id) {
		return clientMissing(id, clientdb.ErrNotFound)
	}
	op := clientdb.OpEnable
	if disable {
		op = clientdb.OpDisable
	}

	now := a.now()
	var c *clientdb.Client
	var changed bool
	err := a.update(r, s, func(tx *clientdb.Tx) error {
		cur, err := tx.Client(id)
		if err != nil {
			return err
		}
		c, changed = cur, cur.Disabled() != disable
		if !changed {
			return nil
		}
		if disable {
			c, err = tx.Disable(id, now)
		} else {
			c, err = tx.Enable(id)
		}
		if err != nil {
			return err
		}
		return tx.AppendEvent(operatorEvent(op, now, id, ""))
	})
	a.logChange(s, op, zap.String("client_id", id), err, changed)
	if err != nil {
		return clientMissing(id, err)
	}
	return writeAdminJSON(w, http.StatusOK, newAdminClient(c))
}

// errNoSecret is what rotating the secret of a client without one
// returns.
var errNoSecret = errors.New("client has no secret")

// rotateSecret answers POST /dcr/clients/<id>/rotate-secret: the client
// gets a new secret, shown in this answer only, under the secret rules of
// the handler that last loaded the store.
func (a *AdminAPI) rotateSecret(w http.ResponseWriter, r *http.Request,
	s *adminStore, id string) error {
	if !plausibleClientID(id) {
		return clientMissing(id, clientdb.ErrNotFound)
	}
	var rules storeSettings
	if p := s.settings.Load(); p != nil {
		rules = *p
	}

	// Issued before the transaction: its function may run more than
	// once and must do the same each time.
	now := a.now()
	secret := randomString(secretBytes)
	var c *clientdb.Client
	err := a.update(r, s, func(tx *clientdb.Tx) error {
		cur, err := tx.Client(id)
		if err != nil {
			return err
		}
		if !cur.HasSecret() {
			return errNoSecret
		}
		c = rotatedClient(cur, secret, rules, now)
		if err := tx.Put(c); err != nil {
			return err
		}
		return tx.AppendEvent(operatorEvent(clientdb.OpRotateSecret, now, id, ""))
	})
	a.logChange(s, clientdb.OpRotateSecret, zap.String("client_id", id), err, true)
	if errors.Is(err, errNoSecret) {
		return apiError(http.StatusConflict,
			"client %q has no secret to rotate: it authenticates without one", id)
	}
	if err != nil {
		return clientMissing(id, err)
	}

	v := newAdminClient(c)
	v.ClientSecret = secret
	return writeAdminJSON(w, http.StatusOK, v)
}

// rotatedClient returns cur with secret as its new secret, issued at now
// under rules: it expires after the secret lifetime, and the secret it
// replaces stays valid for the overlap, never past its own expiry. This
// is the rule of an RFC 7592 update under rotate_secret.
func rotatedClient(cur *clientdb.Client, secret string, rules storeSettings,
	now time.Time) *clientdb.Client {
	next := *cur
	next.PreviousSecretHash, next.PreviousSecretExpiresAt = "", 0
	stillValid := cur.SecretExpiresAt == 0 || now.Unix() < cur.SecretExpiresAt
	if rules.secretOverlap > 0 && stillValid {
		until := now.Add(rules.secretOverlap).Unix()
		if cur.SecretExpiresAt != 0 && cur.SecretExpiresAt < until {
			until = cur.SecretExpiresAt
		}
		next.PreviousSecretHash = cur.SecretHash
		next.PreviousSecretExpiresAt = until
	}

	next.SecretHash = clientdb.HashSecret(secret)
	next.SecretExpiresAt = 0
	if rules.secretLifetime > 0 {
		next.SecretExpiresAt = now.Add(rules.secretLifetime).Unix()
	}
	return &next
}

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
	err := s.View(func(tx *clientdb.Tx) error {
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
	err = a.update(r, s, func(tx *clientdb.Tx) error {
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
	err := a.update(r, s, func(tx *clientdb.Tx) error {
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

// update commits fn to the store, waiting as long as a request of the
// handler would.
func (a *AdminAPI) update(r *http.Request, s *adminStore, fn func(*clientdb.Tx) error) error {
	ctx, cancel := writeContext(r)
	defer cancel()
	return s.Update(ctx, fn)
}

// operatorEvent returns the audit event of an operator's change.
func operatorEvent(op string, now time.Time, clientID, tokenID string) *clientdb.Event {
	return &clientdb.Event{
		Time:     now.Unix(),
		Op:       op,
		Actor:    clientdb.ActorOperator,
		ClientID: clientID,
		TokenID:  tokenID,
	}
}

// Outcomes of an operator's change, as logged.
const (
	outcomeOK        = "ok"
	outcomeUnchanged = "unchanged"
	outcomeNotFound  = "not_found"
	outcomeRefused   = "refused"
	outcomeFailed    = "failed"
)

// logChange logs the outcome of an operator's change: err is what the
// commit returned, changed whether it changed anything. Store failures
// are errors; everything else is info.
func (a *AdminAPI) logChange(s *adminStore, op string, subject zap.Field, err error,
	changed bool) {
	outcome := outcomeOK
	switch {
	case errors.Is(err, clientdb.ErrNotFound), errors.Is(err, clientdb.ErrDeleted),
		errors.Is(err, clientdb.ErrTokenNotFound):
		outcome = outcomeNotFound
	case errors.Is(err, errNoSecret):
		outcome = outcomeRefused
	case err != nil:
		a.logger.Error("operator change failed",
			zap.String("operation", op), subject,
			zap.String("outcome", outcomeFailed),
			zap.String("store", s.path), zap.Error(err))
		return
	case !changed:
		outcome = outcomeUnchanged
	}
	a.logger.Info("operator change",
		zap.String("operation", op), subject,
		zap.String("outcome", outcome),
		zap.String("store", s.path))
}

// clientMissing turns the error of a read or change of client id into an
// API error: 404 for an unknown or deleted client.
func clientMissing(id string, err error) error {
	switch {
	case errors.Is(err, clientdb.ErrDeleted):
		return apiError(http.StatusNotFound, "client %q was deleted", id)
	case errors.Is(err, clientdb.ErrNotFound):
		return apiError(http.StatusNotFound, "client %q not found", id)
	}
	return storeAPIError(err)
}

// storeAPIError is the API error of a failed store operation.
func storeAPIError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return caddy.APIError{
			HTTPStatus: http.StatusServiceUnavailable,
			Err: fmt.Errorf("the client store did not answer within %s; "+
				"the change may still be made: %w", storeWait, err),
		}
	}
	return caddy.APIError{
		HTTPStatus: http.StatusInternalServerError,
		Err:        fmt.Errorf("client store: %w", err),
	}
}

// apiError returns an API error with a message made as fmt.Sprintf does.
func apiError(status int, format string, args ...any) error {
	return caddy.APIError{HTTPStatus: status, Err: fmt.Errorf(format, args...)}
}

// writeAdminJSON answers v as JSON. Answers may carry a new secret or
// token, so none is stored by caches.
func writeAdminJSON(w http.ResponseWriter, status int, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return caddy.APIError{
			HTTPStatus: http.StatusInternalServerError,
			Err:        fmt.Errorf("encoding answer: %w", err),
		}
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	// A failed write means the caller left; there is nobody to tell.
	w.Write(append(body, '\n'))
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner = (*AdminAPI)(nil)
	_ caddy.AdminRouter = (*AdminAPI)(nil)
)
