package dcr

import (
	"bufio"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The metrics suite scrapes the admin endpoint of the in-process Caddy,
// which serves the registry of the loaded config, as Prometheus would.
// The counters are shared with every other integration test in the
// binary, so the suite checks how they change, never their absolute
// values; the clients gauge reads the store, so it is checked exactly.

// itMetricsURL is where Caddy's admin API serves the config's registry.
const itMetricsURL = "http://localhost:2999/metrics"

// itScrape is one scrape of the module's series.
type itScrape struct {
	values map[string]float64 // by series: name and labels as exposed
	lines  []string           // every caddy_dcr_ line, comments included
}

// scrapeMetrics fetches /metrics in the text format and keeps the
// module's lines.
func (s *itServer) scrapeMetrics(t *testing.T) *itScrape {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, itMetricsURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("scraping metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scraping metrics: status %d", resp.StatusCode)
	}

	sc := &itScrape{values: make(map[string]float64)}
	lines := bufio.NewScanner(resp.Body)
	lines.Buffer(nil, 1<<20)
	for lines.Scan() {
		line := lines.Text()
		if !strings.Contains(line, "caddy_dcr_") {
			continue
		}
		sc.lines = append(sc.lines, line)
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("malformed metrics line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		sc.values[line[:i]] = v
	}
	if err := lines.Err(); err != nil {
		t.Fatalf("reading metrics: %v", err)
	}
	return sc
}

// value returns the value of series, failing if the scrape lacks it.
func (sc *itScrape) value(t *testing.T, series string) float64 {
	t.Helper()
	v, ok := sc.values[series]
	if !ok {
		t.Fatalf("series %s is missing from /metrics; caddy_dcr_ lines:\n%s",
			series, strings.Join(sc.lines, "\n"))
	}
	return v
}

// itRegSeries is the series of registrations with the outcome and the
// error code, as exposed (labels in name order).
func itRegSeries(outcome, code string) string {
	return fmt.Sprintf(`caddy_dcr_registrations_total{error=%q,outcome=%q}`,
		code, outcome)
}

// itManageSeries is the series of management requests with the
// operation and outcome.
func itManageSeries(op, outcome string) string {
	return fmt.Sprintf(
		`caddy_dcr_management_operations_total{operation=%q,outcome=%q}`,
		op, outcome)
}

// itAssertDeltas checks that each series grew by exactly the given amount
// from before to after; a series missing before counts as 0.
func itAssertDeltas(t *testing.T, before, after *itScrape, want map[string]float64) {
	t.Helper()
	for series, d := range want {
		if got := after.value(t, series) - before.values[series]; got != d {
			t.Errorf("%s grew by %v, want %v", series, got, d)
		}
	}
}

// itAssertClientsGauge checks the clients gauge against the store, read
// as another process would read it.
func (s *itServer) itAssertClientsGauge(t *testing.T, sc *itScrape) {
	t.Helper()
	if got, want := sc.value(t, "caddy_dcr_clients"), float64(s.count(t)); got != want {
		t.Errorf("caddy_dcr_clients %v, store holds %v", got, want)
	}
}

// itMetricLabel matches one label pair of an exposed series.
var itMetricLabel = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

// itAssertPrivate checks that no series of the module carries a value
// that identifies a client, a caller or the host: no issued value, no IP,
// no store path, and no label beyond the module's bounded ones.
func (s *itServer) itAssertPrivate(t *testing.T, sc *itScrape, secrets []string) {
	t.Helper()
	// "hook" is the name of a hook module, one of those built in.
	allowed := []string{"outcome", "error", "operation", "le", "hook"}
	forbidden := append([]string{"127.0.0.1", "localhost", s.store}, secrets...)
	for _, line := range sc.lines {
		for _, f := range forbidden {
			if f != "" && strings.Contains(line, f) {
				t.Errorf("metrics line %q contains %q", line, f)
			}
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		for _, m := range itMetricLabel.FindAllStringSubmatch(line, -1) {
			if !slices.Contains(allowed, m[1]) {
				t.Errorf("metrics line %q has label %s", line, m[1])
			}
		}
	}
}

func TestIntegrationMetrics(t *testing.T) {
	s := startDCR(t, "rate_limit off")
	before := s.scrapeMetrics(t)
	s.itAssertClientsGauge(t, before)
	var secrets []string
	keep := func(c *itManaged) {
		secrets = append(secrets, c.id, c.token, c.secret)
	}

	a := s.registerManaged(t, itValidBody)
	keep(a)
	b := s.registerManaged(t, itReg(`"token_endpoint_auth_method":"none"`))
	keep(b)
	s.postRefused(t, itReg(`"grant_types":["password"]`),
		itRefusal{400, "invalid_client_metadata", `"password"`})
	s.postRefused(t, `{"redirect_uris":["http://app.example.com/cb"]}`,
		itRefusal{400, "invalid_redirect_uri", "http://app.example.com/cb"})
	s.postRefused(t, itValidBody, itRefusal{415, "invalid_request", "Content-Type"},
		"Content-Type: text/plain")

	// RFC 7592: a read, a read with a wrong token, a delete.
	itAssertOK(t, s.manage(t, http.MethodGet, a.id, a.token, ""), a.id)
	itAssertUnauthorized(t, s.manage(t, http.MethodGet, a.id, b.token, ""))
	if r := s.manage(t, http.MethodDelete, b.id, b.token, ""); r.status != 204 {
		t.Fatalf("DELETE: status %d, body %s", r.status, r.body)
	}

	after := s.scrapeMetrics(t)
	itAssertDeltas(t, before, after, map[string]float64{
		itRegSeries("created", ""):                        2,
		itRegSeries("refused", "invalid_client_metadata"): 1,
		itRegSeries("refused", "invalid_redirect_uri"):    1,
		itRegSeries("refused", "invalid_request"):         1,
		itManageSeries("read", "ok"):                      1,
		itManageSeries("read", "refused"):                 1,
		itManageSeries("delete", "ok"):                    1,
		"caddy_dcr_rate_limited_total":                    0,
	})
	s.itAssertClientsGauge(t, after)
	if got := after.value(t, "caddy_dcr_clients"); got != 1 {
		t.Errorf("caddy_dcr_clients %v after two registrations and a delete, want 1", got)
	}

	// Two registrations and a delete are at least one commit of at least
	// three changes; background writes may add more.
	commits := after.value(t, "caddy_dcr_store_commit_duration_seconds_count") -
		before.values["caddy_dcr_store_commit_duration_seconds_count"]
	changes := after.value(t, "caddy_dcr_store_commit_changes_sum") -
		before.values["caddy_dcr_store_commit_changes_sum"]
	if commits < 1 || changes < 3 {
		t.Errorf("commits grew by %v and changes by %v, want at least 1 and 3",
			commits, changes)
	}
	for _, series := range []string{
		`caddy_dcr_store_commit_duration_seconds_bucket{le="0.0005"}`,
		`caddy_dcr_store_commit_duration_seconds_bucket{le="1"}`,
		`caddy_dcr_store_commit_duration_seconds_bucket{le="+Inf"}`,
		`caddy_dcr_store_commit_changes_bucket{le="1"}`,
		`caddy_dcr_store_commit_changes_bucket{le="256"}`,
	} {
		after.value(t, series)
	}
	if got := after.value(t, "caddy_dcr_store_commit_changes_count"); got !=
		after.value(t, "caddy_dcr_store_commit_duration_seconds_count") {
		t.Errorf("%v commits by changes, %v by duration: want the same", got,
			after.value(t, "caddy_dcr_store_commit_duration_seconds_count"))
	}
	s.itAssertPrivate(t, after, secrets)
}

// TestIntegrationMetricsReload checks that the counts survive a config
// reload, which brings a fresh registry, and keep counting in it.
func TestIntegrationMetricsReload(t *testing.T) {
	s := startDCR(t, "rate_limit off")
	var secrets []string
	for range 2 {
		c := s.registerManaged(t, itValidBody)
		secrets = append(secrets, c.id, c.token, c.secret)
	}
	s.postRefused(t, itReg(`"grant_types":["password"]`),
		itRefusal{400, "invalid_client_metadata", `"password"`})
	before := s.scrapeMetrics(t)

	// The same counts, not zero, right after the reload.
	s.load(t, "rate_limit off", "secret_lifetime 1h")
	reloaded := s.scrapeMetrics(t)
	for _, series := range []string{
		itRegSeries("created", ""),
		itRegSeries("refused", "invalid_client_metadata"),
		"caddy_dcr_store_commit_duration_seconds_count",
	} {
		got, want := reloaded.value(t, series), before.value(t, series)
		if got < want || want == 0 {
			t.Errorf("%s: %v after the reload, %v before", series, got, want)
		}
	}
	s.itAssertClientsGauge(t, reloaded)

	c := s.registerManaged(t, itValidBody)
	secrets = append(secrets, c.id, c.token, c.secret)
	after := s.scrapeMetrics(t)
	itAssertDeltas(t, reloaded, after, map[string]float64{
		itRegSeries("created", ""):                        1,
		itRegSeries("refused", "invalid_client_metadata"): 0,
	})
	s.itAssertClientsGauge(t, after)
	if got := after.value(t, "caddy_dcr_clients"); got != 3 {
		t.Errorf("caddy_dcr_clients %v, want 3", got)
	}
	s.itAssertPrivate(t, after, secrets)
}

// TestIntegrationMetricsRateLimited checks that every 429 of the rate
// limit is counted, and only those.
func TestIntegrationMetricsRateLimited(t *testing.T) {
	s := startDCR(t, "rate_limit 1 1h")
	before := s.scrapeMetrics(t)

	const n = 4
	var limited int
	for i := range n {
		r := s.post(t, itValidBody)
		switch r.status {
		case http.StatusCreated:
		case http.StatusTooManyRequests:
			limited++
		default:
			t.Fatalf("request %d: status %d, body %s", i, r.status, r.body)
		}
	}
	if limited < n-1 {
		t.Fatalf("%d of %d requests limited under rate_limit 1 1h, want at least %d",
			limited, n, n-1)
	}

	after := s.scrapeMetrics(t)
	itAssertDeltas(t, before, after, map[string]float64{
		"caddy_dcr_rate_limited_total": float64(limited),
		itRegSeries("created", ""):     float64(n - limited),
	})
}
