package pgtest

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// connect opens a connection to dsn that is closed when t ends.
func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connecting to %s: %v", dsn, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// queryString runs a query returning one text value.
func queryString(t *testing.T, conn *pgx.Conn, sql string) string {
	t.Helper()

	var v string
	if err := conn.QueryRow(t.Context(), sql).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

func TestWithDatabase(t *testing.T) {
	const name = "dcr_test_0123456789abcdef"
	tests := []struct {
		name string
		dsn  string
		host string
		user string
	}{
		{
			name: "url with database",
			dsn:  "postgres://alice:pw@db.example:5433/app?sslmode=disable",
			host: "db.example",
			user: "alice",
		},
		{
			name: "url without database",
			dsn:  "postgresql://bob@127.0.0.1:5432?sslmode=disable",
			host: "127.0.0.1",
			user: "bob",
		},
		{
			name: "keyword value with dbname",
			dsn:  "host=db.example user=carol dbname=app sslmode=disable",
			host: "db.example",
			user: "carol",
		},
		{
			name: "keyword value without dbname",
			dsn:  "host=db.example user=dave sslmode=disable ",
			host: "db.example",
			user: "dave",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dsn, err := withDatabase(tc.dsn, name)
			if err != nil {
				t.Fatalf("withDatabase: %v", err)
			}

			// Judge the result the way the driver will read it.
			cfg, err := pgx.ParseConfig(dsn)
			if err != nil {
				t.Fatalf("parsing %q: %v", dsn, err)
			}
			if cfg.Database != name {
				t.Errorf("database = %q, want %q", cfg.Database, name)
			}
			if cfg.Host != tc.host || cfg.User != tc.user {
				t.Errorf("host, user = %q, %q; want %q, %q",
					cfg.Host, cfg.User, tc.host, tc.user)
			}
		})
	}
}

func TestStartServer(t *testing.T) {
	s := StartServer(t)
	conn := connect(t, s.DSN())

	tests := []struct {
		setting string
		want    string
	}{
		{"listen_addresses", "127.0.0.1"},
		{"port", strconv.Itoa(s.port)},
		{"unix_socket_directories", s.data},
		{"fsync", "on"},
		{"is_superuser", "on"},
	}
	for _, tc := range tests {
		t.Run(tc.setting, func(t *testing.T) {
			got := queryString(t, conn, "SHOW "+tc.setting)
			if got != tc.want {
				t.Errorf("%s = %q, want %q", tc.setting, got, tc.want)
			}
		})
	}
}

func TestServerStopStart(t *testing.T) {
	s := StartServer(t)
	dsn := s.DSN()

	// A row written before the outage shows that Start brings back
	// the same cluster, not a new one.
	conn := connect(t, dsn)
	_, err := conn.Exec(t.Context(),
		"CREATE TABLE survivor (v text); "+
			"INSERT INTO survivor VALUES ('kept')")
	if err != nil {
		t.Fatalf("writing before stop: %v", err)
	}
	conn.Close(t.Context())

	s.Stop(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if c, err := pgx.Connect(ctx, dsn); err == nil {
		c.Close(ctx)
		t.Fatal("connecting to a stopped server succeeded")
	}

	s.Start(t)
	if s.DSN() != dsn {
		t.Errorf("DSN after Start = %q, want %q", s.DSN(), dsn)
	}
	conn = connect(t, dsn)
	if got := queryString(t, conn, "SELECT v FROM survivor"); got != "kept" {
		t.Errorf("row after restart = %q, want %q", got, "kept")
	}
}

func TestDatabaseSkipsWithoutDSN(t *testing.T) {
	t.Setenv(EnvDSN, "")

	var skipped bool
	t.Run("inner", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		Database(t)
		t.Error("Database returned without a DSN")
	})
	if !skipped {
		t.Errorf("Database did not skip without $%s", EnvDSN)
	}
}

func TestDatabase(t *testing.T) {
	if os.Getenv(EnvDSN) == "" {
		t.Skip("PostgreSQL tests skipped: " + EnvDSN + " is not set")
	}

	t.Run("empty and usable", func(t *testing.T) {
		conn := connect(t, Database(t))

		name := queryString(t, conn, "SELECT current_database()")
		if !strings.HasPrefix(name, "dcr_test_") {
			t.Errorf("database %q lacks the dcr_test_ prefix", name)
		}
		n := queryString(t, conn, "SELECT count(*)::text "+
			"FROM information_schema.tables WHERE table_schema "+
			"NOT IN ('pg_catalog', 'information_schema')")
		if n != "0" {
			t.Errorf("new database has %s tables, want 0", n)
		}

		_, err := conn.Exec(t.Context(),
			"CREATE TABLE t (v int); INSERT INTO t VALUES (42)")
		if err != nil {
			t.Fatalf("writing: %v", err)
		}
		if got := queryString(t, conn, "SELECT v::text FROM t"); got != "42" {
			t.Errorf("read back %q, want 42", got)
		}
	})

	t.Run("distinct per call", func(t *testing.T) {
		a := queryString(t, connect(t, Database(t)),
			"SELECT current_database()")
		b := queryString(t, connect(t, Database(t)),
			"SELECT current_database()")
		if a == b {
			t.Errorf("two calls both gave database %q", a)
		}
	})

	t.Run("dropped despite open connection", func(t *testing.T) {
		// The inner test ends with its connection still open (it
		// is closed only when this test ends), so the drop must
		// force it off.
		var name string
		var leaked *pgx.Conn
		t.Run("inner", func(t *testing.T) {
			dsn := Database(t)
			cfg, err := pgx.ParseConfig(dsn)
			if err != nil {
				t.Fatalf("parsing %q: %v", dsn, err)
			}
			name = cfg.Database

			// Not t.Context(): the connection outlives t.
			leaked, err = pgx.ConnectConfig(context.Background(), cfg)
			if err != nil {
				t.Fatalf("connecting: %v", err)
			}
		})
		if leaked != nil {
			defer leaked.Close(context.Background())
		}
		if name == "" {
			t.Fatal("inner test did not create a database")
		}

		admin := connect(t, os.Getenv(EnvDSN))
		var exists bool
		err := admin.QueryRow(t.Context(),
			"SELECT EXISTS (SELECT 1 FROM pg_database "+
				"WHERE datname = $1)", name).Scan(&exists)
		if err != nil {
			t.Fatalf("looking for %s: %v", name, err)
		}
		if exists {
			t.Errorf("database %s still exists after its test", name)
		}
	})
}
