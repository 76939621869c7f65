package dcr

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddy-dcr/caddy-dcr/clientdb"

	"github.com/caddyserver/caddy/v2"
)

// benchBody is a typical registration: an MCP client with a loopback and
// a private-use redirect URI.
const benchBody = `{"client_name":"Bench Client","redirect_uris":` +
	`["http://127.0.0.1:33418/callback","com.example.app:/cb"],` +
	`"grant_types":["authorization_code","refresh_token"],` +
	`"response_types":["code"],"token_endpoint_auth_method":"none",` +
	`"scope":"openid profile","client_uri":"https://app.example.com",` +
	`"contacts":["ops@app.example.com"]}`

// BenchmarkDecodeAndValidate measures the CPU work of a registration
// request before the store: decoding and the policy.
func BenchmarkDecodeAndValidate(b *testing.B) {
	p := defaultPolicy()
	body := []byte(benchBody)
	b.ReportAllocs()
	for b.Loop() {
		m, err := decodeMetadata(body)
		if err != nil {
			b.Fatal(err)
		}
		if err := p.apply(m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRegister measures a whole registration through ServeHTTP,
// including the durable commit, one request at a time.
func BenchmarkRegister(b *testing.B) {
	h, _, _ := mgHandler(b, nil)
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest(http.MethodPost, "/register", strings.NewReader(benchBody))
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		if err := h.ServeHTTP(w, r, nil); err != nil || w.Code != http.StatusCreated {
			b.Fatalf("status %d, err %v: %s", w.Code, err, w.Body)
		}
	}
}

// BenchmarkRegisterParallel is BenchmarkRegister with concurrent
// requests, which group commit serves with fewer fsyncs.
func BenchmarkRegisterParallel(b *testing.B) {
	h, _, _ := mgHandler(b, nil)
	b.SetParallelism(16)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := httptest.NewRequest(http.MethodPost, "/register", strings.NewReader(benchBody))
			r.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			if err := h.ServeHTTP(w, r, nil); err != nil || w.Code != http.StatusCreated {
				b.Errorf("status %d, err %v", w.Code, err)
				return
			}
		}
	})
}

// BenchmarkPolicyReservedNames measures the reserved_names policy on a
// name that is not reserved, the common case, with three names reserved.
func BenchmarkPolicyReservedNames(b *testing.B) {
	p := &PolicyReservedNames{Names: []string{"Acme", "Acme Console", "Example Admin"}}
	if err := p.Provision(caddy.Context{}); err != nil {
		b.Fatal(err)
	}
	in := &PolicyInput{Operation: OperationRegister,
		Metadata: &clientdb.Metadata{ClientName: "Claude Code (my-laptop)"}}
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Check(context.Background(), in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEnqueueEvent measures what a hook adds to a registration's
// transaction, the client read again and its event queued, against an
// in-memory stand-in of a transaction, so that no fsync hides it.
func BenchmarkEnqueueEvent(b *testing.B) {
	c := &clientdb.Client{ID: clientdb.NewClientID(time.Now()), IssuedAt: time.Now().Unix(),
		SecretHash: clientdb.HashSecret("pw")}
	m, perr := decodeMetadata([]byte(benchBody))
	if perr != nil {
		b.Fatal(perr)
	}
	c.Metadata = *m
	tx := &benchTx{client: c}
	hooks := []*hook{{name: "webhook", queue: "webhook bench", key: make([]byte, 32)}}
	e := &clientdb.Event{Time: c.IssuedAt, Op: clientdb.OpCreate,
		Actor: clientdb.ActorClient, ClientID: c.ID}
	b.ReportAllocs()
	for b.Loop() {
		if err := enqueueEvent(tx, hooks, e, nil, "secret"); err != nil {
			b.Fatal(err)
		}
	}
}

// benchTx is the part of a transaction enqueueEvent uses.
type benchTx struct {
	clientdb.Tx
	client *clientdb.Client
}

func (t *benchTx) Client(string) (*clientdb.Client, error) { return t.client, nil }

func (t *benchTx) Enqueue(string, []byte, time.Time) (uint64, error) { return 1, nil }
