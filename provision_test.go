package dcr

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// TestProvisionFailureReleasesStore provisions handlers whose settings
// fail late in Provision and checks that the error comes back, that
// Cleanup runs without a panic, and that no store stays in use.
func TestProvisionFailureReleasesStore(t *testing.T) {
	cases := []struct {
		name    string
		handler string // members of the handler's JSON besides store
		want    string
	}{
		{"bad rate_limit_exempt", `"rate_limit_exempt":["not-a-cidr"]`, "rate_limit_exempt"},
		{"zero rate limit", `"rate_limit":{"requests":0,"window":3600000000000}`, "rate_limit"},
		{"bad cors origin", `"cors_origins":["ftp://x"]`, "cors_origins"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			store := filepath.Join(t.TempDir(), "c.db")
			raw := fmt.Sprintf(`{"apps":{"http":{"servers":{"s":{"listen":[":0"],`+
				`"routes":[{"handle":[{"handler":"dcr","store":%q,%s}]}]}}}}}`,
				store, tc.handler)
			var cfg caddy.Config
			if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
				t.Fatal(err)
			}
			err := caddy.Validate(&cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want an error naming %s", err, tc.want)
			}
			if slices.Contains(storePaths(), store) {
				t.Errorf("store %s still in use after the failed Provision", store)
			}
		})
	}
}

// TestLimiterSharedAcrossReload checks that a rate limiter outlives a
// reload that keeps its settings, while handlers with other settings on
// the same store keep their own.
func TestLimiterSharedAcrossReload(t *testing.T) {
	s, key, err := acquireStore(filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { releaseStore(key) })

	a1, ka := s.limiter(1, time.Hour, nil)
	b1, kb := s.limiter(5, time.Minute, nil)
	now := time.Now()
	if ok, _ := a1.allow("192.0.2.1", now); !ok {
		t.Fatal("first request refused")
	}

	// A reload: the new handlers take their limiters before the old
	// ones release theirs.
	a2, _ := s.limiter(1, time.Hour, nil)
	b2, _ := s.limiter(5, time.Minute, nil)
	s.releaseLimiter(ka)
	s.releaseLimiter(kb)
	if a2 != a1 || b2 != b1 {
		t.Fatal("a reload with the same settings got fresh limiters")
	}
	if ok, _ := a2.allow("192.0.2.1", now); ok {
		t.Error("the bucket used before the reload was full again after it")
	}

	// When the last user goes, the limiter goes with it.
	s.releaseLimiter(ka)
	if a3, _ := s.limiter(1, time.Hour, nil); a3 == a1 {
		t.Error("a limiter nobody used any more was kept")
	}
}
