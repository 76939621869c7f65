package clientdb

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	bolt "go.etcd.io/bbolt"

	"github.com/caddy-dcr/caddy-dcr/internal/pgtest"
)

func TestOutboxBoltEmpty(t *testing.T) {
	// A Reader before the store file exists reads through a boltTx
	// without a bbolt transaction; a store some writer made has no
	// outbox until the first Enqueue.
	w, path := newWriter(t)
	r := openReader(t, path)
	views := []struct {
		name  string
		setup func(t *testing.T)
	}{
		{"no store file", func(*testing.T) {}},
		{"no outbox bucket", func(t *testing.T) {
			store(t, w, testClient("a"))
		}},
	}
	for _, v := range views {
		t.Run(v.name, func(t *testing.T) {
			v.setup(t)
			err := r.View(func(tx Tx) error {
				if got, err := tx.Pending("hooks", 10); err != nil ||
					len(got) != 0 {
					t.Errorf("Pending = %d entries, %v; want none",
						len(got), err)
				}
				if tx.HasOutboxBefore(time.Now().Add(time.Hour)) {
					t.Error("HasOutboxBefore = true")
				}
				if _, err := tx.Enqueue("hooks", nil, time.Now()); err == nil {
					t.Error("Enqueue succeeded")
				}
				if err := tx.Ack("hooks", 1); err == nil {
					t.Error("Ack succeeded")
				}
				if _, err := tx.SweepOutbox(time.Now(), 10); err == nil {
					t.Error("SweepOutbox succeeded")
				}
				return nil
			})
			if err != nil {
				t.Errorf("View: %v", err)
			}
		})
	}

	// The writing methods on a store without the bucket.
	err := w.Update(context.Background(), func(tx Tx) error {
		if err := tx.Ack("hooks", 1); err != nil {
			return err
		}
		n, err := tx.SweepOutbox(time.Now(), 10)
		if err == nil && n != 0 {
			t.Errorf("SweepOutbox = %d, want 0", n)
		}
		return err
	})
	if err != nil {
		t.Errorf("Update: %v", err)
	}
	readRaw(t, path, func(tx *bolt.Tx) error {
		if tx.Bucket(outboxBucket) != nil {
			t.Error("Ack or SweepOutbox created the outbox bucket")
		}
		return nil
	})
}

func TestOutboxBoltLayout(t *testing.T) {
	w, path := newWriter(t)
	at := time.Unix(1796314153, 0)
	enqueue := func(queue, payload string) uint64 {
		t.Helper()
		var seq uint64
		err := w.Update(context.Background(), func(tx Tx) error {
			var err error
			seq, err = tx.Enqueue(queue, []byte(payload), at)
			return err
		})
		if err != nil {
			t.Fatalf("Enqueue: %v", err)
		}
		return seq
	}
	a1 := enqueue("a", "one")
	b2 := enqueue("b", "")
	a3 := enqueue("a", "three")

	type raw struct {
		queue string
		seq   uint64
		value string
	}
	dump := func() (entries []raw, sequence uint64) {
		t.Helper()
		readRaw(t, path, func(tx *bolt.Tx) error {
			root := tx.Bucket([]byte("outbox"))
			if root == nil {
				t.Fatal(`bucket "outbox" missing`)
			}
			sequence = root.Sequence()
			return root.ForEach(func(name, v []byte) error {
				if v != nil {
					t.Errorf("outbox holds a value under %q", name)
					return nil
				}
				return root.Bucket(name).ForEach(func(k, v []byte) error {
					entries = append(entries, raw{string(name),
						binary.BigEndian.Uint64(k), string(v)})
					return nil
				})
			})
		})
		return entries, sequence
	}

	stamp := string(binary.BigEndian.AppendUint64(nil, uint64(at.Unix())))
	got, sequence := dump()
	want := []raw{
		{"a", a1, stamp + "one"},
		{"a", a3, stamp + "three"},
		{"b", b2, stamp},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("outbox = %+v, want %+v", got, want)
	}
	if a1 != 1 || b2 != 2 || a3 != 3 || sequence != 3 {
		t.Errorf("Seqs %d, %d, %d and outbox sequence %d, want 1 to 3",
			a1, b2, a3, sequence)
	}

	// An emptied queue's bucket goes; the sequence stays.
	err := w.Update(context.Background(), func(tx Tx) error {
		if err := tx.Ack("a", a1); err != nil {
			return err
		}
		return tx.Ack("a", a3)
	})
	if err != nil {
		t.Fatalf("Ack: %v", err)
	}
	readRaw(t, path, func(tx *bolt.Tx) error {
		root := tx.Bucket([]byte("outbox"))
		if root.Bucket([]byte("a")) != nil {
			t.Error(`bucket of the emptied queue "a" is still there`)
		}
		if root.Bucket([]byte("b")) == nil {
			t.Error(`bucket of queue "b" is gone`)
		}
		return nil
	})
	err = w.Update(context.Background(), func(tx Tx) error {
		_, err := tx.SweepOutbox(at.Add(time.Second), 10)
		return err
	})
	if err != nil {
		t.Fatalf("SweepOutbox: %v", err)
	}
	if got, sequence := dump(); len(got) != 0 || sequence != 3 {
		t.Errorf("after sweeping: outbox = %+v, sequence %d; want none, 3",
			got, sequence)
	}
}

func TestOutboxBoltUndecodable(t *testing.T) {
	// A value too short for its time, as no writer of this package
	// makes: reading fails, and HasOutboxBefore answers false.
	w, path := newWriter(t)
	store(t, w, testClient("a"))
	writeRaw(t, path, func(tx *bolt.Tx) error {
		root, err := tx.CreateBucket(outboxBucket)
		if err != nil {
			return err
		}
		q, err := root.CreateBucket([]byte("hooks"))
		if err != nil {
			return err
		}
		return q.Put(seqKey(1), []byte("short"))
	})
	r := openReader(t, path)
	err := r.View(func(tx Tx) error {
		if _, err := tx.Pending("hooks", 10); err == nil {
			t.Error("Pending succeeded")
		}
		if tx.HasOutboxBefore(time.Now()) {
			t.Error("HasOutboxBefore = true")
		}
		return nil
	})
	if err != nil {
		t.Errorf("View: %v", err)
	}
	err = w.Update(context.Background(), func(tx Tx) error {
		_, err := tx.SweepOutbox(time.Now(), 10)
		return err
	})
	if err == nil {
		t.Error("SweepOutbox succeeded")
	}
}

func TestOutboxBoltGroupRerun(t *testing.T) {
	// A group of three changes whose second fails: the writer commits
	// the first and the third again without it, and the Seqs their
	// callers keep are those of the committed run.
	w, path := newWriter(t)
	release := holdWriter(t, w)

	boom := errors.New("boom")
	seqs := make([]uint64, 3)
	runs := make([]int, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			errs[i] = w.Update(context.Background(), func(tx Tx) error {
				runs[i]++
				var err error
				seqs[i], err = tx.Enqueue("hooks", []byte{byte(i)},
					time.Unix(int64(i), 0))
				if err == nil && i == 1 {
					err = boom
				}
				return err
			})
		})
		waitQueued(t, w, i+1)
	}
	release()
	wg.Wait()

	if errs[0] != nil || !errors.Is(errs[1], boom) || errs[2] != nil {
		t.Fatalf("Update errors %v, want nil, boom, nil", errs)
	}
	if runs[0] != 2 {
		t.Errorf("the first change ran %d times, want 2", runs[0])
	}
	var got []OutboxEntry
	err := openReader(t, path).View(func(tx Tx) error {
		var err error
		got, err = tx.Pending("hooks", 10)
		return err
	})
	if err != nil {
		t.Fatalf("View: %v", err)
	}
	want := []OutboxEntry{
		{Seq: seqs[0], Time: 0, Payload: []byte{0}},
		{Seq: seqs[2], Time: 2, Payload: []byte{2}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Pending = %+v, want %+v", got, want)
	}
}

func TestPostgresOutboxMigration(t *testing.T) {
	// A database that a build of schema version 1 prepared and filled.
	dsn := pgtest.Database(t)
	conn := pgConnect(t, dsn)
	_, err := conn.Exec(t.Context(), `CREATE TABLE dcr_schema (
		version integer NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`)
	if err != nil {
		t.Fatalf("creating dcr_schema: %v", err)
	}
	if _, err := conn.Exec(t.Context(), migrations[0]); err != nil {
		t.Fatalf("applying migration 1: %v", err)
	}
	record, err := json.Marshal(ctClient("old"))
	if err != nil {
		t.Fatalf("encoding client: %v", err)
	}
	_, err = conn.Exec(t.Context(),
		"INSERT INTO dcr_schema (version) VALUES (1)")
	if err != nil {
		t.Fatalf("recording version 1: %v", err)
	}
	_, err = conn.Exec(t.Context(), "INSERT INTO dcr_clients "+
		"(client_id, issued_at, record) VALUES ('old', now(), $1)", record)
	if err != nil {
		t.Fatalf("storing a client at version 1: %v", err)
	}

	// A reader, which never migrates, sees an empty outbox.
	r, err := Open(t.Context(), dsn)
	if err != nil {
		t.Fatalf("Open at version 1: %v", err)
	}
	ctCloseAtEnd(t, r)
	if got := ctPending(t, r, "hooks", 10); len(got) != 0 {
		t.Errorf("Pending at version 1 = %d entries", len(got))
	}
	if ctHasOutbox(t, r, 0) {
		t.Error("HasOutboxBefore at version 1 = true")
	}

	// A writer migrates it, keeping what it held.
	p := pgOpen(t, dsn, PostgresOptions{})
	want := map[int]int{1: 1, 2: 1}
	if got := pgSchemaRows(t, conn); !reflect.DeepEqual(got, want) {
		t.Errorf("dcr_schema rows per version = %v, want %v", got, want)
	}
	if !slices.Contains(pgTables(t, conn), "dcr_outbox") {
		t.Errorf("tables %q lack dcr_outbox", pgTables(t, conn))
	}
	rows, err := conn.Query(t.Context(), "SELECT indexname FROM pg_indexes "+
		"WHERE tablename = 'dcr_outbox' ORDER BY indexname")
	if err != nil {
		t.Fatalf("listing indexes: %v", err)
	}
	indexes, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("listing indexes: %v", err)
	}
	wantIndexes := []string{"dcr_outbox_at", "dcr_outbox_pkey",
		"dcr_outbox_queue"}
	if !slices.Equal(indexes, wantIndexes) {
		t.Errorf("indexes of dcr_outbox %q, want %q", indexes, wantIndexes)
	}
	if _, err := r.Lookup("old"); err != nil {
		t.Errorf("Lookup of a client stored at version 1: %v", err)
	}

	seq := ctEnqueue(t, p, "hooks", "after the migration", 0)
	ctSameEntries(t, "Pending after the migration",
		ctPending(t, r, "hooks", 10),
		[]OutboxEntry{ctEntry(seq, 0, "after the migration")})
}
