package dcr

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

// Batch sizes of the background work, so that a sweep after a long pause
// holds the store's lock only briefly at a time.
const (
	sweepBatch  = 1000 // tombstones removed per transaction
	expireBatch = 1000 // clients examined per read
)

// sweepInterval returns how often background work with the given period
// runs: a tenth of it, between one second and one hour, so that nothing
// outlives its deadline by more than a tenth.
func sweepInterval(period time.Duration) time.Duration {
	return min(max(period/10, time.Second), time.Hour)
}

// periodically runs fn at once and then every interval until ctx ends or
// the handler is cleaned up. Running first matters: every config reload
// starts new background work, and work that waited first would never run
// on a server reloaded more often than its interval.
func (h *Handler) periodically(ctx context.Context, interval time.Duration,
	fn func(context.Context)) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.stop:
			return
		default:
		}

		fn(ctx)

		select {
		case <-ctx.Done():
			return
		case <-h.stop:
			return
		case <-ticker.C:
		}
	}
}

// sweepTombstones removes tombstones older than the TTL until ctx ends or
// the handler is cleaned up.
func (h *Handler) sweepTombstones(ctx context.Context) {
	h.sweep(ctx, "tombstones", time.Duration(h.TombstoneTTL),
		(clientdb.Tx).HasTombstonesBefore, (clientdb.Tx).SweepTombstones)
}

// sweepAudit removes audit events older than the retention until ctx ends
// or the handler is cleaned up.
func (h *Handler) sweepAudit(ctx context.Context) {
	h.sweep(ctx, "audit events", time.Duration(h.AuditRetention),
		(clientdb.Tx).HasEventsBefore, (clientdb.Tx).SweepEvents)
}

// sweepOutbox removes hook events that waited longer than the audit
// retention, until ctx ends or the handler is cleaned up: those of a hook
// that was removed from the configuration, or whose receiver never came
// back.
func (h *Handler) sweepOutbox(ctx context.Context) {
	h.sweep(ctx, "hook events", time.Duration(h.AuditRetention),
		(clientdb.Tx).HasOutboxBefore, (clientdb.Tx).SweepOutbox)
}

// sweep removes what is older than keep, every tenth of keep, until ctx
// ends or the handler is cleaned up. It checks with a read first, so that
// a sweep with nothing to do costs no commit, and then removes in bounded
// batches through the same group commit as registrations, so requests
// never wait for a whole sweep.
func (h *Handler) sweep(ctx context.Context, what string, keep time.Duration,
	has func(clientdb.Tx, time.Time) bool,
	remove func(clientdb.Tx, time.Time, int) (int, error)) {
	h.periodically(ctx, sweepInterval(keep), h.lead("sweep "+what, func(ctx context.Context) {
		cutoff := h.now().Add(-keep)
		if !h.due(func(tx clientdb.Tx) bool { return has(tx, cutoff) }) {
			return
		}
		for {
			n := 0
			err := h.store.Update(ctx, func(tx clientdb.Tx) error {
				var err error
				n, err = remove(tx, cutoff, sweepBatch)
				return err
			})
			if err != nil {
				if ctx.Err() == nil {
					h.logger.Error("sweeping "+what, zap.Error(err))
				}
				return
			}
			if n > 0 {
				h.logger.Debug(what+" swept", zap.Int("count", n))
			}
			if n < sweepBatch {
				return
			}
		}
	}))
}

// expireUnused deletes clients unused for ExpireUnused, leaving tombstones,
// until ctx ends or the handler is cleaned up. It reads the store in
// bounded batches and deletes in one transaction per batch.
func (h *Handler) expireUnused(ctx context.Context) {
	idle := time.Duration(h.ExpireUnused)
	h.periodically(ctx, sweepInterval(idle), func(ctx context.Context) {
		// Use seen but not yet written counts: write it first.
		h.writeUsage(ctx)
		h.lead("expire unused clients", func(ctx context.Context) {
			h.expireBatches(ctx, idle)
		})(ctx)
	})
}

// expireBatches is one pass of expireUnused over the whole store.
func (h *Handler) expireBatches(ctx context.Context, idle time.Duration) {
	now := h.now()
	cutoff := now.Add(-idle)
	after := ""
	for {
		var ids []string
		err := h.store.View(func(tx clientdb.Tx) error {
			var err error
			ids, after, err = tx.Unused(cutoff, after, expireBatch)
			return err
		})
		if err == nil && len(ids) > 0 {
			var expired []string
			err = h.store.Update(ctx, func(tx clientdb.Tx) error {
				// One at a time, to know which were still unused.
				expired = expired[:0]
				for _, id := range ids {
					n, err := tx.ExpireUnused([]string{id}, cutoff, now)
					if err != nil {
						return err
					}
					if n == 0 {
						continue
					}
					expired = append(expired, id)
					// ExpireUnused appended the audit event.
					ev := &clientdb.Event{Time: now.Unix(), Op: clientdb.OpExpire,
						Actor: clientdb.ActorSystem, ClientID: id}
					if err := enqueueEvent(tx, h.hooks, ev, nil, ""); err != nil {
						return err
					}
				}
				return nil
			})
			if err == nil {
				for _, id := range expired {
					h.logger.Info("client expired",
						zap.String("operation", clientdb.OpExpire),
						zap.String("outcome", "ok"),
						zap.String("client_id", id),
						zap.Duration("unused_for", idle))
				}
			}
		}
		if err != nil {
			if ctx.Err() == nil {
				h.logger.Error("expiring unused clients", zap.Error(err))
			}
			return
		}
		if after == "" {
			return
		}
	}
}

// due reports whether a sweep has work, reading without writing: a sweep
// that finds nothing to remove then costs no commit.
func (h *Handler) due(check func(clientdb.Tx) bool) bool {
	found := false
	err := h.store.View(func(tx clientdb.Tx) error {
		found = check(tx)
		return nil
	})
	return err == nil && found
}

// lead wraps one pass of background work that the whole fleet sharing the
// store needs done once, not by every instance: the pass runs only when no
// other process is running the same job (see clientdb.Store.Lead). Others
// skip it; whoever holds the lock next time does it.
func (h *Handler) lead(job string, fn func(context.Context)) func(context.Context) {
	return func(ctx context.Context) {
		_, err := h.store.Lead(ctx, job, func(ctx context.Context) error {
			fn(ctx)
			return nil
		})
		if err != nil && ctx.Err() == nil && !errors.Is(err, clientdb.ErrUnavailable) {
			h.logger.Error("taking the lock of background work",
				zap.String("job", job), zap.Error(err))
		}
	}
}
