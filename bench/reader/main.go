//go:build unix

// Command reader looks clients up in a caddy-dcr store as fast as it can,
// from its own process, for a bounded time, and prints lookups per second
// and latency percentiles. It is the concurrent reader of the benchmark
// script.
//
//	go run ./bench/reader -store data/clients.db -d 10s
package main

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

func main() {
	path := flag.String("store", "", "path of the bbolt store")
	dur := flag.Duration("d", 10*time.Second, "duration of the run")
	flag.Parse()

	r, err := clientdb.OpenReader(*path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "reader:", err)
		os.Exit(1)
	}
	defer r.Close()

	var lats []time.Duration
	var ids []string
	deadline := time.Now().Add(*dur)
	start := time.Now()
	for time.Now().Before(deadline) {
		// Refresh the ID sample now and then, as clients keep arriving.
		if len(ids) == 0 || len(lats)%5000 == 0 {
			ids = ids[:0]
			err := r.View(func(tx clientdb.Tx) error {
				return tx.ForEach(func(c *clientdb.Client) error {
					if len(ids) < 10000 {
						ids = append(ids, c.ID)
					}
					return nil
				})
			})
			if err != nil {
				fmt.Fprintln(os.Stderr, "reader:", err)
				os.Exit(1)
			}
			if len(ids) == 0 {
				ids = append(ids, "none")
			}
		}
		id := ids[rand.IntN(len(ids))]
		t0 := time.Now()
		_, err := r.Lookup(id)
		if err != nil && !errors.Is(err, clientdb.ErrNotFound) &&
			!errors.Is(err, clientdb.ErrDeleted) {
			fmt.Fprintln(os.Stderr, "reader:", err)
			os.Exit(1)
		}
		lats = append(lats, time.Since(t0))
	}
	elapsed := time.Since(start)

	slices.Sort(lats)
	pct := func(p float64) time.Duration {
		return lats[int(float64(len(lats)-1)*p)]
	}
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	fmt.Printf("reader\tlookups/s=%.0f\tp50=%s\tp99=%s\tn=%d\tcpu=%.0f%%\n",
		float64(len(lats))/elapsed.Seconds(),
		pct(0.50).Round(time.Microsecond),
		pct(0.99).Round(time.Microsecond), len(lats),
		100*cpu.Seconds()/elapsed.Seconds())
}
