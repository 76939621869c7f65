package dcr

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

func TestUsageTouchTake(t *testing.T) {
	var u usageTracker
	if got := u.take(); len(got) != 0 {
		t.Errorf("take on a new tracker = %v", got)
	}

	at := func(s int) time.Time { return mgEpoch.Add(time.Duration(s) * time.Second) }
	u.touch("a", at(1))
	u.touch("b", at(2))
	u.touch("a", at(3))
	want := map[string]int64{"a": at(3).Unix(), "b": at(2).Unix()}
	if got := u.take(); !maps.Equal(got, want) {
		t.Errorf("take = %v, want %v", got, want)
	}
	if got := u.take(); len(got) != 0 {
		t.Errorf("second take = %v, want nothing", got)
	}

	// Use recorded after a take is kept for the next one.
	u.touch("c", at(4))
	if got := u.take(); !maps.Equal(got, map[string]int64{"c": at(4).Unix()}) {
		t.Errorf("take after a take = %v", got)
	}
}

// TestUsageBound checks that the clients waiting to be written stay within
// maxPendingUsage, that those already waiting still move forward, and that
// a take makes room again.
func TestUsageBound(t *testing.T) {
	var u usageTracker
	for i := range maxPendingUsage + 10 {
		u.touch(fmt.Sprint(i), mgEpoch)
	}
	later := mgEpoch.Add(time.Minute)
	u.touch("0", later)
	u.touch("overflow", later)

	got := u.take()
	if len(got) != maxPendingUsage {
		t.Errorf("%d clients pending, want %d", len(got), maxPendingUsage)
	}
	if got["0"] != later.Unix() {
		t.Errorf("a pending client at the bound was not updated: %d", got["0"])
	}
	if _, ok := got["overflow"]; ok {
		t.Error("a client beyond the bound was recorded")
	}

	u.touch("overflow", later)
	if got := u.take(); got["overflow"] != later.Unix() {
		t.Errorf("after a take: %v", got)
	}
}

// TestWriteUsage checks that recorded use moves last_used_at forward only,
// and never touches a deleted or unknown client.
func TestWriteUsage(t *testing.T) {
	h, _, logs := mgHandler(t, nil)
	const (
		t0 = int64(1_800_000_000)
		t1 = t0 + 60
	)
	stored := []*clientdb.Client{
		{ID: "fresh", IssuedAt: t0 - 600},
		{ID: "older", IssuedAt: t0 - 600, LastUsedAt: t0},
		{ID: "newer", IssuedAt: t0 - 600, LastUsedAt: t1 + 60},
		{ID: "same", IssuedAt: t0 - 600, LastUsedAt: t1},
		{ID: "gone", IssuedAt: t0 - 600},
	}
	err := h.store.Update(context.Background(), func(tx clientdb.Tx) error {
		for _, c := range stored {
			if err := tx.Create(c); err != nil {
				return err
			}
		}
		return tx.Delete("gone", clientdb.ReasonDeleted, time.Unix(t0, 0))
	})
	if err != nil {
		t.Fatal(err)
	}

	for _, id := range []string{"fresh", "older", "newer", "same", "gone", "unknown"} {
		h.usage.touch(id, time.Unix(t1, 0))
	}
	h.writeUsage(context.Background())

	for id, want := range map[string]int64{
		"fresh": t1,
		"older": t1,
		"newer": t1 + 60,
		"same":  t1,
	} {
		if got := mgStored(t, h, id).LastUsedAt; got != want {
			t.Errorf("%s: LastUsedAt %d, want %d", id, got, want)
		}
	}
	if _, err := h.store.Client("gone"); !errors.Is(err, clientdb.ErrDeleted) {
		t.Errorf("gone: %v, want ErrDeleted", err)
	}
	if _, err := h.store.Client("unknown"); !errors.Is(err, clientdb.ErrNotFound) {
		t.Errorf("unknown: %v, want ErrNotFound", err)
	}
	if got := h.usage.take(); len(got) != 0 {
		t.Errorf("still pending after the write: %v", got)
	}
	if n := logs.FilterLevelExact(zapcore.ErrorLevel).Len(); n != 0 {
		t.Errorf("%d errors logged: %v", n, logs.All())
	}

	// Nothing pending: no write, so a broken store logs nothing.
	mgBreakStore(t, h)
	h.writeUsage(context.Background())
	if n := logs.FilterLevelExact(zapcore.ErrorLevel).Len(); n != 0 {
		t.Errorf("%d errors logged for an empty write", n)
	}

	// A failed write is logged.
	h.usage.touch("fresh", time.Unix(t1+1, 0))
	h.writeUsage(context.Background())
	if n := logs.FilterLevelExact(zapcore.ErrorLevel).Len(); n != 1 {
		t.Errorf("%d errors logged for a failed write, want 1", n)
	}
}

// TestUsageAfterEnforcement follows a client's use from an admitted token
// request to its stored last_used_at.
func TestUsageAfterEnforcement(t *testing.T) {
	h, clock, _ := enHandler(t, nil)
	clock.advance(time.Hour)
	r := enForm(enToken, enBasic("web", enSecret), "grant_type=refresh_token&refresh_token=r")
	if _, seen := enServe(t, h, r); !seen.called {
		t.Fatal("token request not admitted")
	}
	// A refused request is not use.
	r = enForm(enToken, "", "grant_type=authorization_code&client_id=post&client_secret=x")
	if w, _ := enServe(t, h, r); w.Code != http.StatusUnauthorized {
		t.Fatalf("wrong secret: %d", w.Code)
	}
	// Nor is a pass-through of an unknown client.
	r = enForm(enToken, "", "grant_type=authorization_code&client_id=nobody")
	enServe(t, h, r)

	h.writeUsage(context.Background())
	if got, want := mgStored(t, h, "web").LastUsedAt, clock.now().Unix(); got != want {
		t.Errorf("web: LastUsedAt %d, want %d", got, want)
	}
	if got := mgStored(t, h, "post").LastUsedAt; got != 0 {
		t.Errorf("post: LastUsedAt %d after a refused request", got)
	}
}

// TestFlushUsageOnStop checks that use recorded before the handler stops
// is written, whether its context ends or it is cleaned up.
func TestFlushUsageOnStop(t *testing.T) {
	for _, viaCleanup := range []bool{false, true} {
		t.Run(fmt.Sprintf("cleanup=%v", viaCleanup), func(t *testing.T) {
			h, _, _ := mgHandler(t, nil)
			if err := h.store.Create(context.Background(),
				&clientdb.Client{ID: "c", IssuedAt: mgEpoch.Unix()}); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan struct{})
			go func() {
				defer close(done)
				h.flushUsage(ctx)
			}()

			// The first write is an interval away: this one waits.
			h.usage.touch("c", mgEpoch.Add(time.Minute))
			if viaCleanup {
				if err := h.Cleanup(); err != nil {
					t.Fatal(err)
				}
			} else {
				cancel()
			}
			select {
			case <-done:
			case <-time.After(swWait):
				t.Fatalf("flushUsage still running %s after the stop", swWait)
			}
			got := mgStored(t, h, "c").LastUsedAt
			if want := mgEpoch.Add(time.Minute).Unix(); got != want {
				t.Errorf("LastUsedAt %d, want %d", got, want)
			}
		})
	}
}
