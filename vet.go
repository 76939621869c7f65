package dcr

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

// decodeVerified decodes the body of a registration or update request,
// verifying a software statement and putting its claims in place of the
// plain members. The request's context bounds any key fetch this needs.
func (h *Handler) decodeVerified(r *http.Request, body []byte) (*request, *protoError) {
	now := h.now()
	verify := func(statement string) ([]member, *protoError) {
		return h.statements.verify(r.Context(), statement, now)
	}
	req, perr := decodeRequestWith(body, verify)
	if perr != nil {
		return nil, perr
	}
	if h.RequireSoftwareStatement && req.SoftwareStatement == "" {
		return nil, &protoError{
			Status:      http.StatusBadRequest,
			Code:        codeInvalidStatement,
			Description: "this server requires a software_statement",
			Rule:        "require_software_statement",
		}
	}
	return req, nil
}

// vetMetadata applies the policy, narrowed by tp (an initial access
// token's policy) if set, checks the sector identifier document, and runs
// the policy modules. op is OperationRegister or OperationUpdate, and
// clientID the client updated. The request's context bounds the fetch.
func (h *Handler) vetMetadata(r *http.Request, m *clientdb.Metadata,
	tp *clientdb.TokenPolicy, op, clientID string) *protoError {
	if perr := h.policy.narrow(tp).apply(m); perr != nil {
		return perr
	}
	if perr := h.checkSectorIdentifier(r.Context(), m); perr != nil {
		return perr
	}
	return h.runPolicies(r, m, tp, op, clientID)
}

// checkSectorIdentifier fetches the client's sector_identifier_uri and
// checks that the JSON array it holds lists every redirect URI (OpenID
// Connect Dynamic Client Registration 1.0, section 5).
func (h *Handler) checkSectorIdentifier(ctx context.Context, m *clientdb.Metadata) *protoError {
	if m.SectorIdentifierURI == "" {
		return nil
	}
	bad := func(rule, why string, cause error) *protoError {
		perr := metadataError(rule, "sector_identifier_uri "+why)
		perr.Cause = cause
		return perr
	}

	listed, ok := h.sectors.get(m.SectorIdentifierURI, h.now())
	if !ok {
		res, err := h.fetcher.get(ctx, m.SectorIdentifierURI, true)
		if err != nil {
			reason := "the fetch failed"
			if fe, ok := err.(*fetchError); ok {
				reason = fe.Reason()
			}
			return bad("sector_identifier_fetch", "could not be fetched: "+reason, err)
		}
		if err := json.Unmarshal(res.body, &listed); err != nil {
			return bad("sector_identifier_json",
				"does not hold a JSON array of URIs", err)
		}
		h.sectors.put(m.SectorIdentifierURI, listed, h.now())
	}
	for _, u := range m.RedirectURIs {
		if !slices.Contains(listed, u) {
			return bad("sector_identifier_lists", fmt.Sprintf(
				"does not list the redirect URI %q", truncate(u)), nil)
		}
	}
	return nil
}

// Bounds of the cache of sector identifier documents.
const (
	sectorTTL        = 5 * time.Minute
	maxSectorEntries = 1024
)

// sectorCache keeps fetched sector identifier documents, the redirect
// URIs each lists, for sectorTTL, so that a client registering and
// updating in quick succession, or many clients of one sector, cause one
// fetch. A nil cache keeps nothing.
type sectorCache = ttlCache[[]string]

func newSectorCache() *sectorCache {
	return newTTLCache[[]string](sectorTTL, maxSectorEntries)
}
