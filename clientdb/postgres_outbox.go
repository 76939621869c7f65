package clientdb

import (
	"fmt"
	"math"
	"time"
)

// Enqueue implements [Tx.Enqueue]. Seq comes from an identity column of
// dcr_outbox, shared by all queues.
func (t *pgTx) Enqueue(queue string, payload []byte, now time.Time) (
	uint64, error) {
	if !t.writable {
		return 0, errOutboxReadOnly
	}
	if err := checkOutbox(queue, payload); err != nil {
		return 0, err
	}
	if payload == nil {
		// The driver sends a nil slice as NULL; the column is NOT NULL.
		payload = []byte{}
	}
	var seq int64
	err := t.q.QueryRow(t.ctx, "INSERT INTO dcr_outbox (queue, at, payload) "+
		"VALUES ($1, $2, $3) RETURNING seq",
		queue, time.Unix(now.Unix(), 0), payload).Scan(&seq)
	if err != nil {
		return 0, t.fail(fmt.Sprintf("storing outbox entry of %q", queue), err)
	}
	return uint64(seq), nil
}

// Pending implements [Tx.Pending].
func (t *pgTx) Pending(queue string, limit int) ([]OutboxEntry, error) {
	if limit <= 0 || checkQueue(queue) != nil {
		// PostgreSQL refuses a negative LIMIT, and a text parameter
		// that is not UTF-8; bbolt finds nothing for either.
		return nil, nil
	}
	doing := fmt.Sprintf("reading outbox queue %q", queue)
	rows, err := t.q.Query(t.ctx, "SELECT seq, at, payload FROM dcr_outbox "+
		"WHERE queue = $1 ORDER BY seq LIMIT $2", queue, limit)
	if missingTable(err) {
		return nil, nil
	}
	if err != nil {
		return nil, t.fail(doing, err)
	}
	var entries []OutboxEntry
	for rows.Next() {
		var seq int64
		var at time.Time
		var payload []byte
		if err := rows.Scan(&seq, &at, &payload); err != nil {
			return nil, t.fail(doing, err)
		}
		if payload == nil {
			payload = []byte{}
		}
		entries = append(entries, OutboxEntry{
			Seq:     uint64(seq),
			Time:    at.Unix(),
			Payload: payload,
		})
	}
	if err := rows.Err(); err != nil {
		if missingTable(err) {
			return nil, nil
		}
		return nil, t.fail(doing, err)
	}
	return entries, nil
}

// Ack implements [Tx.Ack].
func (t *pgTx) Ack(queue string, seq uint64) error {
	if !t.writable {
		return errOutboxReadOnly
	}
	if seq > math.MaxInt64 || checkQueue(queue) != nil {
		return nil // never issued
	}
	_, err := t.q.Exec(t.ctx, "DELETE FROM dcr_outbox "+
		"WHERE queue = $1 AND seq = $2", queue, int64(seq))
	if err != nil {
		return t.fail(fmt.Sprintf("removing outbox entry %d of %q",
			seq, queue), err)
	}
	return nil
}

// SweepOutbox implements [Tx.SweepOutbox].
func (t *pgTx) SweepOutbox(cutoff time.Time, limit int) (int, error) {
	if !t.writable {
		return 0, errOutboxReadOnly
	}
	if limit <= 0 {
		return 0, nil
	}
	tag, err := t.q.Exec(t.ctx, `DELETE FROM dcr_outbox WHERE seq IN (
		SELECT seq FROM dcr_outbox WHERE at < $1
		ORDER BY at, seq LIMIT $2 FOR UPDATE SKIP LOCKED)`,
		time.Unix(cutoff.Unix(), 0), limit)
	if err != nil {
		return 0, t.fail("sweeping the outbox", err)
	}
	return int(tag.RowsAffected()), nil
}

// HasOutboxBefore implements [Tx.HasOutboxBefore].
func (t *pgTx) HasOutboxBefore(cutoff time.Time) bool {
	return t.exists("SELECT EXISTS (SELECT 1 FROM dcr_outbox WHERE at < $1)",
		cutoff)
}
