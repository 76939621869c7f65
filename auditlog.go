package dcr

import (
	"context"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

// Bounds of the buffered audit events.
const (
	// auditFlushInterval is how often buffered events are appended to the
	// store's audit trail.
	auditFlushInterval = time.Second

	// maxPendingEvents bounds the buffer; events beyond it are dropped
	// and counted (caddy_dcr_audit_dropped_total), so that a flood of
	// refused requests costs bounded memory and one write a second.
	maxPendingEvents = 4096
)

// auditBuffer holds the audit events of requests that changed nothing,
// refusals and reads, until they are appended to the store in one
// transaction. Changes append their events in their own transactions
// instead. It lives with the store, so that a reload loses nothing.
type auditBuffer struct {
	mu      sync.Mutex
	pending []*clientdb.Event
}

// add buffers an event, or drops it when the buffer is full.
func (b *auditBuffer) add(e *clientdb.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.pending) >= maxPendingEvents {
		metrics.auditDropped()
		return
	}
	b.pending = append(b.pending, e)
}

// take removes and returns the buffered events.
func (b *auditBuffer) take() []*clientdb.Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.pending
	b.pending = nil
	return p
}

// auditRequest buffers the audit event of a read or a refusal.
func (h *Handler) auditRequest(r *http.Request, op, clientID string, e *protoError) {
	ev := &clientdb.Event{
		Time:     h.now().Unix(),
		Op:       op,
		Actor:    clientdb.ActorClient,
		ClientID: clientID,
		ClientIP: clientIP(r),
	}
	if e != nil {
		ev.Outcome, ev.Error, ev.Rule = "refused", e.Code, e.Rule
		if e.Status >= 500 {
			ev.Outcome = "failed"
		}
	}
	h.store.audit.add(ev)
}

// flushAudit appends buffered events every interval until ctx ends or the
// handler is cleaned up, then once more.
func (h *Handler) flushAudit(ctx context.Context) {
	h.flushEvery(ctx, auditFlushInterval, h.writeAudit)
}

// writeAudit appends the buffered events in one transaction.
func (h *Handler) writeAudit(ctx context.Context) {
	events := h.store.audit.take()
	if len(events) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, storeWait)
	defer cancel()
	err := h.store.Update(ctx, func(tx clientdb.Tx) error {
		for _, e := range events {
			if err := tx.AppendEvent(e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		h.logger.Error("appending audit events", zap.Int("count", len(events)),
			zap.Error(err))
	}
}
