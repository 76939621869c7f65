package clientdb

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"
)

// auditBucket holds the audit trail: keys are 8-byte big-endian sequence
// numbers, values JSON [Event]s.
var auditBucket = []byte("audit")

// Operations recorded in the audit trail.
const (
	OpRead         = "read"
	OpCreate       = "create"
	OpUpdate       = "update"
	OpDelete       = "delete"
	OpExpire       = "expire"
	OpRotateSecret = "rotate_secret"
	OpDisable      = "disable"
	OpEnable       = "enable"
	OpTokenCreate  = "token_create"
	OpTokenRevoke  = "token_revoke"
)

// Actors that cause an audit event.
const (
	// ActorClient is a client acting on its own registration (RFC 7591,
	// RFC 7592).
	ActorClient = "client"

	// ActorOperator is an operator, through the admin API or this
	// package.
	ActorOperator = "operator"

	// ActorSystem is the server itself, such as the expiry of unused
	// clients.
	ActorSystem = "system"
)

// Event is one change to the store, as the audit trail records it. It
// never holds a secret, a token or request metadata.
type Event struct {
	// Seq orders events: it grows by one or more with every event and is
	// never reused.
	Seq uint64 `json:"seq"`

	// Time is when the change was made, in Unix seconds.
	Time int64 `json:"time"`

	// Op is what happened, one of the Op constants.
	Op string `json:"op"`

	// Actor is who did it, one of the Actor constants.
	Actor string `json:"actor"`

	// ClientID is the client concerned, if any.
	ClientID string `json:"client_id,omitempty"`

	// TokenID is the initial access token concerned: the one minted or
	// revoked, or the one a client registered with.
	TokenID string `json:"token_id,omitempty"`

	// ClientIP is the address the request came from, if a request caused
	// the change.
	ClientIP string `json:"client_ip,omitempty"`

	// Outcome is empty for a change that was made, "refused" for a
	// request the server refused, and "failed" for one it could not
	// serve. Refusals and reads change nothing; their events are
	// appended in batches, within a second or so, so their Seq may
	// follow that of changes made after them; Time tells.
	Outcome string `json:"outcome,omitempty"`

	// Error is the OAuth error code a refused request was answered
	// with.
	Error string `json:"error,omitempty"`

	// Rule names the check that refused the request.
	Rule string `json:"rule,omitempty"`
}

// AppendEvent implements [Tx.AppendEvent].
func (t *boltTx) AppendEvent(e *Event) error {
	if t.tx == nil || !t.tx.Writable() {
		return errReadOnly
	}
	b, err := t.tx.CreateBucketIfNotExists(auditBucket)
	if err != nil {
		return fmt.Errorf("creating bucket %q: %w", auditBucket, err)
	}
	b.FillPercent = appendFill
	seq, err := b.NextSequence()
	if err != nil {
		return fmt.Errorf("numbering audit event: %w", err)
	}
	e.Seq = seq
	v, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encoding audit event: %w", err)
	}
	if err := b.Put(seqKey(seq), v); err != nil {
		return fmt.Errorf("storing audit event %d: %w", seq, err)
	}
	return nil
}

// EventsSince implements [Tx.EventsSince].
func (t *boltTx) EventsSince(after uint64, limit int) ([]Event, error) {
	if t.tx == nil {
		return nil, nil
	}
	b := t.tx.Bucket(auditBucket)
	if b == nil {
		return nil, nil
	}
	var events []Event
	c := b.Cursor()
	for k, v := c.Seek(seqKey(after + 1)); k != nil && len(events) < limit; k, v = c.Next() {
		var e Event
		if err := json.Unmarshal(v, &e); err != nil {
			return nil, fmt.Errorf("decoding audit event %d: %w",
				binary.BigEndian.Uint64(k), err)
		}
		events = append(events, e)
	}
	return events, nil
}

// SweepEvents implements [Tx.SweepEvents].
func (t *boltTx) SweepEvents(cutoff time.Time, limit int) (int, error) {
	if t.tx == nil || !t.tx.Writable() {
		return 0, errReadOnly
	}
	b := t.tx.Bucket(auditBucket)
	if b == nil {
		return 0, nil
	}
	// Events are appended in time order, so the old ones are a prefix.
	var keys [][]byte
	c := b.Cursor()
	for k, v := c.First(); k != nil && len(keys) < limit; k, v = c.Next() {
		var e Event
		if err := json.Unmarshal(v, &e); err != nil {
			return 0, fmt.Errorf("decoding audit event %d: %w",
				binary.BigEndian.Uint64(k), err)
		}
		if e.Time >= cutoff.Unix() {
			break
		}
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return 0, fmt.Errorf("sweeping audit event %d: %w",
				binary.BigEndian.Uint64(k), err)
		}
	}
	return len(keys), nil
}

// HasEventsBefore implements [Tx.HasEventsBefore].
func (t *boltTx) HasEventsBefore(cutoff time.Time) bool {
	events, err := t.EventsSince(0, 1)
	return err == nil && len(events) == 1 && events[0].Time < cutoff.Unix()
}

// EventsSince returns up to limit audit events with a sequence number
// above after, in order (see [Tx.EventsSince]).
func (r *Reader) EventsSince(after uint64, limit int) ([]Event, error) {
	var events []Event
	err := r.View(func(tx Tx) error {
		var err error
		events, err = tx.EventsSince(after, limit)
		return err
	})
	return events, err
}

// seqKey is the key of an audit event.
func seqKey(seq uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, seq)
	return k
}
