package clientdb

import (
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
	"time"
)

func TestNewClientID(t *testing.T) {
	at := time.UnixMilli(1796314153123)
	id := NewClientID(at)
	if len(id) != ClientIDLength {
		t.Fatalf("ID %q has %d characters, want %d", id, len(id), ClientIDLength)
	}
	stamp, err := hex.DecodeString(id[:12])
	if err != nil || strings.ToLower(id[:12]) != id[:12] {
		t.Fatalf("ID %q does not start with 12 lower-case hex digits", id)
	}
	var ms int64
	for _, b := range stamp {
		ms = ms<<8 | int64(b)
	}
	if ms != at.UnixMilli() {
		t.Errorf("ID %q carries %d ms, want %d", id, ms, at.UnixMilli())
	}
	random, err := base64.RawURLEncoding.DecodeString(id[12:])
	if err != nil || len(random) != 16 {
		t.Errorf("ID %q does not end in 16 bytes of base64url: %v", id, err)
	}

	// Distinct, and in the order of their times, whatever the random
	// part; within one millisecond they are still distinct.
	var ids []string
	for i := range 1000 {
		ids = append(ids, NewClientID(at.Add(time.Duration(i/10)*time.Millisecond)))
	}
	for i := 10; i < len(ids); i += 10 {
		if ids[i-1] >= ids[i] && ids[i-1][:12] != ids[i][:12] {
			t.Errorf("ID %q issued before %q sorts after it", ids[i-1], ids[i])
		}
		if ids[i-1][:12] >= ids[i][:12] {
			t.Errorf("time prefix %q not before %q", ids[i-1][:12], ids[i][:12])
		}
	}
	seen := make(map[string]bool)
	for _, id := range ids {
		if seen[id] {
			t.Fatalf("ID %q issued twice", id)
		}
		seen[id] = true
	}

	// A time before the epoch does not wrap around to the far future.
	if got := NewClientID(time.Unix(-5, 0)); got[:12] != "000000000000" {
		t.Errorf("ID before the epoch = %q", got)
	}
}
