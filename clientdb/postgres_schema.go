package clientdb

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// PostgresSchemaVersion is the version of the PostgreSQL schema this
// package reads and writes, recorded in table dcr_schema.
const PostgresSchemaVersion = 2

// migrations are the statements that bring the schema from version i to
// version i+1. A released migration is never edited; a change to the
// schema is a new entry.
var migrations = []string{
	// 1: the first schema. Timestamps are timestamptz, NULL when the
	// record holds 0. Each row's record is the JSON the bbolt store
	// holds for it; the other columns repeat parts of it for readers
	// who query with SQL. Client IDs sort bytewise, as in bbolt.
	`CREATE TABLE dcr_clients (
		client_id text COLLATE "C" PRIMARY KEY,
		client_name text NOT NULL DEFAULT '',
		redirect_uris text[] NOT NULL DEFAULT '{}',
		grant_types text[] NOT NULL DEFAULT '{}',
		response_types text[] NOT NULL DEFAULT '{}',
		scope text NOT NULL DEFAULT '',
		token_endpoint_auth_method text NOT NULL DEFAULT '',
		client_secret_hash text,
		client_secret_expires_at timestamptz,
		registration_access_token_hash text,
		initial_token_id text,
		issued_at timestamptz NOT NULL,
		updated_at timestamptz,
		last_used_at timestamptz,
		disabled_at timestamptz,
		record jsonb NOT NULL
	);
	CREATE TABLE dcr_tombstones (
		client_id text COLLATE "C" PRIMARY KEY,
		issued_at timestamptz NOT NULL,
		deleted_at timestamptz NOT NULL,
		reason text NOT NULL
	);
	CREATE INDEX dcr_tombstones_deleted_at ON dcr_tombstones (deleted_at);
	CREATE TABLE dcr_initial_tokens (
		id text COLLATE "C" PRIMARY KEY,
		token_hash text NOT NULL UNIQUE,
		label text NOT NULL DEFAULT '',
		created_at timestamptz NOT NULL,
		expires_at timestamptz,
		max_uses integer NOT NULL DEFAULT 0,
		uses integer NOT NULL DEFAULT 0,
		revoked_at timestamptz,
		record jsonb NOT NULL
	);
	CREATE TABLE dcr_audit (
		seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		at timestamptz NOT NULL,
		op text NOT NULL,
		client_id text,
		record jsonb NOT NULL
	);
	CREATE INDEX dcr_audit_at ON dcr_audit (at);`,

	// 2: the outbox, durable queues of opaque payloads such as the
	// events of hooks. Seq is shared by all queues; queue names sort
	// bytewise, as in bbolt. Consumers read a queue in seq order and
	// sweepers the whole table in time order, hence the two indexes.
	`CREATE TABLE dcr_outbox (
		seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		queue text COLLATE "C" NOT NULL,
		at timestamptz NOT NULL,
		payload bytea NOT NULL
	);
	CREATE INDEX dcr_outbox_queue ON dcr_outbox (queue, seq);
	CREATE INDEX dcr_outbox_at ON dcr_outbox (at);`,
}

// migrate brings the schema up to PostgresSchemaVersion under an advisory
// lock, so that instances starting together migrate once.
func (p *Postgres) migrate(ctx context.Context) error {
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return p.wrap("acquiring a connection", err)
	}
	defer conn.Release()

	key := lockKey("migrate")
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", key); err != nil {
		return p.wrap("taking the migration lock", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", key)

	_, err = conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS dcr_schema (
		version integer NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`)
	if err != nil {
		return p.wrap("creating table dcr_schema", err)
	}
	var version int
	err = conn.QueryRow(ctx,
		"SELECT coalesce(max(version), 0) FROM dcr_schema").Scan(&version)
	if err != nil {
		return p.wrap("reading the schema version", err)
	}
	if version > len(migrations) {
		return fmt.Errorf("%w: %d (this build knows up to %d)",
			ErrSchema, version, len(migrations))
	}

	for v := version; v < len(migrations); v++ {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, migrations[v]); err != nil {
				return err
			}
			_, err := tx.Exec(ctx,
				"INSERT INTO dcr_schema (version) VALUES ($1)", v+1)
			return err
		})
		if err != nil {
			return p.wrap(fmt.Sprintf("migrating to version %d", v+1), err)
		}
	}
	return nil
}

// checkSchema verifies that a database a writer prepared has a schema
// version this package knows. A database without the schema passes: it
// reads as an empty store.
func (p *Postgres) checkSchema(ctx context.Context) error {
	var version int
	err := p.pool.QueryRow(ctx,
		"SELECT coalesce(max(version), 0) FROM dcr_schema").Scan(&version)
	if missingTable(err) {
		return nil
	}
	if err != nil {
		return p.wrap("reading the schema version", err)
	}
	if version > len(migrations) {
		return fmt.Errorf("%w: %d (this build knows up to %d)",
			ErrSchema, version, len(migrations))
	}
	return nil
}
