package clientdb

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
)

// TestWriterOnCommit checks that the commit hook runs after a successful
// commit and before Update returns, and not for a change that failed.
func TestWriterOnCommit(t *testing.T) {
	w, _ := newWriter(t)
	var calls atomic.Int32
	w.OnCommit(func() { calls.Add(1) })
	ctx := context.Background()

	err := w.Update(ctx, func(tx Tx) error { return tx.Create(testClient("a")) })
	if err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("after a commit: %d calls, want 1 before Update returned", n)
	}

	boom := errors.New("boom")
	if err := w.Update(ctx, func(Tx) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("Update = %v, want %v", err, boom)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("after a failed change: %d calls, want still 1", n)
	}
}
