package dcr

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

// sweepBatch bounds the tombstones removed in one transaction, so that a
// sweep after a long pause holds the store's lock only briefly at a time.
const sweepBatch = 1000

// sweepInterval returns how often tombstones are swept: a tenth of their
// lifetime, between one second and one hour, so that none outlives its
// TTL by more than a tenth.
func sweepInterval(ttl time.Duration) time.Duration {
	return min(max(ttl/10, time.Second), time.Hour)
}

// sweepTombstones removes tombstones older than the TTL until ctx ends or
// the handler is cleaned up. Its writes go through the same group commit
// as registrations, in bounded batches, so requests never wait for a
// whole sweep.
func (h *Handler) sweepTombstones(ctx context.Context) {
	ttl := time.Duration(h.TombstoneTTL)
	ticker := time.NewTicker(sweepInterval(ttl))
	defer ticker.Stop()

	// Sweep first, then wait: every config reload starts a new sweeper,
	// and one that waited first would never sweep on a server reloaded
	// more often than its interval.
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.stop:
			return
		default:
		}

		cutoff := h.now().Add(-ttl)
		for {
			n := 0
			err := h.store.Update(ctx, func(tx *clientdb.Tx) error {
				var err error
				n, err = tx.SweepTombstones(cutoff, sweepBatch)
				return err
			})
			if err != nil {
				if ctx.Err() == nil {
					h.logger.Error("sweeping tombstones", zap.Error(err))
				}
				break
			}
			if n > 0 {
				h.logger.Debug("tombstones swept", zap.Int("count", n))
			}
			if n < sweepBatch {
				break
			}
		}

		select {
		case <-ctx.Done():
			return
		case <-h.stop:
			return
		case <-ticker.C:
		}
	}
}

// expireBatch bounds the clients examined in one read of the store.
const expireBatch = 1000

// expireUnused deletes clients unused for ExpireUnused, scanning the store
// in bounded batches, until ctx ends or the handler is cleaned up.
func (h *Handler) expireUnused(ctx context.Context) {
	idle := time.Duration(h.ExpireUnused)
	ticker := time.NewTicker(sweepInterval(idle))
	defer ticker.Stop()

	for {
		select {
		case <-ctx.Done():
			return
		case <-h.stop:
			return
		case <-ticker.C:
		}

		now := h.now()
		cutoff := now.Add(-idle)
		after := ""
		for {
			var ids []string
			err := h.store.View(func(tx *clientdb.Tx) error {
				var err error
				ids, after, err = tx.Unused(cutoff, after, expireBatch)
				return err
			})
			if err == nil && len(ids) > 0 {
				n := 0
				err = h.store.Update(ctx, func(tx *clientdb.Tx) error {
					var err error
					n, err = tx.ExpireUnused(ids, cutoff, now)
					return err
				})
				if err == nil && n > 0 {
					h.logger.Info("unused clients expired", zap.Int("count", n))
				}
			}
			if err != nil {
				if ctx.Err() == nil {
					h.logger.Error("expiring unused clients", zap.Error(err))
				}
				break
			}
			if after == "" {
				break
			}
		}
	}
}
