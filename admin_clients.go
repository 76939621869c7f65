package dcr

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

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
	err = s.View(func(tx clientdb.Tx) error {
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
	if !plausibleStoredID(id) {
		return clientMissing(id, clientdb.ErrNotFound)
	}
	var c *clientdb.Client
	err := s.View(func(tx clientdb.Tx) error {
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
	if !plausibleStoredID(id) {
		return clientMissing(id, clientdb.ErrNotFound)
	}
	now := a.now()
	var ts *clientdb.Tombstone
	err := a.update(r, s, func(tx clientdb.Tx) error {
		if err := tx.Delete(id, clientdb.ReasonDeleted, now); err != nil {
			return err
		}
		var err error
		if ts, err = tx.Tombstone(id); err != nil {
			return err
		}
		return s.recordOperator(tx, clientdb.OpDelete, now, id, nil)
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
	if !plausibleStoredID(id) {
		return clientMissing(id, clientdb.ErrNotFound)
	}
	op := clientdb.OpEnable
	if disable {
		op = clientdb.OpDisable
	}

	now := a.now()
	var c *clientdb.Client
	var changed bool
	err := a.update(r, s, func(tx clientdb.Tx) error {
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
		return s.recordOperator(tx, op, now, id, c)
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
	if !plausibleStoredID(id) {
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
	err := a.update(r, s, func(tx clientdb.Tx) error {
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
		return s.recordOperator(tx, clientdb.OpRotateSecret, now, id, c)
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
