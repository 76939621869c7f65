package dcr

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/caddy-dcr/caddy-dcr/clientdb"

	"github.com/caddyserver/caddy/v2"
)

// FuzzReservedNames feeds client names to the reserved_names policy: it
// must never panic, must answer a refusal or nothing, and must refuse the
// reserved name itself however it is padded.
func FuzzReservedNames(f *testing.F) {
	for _, seed := range []string{
		"Acme", "ACME ", "Αcme", "аcmе", "ＡＣＭＥ", "Ac\u200bme", "A.C.M.E.",
		"Login for Acme", "Macme", "", " ", "\u0301", "\xff\xfe", "𝐀𝐜𝐦𝐞",
	} {
		f.Add(seed)
	}
	p := &PolicyReservedNames{Names: []string{"Acme", "Acme Console"}}
	if err := p.Provision(caddy.Context{}); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, name string) {
		for _, n := range []string{name, " " + name + " Acme "} {
			in := &PolicyInput{Operation: OperationRegister,
				Metadata: &clientdb.Metadata{ClientName: n}}
			err := p.Check(context.Background(), in)
			var pe *PolicyError
			if err != nil && !errors.As(err, &pe) {
				t.Fatalf("Check(%q): %v, want nil or a refusal", n, err)
			}
			if n != name && err == nil {
				t.Fatalf("Check(%q) admitted a name holding the reserved word", n)
			}
		}
	})
}

// FuzzWebhookSignature feeds signature headers to the receivers' check:
// it must never panic, and must accept only a header that carries the
// right HMAC for the body at a time within the tolerance.
func FuzzWebhookSignature(f *testing.F) {
	secret := []byte("fuzz-webhook-secret-0123456789")
	now := time.Unix(1_800_000_000, 0)
	sign := func(t int64, body string) string {
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(strconv.FormatInt(t, 10) + "." + body))
		return hex.EncodeToString(m.Sum(nil))
	}
	good := "t=1800000000,v1=" + sign(now.Unix(), `{"id":"e"}`)
	for _, seed := range []string{
		good, "t=1800000000", "v1=00", "t=,v1=", "t=1800000000,v1=zz",
		"t=-1,v1=" + sign(-1, `{"id":"e"}`), good + ",v1=00", ",,,=,=",
		"t=99999999999999999999,v1=00",
	} {
		f.Add(seed, `{"id":"e"}`)
	}
	f.Fuzz(func(t *testing.T, header, body string) {
		err := VerifyWebhookSignature(secret, header, []byte(body), now, time.Minute)
		if err == nil && header != good && !containsValidSignature(header, body, sign) {
			t.Fatalf("accepted header %q for body %q", header, body)
		}
	})
}

// containsValidSignature reports whether header names a timestamp within
// a minute of the fuzz target's clock and the matching v1 value, as a
// header the check may rightly accept does.
func containsValidSignature(header, body string, sign func(int64, string) string) bool {
	for ts := int64(1_800_000_000 - 60); ts <= 1_800_000_000+60; ts++ {
		if hmacIn(header, sign(ts, body)) {
			return true
		}
	}
	return false
}

// hmacIn reports whether header holds "v1=" followed by sum in any case.
func hmacIn(header, sum string) bool {
	for i := 0; i+3+len(sum) <= len(header); i++ {
		if header[i:i+3] == "v1=" && equalFold(header[i+3:i+3+len(sum)], sum) {
			return true
		}
	}
	return false
}

// equalFold compares ASCII hex strings without regard to case.
func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		x, y := a[i]|0x20, b[i]|0x20
		if x != y {
			return false
		}
	}
	return true
}
