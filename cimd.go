package dcr

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
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
	if len(id) > maxCIMDLength || !printableASCII(id) {
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
	if stored == nil && h.limiter != nil {
		// A new document URL makes a client, as a registration does,
		// and counts against the same limit per address.
		if ok, wait := h.limiter.allow(clientIP(r), now); !ok {
			metrics.rateLimited()
			return nil, &protoError{
				Status: http.StatusTooManyRequests,
				Code:   "temporarily_unavailable",
				Description: fmt.Sprintf("too many new clients from this address "+
					"(rate_limit); retry after %d seconds", int64(wait/time.Second)+1),
				Rule: "rate_limit",
			}
		}
	}

	// Waiting requests share the first one's fetch; it must not end
	// when that request's client goes away.
	ctx := context.WithoutCancel(r.Context())
	v, err, _ := c.flight.Do(id, func() (any, error) {
		return c.refresh(ctx, h, r, id)
	})
	if err == nil {
		return v.(*clientdb.Client), nil
	}
	var perr *protoError
	if stored != nil && errors.As(err, &perr) &&
		now.Before(time.Unix(stored.DocumentRefreshAt, 0).Add(c.grace)) {
		h.logger.Warn("metadata document refresh failed; using the last good copy",
			zap.String("client_id", id), zap.String("rule", perr.Rule),
			zap.String("reason", perr.Description),
			zap.Time("grace_until", time.Unix(stored.DocumentRefreshAt, 0).Add(c.grace)))
		return stored, nil
	}
	return nil, err
}

// refresh fetches and checks the document at id and stores its client,
// creating it or replacing the stored one.
func (c *cimdResolver) refresh(ctx context.Context, h *Handler, r *http.Request,
	id string) (*clientdb.Client, error) {
	res, err := h.fetcher.fetch(ctx, id, fetchRules{
		requireHTTPS: true,
		sameHost:     true,
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
	m, perr := parseCIMDDocument(res.body, id)
	if perr == nil {
		perr = h.vetMetadata(r.WithContext(ctx), m, nil, OperationMetadataDocument, id)
	}
	if perr != nil {
		if perr.Status >= 500 {
			return nil, perr
		}
		return nil, cimdRefusal(id, perr.Description, perr)
	}

	now := h.now()
	ttl := cimdTTL(res.response, now, c.minTTL, c.maxTTL)
	next := &clientdb.Client{
		ID:                id,
		IssuedAt:          now.Unix(),
		Kind:              clientdb.KindMetadataDocument,
		DocumentFetchedAt: now.Unix(),
		DocumentRefreshAt: now.Add(ttl).Unix(),
		Metadata:          *m,
	}
	wctx, cancel := context.WithTimeout(ctx, storeWait)
	defer cancel()
	err = h.store.Update(wctx, func(tx clientdb.Tx) error {
		cur, err := tx.Client(id)
		switch {
		case errors.Is(err, clientdb.ErrNotFound):
			if h.MaxClients > 0 && tx.Count() >= h.MaxClients {
				return errMaxClients(h.MaxClients)
			}
			if err := tx.Create(next); err != nil {
				return err
			}
			return recordEvent(tx, h.hooks, &clientdb.Event{Time: now.Unix(),
				Op: clientdb.OpCreate, Actor: clientdb.ActorSystem, ClientID: id}, "")
		case err != nil:
			return err
		}
		next.IssuedAt = cur.IssuedAt
		next.LastUsedAt = cur.LastUsedAt
		next.DisabledAt = cur.DisabledAt
		changed := !reflect.DeepEqual(cur.Metadata, next.Metadata)
		if changed {
			next.UpdatedAt = now.Unix()
		} else {
			next.UpdatedAt = cur.UpdatedAt
		}
		if err := tx.Put(next); err != nil {
			return err
		}
		if !changed {
			return nil
		}
		return recordEvent(tx, h.hooks, &clientdb.Event{Time: now.Unix(),
			Op: clientdb.OpUpdate, Actor: clientdb.ActorSystem, ClientID: id}, "")
	})
	var perr2 *protoError
	switch {
	case errors.Is(err, clientdb.ErrDeleted):
		return nil, err
	case errors.As(err, &perr2):
		return nil, perr2
	case err != nil:
		return nil, storeError(err)
	}
	if next.Disabled() {
		return nil, errDisabled
	}
	h.logger.Info("client metadata document accepted",
		zap.String("client_id", id),
		zap.String("client_name", m.ClientName),
		zap.Duration("refresh_in", ttl))
	return next, nil
}
