package clientdb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// querier is what a pgTx runs statements on: a transaction, or the pool
// for a read-only view.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// pgTx is a transaction on the PostgreSQL store. In a writable one, rows
// read for a change are locked (SELECT ... FOR UPDATE) until it commits.
type pgTx struct {
	ctx      context.Context
	q        querier
	p        *Postgres
	writable bool
}

// forUpdate is the locking clause of reads in a writable transaction.
func (t *pgTx) forUpdate() string {
	if t.writable {
		return " FOR UPDATE"
	}
	return ""
}

// fail describes a failed statement.
func (t *pgTx) fail(doing string, err error) error {
	return t.p.wrap(doing, err)
}

// missingTable reports whether err is PostgreSQL's undefined_table.
func missingTable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42P01"
}

// errPgReadOnly is returned by the writing methods of a read-only pgTx.
var errPgReadOnly = errors.New("writing to the store: read-only transaction")

// timestamp converts Unix seconds to a timestamptz value, 0 to NULL.
func timestamp(sec int64) any {
	if sec == 0 {
		return nil
	}
	return time.Unix(sec, 0)
}

// Client implements [Tx.Client].
func (t *pgTx) Client(id string) (*Client, error) {
	var raw []byte
	err := t.q.QueryRow(t.ctx, "SELECT record FROM dcr_clients "+
		"WHERE client_id = $1"+t.forUpdate(), id).Scan(&raw)
	if errors.Is(err, pgx.ErrNoRows) || missingTable(err) {
		if _, err := t.Tombstone(id); err == nil {
			return nil, ErrDeleted
		} else if !errors.Is(err, ErrNotFound) {
			return nil, err
		}
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, t.fail(fmt.Sprintf("reading client %q", id), err)
	}
	return decodeClient(id, raw)
}

// decodeClient decodes a client's record.
func decodeClient(id string, raw []byte) (*Client, error) {
	var c Client
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("decoding client %q: %w", id, err)
	}
	return &c, nil
}

// ForEach implements [Tx.ForEach].
func (t *pgTx) ForEach(fn func(*Client) error) error {
	return t.Clients("", func(c *Client) (bool, error) {
		return true, fn(c)
	})
}

// clientsPage is how many clients Clients reads per statement.
const clientsPage = 500

// Clients implements [Tx.Clients]. It reads the table in pages, so that
// fn may stop early without the rest being sent.
func (t *pgTx) Clients(after string, fn func(*Client) (bool, error)) error {
	for {
		page, err := t.clientsAfter(after, clientsPage)
		if err != nil {
			return err
		}
		for _, c := range page {
			more, err := fn(c)
			if err != nil || !more {
				return err
			}
		}
		if len(page) < clientsPage {
			return nil
		}
		after = page[len(page)-1].ID
	}
}

// clientsAfter returns up to limit clients with IDs after the given one.
func (t *pgTx) clientsAfter(after string, limit int) ([]*Client, error) {
	rows, err := t.q.Query(t.ctx, "SELECT client_id, record FROM dcr_clients "+
		"WHERE client_id > $1 ORDER BY client_id LIMIT $2", after, limit)
	if missingTable(err) {
		return nil, nil
	}
	if err != nil {
		return nil, t.fail("listing clients", err)
	}
	var page []*Client
	for rows.Next() {
		var id string
		var raw []byte
		if err := rows.Scan(&id, &raw); err != nil {
			return nil, t.fail("listing clients", err)
		}
		c, err := decodeClient(id, raw)
		if err != nil {
			rows.Close()
			return nil, err
		}
		page = append(page, c)
	}
	if err := rows.Err(); err != nil {
		if missingTable(err) {
			return nil, nil
		}
		return nil, t.fail("listing clients", err)
	}
	return page, nil
}

// Count implements [Tx.Count]. In a writable transaction it first takes a
// lock that every counting change takes, so that two registrations
// checking a limit cannot both see room for one more.
func (t *pgTx) Count() int {
	if t.writable {
		_, err := t.q.Exec(t.ctx, "SELECT pg_advisory_xact_lock($1)",
			lockKey("count"))
		if err != nil {
			// Count has no error to return; the statements after
			// it fail in the aborted transaction.
			return 0
		}
	}
	var n int
	err := t.q.QueryRow(t.ctx, "SELECT count(*) FROM dcr_clients").Scan(&n)
	if err != nil {
		return 0
	}
	return n
}

// Create implements [Tx.Create].
func (t *pgTx) Create(c *Client) error {
	if !t.writable {
		return errPgReadOnly
	}
	args, err := clientColumns(c)
	if err != nil {
		return err
	}
	tag, err := t.q.Exec(t.ctx, `INSERT INTO dcr_clients (`+clientColumnList+`)
		SELECT `+clientValueList+`
		WHERE NOT EXISTS (SELECT 1 FROM dcr_tombstones WHERE client_id = $1)
		ON CONFLICT (client_id) DO NOTHING`, args...)
	if err != nil {
		return t.fail(fmt.Sprintf("storing client %q", c.ID), err)
	}
	if tag.RowsAffected() == 0 {
		return ErrExists
	}
	return nil
}

// Put implements [Tx.Put].
func (t *pgTx) Put(c *Client) error {
	if !t.writable {
		return errPgReadOnly
	}
	if _, err := t.Tombstone(c.ID); err == nil {
		// An ID is never issued again once deleted.
		return ErrDeleted
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	args, err := clientColumns(c)
	if err != nil {
		return err
	}
	_, err = t.q.Exec(t.ctx, `INSERT INTO dcr_clients (`+clientColumnList+`)
		VALUES (`+clientValueList+`)
		ON CONFLICT (client_id) DO UPDATE SET `+clientUpdateList, args...)
	if err != nil {
		return t.fail(fmt.Sprintf("storing client %q", c.ID), err)
	}
	return nil
}

// The columns of dcr_clients in the order clientColumns gives them.
const (
	clientColumnList = `client_id, client_name, redirect_uris, grant_types,
		response_types, scope, token_endpoint_auth_method,
		client_secret_hash, client_secret_expires_at,
		registration_access_token_hash, initial_token_id, issued_at,
		updated_at, last_used_at, disabled_at, record`
	clientValueList = `$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
		$13, $14, $15, $16`
	clientUpdateList = `client_name = $2, redirect_uris = $3,
		grant_types = $4, response_types = $5, scope = $6,
		token_endpoint_auth_method = $7, client_secret_hash = $8,
		client_secret_expires_at = $9,
		registration_access_token_hash = $10, initial_token_id = $11,
		issued_at = $12, updated_at = $13, last_used_at = $14,
		disabled_at = $15, record = $16`
)

// clientColumns returns the values of a client's row.
func clientColumns(c *Client) ([]any, error) {
	record, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encoding client %q: %w", c.ID, err)
	}
	if !storable(record) {
		return nil, ErrUnstorable
	}
	m := &c.Metadata
	var secretExpires any
	if c.SecretHash != "" {
		secretExpires = timestamp(c.SecretExpiresAt)
	}
	return []any{
		c.ID, m.ClientName, nonNil(m.RedirectURIs), nonNil(m.GrantTypes),
		nonNil(m.ResponseTypes), m.Scope, m.TokenEndpointAuthMethod,
		nullString(c.SecretHash), secretExpires,
		nullString(c.RegistrationTokenHash), nullString(c.InitialTokenID),
		time.Unix(c.IssuedAt, 0), timestamp(c.UpdatedAt),
		timestamp(c.LastUsedAt), timestamp(c.DisabledAt), record,
	}, nil
}

// nonNil returns s, or an empty slice for nil: the columns are NOT NULL.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// nullString returns s, or NULL for "".
func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// Tombstone implements [Tx.Tombstone].
func (t *pgTx) Tombstone(id string) (*Tombstone, error) {
	ts := Tombstone{ID: id}
	var issued, deleted time.Time
	err := t.q.QueryRow(t.ctx, "SELECT issued_at, deleted_at, reason "+
		"FROM dcr_tombstones WHERE client_id = $1", id).
		Scan(&issued, &deleted, &ts.Reason)
	if errors.Is(err, pgx.ErrNoRows) || missingTable(err) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, t.fail(fmt.Sprintf("reading tombstone %q", id), err)
	}
	ts.IssuedAt, ts.DeletedAt = issued.Unix(), deleted.Unix()
	return &ts, nil
}

// Delete implements [Tx.Delete].
func (t *pgTx) Delete(id, reason string, now time.Time) error {
	if !t.writable {
		return errPgReadOnly
	}
	c, err := t.Client(id)
	if err != nil {
		return err
	}
	_, err = t.q.Exec(t.ctx, "DELETE FROM dcr_clients WHERE client_id = $1", id)
	if err != nil {
		return t.fail(fmt.Sprintf("deleting client %q", id), err)
	}
	_, err = t.q.Exec(t.ctx, "INSERT INTO dcr_tombstones "+
		"(client_id, issued_at, deleted_at, reason) VALUES ($1, $2, $3, $4)",
		id, time.Unix(c.IssuedAt, 0), time.Unix(now.Unix(), 0), reason)
	if err != nil {
		return t.fail(fmt.Sprintf("storing tombstone %q", id), err)
	}
	return nil
}

// Forget implements [Tx.Forget].
func (t *pgTx) Forget(id string) error {
	if !t.writable {
		return errPgReadOnly
	}
	if _, err := t.Client(id); err != nil {
		return err
	}
	_, err := t.q.Exec(t.ctx, "DELETE FROM dcr_clients WHERE client_id = $1", id)
	if err != nil {
		return t.fail(fmt.Sprintf("forgetting client %q", id), err)
	}
	return nil
}

// Disable implements [Tx.Disable].
func (t *pgTx) Disable(id string, now time.Time) (*Client, error) {
	return setDisabled(t, id, now.Unix())
}

// Enable implements [Tx.Enable].
func (t *pgTx) Enable(id string) (*Client, error) {
	return setDisabled(t, id, 0)
}

// SweepTombstones implements [Tx.SweepTombstones].
func (t *pgTx) SweepTombstones(cutoff time.Time, limit int) (int, error) {
	if !t.writable {
		return 0, errPgReadOnly
	}
	tag, err := t.q.Exec(t.ctx, `DELETE FROM dcr_tombstones WHERE client_id IN (
		SELECT client_id FROM dcr_tombstones WHERE deleted_at < $1
		ORDER BY deleted_at LIMIT $2 FOR UPDATE SKIP LOCKED)`,
		time.Unix(cutoff.Unix(), 0), limit)
	if err != nil {
		return 0, t.fail("sweeping tombstones", err)
	}
	return int(tag.RowsAffected()), nil
}

// HasTombstonesBefore implements [Tx.HasTombstonesBefore].
func (t *pgTx) HasTombstonesBefore(cutoff time.Time) bool {
	return t.exists("SELECT EXISTS (SELECT 1 FROM dcr_tombstones "+
		"WHERE deleted_at < $1)", cutoff)
}

// exists runs a query answering one boolean; a failure answers false.
func (t *pgTx) exists(query string, cutoff time.Time) bool {
	var ok bool
	err := t.q.QueryRow(t.ctx, query, time.Unix(cutoff.Unix(), 0)).Scan(&ok)
	return err == nil && ok
}

// Unused implements [Tx.Unused].
func (t *pgTx) Unused(cutoff time.Time, after string, limit int) (
	ids []string, last string, err error) {
	// One row more than asked tells whether the scan reached the end.
	rows, err := t.q.Query(t.ctx, `SELECT client_id,
		greatest(issued_at, coalesce(last_used_at, issued_at)) < $3
		FROM dcr_clients WHERE client_id > $1
		ORDER BY client_id LIMIT $2`,
		after, limit+1, time.Unix(cutoff.Unix(), 0))
	if missingTable(err) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", t.fail("scanning for unused clients", err)
	}
	n := 0
	for rows.Next() {
		var id string
		var unused bool
		if err := rows.Scan(&id, &unused); err != nil {
			return nil, "", t.fail("scanning for unused clients", err)
		}
		if n++; n > limit {
			rows.Close()
			return ids, last, nil
		}
		last = id
		if unused {
			ids = append(ids, id)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, "", t.fail("scanning for unused clients", err)
	}
	return ids, "", nil
}

// ExpireUnused implements [Tx.ExpireUnused].
func (t *pgTx) ExpireUnused(ids []string, cutoff, now time.Time) (int, error) {
	return expireUnused(t, ids, cutoff, now)
}

// AppendEvent implements [Tx.AppendEvent]. The sequence number comes
// from an identity column when the row is inserted, so a transaction
// that commits later may hold a lower one than an event already visible.
func (t *pgTx) AppendEvent(e *Event) error {
	if !t.writable {
		return errPgReadOnly
	}
	e.Seq = 0
	record, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encoding audit event: %w", err)
	}
	var seq int64
	err = t.q.QueryRow(t.ctx, "INSERT INTO dcr_audit (at, op, client_id, record) "+
		"VALUES ($1, $2, $3, $4) RETURNING seq",
		time.Unix(e.Time, 0), e.Op, nullString(e.ClientID), record).Scan(&seq)
	if err != nil {
		return t.fail("storing audit event", err)
	}
	e.Seq = uint64(seq)
	return nil
}

// EventsSince implements [Tx.EventsSince].
func (t *pgTx) EventsSince(after uint64, limit int) ([]Event, error) {
	rows, err := t.q.Query(t.ctx, "SELECT seq, record FROM dcr_audit "+
		"WHERE seq > $1 ORDER BY seq LIMIT $2", int64(after), limit)
	if missingTable(err) {
		return nil, nil
	}
	if err != nil {
		return nil, t.fail("reading audit events", err)
	}
	var events []Event
	for rows.Next() {
		var seq int64
		var raw []byte
		if err := rows.Scan(&seq, &raw); err != nil {
			return nil, t.fail("reading audit events", err)
		}
		var e Event
		if err := json.Unmarshal(raw, &e); err != nil {
			rows.Close()
			return nil, fmt.Errorf("decoding audit event %d: %w", seq, err)
		}
		e.Seq = uint64(seq)
		events = append(events, e)
	}
	if err := rows.Err(); err != nil {
		return nil, t.fail("reading audit events", err)
	}
	return events, nil
}

// SweepEvents implements [Tx.SweepEvents].
func (t *pgTx) SweepEvents(cutoff time.Time, limit int) (int, error) {
	if !t.writable {
		return 0, errPgReadOnly
	}
	tag, err := t.q.Exec(t.ctx, `DELETE FROM dcr_audit WHERE seq IN (
		SELECT seq FROM dcr_audit WHERE at < $1
		ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED)`,
		time.Unix(cutoff.Unix(), 0), limit)
	if err != nil {
		return 0, t.fail("sweeping audit events", err)
	}
	return int(tag.RowsAffected()), nil
}

// HasEventsBefore implements [Tx.HasEventsBefore].
func (t *pgTx) HasEventsBefore(cutoff time.Time) bool {
	return t.exists("SELECT EXISTS (SELECT 1 FROM dcr_audit WHERE at < $1)",
		cutoff)
}

// CreateInitialToken implements [Tx.CreateInitialToken].
func (t *pgTx) CreateInitialToken(spec InitialTokenSpec, now time.Time) (
	string, *InitialToken, error) {
	if !t.writable {
		return "", nil, errTokenReadOnly
	}
	if err := spec.validate(now); err != nil {
		return "", nil, err
	}
	token, info := newInitialToken(spec, now)
	if err := t.putToken(info, true); err != nil {
		return "", nil, err
	}
	return token, info, nil
}

// putToken stores a token's row, inserting it when create is set.
func (t *pgTx) putToken(info *InitialToken, create bool) error {
	record, err := json.Marshal(info)
	if err != nil {
		return fmt.Errorf("encoding initial access token %q: %w", info.ID, err)
	}
	query := `UPDATE dcr_initial_tokens SET token_hash = $2, label = $3,
		created_at = $4, expires_at = $5, max_uses = $6, uses = $7,
		revoked_at = $8, record = $9 WHERE id = $1`
	if create {
		query = `INSERT INTO dcr_initial_tokens (id, token_hash, label,
			created_at, expires_at, max_uses, uses, revoked_at, record)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`
	}
	_, err = t.q.Exec(t.ctx, query, info.ID, info.Hash, info.Label,
		time.Unix(info.CreatedAt, 0), timestamp(info.ExpiresAt),
		info.MaxUses, info.Uses, timestamp(info.RevokedAt), record)
	if err != nil {
		return t.fail(fmt.Sprintf("storing initial access token %q", info.ID), err)
	}
	return nil
}

// UseInitialToken implements [Tx.UseInitialToken].
func (t *pgTx) UseInitialToken(token string, now time.Time) (*InitialToken, error) {
	if !t.writable {
		return nil, errTokenReadOnly
	}
	info, err := t.CheckInitialToken(token, now)
	if err != nil {
		return nil, err
	}
	info.Uses++
	if err := t.putToken(info, false); err != nil {
		return nil, err
	}
	return info, nil
}

// CheckInitialToken implements [Tx.CheckInitialToken]. In a writable
// transaction the token's row stays locked until the commit, so that
// concurrent registrations count its uses one after the other.
func (t *pgTx) CheckInitialToken(token string, now time.Time) (*InitialToken, error) {
	// The lookup is by hash, so its timing tells nothing about the
	// token; the comparison that decides is in constant time.
	info, err := t.tokenWhere("token_hash", HashSecret(token))
	if errors.Is(err, ErrTokenNotFound) {
		return nil, ErrTokenInvalid
	}
	if err != nil {
		return nil, err
	}
	if !VerifySecret(info.Hash, token) || info.State(now) != TokenActive {
		return nil, ErrTokenInvalid
	}
	return info, nil
}

// tokenWhere reads the token whose column equals value.
func (t *pgTx) tokenWhere(column, value string) (*InitialToken, error) {
	var raw []byte
	err := t.q.QueryRow(t.ctx, "SELECT record FROM dcr_initial_tokens WHERE "+
		column+" = $1"+t.forUpdate(), value).Scan(&raw)
	if errors.Is(err, pgx.ErrNoRows) || missingTable(err) {
		return nil, ErrTokenNotFound
	}
	if err != nil {
		return nil, t.fail("reading initial access token", err)
	}
	var info InitialToken
	if err := json.Unmarshal(raw, &info); err != nil {
		return nil, fmt.Errorf("decoding initial access token: %w", err)
	}
	return &info, nil
}

// InitialToken implements [Tx.InitialToken].
func (t *pgTx) InitialToken(id string) (*InitialToken, error) {
	return t.tokenWhere("id", id)
}

// InitialTokens implements [Tx.InitialTokens].
func (t *pgTx) InitialTokens() ([]*InitialToken, error) {
	rows, err := t.q.Query(t.ctx, "SELECT record FROM dcr_initial_tokens "+
		"ORDER BY created_at, id")
	if missingTable(err) {
		return nil, nil
	}
	if err != nil {
		return nil, t.fail("listing initial access tokens", err)
	}
	var all []*InitialToken
	for rows.Next() {
		var raw []byte
		if err := rows.Scan(&raw); err != nil {
			return nil, t.fail("listing initial access tokens", err)
		}
		var info InitialToken
		if err := json.Unmarshal(raw, &info); err != nil {
			rows.Close()
			return nil, fmt.Errorf("decoding initial access token: %w", err)
		}
		all = append(all, &info)
	}
	if err := rows.Err(); err != nil {
		return nil, t.fail("listing initial access tokens", err)
	}
	return all, nil
}

// RevokeInitialToken implements [Tx.RevokeInitialToken].
func (t *pgTx) RevokeInitialToken(id string, now time.Time) (*InitialToken, error) {
	if !t.writable {
		return nil, errTokenReadOnly
	}
	info, err := t.InitialToken(id)
	if err != nil || info.RevokedAt != 0 {
		return info, err
	}
	info.RevokedAt = now.Unix()
	return info, t.putToken(info, false)
}

// Interface guards
var _ Tx = (*pgTx)(nil)
