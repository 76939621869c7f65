package dcr

import (
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

// TestAuditBufferBounded checks that the buffer of request events holds
// at most maxPendingEvents and counts what it drops.
func TestAuditBufferBounded(t *testing.T) {
	var b auditBuffer
	before := counterValue(t, metrics.dropped)
	for i := range maxPendingEvents + 10 {
		b.add(&clientdb.Event{Time: int64(i), Op: clientdb.OpRead})
	}
	if got := counterValue(t, metrics.dropped) - before; got != 10 {
		t.Errorf("dropped %v events, want 10", got)
	}
	events := b.take()
	if len(events) != maxPendingEvents || events[0].Time != 0 {
		t.Fatalf("kept %d events starting at %d, want the first %d",
			len(events), events[0].Time, maxPendingEvents)
	}
	if len(b.take()) != 0 {
		t.Error("take left events behind")
	}
}

// TestIntegrationAuditRequests checks that reads and refusals reach the
// store's audit trail, in batches, with their outcome and rule, and
// without the client's ID for a refusal made before any token opened it.
func TestIntegrationAuditRequests(t *testing.T) {
	s := startDCR(t)
	c := s.registerManaged(t, itValidBody)
	s.postRefused(t, `{"redirect_uris":["http://app.example/cb"]}`,
		itRefusal{400, "invalid_redirect_uri", "https"})
	itAssertOK(t, s.manage(t, http.MethodGet, c.id, c.token, ""), c.id)
	if r := s.manage(t, http.MethodGet, c.id, "wrong-token", ""); r.status != 401 {
		t.Fatalf("read with a wrong token: %d", r.status)
	}

	var events []clientdb.Event
	deadline := time.Now().Add(10 * time.Second)
	for {
		all, err := s.reader(t).EventsSince(0, 100)
		if err != nil {
			t.Fatal(err)
		}
		events = all
		if len(events) >= 4 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	type seen struct{ op, outcome, rule, client string }
	var got []seen
	for _, e := range events {
		got = append(got, seen{e.Op, e.Outcome, e.Rule, e.ClientID})
		if e.ClientIP != "127.0.0.1" {
			t.Errorf("event %+v: client_ip %q", e, e.ClientIP)
		}
	}
	want := []seen{
		{clientdb.OpCreate, "", "", c.id},
		{clientdb.OpCreate, "refused", "redirect_uri_https", ""},
		{clientdb.OpRead, "", "", c.id},
		{clientdb.OpRead, "refused", "registration_access_token", ""},
	}
	if len(got) != len(want) {
		t.Fatalf("events %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// counterValue reads a counter's current value.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
