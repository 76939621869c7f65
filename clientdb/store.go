package clientdb

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Bucket and key names of the schema.
var (
	clientsBucket    = []byte("clients")
	tombstonesBucket = []byte("tombstones")
	sweepBucket      = []byte("tombstone_expiry")
	tokensBucket     = []byte("initial_tokens")
	tokenHashBucket  = []byte("initial_token_hashes")
	metaBucket       = []byte("meta")
	schemaKey        = []byte("schema_version")
	liveKey          = []byte("live_clients")
)

// SchemaVersion is the version of the schema this package reads and writes,
// stored under "schema_version" in the "meta" bucket.
const SchemaVersion = "1"

// appendFill is the fill of pages split in buckets whose keys mostly grow:
// the page left behind is not written to again, so it is filled almost
// completely.
const appendFill = 0.9

// dbMode is the permission of a database file this package creates.
const dbMode = 0o644

// boltTimeout bounds the wait for bbolt's own file lock. Every process that
// follows the protocol already holds the right lock by then, so waiting
// means a process is using the file without the protocol.
const boltTimeout = 5 * time.Second

// Sentinel errors.
var (
	// ErrNotFound is returned when no client has the requested ID.
	ErrNotFound = errors.New("client not found")

	// ErrExists is returned by [Tx.Create] when a client or a tombstone
	// with the same ID is already stored.
	ErrExists = errors.New("client already exists")

	// ErrDeleted is returned, with the tombstone, when the requested
	// client was deleted or expired.
	ErrDeleted = errors.New("client deleted")

	// ErrSecretExpired is returned by [Client.CheckSecret] for a secret
	// of the client that has expired.
	ErrSecretExpired = errors.New("client secret expired")

	// ErrSecretInvalid is returned by [Client.CheckSecret] for a secret
	// that is not the client's.
	ErrSecretInvalid = errors.New("client secret invalid")

	// ErrDisabled is returned by [Reader.Lookup] and [Reader.VerifySecret]
	// for a client an operator disabled: it must be treated as deleted
	// until it is enabled again.
	ErrDisabled = errors.New("client disabled")

	// ErrSchema is returned when the database was written with a schema
	// version this package does not know.
	ErrSchema = errors.New("unsupported schema version")
)

// boltTx is a transaction on the bbolt store. A boltTx without a bbolt
// transaction reads as an empty store.
type boltTx struct {
	tx *bolt.Tx
}

// clients returns the clients bucket, or nil in an empty store.
func (t *boltTx) clients() *bolt.Bucket {
	if t.tx == nil {
		return nil
	}
	return t.tx.Bucket(clientsBucket)
}

// Client implements [Tx.Client].
func (t *boltTx) Client(id string) (*Client, error) {
	b := t.clients()
	if b == nil {
		return nil, ErrNotFound
	}
	v := b.Get([]byte(id))
	if v == nil {
		if ts := t.tombstones(); ts != nil && ts.Get([]byte(id)) != nil {
			return nil, ErrDeleted
		}
		return nil, ErrNotFound
	}
	var c Client
	if err := json.Unmarshal(v, &c); err != nil {
		return nil, fmt.Errorf("decoding client %q: %w", id, err)
	}
	return &c, nil
}

// ForEach implements [Tx.ForEach].
func (t *boltTx) ForEach(fn func(*Client) error) error {
	b := t.clients()
	if b == nil {
		return nil
	}
	return b.ForEach(func(k, v []byte) error {
		var c Client
		if err := json.Unmarshal(v, &c); err != nil {
			return fmt.Errorf("decoding client %q: %w", k, err)
		}
		return fn(&c)
	})
}

// Count implements [Tx.Count].
func (t *boltTx) Count() int {
	b := t.clients()
	if b == nil {
		return 0
	}
	if meta := t.tx.Bucket(metaBucket); meta != nil {
		if v := meta.Get(liveKey); len(v) == 8 {
			return int(binary.BigEndian.Uint64(v))
		}
	}
	return b.Stats().KeyN
}

// adjustLive adds delta to the live client counter.
func (t *boltTx) adjustLive(delta int) error {
	n := max(t.Count()+delta, 0)
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], uint64(n))
	if err := t.tx.Bucket(metaBucket).Put(liveKey, v[:]); err != nil {
		return fmt.Errorf("storing live client count: %w", err)
	}
	return nil
}

// Create implements [Tx.Create].
func (t *boltTx) Create(c *Client) error {
	b := t.clients()
	if b == nil || !t.tx.Writable() {
		return errReadOnly
	}
	if b.Get([]byte(c.ID)) != nil || t.isTombstoned(c.ID) {
		return ErrExists
	}
	if err := t.put(b, c); err != nil {
		return err
	}
	return t.adjustLive(1)
}

// Put implements [Tx.Put].
func (t *boltTx) Put(c *Client) error {
	b := t.clients()
	if b == nil || !t.tx.Writable() {
		return errReadOnly
	}
	if t.isTombstoned(c.ID) {
		// An ID is never issued again once deleted.
		return ErrDeleted
	}
	if b.Get([]byte(c.ID)) == nil {
		// A new ID: counted as Create counts it.
		if err := t.put(b, c); err != nil {
			return err
		}
		return t.adjustLive(1)
	}
	return t.put(b, c)
}

// isTombstoned reports whether id belongs to a deleted client.
func (t *boltTx) isTombstoned(id string) bool {
	ts := t.tombstones()
	return ts != nil && ts.Get([]byte(id)) != nil
}

// errReadOnly is returned by the writing methods of a read-only Tx.
var errReadOnly = errors.New("storing client: read-only transaction")

func (t *boltTx) put(b *bolt.Bucket, c *Client) error {
	// Client IDs sort by issue time, so new clients land at the end of
	// the bucket; pages split there are filled rather than halved.
	b.FillPercent = appendFill
	v, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("encoding client %q: %w", c.ID, err)
	}
	if !storable(v) {
		return ErrUnstorable
	}
	if err := b.Put([]byte(c.ID), v); err != nil {
		return fmt.Errorf("storing client %q: %w", c.ID, err)
	}
	return nil
}

// checkSchema verifies the schema version of a database that has one.
func checkSchema(tx *bolt.Tx) error {
	meta := tx.Bucket(metaBucket)
	if meta == nil {
		return nil
	}
	if v := meta.Get(schemaKey); v != nil && string(v) != SchemaVersion {
		return fmt.Errorf("%w: %q", ErrSchema, v)
	}
	return nil
}

// initSchema creates the buckets and the version key if they are missing.
func initSchema(tx *bolt.Tx) error {
	if err := checkSchema(tx); err != nil {
		return err
	}
	meta, err := tx.CreateBucketIfNotExists(metaBucket)
	if err != nil {
		return fmt.Errorf("creating bucket %q: %w", metaBucket, err)
	}
	if meta.Get(schemaKey) == nil {
		if err := meta.Put(schemaKey, []byte(SchemaVersion)); err != nil {
			return fmt.Errorf("storing schema version: %w", err)
		}
	}
	for _, name := range [][]byte{
		clientsBucket, tombstonesBucket, sweepBucket,
		tokensBucket, tokenHashBucket,
	} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("creating bucket %q: %w", name, err)
		}
	}
	return nil
}
