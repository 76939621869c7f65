package dcr

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"
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

// allows reports whether the request carries one of the tokens as a
// Bearer token. With no tokens configured, registration is open.
func (t initialTokens) allows(r *http.Request) bool {
	if len(t) == 0 {
		return true
	}
	presented, ok := bearerToken(r)
	if !ok {
		return false
	}
	sum := sha256.Sum256([]byte(presented))
	match := 0
	for i := range t {
		match |= subtle.ConstantTimeCompare(sum[:], t[i][:])
	}
	return match == 1
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
