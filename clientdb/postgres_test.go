package clientdb

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/caddy-dcr/caddy-dcr/internal/pgtest"
)

// pgConnect opens a connection to dsn, closed when t ends, for looking
// at the tables as an operator's SQL would.
func pgConnect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// pgOpen opens a Postgres store, closed when t ends.
func pgOpen(t *testing.T, dsn string, opts PostgresOptions) *Postgres {
	t.Helper()
	p, err := OpenPostgres(t.Context(), dsn, opts)
	if err != nil {
		t.Fatalf("OpenPostgres: %v", err)
	}
	ctCloseAtEnd(t, p)
	return p
}

// pgSchemaRows returns how many rows of dcr_schema name each version.
func pgSchemaRows(t *testing.T, conn *pgx.Conn) map[int]int {
	t.Helper()
	rows, err := conn.Query(t.Context(),
		"SELECT version, count(*) FROM dcr_schema GROUP BY version")
	if err != nil {
		t.Fatalf("reading dcr_schema: %v", err)
	}
	got := make(map[int]int)
	for rows.Next() {
		var v, n int
		if err := rows.Scan(&v, &n); err != nil {
			t.Fatalf("reading dcr_schema: %v", err)
		}
		got[v] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("reading dcr_schema: %v", err)
	}
	return got
}

// pgTables lists the tables of the database outside the system schemas.
func pgTables(t *testing.T, conn *pgx.Conn) []string {
	t.Helper()
	rows, err := conn.Query(t.Context(), "SELECT tablename FROM pg_tables "+
		"WHERE schemaname NOT IN ('pg_catalog', 'information_schema') "+
		"ORDER BY tablename")
	if err != nil {
		t.Fatalf("listing tables: %v", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("listing tables: %v", err)
	}
	return names
}

func TestPostgresOpenConcurrently(t *testing.T) {
	dsn := pgtest.Database(t)

	// Instances of a fleet starting together all find an empty
	// database; the advisory lock lets one migrate and the rest wait.
	const n = 8
	stores := make([]*Postgres, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			stores[i], errs[i] = OpenPostgres(t.Context(), dsn,
				PostgresOptions{MaxConns: 2})
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("OpenPostgres %d: %v", i, err)
			continue
		}
		ctCloseAtEnd(t, stores[i])
	}
	if t.Failed() {
		t.FailNow()
	}

	conn := pgConnect(t, dsn)
	want := make(map[int]int)
	for v := 1; v <= PostgresSchemaVersion; v++ {
		want[v] = 1
	}
	if got := pgSchemaRows(t, conn); !reflect.DeepEqual(got, want) {
		t.Errorf("dcr_schema rows per version = %v, want %v", got, want)
	}

	// Opening a current database later migrates nothing.
	pgOpen(t, dsn, PostgresOptions{})
	if got := pgSchemaRows(t, conn); !reflect.DeepEqual(got, want) {
		t.Errorf("dcr_schema after reopening = %v, want %v", got, want)
	}

	// They are one store.
	ctCreate(t, stores[0], ctClient("shared"))
	err := stores[n-1].View(func(tx Tx) error {
		_, err := tx.Client("shared")
		return err
	})
	if err != nil {
		t.Errorf("another handle reading the client: %v", err)
	}
}

func TestPostgresSchemaTooNew(t *testing.T) {
	newer := PostgresSchemaVersion + 1
	prepares := []struct {
		name string
		// prepare leaves the database as a newer writer would.
		prepare func(t *testing.T, dsn string, conn *pgx.Conn)
	}{
		{"migrated by a newer writer", func(t *testing.T, dsn string,
			conn *pgx.Conn) {
			pgOpen(t, dsn, PostgresOptions{}).Close()
			_, err := conn.Exec(t.Context(),
				"INSERT INTO dcr_schema (version) VALUES ($1)", newer)
			if err != nil {
				t.Fatalf("recording version %d: %v", newer, err)
			}
		}},
		{"only a version table", func(t *testing.T, _ string,
			conn *pgx.Conn) {
			_, err := conn.Exec(t.Context(), `CREATE TABLE dcr_schema (
				version integer NOT NULL,
				applied_at timestamptz NOT NULL DEFAULT now());
				INSERT INTO dcr_schema (version) VALUES (99)`)
			if err != nil {
				t.Fatalf("creating dcr_schema: %v", err)
			}
		}},
	}
	opens := []struct {
		name string
		open func(ctx context.Context, dsn string) error
	}{
		{"writer", func(ctx context.Context, dsn string) error {
			p, err := OpenPostgres(ctx, dsn, PostgresOptions{})
			if err == nil {
				p.Close()
			}
			return err
		}},
		{"lazy writer's first update", func(ctx context.Context,
			dsn string) error {
			p, err := OpenPostgres(ctx, dsn, PostgresOptions{Lazy: true})
			if err != nil {
				return fmt.Errorf("opening lazily: %w", err)
			}
			defer p.Close()
			return p.Update(ctx, func(tx Tx) error {
				return tx.Create(ctClient("x"))
			})
		}},
		{"reader", func(ctx context.Context, dsn string) error {
			r, err := Open(ctx, dsn)
			if err == nil {
				r.Close()
			}
			return err
		}},
	}
	for _, pr := range prepares {
		for _, op := range opens {
			t.Run(pr.name+"/"+op.name, func(t *testing.T) {
				dsn := pgtest.Database(t)
				conn := pgConnect(t, dsn)
				pr.prepare(t, dsn, conn)
				tables := pgTables(t, conn)
				schema := pgSchemaRows(t, conn)

				err := op.open(t.Context(), dsn)
				if !errors.Is(err, ErrSchema) {
					t.Errorf("got %v, want ErrSchema", err)
				}
				// A newer schema is left as it is.
				if got := pgTables(t, conn); !slices.Equal(got, tables) {
					t.Errorf("tables %q, were %q", got, tables)
				}
				got := pgSchemaRows(t, conn)
				if !reflect.DeepEqual(got, schema) {
					t.Errorf("dcr_schema %v, was %v", got, schema)
				}
			})
		}
	}
}

func TestPostgresReaderUnprepared(t *testing.T) {
	dsn := pgtest.Database(t)
	conn := pgConnect(t, dsn)

	r, err := Open(t.Context(), dsn)
	if err != nil {
		t.Fatalf("Open on an empty database: %v", err)
	}
	ctCloseAtEnd(t, r)

	if _, err := r.Lookup("any"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup = %v, want ErrNotFound", err)
	}
	if _, err := r.Tombstone("any"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Tombstone = %v, want ErrNotFound", err)
	}
	if all, err := r.InitialTokens(); err != nil || len(all) != 0 {
		t.Errorf("InitialTokens = %d tokens, %v; want none", len(all), err)
	}
	if events, err := r.EventsSince(0, 10); err != nil || len(events) != 0 {
		t.Errorf("EventsSince = %d events, %v; want none", len(events), err)
	}
	err = r.View(func(tx Tx) error {
		if n := tx.Count(); n != 0 {
			t.Errorf("Count = %d", n)
		}
		calls := 0
		err := tx.Clients("", func(*Client) (bool, error) {
			calls++
			return true, nil
		})
		if err != nil || calls != 0 {
			t.Errorf("Clients = %v after %d calls, want none", err, calls)
		}
		ids, last, err := tx.Unused(ctAt(0), "", 10)
		if err != nil || len(ids) != 0 || last != "" {
			t.Errorf("Unused = %q, %q, %v", ids, last, err)
		}
		if _, err := tx.CheckInitialToken(InitialTokenPrefix+"x",
			ctAt(0)); !errors.Is(err, ErrTokenInvalid) {
			t.Errorf("CheckInitialToken = %v, want ErrTokenInvalid", err)
		}
		if _, err := tx.InitialToken("x"); !errors.Is(err, ErrTokenNotFound) {
			t.Errorf("InitialToken = %v, want ErrTokenNotFound", err)
		}
		if tx.HasTombstonesBefore(ctAt(0)) || tx.HasEventsBefore(ctAt(0)) ||
			tx.HasOutboxBefore(ctAt(0)) {
			t.Error("HasTombstonesBefore, HasEventsBefore or " +
				"HasOutboxBefore = true")
		}
		if got, err := tx.Pending("hooks", 10); err != nil || len(got) != 0 {
			t.Errorf("Pending = %d entries, %v; want none", len(got), err)
		}
		return nil
	})
	if err != nil {
		t.Errorf("View: %v", err)
	}
	if tables := pgTables(t, conn); len(tables) != 0 {
		t.Errorf("the reader created tables %q", tables)
	}

	// Once a writer prepares the database, the same reader sees it.
	p := pgOpen(t, dsn, PostgresOptions{})
	ctCreate(t, p, ctClient("later"))
	if _, err := r.Lookup("later"); err != nil {
		t.Errorf("Lookup after a writer prepared the database: %v", err)
	}
}

func TestPostgresLead(t *testing.T) {
	tests := []struct {
		name string
		// same runs both contenders on one handle: each Lead takes a
		// connection of its own, so they still exclude each other.
		same bool
	}{
		{"two handles", false},
		{"one handle", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dsn := pgtest.Database(t)
			a := pgOpen(t, dsn, PostgresOptions{})
			b := a
			if !tc.same {
				b = pgOpen(t, dsn, PostgresOptions{})
			}
			pgLead(t, a, b)
		})
	}
}

// pgLead has a and b race to lead the same job, and checks that exactly
// one runs it while the other is told it did not run.
func pgLead(t *testing.T, a, b *Postgres) {
	const job = "sweep"
	release := make(chan struct{})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	// A test that fails early must not leave a job waiting.
	t.Cleanup(releaseOnce)

	type result struct {
		who string
		ran bool
		err error
	}
	var runs atomic.Int32
	running := make(chan string, 2)
	results := make(chan result, 2)
	hold := func(who string) func(context.Context) error {
		return func(ctx context.Context) error {
			runs.Add(1)
			running <- who
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil
		}
	}
	handles := map[string]*Postgres{"a": a, "b": b}
	start := make(chan struct{})
	for who, p := range handles {
		go func() {
			<-start
			ran, err := p.Lead(t.Context(), job, hold(who))
			results <- result{who, ran, err}
		}()
	}
	close(start)

	// The one that lost returns at once, while the winner still runs.
	// The timeout only ends a test that would otherwise hang.
	var loser result
	select {
	case loser = <-results:
	case <-time.After(30 * time.Second):
		t.Fatal("neither Lead returned while one job ran")
	}
	if loser.ran || loser.err != nil {
		t.Fatalf("Lead of %s while the job ran = %v, %v; want false, nil",
			loser.who, loser.ran, loser.err)
	}
	winner := <-running
	if winner == loser.who {
		t.Fatalf("%s both ran the job and was refused it", winner)
	}

	// Another job is not held up by this one.
	ran, err := handles[loser.who].Lead(t.Context(), "other",
		func(context.Context) error { return nil })
	if !ran || err != nil {
		t.Errorf("Lead of another job = %v, %v; want true, nil", ran, err)
	}

	releaseOnce()
	won := <-results
	if !won.ran || won.err != nil {
		t.Errorf("Lead of %s = %v, %v; want true, nil",
			won.who, won.ran, won.err)
	}
	if n := runs.Load(); n != 1 {
		t.Errorf("the job ran %d times, want 1", n)
	}

	// Once the job returned, its lock is free for either, and an error
	// from the job is handed back with the lock released too.
	failure := errors.New("job failed")
	for _, who := range []string{loser.who, winner} {
		ran, err := handles[who].Lead(t.Context(), job,
			func(context.Context) error { return failure })
		if !ran || !errors.Is(err, failure) {
			t.Errorf("Lead of %s after release = %v, %v; "+
				"want true and the job's error", who, ran, err)
		}
	}
}

// pgDeadline is how long an Update against a stopped server may take
// before the test gives up: the store should fail well before it.
const pgDeadline = 30 * time.Second

// pgUpdateDown runs an Update that must fail for the server being down,
// on its own and not by running into the test's deadline.
func pgUpdateDown(t *testing.T, p *Postgres, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), pgDeadline)
	defer cancel()
	err := p.Update(ctx, func(tx Tx) error {
		return tx.Create(ctClient(id))
	})
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("Update with the server down = %v, want ErrUnavailable",
			err)
	}
	if ctx.Err() != nil {
		t.Errorf("Update with the server down ran into the deadline: %v",
			err)
	}
}

func TestPostgresLazy(t *testing.T) {
	srv := pgtest.StartServer(t)
	srv.Stop(t)

	p, err := OpenPostgres(t.Context(), srv.DSN(), PostgresOptions{
		Lazy:           true,
		ConnectTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatalf("OpenPostgres with Lazy and the server down: %v", err)
	}
	ctCloseAtEnd(t, p)

	pgUpdateDown(t, p, "early")
	err = p.View(func(tx Tx) error { return nil })
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("View with the server down = %v, want ErrUnavailable", err)
	}
	ran, err := p.Lead(t.Context(), "job", func(context.Context) error {
		t.Error("a job ran with the server down")
		return nil
	})
	if ran || !errors.Is(err, ErrUnavailable) {
		t.Errorf("Lead with the server down = %v, %v; "+
			"want false, ErrUnavailable", ran, err)
	}

	srv.Start(t)
	ctCreate(t, p, ctClient("late"))
	err = p.View(func(tx Tx) error {
		if _, err := tx.Client("late"); err != nil {
			return err
		}
		if _, err := tx.Client("early"); !errors.Is(err, ErrNotFound) {
			t.Errorf("client of the failed Update: %v, want ErrNotFound",
				err)
		}
		return nil
	})
	if err != nil {
		t.Errorf("View after the server started: %v", err)
	}
	want := map[int]int{}
	for v := 1; v <= PostgresSchemaVersion; v++ {
		want[v] = 1
	}
	conn := pgConnect(t, srv.DSN())
	if got := pgSchemaRows(t, conn); !reflect.DeepEqual(got, want) {
		t.Errorf("dcr_schema = %v, want %v", got, want)
	}
}

func TestPostgresOutage(t *testing.T) {
	srv := pgtest.StartServer(t)
	p := pgOpen(t, srv.DSN(), PostgresOptions{ConnectTimeout: 5 * time.Second})
	r, err := Open(t.Context(), srv.DSN())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	ctCloseAtEnd(t, r)

	ctCreate(t, p, ctClient("before"))
	if _, err := r.Lookup("before"); err != nil {
		t.Fatalf("Lookup before the outage: %v", err)
	}

	srv.Stop(t)
	pgUpdateDown(t, p, "during")
	if _, err := r.Lookup("before"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Lookup with the server down = %v, want ErrUnavailable",
			err)
	}

	// The same handles work again once the server is back.
	srv.Start(t)
	ctCreate(t, p, ctClient("after"))
	for _, id := range []string{"before", "after"} {
		if _, err := r.Lookup(id); err != nil {
			t.Errorf("Lookup(%q) after the outage: %v", id, err)
		}
	}
	if _, err := r.Lookup("during"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup of the failed Update's client = %v, "+
			"want ErrNotFound", err)
	}
}

func TestPostgresClientRow(t *testing.T) {
	dsn := pgtest.Database(t)
	p := pgOpen(t, dsn, PostgresOptions{})
	conn := pgConnect(t, dsn)

	// Plaintexts long and distinct enough that finding one in a row
	// cannot be chance.
	const (
		secret = "plain-client-secret-7f3a9c1e5b"
		rat    = "plain-registration-token-2d8e4b6a0c"
	)
	confidential := ctFullClient("conf")
	confidential.SecretHash = HashSecret(secret)
	confidential.PreviousSecretHash = HashSecret(secret + "-old")
	confidential.RegistrationTokenHash = HashSecret(rat)
	public := ctClient("public")
	public.SecretHash = ""
	public.Metadata.TokenEndpointAuthMethod = "none"
	ctCreate(t, p, confidential, public)

	type row struct {
		ClientName, Scope, AuthMethod          string
		RedirectURIs, GrantTypes, RespTypes    []string
		SecretHash, TokenHash, InitialToken    *string
		IssuedAt                               time.Time
		SecretExpires, Updated, Used, Disabled *time.Time
	}
	read := func(id string) row {
		t.Helper()
		var r row
		err := conn.QueryRow(t.Context(), `SELECT client_name, scope,
			token_endpoint_auth_method, redirect_uris, grant_types,
			response_types, client_secret_hash,
			registration_access_token_hash, initial_token_id, issued_at,
			client_secret_expires_at, updated_at, last_used_at, disabled_at
			FROM dcr_clients WHERE client_id = $1`, id).Scan(
			&r.ClientName, &r.Scope, &r.AuthMethod, &r.RedirectURIs,
			&r.GrantTypes, &r.RespTypes, &r.SecretHash, &r.TokenHash,
			&r.InitialToken, &r.IssuedAt, &r.SecretExpires, &r.Updated,
			&r.Used, &r.Disabled)
		if err != nil {
			t.Fatalf("reading row %q: %v", id, err)
		}
		return r
	}
	str := func(p *string) string {
		if p == nil {
			return "NULL"
		}
		return *p
	}
	unix := func(p *time.Time) int64 {
		if p == nil {
			return 0
		}
		return p.Unix()
	}

	c, m := confidential, confidential.Metadata
	got := read(c.ID)
	checks := []struct {
		column    string
		got, want any
	}{
		{"client_name", got.ClientName, m.ClientName},
		{"scope", got.Scope, m.Scope},
		{"token_endpoint_auth_method", got.AuthMethod,
			m.TokenEndpointAuthMethod},
		{"redirect_uris", got.RedirectURIs, m.RedirectURIs},
		{"grant_types", got.GrantTypes, m.GrantTypes},
		{"response_types", got.RespTypes, m.ResponseTypes},
		{"client_secret_hash", str(got.SecretHash), HashSecret(secret)},
		{"registration_access_token_hash", str(got.TokenHash),
			HashSecret(rat)},
		{"initial_token_id", str(got.InitialToken), c.InitialTokenID},
		{"issued_at", got.IssuedAt.Unix(), c.IssuedAt},
		{"client_secret_expires_at", unix(got.SecretExpires),
			c.SecretExpiresAt},
		{"updated_at", unix(got.Updated), c.UpdatedAt},
		{"last_used_at", unix(got.Used), c.LastUsedAt},
		{"disabled_at", unix(got.Disabled), int64(0)},
	}
	for _, ck := range checks {
		if !reflect.DeepEqual(ck.got, ck.want) {
			t.Errorf("%s = %v, want %v", ck.column, ck.got, ck.want)
		}
	}
	if !strings.HasPrefix(str(got.SecretHash), "sha256:") {
		t.Errorf("client_secret_hash %q lacks sha256:", str(got.SecretHash))
	}

	pub := read(public.ID)
	if pub.SecretHash != nil || pub.SecretExpires != nil ||
		pub.TokenHash != nil || pub.InitialToken != nil {
		t.Errorf("public client's secret, expiry, token, initial token "+
			"= %s, %v, %s, %s; want NULL", str(pub.SecretHash),
			pub.SecretExpires, str(pub.TokenHash), str(pub.InitialToken))
	}

	// Every column of every row, the record included, as text.
	var dump string
	err := conn.QueryRow(t.Context(), "SELECT string_agg(to_jsonb(c)::text, "+
		"E'\\n') FROM dcr_clients c").Scan(&dump)
	if err != nil {
		t.Fatalf("dumping dcr_clients: %v", err)
	}
	if !strings.Contains(dump, HashSecret(secret)) {
		t.Fatalf("the dump holds no secret hash, so it shows nothing: %s",
			dump)
	}
	for _, plain := range []string{secret, rat} {
		if strings.Contains(dump, plain) {
			t.Errorf("dcr_clients holds the plaintext %q", plain)
		}
	}

	// The columns follow later changes of the record.
	ctUpdate(t, p, func(tx Tx) error {
		c, err := tx.Disable(c.ID, ctAt(30))
		if err != nil {
			return err
		}
		c.Metadata.ClientName = "renamed"
		c.Metadata.GrantTypes = []string{"client_credentials"}
		return tx.Put(c)
	})
	got = read(c.ID)
	if got.ClientName != "renamed" ||
		!slices.Equal(got.GrantTypes, []string{"client_credentials"}) ||
		unix(got.Disabled) != ctBase+30 {
		t.Errorf("after Disable and Put: client_name %q, grant_types %q, "+
			"disabled_at %v", got.ClientName, got.GrantTypes, got.Disabled)
	}
}

func TestPostgresTokenRow(t *testing.T) {
	dsn := pgtest.Database(t)
	p := pgOpen(t, dsn, PostgresOptions{})
	conn := pgConnect(t, dsn)

	token, info, err := p.CreateInitialToken(t.Context(),
		InitialTokenSpec{Label: "row", MaxUses: 3}, ctAt(0))
	if err != nil {
		t.Fatalf("CreateInitialToken: %v", err)
	}
	var hash, dump string
	err = conn.QueryRow(t.Context(), "SELECT token_hash, to_jsonb(t)::text "+
		"FROM dcr_initial_tokens t WHERE id = $1", info.ID).Scan(&hash, &dump)
	if err != nil {
		t.Fatalf("reading the token's row: %v", err)
	}
	if hash != HashSecret(token) {
		t.Errorf("token_hash = %q, want %q", hash, HashSecret(token))
	}
	// The random part alone, in case the prefix were cut off.
	random := strings.TrimPrefix(token, InitialTokenPrefix)
	if strings.Contains(dump, random) {
		t.Errorf("dcr_initial_tokens holds the plaintext token: %s", dump)
	}
}

func TestPostgresBadValueNotUnavailable(t *testing.T) {
	dsn := pgtest.Database(t)
	p := pgOpen(t, dsn, PostgresOptions{})
	_, _, err := p.CreateInitialToken(t.Context(),
		InitialTokenSpec{MaxUses: 1 << 40}, ctAt(0))
	if errors.Is(err, ErrUnavailable) {
		t.Errorf("CreateInitialToken with max uses 2^40 = %v; "+
			"want an error that is not ErrUnavailable", err)
	}
}
