package dcr

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

// Timing of hook delivery.
const (
	// hookPoll is how often a queue is looked at when no commit of this
	// process woke the dispatcher: other processes sharing a PostgreSQL
	// store queue events too, and a failed attempt waits for its retry.
	hookPoll = time.Second

	// hookBackoffMin and hookBackoffMax bound the wait after a failed
	// attempt, which doubles with every failure in a row.
	hookBackoffMin = time.Second
	hookBackoffMax = 5 * time.Minute

	// hookAttemptMax bounds one attempt, whatever the hook's own
	// timeout.
	hookAttemptMax = time.Minute

	// hookBatch is how many waiting events a pass reads at once.
	hookBatch = 32
)

// deliverHooks delivers the events waiting in the handler's hook queues
// until the handler stops, waking after each commit of this process and
// every hookPoll.
func (h *Handler) deliverHooks(ctx context.Context) {
	q := &h.store.hooks
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.stop:
			return
		case <-q.wake:
		case <-timer.C:
		}
		backlog := make(map[string]time.Duration)
		for _, hk := range h.hooks {
			age := h.deliverQueue(ctx, hk)
			backlog[hk.name] = max(backlog[hk.name], age)
		}
		for name, age := range backlog {
			metrics.hookBacklogAge(name, age)
		}
		timer.Reset(hookPoll)
	}
}

// deliverQueue makes one pass over a hook's queue: it delivers waiting
// events in order, removing each from the queue once the hook took it,
// until the queue is empty or an attempt fails. A pass runs on one
// handler of this process at a time and, on a PostgreSQL store, on one
// process of the fleet. It returns the age of the oldest event left
// waiting, 0 when none is.
func (h *Handler) deliverQueue(ctx context.Context, hk *hook) time.Duration {
	st := h.store.hooks.state(hk.queue)
	if !st.pass.TryLock() {
		return h.backlog(hk)
	}
	defer st.pass.Unlock()
	if time.Now().Before(st.retryAt) {
		return h.backlog(hk)
	}

	// The pass reads the queue anyway; what it leaves is the backlog.
	left := time.Duration(-1)
	ran, err := h.store.Lead(ctx, "hook "+hk.queue, func(ctx context.Context) error {
		for ctx.Err() == nil {
			var pending []clientdb.OutboxEntry
			err := h.store.View(func(tx clientdb.Tx) error {
				var err error
				pending, err = tx.Pending(hk.queue, hookBatch)
				return err
			})
			if err != nil {
				return err
			}
			if len(pending) == 0 {
				left = 0
				return nil
			}
			// Delivered events leave the queue together, in one
			// commit after the batch, rather than one commit each.
			var done []uint64
			more := true
			for _, e := range pending {
				if more = h.deliverEntry(ctx, hk, st, e); !more {
					left = time.Since(time.Unix(e.Time, 0))
					break
				}
				done = append(done, e.Seq)
			}
			if !h.ack(ctx, hk, done) || !more {
				return nil
			}
		}
		return nil
	})
	if err != nil && ctx.Err() == nil && !errors.Is(err, clientdb.ErrUnavailable) {
		h.logger.Error("delivering hook events",
			zap.String("hook", hk.name), zap.Error(err))
	}
	if !ran || left < 0 {
		// Another process delivered, or the pass stopped early.
		return h.backlog(hk)
	}
	return left
}

// backlog returns the age of the oldest event waiting in a hook's queue,
// or 0 when none waits or the store cannot be read.
func (h *Handler) backlog(hk *hook) time.Duration {
	var oldest []clientdb.OutboxEntry
	err := h.store.View(func(tx clientdb.Tx) error {
		var err error
		oldest, err = tx.Pending(hk.queue, 1)
		return err
	})
	if err != nil || len(oldest) == 0 {
		return 0
	}
	return time.Since(time.Unix(oldest[0].Time, 0))
}

// deliverEntry offers one waiting event to the hook. It reports whether it
// was delivered, or is to be dropped, and the pass may go on.
func (h *Handler) deliverEntry(ctx context.Context, hk *hook, st *queueState,
	e clientdb.OutboxEntry) bool {
	var rec outboxRecord
	if err := json.Unmarshal(e.Payload, &rec); err != nil || rec.Event == nil {
		// Nothing this build wrote; keeping it would stop the queue
		// for good.
		h.logger.Error("dropping unreadable hook event",
			zap.String("hook", hk.name), zap.Uint64("seq", e.Seq), zap.Error(err))
		metrics.hookDelivery(hk.name, "dropped")
		return true
	}
	ev := rec.Event
	if rec.Sealed != nil && hk.key != nil {
		plain, err := unseal(hk.gcm(), rec.Sealed, sealData(hk.queue, ev.ID))
		if err != nil {
			h.logger.Warn("delivering created event without its client secret",
				zap.String("hook", hk.name), zap.String("event_id", ev.ID),
				zap.String("client_id", ev.ClientID), zap.Error(err))
		}
		ev.ClientSecret = string(plain)
	}

	actx, cancel := context.WithTimeout(ctx, hookAttemptMax)
	err := hk.impl.Deliver(actx, ev)
	cancel()
	if err != nil && ctx.Err() != nil {
		// The handler is stopping: not the receiver's failure, and no
		// reason for the next handler to wait.
		return false
	}
	if err != nil {
		st.failures++
		wait := hookBackoff(st.failures)
		st.retryAt = time.Now().Add(wait)
		metrics.hookDelivery(hk.name, "failed")
		h.logger.Warn("hook delivery failed; retrying later",
			zap.String("hook", hk.name), zap.String("event_id", ev.ID),
			zap.String("event", ev.Type), zap.String("client_id", ev.ClientID),
			zap.Int("attempt", st.failures), zap.Duration("retry_in", wait),
			zap.Error(err))
		return false
	}
	if st.failures > 0 {
		h.logger.Info("hook delivery recovered",
			zap.String("hook", hk.name), zap.Int("failed_attempts", st.failures))
	}
	st.failures = 0
	metrics.hookDelivery(hk.name, "delivered")
	return true
}

// ack removes delivered events from the queue, in one commit. If that
// fails they are delivered again later; receivers tell a repeat by its
// ID.
func (h *Handler) ack(ctx context.Context, hk *hook, seqs []uint64) bool {
	if len(seqs) == 0 {
		return true
	}
	// Events delivered as the handler stops are removed still, so that
	// the next start does not repeat them.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeWait)
	defer cancel()
	err := h.store.Update(ctx, func(tx clientdb.Tx) error {
		for _, seq := range seqs {
			if err := tx.Ack(hk.queue, seq); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, clientdb.ErrUnavailable) {
		h.logger.Error("removing delivered hook events from their queue",
			zap.String("hook", hk.name), zap.Int("events", len(seqs)), zap.Error(err))
	}
	return err == nil
}

// hookBackoff is the wait after the given number of failed attempts in a
// row: hookBackoffMin doubled for each failure after the first, at most
// hookBackoffMax, less up to a fifth at random so that hooks failing
// together do not retry together.
func hookBackoff(failures int) time.Duration {
	wait := hookBackoffMax
	if failures < 20 {
		wait = min(hookBackoffMin<<(failures-1), hookBackoffMax)
	}
	return wait - rand.N(wait/5+1)
}

// hookQueues is the delivery state of the hook queues of one store, kept
// with the store so that it outlives a config reload: a pass over a queue
// runs on one handler at a time, and a failing receiver keeps its
// back-off when a new config takes over.
type hookQueues struct {
	mu     sync.Mutex
	queues map[string]*queueState

	// wake is signalled after a commit that may have queued events.
	wake chan struct{}

	// hooks are the hooks of the handler that last provisioned with
	// the store, for changes that come through no handler, such as
	// the admin API's.
	hooks []*hook
}

// queueState is the delivery state of one queue.
type queueState struct {
	// pass is held by whoever delivers from the queue.
	pass sync.Mutex

	// failures counts the failed attempts since the last delivery;
	// retryAt is when the next attempt may be made.
	failures int
	retryAt  time.Time
}

// state returns the delivery state of the named queue.
func (q *hookQueues) state(queue string) *queueState {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.queues == nil {
		q.queues = make(map[string]*queueState)
	}
	st := q.queues[queue]
	if st == nil {
		st = new(queueState)
		q.queues[queue] = st
	}
	return st
}

// setHooks records the hooks of the handler provisioned last.
func (q *hookQueues) setHooks(hooks []*hook) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.hooks = hooks
}

// current returns the hooks of the handler provisioned last.
func (q *hookQueues) current() []*hook {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.hooks
}

// signal wakes a waiting dispatcher, if any, without blocking.
func (q *hookQueues) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}
