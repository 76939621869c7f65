package dcr

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

// hookSecret is the webhook signing key of the hook tests.
const hookSecret = "hook-test-signing-key-0123456789"

// hookReceiver is a webhook receiver a test can take down and bring back.
// While down it answers 503, as a backend in trouble would.
type hookReceiver struct {
	t   *testing.T
	srv *httptest.Server
	up  atomic.Bool

	mu       sync.Mutex
	events   []HookEvent // delivered, in the order they arrived
	ids      map[string]int
	attempts int
	bad      []string // what was wrong with a delivery
}

// newHookReceiver starts a receiver, down or up.
func newHookReceiver(t *testing.T, up bool) *hookReceiver {
	hr := &hookReceiver{t: t, ids: make(map[string]int)}
	hr.up.Store(up)
	hr.srv = httptest.NewServer(http.HandlerFunc(hr.serve))
	t.Cleanup(hr.srv.Close)
	return hr
}

// serve takes one delivery: it checks the signature and records the
// event once the receiver is up.
func (hr *hookReceiver) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	hr.mu.Lock()
	defer hr.mu.Unlock()
	hr.attempts++
	if !hr.up.Load() {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	if err != nil {
		hr.bad = append(hr.bad, "reading body: "+err.Error())
		return
	}
	err = VerifyWebhookSignature([]byte(hookSecret), r.Header.Get("X-DCR-Signature"),
		body, time.Now(), time.Minute)
	if err != nil {
		hr.bad = append(hr.bad, fmt.Sprintf("signature of %s: %v", body, err))
	}
	var ev HookEvent
	if err := json.Unmarshal(body, &ev); err != nil {
		hr.bad = append(hr.bad, fmt.Sprintf("body %s: %v", body, err))
	}
	if got := r.Header.Get("X-DCR-Event-ID"); got != ev.ID {
		hr.bad = append(hr.bad, fmt.Sprintf("X-DCR-Event-ID %q for event %q", got, ev.ID))
	}
	hr.ids[ev.ID]++
	if hr.ids[ev.ID] > 1 {
		hr.bad = append(hr.bad, "event "+ev.ID+" delivered again")
	}
	hr.events = append(hr.events, ev)
	w.WriteHeader(http.StatusNoContent)
}

// wait waits until n events arrived and returns them, failing the test
// after a minute: back-off after a long outage is several seconds.
func (hr *hookReceiver) wait(n int) []HookEvent {
	hr.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		hr.mu.Lock()
		got, bad := slices.Clone(hr.events), slices.Clone(hr.bad)
		hr.mu.Unlock()
		if len(bad) > 0 {
			hr.t.Fatalf("bad deliveries: %s", strings.Join(bad, "; "))
		}
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			hr.t.Fatalf("%d events arrived within a minute, want %d: %+v", len(got), n, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitAttempts waits until the receiver was tried at least n times.
func (hr *hookReceiver) waitAttempts(n int) {
	hr.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		hr.mu.Lock()
		got := hr.attempts
		hr.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			hr.t.Fatalf("receiver tried %d times within 30s, want %d", got, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// hookConfig returns the dcr subdirective of a webhook to url.
func hookConfig(url string, includeSecret bool) string {
	s := "hook webhook " + url + " {\n\t\t\tsecret " + hookSecret + "\n"
	if includeSecret {
		s += "\t\t\tinclude_secret\n"
	}
	return s + "\t\t}\n"
}

// hookWant is what one delivered event must be.
type hookWant struct {
	typ    string
	client string
	secret string // the plaintext the event must carry, or ""
}

// hookCheck compares delivered events with want, in order.
func hookCheck(t *testing.T, got []HookEvent, want []hookWant) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d events delivered, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		ev := got[i]
		if ev.Type != w.typ || ev.ClientID != w.client {
			t.Errorf("event %d: %s of %s, want %s of %s", i, ev.Type, ev.ClientID,
				w.typ, w.client)
		}
		if ev.ClientSecret != w.secret {
			t.Errorf("event %d (%s): client_secret %q, want %q", i, ev.Type,
				ev.ClientSecret, w.secret)
		}
		if ev.ID == "" || ev.Time == 0 || ev.Actor == "" {
			t.Errorf("event %d: id %q, time %d, actor %q: all must be set",
				i, ev.ID, ev.Time, ev.Actor)
		}
		gone := ev.Type == EventDeleted || ev.Type == EventExpired
		if gone != (ev.Client == nil) {
			t.Errorf("event %d (%s): client %s", i, ev.Type, ev.Client)
		}
		if ev.Client == nil {
			continue
		}
		var c map[string]any
		if err := json.Unmarshal(ev.Client, &c); err != nil {
			t.Fatalf("event %d: client %s: %v", i, ev.Client, err)
		}
		if c["client_id"] != w.client {
			t.Errorf("event %d: client.client_id %v, want %s", i, c["client_id"], w.client)
		}
		for _, k := range []string{"client_secret", "registration_access_token",
			"client_secret_hash", "registration_access_token_hash"} {
			if _, ok := c[k]; ok {
				t.Errorf("event %d: client carries %s", i, k)
			}
		}
	}
}

// TestIntegrationHooksWebhook registers, updates and deletes clients while
// the webhook receiver is down: every answer comes at once, and once the
// receiver is back every event arrives, once, in order, signed, with the
// plaintext secret only in created events.
func TestIntegrationHooksWebhook(t *testing.T) {
	recv := newHookReceiver(t, false)
	s := startDCR(t, "rate_limit off", "rotate_secret on",
		hookConfig(recv.srv.URL+"/events", true))

	a := s.registerManaged(t, itValidBody)
	b := s.registerManaged(t, itValidBody)
	pub := s.registerManaged(t, itReg(`"token_endpoint_auth_method":"none"`))

	upd := `{"redirect_uris":["https://app.example.com/cb"],` +
		`"client_name":"Renamed","client_id":"` + a.id +
		`","client_secret":"` + a.secret + `"}`
	r := s.manage(t, http.MethodPut, a.id, a.token, upd)
	if r.status != http.StatusOK {
		t.Fatalf("update: status %d: %s", r.status, r.body)
	}
	rotated := itString(t, r.obj, "client_secret")
	if r := s.manage(t, http.MethodDelete, b.id, b.token, ""); r.status != http.StatusNoContent {
		t.Fatalf("delete: status %d: %s", r.status, r.body)
	}

	// The receiver was tried and refused; nothing arrived yet, and the
	// backlog shows.
	recv.waitAttempts(2)
	backlog := `caddy_dcr_hook_backlog_seconds{hook="webhook"}`
	if age := s.scrapeMetrics(t).value(t, backlog); age <= 0 {
		t.Errorf("%s = %v while events wait, want more than 0", backlog, age)
	}
	recv.up.Store(true)
	got := recv.wait(6)
	hookCheck(t, got, []hookWant{
		{EventCreated, a.id, a.secret},
		{EventCreated, b.id, b.secret},
		{EventCreated, pub.id, ""},
		{EventUpdated, a.id, ""},
		{EventRotated, a.id, ""},
		{EventDeleted, b.id, ""},
	})
	if rotated == a.secret {
		t.Fatal("the update did not rotate the secret")
	}
	var upc map[string]any
	json.Unmarshal(got[3].Client, &upc)
	if upc["client_name"] != "Renamed" {
		t.Errorf("updated event: client_name %v, want the committed name", upc["client_name"])
	}

	// Nothing more comes: each event was taken once and left the queue.
	time.Sleep(1500 * time.Millisecond)
	if n := len(recv.wait(6)); n != 6 {
		t.Errorf("%d events delivered in all, want 6", n)
	}
	s.checkQueuesEmpty(t)
	if age := s.scrapeMetrics(t).value(t, backlog); age != 0 {
		t.Errorf("%s = %v once every event was delivered, want 0", backlog, age)
	}
}

// checkQueuesEmpty checks that no hook event waits in the store.
func (s *itServer) checkQueuesEmpty(t *testing.T) {
	t.Helper()
	var stale bool
	err := s.reader(t).View(func(tx clientdb.Tx) error {
		stale = tx.HasOutboxBefore(time.Now().Add(time.Hour))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if stale {
		t.Error("hook events still wait in the store after delivery")
	}
}

// TestIntegrationHooksWithoutSecret checks that a webhook without
// include_secret never receives a secret.
func TestIntegrationHooksWithoutSecret(t *testing.T) {
	recv := newHookReceiver(t, true)
	s := startDCR(t, hookConfig(recv.srv.URL, false))
	c := s.registerManaged(t, itValidBody)
	if c.secret == "" {
		t.Fatal("the client got no secret")
	}
	hookCheck(t, recv.wait(1), []hookWant{{EventCreated, c.id, ""}})
}

// hookSite is the Caddy child process of the restart test.
var hookSite = storeSite{admin: "localhost:2993", port: 9196}

// TestIntegrationHooksRestart kills Caddy while events wait for a receiver
// that is down, starts it again on the same store, and brings the
// receiver back: every event arrives once, in order, with its secret.
func TestIntegrationHooksRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Caddy processes")
	}
	recv := newHookReceiver(t, false)
	dir := t.TempDir()
	site := hookSite
	site.db = filepath.Join(dir, "clients.db")
	site.extra = hookConfig(recv.srv.URL, true)
	site.log = filepath.Join(dir, "caddy.log")

	first := storeStartChild(t, "^$", envCaddyChild+"="+site.caddyfile())
	if err := first.waitFor("ready", time.Minute); err != nil {
		t.Fatal(err)
	}
	var want []hookWant
	for range 5 {
		status, obj := fleetDo(t, site, http.MethodPost, "/register", "", itValidBody)
		if status != http.StatusCreated {
			t.Fatalf("registration: status %d: %v", status, obj)
		}
		want = append(want, hookWant{EventCreated, obj["client_id"].(string),
			obj["client_secret"].(string)})
	}
	recv.waitAttempts(1)
	first.cmd.Process.Kill()
	<-first.done

	second := storeStartChild(t, "^$", envCaddyChild+"="+site.caddyfile())
	if err := second.waitFor("ready", time.Minute); err != nil {
		t.Fatal(err)
	}
	recv.up.Store(true)
	hookCheck(t, recv.wait(5), want)
}

// TestIntegrationHooksAdminAndExpiry checks the events of changes that
// come through no registration request: an operator's disable, enable,
// secret rotation and delete through the admin API, and the expiry of
// unused clients by the server.
func TestIntegrationHooksAdminAndExpiry(t *testing.T) {
	clock := itUseClock(t)
	recv := newHookReceiver(t, true)
	opts := append([]string{"expire_unused 1h", hookConfig(recv.srv.URL, false)},
		itEnforce()...)
	s := startDCR(t, opts...)

	a := s.registerManaged(t, itValidBody)
	b := s.registerManaged(t, itValidBody)
	s.itCLI(t, "disable", a.id)
	s.itCLI(t, "enable", a.id)
	s.itCLI(t, "rotate-secret", a.id)
	s.itCLI(t, "delete", b.id)
	hookCheck(t, recv.wait(6), []hookWant{
		{EventCreated, a.id, ""},
		{EventCreated, b.id, ""},
		{EventDisabled, a.id, ""},
		{EventEnabled, a.id, ""},
		{EventRotated, a.id, ""},
		{EventDeleted, b.id, ""},
	})

	// Two hours on, a is unused and expires when a new config starts.
	clock.advance(2 * time.Hour)
	s.load(t, append(opts, "audit_retention 2000h")...)
	s.request(t, http.MethodGet, "/api", nil)
	got := recv.wait(7)
	hookCheck(t, got[6:], []hookWant{{EventExpired, a.id, ""}})
	if got[6].Actor != "system" {
		t.Errorf("expired event: actor %q, want system", got[6].Actor)
	}
}
