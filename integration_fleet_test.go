package dcr

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
	"github.com/caddy-dcr/caddy-dcr/internal/pgtest"
)

// Two Caddy processes of the fleet tests, apart from the other tests'.
var (
	fleetA = storeSite{admin: "localhost:2996", port: 9192}
	fleetB = storeSite{admin: "localhost:2995", port: 9193}
)

// fleetStart runs site as a Caddy child process on the PostgreSQL
// database dsn, with enforcement at /authorize and the dcr subdirectives
// in extra, logging to a file in dir.
func fleetStart(t *testing.T, site storeSite, dsn, dir string, extra ...string) storeSite {
	t.Helper()
	site.db = "postgres " + strconv.Quote(dsn)
	site.extra = "enforce {\n\t\t\tauthorize /authorize\n\t\t}"
	for _, e := range extra {
		site.extra += "\n\t\t" + e
	}
	site.log = filepath.Join(dir, strconv.Itoa(site.port)+".log")
	child := storeStartChild(t, "^$", envCaddyChild+"="+site.caddyfile())
	if err := child.waitFor("ready", time.Minute); err != nil {
		t.Fatal(err)
	}
	return site
}

// fleetDo sends one request to site and returns the status and body.
func fleetDo(t *testing.T, site storeSite, method, path, token,
	body string) (int, map[string]any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	u := "http://127.0.0.1:" + strconv.Itoa(site.port) + path
	req, err := http.NewRequestWithContext(ctx, method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := site.client(false).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	json.Unmarshal(raw, &obj) // a pass-through answer is not JSON
	return resp.StatusCode, obj
}

// TestPostgresTwoInstances runs two Caddy processes on one PostgreSQL
// store: a client registered through one is at once usable at the other's
// authorization endpoint, and is read, updated and deleted through it;
// concurrent registrations on both never issue one ID twice. Both deliver
// to one webhook, and each event arrives once.
func TestPostgresTwoInstances(t *testing.T) {
	dsn := pgtest.Database(t)
	dir := t.TempDir()
	recv := newHookReceiver(t, true)
	a := fleetStart(t, fleetA, dsn, dir, hookConfig(recv.srv.URL, false))
	b := fleetStart(t, fleetB, dsn, dir, hookConfig(recv.srv.URL, false))

	status, reg := fleetDo(t, a, http.MethodPost, "/register", "",
		`{"redirect_uris":["https://app.example/cb"],"client_name":"fleet"}`)
	if status != http.StatusCreated {
		t.Fatalf("registering through A: status %d, %v", status, reg)
	}
	id, _ := reg["client_id"].(string)
	token, _ := reg["registration_access_token"].(string)

	// The client's next request may land on the other instance.
	status, _ = fleetDo(t, b, http.MethodGet, "/authorize?response_type=code"+
		"&client_id="+id+"&redirect_uri=https%3A%2F%2Fapp.example%2Fcb", "", "")
	if status != http.StatusOK {
		t.Errorf("authorize at B right after registering at A: status %d, "+
			"want 200 from the backend", status)
	}

	status, got := fleetDo(t, b, http.MethodGet, "/register/"+id, token, "")
	if status != http.StatusOK || got["client_name"] != "fleet" {
		t.Fatalf("reading through B: status %d, %v", status, got)
	}
	update := `{"client_id":"` + id + `","redirect_uris":["https://app.example/cb"],` +
		`"client_name":"fleet renamed"}`
	status, got = fleetDo(t, b, http.MethodPut, "/register/"+id, token, update)
	if status != http.StatusOK || got["client_name"] != "fleet renamed" {
		t.Fatalf("updating through B: status %d, %v", status, got)
	}
	if rotated, ok := got["registration_access_token"].(string); ok {
		token = rotated // rotate_token is on by default
	}
	status, got = fleetDo(t, a, http.MethodGet, "/register/"+id, token, "")
	if status != http.StatusOK || got["client_name"] != "fleet renamed" {
		t.Errorf("reading through A after B's update: status %d, %v", status, got)
	}
	status, _ = fleetDo(t, b, http.MethodDelete, "/register/"+id, token, "")
	if status != http.StatusNoContent {
		t.Fatalf("deleting through B: status %d, want 204", status)
	}
	status, _ = fleetDo(t, a, http.MethodGet, "/register/"+id, token, "")
	if status != http.StatusUnauthorized {
		t.Errorf("reading through A after B deleted: status %d, want 401", status)
	}
	status, _ = fleetDo(t, a, http.MethodGet, "/authorize?response_type=code"+
		"&client_id="+id+"&redirect_uri=https%3A%2F%2Fapp.example%2Fcb", "", "")
	if status == http.StatusOK {
		t.Error("authorize at A passed the client B deleted")
	}

	// Concurrent registrations through both instances.
	ctx := storeContext(t, 2*time.Minute)
	var tally storeTally
	var wg sync.WaitGroup
	for _, site := range []storeSite{a, b} {
		wg.Go(func() {
			client := site.client(true)
			storeHammer(storeWorkers/2, storePerWorker, nil, func() bool {
				r := storeRegister(ctx, client, site.url())
				tally.add(r)
				return r.ok()
			})
		})
	}
	wg.Wait()
	created, failed, notes := tally.results()
	storeReportFailures(t, failed, notes)
	seen := make(map[string]bool)
	for _, r := range created {
		if seen[r.id] {
			t.Errorf("client ID %s issued twice", r.id)
		}
		seen[r.id] = true
	}
	want := storeWorkers * storePerWorker
	if len(created) != want {
		t.Errorf("%d registrations answered 201, want %d", len(created), want)
	}
	if n := storeCheckClients(t, dsn, created); n != want {
		t.Errorf("store holds %d clients, want %d", n, want)
	}
	storeCheckLog(t, a.log)
	storeCheckLog(t, b.log)

	// The fleet client's three events, then one created event per 201,
	// each once (the receiver fails the test on a repeat).
	events := recv.wait(3 + want)
	hookCheck(t, events[:3], []hookWant{
		{EventCreated, id, ""}, {EventUpdated, id, ""}, {EventDeleted, id, ""},
	})
	for _, ev := range events[3:] {
		if ev.Type != EventCreated || !seen[ev.ClientID] {
			t.Errorf("event %s of %s, want created of a registered client",
				ev.Type, ev.ClientID)
		}
		delete(seen, ev.ClientID)
	}
	if len(seen) > 0 {
		t.Errorf("%d registrations had no created event", len(seen))
	}
}

// TestPostgresOutage stops the database under a load of registrations
// and starts it again: every 201 stays stored, the requests during the
// outage answer 503 with a server_error body and Retry-After, Caddy logs
// the outage once, and registrations succeed again without a restart.
func TestPostgresOutage(t *testing.T) {
	srv := pgtest.StartServer(t)
	dir := t.TempDir()
	site := fleetStart(t, fleetA, srv.DSN(), dir)

	ctx := storeContext(t, 3*time.Minute)
	var tally storeTally
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		client := site.client(true)
		storeHammer(4, 0, stop, func() bool {
			tally.add(storeRegister(ctx, client, site.url()))
			time.Sleep(5 * time.Millisecond)
			return ctx.Err() == nil
		})
	}()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-done
	}()
	waitCreated := func(n int) {
		t.Helper()
		for {
			if c, _ := tally.counts(); c >= n {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("fewer than %d registrations succeeded", n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	waitCreated(50)
	srv.Stop(t)
	before, _ := tally.counts()

	// During the outage: a 503 that says when to try again.
	status, headers, body := fleetProbe(t, site)
	if status != http.StatusServiceUnavailable || headers.Get("Retry-After") == "" ||
		!strings.Contains(body, `"error":"server_error"`) {
		t.Errorf("during the outage: status %d, Retry-After %q, body %s; "+
			"want 503, a Retry-After and server_error", status,
			headers.Get("Retry-After"), body)
	}
	time.Sleep(time.Second)

	srv.Start(t)
	waitCreated(before + 50)
	close(stop)
	<-done

	created, failed, notes := tally.results()
	for _, n := range notes {
		t.Error(n)
	}
	var unavailable int
	for _, r := range failed {
		if r.err != nil || r.status != http.StatusServiceUnavailable ||
			!strings.Contains(r.body, `"error":"server_error"`) {
			t.Errorf("request %q: %s; want 503 server_error", r.name, r)
			continue
		}
		unavailable++
	}
	if unavailable == 0 {
		t.Error("no registration failed during the outage")
	}
	n := storeCheckClients(t, srv.DSN(), created)
	if n < len(created) {
		t.Errorf("store holds %d clients, %d were answered 201", n, len(created))
	}

	logged, err := os.ReadFile(site.log)
	if err != nil {
		t.Fatal(err)
	}
	if c := strings.Count(string(logged), "client store unavailable;"); c != 1 {
		t.Errorf("the outage was logged %d times, want once:\n%s", c, logged)
	}
	t.Logf("%d registrations answered 201, %d answered 503; store holds %d",
		len(created), unavailable, n)
}

// fleetProbe sends one registration and returns what came back.
func fleetProbe(t *testing.T, site storeSite) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, site.url(),
		strings.NewReader(storeBody("probe")))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := site.client(false).Do(req)
	if err != nil {
		t.Fatalf("probe: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

// TestPostgresCIMDTwoInstances sends the first requests of a metadata
// document client to two instances at once: both fetch and store it, the
// one that loses the race takes the other's row, and every request
// passes.
func TestPostgresCIMDTwoInstances(t *testing.T) {
	dsn := pgtest.Database(t)
	dir := t.TempDir()
	srv := newCIMDServer(t)
	id := srv.url("/clients/fleet.json")
	srv.publish("/clients/fleet.json", cimdDoc{body: cimdDocument(id, nil),
		delay: 200 * time.Millisecond})
	extra := []string{"cimd on", "fetch {\n\t\t\tallow_networks 127.0.0.1/32\n" +
		"\t\t\ttrusted_roots " + srv.pem + "\n\t\t}"}
	a := fleetStart(t, fleetA, dsn, dir, extra...)
	b := fleetStart(t, fleetB, dsn, dir, extra...)

	var wg sync.WaitGroup
	statuses := make([]int, 8)
	for i := range statuses {
		site := []storeSite{a, b}[i%2]
		wg.Go(func() {
			statuses[i], _ = fleetDo(t, site, http.MethodGet,
				"/authorize?"+cimdParams(id), "", "")
		})
	}
	wg.Wait()
	for i, s := range statuses {
		if s != http.StatusOK {
			t.Errorf("request %d: status %d, want 200 from the backend", i, s)
		}
	}
	if n := srv.fetches("/clients/fleet.json"); n < 1 || n > 2 {
		t.Errorf("document fetched %d times by two instances, want 1 or 2", n)
	}
	r, err := clientdb.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if c, err := r.Lookup(id); err != nil || c.Kind != clientdb.KindMetadataDocument {
		t.Errorf("stored client %+v, %v", c, err)
	}
	storeCheckLog(t, a.log)
	storeCheckLog(t, b.log)
}
