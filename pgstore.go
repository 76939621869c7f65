package dcr

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-dcr/caddy-dcr/clientdb"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// PostgresStore keeps registered clients in a PostgreSQL database, so that
// several Caddy instances share them and other hosts can read them. The
// plugin creates and migrates its tables (named dcr_*) itself.
type PostgresStore struct {
	// DSN names the database: a postgres:// URL or a key=value
	// connection string as libpq takes. Placeholders such as
	// {env.DCR_DATABASE_URL} are expanded. The password is never logged.
	// Required.
	DSN string `json:"dsn"`

	// MaxConns bounds the open connections of this Caddy process to the
	// database. Default: 10.
	MaxConns int `json:"max_conns,omitempty"`

	// MinConns is how many connections stay open while idle. Default: 1.
	MinConns int `json:"min_conns,omitempty"`

	// ConnectTimeout bounds establishing one connection. Default: 5s.
	ConnectTimeout caddy.Duration `json:"connect_timeout,omitempty"`

	// MaxConnLifetime is how long a connection is used before it is
	// replaced. Default: 1h.
	MaxConnLifetime caddy.Duration `json:"max_conn_lifetime,omitempty"`

	// MaxConnIdleTime is how long an unused connection above MinConns
	// stays open. Default: 30m.
	MaxConnIdleTime caddy.Duration `json:"max_conn_idle_time,omitempty"`
}

// readyWait bounds the check at Provision that the database's schema is
// usable. Provision holds Caddy's config lock, so it must be short.
const readyWait = 5 * time.Second

// acquirePostgres returns the shared store for the database cfg names;
// every successful call must be paired with releaseStore. When the server
// cannot be reached it still succeeds, so that Caddy starts during an
// outage: the schema is prepared on first use and requests answer 503
// until then. A schema this build cannot use fails it.
func acquirePostgres(cfg *PostgresStore, logger *zap.Logger) (*sharedStore, string, error) {
	dsn := caddy.NewReplacer().ReplaceKnown(cfg.DSN, "")
	name, err := clientdb.PostgresName(dsn)
	if err != nil {
		return nil, "", err
	}
	v, _, err := stores.LoadOrNew(name, func() (caddy.Destructor, error) {
		p, err := clientdb.OpenPostgres(context.Background(), dsn,
			clientdb.PostgresOptions{
				MaxConns:        int32(cfg.MaxConns),
				MinConns:        int32(cfg.MinConns),
				ConnectTimeout:  time.Duration(cfg.ConnectTimeout),
				MaxConnLifetime: time.Duration(cfg.MaxConnLifetime),
				MaxConnIdleTime: time.Duration(cfg.MaxConnIdleTime),
				Lazy:            true,
			})
		if err != nil {
			return nil, err
		}
		s := newSharedStore(p, name, false)
		s.postgres = p
		return s, nil
	})
	if err != nil {
		return nil, "", err
	}
	s := v.(*sharedStore)
	s.logger.Store(logger)

	ctx, cancel := context.WithTimeout(context.Background(), readyWait)
	defer cancel()
	err = s.checked(s.postgres.Ready(ctx))
	if err != nil && !errors.Is(err, clientdb.ErrUnavailable) {
		stores.Delete(name)
		return nil, "", err
	}
	return s, name, nil
}

// maxPoolConns bounds the pool settings; PostgreSQL itself allows 100
// connections by default.
const maxPoolConns = 1000

// validate checks the settings that need no connection.
func (p *PostgresStore) validate() error {
	switch {
	case p.DSN == "":
		return errors.New("store postgres: the DSN is empty")
	case p.MaxConns < 0 || p.MinConns < 0 ||
		p.MaxConns > maxPoolConns || p.MinConns > maxPoolConns:
		return fmt.Errorf("store postgres: connection counts must be "+
			"between 0 and %d", maxPoolConns)
	case p.MaxConns > 0 && p.MinConns > p.MaxConns:
		return fmt.Errorf("store postgres: min_conns %d is above max_conns %d",
			p.MinConns, p.MaxConns)
	case p.ConnectTimeout < 0 || p.MaxConnLifetime < 0 || p.MaxConnIdleTime < 0:
		return errors.New("store postgres: durations must not be negative")
	}
	return nil
}

// parseStore parses "store <path>" or "store postgres <dsn> { ... }".
func (h *Handler) parseStore(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	switch {
	case len(args) == 0:
		return d.ArgErr()
	case len(args) == 1 && args[0] == "postgres":
		return d.Err("store: want <path> or postgres <dsn>, got postgres " +
			"without a DSN (write a file named postgres as ./postgres)")
	case len(args) == 1:
		h.Store = args[0]
		if d.NextBlock(d.Nesting()) {
			return d.Err("store: a bbolt file takes no block")
		}
		return nil
	case len(args) != 2 || args[0] != "postgres":
		return d.Errf("store: want <path> or postgres <dsn>, got %d arguments",
			len(args))
	}

	p := &PostgresStore{DSN: args[1]}
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if seen[name] {
			return d.Errf("store postgres: subdirective %s given more than once", name)
		}
		seen[name] = true

		var err error
		switch name {
		case "max_conns":
			p.MaxConns, err = positive(d, name)
		case "min_conns":
			p.MinConns, err = count(d, name)
		case "connect_timeout":
			p.ConnectTimeout, err = duration(d, name)
		case "max_conn_lifetime":
			p.MaxConnLifetime, err = duration(d, name)
		case "max_conn_idle_time":
			p.MaxConnIdleTime, err = duration(d, name)
		default:
			return d.Errf("store postgres: unknown subdirective %s", name)
		}
		if err != nil {
			return err
		}
	}
	h.Postgres = p
	return nil
}

// positive parses the single positive integer argument of the current
// subdirective.
func positive(d *caddyfile.Dispenser, name string) (int, error) {
	v, err := oneArg(d)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, d.Errf("%s %q: want a positive integer", name, v)
	}
	return n, nil
}
