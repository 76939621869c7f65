package dcr

import (
	"context"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

// The unit tests use collectors of their own from newDCRMetrics, so that
// the counts they check are not shared with the integration suite, which
// drives the package-level metrics through a real Caddy in the same
// binary.

// metricNames are the names of every family the module exposes.
var metricNames = []string{
	"caddy_dcr_clients",
	"caddy_dcr_management_operations_total",
	"caddy_dcr_rate_limited_total",
	"caddy_dcr_registrations_total",
	"caddy_dcr_store_commit_changes",
	"caddy_dcr_store_commit_duration_seconds",
}

// gatherFamilies gathers reg and returns its families by name.
func gatherFamilies(t *testing.T, reg prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	out := make(map[string]*dto.MetricFamily, len(mfs))
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// seriesValues returns the value of each series of the counter or gauge
// family mf, keyed by its labels as `name="value"` pairs joined by
// commas, in the order the registry sorts them (by label name).
func seriesValues(mf *dto.MetricFamily) map[string]float64 {
	out := make(map[string]float64)
	for _, m := range mf.GetMetric() {
		var pairs []string
		for _, lp := range m.GetLabel() {
			pairs = append(pairs, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
		}
		v := m.GetCounter().GetValue()
		if m.Gauge != nil {
			v = m.GetGauge().GetValue()
		}
		out[strings.Join(pairs, ",")] = v
	}
	return out
}

// collectorValues registers c alone in a fresh registry and returns the
// series of the one family it exposes.
func collectorValues(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	fams := gatherFamilies(t, reg)
	if len(fams) != 1 {
		t.Fatalf("collector exposes %d families, want 1", len(fams))
	}
	for _, mf := range fams {
		return seriesValues(mf)
	}
	return nil
}

// nonZero returns the series of values that are not 0: the ones a test
// incremented, as opposed to those created at start.
func nonZero(values map[string]float64) map[string]float64 {
	out := make(map[string]float64)
	for k, v := range values {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

func TestMetricsRegister(t *testing.T) {
	m := newDCRMetrics()

	if err := m.register(nil); err != nil {
		t.Errorf("register(nil): %v", err)
	}

	// A second dcr handler in the same config registers into the same
	// registry.
	first := prometheus.NewPedanticRegistry()
	for i := range 2 {
		if err := m.register(first); err != nil {
			t.Fatalf("register #%d: %v", i+1, err)
		}
	}
	fams := gatherFamilies(t, first)
	for _, name := range metricNames {
		if fams[name] == nil {
			t.Errorf("%s is not exposed", name)
		}
	}

	// promlint holds the naming and help conventions that Prometheus
	// users expect, such as _total on counters and base units.
	mfs, err := first.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatalf("lint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
}

// TestMetricsRegisterReload checks that the collectors register into the
// fresh registry of a reloaded config and keep counting from where they
// were.
func TestMetricsRegisterReload(t *testing.T) {
	m := newDCRMetrics()
	old := prometheus.NewPedanticRegistry()
	if err := m.register(old); err != nil {
		t.Fatal(err)
	}
	m.registration("created", "")
	m.registration("created", "")
	m.rateLimited()

	reloaded := prometheus.NewPedanticRegistry()
	if err := m.register(reloaded); err != nil {
		t.Fatalf("register after reload: %v", err)
	}
	m.registration("created", "")

	for name, reg := range map[string]*prometheus.Registry{
		"old": old, "reloaded": reloaded,
	} {
		fams := gatherFamilies(t, reg)
		regs := seriesValues(fams["caddy_dcr_registrations_total"])
		if got := regs[`error="",outcome="created"`]; got != 3 {
			t.Errorf("%s registry: %v created, want 3", name, got)
		}
		limited := seriesValues(fams["caddy_dcr_rate_limited_total"])
		if got := limited[""]; got != 1 {
			t.Errorf("%s registry: %v rate limited, want 1", name, got)
		}
	}
}

// TestMetricsRegisterConflict checks that a different collector under one
// of the module's names is reported: the module's series would be missing
// from the scrape, and tolerating it as "already registered" would hide
// that.
func TestMetricsRegisterConflict(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{
		Name: "caddy_dcr_rate_limited_total",
		Help: "Number of registration requests refused by the rate limit.",
	}))
	if err := newDCRMetrics().register(reg); err == nil {
		t.Fatal("register with a foreign collector of the same name: no error")
	}
}

func TestMetricsRegistrationLabels(t *testing.T) {
	tests := []struct {
		name          string
		outcome, code string
		want          string // the series that counts it
	}{
		{"created", "created", "", `error="",outcome="created"`},
		{"created ignores a code", "created", "invalid_request",
			`error="",outcome="created"`},
		{"refused", "refused", "invalid_redirect_uri",
			`error="invalid_redirect_uri",outcome="refused"`},
		{"refused statement", "refused", "unapproved_software_statement",
			`error="unapproved_software_statement",outcome="refused"`},
		{"refused token", "refused", "invalid_token",
			`error="invalid_token",outcome="refused"`},
		{"failed", "failed", "temporarily_unavailable",
			`error="temporarily_unavailable",outcome="failed"`},
		{"unknown code", "refused", "made_up_code",
			`error="other",outcome="refused"`},
		{"refusal without a code", "refused", "",
			`error="other",outcome="refused"`},
		{"code that looks like a client ID", "refused", "Xk2b9Qm4LrT7vW1zYc3d5e",
			`error="other",outcome="refused"`},
		{"unknown outcome", "accepted", "server_error",
			`error="server_error",outcome="other"`},
		{"outcome in another case", "Created", "",
			`error="other",outcome="other"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newDCRMetrics()
			m.registration(tc.outcome, tc.code)
			m.registration(tc.outcome, tc.code)

			got := nonZero(collectorValues(t, m.registrations))
			want := map[string]float64{tc.want: 2}
			if !maps.Equal(got, want) {
				t.Errorf("series %v, want %v", got, want)
			}
		})
	}
}

// TestMetricsRegistrationCodes checks that every error code the module
// answers with is a label value of its own, not lumped into "other".
func TestMetricsRegistrationCodes(t *testing.T) {
	codes := []string{
		"invalid_request",
		"invalid_client_metadata",
		"invalid_redirect_uri",
		"invalid_software_statement",
		"unapproved_software_statement",
		"invalid_token",
		"server_error",
		"temporarily_unavailable",
		"access_denied",
	}
	m := newDCRMetrics()
	for _, code := range codes {
		m.registration("refused", code)
	}
	got := nonZero(collectorValues(t, m.registrations))
	if len(got) != len(codes) {
		t.Errorf("%d series for %d codes: %v", len(got), len(codes), got)
	}
	for _, code := range codes {
		key := fmt.Sprintf(`error=%q,outcome="refused"`, code)
		if got[key] != 1 {
			t.Errorf("%s: %v, want 1", key, got[key])
		}
	}
}

func TestMetricsManagementLabels(t *testing.T) {
	tests := []struct {
		name        string
		op, outcome string
		want        string
	}{
		{"read ok", "read", "ok", `operation="read",outcome="ok"`},
		{"update refused", "update", "refused", `operation="update",outcome="refused"`},
		{"delete failed", "delete", "failed", `operation="delete",outcome="failed"`},
		{"unknown operation", "patch", "ok", `operation="other",outcome="ok"`},
		{"unknown outcome", "read", "created", `operation="read",outcome="other"`},
		{"both unknown", "", "", `operation="other",outcome="other"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newDCRMetrics()
			m.managementOp(tc.op, tc.outcome)

			got := nonZero(collectorValues(t, m.management))
			want := map[string]float64{tc.want: 1}
			if !maps.Equal(got, want) {
				t.Errorf("series %v, want %v", got, want)
			}
		})
	}
}

// TestMetricsInitialSeries checks that the series dashboards rate over
// exist at 0 before anything happened.
func TestMetricsInitialSeries(t *testing.T) {
	m := newDCRMetrics()
	regs := collectorValues(t, m.registrations)
	if v, ok := regs[`error="",outcome="created"`]; !ok || v != 0 {
		t.Errorf("created series: %v, %v; want present at 0", v, ok)
	}
	mgmt := collectorValues(t, m.management)
	for _, op := range managementOps {
		key := fmt.Sprintf(`operation=%q,outcome="ok"`, op)
		if v, ok := mgmt[key]; !ok || v != 0 {
			t.Errorf("%s: %v, %v; want present at 0", key, v, ok)
		}
	}
}

func TestMetricsRateLimited(t *testing.T) {
	m := newDCRMetrics()
	for range 3 {
		m.rateLimited()
	}
	got := collectorValues(t, m.rateLimit)
	if got[""] != 3 {
		t.Errorf("rate limited %v, want 3", got[""])
	}
}

// histogramOf gathers the one histogram c exposes.
func histogramOf(t *testing.T, c prometheus.Collector) *dto.Histogram {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	for _, mf := range gatherFamilies(t, reg) {
		if h := mf.GetMetric()[0].GetHistogram(); h != nil {
			return h
		}
	}
	t.Fatal("no histogram exposed")
	return nil
}

// bucketCounts returns the cumulative count of each bucket of h by its
// upper bound.
func bucketCounts(h *dto.Histogram) map[float64]uint64 {
	out := make(map[float64]uint64)
	for _, b := range h.GetBucket() {
		out[b.GetUpperBound()] = b.GetCumulativeCount()
	}
	return out
}

func TestMetricsObserveCommit(t *testing.T) {
	m := newDCRMetrics()
	m.observeCommit(3, 2*time.Millisecond)
	m.observeCommit(200, 300*time.Millisecond)

	secs := histogramOf(t, m.commitSeconds)
	if secs.GetSampleCount() != 2 {
		t.Errorf("duration count %d, want 2", secs.GetSampleCount())
	}
	if got := secs.GetSampleSum(); math.Abs(got-0.302) > 1e-9 {
		t.Errorf("duration sum %v, want 0.302", got)
	}
	wantSecs := map[float64]uint64{
		0.001: 0, 0.0025: 1, 0.25: 1, 0.5: 2, 1: 2,
	}
	gotSecs := bucketCounts(secs)
	for le, want := range wantSecs {
		if got, ok := gotSecs[le]; !ok || got != want {
			t.Errorf("duration bucket le=%v: %d (present %v), want %d", le, got, ok, want)
		}
	}
	if b := secs.GetBucket(); b[0].GetUpperBound() != 0.0005 {
		t.Errorf("smallest duration bucket %v, want 0.0005", b[0].GetUpperBound())
	}

	changes := histogramOf(t, m.commitChanges)
	if changes.GetSampleCount() != 2 || changes.GetSampleSum() != 203 {
		t.Errorf("changes count %d sum %v, want 2 and 203",
			changes.GetSampleCount(), changes.GetSampleSum())
	}
	var bounds []float64
	for _, b := range changes.GetBucket() {
		bounds = append(bounds, b.GetUpperBound())
	}
	wantBounds := []float64{1, 2, 4, 8, 16, 32, 64, 128, 256}
	if !slices.Equal(bounds, wantBounds) {
		t.Errorf("changes buckets %v, want %v", bounds, wantBounds)
	}
	gotChanges := bucketCounts(changes)
	if gotChanges[2] != 0 || gotChanges[4] != 1 || gotChanges[128] != 1 ||
		gotChanges[256] != 2 {
		t.Errorf("changes buckets %v: want 3 in le=4 and 200 in le=256", gotChanges)
	}
}

// TestMetricsStoreCommitsObserved checks that a commit through a store
// lands in the package-level commit histograms: the store's writer
// reports its commits to them.
func TestMetricsStoreCommitsObserved(t *testing.T) {
	s, key, err := acquireStore(filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { releaseStore(key) })

	secsBefore := histogramOf(t, metrics.commitSeconds).GetSampleCount()
	changesBefore := histogramOf(t, metrics.commitChanges).GetSampleSum()

	if err := s.Create(context.Background(), testClient("observed")); err != nil {
		t.Fatal(err)
	}

	secs := histogramOf(t, metrics.commitSeconds).GetSampleCount()
	if secs < secsBefore+1 {
		t.Errorf("commit durations %d after a commit, want at least %d",
			secs, secsBefore+1)
	}
	if got := histogramOf(t, metrics.commitChanges).GetSampleSum(); got < changesBefore+1 {
		t.Errorf("commit changes sum %v after a commit, want at least %v",
			got, changesBefore+1)
	}
}

// testClient returns a public client with the given ID.
func testClient(id string) *clientdb.Client {
	return &clientdb.Client{
		ID:       id,
		IssuedAt: time.Now().Unix(),
		Metadata: clientdb.Metadata{TokenEndpointAuthMethod: "none"},
	}
}

// clientsGauge returns the value c reports.
func clientsGauge(t *testing.T, c *clientsCollector) float64 {
	t.Helper()
	values := collectorValues(t, c)
	v, ok := values[""]
	if !ok || len(values) != 1 {
		t.Fatalf("clients gauge series %v, want one unlabeled value", values)
	}
	return v
}

func TestMetricsClientsGauge(t *testing.T) {
	dir := t.TempDir()
	a, keyA, err := acquireStore(filepath.Join(dir, "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { releaseStore(keyA) })
	b, keyB, err := acquireStore(filepath.Join(dir, "b.db"))
	if err != nil {
		t.Fatal(err)
	}
	releasedB := false
	t.Cleanup(func() {
		if !releasedB {
			releaseStore(keyB)
		}
	})
	ctx := context.Background()

	// The package-level collector reads every store in use: these two
	// and any the integration suite's Caddy still holds, hence the
	// baseline. Collectors restricted to this test's stores give exact
	// counts.
	only := func(keys ...string) *clientsCollector {
		return newClientsCollector(func() []string { return keys })
	}
	both := only(keyA, keyB)
	baseline := clientsGauge(t, metrics.clients)
	if got := clientsGauge(t, both); got != 0 {
		t.Errorf("empty stores: %v clients, want 0", got)
	}

	for i := range 3 {
		if err := a.Create(ctx, testClient(fmt.Sprintf("client-a-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if got := clientsGauge(t, only(keyA)); got != 3 {
		t.Errorf("store a: %v clients, want 3", got)
	}
	if got := clientsGauge(t, metrics.clients); got != baseline+3 {
		t.Errorf("package-level gauge %v, want %v", got, baseline+3)
	}

	if err := b.Create(ctx, testClient("client-b")); err != nil {
		t.Fatal(err)
	}
	if got := clientsGauge(t, both); got != 4 {
		t.Errorf("both stores: %v clients, want 4", got)
	}

	// A deleted client is no longer live.
	err = a.Update(ctx, func(tx clientdb.Tx) error {
		return tx.Delete("client-a-0", clientdb.ReasonDeleted, time.Now())
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := clientsGauge(t, both); got != 3 {
		t.Errorf("after a delete: %v clients, want 3", got)
	}

	// A store that cannot be read is left out, not failing the scrape.
	garbage := []byte(strings.Repeat("garbage!", 1024))
	if err := os.WriteFile(keyB, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := clientsGauge(t, both); got != 2 {
		t.Errorf("with store b unreadable: %v clients, want 2", got)
	}

	// A store no handler uses any longer is not counted.
	if err := releaseStore(keyB); err != nil {
		t.Fatal(err)
	}
	releasedB = true
	if got := clientsGauge(t, both); got != 2 {
		t.Errorf("with store b released: %v clients, want 2", got)
	}
	if got := clientsGauge(t, only("/nonexistent/store.db")); got != 0 {
		t.Errorf("unknown store: %v clients, want 0", got)
	}
}
