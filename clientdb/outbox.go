package clientdb

import (
	"bytes"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
)

// outboxBucket holds the outbox: one nested bucket per queue, named by the
// queue's UTF-8 bytes. In a queue's bucket, keys are 8-byte big-endian
// sequence numbers and values the 8-byte big-endian Unix time of the
// enqueue followed by the payload. The sequence numbers come from the
// outbox bucket's own sequence, one for the store, so they grow across all
// queues; that lets a queue's bucket go once its last entry does without
// its numbers being issued again.
var outboxBucket = []byte("outbox")

// Bounds of an outbox entry, which [Tx.Enqueue] refuses to exceed.
const (
	// MaxQueueName is the longest queue name, in bytes.
	MaxQueueName = 200

	// MaxOutboxPayload is the largest payload, in bytes: 2 MiB.
	MaxOutboxPayload = 2 << 20
)

// outboxHeader is the size of the time before the payload in a value of
// the bbolt outbox.
const outboxHeader = 8

// ErrOutboxInvalid is returned, with the reason, by [Tx.Enqueue] for a
// queue name or a payload out of its bounds. Nothing is enqueued then.
var ErrOutboxInvalid = errors.New("outbox entry refused")

// errOutboxReadOnly is returned by the writing methods of the outbox in a
// read-only transaction.
var errOutboxReadOnly = errors.New(
	"writing to the outbox: read-only transaction")

// OutboxEntry is one payload waiting in a named queue of the outbox, the
// durable queues that carry what a change must tell the world after it
// commits, such as events for hooks.
type OutboxEntry struct {
	// Seq is the entry's position: it grows with every entry of the
	// store, whatever the queue, and is never reused.
	Seq uint64

	// Time is when the entry was enqueued, in Unix seconds.
	Time int64

	// Payload is the caller's bytes, exactly as enqueued; never nil.
	Payload []byte
}

// checkOutbox reports why a queue name or payload cannot be enqueued.
func checkOutbox(queue string, payload []byte) error {
	if err := checkQueue(queue); err != nil {
		return fmt.Errorf("enqueueing: %w", err)
	}
	if len(payload) > MaxOutboxPayload {
		return fmt.Errorf("enqueueing to %q: %w: payload of %d bytes "+
			"is larger than %d", queue, ErrOutboxInvalid, len(payload),
			MaxOutboxPayload)
	}
	return nil
}

// checkQueue reports why queue cannot name a queue.
func checkQueue(queue string) error {
	switch {
	case queue == "":
		return fmt.Errorf("%w: empty queue name", ErrOutboxInvalid)
	case len(queue) > MaxQueueName:
		return fmt.Errorf("%w: queue name of %d bytes is longer than %d",
			ErrOutboxInvalid, len(queue), MaxQueueName)
	case !utf8.ValidString(queue):
		return fmt.Errorf("%w: queue name is not valid UTF-8",
			ErrOutboxInvalid)
	case strings.ContainsRune(queue, 0):
		// PostgreSQL's text holds no U+0000; refused on both stores
		// so that a queue works alike on either.
		return fmt.Errorf("%w: queue name contains U+0000",
			ErrOutboxInvalid)
	}
	return nil
}

// outbox returns the outbox bucket, or nil in a store without one.
func (t *boltTx) outbox() *bolt.Bucket {
	if t.tx == nil {
		return nil
	}
	return t.tx.Bucket(outboxBucket)
}

// writableOutbox returns the outbox bucket for the writing methods, nil
// if the store has none yet.
func (t *boltTx) writableOutbox() (*bolt.Bucket, error) {
	if t.tx == nil || !t.tx.Writable() {
		return nil, errOutboxReadOnly
	}
	return t.tx.Bucket(outboxBucket), nil
}

// Enqueue implements [Tx.Enqueue].
func (t *boltTx) Enqueue(queue string, payload []byte, now time.Time) (
	uint64, error) {
	if _, err := t.writableOutbox(); err != nil {
		return 0, err
	}
	if err := checkOutbox(queue, payload); err != nil {
		return 0, err
	}
	root, err := t.tx.CreateBucketIfNotExists(outboxBucket)
	if err != nil {
		return 0, fmt.Errorf("creating bucket %q: %w", outboxBucket, err)
	}
	b, err := root.CreateBucketIfNotExists([]byte(queue))
	if err != nil {
		return 0, fmt.Errorf("creating outbox queue %q: %w", queue, err)
	}
	b.FillPercent = appendFill
	seq, err := root.NextSequence()
	if err != nil {
		return 0, fmt.Errorf("numbering outbox entry of %q: %w", queue, err)
	}

	// A fresh value: bbolt keeps a reference to it until the commit,
	// and the caller may reuse payload meanwhile.
	v := make([]byte, outboxHeader, outboxHeader+len(payload))
	binary.BigEndian.PutUint64(v, uint64(now.Unix()))
	v = append(v, payload...)
	if err := b.Put(seqKey(seq), v); err != nil {
		return 0, fmt.Errorf("storing outbox entry %d of %q: %w",
			seq, queue, err)
	}
	return seq, nil
}

// Pending implements [Tx.Pending].
func (t *boltTx) Pending(queue string, limit int) ([]OutboxEntry, error) {
	root := t.outbox()
	if root == nil || limit <= 0 {
		return nil, nil
	}
	b := root.Bucket([]byte(queue))
	if b == nil {
		return nil, nil
	}
	var entries []OutboxEntry
	c := b.Cursor()
	for k, v := c.First(); k != nil && len(entries) < limit; k, v = c.Next() {
		e, err := decodeOutbox(queue, k, v)
		if err != nil {
			return nil, err
		}
		// The value lives in the database's memory map, which the
		// transaction's end unmaps.
		e.Payload = bytes.Clone(e.Payload)
		entries = append(entries, e)
	}
	return entries, nil
}

// decodeOutbox decodes an entry of the bbolt outbox. Its Payload points
// into v.
func decodeOutbox(queue string, k, v []byte) (OutboxEntry, error) {
	if len(k) != 8 || len(v) < outboxHeader {
		return OutboxEntry{}, fmt.Errorf("decoding outbox entry %x of %q: "+
			"%d-byte key, %d-byte value", k, queue, len(k), len(v))
	}
	return OutboxEntry{
		Seq:     binary.BigEndian.Uint64(k),
		Time:    int64(binary.BigEndian.Uint64(v)),
		Payload: v[outboxHeader:],
	}, nil
}

// Ack implements [Tx.Ack].
func (t *boltTx) Ack(queue string, seq uint64) error {
	root, err := t.writableOutbox()
	if err != nil || root == nil {
		return err
	}
	b := root.Bucket([]byte(queue))
	if b == nil {
		return nil
	}
	if err := b.Delete(seqKey(seq)); err != nil {
		return fmt.Errorf("removing outbox entry %d of %q: %w", seq, queue, err)
	}
	return dropIfEmpty(root, []byte(queue))
}

// dropIfEmpty removes the bucket of a queue without entries, so that the
// outbox holds only queues with something waiting and a sweep need not
// visit queues no longer used.
func dropIfEmpty(root *bolt.Bucket, queue []byte) error {
	b := root.Bucket(queue)
	if b == nil {
		return nil
	}
	if k, _ := b.Cursor().First(); k != nil {
		return nil
	}
	if err := root.DeleteBucket(queue); err != nil {
		return fmt.Errorf("removing empty outbox queue %q: %w", queue, err)
	}
	return nil
}

// SweepOutbox implements [Tx.SweepOutbox]. Each queue's entries are in
// the order they were enqueued, and so, with a clock that does not step
// back, in time order: the old ones are a prefix of each queue, and only
// the queues' first entries are compared.
func (t *boltTx) SweepOutbox(cutoff time.Time, limit int) (int, error) {
	root, err := t.writableOutbox()
	if err != nil || root == nil || limit <= 0 {
		return 0, err
	}
	heads, err := outboxHeads(root, cutoff.Unix())
	if err != nil {
		return 0, err
	}

	// Merge the queues oldest first; collect before deleting, as
	// deleting under a cursor skips entries.
	type victim struct {
		queue []byte
		key   []byte
	}
	var victims []victim
	for heads.Len() > 0 && len(victims) < limit {
		h := heads[0]
		victims = append(victims, victim{h.queue, seqKey(h.seq)})
		more, err := h.next(cutoff.Unix())
		if err != nil {
			return 0, err
		}
		if more {
			heap.Fix(&heads, 0)
		} else {
			heap.Pop(&heads)
		}
	}

	var touched [][]byte
	seen := make(map[string]bool)
	for _, v := range victims {
		if err := root.Bucket(v.queue).Delete(v.key); err != nil {
			return 0, fmt.Errorf("sweeping outbox entry %d of %q: %w",
				binary.BigEndian.Uint64(v.key), v.queue, err)
		}
		if !seen[string(v.queue)] {
			seen[string(v.queue)] = true
			touched = append(touched, v.queue)
		}
	}
	for _, q := range touched {
		if err := dropIfEmpty(root, q); err != nil {
			return 0, err
		}
	}
	return len(victims), nil
}

// HasOutboxBefore implements [Tx.HasOutboxBefore]. It looks at the first
// entry of each queue only, as SweepOutbox does.
func (t *boltTx) HasOutboxBefore(cutoff time.Time) bool {
	root := t.outbox()
	if root == nil {
		return false
	}
	c := root.Cursor()
	for name, v := c.First(); name != nil; name, v = c.Next() {
		if v != nil {
			continue
		}
		k, val := root.Bucket(name).Cursor().First()
		e, err := decodeOutbox(string(name), k, val)
		if k != nil && err == nil && e.Time < cutoff.Unix() {
			return true
		}
	}
	return false
}

// outboxHead is a cursor on the oldest entry of a queue not yet swept.
type outboxHead struct {
	queue []byte
	c     *bolt.Cursor
	seq   uint64
	time  int64
}

// next moves h to the queue's next entry and reports whether there is
// one older than cutoff.
func (h *outboxHead) next(cutoff int64) (bool, error) {
	k, v := h.c.Next()
	return h.load(k, v, cutoff)
}

// load sets h to the entry k, v and reports whether it is older than
// cutoff.
func (h *outboxHead) load(k, v []byte, cutoff int64) (bool, error) {
	if k == nil {
		return false, nil
	}
	e, err := decodeOutbox(string(h.queue), k, v)
	if err != nil {
		return false, err
	}
	h.seq, h.time = e.Seq, e.Time
	return e.Time < cutoff, nil
}

// outboxHeap is a heap of queue cursors, the oldest entry first; entries
// of the same second go in Seq order, as in PostgreSQL.
type outboxHeap []*outboxHead

// outboxHeads returns the heap of the queues whose first entry is older
// than cutoff.
func outboxHeads(root *bolt.Bucket, cutoff int64) (outboxHeap, error) {
	var heads outboxHeap
	c := root.Cursor()
	for name, v := c.First(); name != nil; name, v = c.Next() {
		if v != nil {
			continue // not a queue's bucket
		}
		h := &outboxHead{queue: bytes.Clone(name)}
		h.c = root.Bucket(name).Cursor()
		k, v := h.c.First()
		old, err := h.load(k, v, cutoff)
		if err != nil {
			return nil, err
		}
		if old {
			heads = append(heads, h)
		}
	}
	heap.Init(&heads)
	return heads, nil
}

// Len implements [heap.Interface].
func (hs outboxHeap) Len() int { return len(hs) }

// Less implements [heap.Interface].
func (hs outboxHeap) Less(i, j int) bool {
	a, b := hs[i], hs[j]
	return a.time < b.time || (a.time == b.time && a.seq < b.seq)
}

// Swap implements [heap.Interface].
func (hs outboxHeap) Swap(i, j int) { hs[i], hs[j] = hs[j], hs[i] }

// Push implements [heap.Interface].
func (hs *outboxHeap) Push(x any) { *hs = append(*hs, x.(*outboxHead)) }

// Pop implements [heap.Interface].
func (hs *outboxHeap) Pop() any {
	old := *hs
	h := old[len(old)-1]
	*hs = old[:len(old)-1]
	return h
}
