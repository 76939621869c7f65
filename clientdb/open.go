package clientdb

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Store is a client store open for writing: a bbolt [Writer] or a
// [Postgres] database. The handler and operators' tools use either
// through it.
type Store interface {
	// Update runs fn in a read-write transaction and returns once the
	// change is durable. fn may run more than once; only its last run
	// is committed.
	Update(ctx context.Context, fn func(Tx) error) error

	// View runs fn with read-only access.
	View(fn func(Tx) error) error

	// OnCommit sets a function called after every commit.
	OnCommit(fn func())

	// ObserveCommits sets a function told of every commit's number of
	// changes and duration.
	ObserveCommits(fn func(changes int, took time.Duration))

	// Lead runs fn unless another process is running the same job on
	// the same store, and reports whether it ran.
	Lead(ctx context.Context, job string, fn func(context.Context) error) (bool, error)

	// Close releases the store's resources.
	Close() error
}

// IsPostgresURL reports whether location names a PostgreSQL database
// rather than a bbolt file: a postgres:// or postgresql:// URL.
func IsPostgresURL(location string) bool {
	return strings.HasPrefix(location, "postgres://") ||
		strings.HasPrefix(location, "postgresql://")
}

// Open returns a Reader of the store at location: a postgres:// or
// postgresql:// URL for a PostgreSQL database, else the path of a bbolt
// file. A downstream service can thus switch stores by configuration
// alone. A PostgreSQL Reader holds a pool with the default
// [PostgresOptions]; it never changes the schema, and sees an empty store
// until a writer has prepared the database.
func Open(ctx context.Context, location string) (*Reader, error) {
	if !IsPostgresURL(location) {
		return OpenReader(location)
	}
	p, err := connectPostgres(ctx, location, PostgresOptions{})
	if err != nil {
		return nil, err
	}
	if err := p.checkSchema(ctx); err != nil {
		p.Close()
		return nil, err
	}
	// A reader never migrates: it may lack the rights to, and a newer
	// writer may be about to.
	p.ready.Store(true)
	return &Reader{pg: p}, nil
}

// Lead implements [Store.Lead]: a bbolt file has a single writing host,
// whose writer serialises every change, so the job always runs.
func (w *Writer) Lead(ctx context.Context, _ string,
	fn func(context.Context) error) (bool, error) {
	return true, fn(ctx)
}

// Close implements [Store.Close]. The writer holds no file open between
// commits, so there is nothing to release.
func (w *Writer) Close() error {
	return nil
}

// CreateInitialToken is [Tx.CreateInitialToken] in a transaction of its
// own, for operators' tools. It checks spec before touching the store.
func (p *Postgres) CreateInitialToken(ctx context.Context,
	spec InitialTokenSpec, now time.Time) (string, *InitialToken, error) {
	return createInitialToken(ctx, p, spec, now)
}

// RevokeInitialToken is [Tx.RevokeInitialToken] in a transaction of its
// own, for operators' tools.
func (p *Postgres) RevokeInitialToken(ctx context.Context, id string,
	now time.Time) (*InitialToken, error) {
	return revokeInitialToken(ctx, p, id, now)
}

// Interface guards
var (
	_ Store = (*Writer)(nil)
	_ Store = (*Postgres)(nil)
)

// String names the store without its password, so that formatting a
// Postgres never shows its DSN.
func (p *Postgres) String() string {
	return fmt.Sprintf("clientdb.Postgres(%s)", p.name)
}
