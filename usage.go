package dcr

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

// usageFlushInterval is how often recorded client use is written to the
// store. Use is only needed to the minute for expiry, so one write per
// interval serves any number of requests.
const usageFlushInterval = 10 * time.Second

// maxPendingUsage bounds the clients whose use waits to be written; beyond
// it, further clients' use waits for the next interval's memory.
const maxPendingUsage = 100_000

// usageTracker records when enforcement last saw each client and writes
// it to the store in the background, in one transaction per interval, so
// that no request waits for it.
type usageTracker struct {
	mu      sync.Mutex
	pending map[string]int64

	// flushing serialises writes of use, so that a pass that writes
	// pending use and then judges clients by it waits for a write that
	// another handler on the same store has already started.
	flushing sync.Mutex
}

// touch records that client id was used at now.
func (u *usageTracker) touch(id string, now time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.pending == nil {
		u.pending = make(map[string]int64)
	}
	if _, ok := u.pending[id]; ok || len(u.pending) < maxPendingUsage {
		u.pending[id] = now.Unix()
	}
}

// take returns and clears the recorded use.
func (u *usageTracker) take() map[string]int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	p := u.pending
	u.pending = nil
	return p
}

// flushUsage writes recorded use every interval until ctx ends or the
// handler is cleaned up, then once more.
func (h *Handler) flushUsage(ctx context.Context) {
	h.flushEvery(ctx, usageFlushInterval, h.writeUsage)
}

// flushEvery calls write every interval until ctx ends or the handler is
// cleaned up, then once more, so that nothing waiting is left behind.
func (h *Handler) flushEvery(ctx context.Context, interval time.Duration,
	write func(context.Context)) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			write(context.Background())
			return
		case <-h.stop:
			write(context.Background())
			return
		case <-ticker.C:
			write(ctx)
		}
	}
}

// writeUsage stores the recorded use as last_used_at of each live client.
func (h *Handler) writeUsage(ctx context.Context) {
	h.usage.flushing.Lock()
	defer h.usage.flushing.Unlock()

	pending := h.usage.take()
	if len(pending) == 0 {
		return
	}
	err := h.store.Update(ctx, func(tx clientdb.Tx) error {
		for id, at := range pending {
			c, err := tx.Client(id)
			if errors.Is(err, clientdb.ErrNotFound) || errors.Is(err, clientdb.ErrDeleted) {
				continue
			}
			if err != nil {
				return err
			}
			if at <= c.LastUsedAt {
				continue
			}
			c.LastUsedAt = at
			if err := tx.Put(c); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		// Keep the use for the next attempt, unless this one was cut
		// off by shutdown.
		if ctx.Err() != nil {
			return
		}
		h.usage.restore(pending)
		h.logger.Error("recording client use", zap.Int("clients", len(pending)), zap.Error(err))
	}
}

// restore puts back use that could not be written, keeping newer use
// recorded meanwhile.
func (u *usageTracker) restore(p map[string]int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.pending == nil {
		u.pending = make(map[string]int64, len(p))
	}
	for id, at := range p {
		if len(u.pending) >= maxPendingUsage {
			return
		}
		if at > u.pending[id] {
			u.pending[id] = at
		}
	}
}
