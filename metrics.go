package dcr

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

// dcrMetrics are the module's Prometheus collectors. Caddy gives every
// loaded config a fresh registry, so the collectors are created once per
// process and registered again on each Provision: their counts outlive a
// config reload, as a counter's must.
//
// No label carries a client ID, an IP address or a store path: every label
// value comes from a small fixed set, and a value outside it is counted as
// "other", so that no request can grow the number of series.
type dcrMetrics struct {
	registrations *prometheus.CounterVec
	management    *prometheus.CounterVec
	rateLimit     prometheus.Counter
	dropped       prometheus.Counter
	hooks         *prometheus.CounterVec
	hookBacklog   *prometheus.GaugeVec
	clients       *clientsCollector
	commitSeconds prometheus.Histogram
	commitChanges prometheus.Histogram
}

// metrics is created once per process; every Provision registers it with
// the config's registry.
var metrics = newDCRMetrics()

// otherLabel is the label value that stands for any value outside a
// label's known set.
const otherLabel = "other"

// Label values the counters accept; see the clamp functions.
var (
	registrationOutcomes = []string{"created", "refused", "failed"}
	managementOps        = []string{"read", "update", "delete"}
	managementOutcomes   = []string{"ok", "refused", "failed"}
	hookOutcomes         = []string{"delivered", "failed", "dropped"}

	// errorCodes are the OAuth 2.0 error codes the module answers with,
	// from RFC 7591, RFC 7592 and RFC 6750.
	errorCodes = []string{
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
)

// newDCRMetrics creates the collectors. It registers nothing.
func newDCRMetrics() *dcrMetrics {
	const ns, sub = "caddy", "dcr"
	m := &dcrMetrics{
		registrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns,
			Subsystem: sub,
			Name:      "registrations_total",
			Help: "Number of client registration requests, by outcome " +
				"and by the OAuth error code of a refusal or failure.",
		}, []string{"outcome", "error"}),

		management: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns,
			Subsystem: sub,
			Name:      "management_operations_total",
			Help: "Number of client configuration requests (RFC 7592), " +
				"by operation and outcome.",
		}, []string{"operation", "outcome"}),

		rateLimit: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns,
			Subsystem: sub,
			Name:      "rate_limited_total",
			Help:      "Number of registration requests refused by the rate limit.",
		}),

		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns,
			Subsystem: sub,
			Name:      "audit_dropped_total",
			Help: "Number of audit events of reads and refusals dropped " +
				"because too many waited to be written.",
		}),

		hooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns,
			Subsystem: sub,
			Name:      "hook_deliveries_total",
			Help: "Number of attempts to deliver events to hooks, by the " +
				"hook's module name and outcome.",
		}, []string{"hook", "outcome"}),

		hookBacklog: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns,
			Subsystem: sub,
			Name:      "hook_backlog_seconds",
			Help: "Age of the oldest event waiting for delivery to the " +
				"hooks of each module name, in seconds; 0 when none waits.",
		}, []string{"hook"}),

		clients: newClientsCollector(storePaths),

		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns,
			Subsystem: sub,
			Name:      "store_commit_duration_seconds",
			Help: "Time one group commit to the client store took, " +
				"from waiting for the lock to the fsync, in seconds.",
			// From a fast SSD's fsync to a disk in trouble.
			Buckets: []float64{
				0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
				0.05, 0.1, 0.25, 0.5, 1,
			},
		}),

		commitChanges: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns,
			Subsystem: sub,
			Name:      "store_commit_changes",
			Help: "Number of changes written by one group commit " +
				"to the client store.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 9), // 1 to 256
		}),
	}

	// Series that exist from the start let rate() and alerts see the
	// first increase instead of a series that appears out of nowhere.
	m.registrations.WithLabelValues("created", "")
	for _, op := range managementOps {
		m.management.WithLabelValues(op, "ok")
	}
	return m
}

// collectors returns every collector of m.
func (m *dcrMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		m.registrations,
		m.management,
		m.rateLimit,
		m.dropped,
		m.hooks,
		m.hookBacklog,
		m.clients,
		m.commitSeconds,
		m.commitChanges,
	}
}

// register registers every collector with reg, the registry of the config
// being provisioned. A collector of m that is already registered there is
// not an error: several dcr handlers in one config, or a Provision that is
// retried, register the same collectors. A nil reg is a no-op.
func (m *dcrMetrics) register(reg *prometheus.Registry) error {
	if reg == nil {
		return nil
	}
	var errs []error
	for _, c := range m.collectors() {
		err := reg.Register(c)
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) && are.ExistingCollector == c {
			continue
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// registration counts one registration request. outcome is "created",
// "refused" or "failed"; code is the OAuth error code of the answer, ""
// for a created client.
func (m *dcrMetrics) registration(outcome, code string) {
	outcome = clamp(outcome, registrationOutcomes)
	if outcome == "created" {
		code = ""
	} else {
		code = clamp(code, errorCodes)
	}
	m.registrations.WithLabelValues(outcome, code).Inc()
}

// managementOp counts one client configuration request. op is "read",
// "update" or "delete"; outcome is "ok", "refused" or "failed".
func (m *dcrMetrics) managementOp(op, outcome string) {
	m.management.WithLabelValues(
		clamp(op, managementOps),
		clamp(outcome, managementOutcomes),
	).Inc()
}

// rateLimited counts one registration request refused by the rate limit.
func (m *dcrMetrics) rateLimited() {
	m.rateLimit.Inc()
}

// auditDropped counts one audit event dropped from a full buffer.
func (m *dcrMetrics) auditDropped() {
	m.dropped.Inc()
}

// hookDelivery counts one attempt to deliver an event to a hook. hook is
// the hook's module name, which the configuration chooses among the
// modules built in; outcome is "delivered", "failed" or "dropped".
func (m *dcrMetrics) hookDelivery(hook, outcome string) {
	m.hooks.WithLabelValues(hook, clamp(outcome, hookOutcomes)).Inc()
}

// hookBacklogAge records the age of the oldest event waiting for the
// hooks of one module name.
func (m *dcrMetrics) hookBacklogAge(hook string, age time.Duration) {
	m.hookBacklog.WithLabelValues(hook).Set(max(age, 0).Seconds())
}

// observeCommit records one group commit to a store: the number of changes
// it wrote and the time it took. It is the writer's commit observer.
func (m *dcrMetrics) observeCommit(changes int, took time.Duration) {
	m.commitSeconds.Observe(took.Seconds())
	m.commitChanges.Observe(float64(changes))
}

// clamp returns v if it is one of known, otherLabel if not.
func clamp(v string, known []string) string {
	for _, k := range known {
		if v == k {
			return v
		}
	}
	return otherLabel
}

// clientsCollector reports the number of live clients, summed over every
// store in use, read at scrape time. One unlabeled value: store paths can
// be long and reveal more of the host than a metric should.
type clientsCollector struct {
	desc *prometheus.Desc

	// paths returns the absolute paths of the stores to count, which
	// storeAt resolves; storePaths outside tests.
	paths func() []string
}

// newClientsCollector returns a collector that counts the clients of the
// stores paths names.
func newClientsCollector(paths func() []string) *clientsCollector {
	return &clientsCollector{
		desc: prometheus.NewDesc(
			"caddy_dcr_clients",
			"Number of live registered clients, disabled ones included, "+
				"in all client stores in use.",
			nil, nil,
		),
		paths: paths,
	}
}

// Describe implements prometheus.Collector.
func (c *clientsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.desc
}

// Collect implements prometheus.Collector. Each store's count is one
// counter read in a read-only transaction. A store that cannot be read is
// left out rather than failing the whole scrape; the read waits at most as
// long as the lock protocol makes any reader wait for a commit.
func (c *clientsCollector) Collect(ch chan<- prometheus.Metric) {
	var total int
	for _, path := range c.paths() {
		n, err := countClients(path)
		if err != nil {
			continue
		}
		total += n
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue,
		float64(total))
}

// countClients returns the number of live clients in the store in use at
// path, or an error if no handler uses it any longer or it cannot be read.
func countClients(path string) (int, error) {
	s, ok := storeAt(path)
	if !ok {
		return 0, fmt.Errorf("store %s is no longer in use", path)
	}
	var n int
	err := s.View(func(tx clientdb.Tx) error {
		n = tx.Count()
		return nil
	})
	return n, err
}

// Interface guards
var _ prometheus.Collector = (*clientsCollector)(nil)
