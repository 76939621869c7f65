package dcr

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"

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
// token's policy) if set, and checks the sector identifier document. The
// request's context bounds the fetch.
func (h *Handler) vetMetadata(r *http.Request, m *clientdb.Metadata,
	tp *clientdb.TokenPolicy) *protoError {
	if perr := h.policy.narrow(tp).apply(m); perr != nil {
		return perr
	}
	return h.checkSectorIdentifier(r.Context(), m)
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

	res, err := h.fetcher.get(ctx, m.SectorIdentifierURI, true)
	if err != nil {
		reason := "the fetch failed"
		if fe, ok := err.(*fetchError); ok {
			reason = fe.Reason()
		}
		return bad("sector_identifier_fetch", "could not be fetched: "+reason, err)
	}
	var listed []string
	if err := json.Unmarshal(res.body, &listed); err != nil {
		return bad("sector_identifier_json",
			"does not hold a JSON array of URIs", err)
	}
	for _, u := range m.RedirectURIs {
		if !slices.Contains(listed, u) {
			return bad("sector_identifier_lists", fmt.Sprintf(
				"does not list the redirect URI %q", truncate(u)), nil)
		}
	}
	return nil
}
