package dcr

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/caddy-dcr/caddy-dcr/clientdb"

	"github.com/caddyserver/caddy/v2"
)

// namedPolicy is a loaded policy module with its name, for the log.
type namedPolicy struct {
	name string
	impl Policy
}

// loadGuests loads the handler's policy and hook modules.
func (h *Handler) loadGuests(ctx caddy.Context) error {
	if h.PoliciesRaw != nil {
		mods, err := ctx.LoadModule(h, "PoliciesRaw")
		if err != nil {
			return fmt.Errorf("loading policies: %w", err)
		}
		for i, m := range mods.([]any) {
			p, ok := m.(Policy)
			if !ok {
				return fmt.Errorf("policy %d: module %T does not implement dcr.Policy", i, m)
			}
			name := string(m.(caddy.Module).CaddyModule().ID.Name())
			h.policies = append(h.policies, namedPolicy{name: name, impl: p})
		}
	}
	if h.HooksRaw != nil {
		mods, err := ctx.LoadModule(h, "HooksRaw")
		if err != nil {
			return fmt.Errorf("loading hooks: %w", err)
		}
		if h.hooks, err = loadHooks(mods.([]any)); err != nil {
			return err
		}
	}
	return nil
}

// runPolicies runs the policy modules on metadata the built-in rules
// accepted, then, if there are any, the built-in rules again on what they
// made of it (tp narrows them as in vetMetadata).
func (h *Handler) runPolicies(r *http.Request, m *clientdb.Metadata,
	tp *clientdb.TokenPolicy, op, clientID string) *protoError {
	if len(h.policies) == 0 {
		return nil
	}
	in := &PolicyInput{Operation: op, ClientID: clientID, Metadata: m, Request: r}
	for _, p := range h.policies {
		err := p.impl.Check(r.Context(), in)
		if err == nil {
			continue
		}
		var pe *PolicyError
		if errors.As(err, &pe) {
			return &protoError{
				Status:      http.StatusBadRequest,
				Code:        pe.code(),
				Description: pe.Description,
				Rule:        "policy " + p.name,
			}
		}
		return &protoError{
			Status:      http.StatusInternalServerError,
			Code:        codeServerError,
			Description: "a registration policy of the server failed",
			Rule:        "policy " + p.name,
			Cause:       err,
		}
	}

	// What a policy amended must still be what the Caddyfile allows.
	if perr := h.policy.narrow(tp).apply(m); perr != nil {
		perr.Rule = "after policies: " + perr.Rule
		return perr
	}
	return h.checkSectorIdentifier(r.Context(), m)
}
