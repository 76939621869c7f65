package clientdb

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
)

// InitialTokenPrefix begins every initial access token the store issues.
// Secret scanners can match it to recognise a leaked token, and people can
// tell the token from other secrets at a glance. It carries no secret.
const InitialTokenPrefix = "dcr_iat_"

// States of an initial access token, as [InitialToken.State] reports them.
const (
	// TokenActive marks a token that registrations can use.
	TokenActive = "active"

	// TokenExpired marks a token whose expiry has passed.
	TokenExpired = "expired"

	// TokenExhausted marks a token used as often as it allows.
	TokenExhausted = "exhausted"

	// TokenRevoked marks a token an operator revoked.
	TokenRevoked = "revoked"
)

// MaxInitialTokenLabel is the longest label, in bytes, an initial access
// token may carry.
const MaxInitialTokenLabel = 256

// Sizes of the random parts, in bytes: 256 bits make a token that cannot
// be guessed, 128 bits an ID that cannot collide.
const (
	tokenRandomBytes = 32
	tokenIDBytes     = 16
)

var (
	// ErrTokenInvalid is returned by [Tx.UseInitialToken] for a token that
	// is unknown, revoked, expired or used up. It is one error for all
	// four so that callers cannot tell the presenter which: that would
	// confirm that a guessed or stolen token once existed.
	// [InitialToken.State] tells the operator.
	ErrTokenInvalid = errors.New("initial access token invalid")

	// ErrTokenNotFound is returned when no initial access token has the
	// requested ID.
	ErrTokenNotFound = errors.New("initial access token not found")
)

// errTokenReadOnly is returned by the writing methods for initial access
// tokens in a read-only transaction.
var errTokenReadOnly = errors.New(
	"storing initial access token: read-only transaction")

// InitialToken is an initial access token an operator issued (RFC 7591
// section 3), as stored in bucket "initial_tokens" under its ID. Bucket
// "initial_token_hashes" maps each token's Hash to its ID. The token itself
// is stored nowhere: it is shown once, when it is created.
type InitialToken struct {
	// ID is the token's public identifier, 16 random bytes in unpadded
	// base64url. Operators name the token by it, and registered clients
	// record it.
	ID string `json:"id"`

	// Hash is the token in the form [HashSecret] makes.
	Hash string `json:"token_hash"`

	// Label is the operator's note on what the token is for, or empty.
	Label string `json:"label,omitempty"`

	// CreatedAt is when the token was issued, in Unix seconds.
	CreatedAt int64 `json:"created_at"`

	// ExpiresAt is when the token stops being accepted, in Unix seconds,
	// or 0 if it never does.
	ExpiresAt int64 `json:"expires_at,omitempty"`

	// MaxUses is how many registrations the token allows, or 0 for any
	// number.
	MaxUses int `json:"max_uses,omitempty"`

	// Uses is how many registrations used the token.
	Uses int `json:"uses"`

	// RevokedAt is when an operator revoked the token, in Unix seconds,
	// or 0 if nobody did.
	RevokedAt int64 `json:"revoked_at,omitempty"`

	// Policy, when set, narrows the server's registration policy for the
	// clients registered with the token.
	Policy *TokenPolicy `json:"policy,omitempty"`
}

// State returns the token's state at now: [TokenRevoked] once revoked,
// else [TokenExpired] from its expiry on, else [TokenExhausted] once used
// MaxUses times, else [TokenActive].
func (t *InitialToken) State(now time.Time) string {
	switch {
	case t.RevokedAt != 0:
		return TokenRevoked
	case expired(t.ExpiresAt, now):
		return TokenExpired
	case t.MaxUses > 0 && t.Uses >= t.MaxUses:
		return TokenExhausted
	default:
		return TokenActive
	}
}

// InitialTokenSpec describes an initial access token to create.
type InitialTokenSpec struct {
	// Label is the operator's note, at most [MaxInitialTokenLabel] bytes
	// of UTF-8.
	Label string

	// ExpiresAt is when the token stops being accepted, in whole seconds
	// (the fraction is dropped), or zero for never. It must be at least a
	// second after the creation time.
	ExpiresAt time.Time

	// MaxUses is how many registrations the token allows, or 0 for any
	// number. It must not be negative.
	MaxUses int

	// Policy, when set, narrows the server's registration policy for the
	// clients registered with the token.
	Policy *TokenPolicy
}

// validate checks the spec for a token created at now.
func (s *InitialTokenSpec) validate(now time.Time) error {
	switch {
	case s.MaxUses < 0:
		return fmt.Errorf("creating initial access token: "+
			"max uses %d is negative", s.MaxUses)
	case len(s.Label) > MaxInitialTokenLabel:
		return fmt.Errorf("creating initial access token: "+
			"label of %d bytes is longer than %d",
			len(s.Label), MaxInitialTokenLabel)
	case !utf8.ValidString(s.Label):
		// JSON would replace the invalid bytes without a word.
		return errors.New("creating initial access token: " +
			"label is not valid UTF-8")
	case strings.ContainsFunc(s.Label, unicode.IsControl):
		// PostgreSQL's text holds no U+0000, and a listing shows
		// labels on a terminal.
		return errors.New("creating initial access token: " +
			"label contains control characters")
	case s.MaxUses > math.MaxInt32:
		return fmt.Errorf("creating initial access token: "+
			"max uses %d is above %d", s.MaxUses, math.MaxInt32)
	case !s.ExpiresAt.IsZero() && s.ExpiresAt.Unix() <= now.Unix():
		// Compared in the seconds that are stored: an expiry within the
		// current second would make a token that is born expired.
		return fmt.Errorf("creating initial access token: "+
			"expiry %s is not after now (%s)",
			s.ExpiresAt.UTC().Format(time.RFC3339),
			now.UTC().Format(time.RFC3339))
	}
	return nil
}

// tokenBuckets returns the buckets of initial access tokens and of their
// hashes, or nil ones in a store written before they existed.
func (t *boltTx) tokenBuckets() (tokens, hashes *bolt.Bucket) {
	if t.tx == nil {
		return nil, nil
	}
	return t.tx.Bucket(tokensBucket), t.tx.Bucket(tokenHashBucket)
}

// writableTokenBuckets is tokenBuckets for the writing methods.
func (t *boltTx) writableTokenBuckets() (tokens, hashes *bolt.Bucket, err error) {
	tokens, hashes = t.tokenBuckets()
	if tokens == nil || hashes == nil || !t.tx.Writable() {
		return nil, nil, errTokenReadOnly
	}
	return tokens, hashes, nil
}

// CreateInitialToken implements [Tx.CreateInitialToken].
func (t *boltTx) CreateInitialToken(spec InitialTokenSpec, now time.Time) (
	token string, info *InitialToken, err error) {
	tokens, hashes, err := t.writableTokenBuckets()
	if err != nil {
		return "", nil, err
	}
	if err := spec.validate(now); err != nil {
		return "", nil, err
	}

	token, info = newInitialToken(spec, now)

	// The random values make a clash all but impossible; checking costs
	// two lookups and rules out silently replacing another token.
	if tokens.Get([]byte(info.ID)) != nil ||
		hashes.Get([]byte(info.Hash)) != nil {
		return "", nil, errors.New(
			"creating initial access token: random value already taken")
	}
	if err := putInitialToken(tokens, info); err != nil {
		return "", nil, err
	}
	if err := hashes.Put([]byte(info.Hash), []byte(info.ID)); err != nil {
		return "", nil, fmt.Errorf(
			"indexing initial access token %q: %w", info.ID, err)
	}
	return token, info, nil
}

// newInitialToken makes a token as spec describes and its record.
func newInitialToken(spec InitialTokenSpec, now time.Time) (
	token string, info *InitialToken) {
	token = InitialTokenPrefix + randomString(tokenRandomBytes)
	info = &InitialToken{
		ID:        randomString(tokenIDBytes),
		Hash:      HashSecret(token),
		Label:     spec.Label,
		CreatedAt: now.Unix(),
		MaxUses:   spec.MaxUses,
		Policy:    spec.Policy,
	}
	if !spec.ExpiresAt.IsZero() {
		info.ExpiresAt = spec.ExpiresAt.Unix()
	}
	return token, info
}

// UseInitialToken implements [Tx.UseInitialToken].
func (t *boltTx) UseInitialToken(token string, now time.Time) (
	*InitialToken, error) {
	tokens, _, err := t.writableTokenBuckets()
	if err != nil {
		return nil, err
	}
	info, err := t.CheckInitialToken(token, now)
	if err != nil {
		return nil, err
	}

	info.Uses++
	if err := putInitialToken(tokens, info); err != nil {
		return nil, err
	}
	return info, nil
}

// InitialToken implements [Tx.InitialToken].
func (t *boltTx) InitialToken(id string) (*InitialToken, error) {
	tokens, _ := t.tokenBuckets()
	if tokens == nil {
		return nil, ErrTokenNotFound
	}
	v := tokens.Get([]byte(id))
	if v == nil {
		return nil, ErrTokenNotFound
	}
	var info InitialToken
	if err := json.Unmarshal(v, &info); err != nil {
		return nil, fmt.Errorf(
			"decoding initial access token %q: %w", id, err)
	}
	return &info, nil
}

// InitialTokens implements [Tx.InitialTokens].
func (t *boltTx) InitialTokens() ([]*InitialToken, error) {
	tokens, _ := t.tokenBuckets()
	if tokens == nil {
		return nil, nil
	}
	var all []*InitialToken
	err := tokens.ForEach(func(k, v []byte) error {
		var info InitialToken
		if err := json.Unmarshal(v, &info); err != nil {
			return fmt.Errorf(
				"decoding initial access token %q: %w", k, err)
		}
		all = append(all, &info)
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(all, func(a, b *InitialToken) int {
		return cmp.Or(cmp.Compare(a.CreatedAt, b.CreatedAt),
			cmp.Compare(a.ID, b.ID))
	})
	return all, nil
}

// RevokeInitialToken implements [Tx.RevokeInitialToken].
func (t *boltTx) RevokeInitialToken(id string, now time.Time) (
	*InitialToken, error) {
	tokens, _, err := t.writableTokenBuckets()
	if err != nil {
		return nil, err
	}
	info, err := t.InitialToken(id)
	if err != nil {
		return nil, err
	}
	if info.RevokedAt != 0 {
		return info, nil
	}
	info.RevokedAt = now.Unix()
	if err := putInitialToken(tokens, info); err != nil {
		return nil, err
	}
	return info, nil
}

// putInitialToken stores a token's record under its ID.
func putInitialToken(tokens *bolt.Bucket, info *InitialToken) error {
	v, err := json.Marshal(info)
	if err != nil {
		return fmt.Errorf(
			"encoding initial access token %q: %w", info.ID, err)
	}
	if err := tokens.Put([]byte(info.ID), v); err != nil {
		return fmt.Errorf(
			"storing initial access token %q: %w", info.ID, err)
	}
	return nil
}

// randomString returns n bytes from crypto/rand in unpadded base64url.
func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails; it aborts the program instead
	return base64.RawURLEncoding.EncodeToString(b)
}

// CreateInitialToken is [Tx.CreateInitialToken] in a transaction of its
// own, for operators' tools: the locking protocol serialises it with a
// running server's writes. It checks spec before touching the store.
//
// If ctx ends while the change waits, the token may still be created
// without the caller learning it; it can be found by its label and
// revoked.
func (w *Writer) CreateInitialToken(ctx context.Context,
	spec InitialTokenSpec, now time.Time) (string, *InitialToken, error) {
	return createInitialToken(ctx, w, spec, now)
}

// createInitialToken is CreateInitialToken on any store.
func createInitialToken(ctx context.Context, s Store,
	spec InitialTokenSpec, now time.Time) (string, *InitialToken, error) {
	if err := spec.validate(now); err != nil {
		return "", nil, err
	}
	var token string
	var info *InitialToken
	err := s.Update(ctx, func(tx Tx) error {
		// A function may run more than once; the last run is the one
		// committed, and its values are kept.
		var err error
		token, info, err = tx.CreateInitialToken(spec, now)
		return err
	})
	if err != nil {
		// The variables are not read here: after ctx ended, the
		// function may still be running.
		return "", nil, err
	}
	return token, info, nil
}

// RevokeInitialToken is [Tx.RevokeInitialToken] in a transaction of its
// own, for operators' tools.
func (w *Writer) RevokeInitialToken(ctx context.Context, id string,
	now time.Time) (*InitialToken, error) {
	return revokeInitialToken(ctx, w, id, now)
}

// revokeInitialToken is RevokeInitialToken on any store.
func revokeInitialToken(ctx context.Context, s Store, id string,
	now time.Time) (*InitialToken, error) {
	var info *InitialToken
	err := s.Update(ctx, func(tx Tx) error {
		var err error
		info, err = tx.RevokeInitialToken(id, now)
		return err
	})
	if err != nil {
		return nil, err
	}
	return info, nil
}

// InitialTokens is [Tx.InitialTokens] in a read-only transaction of its
// own.
func (r *Reader) InitialTokens() ([]*InitialToken, error) {
	var all []*InitialToken
	err := r.View(func(tx Tx) error {
		var err error
		all, err = tx.InitialTokens()
		return err
	})
	return all, err
}

// CheckInitialToken implements [Tx.CheckInitialToken].
func (t *boltTx) CheckInitialToken(token string, now time.Time) (*InitialToken, error) {
	_, hashes := t.tokenBuckets()
	if hashes == nil {
		return nil, ErrTokenInvalid
	}
	// The lookup is by hash, so its timing tells nothing about the
	// token; the comparison that decides is in constant time.
	id := hashes.Get([]byte(HashSecret(token)))
	if id == nil {
		return nil, ErrTokenInvalid
	}
	info, err := t.InitialToken(string(id))
	if errors.Is(err, ErrTokenNotFound) {
		// An index entry without a record cannot be honoured.
		return nil, ErrTokenInvalid
	}
	if err != nil {
		return nil, err
	}
	if !VerifySecret(info.Hash, token) || info.State(now) != TokenActive {
		return nil, ErrTokenInvalid
	}
	return info, nil
}
