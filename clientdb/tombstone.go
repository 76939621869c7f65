package clientdb

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Reasons recorded in a tombstone.
const (
	// ReasonDeleted marks a client deleted through RFC 7592 or by an
	// operator.
	ReasonDeleted = "deleted"

	// ReasonExpired marks a client removed because it expired.
	ReasonExpired = "expired"
)

// Tombstone is what remains of a deleted or expired client, in the
// "tombstones" bucket under the client ID: enough to tell the client from
// one that never existed, and to never issue its ID again. It holds no
// secret, token or metadata.
type Tombstone struct {
	// ID is the deleted client's identifier.
	ID string `json:"client_id"`

	// IssuedAt is when the client was registered, in Unix seconds.
	IssuedAt int64 `json:"client_id_issued_at"`

	// DeletedAt is when the client was deleted, in Unix seconds.
	DeletedAt int64 `json:"deleted_at"`

	// Reason is [ReasonDeleted] or [ReasonExpired].
	Reason string `json:"reason"`
}

// tombstones returns the tombstones bucket, or nil in an empty store.
func (t *boltTx) tombstones() *bolt.Bucket {
	if t.tx == nil {
		return nil
	}
	return t.tx.Bucket(tombstonesBucket)
}

// Tombstone implements [Tx.Tombstone].
func (t *boltTx) Tombstone(id string) (*Tombstone, error) {
	b := t.tombstones()
	if b == nil {
		return nil, ErrNotFound
	}
	v := b.Get([]byte(id))
	if v == nil {
		return nil, ErrNotFound
	}
	var ts Tombstone
	if err := json.Unmarshal(v, &ts); err != nil {
		return nil, fmt.Errorf("decoding tombstone %q: %w", id, err)
	}
	return &ts, nil
}

// Delete implements [Tx.Delete].
func (t *boltTx) Delete(id, reason string, now time.Time) error {
	clients := t.clients()
	if clients == nil || !t.tx.Writable() {
		return errReadOnly
	}
	c, err := t.Client(id)
	if err != nil {
		return err
	}

	ts := Tombstone{
		ID:        id,
		IssuedAt:  c.IssuedAt,
		DeletedAt: now.Unix(),
		Reason:    reason,
	}
	v, err := json.Marshal(ts)
	if err != nil {
		return fmt.Errorf("encoding tombstone %q: %w", id, err)
	}
	if err := clients.Delete([]byte(id)); err != nil {
		return fmt.Errorf("deleting client %q: %w", id, err)
	}
	t.tombstones().FillPercent = appendFill
	if err := t.tombstones().Put([]byte(id), v); err != nil {
		return fmt.Errorf("storing tombstone %q: %w", id, err)
	}
	if err := t.tx.Bucket(sweepBucket).Put(sweepKey(ts.DeletedAt, id), nil); err != nil {
		return fmt.Errorf("indexing tombstone %q: %w", id, err)
	}
	return t.adjustLive(-1)
}

// Forget implements [Tx.Forget].
func (t *boltTx) Forget(id string) error {
	clients := t.clients()
	if clients == nil || !t.tx.Writable() {
		return errReadOnly
	}
	if _, err := t.Client(id); err != nil {
		return err
	}
	if err := clients.Delete([]byte(id)); err != nil {
		return fmt.Errorf("forgetting client %q: %w", id, err)
	}
	return t.adjustLive(-1)
}

// SweepTombstones implements [Tx.SweepTombstones].
func (t *boltTx) SweepTombstones(cutoff time.Time, limit int) (int, error) {
	if t.tx == nil || !t.tx.Writable() {
		return 0, errReadOnly
	}
	idx := t.tx.Bucket(sweepBucket)
	if idx == nil {
		return 0, errReadOnly
	}
	// A cutoff before 1970 would wrap around as an unsigned key.
	end := sweepKey(max(cutoff.Unix(), 0), "")

	// Collect first: deleting under a cursor skips entries.
	var keys [][]byte
	c := idx.Cursor()
	for k, _ := c.First(); k != nil && len(keys) < limit; k, _ = c.Next() {
		if bytes.Compare(k, end) >= 0 {
			break
		}
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		if err := t.tombstones().Delete(k[8:]); err != nil {
			return 0, fmt.Errorf("sweeping tombstone %q: %w", k[8:], err)
		}
		if err := idx.Delete(k); err != nil {
			return 0, fmt.Errorf("sweeping tombstone %q: %w", k[8:], err)
		}
	}
	return len(keys), nil
}

// HasTombstonesBefore implements [Tx.HasTombstonesBefore].
func (t *boltTx) HasTombstonesBefore(cutoff time.Time) bool {
	if t.tx == nil {
		return false
	}
	idx := t.tx.Bucket(sweepBucket)
	if idx == nil {
		return false
	}
	k, _ := idx.Cursor().First()
	return k != nil && bytes.Compare(k, sweepKey(max(cutoff.Unix(), 0), "")) < 0
}

// sweepKey is the key of the sweep index: the deletion time as eight
// big-endian bytes, so that keys sort by time, followed by the client ID.
func sweepKey(deletedAt int64, id string) []byte {
	k := make([]byte, 8, 8+len(id))
	binary.BigEndian.PutUint64(k, uint64(deletedAt))
	return append(k, id...)
}

// Unused implements [Tx.Unused].
func (t *boltTx) Unused(cutoff time.Time, after string, limit int) (
	ids []string, last string, err error) {
	b := t.clients()
	if b == nil {
		return nil, "", nil
	}
	c := b.Cursor()
	k, v := c.First()
	if after != "" {
		k, v = c.Seek([]byte(after))
		if k != nil && string(k) == after {
			k, v = c.Next()
		}
	}
	for n := 0; k != nil && n < limit; k, v = c.Next() {
		n++
		last = string(k)
		var cl Client
		if err := json.Unmarshal(v, &cl); err != nil {
			return nil, "", fmt.Errorf("decoding client %q: %w", k, err)
		}
		if cl.unusedSince(cutoff) {
			ids = append(ids, cl.ID)
		}
	}
	if k == nil {
		last = ""
	}
	return ids, last, nil
}

// unusedSince reports whether the client was last used, or registered if
// never used, before cutoff.
func (c *Client) unusedSince(cutoff time.Time) bool {
	seen := max(c.LastUsedAt, c.IssuedAt)
	return seen < cutoff.Unix()
}

// ExpireUnused implements [Tx.ExpireUnused].
func (t *boltTx) ExpireUnused(ids []string, cutoff, now time.Time) (int, error) {
	return expireUnused(t, ids, cutoff, now)
}

// expireUnused is ExpireUnused on any store.
func expireUnused(t Tx, ids []string, cutoff, now time.Time) (int, error) {
	n := 0
	for _, id := range ids {
		c, err := t.Client(id)
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrDeleted) {
			continue
		}
		if err != nil {
			return n, err
		}
		if !c.unusedSince(cutoff) {
			continue
		}
		// A metadata document client leaves no tombstone, which would
		// refuse its URL: its next use fetches the document again.
		if c.Kind == KindMetadataDocument {
			err = t.Forget(id)
		} else {
			err = t.Delete(id, ReasonExpired, now)
		}
		if err != nil {
			return n, err
		}
		err = t.AppendEvent(&Event{Time: now.Unix(), Op: OpExpire,
			Actor: ActorSystem, ClientID: id})
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
