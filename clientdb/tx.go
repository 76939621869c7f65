package clientdb

import "time"

// Tx is a read or read-write transaction on a store, bbolt or PostgreSQL.
// A Tx belongs to the function it is passed to and must not be used after
// that function returns. The writing methods fail on a read-only one.
type Tx interface {
	// Client returns the live client with the given ID. It returns
	// [ErrDeleted] for a client that was deleted or expired (see
	// [Tx.Tombstone]), and [ErrNotFound] for an ID never issued or whose
	// tombstone was swept.
	Client(id string) (*Client, error)

	// ForEach calls fn for every live client in the order of their IDs,
	// stopping at the first error fn returns.
	ForEach(fn func(*Client) error) error

	// Clients calls fn for each live client, disabled ones included, in the
	// byte order of their IDs, starting with the first ID after the given one
	// ("" starts at the first client). The ID need not belong to a stored
	// client, so a listing can resume after a client that was deleted
	// meanwhile. It stops when fn returns more false or an error, and returns
	// that error.
	//
	// Each client is decoded afresh and belongs to fn. In a read transaction
	// the writer waits until Clients returns, so callers that page through a
	// large store should stop after a bounded number of clients.
	Clients(after string, fn func(*Client) (more bool, err error)) error

	// Count returns the number of live clients, disabled ones included. It
	// reads a counter that every write keeps, or counts the bucket in a store
	// no writer of this version has written yet.
	Count() int

	// Create stores a new client, or returns [ErrExists] if its ID is taken.
	// It fails on a read-only transaction.
	Create(c *Client) error

	// Put stores a client, replacing any live client with the same ID. It
	// returns [ErrDeleted] for the ID of a deleted client and fails on a
	// read-only transaction.
	Put(c *Client) error

	// Delete removes a live client and leaves a tombstone recording reason and
	// the time now. It returns [ErrNotFound] or [ErrDeleted] when there is no
	// live client with that ID.
	Delete(id, reason string, now time.Time) error

	// Forget removes a live client without leaving a tombstone, so that
	// its ID is unknown at once and may be stored again. It is meant for
	// clients of kind [KindMetadataDocument], whose ID is the URL of their
	// document and is not issued by the server; a registered client is
	// deleted with Delete. It returns [ErrNotFound] or [ErrDeleted] when
	// there is no live client with that ID, and fails on a read-only
	// transaction.
	Forget(id string) error

	// Tombstone returns the tombstone of a deleted client, or [ErrNotFound].
	Tombstone(id string) (*Tombstone, error)

	// Disable marks a live client disabled from now, keeping an earlier
	// disable time, and returns it. It returns [ErrNotFound] or [ErrDeleted]
	// when there is no live client with that ID.
	Disable(id string, now time.Time) (*Client, error)

	// Enable clears a client's disabled mark and returns it. It returns
	// [ErrNotFound] or [ErrDeleted] when there is no live client with that ID.
	Enable(id string) (*Client, error)

	// SweepTombstones removes up to limit tombstones of clients deleted before
	// cutoff, oldest first, and returns how many it removed. The IDs they held
	// become unknown; being random, they are still never issued again.
	SweepTombstones(cutoff time.Time, limit int) (int, error)

	// HasTombstonesBefore reports whether any tombstone was made before
	// cutoff, so that a sweeper can skip a write when there is nothing to do.
	HasTombstonesBefore(cutoff time.Time) bool

	// Unused returns the IDs of live clients not used since cutoff (by
	// LastUsedAt, or IssuedAt for clients never used), scanning at most limit
	// clients in ID order after the ID after ("" to start at the first). It
	// also returns the last ID scanned, to resume from, or "" at the end.
	Unused(cutoff time.Time, after string, limit int) (
		ids []string, last string, err error)

	// ExpireUnused deletes, leaving tombstones with [ReasonExpired] and an
	// [OpExpire] audit event each, those of the given clients that are still
	// unused since cutoff, and returns how many it deleted. Clients of kind
	// [KindMetadataDocument] are removed with [Tx.Forget] instead, leaving
	// no tombstone, so that their next use fetches the document again.
	ExpireUnused(ids []string, cutoff, now time.Time) (int, error)

	// AppendEvent records e with the next sequence number, which it sets, in
	// the transaction of the change it describes, so that the event is durable
	// exactly when the change is. It fails on a read-only transaction.
	AppendEvent(e *Event) error

	// EventsSince returns up to limit events with a sequence number above
	// after, in order. Pass the Seq of the last event seen to follow the trail;
	// 0 starts at the oldest event kept.
	EventsSince(after uint64, limit int) ([]Event, error)

	// SweepEvents removes up to limit of the oldest events made before cutoff
	// and returns how many it removed.
	SweepEvents(cutoff time.Time, limit int) (int, error)

	// HasEventsBefore reports whether any audit event was made before cutoff,
	// so that a sweeper can skip a write when there is nothing to do.
	HasEventsBefore(cutoff time.Time) bool

	// CreateInitialToken issues an initial access token as spec describes,
	// created at now, and returns the token with what is stored about it. The
	// token is [InitialTokenPrefix] followed by 32 bytes from crypto/rand in
	// unpadded base64url; only its hash is stored, so the caller must hand it
	// on now or never.
	//
	// It refuses a negative MaxUses, a Label longer than
	// [MaxInitialTokenLabel] bytes or not UTF-8, and an ExpiresAt not at least
	// a second after now. It fails on a read-only transaction.
	CreateInitialToken(spec InitialTokenSpec, now time.Time) (
		token string, info *InitialToken, err error)

	// UseInitialToken spends one use of the initial access token presented
	// with a registration at now, and returns the token's record with the use
	// counted. It returns [ErrTokenInvalid] for a token that is unknown,
	// revoked, expired at now or used up, and changes nothing then. It fails
	// on a read-only transaction.
	//
	// The use is stored in the caller's transaction, so a registration that
	// fails later in the same [Writer.Update] gives it back.
	UseInitialToken(token string, now time.Time) (
		*InitialToken, error)

	// CheckInitialToken returns the initial access token whose plaintext is
	// token if it may be used at now, without counting a use. It returns
	// [ErrTokenInvalid] as [Tx.UseInitialToken] does. A registration checks
	// the token first to learn its policy, and counts the use when it stores
	// the client.
	CheckInitialToken(token string, now time.Time) (*InitialToken, error)

	// InitialToken returns the initial access token with the given ID, or
	// [ErrTokenNotFound].
	InitialToken(id string) (*InitialToken, error)

	// InitialTokens returns every initial access token, whatever its state,
	// ordered by creation time and then by ID. It reads the whole bucket.
	InitialTokens() ([]*InitialToken, error)

	// RevokeInitialToken revokes the initial access token with the given ID at
	// now and returns its record. Revoking a revoked token changes nothing and
	// keeps the first time. Clients registered with the token stay registered.
	// It returns [ErrTokenNotFound] for an unknown ID and fails on a read-only
	// transaction.
	RevokeInitialToken(id string, now time.Time) (
		*InitialToken, error)

	// Enqueue appends payload to the outbox queue named queue, stamped
	// with now in whole seconds, and returns the entry's Seq. The entry is
	// stored in the caller's transaction, so it is durable exactly when
	// the change it belongs to is; a Seq returned by a run of an Update
	// that is not committed names nothing. The payload is copied.
	//
	// It returns [ErrOutboxInvalid] for a queue name that is empty, longer
	// than [MaxQueueName] bytes, not UTF-8 or holding U+0000, and for a
	// payload larger than [MaxOutboxPayload] bytes. It fails on a
	// read-only transaction.
	Enqueue(queue string, payload []byte, now time.Time) (uint64, error)

	// Pending returns up to limit of the oldest entries of queue, in Seq
	// order, without removing them; none for an unknown queue or a limit
	// below 1. Each payload is the caller's to keep. Entries stay until
	// [Tx.Ack] removes them, so a consumer that fails between delivering
	// and acking delivers again: at least once. Nothing marks an entry as
	// taken, so concurrent consumers of one queue see the same entries:
	// run one consumer per queue, under [Store.Lead] on a shared store.
	//
	// On PostgreSQL, Seq is taken when the row is inserted, so an entry
	// that a concurrent transaction commits later can have a lower Seq
	// than entries a previous call returned.
	Pending(queue string, limit int) ([]OutboxEntry, error)

	// Ack removes the entry seq from queue. Acking an entry that is not
	// there, already acked or swept, is not an error. It fails on a
	// read-only transaction.
	Ack(queue string, seq uint64) error

	// SweepOutbox removes up to limit entries enqueued before cutoff, of
	// any queue, oldest first (by Time, then Seq), and returns how many it
	// removed. The bbolt store compares only the first entry of each
	// queue, taking entries to be enqueued in time order; after the clock
	// steps back, it may keep an old entry behind a newer one for longer
	// than PostgreSQL does.
	SweepOutbox(cutoff time.Time, limit int) (int, error)

	// HasOutboxBefore reports whether any entry of any queue was enqueued
	// before cutoff, so that a sweeper can skip a write when there is
	// nothing to do.
	HasOutboxBefore(cutoff time.Time) bool
}

// Interface guards
var _ Tx = (*boltTx)(nil)
