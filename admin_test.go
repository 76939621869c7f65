package dcr

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-dcr/caddy-dcr/clientdb"

	"github.com/caddyserver/caddy/v2"
)

// The admin API tests call the route handler as Caddy's admin endpoint
// would, against the store of a handler set up as in the management
// tests (mgHandler), so that what the API changes can be checked through
// the handler too.

// adFixture is an admin API and a handler sharing one store.
type adFixture struct {
	h     *Handler
	a     *AdminAPI
	clock *mgClock
	logs  *observer.ObservedLogs // the admin API's entries
}

// adSetup returns a fixture; change, if not nil, adjusts the handler.
func adSetup(t *testing.T, change func(*Handler)) *adFixture {
	t.Helper()
	h, clock, _ := mgHandler(t, change)
	core, logs := observer.New(zapcore.DebugLevel)
	a := &AdminAPI{logger: zap.New(core), now: clock.now}
	return &adFixture{h: h, a: a, clock: clock, logs: logs}
}

// adResponse is an answer of the admin API.
type adResponse struct {
	status int
	header http.Header
	body   []byte
}

// obj decodes the answer as a JSON object.
func (r *adResponse) obj(t *testing.T) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("answer %d %q is not a JSON object: %v", r.status, r.body, err)
	}
	return v
}

// errorText returns the "error" member of an error answer.
func (r *adResponse) errorText(t *testing.T) string {
	t.Helper()
	s, _ := r.obj(t)["error"].(string)
	return s
}

// adServe runs r through the admin API and writes a returned error the
// way Caddy's admin endpoint does, which only recognises a
// caddy.APIError value.
func adServe(t *testing.T, a *AdminAPI, r *http.Request) *adResponse {
	t.Helper()
	w := httptest.NewRecorder()
	if err := a.serve(w, r); err != nil {
		apiErr, ok := err.(caddy.APIError)
		if !ok {
			t.Errorf("%s %s returned %T %v, want a caddy.APIError",
				r.Method, r.URL, err, err)
			apiErr = caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(apiErr.HTTPStatus)
		json.NewEncoder(w).Encode(map[string]string{"error": apiErr.Error()})
	}
	return &adResponse{status: w.Code, header: w.Header(), body: w.Body.Bytes()}
}

// do sends a request for the fixture's store to the admin API.
func (f *adFixture) do(t *testing.T, method, target, body string) *adResponse {
	t.Helper()
	sep := "?"
	if strings.Contains(target, "?") {
		sep = "&"
	}
	target += sep + "store=" + url.QueryEscape(f.h.storeKey)
	var r *http.Request
	if body == "" {
		r = httptest.NewRequest(method, target, nil)
	} else {
		r = httptest.NewRequest(method, target, strings.NewReader(body))
	}
	return adServe(t, f.a, r)
}

// want fails the test unless r has the given status.
func (r *adResponse) want(t *testing.T, status int) *adResponse {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d %s, want %d", r.status, r.body, status)
	}
	return r
}

// adNoHashes fails if an answer shows a hash of any kind.
func adNoHashes(t *testing.T, what string, body []byte) {
	t.Helper()
	for _, bad := range []string{"hash", "sha256:"} {
		if bytes.Contains(bytes.ToLower(body), []byte(bad)) {
			t.Errorf("%s shows %q: %s", what, bad, body)
		}
	}
}

// adEvents returns the audit events of the fixture's store.
func (f *adFixture) adEvents(t *testing.T) []clientdb.Event {
	t.Helper()
	r, err := clientdb.OpenReader(f.h.storeKey)
	if err != nil {
		t.Fatal(err)
	}
	events, err := r.EventsSince(0, 1000)
	if err != nil {
		t.Fatalf("reading audit events: %v", err)
	}
	return events
}

// operatorEvents returns the operator's audit events as "op subject",
// and fails unless each was made at one of the given Unix times.
func (f *adFixture) operatorEvents(t *testing.T, times ...int64) []string {
	t.Helper()
	var out []string
	for _, e := range f.adEvents(t) {
		if e.Actor != clientdb.ActorOperator {
			continue
		}
		out = append(out, strings.Join(strings.Fields(e.Op+" "+e.ClientID+" "+e.TokenID), " "))
		if len(times) > 0 && !slices.Contains(times, e.Time) {
			t.Errorf("event %+v made at %d, want one of %d", e, e.Time, times)
		}
	}
	return out
}

// seed stores clients as they are given.
func (f *adFixture) seed(t *testing.T, clients ...*clientdb.Client) {
	t.Helper()
	err := f.h.store.Update(t.Context(), func(tx clientdb.Tx) error {
		for _, c := range clients {
			if err := tx.Create(c); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("seeding clients: %v", err)
	}
}

// adClient returns a stored client with every hash set, so that an
// answer that leaked one would show it.
func adClient(id, name string, disabledAt int64) *clientdb.Client {
	return &clientdb.Client{
		ID:                      id,
		IssuedAt:                1767000000,
		SecretHash:              clientdb.HashSecret("secret-" + id),
		SecretExpiresAt:         1999999999,
		PreviousSecretHash:      clientdb.HashSecret("old-" + id),
		PreviousSecretExpiresAt: 1767000100,
		RegistrationTokenHash:   clientdb.HashSecret("rat-" + id),
		UpdatedAt:               1767000050,
		LastUsedAt:              1767000070,
		DisabledAt:              disabledAt,
		Metadata: clientdb.Metadata{
			RedirectURIs:            []string{"https://app.example/cb"},
			TokenEndpointAuthMethod: "client_secret_basic",
			GrantTypes:              []string{"authorization_code"},
			ResponseTypes:           []string{"code"},
			ClientName:              name,
		},
	}
}

func TestAdminModuleRegistered(t *testing.T) {
	info, err := caddy.GetModule("admin.api.dcr")
	if err != nil {
		t.Fatalf("admin.api.dcr is not registered: %v", err)
	}
	router, ok := info.New().(caddy.AdminRouter)
	if !ok {
		t.Fatalf("admin.api.dcr is %T, not an AdminRouter", info.New())
	}
	// Provision works outside a config, as Caddy calls it for every
	// admin router.
	if p, ok := router.(caddy.Provisioner); ok {
		if err := p.Provision(caddy.Context{}); err != nil {
			t.Fatalf("Provision: %v", err)
		}
	}
	routes := router.Routes()
	if len(routes) != 1 || routes[0].Pattern != "/dcr/" {
		t.Errorf("routes %+v, want one at /dcr/", routes)
	}
}

func TestAdminPickStore(t *testing.T) {
	two := []string{"/srv/a/clients.db", "/srv/b/clients.db"}
	cases := []struct {
		name   string
		param  string
		inUse  []string
		want   string
		status int
		msg    string // part of the error message
	}{
		{"none in use", "", nil, "", 404, "no dcr handler is loaded"},
		{"none in use, one named", "/srv/a/clients.db", nil, "", 404,
			"no dcr handler is loaded"},
		{"one in use", "", two[:1], two[0], 0, ""},
		{"one in use and named", two[0], two[:1], two[0], 0, ""},
		{"two in use", "", two, "", 400, "/srv/a/clients.db, /srv/b/clients.db"},
		{"two in use, one named", two[1], two, two[1], 0, ""},
		{"named unclean", "/srv/b/../b/clients.db", two, two[1], 0, ""},
		{"named but not in use", "/srv/c/clients.db", two, "", 404,
			"no dcr handler uses the client store /srv/c/clients.db"},
		{"relative", "b/clients.db", two, "", 400, "want an absolute path"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pickStore(tc.param, tc.inUse)
			if tc.status == 0 {
				if err != nil || got != tc.want {
					t.Errorf("pickStore = %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			apiErr, ok := err.(caddy.APIError)
			if !ok || apiErr.HTTPStatus != tc.status ||
				!strings.Contains(apiErr.Error(), tc.msg) {
				t.Errorf("pickStore = %q, %#v; want %d naming %q",
					got, err, tc.status, tc.msg)
			}
		})
	}
}

func TestAdminDefaultStore(t *testing.T) {
	// The store pool belongs to the process: a Caddy that an earlier
	// integration test left running holds a store of its own.
	if paths := storePaths(); len(paths) != 0 {
		t.Skipf("stores already in use: %q", paths)
	}
	a := &AdminAPI{logger: zap.NewNop(), now: time.Now}
	r := adServe(t, a, httptest.NewRequest(http.MethodGet, "/dcr/clients", nil))
	if r.status != http.StatusNotFound ||
		!strings.Contains(r.errorText(t), "no dcr handler is loaded") {
		t.Errorf("without a handler: %d %s", r.status, r.body)
	}

	f := adSetup(t, nil)
	f.seed(t, adClient("only", "Only", 0))
	r = adServe(t, f.a, httptest.NewRequest(http.MethodGet, "/dcr/clients/only", nil))
	if r.status != http.StatusOK || r.obj(t)["client_id"] != "only" {
		t.Errorf("with one store: %d %s", r.status, r.body)
	}

	adSetup(t, nil)
	r = adServe(t, f.a, httptest.NewRequest(http.MethodGet, "/dcr/clients/only", nil))
	if r.status != http.StatusBadRequest ||
		!strings.Contains(r.errorText(t), f.h.storeKey) {
		t.Errorf("with two stores: %d %s", r.status, r.body)
	}
}

func TestAdminRoutes(t *testing.T) {
	f := adSetup(t, nil)
	f.seed(t, adClient("c1", "One", 0))

	cases := []struct {
		method, path string
		status       int
		allow        string // for 405
	}{
		{"GET", "/dcr/clients", 200, ""},
		{"POST", "/dcr/clients", 405, "GET"},
		{"GET", "/dcr/clients/c1", 200, ""},
		{"PUT", "/dcr/clients/c1", 405, "DELETE, GET"},
		{"GET", "/dcr/clients/c1/disable", 405, "POST"},
		{"DELETE", "/dcr/clients/c1/rotate-secret", 405, "POST"},
		{"POST", "/dcr/clients/c1/explode", 404, ""},
		{"GET", "/dcr/clients/c1/disable/more", 404, ""},
		{"GET", "/dcr/clients/", 404, ""},
		{"GET", "/dcr/tokens", 200, ""},
		{"PUT", "/dcr/tokens", 405, "GET, POST"},
		{"GET", "/dcr/tokens/t1", 405, "DELETE"},
		{"GET", "/dcr/", 404, ""},
		{"GET", "/dcr/unknown", 404, ""},
		// An escaped slash stays part of the ID.
		{"GET", "/dcr/clients/c1%2Fdisable", 404, ""},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			r := f.do(t, tc.method, tc.path, "")
			if r.status != tc.status {
				t.Fatalf("status %d %s, want %d", r.status, r.body, tc.status)
			}
			if got := r.header.Get("Allow"); got != tc.allow {
				t.Errorf("Allow %q, want %q", got, tc.allow)
			}
			if r.status >= 400 && r.errorText(t) == "" {
				t.Errorf("error answer without a message: %s", r.body)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
		})
	}
}

func TestAdminShowClient(t *testing.T) {
	f := adSetup(t, nil)
	c := adClient("c1", "Shown", 0)
	c.InitialTokenID = "tok-1"
	c.Policy = &clientdb.TokenPolicy{Scopes: []string{"read"}}
	c.Metadata.Localized = map[string]string{"client_name#de": "Gezeigt"}
	f.seed(t, c, adClient("gone", "Gone", 0))
	f.do(t, http.MethodDelete, "/dcr/clients/gone", "").want(t, http.StatusOK)

	r := f.do(t, http.MethodGet, "/dcr/clients/c1", "").want(t, http.StatusOK)
	if cc := r.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q", cc)
	}
	adNoHashes(t, "client view", r.body)
	got := r.obj(t)
	want := map[string]any{
		"client_id":                  "c1",
		"client_id_issued_at":        1767000000.0,
		"client_updated_at":          1767000050.0,
		"last_used_at":               1767000070.0,
		"disabled_at":                0.0,
		"state":                      "active",
		"has_secret":                 true,
		"client_secret_expires_at":   1999999999.0,
		"previous_secret_expires_at": 1767000100.0,
		"initial_token_id":           "tok-1",
		"policy":                     map[string]any{"scopes": []any{"read"}},
		"redirect_uris":              []any{"https://app.example/cb"},
		"token_endpoint_auth_method": "client_secret_basic",
		"grant_types":                []any{"authorization_code"},
		"response_types":             []any{"code"},
		"client_name":                "Shown",
		"client_name#de":             "Gezeigt",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("client view\n got %v\nwant %v", got, want)
	}

	for _, tc := range []struct{ name, path, msg string }{
		{"unknown", "/dcr/clients/nobody", `client "nobody" not found`},
		{"deleted", "/dcr/clients/gone", `client "gone" was deleted`},
		{"implausible", "/dcr/clients/" + strings.Repeat("x", 200), "not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := f.do(t, http.MethodGet, tc.path, "")
			if r.status != http.StatusNotFound || !strings.Contains(r.errorText(t), tc.msg) {
				t.Errorf("status %d %s, want 404 saying %q", r.status, r.body, tc.msg)
			}
		})
	}
}

// adListIDs returns the client IDs and next of a listing answer.
func adListIDs(t *testing.T, r *adResponse) ([]string, string) {
	t.Helper()
	var list struct {
		Clients []struct {
			ID string `json:"client_id"`
		} `json:"clients"`
		Next *string `json:"next"`
	}
	if err := json.Unmarshal(r.body, &list); err != nil {
		t.Fatalf("listing %s: %v", r.body, err)
	}
	if list.Clients == nil || list.Next == nil {
		t.Fatalf("listing lacks clients or next: %s", r.body)
	}
	ids := []string{}
	for _, c := range list.Clients {
		ids = append(ids, c.ID)
	}
	return ids, *list.Next
}

func TestAdminListClients(t *testing.T) {
	f := adSetup(t, nil)
	de := adClient("c5", "Zeta", 0)
	de.Metadata.Localized = map[string]string{"client_name#de": "Spezial Werkzeug"}
	f.seed(t,
		adClient("c1", "Alpha Tool", 0),
		adClient("c2", "beta tool", 1767000200),
		adClient("c3", "Gamma", 0),
		adClient("c4", "TOOLBOX", 1767000300),
		de,
		adClient("c6", "", 0))

	cases := []struct {
		name  string
		query string
		ids   []string
		next  string
	}{
		{"all", "", []string{"c1", "c2", "c3", "c4", "c5", "c6"}, ""},
		{"name in any case", "name=TOOL", []string{"c1", "c2", "c4"}, ""},
		{"localized name", "name=werkzeug", []string{"c5"}, ""},
		{"no match", "name=nothing", []string{}, ""},
		{"active", "state=active", []string{"c1", "c3", "c5", "c6"}, ""},
		{"disabled", "state=disabled", []string{"c2", "c4"}, ""},
		{"name and state", "name=tool&state=disabled", []string{"c2", "c4"}, ""},
		{"first page", "limit=2", []string{"c1", "c2"}, "c2"},
		{"second page", "limit=2&after=c2", []string{"c3", "c4"}, "c4"},
		{"last page, full", "limit=2&after=c4", []string{"c5", "c6"}, ""},
		{"filtered page", "name=tool&limit=2", []string{"c1", "c2"}, "c2"},
		{"filtered last page", "name=tool&limit=2&after=c2", []string{"c4"}, ""},
		{"after a missing ID", "after=c35", []string{"c4", "c5", "c6"}, ""},
		{"limit above the cap", "limit=100000", []string{"c1", "c2", "c3", "c4", "c5", "c6"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := f.do(t, http.MethodGet, "/dcr/clients?"+tc.query, "").want(t, http.StatusOK)
			adNoHashes(t, "listing", r.body)
			ids, next := adListIDs(t, r)
			if !slices.Equal(ids, tc.ids) || next != tc.next {
				t.Errorf("listed %q next %q, want %q next %q", ids, next, tc.ids, tc.next)
			}
		})
	}

	for _, tc := range []struct{ query, msg string }{
		{"state=gone", `state "gone"`},
		{"limit=0", `limit "0"`},
		{"limit=-3", `limit "-3"`},
		{"limit=ten", `limit "ten"`},
	} {
		t.Run("refuses "+tc.query, func(t *testing.T) {
			r := f.do(t, http.MethodGet, "/dcr/clients?"+tc.query, "")
			if r.status != http.StatusBadRequest || !strings.Contains(r.errorText(t), tc.msg) {
				t.Errorf("status %d %s, want 400 naming %s", r.status, r.body, tc.msg)
			}
		})
	}
}

func TestAdminListLimits(t *testing.T) {
	q, err := parseListFilter(url.Values{})
	if err != nil || q.limit != defaultListLimit {
		t.Errorf("default limit %+v, %v; want %d", q, err, defaultListLimit)
	}
	q, err = parseListFilter(url.Values{"limit": {"501"}})
	if err != nil || q.limit != maxListLimit {
		t.Errorf("limit 501 gives %+v, %v; want %d", q, err, maxListLimit)
	}

	// A filter that matches little ends the page after maxListScan
	// clients read, with next saying where to go on.
	old := maxListScan
	maxListScan = 3
	t.Cleanup(func() { maxListScan = old })
	f := adSetup(t, nil)
	f.seed(t, adClient("c1", "x", 0), adClient("c2", "match", 0),
		adClient("c3", "x", 0), adClient("c4", "x", 0), adClient("c5", "match", 0))

	var got []string
	after := ""
	for range 5 {
		r := f.do(t, http.MethodGet, "/dcr/clients?name=match&after="+after, "")
		ids, next := adListIDs(t, r.want(t, http.StatusOK))
		got = append(got, ids...)
		if next == "" {
			break
		}
		after = next
	}
	if !slices.Equal(got, []string{"c2", "c5"}) || after != "c3" {
		t.Errorf("paged %q ending after %q, want c2 c5 after c3", got, after)
	}
}

func TestAdminDisableEnable(t *testing.T) {
	f := adSetup(t, nil)
	c := mgRegister(t, f.h, mgRegBody)
	read := func() int {
		w, _ := mgServe(t, f.h, mgReq(http.MethodGet, "/register/"+c.id, c.bearer(), ""))
		return w.Code
	}

	// The handler has the client cached when the operator acts.
	if code := read(); code != http.StatusOK {
		t.Fatalf("RFC 7592 read before: %d", code)
	}
	steps := []struct {
		path     string
		state    string
		disabled bool
		read     int
	}{
		{"/disable", "disabled", true, http.StatusUnauthorized},
		{"/disable", "disabled", true, http.StatusUnauthorized}, // unchanged
		{"/enable", "active", false, http.StatusOK},
		{"/enable", "active", false, http.StatusOK}, // unchanged
	}
	for i, st := range steps {
		r := f.do(t, http.MethodPost, "/dcr/clients/"+c.id+st.path, "")
		v := r.want(t, http.StatusOK).obj(t)
		adNoHashes(t, st.path, r.body)
		at, _ := v["disabled_at"].(float64)
		if v["state"] != st.state || (at != 0) != st.disabled {
			t.Errorf("step %d %s: state %v disabled_at %v", i, st.path, v["state"], at)
		}
		// A repeated disable keeps the first time.
		if st.disabled && int64(at) != mgEpoch.Unix() {
			t.Errorf("step %d: disabled_at %v, want %d", i, at, mgEpoch.Unix())
		}
		// Refused or admitted at once: the commit cleared the cache.
		if code := read(); code != st.read {
			t.Errorf("step %d %s: RFC 7592 read %d, want %d", i, st.path, code, st.read)
		}
		f.clock.advance(time.Minute)
	}

	// Repeats change nothing and leave no event.
	want := []string{"disable " + c.id, "enable " + c.id}
	got := f.operatorEvents(t, mgEpoch.Unix(), mgEpoch.Add(2*time.Minute).Unix())
	if !slices.Equal(got, want) {
		t.Errorf("operator events %q, want %q", got, want)
	}
	f.adLogged(t, "disable", "client_id", c.id, "ok", "unchanged")
	f.adLogged(t, "enable", "client_id", c.id, "ok", "unchanged")

	for _, path := range []string{"/disable", "/enable"} {
		r := f.do(t, http.MethodPost, "/dcr/clients/nobody"+path, "")
		if r.status != http.StatusNotFound {
			t.Errorf("%s of an unknown client: %d %s", path, r.status, r.body)
		}
	}
}

// adLogged checks the admin API's entries for op in order: one per
// outcome, each with the subject field and never a secret.
func (f *adFixture) adLogged(t *testing.T, op, field, subject string, outcomes ...string) {
	t.Helper()
	var got []string
	for _, e := range f.logs.All() {
		m := e.ContextMap()
		if m["operation"] != op || m[field] != subject {
			continue
		}
		if e.Level != zapcore.InfoLevel || m["store"] != f.h.storeKey {
			t.Errorf("entry %q %v: want info with the store", e.Message, m)
		}
		got = append(got, fmt.Sprint(m["outcome"]))
	}
	if !slices.Equal(got, outcomes) {
		t.Errorf("%s %s logged outcomes %q, want %q", op, subject, got, outcomes)
	}
}

func TestAdminDeleteClient(t *testing.T) {
	f := adSetup(t, nil)
	c := mgRegister(t, f.h, mgRegBody)

	r := f.do(t, http.MethodDelete, "/dcr/clients/"+c.id, "").want(t, http.StatusOK)
	var ts clientdb.Tombstone
	if err := json.Unmarshal(r.body, &ts); err != nil {
		t.Fatal(err)
	}
	if ts.ID != c.id || ts.Reason != clientdb.ReasonDeleted ||
		ts.DeletedAt != f.clock.now().Unix() {
		t.Errorf("tombstone %+v", ts)
	}

	// The client is gone for the handler at once, as an RFC 7592 delete
	// would leave it.
	w, _ := mgServe(t, f.h, mgReq(http.MethodGet, "/register/"+c.id, c.bearer(), ""))
	if w.Code != http.StatusUnauthorized {
		t.Errorf("RFC 7592 read after delete: %d", w.Code)
	}
	r = f.do(t, http.MethodDelete, "/dcr/clients/"+c.id, "")
	if r.status != http.StatusNotFound || !strings.Contains(r.errorText(t), "was deleted") {
		t.Errorf("second delete: %d %s", r.status, r.body)
	}

	got := f.operatorEvents(t, f.clock.now().Unix())
	if !slices.Equal(got, []string{"delete " + c.id}) {
		t.Errorf("operator events %q", got)
	}
	f.adLogged(t, "delete", "client_id", c.id, "ok", "not_found")
}

func TestAdminRotatedClient(t *testing.T) {
	now := mgEpoch
	at := func(d time.Duration) int64 { return now.Add(d).Unix() }
	cases := []struct {
		name         string
		lifetime     time.Duration
		overlap      time.Duration
		expiresAt    int64 // of the current secret; 0: never
		wantExpires  int64
		wantPrevious int64 // 0: the old secret stops at once
	}{
		{"no lifetime, no overlap", 0, 0, 0, 0, 0},
		{"lifetime", time.Hour, 0, 0, at(time.Hour), 0},
		{"overlap", 0, 10 * time.Minute, 0, 0, at(10 * time.Minute)},
		{"overlap past the old expiry", time.Hour, 10 * time.Minute, at(5 * time.Minute),
			at(time.Hour), at(5 * time.Minute)},
		{"overlap within the old expiry", 0, 10 * time.Minute, at(time.Hour),
			0, at(10 * time.Minute)},
		{"old secret expired", 0, 10 * time.Minute, at(-time.Second), 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cur := adClient("c1", "x", 0)
			cur.SecretHash = clientdb.HashSecret("current")
			cur.SecretExpiresAt = tc.expiresAt
			rules := storeSettings{secretLifetime: tc.lifetime, secretOverlap: tc.overlap}

			got := rotatedClient(cur, "fresh", rules, now)
			if got.SecretExpiresAt != tc.wantExpires ||
				got.PreviousSecretExpiresAt != tc.wantPrevious {
				t.Errorf("expires %d, previous until %d; want %d, %d",
					got.SecretExpiresAt, got.PreviousSecretExpiresAt,
					tc.wantExpires, tc.wantPrevious)
			}
			if !got.VerifySecret("fresh", now) {
				t.Error("the new secret is refused")
			}
			oldOK := got.VerifySecret("current", now)
			if oldOK != (tc.wantPrevious != 0) {
				t.Errorf("old secret accepted now: %v", oldOK)
			}
			if got.VerifySecret("old-c1", now) {
				t.Error("the secret of an earlier rotation is still accepted")
			}
			if tc.wantPrevious != 0 &&
				got.VerifySecret("current", time.Unix(tc.wantPrevious, 0)) {
				t.Error("old secret accepted at the end of the overlap")
			}
			if cur.SecretHash != clientdb.HashSecret("current") {
				t.Error("rotatedClient changed its argument")
			}

			// The same rule as an RFC 7592 update under rotate_secret.
			h := &Handler{RotateSecret: true, SecretOverlap: caddy.Duration(tc.overlap),
				policy: &policy{secretLifetime: tc.lifetime}}
			upd, issued := h.applyUpdate(cur, &cur.Metadata, "fresh", "", now)
			if issued != "fresh" || upd.SecretHash != got.SecretHash ||
				upd.SecretExpiresAt != got.SecretExpiresAt ||
				upd.PreviousSecretHash != got.PreviousSecretHash ||
				upd.PreviousSecretExpiresAt != got.PreviousSecretExpiresAt {
				t.Errorf("RFC 7592 rotation differs: %+v, admin %+v", upd, got)
			}
		})
	}
}

func TestAdminRotateSecret(t *testing.T) {
	f := adSetup(t, nil)
	f.h.store.settings.Store(&storeSettings{
		secretLifetime: 24 * time.Hour, secretOverlap: 10 * time.Minute,
	})
	c := mgRegister(t, f.h, mgRegBody)
	pub := mgRegister(t, f.h, `{"redirect_uris":["http://127.0.0.1/cb"],`+
		`"token_endpoint_auth_method":"none"}`)

	r := f.do(t, http.MethodPost, "/dcr/clients/"+c.id+"/rotate-secret", "")
	v := r.want(t, http.StatusOK).obj(t)
	adNoHashes(t, "rotation", r.body)
	secret, _ := v["client_secret"].(string)
	if len(secret) < 43 || secret == c.secret {
		t.Fatalf("client_secret %q", secret)
	}
	now := f.clock.now()
	if v["client_secret_expires_at"] != float64(now.Add(24*time.Hour).Unix()) ||
		v["previous_secret_expires_at"] != float64(now.Add(10*time.Minute).Unix()) {
		t.Errorf("expiry %v, previous %v", v["client_secret_expires_at"],
			v["previous_secret_expires_at"])
	}
	stored := mgStored(t, f.h, c.id)
	if !stored.VerifySecret(secret, now) || !stored.VerifySecret(c.secret, now) ||
		stored.VerifySecret(c.secret, now.Add(10*time.Minute)) {
		t.Error("stored secrets do not follow the rotation")
	}
	// Shown once: a read shows no secret.
	r = f.do(t, http.MethodGet, "/dcr/clients/"+c.id, "").want(t, http.StatusOK)
	if bytes.Contains(r.body, []byte(secret)) || r.obj(t)["client_secret"] != nil {
		t.Errorf("a read shows the secret: %s", r.body)
	}

	r = f.do(t, http.MethodPost, "/dcr/clients/"+pub.id+"/rotate-secret", "")
	if r.status != http.StatusConflict || !strings.Contains(r.errorText(t), "no secret") {
		t.Errorf("public client: %d %s", r.status, r.body)
	}
	if got := mgStored(t, f.h, pub.id); got.HasSecret() {
		t.Error("a public client got a secret")
	}
	r = f.do(t, http.MethodPost, "/dcr/clients/nobody/rotate-secret", "")
	if r.status != http.StatusNotFound {
		t.Errorf("unknown client: %d %s", r.status, r.body)
	}

	got := f.operatorEvents(t, now.Unix())
	if !slices.Equal(got, []string{"rotate_secret " + c.id}) {
		t.Errorf("operator events %q", got)
	}
	f.adLogged(t, "rotate_secret", "client_id", c.id, "ok")
	f.adLogged(t, "rotate_secret", "client_id", pub.id, "refused")
	mgNoSecretsLogged(t, f.logs, secret, c.secret)
}

func TestAdminRotateSecretNoSettings(t *testing.T) {
	// A store no handler provisioned has no rules: a secret that never
	// expires and no overlap.
	f := adSetup(t, nil)
	c := mgRegister(t, f.h, mgRegBody)
	v := f.do(t, http.MethodPost, "/dcr/clients/"+c.id+"/rotate-secret", "").
		want(t, http.StatusOK).obj(t)
	if v["client_secret_expires_at"] != 0.0 || v["previous_secret_expires_at"] != nil {
		t.Errorf("rotation without settings: %v", v)
	}
	if mgStored(t, f.h, c.id).VerifySecret(c.secret, f.clock.now()) {
		t.Error("the old secret is still accepted")
	}
}

func TestAdminCreateTokenRefused(t *testing.T) {
	f := adSetup(t, nil)
	cases := []struct{ name, body, msg string }{
		{"empty body", "", "empty body"},
		{"not JSON", "{", "decoding request"},
		{"unknown member", `{"labl":"x"}`, "labl"},
		{"unknown policy member", `{"policy":{"scope":["a"]}}`, "scope"},
		{"two values", `{} {}`, "more than one JSON value"},
		{"negative max_uses", `{"max_uses":-1}`, "max_uses -1"},
		{"bad expires_in", `{"expires_in":"soon"}`, `expires_in "soon"`},
		{"negative expires_in", `{"expires_in":"-1h"}`, `expires_in "-1h"`},
		{"expires_in under a second", `{"expires_in":"500ms"}`, `expires_in "500ms"`},
		{"long label", `{"label":"` + strings.Repeat("x", 257) + `"}`, "longer than 256"},
		{"control in label", `{"label":"a\nb"}`, "control characters"},
		{"bad scope", `{"policy":{"scopes":["a b"]}}`, `policy.scopes "a b"`},
		{"empty grant type", `{"policy":{"grant_types":[""]}}`, "policy.grant_types"},
		{"URL as host", `{"policy":{"redirect_hosts":["https://a.example"]}}`,
			"policy.redirect_hosts"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := f.do(t, http.MethodPost, "/dcr/tokens", tc.body)
			if r.status != http.StatusBadRequest || !strings.Contains(r.errorText(t), tc.msg) {
				t.Errorf("status %d %s, want 400 naming %q", r.status, r.body, tc.msg)
			}
		})
	}
	r := f.do(t, http.MethodGet, "/dcr/tokens", "").want(t, http.StatusOK)
	if got := r.obj(t)["tokens"]; !reflect.DeepEqual(got, []any{}) {
		t.Errorf("refused requests stored tokens: %v", got)
	}
	if got := f.operatorEvents(t); len(got) != 0 {
		t.Errorf("refused requests left events %q", got)
	}
}

func TestAdminTokens(t *testing.T) {
	f := adSetup(t, func(h *Handler) { h.RequireInitialAccessToken = true })
	now := f.clock.now()

	r := f.do(t, http.MethodPost, "/dcr/tokens", `{"label":"partner a",`+
		`"expires_in":"168h","max_uses":3,"policy":{"scopes":["read"],`+
		`"redirect_hosts":["*.example.com"],"grant_types":["authorization_code"]}}`)
	adNoHashes(t, "token creation", r.want(t, http.StatusCreated).body)
	full := r.obj(t)
	token, _ := full["token"].(string)
	id, _ := full["id"].(string)
	want := map[string]any{
		"token": token, "id": id, "label": "partner a", "state": "active",
		"created_at": float64(now.Unix()),
		"expires_at": float64(now.Add(168 * time.Hour).Unix()),
		"max_uses":   3.0, "uses": 0.0, "revoked_at": 0.0,
		"policy": map[string]any{"scopes": []any{"read"},
			"redirect_hosts": []any{"*.example.com"},
			"grant_types":    []any{"authorization_code"}},
	}
	if !strings.HasPrefix(token, clientdb.InitialTokenPrefix) || id == "" ||
		!reflect.DeepEqual(full, want) {
		t.Errorf("created\n got %v\nwant %v", full, want)
	}

	// Days are accepted, and an empty policy stores none.
	f.clock.advance(time.Second)
	r = f.do(t, http.MethodPost, "/dcr/tokens", `{"expires_in":"2d","policy":{}}`)
	plain := r.want(t, http.StatusCreated).obj(t)
	plainToken, _ := plain["token"].(string)
	plainID, _ := plain["id"].(string)
	if plain["expires_at"] != float64(f.clock.now().Add(48*time.Hour).Unix()) ||
		plain["policy"] != nil || plain["label"] != "" {
		t.Errorf("plain token %v", plain)
	}

	// The token opens registration at the handler.
	w, _ := mgServe(t, f.h, mgReq(http.MethodPost, "/register", "Bearer "+plainToken,
		mgRegBody))
	if w.Code != http.StatusCreated {
		t.Fatalf("registration with the new token: %d %s", w.Code, w.Body.Bytes())
	}

	// The listing shows both, in creation order, with the use counted
	// and without the tokens themselves.
	r = f.do(t, http.MethodGet, "/dcr/tokens", "").want(t, http.StatusOK)
	adNoHashes(t, "token list", r.body)
	for _, tok := range []string{token, plainToken} {
		if bytes.Contains(r.body, []byte(tok)) {
			t.Errorf("the token list shows a token: %s", r.body)
		}
	}
	var list tokenList
	if err := json.Unmarshal(r.body, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Tokens) != 2 || list.Tokens[0].ID != id || list.Tokens[1].ID != plainID ||
		list.Tokens[1].Uses != 1 || list.Tokens[0].Token != "" {
		t.Errorf("token list %s", r.body)
	}

	// Revoked, the token no longer opens registration; revoking again
	// keeps the first time and leaves no second event.
	r = f.do(t, http.MethodDelete, "/dcr/tokens/"+plainID, "").want(t, http.StatusOK)
	if v := r.obj(t); v["state"] != "revoked" ||
		v["revoked_at"] != float64(f.clock.now().Unix()) || v["token"] != nil {
		t.Errorf("revoked token %v", v)
	}
	w, _ = mgServe(t, f.h, mgReq(http.MethodPost, "/register", "Bearer "+plainToken,
		mgRegBody))
	if w.Code != http.StatusUnauthorized {
		t.Errorf("registration with the revoked token: %d", w.Code)
	}
	f.clock.advance(time.Minute)
	v := f.do(t, http.MethodDelete, "/dcr/tokens/"+plainID, "").want(t, http.StatusOK).obj(t)
	if v["revoked_at"] != float64(f.clock.now().Add(-time.Minute).Unix()) {
		t.Errorf("second revocation moved revoked_at: %v", v["revoked_at"])
	}
	f.clock.advance(-time.Minute)
	if r := f.do(t, http.MethodDelete, "/dcr/tokens/nope", ""); r.status != 404 {
		t.Errorf("unknown token: %d %s", r.status, r.body)
	}

	got := f.operatorEvents(t, now.Unix(), now.Unix()+1)
	wantOps := []string{"token_create " + id, "token_create " + plainID,
		"token_revoke " + plainID}
	if !slices.Equal(got, wantOps) {
		t.Errorf("operator events %q, want %q", got, wantOps)
	}
	f.adLogged(t, "token_revoke", "token_id", plainID, "ok", "unchanged")
	f.adLogged(t, "token_create", "token_id", id, "ok")
	mgNoSecretsLogged(t, f.logs, token, plainToken)
}
