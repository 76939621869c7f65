package dcr

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/caddy-dcr/caddy-dcr/clientdb"

	"github.com/caddyserver/caddy/v2"
)

// hook is one configured hook with the name of its queue in the store.
type hook struct {
	// name is the hook's module name, such as "webhook", for logs and
	// metric labels.
	name string

	// queue names the hook's queue in the store's outbox.
	queue string

	// key seals the plaintext secret of created events while they wait,
	// or is nil when the hook receives no secret.
	key []byte

	// aead is AES-GCM under key, made once.
	aeadOnce sync.Once
	aead     cipher.AEAD

	impl Hook
}

// gcm returns the AES-GCM cipher of the hook's key, which is safe for
// concurrent use.
func (hk *hook) gcm() cipher.AEAD {
	hk.aeadOnce.Do(func() { hk.aead = newGCM(hk.key) })
	return hk.aead
}

// loadHooks turns the loaded modules of the hooks list into hooks, with
// their queue names, refusing two hooks on one queue.
func loadHooks(mods []any) ([]*hook, error) {
	var hooks []*hook
	seen := make(map[string]bool)
	for i, m := range mods {
		impl, ok := m.(Hook)
		if !ok {
			return nil, fmt.Errorf("hook %d: module %T does not implement dcr.Hook", i, m)
		}
		id := m.(caddy.Module).CaddyModule().ID
		hk := &hook{name: id.Name(), impl: impl}
		hk.queue = string(id) + "#" + strconv.Itoa(i)
		if q, ok := m.(HookQueue); ok {
			hk.queue = q.HookQueue()
		}
		if hk.queue == "" || len(hk.queue) > clientdb.MaxQueueName {
			return nil, fmt.Errorf("hook %s: queue name must be 1 to %d bytes",
				id, clientdb.MaxQueueName)
		}
		if seen[hk.queue] {
			return nil, fmt.Errorf("hook %s: another hook already uses queue %q",
				id, hk.queue)
		}
		seen[hk.queue] = true
		if s, ok := m.(SecretReceiver); ok {
			if k := s.SecretKey(); k != nil {
				if len(k) != 32 {
					return nil, fmt.Errorf("hook %s: secret key has %d bytes, want 32",
						id, len(k))
				}
				hk.key = k
			}
		}
		hooks = append(hooks, hk)
	}
	return hooks, nil
}

// hookEventType is the hook event type of an audit operation, or "" for
// operations hooks do not hear of.
func hookEventType(op string) string {
	switch op {
	case clientdb.OpCreate:
		return EventCreated
	case clientdb.OpUpdate:
		return EventUpdated
	case clientdb.OpDelete:
		return EventDeleted
	case clientdb.OpExpire:
		return EventExpired
	case clientdb.OpRotateSecret:
		return EventRotated
	case clientdb.OpDisable:
		return EventDisabled
	case clientdb.OpEnable:
		return EventEnabled
	}
	return ""
}

// outboxRecord is what waits in a hook's queue: the event as committed,
// and the secret of a created event sealed with the hook's key.
type outboxRecord struct {
	Event *HookEvent `json:"event"`

	// Sealed is the AES-256-GCM nonce followed by the sealed secret,
	// with the queue name and the event ID as additional data.
	Sealed []byte `json:"sealed_secret,omitempty"`
}

// hookClient is the client as hook events carry it: the client
// information response without secret or token, and the time an operator
// disabled it.
type hookClient struct {
	registrationResponse
	DisabledAt int64 `json:"disabled_at,omitempty"`
}

// MarshalJSON adds disabled_at to the client information.
func (c hookClient) MarshalJSON() ([]byte, error) {
	info, err := c.registrationResponse.MarshalJSON()
	if err != nil || c.DisabledAt == 0 {
		return info, err
	}
	tail := []byte(`{"disabled_at":` + strconv.FormatInt(c.DisabledAt, 10) + `}`)
	return joinObjects(info, tail), nil
}

// recordEvent appends e to the audit trail and, for a change hooks hear
// of, puts it in every hook's queue, all in tx, so that the event is
// durable exactly when the change is. c is the client as the change left
// it, when the caller has it at hand, or nil to read it from tx. secret is
// the plaintext secret of a created client, for hooks that receive it, or
// "".
func recordEvent(tx clientdb.Tx, hooks []*hook, e *clientdb.Event,
	c *clientdb.Client, secret string) error {
	if err := tx.AppendEvent(e); err != nil {
		return err
	}
	return enqueueEvent(tx, hooks, e, c, secret)
}

// enqueueEvent puts the hook event of e, an audit event already appended
// in tx, in every hook's queue; c and secret are as for recordEvent.
func enqueueEvent(tx clientdb.Tx, hooks []*hook, e *clientdb.Event,
	c *clientdb.Client, secret string) error {
	typ := hookEventType(e.Op)
	if typ == "" || len(hooks) == 0 {
		return nil
	}
	ev := &HookEvent{
		ID:       "evt_" + randomString(16),
		Type:     typ,
		Time:     e.Time,
		ClientID: e.ClientID,
		Actor:    e.Actor,
	}
	if typ != EventDeleted && typ != EventExpired {
		if c == nil {
			var err error
			if c, err = tx.Client(e.ClientID); err != nil {
				return fmt.Errorf("reading client %s for its %s event: %w",
					e.ClientID, typ, err)
			}
		}
		info, err := json.Marshal(hookClient{clientInformation(c), c.DisabledAt})
		if err != nil {
			return fmt.Errorf("encoding client %s for its %s event: %w", e.ClientID, typ, err)
		}
		ev.Client = info
	}

	// The event is encoded once; each hook's record adds only its own
	// sealed secret (an outboxRecord, written out by hand).
	evJSON, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encoding %s event of client %s: %w", typ, e.ClientID, err)
	}
	now := time.Unix(e.Time, 0)
	for _, hk := range hooks {
		payload := make([]byte, 0, len(evJSON)+128)
		payload = append(payload, `{"event":`...)
		payload = append(payload, evJSON...)
		if secret != "" && typ == EventCreated && hk.key != nil {
			sealed := seal(hk.gcm(), []byte(secret), sealData(hk.queue, ev.ID))
			payload = append(payload, `,"sealed_secret":"`...)
			payload = base64.StdEncoding.AppendEncode(payload, sealed)
			payload = append(payload, '"')
		}
		payload = append(payload, '}')
		if _, err := tx.Enqueue(hk.queue, payload, now); err != nil {
			return fmt.Errorf("queueing %s event of client %s for hook %s: %w",
				typ, e.ClientID, hk.name, err)
		}
	}
	return nil
}

// sealData is the additional data a sealed secret is bound to, so that it
// opens only in the queue and the event it was made for.
func sealData(queue, eventID string) []byte {
	return []byte(queue + "\x00" + eventID)
}

// seal encrypts plain with aead, returning the random nonce followed by
// the ciphertext.
func seal(aead cipher.AEAD, plain, data []byte) []byte {
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	rand.Read(nonce) // never fails; it aborts the program instead
	return aead.Seal(nonce, nonce, plain, data)
}

// errUnsealed is returned when a sealed secret does not open, as when the
// hook's key changed while the event waited.
var errUnsealed = errors.New("sealed secret does not open with the hook's key")

// unseal reverses seal.
func unseal(aead cipher.AEAD, sealed, data []byte) ([]byte, error) {
	if len(sealed) < aead.NonceSize() {
		return nil, errUnsealed
	}
	nonce, box := sealed[:aead.NonceSize()], sealed[aead.NonceSize():]
	plain, err := aead.Open(nil, nonce, box, data)
	if err != nil {
		return nil, errUnsealed
	}
	return plain, nil
}

// newGCM returns AES-GCM with a 32-byte key, which loadHooks checked.
func newGCM(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic("dcr: hook key: " + err.Error())
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic("dcr: hook key: " + err.Error())
	}
	return aead
}
