package dcr

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-dcr/caddy-dcr/clientdb"

	"github.com/caddyserver/caddy/v2"
)

// stores holds one sharedStore per store, keyed by the absolute path of a
// bbolt file or the password-free address of a PostgreSQL database, shared
// by every handler instance that names it. During a config reload the old
// and the new instance both serve requests for a while; sharing one store
// lets their registrations commit in the same groups, or share one pool.
var stores = caddy.NewUsagePool()

// sharedStore is the client store as the handler uses it: a bbolt file
// written through clientdb's group-commit writer, which holds no file open
// between commits so that other processes can read the file, or a
// PostgreSQL database shared by a fleet.
type sharedStore struct {
	db clientdb.Store

	// cached is set when every change to the store goes through db, so
	// that the cache is invalidated on each commit: true for a bbolt
	// file. Other Caddy instances change a PostgreSQL store without
	// telling this one, so its lookups always read the database.
	cached bool

	// name identifies the store in logs: its file path, or the
	// database's address without the password.
	name string

	// logger reports outages, once each: down is set while the store
	// is unreachable, since downSince (Unix nanoseconds).
	logger    atomic.Pointer[zap.Logger]
	down      atomic.Bool
	downSince atomic.Int64

	// postgres is the database of a PostgreSQL store, else nil.
	postgres *clientdb.Postgres

	// busy counts the operations running on the store, so that a pool
	// no config uses any more is closed once they are done.
	busy atomic.Int64

	// cache holds recent lookups when cached is set.
	cache clientCache

	// usage is the use of clients not yet written. It lives with the
	// store, not the handler, so that after a reload the new handler's
	// expiry pass writes what the old one saw before judging clients.
	usage usageTracker

	// audit buffers the audit events of reads and refusals.
	audit auditBuffer

	// hooks is the delivery state of the store's hook queues.
	hooks hookQueues

	// settings are the secret rules of the handler that last provisioned
	// with this store, for operations that do not come through a
	// handler, such as the admin API's secret rotation.
	settings atomic.Pointer[storeSettings]

	// limiters are the rate limiters of the handlers using the store,
	// by their settings, with the number of handlers using each. They
	// outlive a reload that keeps the settings, since the new handler
	// takes its use before the old one gives up its own.
	limitersMu sync.Mutex
	limiters   map[string]*limiterUse
}

// limiterUse is a shared rate limiter and its number of users.
type limiterUse struct {
	limiter *rateLimiter
	users   int
}

// limiter returns the store's rate limiter for these settings and the key
// to release it with, creating it on first use.
func (s *sharedStore) limiter(n int, window time.Duration,
	exempt []netip.Prefix) (*rateLimiter, string) {
	key := fmt.Sprint(n, window, exempt)
	s.limitersMu.Lock()
	defer s.limitersMu.Unlock()
	u := s.limiters[key]
	if u == nil {
		if s.limiters == nil {
			s.limiters = make(map[string]*limiterUse)
		}
		u = &limiterUse{limiter: newRateLimiter(n, window, exempt, defaultRateLimitEntries)}
		s.limiters[key] = u
	}
	u.users++
	return u.limiter, key
}

// releaseLimiter gives up one use of the limiter under key, dropping it
// when nobody uses it.
func (s *sharedStore) releaseLimiter(key string) {
	s.limitersMu.Lock()
	defer s.limitersMu.Unlock()
	if u := s.limiters[key]; u != nil {
		if u.users--; u.users <= 0 {
			delete(s.limiters, key)
		}
	}
}

// storeSettings are handler settings that operations on a store outside a
// request need.
type storeSettings struct {
	// secretLifetime is how long an issued secret is valid; 0: forever.
	secretLifetime time.Duration

	// secretOverlap is how long a rotated secret stays valid.
	secretOverlap time.Duration
}

// storePaths returns the absolute paths of the stores that loaded handlers
// use, sorted.
func storePaths() []string {
	var paths []string
	stores.Range(func(key, _ any) bool {
		paths = append(paths, key.(string))
		return true
	})
	slices.Sort(paths)
	return paths
}

// storeAt returns the store in use at the absolute path, if any handler
// uses it. It does not take a use of the store: the caller must not keep
// it beyond the current operation.
func storeAt(path string) (*sharedStore, bool) {
	var found *sharedStore
	stores.Range(func(key, value any) bool {
		if key.(string) == path {
			found = value.(*sharedStore)
			return false
		}
		return true
	})
	return found, found != nil
}

// acquireStore returns the shared store for the database at path; every
// successful call must be paired with releaseStore.
func acquireStore(path string) (*sharedStore, string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, "", fmt.Errorf("resolving store path %q: %w", path, err)
	}
	v, _, err := stores.LoadOrNew(abs, func() (caddy.Destructor, error) {
		w, err := clientdb.NewWriter(abs)
		if err != nil {
			return nil, err
		}
		return newSharedStore(w, abs, true), nil
	})
	if err != nil {
		return nil, "", err
	}
	return v.(*sharedStore), abs, nil
}

// releaseStore gives up one use of the store at the absolute path key.
func releaseStore(key string) error {
	_, err := stores.Delete(key)
	return err
}

// Destruct implements caddy.Destructor, when no loaded config uses the
// store any more. A bbolt writer holds no resources while idle and stays
// usable. A PostgreSQL pool is closed once the operations running on it
// end, so that the requests an old config instance still serves after its
// Cleanup complete normally.
func (s *sharedStore) Destruct() error {
	if s.postgres != nil {
		go s.closeWhenIdle()
	}
	return nil
}

// closeWhenIdle closes the PostgreSQL pool when no operation runs on it,
// or after storeWait at the latest.
func (s *sharedStore) closeWhenIdle() {
	deadline := time.Now().Add(storeWait)
	for s.busy.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	s.postgres.Close()
}

// newSharedStore wraps db; cached says whether lookups may be cached.
func newSharedStore(db clientdb.Store, name string, cached bool) *sharedStore {
	s := &sharedStore{db: db, name: name, cached: cached}
	s.hooks.wake = make(chan struct{}, 1)
	s.logger.Store(zap.NewNop())
	if cached {
		db.OnCommit(s.cache.invalidate)
	}
	db.ObserveCommits(metrics.observeCommit)
	return s
}

// Update runs fn in a read-write transaction and returns once the change
// is durable.
func (s *sharedStore) Update(ctx context.Context, fn func(clientdb.Tx) error) error {
	s.busy.Add(1)
	defer s.busy.Add(-1)
	err := s.checked(s.db.Update(ctx, fn))
	if err == nil {
		// The change may have queued events for hooks.
		s.hooks.signal()
	}
	return err
}

// Create stores a new client and returns once it is durable.
func (s *sharedStore) Create(ctx context.Context, c *clientdb.Client) error {
	return s.Update(ctx, func(tx clientdb.Tx) error {
		return tx.Create(c)
	})
}

// View runs fn in a read-only transaction.
func (s *sharedStore) View(fn func(clientdb.Tx) error) error {
	s.busy.Add(1)
	defer s.busy.Add(-1)
	return s.checked(s.db.View(fn))
}

// Lead runs fn unless another process sharing the store runs the same job
// (see clientdb.Store.Lead).
func (s *sharedStore) Lead(ctx context.Context, job string,
	fn func(context.Context) error) (bool, error) {
	s.busy.Add(1)
	defer s.busy.Add(-1)
	ran, err := s.db.Lead(ctx, job, fn)
	return ran, s.checked(err)
}

// checked follows the store's availability through the result of an
// operation: the first failure for want of the store logs an error, and
// the first success after it logs the recovery, so that an outage is one
// pair of log lines however many requests it fails.
func (s *sharedStore) checked(err error) error {
	if errors.Is(err, clientdb.ErrUnavailable) {
		if s.down.CompareAndSwap(false, true) {
			s.downSince.Store(time.Now().UnixNano())
			s.logger.Load().Error("client store unavailable; "+
				"requests that need it answer 503 until it returns",
				zap.String("store", s.name), zap.Error(err))
		}
		return err
	}
	if s.down.Load() && s.down.CompareAndSwap(true, false) {
		since := time.Unix(0, s.downSince.Load())
		s.logger.Load().Info("client store available again",
			zap.String("store", s.name),
			zap.Duration("outage", time.Since(since)))
	}
	return err
}

// errDisabled is what a lookup of a disabled client returns: it is
// clientdb.ErrDisabled and also clientdb.ErrDeleted, so that every caller
// answers it as it answers a deleted client.
var errDisabled = fmt.Errorf("%w, answered as %w", clientdb.ErrDisabled, clientdb.ErrDeleted)

// Client returns the stored client with the given ID, from the cache if
// it was looked up recently. The client is shared and must not be
// modified. A disabled client is reported as errDisabled.
func (s *sharedStore) Client(id string) (*clientdb.Client, error) {
	c, err := s.lookup(id)
	if err == nil && c.Disabled() {
		return nil, errDisabled
	}
	return c, err
}

// lookup is Client without the disabled check.
func (s *sharedStore) lookup(id string) (*clientdb.Client, error) {
	// An ID no registration could have produced is unknown, without a
	// read and without a cache entry that a caller could grow with long
	// IDs of its choosing.
	if !plausibleClientID(id) {
		return nil, clientdb.ErrNotFound
	}
	now := time.Now()
	if !s.cached {
		return s.read(id)
	}
	if e, ok := s.cache.get(id, now); ok {
		return e.client, e.err
	}

	gen := s.cache.generation()
	c, err := s.read(id)
	if err == nil || errors.Is(err, clientdb.ErrNotFound) || errors.Is(err, clientdb.ErrDeleted) {
		s.cache.put(id, gen, cachedClient{client: c, err: err, at: now})
	}
	return c, err
}

// read looks a client up in the store.
func (s *sharedStore) read(id string) (*clientdb.Client, error) {
	var c *clientdb.Client
	err := s.View(func(tx clientdb.Tx) error {
		var err error
		c, err = tx.Client(id)
		return err
	})
	return c, err
}

// storeWait bounds how long a request waits for its change to be
// committed. The lock protocol has no timeout of its own, so a reader
// process that stalls inside a read would otherwise hold requests forever.
const storeWait = 10 * time.Second

// writeContext returns the context for a request's change to the store:
// not cancelled when the client hangs up (the change may already be in a
// group), but bounded by storeWait. When it ends first, the request
// answers 503 and the change may still be committed.
func writeContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(r.Context()), storeWait)
}

// maxClientIDLength bounds the client IDs looked up in the store. Issued
// IDs are 34 characters, and stores written before held 22-character ones;
// the margin leaves room for IDs imported by other tools.
const maxClientIDLength = 128

// plausibleClientID reports whether id could be a stored client ID: short
// printable ASCII.
func plausibleClientID(id string) bool {
	return id != "" && len(id) <= maxClientIDLength && printableASCII(id)
}

// plausibleStoredID is plausibleClientID that also admits the URL of a
// client ID metadata document, for operations that read the store itself
// rather than the cache, such as the admin API's.
func plausibleStoredID(id string) bool {
	return plausibleClientID(id) || plausibleCIMDID(id)
}

// plausibleCIMDID reports whether id could be the URL of a client ID
// metadata document: printable ASCII, not too long, and https.
func plausibleCIMDID(id string) bool {
	return len(id) <= maxCIMDLength && printableASCII(id) && looksLikeCIMD(id)
}

// Interface guards
var _ caddy.Destructor = (*sharedStore)(nil)
