package dcr

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-dcr/caddy-dcr/clientdb"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// The store tests run a real Caddy, send real HTTP registrations and read
// the real bbolt file, some of it from other processes: this test binary
// re-executed in a helper mode. They use ports apart from the other
// integration tests so that the two sets can be run separately, but both
// use caddytest's admin endpoint: never run two such test processes at
// once.
const (
	storeAdmin      = "localhost:2999" // caddytest's in-process Caddy
	storePort       = 9180
	storeChildAdmin = "localhost:2998" // a Caddy in a child process
	storeChildPort  = 9190

	// The load: this many goroutines, each sending this many
	// registrations, in the tests with a fixed number of them.
	storeWorkers   = 16
	storePerWorker = 25
)

// Environment variables that switch a re-executed test binary into a
// helper mode.
const (
	envReaderDB   = "DCR_TEST_READER_DB"   // the store TestHelperReader reads
	envReaderMode = "DCR_TEST_READER_MODE" // "answer" or "loop"
	envValidate   = "DCR_TEST_VALIDATE_CADDYFILE"
)

// TestStoreReaderProcess checks that a second process reading the store
// sees every client as soon as its registration was answered with 201.
func TestStoreReaderProcess(t *testing.T) {
	ctx := storeContext(t, 3*time.Minute)
	db := filepath.Join(t.TempDir(), "clients.db")
	site := storeSite{admin: storeAdmin, port: storePort, db: db}
	storeStartCaddy(t, site.caddyfile())

	start := time.Now()
	reader := storeStartChild(t, "^TestHelperReader$",
		envReaderDB+"="+db, envReaderMode+"=answer")
	if err := reader.waitFor("ready", time.Minute); err != nil {
		t.Fatal(err)
	}
	ready := time.Since(start)

	var tally storeTally
	client := site.client(true)
	start = time.Now()
	storeHammer(storeWorkers, storePerWorker, nil, func() bool {
		r := storeRegister(ctx, client, site.url())
		tally.add(r)
		if !r.ok() {
			return true
		}
		if err := reader.send(r.id + " " + r.secret); err != nil {
			tally.fail("sending to reader: " + err.Error())
			return false
		}
		return true
	})
	elapsed := time.Since(start)
	lines, err := reader.finish(time.Minute)
	if err != nil {
		t.Fatalf("reader process: %v", err)
	}

	created, failed, notes := tally.results()
	storeReportFailures(t, failed, notes)
	if want := storeWorkers * storePerWorker; len(created) != want {
		t.Errorf("%d registrations answered 201, want %d",
			len(created), want)
	}

	answers := make(map[string]string)
	for _, l := range lines {
		verdict, rest, _ := strings.Cut(l, " ")
		if verdict != "ok" && verdict != "missing" {
			continue // the test framework's own output
		}
		id, _, _ := strings.Cut(rest, " ")
		answers[id] = l
	}
	var missing int
	for _, r := range created {
		switch a := answers[r.id]; {
		case a == "":
			t.Errorf("reader gave no answer for %s", r.id)
		case !strings.HasPrefix(a, "ok "):
			missing++
			if missing <= 10 {
				t.Errorf("reader: %s", a)
			}
		}
	}
	if missing > 0 {
		t.Errorf("reader missed %d of %d clients answered 201",
			missing, len(created))
	}

	if n := storeCheckClients(t, db, created); n != len(created) {
		t.Errorf("store holds %d clients, want %d", n, len(created))
	}
	t.Logf("reader process ready after %s; %d registrations in %s, "+
		"%d answered ok by the reader", ready.Round(time.Millisecond),
		len(created), elapsed.Round(time.Millisecond),
		len(created)-missing)
}

// TestStoreReloadUnderLoad reloads the config while registrations keep
// arriving, changing the policy on one store and moving between two
// stores, and checks that no registration fails or is lost and that each
// lands in the store its config named.
//
// The client opens a connection per request: with keep-alive, a POST
// written on an idle connection just as the old server's graceful
// shutdown closes it fails, and net/http does not retry a POST. Nothing
// is retried, so that a retry cannot hide a lost registration.
//
// Some requests still fail at the connection level, a few per reload:
// on Linux Caddy binds a new SO_REUSEPORT socket for each config and
// closes the old one, and the kernel resets the connections still
// waiting in the old socket's accept queue. Such a failure is accepted
// only when it provably lost nothing: the request's client is in neither
// store, and Caddy logged no error, such as a handler panic that net/http
// turned into a closed connection. A response other than 201 always
// fails the test.
func TestStoreReloadUnderLoad(t *testing.T) {
	// Bounds the whole test: a reload or registration that hangs shows
	// up as this deadline, not as a stuck test binary.
	const limit = 2 * time.Minute
	ctx := storeContext(t, limit)

	dir := t.TempDir()
	base := storeSite{
		admin: storeAdmin,
		port:  storePort,
		log:   filepath.Join(dir, "caddy.log"),
	}
	dbA := filepath.Join(dir, "a.db")
	dbB := filepath.Join(dir, "b.db")
	const scoped = "scopes openid profile\n\t\tdefault_scope openid"
	phases := []struct {
		name  string
		db    string
		extra string
		scope string // registered for a request that names none
	}{
		{"initial config", dbA, "", ""},
		{"same store, scope policy", dbA, scoped, "openid"},
		{"other store", dbB, "", ""},
		{"first store again", dbA, "", ""},
		{"other store, scope policy", dbB, scoped, "openid"},
		{"first store, scope policy", dbA, scoped, "openid"},
	}
	config := func(i int) string {
		s := base
		s.db, s.extra = phases[i].db, phases[i].extra
		return s.caddyfile()
	}
	storeStartCaddy(t, config(0))

	// epoch is 2k while phase k's config serves alone and odd while a
	// reload to the next phase is under way. A request that starts and
	// ends in the same even epoch was served by that phase's config.
	var epoch atomic.Int64
	type stamped struct {
		storeReg
		from, to int64
	}
	var mu sync.Mutex
	var created []stamped
	var tally storeTally

	client := base.client(false)
	stop := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		storeHammer(storeWorkers, 0, stop, func() bool {
			from := epoch.Load()
			r := storeRegister(ctx, client, base.url())
			to := epoch.Load()
			tally.add(r)
			if r.ok() {
				mu.Lock()
				created = append(created, stamped{r, from, to})
				mu.Unlock()
			}
			return ctx.Err() == nil
		})
	}()

	// Each phase serves for a while so that both stable requests and
	// requests spanning a reload occur.
	const serve = 400 * time.Millisecond
	time.Sleep(serve)
	for i := 1; i < len(phases) && ctx.Err() == nil; i++ {
		epoch.Store(int64(2*i - 1))
		if err := storeLoadConfig(ctx, storeAdmin, config(i)); err != nil {
			t.Errorf("reloading to %s: %v", phases[i].name, err)
			break
		}
		// Caddy returns from a reload once the old server's shutdown
		// has begun; give its accept loop a moment to stop.
		time.Sleep(100 * time.Millisecond)
		epoch.Store(int64(2 * i))
		time.Sleep(serve)
	}
	close(stop)
	<-loadDone
	if ctx.Err() != nil {
		t.Fatalf("the test did not finish within %s: a reload or a "+
			"registration hung", limit)
	}

	// Requests that got no response are checked against the stores
	// below; every other failure fails the test here.
	_, failed, notes := tally.results()
	var reset, other []storeReg
	for _, r := range failed {
		if r.status == 0 {
			reset = append(reset, r)
		} else {
			other = append(other, r)
		}
	}
	storeReportFailures(t, other, notes)
	storeCheckLog(t, base.log)

	readers := make(map[string]*clientdb.Reader)
	for _, db := range []string{dbA, dbB} {
		r, err := clientdb.OpenReader(db)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		readers[db] = r
	}

	var stable, spanning int
	for _, r := range created {
		var in []string
		for _, db := range []string{dbA, dbB} {
			ok, err := storeHolds(readers[db], r.id, r.secret)
			if err != nil {
				t.Fatalf("looking up %s in %s: %v", r.id, db, err)
			}
			if ok {
				in = append(in, filepath.Base(db))
			}
		}
		if len(in) != 1 {
			t.Errorf("client %s (epochs %d to %d) found in %v, "+
				"want exactly one store", r.id, r.from, r.to, in)
			continue
		}

		if r.from != r.to || r.from%2 == 1 {
			spanning++
			continue
		}
		stable++
		p := phases[r.from/2]
		if in[0] != filepath.Base(p.db) {
			t.Errorf("client %s registered under %q is in %s, want %s",
				r.id, p.name, in[0], filepath.Base(p.db))
		}
		if r.scope != p.scope {
			t.Errorf("client %s registered under %q has scope %q, "+
				"want %q", r.id, p.name, r.scope, p.scope)
		}
	}

	// A request that failed must have registered nothing: its client
	// would be one nobody was told about. Each request names its client
	// uniquely, so the stores show which requests reached a handler.
	failedNames := make(map[string]storeReg)
	for _, r := range reset {
		failedNames[r.name] = r
	}
	var total int
	for _, db := range []string{dbA, dbB} {
		err := readers[db].View(func(tx clientdb.Tx) error {
			return tx.ForEach(func(c *clientdb.Client) error {
				total++
				if r, ok := failedNames[c.Metadata.ClientName]; ok {
					t.Errorf("request %q failed (%s) but its client "+
						"%s is in %s", r.name, r, c.ID,
						filepath.Base(db))
				}
				return nil
			})
		})
		if err != nil {
			t.Fatalf("reading %s: %v", db, err)
		}
	}
	if total != len(created) {
		t.Errorf("the stores hold %d clients, %d were answered 201",
			total, len(created))
	}
	t.Logf("%d reloads, %d registrations: %d within one config, "+
		"%d spanning a reload; %d requests got no response and "+
		"registered nothing", len(phases)-1, len(created), stable,
		spanning, len(reset))
	for i, r := range reset {
		if i == 3 {
			break
		}
		t.Logf("request %q: %v", r.name, r.err)
	}
}

// TestStoreServeAfterCleanup serves a registration with a handler whose
// Cleanup already ran. On a reload Caddy cleans up the old config's
// modules without waiting for the requests they are still serving, so
// those requests must still be able to store their client.
func TestStoreServeAfterCleanup(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{
		Context: context.Background(),
	})
	defer cancel()
	db := filepath.Join(t.TempDir(), "clients.db")
	h := &Handler{Store: db}
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := h.Cleanup(); err != nil {
		t.Fatal(err)
	}

	req := httptest.NewRequest(http.MethodPost, "/register",
		strings.NewReader(storeBody("after cleanup")))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	func() {
		defer func() {
			if v := recover(); v != nil {
				t.Fatalf("request after Cleanup panicked: %v", v)
			}
		}()
		next := caddyhttp.HandlerFunc(func(http.ResponseWriter,
			*http.Request) error {
			t.Error("registration passed to the next handler")
			return nil
		})
		if err := h.ServeHTTP(rec, req, next); err != nil {
			t.Fatalf("ServeHTTP: %v", err)
		}
	}()
	if rec.Code != http.StatusCreated {
		t.Fatalf("status %d, want 201: %s", rec.Code, rec.Body)
	}
	var out struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	n := storeCheckClients(t, db, []storeReg{
		{id: out.ClientID, secret: out.ClientSecret},
	})
	if n != 1 {
		t.Errorf("store holds %d clients, want 1", n)
	}

	// Cleanup stays idempotent.
	if err := h.Cleanup(); err != nil {
		t.Errorf("second Cleanup: %v", err)
	}
}

// TestStoreCrashAfter201 kills a Caddy process with SIGKILL while
// registrations are in flight and checks that every client it answered
// with 201 is in the store and that the file still opens.
func TestStoreCrashAfter201(t *testing.T) {
	ctx := storeContext(t, 3*time.Minute)
	db := filepath.Join(t.TempDir(), "clients.db")
	site := storeSite{admin: storeChildAdmin, port: storeChildPort, db: db}
	child := storeStartChild(t, "^$", envCaddyChild+"="+site.caddyfile())
	if err := child.waitFor("ready", time.Minute); err != nil {
		t.Fatal(err)
	}

	// Kill once this many 201s have arrived; the other workers' requests
	// are in flight at that moment.
	const killAfter = 100
	var (
		tally    storeTally
		killed   atomic.Bool
		inFlight atomic.Int64
		killOnce sync.Once
		atKill   int64
	)
	client := site.client(true)
	storeHammer(storeWorkers, 0, nil, func() bool {
		if killed.Load() {
			return false
		}
		inFlight.Add(1)
		r := storeRegister(ctx, client, site.url())
		inFlight.Add(-1)
		if r.err != nil && killed.Load() {
			return false // cut off by the kill
		}
		if tally.add(r) >= killAfter {
			killOnce.Do(func() {
				atKill = inFlight.Load()
				killed.Store(true)
				if err := child.cmd.Process.Kill(); err != nil {
					tally.fail("killing caddy: " + err.Error())
				}
			})
		}
		return r.ok()
	})
	<-child.done

	created, failed, notes := tally.results()
	storeReportFailures(t, failed, notes)
	if len(created) < killAfter {
		t.Fatalf("%d registrations answered 201 before the kill, "+
			"want at least %d", len(created), killAfter)
	}

	// Requests that were cut off may have been committed too, so the
	// store may hold more clients than were answered.
	n := storeCheckClients(t, db, created)
	if n < len(created) {
		t.Errorf("store holds %d clients, %d were answered 201",
			n, len(created))
	}
	t.Logf("killed with %d requests in flight; %d answered 201, "+
		"store holds %d", atKill, len(created), n)
}

// TestStoreValidateWhileRunning validates, in this process and in another
// one as "caddy validate" would, a config naming the store that a serving
// Caddy is writing, and checks that validation returns and the server
// keeps registering clients.
func TestStoreValidateWhileRunning(t *testing.T) {
	ctx := storeContext(t, 3*time.Minute)
	db := filepath.Join(t.TempDir(), "clients.db")
	site := storeSite{admin: storeAdmin, port: storePort, db: db}
	src := site.caddyfile()
	storeStartCaddy(t, src)

	var tally storeTally
	client := site.client(true)
	warm := make(chan struct{})
	var warmOnce sync.Once
	stop := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		storeHammer(storeWorkers, 0, stop, func() bool {
			r := storeRegister(ctx, client, site.url())
			if tally.add(r) >= 20 {
				warmOnce.Do(func() { close(warm) })
			}
			return r.ok() && ctx.Err() == nil
		})
	}()
	defer func() {
		// Stops the load should a subtest end the test early.
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-loadDone
	}()
	select {
	case <-warm:
	case <-loadDone:
		_, failed, notes := tally.results()
		storeReportFailures(t, failed, notes)
		t.Fatal("the load ended before validation began")
	case <-ctx.Done():
		t.Fatal("no registrations before validation")
	}

	// A validation that takes this long is taken to hang.
	const hang = 30 * time.Second
	inProcess := func() error { return storeValidate(src) }
	inChild := func() error {
		return storeValidateChild(ctx, hang, src)
	}
	tests := []struct {
		name     string
		validate func() error
	}{
		{"in process", inProcess},
		{"child process", inChild},
		{"in process again", inProcess},
		{"child process again", inChild},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := tally.counts()
			done := make(chan error, 1)
			go func() { done <- tc.validate() }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("validating: %v", err)
				}
			case <-time.After(hang):
				t.Fatalf("validation did not return within %s", hang)
			}
			after, _ := tally.counts()
			t.Logf("%d registrations answered 201 during validation",
				after-before)
		})
	}
	close(stop)
	<-loadDone

	// The server answers after the validations too.
	for range 5 {
		tally.add(storeRegister(ctx, client, site.url()))
	}
	created, failed, notes := tally.results()
	storeReportFailures(t, failed, notes)
	if n := storeCheckClients(t, db, created); n != len(created) {
		t.Errorf("store holds %d clients, %d were answered 201",
			n, len(created))
	}
}

// TestStoreReaderDoesNotBlockWriter registers clients while another
// process looks clients up as fast as it can.
func TestStoreReaderDoesNotBlockWriter(t *testing.T) {
	ctx := storeContext(t, 3*time.Minute)
	db := filepath.Join(t.TempDir(), "clients.db")
	site := storeSite{admin: storeAdmin, port: storePort, db: db}
	storeStartCaddy(t, site.caddyfile())

	reader := storeStartChild(t, "^TestHelperReader$",
		envReaderDB+"="+db, envReaderMode+"=loop")
	if err := reader.waitFor("ready", time.Minute); err != nil {
		t.Fatal(err)
	}

	var tally storeTally
	client := site.client(true)
	start := time.Now()
	storeHammer(storeWorkers, storePerWorker, nil, func() bool {
		r := storeRegister(ctx, client, site.url())
		tally.add(r)
		if r.ok() {
			// The reader looks up registered clients, so that its
			// reads hit real records, not only an empty bucket.
			if err := reader.send(r.id); err != nil {
				tally.fail("sending to reader: " + err.Error())
				return false
			}
		}
		return true
	})
	elapsed := time.Since(start)
	lines, err := reader.finish(time.Minute)
	if err != nil {
		t.Fatalf("reader process: %v", err)
	}

	created, failed, notes := tally.results()
	storeReportFailures(t, failed, notes)
	if want := storeWorkers * storePerWorker; len(created) != want {
		t.Errorf("%d registrations answered 201, want %d",
			len(created), want)
	}

	var s storeLoopSummary
	var found bool
	for _, l := range lines {
		if _, err := fmt.Sscanf(l, storeLoopFormat, &s.lookups, &s.hits,
			&s.absent, &s.misses, &s.errors); err == nil {
			found = true
		} else if strings.HasPrefix(l, "error ") {
			t.Errorf("reader: %s", l)
		}
	}
	if !found {
		t.Fatalf("reader printed no summary; its output: %q", lines)
	}
	if s.lookups == 0 {
		t.Error("reader made no lookups")
	}
	if s.misses != 0 || s.errors != 0 {
		t.Errorf("reader: %d lookups of registered clients found "+
			"nothing, %d failed", s.misses, s.errors)
	}
	if n := storeCheckClients(t, db, created); n != len(created) {
		t.Errorf("store holds %d clients, want %d", n, len(created))
	}
	t.Logf("%d registrations in %s (%.0f/s) while the reader made %d "+
		"lookups (%d of registered clients, %d before the first)",
		len(created), elapsed.Round(time.Millisecond),
		float64(len(created))/elapsed.Seconds(), s.lookups, s.hits,
		s.absent)
}

// TestHelperReader is not a test: it is the reader process of the store
// tests, started by them with envReaderDB set.
//
// In mode "answer" it reads "client_id secret" lines on stdin and answers
// each with "ok <client_id>" when the client is found and the secret
// verifies, else "missing <client_id> <reason>". A line with a client ID
// alone is answered "found <client_id> kind=<kind> name=<client_name>".
//
// In mode "loop" it looks clients up without pause, cycling through the
// IDs it reads on stdin, until stdin closes; then it prints a summary in
// storeLoopFormat.
func TestHelperReader(t *testing.T) {
	db := os.Getenv(envReaderDB)
	if db == "" {
		t.Skip("runs only as a child process of the store tests")
	}
	// Open takes a file path or a PostgreSQL URL, as a backend's
	// configuration would.
	r, err := clientdb.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	fmt.Println("ready")

	switch mode := os.Getenv(envReaderMode); mode {
	case "answer":
		storeAnswer(t, r)
	case "loop":
		storeLoop(r)
	default:
		t.Fatalf("unknown reader mode %q", mode)
	}
}

func storeAnswer(t *testing.T, r *clientdb.Reader) {
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		id, secret, withSecret := strings.Cut(sc.Text(), " ")
		c, err := r.Lookup(id)
		switch {
		case err != nil:
			fmt.Printf("missing %s %v\n", id, err)
		case !withSecret:
			fmt.Printf("found %s kind=%s name=%s\n", id, c.Kind,
				c.Metadata.ClientName)
		case !c.VerifySecret(secret, time.Now()):
			fmt.Printf("missing %s secret does not verify\n", id)
		default:
			fmt.Printf("ok %s\n", id)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
}

// storeLoopFormat is the summary line of the reader's loop mode.
const storeLoopFormat = "lookups %d hits %d absent %d misses %d errors %d"

type storeLoopSummary struct {
	lookups, hits, absent, misses, errors int
}

func storeLoop(r *clientdb.Reader) {
	var mu sync.Mutex
	var ids []string
	eof := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			mu.Lock()
			ids = append(ids, sc.Text())
			mu.Unlock()
		}
		close(eof)
	}()

	var s storeLoopSummary
	var firstErr error
	for i := 0; ; i++ {
		select {
		case <-eof:
			fmt.Printf(storeLoopFormat+"\n", s.lookups, s.hits,
				s.absent, s.misses, s.errors)
			if firstErr != nil {
				fmt.Printf("error %v\n", firstErr)
			}
			return
		default:
		}

		// Before the first registration, look up an ID that is never
		// issued: the read still takes the locks and opens the file.
		id := "never-issued"
		mu.Lock()
		if len(ids) > 0 {
			id = ids[i%len(ids)]
		}
		mu.Unlock()

		_, err := r.Lookup(id)
		s.lookups++
		switch {
		case err == nil:
			s.hits++
		case errors.Is(err, clientdb.ErrNotFound) && id == "never-issued":
			s.absent++
		case errors.Is(err, clientdb.ErrNotFound):
			s.misses++
		default:
			s.errors++
			if firstErr == nil {
				firstErr = err
			}
		}
	}
}

// TestHelperValidate is not a test: started by the store tests with
// envValidate set, it validates that Caddyfile as "caddy validate" does
// and prints "valid".
func TestHelperValidate(t *testing.T) {
	src, ok := os.LookupEnv(envValidate)
	if !ok {
		t.Skip("runs only as a child process of the store tests")
	}
	if err := storeValidate(src); err != nil {
		t.Fatal(err)
	}
	fmt.Println("valid")
}

// storeValidate adapts and validates a Caddyfile the way "caddy validate"
// does: every module is provisioned and then cleaned up.
func storeValidate(src string) error {
	adapter := caddyconfig.GetAdapter("caddyfile")
	if adapter == nil {
		return errors.New("caddyfile adapter is not registered")
	}
	raw, _, err := adapter.Adapt([]byte(src), nil)
	if err != nil {
		return fmt.Errorf("adapting: %w", err)
	}
	var cfg *caddy.Config
	if err := caddy.StrictUnmarshalJSON(raw, &cfg); err != nil {
		return fmt.Errorf("decoding config: %w", err)
	}
	return caddy.Validate(cfg)
}

// storeValidateChild runs storeValidate on src in a child process, which
// is killed if it takes longer than limit.
func storeValidateChild(ctx context.Context, limit time.Duration, src string) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, testBinary,
		"-test.run=^TestHelperValidate$", "-test.v")
	cmd.Env = append(os.Environ(), envValidate+"="+src)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("child: %w\n%s", err, storeTail(out))
	}
	if !bytes.Contains(out, []byte("\nvalid\n")) {
		return fmt.Errorf("child did not report a valid config:\n%s",
			storeTail(out))
	}
	return nil
}

// storeSite is the Caddy config of a store test: one site that serves the
// dcr handler and passes everything else to a fixed response.
type storeSite struct {
	admin string // admin endpoint
	port  int    // HTTP port
	db    string // the store
	extra string // more dcr subdirectives, one a line
	log   string // file for Caddy's log; empty: stderr
}

// caddyfile returns the site as a Caddyfile. Logs below WARN are dropped:
// every registration would log a line.
func (s storeSite) caddyfile() string {
	var b strings.Builder
	fmt.Fprintf(&b, "{\n\tadmin %s\n\tpersist_config off\n", s.admin)
	b.WriteString("\tauto_https off\n\tlog {\n")
	if s.log != "" {
		fmt.Fprintf(&b, "\t\toutput file %s\n", s.log)
	}
	b.WriteString("\t\tlevel WARN\n\t}\n}\n\n")

	fmt.Fprintf(&b, "http://:%d {\n", s.port)
	fmt.Fprintf(&b, "\tdcr {\n\t\tstore %s\n\t\trate_limit off\n", s.db)
	if s.extra != "" {
		fmt.Fprintf(&b, "\t\t%s\n", s.extra)
	}
	b.WriteString("\t}\n\trespond \"passed through\" 200\n}\n")
	return b.String()
}

// url returns the registration endpoint of the site.
func (s storeSite) url() string {
	return fmt.Sprintf("http://127.0.0.1:%d/register", s.port)
}

// client returns a client for the load on the site, with a connection
// per request unless keepAlive.
func (s storeSite) client(keepAlive bool) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DisableKeepAlives:   !keepAlive,
			MaxIdleConnsPerHost: storeWorkers,
		},
		Timeout: time.Minute,
	}
}

// storeStartCaddy loads src into caddytest's in-process Caddy, starting it
// if needed. When the test ends it loads an empty config, so that no
// handler is left using the test's store.
func storeStartCaddy(t *testing.T, src string) {
	t.Helper()
	caddytest.NewTester(t).
		WithDefaultOverrides(caddytest.Config{
			LoadRequestTimeout: 30 * time.Second,
		}).
		InitServer(src, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(),
			30*time.Second)
		defer cancel()
		empty := "{\n\tadmin " + storeAdmin + "\n\tpersist_config off\n}\n"
		if err := storeLoadConfig(ctx, storeAdmin, empty); err != nil {
			t.Errorf("unloading the test config: %v", err)
		}
	})
}

// storeLoadConfig replaces the config of the Caddy at admin with the
// Caddyfile src.
func storeLoadConfig(ctx context.Context, admin, src string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		"http://"+admin+"/load", strings.NewReader(src))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "text/caddyfile")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("load: status %d: %s", resp.StatusCode, body)
	}
	return nil
}

// storeContext returns a context that ends after d or with the test.
func storeContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// storeReg is the outcome of one registration request.
type storeReg struct {
	name              string // the client_name sent, unique in the binary
	status            int    // 0 if no response arrived
	id, secret, scope string
	body              string // of a response other than 201
	err               error  // no response, or a 201 that did not decode
}

func (r storeReg) ok() bool {
	return r.err == nil && r.status == http.StatusCreated
}

func (r storeReg) String() string {
	if r.err != nil {
		return fmt.Sprintf("status %d: %v", r.status, r.err)
	}
	return fmt.Sprintf("status %d: %s", r.status, r.body)
}

// storeBody returns a registration that every config of these tests
// accepts and that is issued a secret.
func storeBody(name string) string {
	return fmt.Sprintf(`{"redirect_uris":["http://127.0.0.1:3000/cb"],`+
		`"client_name":%q}`, name)
}

// storeSeq numbers the registrations of the test binary, so that each
// client's name tells which request made it.
var storeSeq atomic.Int64

// storeRegister sends one registration request.
func storeRegister(ctx context.Context, c *http.Client, url string) storeReg {
	r := storeReg{name: fmt.Sprintf("store test %d", storeSeq.Add(1))}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url,
		strings.NewReader(storeBody(r.name)))
	if err != nil {
		r.err = err
		return r
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		r.err = err
		return r
	}
	defer resp.Body.Close()

	r.status = resp.StatusCode
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		r.err = fmt.Errorf("reading response: %w", err)
		return r
	}
	if r.status != http.StatusCreated {
		r.body = string(body)
		return r
	}
	var out struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
		Scope        string `json:"scope"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		r.err = fmt.Errorf("decoding 201 response: %w", err)
		return r
	}
	if out.ClientID == "" || out.ClientSecret == "" {
		r.err = fmt.Errorf("201 response without client_id or "+
			"client_secret: %s", body)
		return r
	}
	r.id, r.secret, r.scope = out.ClientID, out.ClientSecret, out.Scope
	return r
}

// storeHammer runs fn in n goroutines, each up to per times (per 0: no
// limit) until fn returns false or stop is closed, and waits for them.
func storeHammer(n, per int, stop <-chan struct{}, fn func() bool) {
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for i := 0; per == 0 || i < per; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if !fn() {
					return
				}
			}
		})
	}
	wg.Wait()
}

// storeTally collects the outcomes of a load.
type storeTally struct {
	mu      sync.Mutex
	created []storeReg
	failed  []storeReg // answered otherwise than 201, or not at all
	notes   []string   // other failures of the test's machinery
}

// add records r and returns how many registrations succeeded so far.
func (s *storeTally) add(r storeReg) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.ok() {
		s.created = append(s.created, r)
	} else {
		s.failed = append(s.failed, r)
	}
	return len(s.created)
}

func (s *storeTally) fail(msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.notes = append(s.notes, msg)
}

func (s *storeTally) counts() (created, failed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.created), len(s.failed)
}

func (s *storeTally) results() (created, failed []storeReg, notes []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.created), slices.Clone(s.failed),
		slices.Clone(s.notes)
}

// storeReportFailures fails the test for failed requests and notes,
// showing the first few.
func storeReportFailures(t *testing.T, failed []storeReg, notes []string) {
	t.Helper()
	for i, r := range failed {
		if i == 10 {
			break
		}
		t.Errorf("request %q failed: %s", r.name, r)
	}
	if len(failed) > 0 {
		t.Errorf("%d requests failed", len(failed))
	}
	for _, n := range notes {
		t.Error(n)
	}
}

// storeCheckLog fails the test for every error Caddy logged to file, such
// as a handler panic that net/http recovered or a store failure.
func storeCheckLog(t *testing.T, file string) {
	t.Helper()
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return // nothing was logged
	}
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for l := range strings.Lines(string(data)) {
		if !strings.Contains(l, `"level":"error"`) {
			continue
		}
		n++
		if n <= 5 {
			t.Errorf("caddy logged: %.600s", l)
		}
	}
	if n > 0 {
		t.Errorf("caddy logged %d errors", n)
	}
}

// storeCheckClients opens the store at db (a file path or a PostgreSQL
// URL) as another process would,
// checks that every client in created is there with its secret, and
// returns how many clients the store holds.
func storeCheckClients(t *testing.T, db string, created []storeReg) int {
	t.Helper()
	r, err := clientdb.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	var lost int
	for _, c := range created {
		ok, err := storeHolds(r, c.id, c.secret)
		if err != nil {
			t.Fatalf("looking up %s: %v", c.id, err)
		}
		if !ok {
			lost++
			if lost <= 10 {
				t.Errorf("client %s was answered 201 but is not in "+
					"the store with its secret", c.id)
			}
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d clients answered 201 are missing", lost,
			len(created))
	}
	return storeCount(t, r)
}

// storeHolds reports whether the store has the client with this secret.
func storeHolds(r *clientdb.Reader, id, secret string) (bool, error) {
	c, err := r.Lookup(id)
	if errors.Is(err, clientdb.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return c.VerifySecret(secret, time.Now()), nil
}

func storeCount(t *testing.T, r *clientdb.Reader) int {
	t.Helper()
	var n int
	err := r.View(func(tx clientdb.Tx) error {
		n = tx.Count()
		return nil
	})
	if err != nil {
		t.Fatalf("counting clients: %v", err)
	}
	return n
}

// storeChild is this test binary re-executed as a helper process. Its
// stdout arrives line by line on lines; its stdin stays open until finish,
// and helpers exit when it closes.
type storeChild struct {
	cmd *exec.Cmd

	inMu  sync.Mutex
	stdin io.WriteCloser

	lines  chan string
	stderr bytes.Buffer // read only after done is closed
	done   chan struct{}
	err    error // from Wait, set before done is closed
}

// storeStartChild starts the test binary running the tests matching run,
// with env added to its environment. The child is killed when the test
// ends.
func storeStartChild(t *testing.T, run string, env ...string) *storeChild {
	t.Helper()
	cmd := exec.Command(testBinary, "-test.run="+run, "-test.timeout=5m")
	cmd.Env = append(os.Environ(), env...)
	c := &storeChild{
		cmd:   cmd,
		lines: make(chan string, 1<<16),
		done:  make(chan struct{}),
	}
	cmd.Stderr = &c.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting child process: %v", err)
	}
	c.stdin = stdin

	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		c.err = cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		c.cmd.Process.Kill() // fails harmlessly if it has exited
		<-c.done
	})
	return c
}

// send writes one line to the child's stdin.
func (c *storeChild) send(line string) error {
	c.inMu.Lock()
	defer c.inMu.Unlock()
	_, err := io.WriteString(c.stdin, line+"\n")
	return err
}

// waitFor reads the child's output until the line want, and kills the
// child if want does not come within d.
func (c *storeChild) waitFor(want string, d time.Duration) error {
	timeout := time.After(d)
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				<-c.done
				return fmt.Errorf("child exited before printing %q: "+
					"%v\n%s", want, c.err, storeTail(c.stderr.Bytes()))
			}
			if l == want {
				return nil
			}
		case <-timeout:
			c.cmd.Process.Kill()
			<-c.done
			return fmt.Errorf("child printed no %q within %s\n%s", want,
				d, storeTail(c.stderr.Bytes()))
		}
	}
}

// finish closes the child's stdin and returns the rest of its output once
// it exits, killing it if that takes longer than d.
func (c *storeChild) finish(d time.Duration) ([]string, error) {
	c.inMu.Lock()
	c.stdin.Close()
	c.inMu.Unlock()

	var lines []string
	timeout := time.After(d)
	for {
		select {
		case l, ok := <-c.lines:
			if ok {
				lines = append(lines, l)
				continue
			}
			<-c.done
			if c.err != nil {
				return lines, fmt.Errorf("%w\n%s", c.err,
					storeTail(c.stderr.Bytes()))
			}
			return lines, nil
		case <-timeout:
			c.cmd.Process.Kill()
			<-c.done
			return lines, fmt.Errorf("child did not exit within %s\n%s",
				d, storeTail(c.stderr.Bytes()))
		}
	}
}

// storeTail returns the end of a child's output, enough to show an error
// without flooding the log.
func storeTail(b []byte) string {
	const limit = 4 << 10
	if len(b) > limit {
		b = b[len(b)-limit:]
	}
	return string(b)
}

// TestStoreValidateLeavesNoTrace checks that validating a config, as
// "caddy validate" does, changes nothing on disk: no directory, lock file
// or database appears, and no background work (such as the expiry of
// unused clients) touches a store that already exists.
func TestStoreValidateLeavesNoTrace(t *testing.T) {
	dir := t.TempDir()
	fresh := filepath.Join(dir, "fresh", "clients.db")
	existing := filepath.Join(dir, "clients.db")

	// A client registered long ago and never used: an expiry pass would
	// delete it at once.
	w, err := clientdb.NewWriter(existing)
	if err != nil {
		t.Fatal(err)
	}
	old := &clientdb.Client{ID: "old-client", IssuedAt: 1}
	err = w.Update(context.Background(), func(tx clientdb.Tx) error {
		return tx.Create(old)
	})
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(existing)
	if err != nil {
		t.Fatal(err)
	}

	for _, store := range []string{fresh, existing} {
		src := fmt.Sprintf(`{
	admin off
	auto_https off
}
http://localhost:9199 {
	dcr {
		store %s
		rate_limit off
		expire_unused 1h
		enforce {
			token /oauth/token
		}
	}
	respond "backend"
}
`, store)
		if err := storeValidate(src); err != nil {
			t.Fatalf("validate with store %s: %v", store, err)
		}
	}
	// Background work would run in goroutines; give them a moment.
	time.Sleep(200 * time.Millisecond)

	if _, err := os.Stat(filepath.Dir(fresh)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("validation created the store directory: %v", err)
	}
	after, err := os.ReadFile(existing)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("validation changed the existing store")
	}
}
