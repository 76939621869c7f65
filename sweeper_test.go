package dcr

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/caddy-dcr/caddy-dcr/clientdb"

	"github.com/caddyserver/caddy/v2"
)

// swWait bounds how long a test waits for the sweeper. The sweeper ticks
// every second at the shortest, so this leaves room for a loaded machine;
// it is a deadline against hangs, not a performance limit.
const swWait = 30 * time.Second

func TestSweepInterval(t *testing.T) {
	cases := []struct {
		ttl, want time.Duration
	}{
		{0, time.Second},
		{time.Second, time.Second},
		{10 * time.Second, time.Second},
		{20 * time.Second, 2 * time.Second},
		{time.Hour, 6 * time.Minute},
		{10 * time.Hour, time.Hour},
		{defaultTombstoneTTL, time.Hour},
		{-time.Hour, time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.ttl.String(), func(t *testing.T) {
			if got := sweepInterval(tc.ttl); got != tc.want {
				t.Errorf("sweepInterval(%s) = %s, want %s", tc.ttl, got, tc.want)
			}
		})
	}
}

// swTombstones creates a client for each time in deleted and deletes it
// at that time, returning the IDs. live clients are created and kept.
func swTombstones(t *testing.T, h *Handler, prefix string, deleted []time.Time) []string {
	t.Helper()
	ids := make([]string, len(deleted))
	err := h.store.Update(context.Background(), func(tx clientdb.Tx) error {
		for i, at := range deleted {
			ids[i] = fmt.Sprintf("%s-%04d", prefix, i)
			c := &clientdb.Client{ID: ids[i], IssuedAt: mgEpoch.Unix() - 60}
			if err := tx.Create(c); err != nil {
				return err
			}
			if err := tx.Delete(ids[i], clientdb.ReasonDeleted, at); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("creating tombstones: %v", err)
	}
	return ids
}

// swGone returns how many of the IDs no longer have a tombstone.
func swGone(t *testing.T, h *Handler, ids []string) int {
	t.Helper()
	n := 0
	err := h.store.db.View(func(tx clientdb.Tx) error {
		for _, id := range ids {
			_, err := tx.Tombstone(id)
			switch {
			case errors.Is(err, clientdb.ErrNotFound):
				n++
			case err != nil:
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reading tombstones: %v", err)
	}
	return n
}

// swStart runs the sweeper and returns a channel closed when it returns.
// The test's cleanup stops it before the store goes away.
func swStart(t *testing.T, h *Handler, ctx context.Context) <-chan struct{} {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.sweepTombstones(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return done
}

// swUntil polls cond until it holds or the deadline passes.
func swUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(swWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s", what, swWait)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSweepTombstones checks that the sweeper removes the tombstones older
// than the TTL by the handler's clock, and only those.
func TestSweepTombstones(t *testing.T) {
	h, clock, logs := mgHandler(t, func(h *Handler) {
		h.TombstoneTTL = caddy.Duration(time.Second)
	})

	// By the clock, old was deleted 3s ago and fresh 0s ago.
	old := swTombstones(t, h, "old", []time.Time{mgEpoch, mgEpoch.Add(time.Second)})
	fresh := swTombstones(t, h, "fresh", []time.Time{mgEpoch.Add(3 * time.Second)})
	live := &clientdb.Client{ID: "live", IssuedAt: mgEpoch.Unix()}
	if err := h.store.Create(context.Background(), live); err != nil {
		t.Fatal(err)
	}
	clock.advance(3 * time.Second)

	swStart(t, h, context.Background())
	swUntil(t, "old tombstones swept", func() bool {
		return swGone(t, h, old) == len(old)
	})

	for _, id := range old {
		if _, err := h.store.Client(id); !errors.Is(err, clientdb.ErrNotFound) {
			t.Errorf("Client(%s) after the sweep: %v, want ErrNotFound", id, err)
		}
	}
	// The fresh tombstone went through the same sweeps.
	if n := swGone(t, h, fresh); n != 0 {
		t.Errorf("fresh tombstone swept")
	}
	if _, err := h.store.Client(fresh[0]); !errors.Is(err, clientdb.ErrDeleted) {
		t.Errorf("Client(%s): %v, want ErrDeleted", fresh[0], err)
	}
	if _, err := h.store.Client("live"); err != nil {
		t.Errorf("live client: %v", err)
	}

	// Once the clock passes its TTL, the fresh one goes too.
	clock.advance(2 * time.Second)
	swUntil(t, "fresh tombstone swept", func() bool {
		return swGone(t, h, fresh) == 1
	})
	if n := logs.FilterLevelExact(zapcore.ErrorLevel).Len(); n != 0 {
		t.Errorf("%d errors logged: %v", n, logs.All())
	}
}

// TestSweepManyTombstones checks that one sweep removes a backlog larger
// than a batch, in several transactions, rather than one batch per tick.
func TestSweepManyTombstones(t *testing.T) {
	h, clock, _ := mgHandler(t, func(h *Handler) {
		h.TombstoneTTL = caddy.Duration(time.Second)
	})
	times := make([]time.Time, 2*sweepBatch+1)
	for i := range times {
		times[i] = mgEpoch.Add(-time.Duration(i) * time.Millisecond)
	}
	ids := swTombstones(t, h, "c", times)
	clock.advance(2 * time.Second)

	// The sweeper reads the clock once per tick; from the second tick
	// on, it waits here, so whatever is swept was swept by the first.
	var mu sync.Mutex
	ticks := 0
	release := make(chan struct{})
	h.now = func() time.Time {
		mu.Lock()
		ticks++
		n := ticks
		mu.Unlock()
		if n > 1 {
			<-release
		}
		return clock.now()
	}

	swStart(t, h, context.Background())
	t.Cleanup(func() { close(release) }) // runs before swStart's
	swUntil(t, "all tombstones swept in one tick", func() bool {
		return swGone(t, h, ids) == len(ids)
	})
}

// TestSweepStops checks that the sweeper returns when its context ends or
// the handler is cleaned up, so that it never outlives its config.
func TestSweepStops(t *testing.T) {
	cases := []struct {
		name string
		stop func(*testing.T, *Handler, context.CancelFunc)
	}{
		{"context cancelled", func(_ *testing.T, _ *Handler, cancel context.CancelFunc) {
			cancel()
		}},
		{"stop closed", func(_ *testing.T, h *Handler, _ context.CancelFunc) {
			close(h.stop)
		}},
		{"handler cleaned up", func(t *testing.T, h *Handler, _ context.CancelFunc) {
			if err := h.Cleanup(); err != nil {
				t.Errorf("Cleanup: %v", err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, _, _ := mgHandler(t, nil)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := swStart(t, h, ctx)

			tc.stop(t, h, cancel)
			select {
			case <-done:
			case <-time.After(swWait):
				t.Fatalf("sweeper still running %s after the stop", swWait)
			}

			// The test's Cleanup closes h.stop once more unless the
			// handler was cleaned up; the sweeper has returned, so
			// replacing it races with nothing.
			if !h.released {
				select {
				case <-h.stop:
					h.stop = make(chan struct{})
				default:
				}
			}
		})
	}

	t.Run("context already cancelled", func(t *testing.T) {
		h, _, _ := mgHandler(t, nil)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		done := make(chan struct{})
		go func() {
			defer close(done)
			h.sweepTombstones(ctx)
		}()
		select {
		case <-done:
		case <-time.After(swWait):
			t.Fatal("sweeper started on a cancelled context")
		}
	})
}

// TestSweepSoonAfterStart shows that the first sweep waits a whole
// interval, an hour with the default TTL. Caddy starts a new sweeper on
// every config reload, so a server reloaded more often than hourly never
// removes a tombstone.
func TestSweepSoonAfterStart(t *testing.T) {
	h, clock, _ := mgHandler(t, nil)
	ids := swTombstones(t, h, "old", []time.Time{mgEpoch})
	clock.advance(defaultTombstoneTTL + time.Hour)

	swStart(t, h, context.Background())
	swUntil(t, "expired tombstone swept soon after start", func() bool {
		return swGone(t, h, ids) == len(ids)
	})
}

// swRun runs fn, one of the handler's background loops, and returns a
// channel closed when it returns. The test's cleanup stops it before the
// store goes away.
func swRun(t *testing.T, fn func(context.Context)) <-chan struct{} {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return done
}

// swDone waits for a background loop to return.
func swDone(t *testing.T, what string, done <-chan struct{}) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(swWait):
		t.Fatalf("%s: still running %s after the stop", what, swWait)
	}
}

// swCounter counts the runs of a periodic function and lets a test wait
// for a number of them.
type swCounter struct {
	mu sync.Mutex
	n  int
}

func (c *swCounter) inc() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
}

func (c *swCounter) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// TestPeriodically checks that background work runs at once, then on
// every tick, and stops with its context or the handler.
func TestPeriodically(t *testing.T) {
	t.Run("at once", func(t *testing.T) {
		h, _, _ := mgHandler(t, nil)
		var runs swCounter
		ran := make(chan struct{}, 1)
		swRun(t, func(ctx context.Context) {
			h.periodically(ctx, time.Hour, func(context.Context) {
				runs.inc()
				ran <- struct{}{}
			})
		})
		select {
		case <-ran:
		case <-time.After(swWait):
			t.Fatalf("no run within %s of the start, with an hourly interval", swWait)
		}
		// The next run is an hour away.
		time.Sleep(50 * time.Millisecond)
		if n := runs.get(); n != 1 {
			t.Errorf("%d runs, want 1", n)
		}
	})

	t.Run("every tick", func(t *testing.T) {
		h, _, _ := mgHandler(t, nil)
		var runs swCounter
		swRun(t, func(ctx context.Context) {
			h.periodically(ctx, 10*time.Millisecond, func(context.Context) {
				runs.inc()
			})
		})
		swUntil(t, "three runs", func() bool { return runs.get() >= 3 })
	})

	t.Run("fn gets the context", func(t *testing.T) {
		h, _, _ := mgHandler(t, nil)
		ctx, cancel := context.WithCancel(context.Background())
		var runs swCounter
		done := make(chan struct{})
		go func() {
			defer close(done)
			h.periodically(ctx, time.Hour, func(fctx context.Context) {
				runs.inc()
				// Ending the context during a run ends the loop
				// without waiting for the tick.
				cancel()
				if fctx.Err() == nil {
					t.Error("fn's context did not end with the loop's")
				}
			})
		}()
		swDone(t, "cancelled during a run", done)
		if n := runs.get(); n != 1 {
			t.Errorf("%d runs, want 1", n)
		}
	})

	stops := []struct {
		name string
		stop func(*testing.T, *Handler, context.CancelFunc)
	}{
		{"context cancelled", func(_ *testing.T, _ *Handler, cancel context.CancelFunc) {
			cancel()
		}},
		{"handler cleaned up", func(t *testing.T, h *Handler, _ context.CancelFunc) {
			if err := h.Cleanup(); err != nil {
				t.Errorf("Cleanup: %v", err)
			}
		}},
	}
	for _, tc := range stops {
		t.Run("stops: "+tc.name, func(t *testing.T) {
			h, _, _ := mgHandler(t, nil)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var runs swCounter
			done := make(chan struct{})
			go func() {
				defer close(done)
				h.periodically(ctx, time.Hour, func(context.Context) { runs.inc() })
			}()
			swUntil(t, "first run", func() bool { return runs.get() == 1 })
			tc.stop(t, h, cancel)
			swDone(t, tc.name, done)
			if n := runs.get(); n != 1 {
				t.Errorf("%d runs, want 1", n)
			}
		})
	}

	for _, tc := range stops {
		t.Run("never starts: "+tc.name, func(t *testing.T) {
			h, _, _ := mgHandler(t, nil)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			tc.stop(t, h, cancel)
			var runs swCounter
			done := make(chan struct{})
			go func() {
				defer close(done)
				h.periodically(ctx, 10*time.Millisecond, func(context.Context) { runs.inc() })
			}()
			swDone(t, tc.name, done)
			if n := runs.get(); n != 0 {
				t.Errorf("%d runs after the stop", n)
			}
		})
	}
}

// swClients stores clients issued and last used at the given offsets from
// mgEpoch; a used offset of 0 means never used.
func swClients(t *testing.T, h *Handler, clients map[string][2]time.Duration) {
	t.Helper()
	err := h.store.Update(context.Background(), func(tx clientdb.Tx) error {
		for id, at := range clients {
			c := &clientdb.Client{ID: id, IssuedAt: mgEpoch.Add(at[0]).Unix()}
			if at[1] != 0 {
				c.LastUsedAt = mgEpoch.Add(at[1]).Unix()
			}
			if err := tx.Create(c); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("storing clients: %v", err)
	}
}

// swExpired reports whether client id has expired, failing the test if it
// was removed for another reason.
func swExpired(t *testing.T, h *Handler, id string) (*clientdb.Tombstone, bool) {
	t.Helper()
	var ts *clientdb.Tombstone
	err := h.store.View(func(tx clientdb.Tx) error {
		var err error
		ts, err = tx.Tombstone(id)
		return err
	})
	switch {
	case errors.Is(err, clientdb.ErrNotFound):
		return nil, false
	case err != nil:
		t.Fatalf("tombstone of %s: %v", id, err)
	case ts.Reason != clientdb.ReasonExpired:
		t.Fatalf("%s removed with reason %q", id, ts.Reason)
	}
	return ts, true
}

// TestExpireUnusedSweeper checks that clients unused for expire_unused by
// the handler's clock are deleted, with tombstones that say expired, and
// that use and recent registration keep a client.
func TestExpireUnusedSweeper(t *testing.T) {
	h, clock, logs := mgHandler(t, func(h *Handler) {
		h.ExpireUnused = caddy.Duration(10 * time.Second)
	})
	s := time.Second
	swClients(t, h, map[string][2]time.Duration{
		"idle":     {-20 * s, 0},       // never used, registered 20s ago
		"used":     {-20 * s, -5 * s},  // used 5s ago
		"new":      {0, 0},             // registered just now
		"boundary": {-20 * s, -10 * s}, // used exactly 10s ago
	})
	swTombstones(t, h, "gone", []time.Time{mgEpoch.Add(-time.Hour)})

	swRun(t, h.expireUnused)
	swUntil(t, "idle client expired", func() bool {
		_, ok := swExpired(t, h, "idle")
		return ok
	})
	ts, _ := swExpired(t, h, "idle")
	if ts.DeletedAt != mgEpoch.Unix() || ts.IssuedAt != mgEpoch.Add(-20*s).Unix() {
		t.Errorf("tombstone %+v", ts)
	}
	for _, id := range []string{"used", "new", "boundary"} {
		if _, err := h.store.Client(id); err != nil {
			t.Errorf("%s: %v, want it live", id, err)
		}
	}

	// 6s later, the client used 5s before the start is idle for 11s.
	clock.advance(6 * s)
	swUntil(t, "used client expired", func() bool {
		_, ok := swExpired(t, h, "used")
		return ok
	})
	if _, err := h.store.Client("new"); err != nil {
		t.Errorf("new: %v, want it live", err)
	}
	if n := logs.FilterLevelExact(zapcore.ErrorLevel).Len(); n != 0 {
		t.Errorf("%d errors logged: %v", n, logs.All())
	}
}

// TestExpireUnusedBacklog checks that one run expires a backlog larger
// than a batch, rather than one batch per tick.
func TestExpireUnusedBacklog(t *testing.T) {
	h, clock, _ := mgHandler(t, func(h *Handler) {
		h.ExpireUnused = caddy.Duration(time.Minute)
	})
	clients := make(map[string][2]time.Duration)
	ids := make([]string, 2*expireBatch+1)
	for i := range ids {
		ids[i] = fmt.Sprintf("c-%04d", i)
		clients[ids[i]] = [2]time.Duration{-time.Hour, 0}
	}
	swClients(t, h, clients)

	// The loop reads the clock once per run; from the second run on, it
	// waits here, so whatever expires, expires in the first.
	var mu sync.Mutex
	runs := 0
	release := make(chan struct{})
	h.now = func() time.Time {
		mu.Lock()
		runs++
		n := runs
		mu.Unlock()
		if n > 1 {
			<-release
		}
		return clock.now()
	}
	swRun(t, h.expireUnused)
	t.Cleanup(func() { close(release) }) // runs before swRun's
	swUntil(t, "backlog expired in one run", func() bool {
		n := 0
		err := h.store.View(func(tx clientdb.Tx) error {
			n = tx.Count()
			return nil
		})
		return err == nil && n == 0
	})
	for _, id := range []string{ids[0], ids[expireBatch], ids[len(ids)-1]} {
		if _, ok := swExpired(t, h, id); !ok {
			t.Errorf("%s has no tombstone", id)
		}
	}
}
