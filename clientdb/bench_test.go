package clientdb

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

func BenchmarkHashSecret(b *testing.B) {
	secret := randomSecret(b)
	b.ReportAllocs()
	for b.Loop() {
		HashSecret(secret)
	}
}

func BenchmarkVerifySecret(b *testing.B) {
	secret := randomSecret(b)
	hash := HashSecret(secret)
	b.ReportAllocs()
	for b.Loop() {
		if !VerifySecret(hash, secret) {
			b.Fatal("VerifySecret rejected the right secret")
		}
	}
}

// BenchmarkWriterUpdate commits one change at a time, each in its own
// transaction with its own fsync: the cost of a registration on an idle
// server.
func BenchmarkWriterUpdate(b *testing.B) {
	w, _ := newWriter(b)
	ctx := context.Background()
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		c := testClient(fmt.Sprintf("c%08d", i))
		i++
		err := w.Update(ctx, func(tx Tx) error { return tx.Create(c) })
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriterUpdateParallel commits from many goroutines, so changes
// that arrive during a commit share the next one. It reports how many
// changes each transaction carried.
func BenchmarkWriterUpdateParallel(b *testing.B) {
	w, _ := newWriter(b)
	ctx := context.Background()
	var next atomic.Int64

	// Each transaction has its own Tx; holding them in the map keeps
	// their addresses from being reused, so the map counts commits.
	var mu sync.Mutex
	txs := make(map[Tx]bool)

	b.SetParallelism(16)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c := testClient(fmt.Sprintf("c%08d", next.Add(1)))
			err := w.Update(ctx, func(tx Tx) error {
				mu.Lock()
				txs[tx] = true
				mu.Unlock()
				return tx.Create(c)
			})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	if len(txs) > 0 {
		b.ReportMetric(float64(next.Load())/float64(len(txs)),
			"changes/commit")
	}
}

// BenchmarkReaderLookup looks up clients in a store of 1000, each lookup
// under the full protocol: both locks, open, read, close.
func BenchmarkReaderLookup(b *testing.B) {
	const n = 1000
	w, path := newWriter(b)
	clients := make([]*Client, n)
	for i := range clients {
		clients[i] = testClient(fmt.Sprintf("c%04d", i))
	}
	store(b, w, clients...)
	r := openReader(b, path)

	i := 0
	b.ReportAllocs()
	for b.Loop() {
		id := clients[i%n].ID
		i++
		if _, err := r.Lookup(id); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMetadataMarshal(b *testing.B) {
	m := fullMetadata()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := json.Marshal(m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMetadataUnmarshal(b *testing.B) {
	data, err := json.Marshal(fullMetadata())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		var m Metadata
		if err := json.Unmarshal(data, &m); err != nil {
			b.Fatal(err)
		}
	}
}
