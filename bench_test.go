package dcr

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
