// Package pgtest gives tests a PostgreSQL database to work on.
//
// Database hands each test a fresh, empty database on a shared server
// named by $DCR_TEST_POSTGRES_DSN (.ci/run starts one and sets it), so
// tests of the PostgreSQL store never see each other's rows. StartServer
// starts a private cluster instead, for tests that need to stop and
// start the server to see how the store rides out an outage.
//
// Both skip the test, saying why, when PostgreSQL is not available, so
// `go test ./...` stays green on a machine without it.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvDSN names the environment variable with the DSN of a PostgreSQL
// server tests may create databases on. The role it names must have
// CREATEDB, and the server must be PostgreSQL 13 or newer (for DROP
// DATABASE ... WITH (FORCE)).
const EnvDSN = "DCR_TEST_POSTGRES_DSN"

// envBin names the environment variable with the directory holding
// initdb and pg_ctl; it overrides the search of PATH and
// /usr/lib/postgresql.
const envBin = "DCR_TEST_PG_BIN"

// opTimeout bounds every single operation on a server: a connection,
// a CREATE or DROP DATABASE, a pg_ctl start or stop. A server that
// needs longer is broken, and a hung test is harder to read than a
// failed one.
const opTimeout = 60 * time.Second

// Database returns the DSN of a new, empty database created for tb on
// the server named by $DCR_TEST_POSTGRES_DSN, and drops it (WITH
// (FORCE), so connections the test leaks do not block it) when tb ends.
// Without the variable it skips tb, saying why. Database names are
// random (dcr_test_<hex>) so parallel test binaries never collide.
func Database(tb testing.TB) string {
	tb.Helper()

	admin := os.Getenv(EnvDSN)
	if admin == "" {
		tb.Skip("PostgreSQL tests skipped: " + EnvDSN +
			" is not set; .ci/run sets it")
	}

	name, err := randomName()
	if err != nil {
		tb.Fatalf("naming test database: %v", err)
	}
	dsn, err := withDatabase(admin, name)
	if err != nil {
		tb.Fatalf("building DSN from $%s: %v", EnvDSN, err)
	}

	// template0 rather than the default template1: it is empty
	// whatever an admin added to template1, and nobody can be
	// connected to it, which would make CREATE DATABASE fail.
	ident := pgx.Identifier{name}.Sanitize()
	err = adminExec(admin, "CREATE DATABASE "+ident+" TEMPLATE template0")
	if err != nil {
		tb.Fatalf("creating test database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		err := adminExec(admin,
			"DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)")
		if err != nil {
			tb.Errorf("dropping test database %s: %v", name, err)
		}
	})
	return dsn
}

// randomName returns a database name that no other test binary will
// pick: 64 random bits make a collision between concurrent runs
// vanishingly unlikely.
func randomName() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "dcr_test_" + hex.EncodeToString(b), nil
}

// withDatabase returns dsn with its database replaced by name. It
// accepts both forms libpq does: a postgres:// URL and keyword=value
// pairs. name must need no quoting.
func withDatabase(dsn, name string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") ||
		strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", err
		}
		u.Path = "/" + name
		u.RawPath = ""
		return u.String(), nil
	}

	// In keyword=value form the last setting of a keyword wins, so
	// appending overrides any dbname already there.
	return strings.TrimSpace(dsn) + " dbname=" + name, nil
}

// adminExec runs one statement on a fresh connection to dsn. It does
// not use the test's context: cleanups run after that is cancelled.
func adminExec(dsn, sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()

	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer conn.Close(ctx)

	_, err = conn.Exec(ctx, sql)
	return err
}

// Server is a private PostgreSQL cluster that a test started and may
// stop and start again, for outage tests. Its data survives Stop and
// Start; it is deleted when the test ends.
//
// If the test binary dies without running its cleanups (a panic in
// another goroutine, a -timeout), the server keeps running: pg_ctl
// detaches it from the test's session. Stop it with
// `pg_ctl stop -D <dir>/data`, where <dir> is a pgtest-* directory
// under os.TempDir.
type Server struct {
	initdb string // path of initdb
	pgCtl  string // path of pg_ctl
	dir    string // temp dir holding data/ and server.log
	data   string // the cluster's data directory
	port   int

	// cred is the OS user initdb and pg_ctl run as, nil for the
	// current one. PostgreSQL refuses to run as root.
	cred *syscall.Credential
}

// StartServer initdb's a cluster in a temp dir and starts it on a free
// loopback TCP port (listen_addresses=127.0.0.1, unix_socket_directories
// set to the data dir, fsync on, trust auth for the test), and stops it
// (pg_ctl stop -m immediate) when tb ends.
//
// It finds initdb and pg_ctl in $DCR_TEST_PG_BIN, else on PATH, else in
// the newest /usr/lib/postgresql/*/bin; if there are none, it skips tb
// saying why. PostgreSQL refuses to run as root, so as root it runs
// them as the "postgres" OS user, and skips tb if there is no such
// user.
func StartServer(tb testing.TB) *Server {
	tb.Helper()

	initdb, pgCtl, err := findBinaries()
	if err != nil {
		tb.Skip("PostgreSQL server tests skipped: " + err.Error())
	}
	s := &Server{initdb: initdb, pgCtl: pgCtl}

	if os.Geteuid() == 0 {
		cred, err := postgresUser()
		if err != nil {
			tb.Skip("PostgreSQL server tests skipped: running as " +
				"root, which PostgreSQL refuses, and " + err.Error())
		}
		s.cred = cred
	}

	// Not t.TempDir: that directory is private to the current user,
	// and as root the server runs as another.
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		tb.Fatalf("creating server dir: %v", err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	if s.cred != nil {
		err := os.Chown(dir, int(s.cred.Uid), int(s.cred.Gid))
		if err != nil {
			tb.Fatalf("handing server dir to postgres: %v", err)
		}
	}
	s.dir = dir
	s.data = filepath.Join(dir, "data")

	// --no-sync only skips syncing the fresh cluster to disk once;
	// the running server still fsyncs (fsync = on below), which is
	// what outage tests exercise.
	out, err := s.run(s.initdb, "-D", s.data, "-U", "postgres",
		"-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync")
	if err != nil {
		tb.Fatalf("initdb: %v\n%s", err, out)
	}

	// Registered before the first start, so that a start that fails
	// after the postmaster came up still stops it.
	tb.Cleanup(func() { s.stop(tb, "immediate") })

	// Another process may take the free port between our probe and
	// the server's bind; a fresh port then usually succeeds.
	const attempts = 3
	for i := 1; ; i++ {
		s.port, err = freePort()
		if err != nil {
			tb.Fatalf("finding a free port: %v", err)
		}
		if err := s.configure(); err != nil {
			tb.Fatalf("configuring server: %v", err)
		}
		out, err := s.pgCtlStart()
		if err == nil {
			break
		}
		if i == attempts {
			tb.Fatalf("starting server: %v\n%s\n%s",
				err, out, s.serverLog())
		}
	}
	return s
}

// DSN returns the server's connection string, for the superuser
// "postgres" and its default database "postgres":
// postgres://postgres@127.0.0.1:<port>/postgres?sslmode=disable.
// It stays the same across Stop and Start.
func (s *Server) DSN() string {
	return fmt.Sprintf(
		"postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable",
		s.port)
}

// Stop shuts the server down cleanly (pg_ctl stop -m fast: open
// connections are cut, committed data is kept) and returns once it has
// exited. Connecting fails until Start.
func (s *Server) Stop(tb testing.TB) {
	tb.Helper()

	out, err := s.run(s.pgCtl, "stop", "-D", s.data,
		"-m", "fast", "-w", "-t", seconds(opTimeout))
	if err != nil {
		tb.Fatalf("stopping server: %v\n%s", err, out)
	}
}

// Start starts a stopped server again on the same port and data
// directory (pg_ctl start -w) and returns once it accepts connections.
func (s *Server) Start(tb testing.TB) {
	tb.Helper()

	out, err := s.pgCtlStart()
	if err != nil {
		tb.Fatalf("starting server: %v\n%s\n%s", err, out, s.serverLog())
	}
}

// configure appends the server's settings to postgresql.conf. Later
// lines win, so a retry on another port just appends again.
func (s *Server) configure() error {
	f, err := os.OpenFile(filepath.Join(s.data, "postgresql.conf"),
		os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "\n# pgtest\n"+
		"listen_addresses = '127.0.0.1'\n"+
		"port = %d\n"+
		"unix_socket_directories = '%s'\n"+
		"fsync = on\n",
		s.port, s.data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// pgCtlStart starts the server and waits until it accepts connections.
// The log file matters beyond diagnostics: without -l the postmaster
// would inherit run's output pipe, and run would wait for it to exit.
func (s *Server) pgCtlStart() ([]byte, error) {
	return s.run(s.pgCtl, "start", "-D", s.data,
		"-l", filepath.Join(s.dir, "server.log"),
		"-w", "-t", seconds(opTimeout))
}

// stop stops the server in the given pg_ctl mode if it is running. It
// reports a failure without stopping tb, as it runs in a cleanup.
func (s *Server) stop(tb testing.TB, mode string) {
	// The postmaster removes its pid file on exit, and pg_ctl stop
	// fails without one: a server the test left stopped is fine.
	pid := filepath.Join(s.data, "postmaster.pid")
	if _, err := os.Stat(pid); errors.Is(err, os.ErrNotExist) {
		return
	}

	out, err := s.run(s.pgCtl, "stop", "-D", s.data,
		"-m", mode, "-w", "-t", seconds(opTimeout))
	if err != nil {
		tb.Errorf("stopping server: %v\n%s", err, out)
	}
}

// serverLog returns the server's log, to explain a failed start.
func (s *Server) serverLog() string {
	b, err := os.ReadFile(filepath.Join(s.dir, "server.log"))
	if err != nil {
		return "(no server log: " + err.Error() + ")"
	}
	return "server log:\n" + string(b)
}

// run runs a PostgreSQL program as the server's OS user, from the
// server's dir: the test's working directory may be closed to that
// user, and initdb complains when it cannot return there.
func (s *Server) run(prog string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(),
		opTimeout+10*time.Second)
	defer cancel()

	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Dir = s.dir
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	return cmd.CombinedOutput()
}

// findBinaries returns the paths of initdb and pg_ctl, or an error that
// says where it looked.
func findBinaries() (initdb, pgCtl string, err error) {
	if dir := os.Getenv(envBin); dir != "" {
		initdb = filepath.Join(dir, "initdb")
		pgCtl = filepath.Join(dir, "pg_ctl")
		if isExecutable(initdb) && isExecutable(pgCtl) {
			return initdb, pgCtl, nil
		}
		return "", "", fmt.Errorf(
			"$%s=%s has no initdb and pg_ctl", envBin, dir)
	}

	initdb, err1 := exec.LookPath("initdb")
	pgCtl, err2 := exec.LookPath("pg_ctl")
	if err1 == nil && err2 == nil {
		return initdb, pgCtl, nil
	}

	if dir := newestDebianBin(); dir != "" {
		initdb = filepath.Join(dir, "initdb")
		pgCtl = filepath.Join(dir, "pg_ctl")
		if isExecutable(initdb) && isExecutable(pgCtl) {
			return initdb, pgCtl, nil
		}
	}
	return "", "", fmt.Errorf("no initdb and pg_ctl in $%s, on PATH "+
		"or in /usr/lib/postgresql/*/bin", envBin)
}

// newestDebianBin returns the bin dir of the newest PostgreSQL that
// Debian's packages installed, which keep it off PATH, or "".
func newestDebianBin() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")

	// Sort by version, not text: 9.6 is older than 15.
	version := func(dir string) float64 {
		v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(dir)), 64)
		if err != nil {
			return -1
		}
		return v
	}
	sort.Slice(dirs, func(i, j int) bool {
		return version(dirs[i]) < version(dirs[j])
	})
	if len(dirs) == 0 || version(dirs[len(dirs)-1]) < 0 {
		return ""
	}
	return dirs[len(dirs)-1]
}

// isExecutable reports whether path is a regular file someone may run.
func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// postgresUser looks up the "postgres" OS user to run the server as.
func postgresUser() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("there is no postgres user to run it "+
			"as: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parsing uid of postgres: %w", err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parsing gid of postgres: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// freePort returns a loopback TCP port that nobody listened on a
// moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// seconds formats d for pg_ctl's -t flag.
func seconds(d time.Duration) string {
	return strconv.Itoa(int(d / time.Second))
}
