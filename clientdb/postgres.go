package clientdb

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/puddle/v2"
)

// ErrUnavailable is returned, wrapping the driver's error, when the
// PostgreSQL server cannot be reached or is not accepting work: a
// connection refused, broken or timed out, or a server shutting down or
// out of connections. The request may succeed later unchanged. When it is
// returned by an Update, the change may or may not have been committed.
var ErrUnavailable = errors.New("client store unavailable")

// PostgresOptions are the connection pool settings of a [Postgres] store.
// A zero field takes the default given with it.
type PostgresOptions struct {
	// MaxConns bounds the open connections. Default 10.
	MaxConns int32

	// MinConns is how many connections the pool keeps open while idle.
	// Default 1, so that the first request after a quiet spell does not
	// wait for a connection.
	MinConns int32

	// ConnectTimeout bounds establishing one connection, including TLS
	// and authentication. Default 5 s.
	ConnectTimeout time.Duration

	// MaxConnLifetime is how long a connection is used before it is
	// replaced, so that the pool follows a fail-over in DNS. Default 1 h.
	MaxConnLifetime time.Duration

	// MaxConnIdleTime is how long an unused connection above MinConns
	// stays open. Default 30 min.
	MaxConnIdleTime time.Duration

	// ViewTimeout bounds a [Postgres.View], which takes no context.
	// Default 5 s.
	ViewTimeout time.Duration

	// Lazy leaves connecting and preparing the schema to the first use
	// of the store (see [Postgres.Ready]), so that a process can start
	// while the server is down.
	Lazy bool
}

// Postgres is the client store in a PostgreSQL database, shared by any
// number of processes on any number of hosts. Every Update is a
// transaction of its own, committed before Update returns; rows that a
// change reads and then writes are locked for its duration, so concurrent
// changes from any process never overwrite each other. A Postgres is safe
// for concurrent use.
type Postgres struct {
	pool        *pgxpool.Pool
	viewTimeout time.Duration
	name        string

	onCommit func()
	observe  func(changes int, took time.Duration)

	// ready is set once the schema is known to be current; readyMu
	// makes concurrent first uses migrate once.
	ready   atomic.Bool
	readyMu sync.Mutex
}

// OpenPostgres connects to the database named by dsn (a URL or a
// key=value connection string, as libpq takes) and brings its schema up
// to [PostgresSchemaVersion], creating the tables on first use, unless
// opts.Lazy leaves that to the first use. Any number of processes may
// open the same database at once: the migration runs under an advisory
// lock.
func OpenPostgres(ctx context.Context, dsn string,
	opts PostgresOptions) (*Postgres, error) {
	p, err := connectPostgres(ctx, dsn, opts)
	if err != nil {
		return nil, err
	}
	if opts.Lazy {
		return p, nil
	}
	if err := p.Ready(ctx); err != nil {
		p.pool.Close()
		return nil, err
	}
	return p, nil
}

// Ready brings the schema up to date unless that was done already. Every
// Update, View and Lead calls it first, so a store opened with the Lazy
// option becomes usable as soon as the server can be reached.
func (p *Postgres) Ready(ctx context.Context) error {
	if p.ready.Load() {
		return nil
	}
	p.readyMu.Lock()
	defer p.readyMu.Unlock()
	if p.ready.Load() {
		return nil
	}
	if err := p.migrate(ctx); err != nil {
		return fmt.Errorf("preparing schema in %s: %w", p.name, err)
	}
	p.ready.Store(true)
	return nil
}

// connectPostgres makes the pool of a Postgres store, without touching
// the schema.
func connectPostgres(ctx context.Context, dsn string,
	opts PostgresOptions) (*Postgres, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// The driver's message may quote the DSN, password included.
		return nil, errors.New("parsing PostgreSQL DSN: invalid connection string")
	}
	cfg.MaxConns = cmpOr(opts.MaxConns, 10)
	cfg.MinConns = min(cmpOr(opts.MinConns, 1), cfg.MaxConns)
	cfg.MaxConnLifetime = cmpOr(opts.MaxConnLifetime, time.Hour)
	cfg.MaxConnIdleTime = cmpOr(opts.MaxConnIdleTime, 30*time.Minute)
	cfg.ConnConfig.ConnectTimeout = cmpOr(opts.ConnectTimeout, 5*time.Second)

	p := &Postgres{
		viewTimeout: cmpOr(opts.ViewTimeout, 5*time.Second),
		name:        postgresName(cfg.ConnConfig),
	}
	p.pool, err = pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", p.name, err)
	}
	return p, nil
}

// cmpOr returns v, or def when v is zero.
func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// postgresName names a database for messages and metrics without its
// password: postgres://user@host:port/database.
func postgresName(c *pgx.ConnConfig) string {
	return fmt.Sprintf("postgres://%s@%s/%s", c.User,
		net.JoinHostPort(c.Host, fmt.Sprint(c.Port)), c.Database)
}

// PostgresName returns the address of the database dsn names, without
// its password, as postgres://user@host:port/database.
func PostgresName(dsn string) (string, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return "", errors.New("parsing PostgreSQL DSN: invalid connection string")
	}
	return postgresName(cfg), nil
}

// Name returns the database's address without its password, as
// postgres://user@host:port/database.
func (p *Postgres) Name() string {
	return p.name
}

// Close closes every connection of the pool, waiting for those in use.
func (p *Postgres) Close() error {
	p.pool.Close()
	return nil
}

// maxAttempts bounds how often Update runs a change that the server
// aborted for a deadlock or a serialisation failure.
const maxAttempts = 5

// Update runs fn in a read-write transaction and commits it. fn may run
// more than once, when the server aborts a transaction to resolve a
// deadlock; only the last run is committed. An error from fn rolls the
// transaction back and is returned as it is. See [ErrUnavailable] for a
// server that cannot be reached.
func (p *Postgres) Update(ctx context.Context, fn func(Tx) error) error {
	start := time.Now()
	var err error
	for range maxAttempts {
		err = p.update(ctx, fn)
		if !retryable(err) {
			break
		}
	}
	if err != nil {
		return err
	}
	if p.observe != nil {
		p.observe(1, time.Since(start))
	}
	if p.onCommit != nil {
		p.onCommit()
	}
	return nil
}

// update is one attempt of Update.
func (p *Postgres) update(ctx context.Context, fn func(Tx) error) error {
	if err := p.Ready(ctx); err != nil {
		return err
	}
	tx, err := p.pool.Begin(ctx)
	if err != nil && unavailable(err) && ctx.Err() == nil {
		// A connection that died with a server restart fails at
		// BEGIN; fn has not run, so one more try on a fresh
		// connection is safe.
		p.pool.Reset()
		tx, err = p.pool.Begin(ctx)
	}
	if err != nil {
		return p.wrap("starting transaction", err)
	}
	// Rollback after Commit does nothing.
	defer tx.Rollback(context.WithoutCancel(ctx))

	if err := fn(&pgTx{ctx: ctx, q: tx, p: p, writable: true}); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return p.wrap("committing", err)
	}
	return nil
}

// View runs fn with read-only access, bounded by the ViewTimeout option.
// Each of fn's reads is a statement of its own on a pooled connection: it
// sees every change committed before it started, but fn's reads together
// are not one snapshot.
func (p *Postgres) View(fn func(Tx) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), p.viewTimeout)
	defer cancel()
	if err := p.Ready(ctx); err != nil {
		return err
	}
	return fn(&pgTx{ctx: ctx, q: p.pool, p: p})
}

// OnCommit sets fn to be called after every committed Update. Call it
// before the first Update; fn must be quick and must not call Update.
func (p *Postgres) OnCommit(fn func()) {
	p.onCommit = fn
}

// ObserveCommits sets fn to be called after every committed Update with
// 1 change and the time the Update took. Call it before the first Update.
func (p *Postgres) ObserveCommits(fn func(changes int, took time.Duration)) {
	p.observe = fn
}

// Lead runs fn if no other process holds the job's lock, holding it
// meanwhile, and reports whether fn ran. The lock is a session-level
// advisory lock named after job, so that periodic work shared by a fleet
// runs on one member at a time; a process that dies releases it with its
// connection.
func (p *Postgres) Lead(ctx context.Context, job string,
	fn func(context.Context) error) (bool, error) {
	if err := p.Ready(ctx); err != nil {
		return false, err
	}
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return false, p.wrap("acquiring a connection", err)
	}
	defer conn.Release()

	key := lockKey("job:" + job)
	var got bool
	err = conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&got)
	if err != nil {
		return false, p.wrap("taking lock of "+job, err)
	}
	if !got {
		return false, nil
	}
	defer func() {
		uctx := context.WithoutCancel(ctx)
		_, err := conn.Exec(uctx, "SELECT pg_advisory_unlock($1)", key)
		if err != nil {
			// Closing the session is what releases the lock now.
			conn.Conn().Close(uctx)
		}
	}()
	return true, fn(ctx)
}

// lockKey maps a name to the 64-bit key of a PostgreSQL advisory lock.
// The "caddy-dcr:" prefix keeps it apart from other applications' keys.
func lockKey(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("caddy-dcr:" + name))
	return int64(h.Sum64())
}

// retryable reports whether err aborted a transaction that may succeed
// when run again: a serialisation failure or a deadlock.
func retryable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) &&
		(pgErr.Code == "40001" || pgErr.Code == "40P01")
}

// wrap describes an error of the driver, marking it [ErrUnavailable] when
// the server could not be reached or turned the work away.
func (p *Postgres) wrap(doing string, err error) error {
	if unavailable(err) {
		if !errors.Is(err, context.DeadlineExceeded) {
			// The pool checks only connections idle for a second
			// before it hands them out: after a server restart the
			// others are dead, and each would fail one request.
			p.pool.Reset()
		}
		return fmt.Errorf("%s in %s: %w: %w", doing, p.name, ErrUnavailable, err)
	}
	return fmt.Errorf("%s in %s: %w", doing, p.name, err)
}

// unavailable reports whether err means the server is out of reach for
// now rather than that the statement or a value was wrong.
func unavailable(err error) bool {
	var pgErr *pgconn.PgError
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.As(err, &pgErr):
		switch pgErr.Code[:2] {
		case "08", // connection exception
			"53", // insufficient resources: too many connections
			"57": // operator intervention: shutting down
			return true
		}
		return false
	case errors.Is(err, context.DeadlineExceeded), pgconn.Timeout(err),
		errors.As(err, &connectErr), errors.As(err, &netErr),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, pgconn.ErrConnClosed),
		errors.Is(err, puddle.ErrClosedPool):
		return true
	}
	return false
}
