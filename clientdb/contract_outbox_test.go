package clientdb

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
)

// The outbox cases of TestContract.

// ctEnqueue enqueues payload to queue at sec, in a transaction of its
// own, and returns the entry's Seq.
func ctEnqueue(t *testing.T, s Store, queue, payload string,
	sec int64) uint64 {
	t.Helper()
	var seq uint64
	ctUpdate(t, s, func(tx Tx) error {
		var err error
		seq, err = tx.Enqueue(queue, []byte(payload), ctAt(sec))
		return err
	})
	return seq
}

// ctPending returns up to limit entries of queue as a read-only
// transaction of r sees them.
func ctPending(t *testing.T, r *Reader, queue string,
	limit int) []OutboxEntry {
	t.Helper()
	var entries []OutboxEntry
	ctView(t, r, func(tx Tx) error {
		var err error
		entries, err = tx.Pending(queue, limit)
		return err
	})
	return entries
}

// ctHasOutbox reports what HasOutboxBefore answers for a cutoff at sec.
func ctHasOutbox(t *testing.T, r *Reader, sec int64) bool {
	t.Helper()
	var has bool
	ctView(t, r, func(tx Tx) error {
		has = tx.HasOutboxBefore(ctAt(sec))
		return nil
	})
	return has
}

// ctSweepOutbox sweeps the outbox in a transaction of its own and
// returns how many entries went.
func ctSweepOutbox(t *testing.T, s Store, sec int64, limit int) int {
	t.Helper()
	var n int
	ctUpdate(t, s, func(tx Tx) error {
		var err error
		n, err = tx.SweepOutbox(ctAt(sec), limit)
		return err
	})
	return n
}

// ctEntry is an entry as the tests write it down.
func ctEntry(seq uint64, sec int64, payload string) OutboxEntry {
	return OutboxEntry{Seq: seq, Time: ctBase + sec, Payload: []byte(payload)}
}

// ctSameEntries reports a queue that holds other entries than want.
func ctSameEntries(t *testing.T, what string, got, want []OutboxEntry) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got %s\nwant %s", what, ctShowEntries(got),
			ctShowEntries(want))
	}
}

// ctShowEntries formats entries for a failure message.
func ctShowEntries(entries []OutboxEntry) string {
	var b strings.Builder
	for _, e := range entries {
		fmt.Fprintf(&b, "{%d %d %q} ", e.Seq, e.Time-ctBase, e.Payload)
	}
	return "[" + strings.TrimSpace(b.String()) + "]"
}

func ctOutboxOrder(t *testing.T, s Store, r *Reader) {
	if got := ctPending(t, r, "hooks", 10); len(got) != 0 {
		t.Errorf("Pending on an empty store = %s", ctShowEntries(got))
	}
	if ctHasOutbox(t, r, 100) {
		t.Error("HasOutboxBefore on an empty store = true")
	}

	var one, two, other uint64
	ctUpdate(t, s, func(tx Tx) error {
		var err error
		if one, err = tx.Enqueue("hooks", []byte("one"), ctAt(0)); err != nil {
			return err
		}
		if other, err = tx.Enqueue("other", []byte("o"), ctAt(1)); err != nil {
			return err
		}
		two, err = tx.Enqueue("hooks", []byte("two"), ctAt(1))
		return err
	})
	three := ctEnqueue(t, s, "hooks", "three", 2)
	if one == 0 || !(one < other && other < two && two < three) {
		t.Fatalf("Seq %d, %d (other queue), %d, %d do not grow",
			one, other, two, three)
	}

	all := []OutboxEntry{
		ctEntry(one, 0, "one"),
		ctEntry(two, 1, "two"),
		ctEntry(three, 2, "three"),
	}
	tests := []struct {
		name  string
		queue string
		limit int
		want  []OutboxEntry
	}{
		{"all", "hooks", 10, all},
		{"exactly all", "hooks", 3, all},
		{"limited", "hooks", 2, all[:2]},
		{"the oldest", "hooks", 1, all[:1]},
		{"limit 0", "hooks", 0, nil},
		{"negative limit", "hooks", -1, nil},
		{"the other queue", "other", 10, []OutboxEntry{ctEntry(other, 1, "o")}},
		{"an unknown queue", "nobody", 10, nil},
		{"a prefix of a queue", "hook", 10, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctSameEntries(t, "Reader",
				ctPending(t, r, tc.queue, tc.limit), tc.want)
			var got []OutboxEntry
			err := s.View(func(tx Tx) error {
				var err error
				got, err = tx.Pending(tc.queue, tc.limit)
				return err
			})
			if err != nil {
				t.Fatalf("Store.View: %v", err)
			}
			ctSameEntries(t, "Store.View", got, tc.want)
		})
	}

	// Pending in a writable transaction sees the transaction's own
	// entries.
	ctUpdate(t, s, func(tx Tx) error {
		seq, err := tx.Enqueue("hooks", []byte("four"), ctAt(3))
		if err != nil {
			return err
		}
		got, err := tx.Pending("hooks", 10)
		if err != nil {
			return err
		}
		want := append(slices.Clone(all), ctEntry(seq, 3, "four"))
		ctSameEntries(t, "Pending in the enqueueing transaction", got, want)
		return nil
	})
}

func ctOutboxPayloads(t *testing.T, s Store, r *Reader) {
	every := make([]byte, 256)
	for i := range every {
		every[i] = byte(i)
	}
	tests := []struct {
		name    string
		payload []byte
	}{
		{"empty", []byte{}},
		{"nil", nil},
		{"not UTF-8", []byte{0xff, 0xfe, 0xc3, 0x28, 0x80}},
		{"nul bytes", []byte("\x00a\x00")},
		{"every byte value", every},
		{"JSON keeps its spacing", []byte(`{ "b":1,  "a" : [2] }`)},
		{"the largest", bytes.Repeat(every, MaxOutboxPayload/len(every))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			queue := "payload " + tc.name
			var seq uint64
			ctUpdate(t, s, func(tx Tx) error {
				// The caller may reuse its buffer once Enqueue
				// returns, before the commit.
				buf := bytes.Clone(tc.payload)
				var err error
				seq, err = tx.Enqueue(queue, buf, ctAt(0))
				for i := range buf {
					buf[i] ^= 0xff
				}
				return err
			})
			got := ctPending(t, r, queue, 10)
			if len(got) != 1 || got[0].Seq != seq {
				t.Fatalf("Pending = %d entries, want one with Seq %d",
					len(got), seq)
			}
			p := got[0].Payload
			if p == nil {
				t.Error("Payload is nil")
			}
			if !bytes.Equal(p, tc.payload) {
				t.Errorf("Payload = %d bytes %.40q, want %d bytes %.40q",
					len(p), p, len(tc.payload), tc.payload)
			}
		})
	}
}

func ctOutboxBounds(t *testing.T, s Store, r *Reader) {
	tests := []struct {
		name    string
		queue   string
		payload []byte
		refused bool
	}{
		{"empty name", "", []byte("x"), true},
		{"longest name", strings.Repeat("q", MaxQueueName), nil, false},
		{"name too long", strings.Repeat("q", MaxQueueName+1), nil, true},
		{"longest name of two-byte runes",
			strings.Repeat("é", MaxQueueName/2), nil, false},
		{"name too long by a byte of a rune",
			strings.Repeat("é", MaxQueueName/2) + "x", nil, true},
		{"name not UTF-8", "hooks\xff", nil, true},
		{"name with U+0000", "hooks\x00a", nil, true},
		{"name of any other UTF-8", "hook: ⚡ / #1\t", nil, false},
		{"largest payload", "large", make([]byte, MaxOutboxPayload), false},
		{"payload too large", "too large",
			make([]byte, MaxOutboxPayload+1), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Update(t.Context(), func(tx Tx) error {
				_, err := tx.Enqueue(tc.queue, tc.payload, ctAt(0))
				return err
			})
			n := len(ctPending(t, r, tc.queue, 10))
			switch {
			case tc.refused && !errors.Is(err, ErrOutboxInvalid):
				t.Errorf("Enqueue = %v, want ErrOutboxInvalid", err)
			case tc.refused && n != 0:
				t.Errorf("refused, but %d entries are pending", n)
			case !tc.refused && err != nil:
				t.Errorf("Enqueue: %v", err)
			case !tc.refused && n != 1:
				t.Errorf("%d entries pending, want 1", n)
			}
		})
	}
}

func ctOutboxAck(t *testing.T, s Store, r *Reader) {
	a1 := ctEnqueue(t, s, "a", "a1", 0)
	a2 := ctEnqueue(t, s, "a", "a2", 1)
	b1 := ctEnqueue(t, s, "b", "b1", 1)
	a3 := ctEnqueue(t, s, "a", "a3", 2)

	acks := []struct {
		name  string
		queue string
		seq   uint64
		wantA []OutboxEntry
	}{
		{"one in the middle", "a", a2,
			[]OutboxEntry{ctEntry(a1, 0, "a1"), ctEntry(a3, 2, "a3")}},
		{"the same again", "a", a2,
			[]OutboxEntry{ctEntry(a1, 0, "a1"), ctEntry(a3, 2, "a3")}},
		{"another queue's entry", "a", b1,
			[]OutboxEntry{ctEntry(a1, 0, "a1"), ctEntry(a3, 2, "a3")}},
		{"in an unknown queue", "nobody", a1,
			[]OutboxEntry{ctEntry(a1, 0, "a1"), ctEntry(a3, 2, "a3")}},
		{"in a queue that cannot be", "a\xff", a1,
			[]OutboxEntry{ctEntry(a1, 0, "a1"), ctEntry(a3, 2, "a3")}},
		{"in a queue without a name", "", a1,
			[]OutboxEntry{ctEntry(a1, 0, "a1"), ctEntry(a3, 2, "a3")}},
		{"seq 0", "a", 0,
			[]OutboxEntry{ctEntry(a1, 0, "a1"), ctEntry(a3, 2, "a3")}},
		{"the largest seq", "a", math.MaxUint64,
			[]OutboxEntry{ctEntry(a1, 0, "a1"), ctEntry(a3, 2, "a3")}},
		{"the oldest", "a", a1, []OutboxEntry{ctEntry(a3, 2, "a3")}},
		{"the last", "a", a3, nil},
		{"in an emptied queue", "a", a3, nil},
	}
	for _, ack := range acks {
		t.Run(ack.name, func(t *testing.T) {
			ctUpdate(t, s, func(tx Tx) error {
				return tx.Ack(ack.queue, ack.seq)
			})
			ctSameEntries(t, `queue "a"`, ctPending(t, r, "a", 10),
				ack.wantA)
			ctSameEntries(t, `queue "b"`, ctPending(t, r, "b", 10),
				[]OutboxEntry{ctEntry(b1, 1, "b1")})
		})
	}

	// A Seq is never reused, even once its queue was emptied.
	a4 := ctEnqueue(t, s, "a", "a4", 3)
	if a4 <= a3 || a4 <= b1 {
		t.Errorf("Seq after acking %d, want above %d", a4, max(a3, b1))
	}

	// An entry acked in the transaction that enqueued it is never seen.
	ctUpdate(t, s, func(tx Tx) error {
		seq, err := tx.Enqueue("c", []byte("c1"), ctAt(3))
		if err != nil {
			return err
		}
		return tx.Ack("c", seq)
	})
	ctSameEntries(t, `queue "c"`, ctPending(t, r, "c", 10), nil)
}

func ctOutboxSweep(t *testing.T, s Store, r *Reader) {
	// Each queue in time order, but not the store: a2 is older than b3
	// and has a higher Seq.
	a1 := ctEnqueue(t, s, "a", "a1", 1)
	b3 := ctEnqueue(t, s, "b", "b3", 3)
	a2 := ctEnqueue(t, s, "a", "a2", 2)
	b4 := ctEnqueue(t, s, "b", "b4", 4)
	b10 := ctEnqueue(t, s, "b", "b10", 10)
	c10 := ctEnqueue(t, s, "c", "c10", 10)

	if ctHasOutbox(t, r, 1) {
		t.Error("HasOutboxBefore(the oldest entry) = true")
	}
	if !ctHasOutbox(t, r, 2) {
		t.Error("HasOutboxBefore(just after the oldest) = false")
	}

	sweeps := []struct {
		name       string
		cutoff     int64
		limit      int
		want       int
		a, b, c    []OutboxEntry
		hasBefore  int64 // a cutoff HasOutboxBefore answers
		wantBefore bool
	}{
		{
			name: "limit 0", cutoff: 5, limit: 0, want: 0,
			a: []OutboxEntry{ctEntry(a1, 1, "a1"), ctEntry(a2, 2, "a2")},
			b: []OutboxEntry{ctEntry(b3, 3, "b3"), ctEntry(b4, 4, "b4"),
				ctEntry(b10, 10, "b10")},
			c:         []OutboxEntry{ctEntry(c10, 10, "c10")},
			hasBefore: 5, wantBefore: true,
		},
		{
			name: "oldest first across queues", cutoff: 5, limit: 2,
			want: 2,
			b: []OutboxEntry{ctEntry(b3, 3, "b3"), ctEntry(b4, 4, "b4"),
				ctEntry(b10, 10, "b10")},
			c:         []OutboxEntry{ctEntry(c10, 10, "c10")},
			hasBefore: 5, wantBefore: true,
		},
		{
			name: "the rest before the cutoff", cutoff: 5, limit: 10,
			want:      2,
			b:         []OutboxEntry{ctEntry(b10, 10, "b10")},
			c:         []OutboxEntry{ctEntry(c10, 10, "c10")},
			hasBefore: 5, wantBefore: false,
		},
		{
			name: "none left before the cutoff", cutoff: 5, limit: 10,
			want:      0,
			b:         []OutboxEntry{ctEntry(b10, 10, "b10")},
			c:         []OutboxEntry{ctEntry(c10, 10, "c10")},
			hasBefore: 10, wantBefore: false,
		},
		{
			name: "the same second in Seq order", cutoff: 11, limit: 1,
			want:      1,
			c:         []OutboxEntry{ctEntry(c10, 10, "c10")},
			hasBefore: 11, wantBefore: true,
		},
		{
			name: "the last", cutoff: 11, limit: 10, want: 1,
			hasBefore: 1000, wantBefore: false,
		},
	}
	for _, sw := range sweeps {
		t.Run(sw.name, func(t *testing.T) {
			if n := ctSweepOutbox(t, s, sw.cutoff, sw.limit); n != sw.want {
				t.Errorf("SweepOutbox(%d, limit %d) = %d, want %d",
					sw.cutoff, sw.limit, n, sw.want)
			}
			ctSameEntries(t, `queue "a"`, ctPending(t, r, "a", 10), sw.a)
			ctSameEntries(t, `queue "b"`, ctPending(t, r, "b", 10), sw.b)
			ctSameEntries(t, `queue "c"`, ctPending(t, r, "c", 10), sw.c)
			if got := ctHasOutbox(t, r, sw.hasBefore); got != sw.wantBefore {
				t.Errorf("HasOutboxBefore(%d) = %v, want %v",
					sw.hasBefore, got, sw.wantBefore)
			}
		})
	}

	// A swept queue takes entries again, with Seqs never used.
	a5 := ctEnqueue(t, s, "a", "a5", 20)
	ctSameEntries(t, `queue "a" after sweeping`, ctPending(t, r, "a", 10),
		[]OutboxEntry{ctEntry(a5, 20, "a5")})
	if a5 <= c10 {
		t.Errorf("Seq after sweeping %d, want above %d", a5, c10)
	}
}

func ctOutboxRollback(t *testing.T, s Store, r *Reader) {
	keep := ctEnqueue(t, s, "hooks", "keep", 1)

	boom := errors.New("boom")
	err := s.Update(t.Context(), func(tx Tx) error {
		if _, err := tx.Enqueue("hooks", []byte("lost"), ctAt(2)); err != nil {
			return err
		}
		if _, err := tx.Enqueue("new", []byte("lost"), ctAt(0)); err != nil {
			return err
		}
		if err := tx.Ack("hooks", keep); err != nil {
			return err
		}
		if _, err := tx.SweepOutbox(ctAt(100), 10); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v, want the error fn returned", err)
	}

	ctSameEntries(t, `queue "hooks"`, ctPending(t, r, "hooks", 10),
		[]OutboxEntry{ctEntry(keep, 1, "keep")})
	ctSameEntries(t, `queue "new"`, ctPending(t, r, "new", 10), nil)
	if ctHasOutbox(t, r, 1) {
		t.Error("HasOutboxBefore(1) = true after the failed Update")
	}
}

func ctOutboxConcurrent(t *testing.T, s Store, r *Reader) {
	// Updates that run together, every other one failing: on bbolt
	// they share group commits, and the writer runs the others again
	// without the failed one. The Seq each caller keeps is that of the
	// run that was committed.
	const n = 16
	boom := errors.New("boom")
	seqs := make([]uint64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = s.Update(t.Context(), func(tx Tx) error {
				var err error
				seqs[i], err = tx.Enqueue("hooks",
					[]byte(fmt.Sprint(i)), ctAt(int64(i)))
				if err == nil && i%2 == 1 {
					err = boom
				}
				return err
			})
		})
	}
	wg.Wait()

	want := make(map[uint64]string)
	for i, err := range errs {
		switch {
		case i%2 == 1 && !errors.Is(err, boom):
			t.Errorf("Update %d = %v, want its own error", i, err)
		case i%2 == 0 && err != nil:
			t.Errorf("Update %d: %v", i, err)
		case i%2 == 0:
			want[seqs[i]] = fmt.Sprint(i)
		}
	}
	got := ctPending(t, r, "hooks", 2*n)
	if len(got) != len(want) {
		t.Errorf("%d entries pending, want %d: %s", len(got), len(want),
			ctShowEntries(got))
	}
	for i, e := range got {
		if i > 0 && e.Seq <= got[i-1].Seq {
			t.Errorf("entries out of Seq order: %s", ctShowEntries(got))
		}
		if p, ok := want[e.Seq]; !ok || string(e.Payload) != p {
			t.Errorf("entry %d holds %q, want %q", e.Seq, e.Payload, p)
		}
	}
}
