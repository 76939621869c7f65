package dcr

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-dcr/caddy-dcr/clientdb"

	"github.com/caddyserver/caddy/v2"
)

func TestSealRoundTrip(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	data := sealData("webhook https://x", "evt_1")
	aead := newGCM(key)
	sealed := seal(aead, []byte("s3cret"), data)
	if bytes.Contains(sealed, []byte("s3cret")) {
		t.Fatal("sealed secret holds the plaintext")
	}
	if again := seal(aead, []byte("s3cret"), data); bytes.Equal(again, sealed) {
		t.Error("two seals of one secret are equal: the nonce is not random")
	}
	plain, err := unseal(aead, sealed, data)
	if err != nil || string(plain) != "s3cret" {
		t.Fatalf("unseal: %q, %v", plain, err)
	}

	tests := []struct {
		name   string
		key    []byte
		sealed []byte
		data   []byte
	}{
		{"other key", bytes.Repeat([]byte{8}, 32), sealed, data},
		{"other event", key, sealed, sealData("webhook https://x", "evt_2")},
		{"other queue", key, sealed, sealData("webhook https://y", "evt_1")},
		{"truncated", key, sealed[:5], data},
		{"tampered", key, append(bytes.Clone(sealed[:len(sealed)-1]), 0), data},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := unseal(newGCM(tc.key), tc.sealed, tc.data); !errors.Is(err, errUnsealed) {
				t.Errorf("unseal: %v, want errUnsealed", err)
			}
		})
	}
}

func TestHookBackoff(t *testing.T) {
	tests := []struct {
		failures int
		min, max time.Duration
	}{
		{1, hookBackoffMin * 4 / 5, hookBackoffMin},
		{2, 2 * hookBackoffMin * 4 / 5, 2 * hookBackoffMin},
		{5, 16 * hookBackoffMin * 4 / 5, 16 * hookBackoffMin},
		{30, hookBackoffMax * 4 / 5, hookBackoffMax},
		{1000, hookBackoffMax * 4 / 5, hookBackoffMax},
	}
	for _, tc := range tests {
		for range 50 {
			if got := hookBackoff(tc.failures); got < tc.min || got > tc.max {
				t.Fatalf("hookBackoff(%d) = %s, want %s to %s",
					tc.failures, got, tc.min, tc.max)
			}
		}
	}
}

// testHook is a hook module for tests.
type testHook struct {
	queue string
	key   []byte
}

func (testHook) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "dcr.hooks.test_hook",
		New: func() caddy.Module { return new(testHook) }}
}
func (testHook) Deliver(context.Context, *HookEvent) error { return nil }
func (h testHook) HookQueue() string                       { return h.queue }
func (h testHook) SecretKey() []byte                       { return h.key }

func TestLoadHooks(t *testing.T) {
	key := bytes.Repeat([]byte{1}, 32)
	tests := []struct {
		name    string
		mods    []any
		queues  []string
		wantErr string
	}{
		{"named queues", []any{testHook{queue: "a"}, testHook{queue: "b", key: key}},
			[]string{"a", "b"}, ""},
		{"same queue twice", []any{testHook{queue: "a"}, testHook{queue: "a"}},
			nil, `already uses queue "a"`},
		{"empty queue", []any{testHook{}}, nil, "queue name"},
		{"long queue", []any{testHook{queue: strings.Repeat("q", 201)}}, nil, "queue name"},
		{"short key", []any{testHook{queue: "a", key: key[:16]}}, nil, "16 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hooks, err := loadHooks(tc.mods)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i, hk := range hooks {
				if hk.queue != tc.queues[i] || hk.name != "test_hook" {
					t.Errorf("hook %d: queue %q name %q", i, hk.queue, hk.name)
				}
			}
		})
	}
}

// TestEnqueueEvent writes hook events in a real bbolt store: one entry a
// hook, the client as committed, the secret sealed only for the hook
// with a key and only in created events, nothing for operations hooks do
// not hear of.
func TestEnqueueEvent(t *testing.T) {
	w, err := clientdb.NewWriter(filepath.Join(t.TempDir(), "clients.db"))
	if err != nil {
		t.Fatal(err)
	}
	key := bytes.Repeat([]byte{3}, 32)
	hooks := []*hook{{name: "a", queue: "qa", key: key}, {name: "b", queue: "qb"}}
	c := &clientdb.Client{ID: clientdb.NewClientID(time.Now()), IssuedAt: time.Now().Unix(),
		SecretHash: clientdb.HashSecret("pw"),
		Metadata:   clientdb.Metadata{ClientName: "App", TokenEndpointAuthMethod: "client_secret_basic"}}
	ctx := context.Background()
	err = w.Update(ctx, func(tx clientdb.Tx) error {
		if err := tx.Create(c); err != nil {
			return err
		}
		for _, op := range []string{clientdb.OpCreate, clientdb.OpRead, clientdb.OpTokenCreate} {
			e := &clientdb.Event{Time: c.IssuedAt, Op: op, Actor: clientdb.ActorClient,
				ClientID: c.ID}
			if err := recordEvent(tx, hooks, e, nil, "pw"); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	var qa, qb []clientdb.OutboxEntry
	w.View(func(tx clientdb.Tx) error {
		qa, _ = tx.Pending("qa", 10)
		qb, _ = tx.Pending("qb", 10)
		return nil
	})
	if len(qa) != 1 || len(qb) != 1 {
		t.Fatalf("queues hold %d and %d events, want 1 each", len(qa), len(qb))
	}
	for _, tc := range []struct {
		entry  clientdb.OutboxEntry
		sealed bool
	}{{qa[0], true}, {qb[0], false}} {
		if bytes.Contains(tc.entry.Payload, []byte(`"pw"`)) {
			t.Errorf("queued event holds the plaintext secret: %s", tc.entry.Payload)
		}
		var rec outboxRecord
		if err := json.Unmarshal(tc.entry.Payload, &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Event.Type != EventCreated || rec.Event.ClientID != c.ID {
			t.Errorf("event %+v", rec.Event)
		}
		if (rec.Sealed != nil) != tc.sealed {
			t.Errorf("sealed secret %x, want one: %v", rec.Sealed, tc.sealed)
		}
		if strings.Contains(string(rec.Event.Client), "hash") ||
			!strings.Contains(string(rec.Event.Client), `"client_name":"App"`) {
			t.Errorf("event client %s", rec.Event.Client)
		}
	}
	var rec outboxRecord
	json.Unmarshal(qa[0].Payload, &rec)
	plain, err := unseal(newGCM(key), rec.Sealed, sealData("qa", rec.Event.ID))
	if err != nil || string(plain) != "pw" {
		t.Errorf("unsealed %q, %v", plain, err)
	}
}
