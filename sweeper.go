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
