// Command load drives an HTTP endpoint with a fixed number of concurrent
// connections for a bounded time and prints requests per second and
// latency percentiles. It is the load generator of the benchmark script.
//
//	go run ./bench/load -url http://127.0.0.1:8080/register -c 32 -d 10s
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

func main() {
	url := flag.String("url", "", "URL to request")
	method := flag.String("method", http.MethodPost, "HTTP method")
	body := flag.String("body",
		`{"redirect_uris":["http://127.0.0.1:3000/callback"],"client_name":"bench"}`,
		"request body")
	conns := flag.Int("c", 32, "concurrent connections")
	dur := flag.Duration("d", 10*time.Second, "duration of the run")
	want := flag.Int("status", http.StatusCreated, "expected status code")
	label := flag.String("label", "", "label printed in front of the figures")
	ctype := flag.String("type", "application/json", "Content-Type of the body")
	var headers headerFlags
	flag.Var(&headers, "H", `extra request header "Name: value" (repeatable)`)
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "load: -url is required")
		os.Exit(2)
	}

	tr := &http.Transport{
		MaxIdleConnsPerHost: *conns,
		MaxConnsPerHost:     *conns,
	}
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}

	ctx, cancel := context.WithTimeout(context.Background(), *dur)
	defer cancel()

	var (
		mu        sync.Mutex
		latencies []time.Duration
		failures  int
		wg        sync.WaitGroup
	)
	start := time.Now()
	for range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []time.Duration
			bad := 0
			for ctx.Err() == nil {
				req, err := http.NewRequest(*method, *url,
					bytes.NewReader([]byte(*body)))
				if err != nil {
					panic(err)
				}
				req.Header.Set("Content-Type", *ctype)
				for _, h := range headers {
					name, value, _ := strings.Cut(h, ":")
					req.Header.Set(name, strings.TrimSpace(value))
				}
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					bad++
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != *want {
					bad++
					continue
				}
				local = append(local, time.Since(t0))
			}
			mu.Lock()
			latencies = append(latencies, local...)
			failures += bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	slices.Sort(latencies)
	pct := func(p float64) time.Duration {
		if len(latencies) == 0 {
			return 0
		}
		return latencies[int(float64(len(latencies)-1)*p)]
	}
	fmt.Printf("%s\trps=%.0f\tp50=%s\tp99=%s\tok=%d\tfailed=%d\n",
		*label, float64(len(latencies))/elapsed.Seconds(),
		pct(0.50).Round(10*time.Microsecond),
		pct(0.99).Round(10*time.Microsecond),
		len(latencies), failures)
}

// headerFlags collects repeated -H flags.
type headerFlags []string

// String implements flag.Value.
func (h *headerFlags) String() string { return strings.Join(*h, ", ") }

// Set implements flag.Value.
func (h *headerFlags) Set(v string) error {
	*h = append(*h, v)
	return nil
}
