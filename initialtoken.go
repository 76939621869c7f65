package dcr

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

// initialTokens holds the digests of the initial access tokens that
// registration requires (RFC 7591 section 3): only digests stay in memory
// after Provision, and every comparison takes the same time whichever
// token, if any, matches.
type initialTokens [][sha256.Size]byte

// newInitialTokens expands placeholders such as {env.DCR_IAT} and
// {file./run/secrets/iat} in the configured tokens and keeps their
// digests. A token that expands to nothing is an error: registration must
// never silently open up.
func newInitialTokens(configured []string) (initialTokens, error) {
	repl := caddy.NewReplacer()
	var toks initialTokens
	for i, v := range configured {
		tok := repl.ReplaceKnown(v, "")
		if tok == "" {
			return nil, fmt.Errorf("initial_access_token %d: empty after placeholders", i+1)
		}
		toks = append(toks, sha256.Sum256([]byte(tok)))
	}
	return toks, nil
}

// matches reports whether token is one of the configured tokens. Every
// comparison takes the same time whichever token, if any, matches.
func (t initialTokens) matches(token string) bool {
	sum := sha256.Sum256([]byte(token))
	match := 0
	for i := range t {
		match |= subtle.ConstantTimeCompare(sum[:], t[i][:])
	}
	return match == 1
}

// admission is how a registration request was let in: openly, with a
// configured token, or with a token issued through the store, whose use
// is counted when the client is stored.
type admission struct {
	// issued is the plaintext of an issued token, or empty.
	issued string
	token  *clientdb.InitialToken
}

// policy returns the issued token's policy, or nil.
func (a *admission) policy() *clientdb.TokenPolicy {
	if a.token == nil {
		return nil
	}
	return a.token.Policy
}

// admitRegistration decides whether a registration request may proceed. Without a
// bearer token it may when no token is required. A presented token must
// be valid even when none is required: a client that sends one expects
// the registration it opens, and a silent fallback to open registration
// would hide a revoked or mistyped token.
func (h *Handler) admitRegistration(r *http.Request) (*admission, *protoError) {
	presented, ok := bearerToken(r)
	if !ok {
		if len(h.initialTokens) > 0 || h.RequireInitialAccessToken ||
			r.Header.Get("Authorization") != "" {
			return nil, errInitialToken()
		}
		return &admission{}, nil
	}
	if h.initialTokens.matches(presented) {
		return &admission{}, nil
	}

	var tok *clientdb.InitialToken
	err := h.store.View(func(tx clientdb.Tx) error {
		var err error
		tok, err = tx.CheckInitialToken(presented, h.now())
		return err
	})
	switch {
	case errors.Is(err, clientdb.ErrTokenInvalid):
		return nil, errInitialToken()
	case err != nil:
		return nil, storeError(err)
	}
	return &admission{issued: presented, token: tok}, nil
}

// errInitialToken is the answer to a registration without a valid initial
// access token.
func errInitialToken() *protoError {
	return &protoError{
		Status:      http.StatusUnauthorized,
		Code:        "invalid_token",
		Description: "registration requires a valid initial access token",
		Rule:        "initial_access_token",
	}
}
