package dcr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

// Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-
// document): a client whose client_id is an https URL is known by the JSON
// metadata served at that URL. At the enforced endpoints the handler
// fetches the document, holds it to the registration policy, and keeps it
// in the store as a client of kind "cimd", so that enforcement, the
// identity headers and every reader of the store treat it as any other
// client. This file holds that resolution; cimd_document.go the checks of
// the URL and the document.

// Defaults and bounds of metadata document handling.
const (
	defaultCIMDMinTTL = 5 * time.Minute
	defaultCIMDMaxTTL = 24 * time.Hour
	defaultCIMDGrace  = time.Hour

	// cimdMaxSize bounds a metadata document, as the draft advises: a
	// few KiB are plenty for client metadata.
	cimdMaxSize = 5 << 10
)

// orDefault returns d, or def when d is 0.
func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// cimdResolver resolves metadata document URLs for one handler.
type cimdResolver struct {
	hosts  []string
	minTTL time.Duration
	maxTTL time.Duration
	grace  time.Duration

	// flight makes concurrent first requests for one URL share a fetch.
	flight singleflight.Group

	// failures holds recent refusals, so that a failing URL is not
	// fetched for every request.
	failures *ttlCache[*protoError]
}

// cimdEnabled reports whether client IDs may be metadata document URLs.
func (h *Handler) cimdEnabled() bool {
	return h.cimd != nil
}

// lookupClient returns the client named id at an enforced endpoint: a
// stored client, or, with cimd on, the client of the metadata document at
// id, fetched if it is not stored or due for a refresh. A document that
// cannot be used is a *protoError naming the reason, with status 400;
// other errors are those of sharedStore.Client.
func (h *Handler) lookupClient(r *http.Request, id string) (*clientdb.Client, error) {
	if !h.cimdEnabled() || !looksLikeCIMD(id) {
		return h.store.Client(id)
	}
	return h.cimd.resolve(h, r, id)
}

// cimdRefusal is the answer when the document at id cannot be used.
func cimdRefusal(id, reason string, cause error) *protoError {
	return &protoError{
		Status:      http.StatusBadRequest,
		Code:        codeInvalidClient,
		Description: fmt.Sprintf("client metadata document %s: %s", truncate(id), reason),
		Rule:        "cimd",
		Cause:       cause,
	}
}

// resolve returns the client of the metadata document at id.
func (c *cimdResolver) resolve(h *Handler, r *http.Request, id string) (*clientdb.Client, error) {
	if !plausibleCIMDID(id) {
		return nil, cimdRefusal(id, "the client_id URL is too long or not "+
			"printable ASCII", nil)
	}
	if problem := cimdURLProblem(id); problem != "" {
		return nil, cimdRefusal(id, problem, nil)
	}
	u, err := url.Parse(id)
	if err != nil {
		return nil, cimdRefusal(id, "the client_id is not a URL", err)
	}
	if len(c.hosts) > 0 && !hostAllowed(u.Hostname(), c.hosts) {
		return nil, cimdRefusal(id, "the host "+u.Hostname()+
			" is not among the hosts this server accepts documents from", nil)
	}

	stored, err := h.store.read(id)
	switch {
	case errors.Is(err, clientdb.ErrNotFound):
		stored = nil
	case err != nil:
		return nil, err
	case stored.Disabled():
		return nil, errDisabled
	}
	now := h.now()
	if stored != nil && now.Unix() < stored.DocumentRefreshAt {
		return stored, nil
	}
	graceEnd := time.Time{}
	if stored != nil {
		graceEnd = time.Unix(stored.DocumentRefreshAt, 0).Add(c.grace)
	}

	// A fetch that failed a moment ago is not made again at once: the
	// last good copy serves meanwhile, or the refusal is repeated, so
	// that requests naming a failing URL do not each wait for a fetch.
	perr, failed := c.failures.get(id, now)
	if !failed {
		if stored == nil {
			if perr := h.admitNewClient(r, now); perr != nil {
				return nil, perr
			}
		}
		// Waiting requests share the first one's fetch; it must not
		// end when that request's client goes away.
		ctx := context.WithoutCancel(r.Context())
		v, err, _ := c.flight.Do(id, func() (any, error) {
			return c.refresh(ctx, h, r, id)
		})
		if err == nil {
			return v.(*clientdb.Client), nil
		}
		if !errors.As(err, &perr) {
			return nil, err
		}
		if perr.Status < 500 {
			// A refusal of the document, not an outage of the
			// store, which must not outlast itself.
			c.failures.put(id, perr, now)
		}
	}
	if stored != nil && now.Before(graceEnd) {
		if !failed {
			h.logger.Warn("metadata document refresh failed; using the last good copy",
				zap.String("client_id", id), zap.String("rule", perr.Rule),
				zap.NamedError("cause", perr.Cause), zap.Time("grace_until", graceEnd))
		}
		return stored, nil
	}
	return nil, perr
}

// admitNewClient applies the registration rate limit of the caller's
// address to a metadata document URL not stored yet: it makes a client, as
// a registration does.
func (h *Handler) admitNewClient(r *http.Request, now time.Time) *protoError {
	if h.limiter == nil {
		return nil
	}
	ok, wait := h.limiter.allow(clientIP(r), now)
	if ok {
		return nil
	}
	metrics.rateLimited()
	return &protoError{
		Status: http.StatusTooManyRequests,
		Code:   "temporarily_unavailable",
		Description: fmt.Sprintf("too many new clients from this address "+
			"(rate_limit); retry after %d seconds", int64(wait/time.Second)+1),
		Rule: "rate_limit",
	}
}

// refresh fetches and checks the document at id and stores its client,
// creating it or replacing the stored one. A refusal is a *protoError.
func (c *cimdResolver) refresh(ctx context.Context, h *Handler, r *http.Request,
	id string) (*clientdb.Client, error) {
	res, err := h.fetcher.fetch(ctx, id, fetchRules{
		requireHTTPS: true,
		noRedirect:   true,
		maxSize:      cimdMaxSize,
	})
	if err != nil {
		reason := "the fetch failed"
		var fe *fetchError
		if errors.As(err, &fe) {
			reason = "could not be fetched: " + fe.Reason()
		}
		return nil, cimdRefusal(id, reason, err)
	}
	if ct := res.header.Get("Content-Type"); !isJSONDocument(ct) {
		return nil, cimdRefusal(id, fmt.Sprintf("Content-Type %q is not "+
			"application/json or application/*+json", truncate(ct)), nil)
	}
	m, perr := parseCIMDDocument(res.body, id)
	if perr == nil {
		perr = h.vetMetadata(r.WithContext(ctx), m, nil, OperationMetadataDocument, id)
	}
	if perr == nil && len(h.policies) > 0 {
		perr = checkDocumentMetadata(m)
	}
	if perr != nil {
		if perr.Status >= 500 {
			return nil, perr
		}
		// The cause names the rule, not the description, which may
		// quote the document and is not logged.
		return nil, cimdRefusal(id, perr.Description,
			errors.New("document refused by rule "+perr.Rule))
	}

	now := h.now()
	ttl := cimdTTL(res.response, now, c.minTTL, c.maxTTL)
	fresh := clientdb.Client{
		ID:                id,
		IssuedAt:          now.Unix(),
		Kind:              clientdb.KindMetadataDocument,
		DocumentFetchedAt: now.Unix(),
		DocumentRefreshAt: now.Add(ttl).Unix(),
		Metadata:          *m,
	}
	var stored *clientdb.Client
	change := func(tx clientdb.Tx) error {
		// A fresh copy each run: the function may run more than once.
		next := fresh
		stored = &next
		cur, err := tx.Client(id)
		switch {
		case errors.Is(err, clientdb.ErrNotFound):
			if h.MaxClients > 0 && tx.Count() >= h.MaxClients {
				return errMaxClients(h.MaxClients)
			}
			if err := tx.Create(&next); err != nil {
				return err
			}
			return recordEvent(tx, h.hooks, &clientdb.Event{Time: now.Unix(),
				Op: clientdb.OpCreate, Actor: clientdb.ActorSystem, ClientID: id},
				&next, "")
		case err != nil:
			return err
		}
		next.IssuedAt = cur.IssuedAt
		next.LastUsedAt = cur.LastUsedAt
		next.DisabledAt = cur.DisabledAt
		next.UpdatedAt = cur.UpdatedAt
		changed := !sameMetadata(&cur.Metadata, &next.Metadata)
		if changed {
			next.UpdatedAt = now.Unix()
		}
		if err := tx.Put(&next); err != nil || !changed {
			return err
		}
		return recordEvent(tx, h.hooks, &clientdb.Event{Time: now.Unix(),
			Op: clientdb.OpUpdate, Actor: clientdb.ActorSystem, ClientID: id},
			&next, "")
	}
	wctx, cancel := context.WithTimeout(ctx, storeWait)
	defer cancel()
	err = h.store.Update(wctx, change)
	if errors.Is(err, clientdb.ErrExists) {
		// Another instance stored the client since this one looked:
		// the second run finds it and replaces it.
		err = h.store.Update(wctx, change)
	}
	var perr2 *protoError
	switch {
	case errors.Is(err, clientdb.ErrDeleted):
		return nil, err
	case errors.As(err, &perr2):
		return nil, perr2
	case err != nil:
		return nil, storeError(err)
	}
	if stored.Disabled() {
		return nil, errDisabled
	}
	h.logger.Info("client metadata document accepted",
		zap.String("client_id", id),
		zap.String("client_name", m.ClientName),
		zap.Duration("refresh_in", ttl))
	return stored, nil
}

// isJSONDocument reports whether a Content-Type is application/json or
// application/<something>+json, as a metadata document's must be.
func isJSONDocument(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	sub, ok := strings.CutPrefix(mt, "application/")
	return ok && (sub == "json" || strings.HasSuffix(sub, "+json"))
}

// sameMetadata reports whether two metadata hold the same values, however
// their JSON members are spaced and ordered: a PostgreSQL store gives
// jwks back reformatted, and empty lists back as absent.
func sameMetadata(a, b *clientdb.Metadata) bool {
	canonical := func(m *clientdb.Metadata) any {
		raw, err := json.Marshal(m)
		if err != nil {
			return nil
		}
		var v any
		if json.Unmarshal(raw, &v) != nil {
			return nil
		}
		return v
	}
	x, y := canonical(a), canonical(b)
	return x != nil && reflect.DeepEqual(x, y)
}

// Bounds of the memory of failed document fetches.
const (
	cimdFailureTTL  = 30 * time.Second
	maxCIMDFailures = 4096
)
