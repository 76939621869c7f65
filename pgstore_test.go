package dcr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
	"github.com/caddy-dcr/caddy-dcr/internal/pgtest"

	"github.com/caddyserver/caddy/v2"
)

func TestPostgresStoreValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  PostgresStore
		want string // "" for valid
	}{
		{"dsn only", PostgresStore{DSN: "postgres://db/x"}, ""},
		{"empty dsn", PostgresStore{}, "DSN is empty"},
		{"negative", PostgresStore{DSN: "x", MinConns: -1}, "between 0 and"},
		{"too many", PostgresStore{DSN: "x", MaxConns: 5000}, "between 0 and"},
		{"min above max", PostgresStore{DSN: "x", MaxConns: 2, MinConns: 3}, "above max_conns"},
		{
			"negative duration",
			PostgresStore{DSN: "x", ConnectTimeout: caddy.Duration(-time.Second)},
			"must not be negative",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("validate = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("validate = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestProvisionStoreConflict checks that naming both a bbolt file and a
// PostgreSQL database is refused.
func TestProvisionStoreConflict(t *testing.T) {
	raw := `{"apps":{"http":{"servers":{"s":{"listen":[":0"],"routes":[{"handle":[` +
		`{"handler":"dcr","store":"/tmp/x.db","postgres":{"dsn":"postgres://h/d"}}` +
		`]}]}}}}}`
	var cfg caddy.Config
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatal(err)
	}
	err := caddy.Validate(&cfg)
	if err == nil || !strings.Contains(err.Error(), "not both") {
		t.Fatalf("Validate = %v, want the conflict named", err)
	}
}

// closedPort returns a loopback address on which nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestAcquirePostgresUnreachable checks that a handler comes up while its
// database is down, that requests then fail with ErrUnavailable, and that
// the outage is logged once however many operations fail.
func TestAcquirePostgresUnreachable(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	dsn := fmt.Sprintf("postgres://dcr:secret-password@%s/dcr?connect_timeout=2",
		closedPort(t))
	s, key, err := acquirePostgres(&PostgresStore{DSN: dsn}, zap.New(core))
	if err != nil {
		t.Fatalf("acquirePostgres with the server down: %v", err)
	}
	t.Cleanup(func() { releaseStore(key) })
	if strings.Contains(key, "secret-password") {
		t.Errorf("store key %q holds the password", key)
	}

	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := s.Create(ctx, testClient(clientdb.NewClientID(time.Now())))
		cancel()
		if !errors.Is(err, clientdb.ErrUnavailable) {
			t.Fatalf("Create = %v, want ErrUnavailable", err)
		}
		_, err = s.Client(clientdb.NewClientID(time.Now()))
		if !errors.Is(err, clientdb.ErrUnavailable) {
			t.Fatalf("Client = %v, want ErrUnavailable", err)
		}
	}
	down := logs.FilterMessageSnippet("client store unavailable").All()
	if len(down) != 1 {
		t.Fatalf("outage logged %d times, want once", len(down))
	}
	for _, e := range logs.All() {
		for _, f := range e.Context {
			if strings.Contains(f.String, "secret-password") ||
				(f.Interface != nil && strings.Contains(fmt.Sprint(f.Interface), "secret-password")) {
				t.Errorf("log entry %q holds the password: %v", e.Message, f)
			}
		}
	}
}

// TestAcquirePostgres checks sharing and schema handling on a real
// server: one store per database for every handler, a recovery logged
// after an outage ended, and a schema newer than the build refused.
func TestAcquirePostgres(t *testing.T) {
	dsn := pgtest.Database(t)
	core, logs := observer.New(zapcore.InfoLevel)
	a, keyA, err := acquirePostgres(&PostgresStore{DSN: dsn}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	b, keyB, err := acquirePostgres(&PostgresStore{DSN: dsn, MaxConns: 3}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	if a != b || keyA != keyB {
		t.Error("two handlers on one database got two stores")
	}
	c := testClient(clientdb.NewClientID(time.Now()))
	if err := a.Create(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Client(c.ID); err != nil || got.ID != c.ID {
		t.Fatalf("Client = %v, %v", got, err)
	}

	// An outage that ends: one line when it begins, one when it ends.
	a.checked(fmt.Errorf("test: %w", clientdb.ErrUnavailable))
	a.checked(fmt.Errorf("test: %w", clientdb.ErrUnavailable))
	if _, err := a.Client(c.ID); err != nil {
		t.Fatal(err)
	}
	if n := len(logs.FilterMessageSnippet("available again").All()); n != 1 {
		t.Errorf("recovery logged %d times, want once", n)
	}
	releaseStore(keyA)
	releaseStore(keyB)

	// A schema from a later build fails the config load.
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(),
		"INSERT INTO dcr_schema (version) VALUES (99)"); err != nil {
		t.Fatal(err)
	}
	_, key, err := acquirePostgres(&PostgresStore{DSN: dsn}, zap.NewNop())
	if err == nil {
		releaseStore(key)
		t.Fatal("acquirePostgres accepted a schema newer than the build")
	}
	if !errors.Is(err, clientdb.ErrSchema) {
		t.Errorf("acquirePostgres = %v, want ErrSchema", err)
	}
}
