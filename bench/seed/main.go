// Command seed fills a caddy-dcr store with registered clients, so that the
// benchmark can measure the handler with a large store. Clients are made
// as a registration would make them (random IDs, hashed secrets and
// registration tokens, typical metadata), many per transaction.
//
//	go run ./bench/seed -store /tmp/big.db -n 1000000
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

func main() {
	path := flag.String("store", "", "path of the bbolt store to fill")
	n := flag.Int("n", 1_000_000, "number of clients to add")
	batch := flag.Int("batch", 20_000, "clients per transaction")
	flag.Parse()
	if *path == "" {
		fmt.Fprintln(os.Stderr, "seed: -store is required")
		os.Exit(2)
	}

	w, err := clientdb.NewWriter(*path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "seed:", err)
		os.Exit(1)
	}
	start := time.Now()
	now := start.Unix()
	for done := 0; done < *n; {
		size := min(*batch, *n-done)
		clients := make([]*clientdb.Client, size)
		for i := range clients {
			clients[i] = client(now, done+i)
		}
		err := w.Update(context.Background(), func(tx clientdb.Tx) error {
			for _, c := range clients {
				if err := tx.Create(c); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "seed:", err)
			os.Exit(1)
		}
		done += size
	}
	info, _ := os.Stat(*path)
	fmt.Printf("seeded %d clients in %s, file %d MB\n",
		*n, time.Since(start).Round(time.Millisecond), info.Size()>>20)
}

// client returns the i-th seeded client.
func client(now int64, i int) *clientdb.Client {
	return &clientdb.Client{
		// As if registered one per millisecond up to now.
		ID:                    clientdb.NewClientID(time.UnixMilli(now*1000 - int64(1_000_000-i))),
		IssuedAt:              now,
		SecretHash:            clientdb.HashSecret(random(32)),
		RegistrationTokenHash: clientdb.HashSecret(random(32)),
		Metadata: clientdb.Metadata{
			RedirectURIs:            []string{"http://127.0.0.1:3000/callback"},
			TokenEndpointAuthMethod: "client_secret_basic",
			GrantTypes:              []string{"authorization_code"},
			ResponseTypes:           []string{"code"},
			ClientName:              fmt.Sprintf("seeded client %d", i),
			ApplicationType:         "native",
		},
	}
}

// random returns n random bytes, base64url-encoded without padding.
func random(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
