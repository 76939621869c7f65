package dcr

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
	"github.com/caddy-dcr/caddy-dcr/internal/pgtest"
)

// itStoreSuite is the integration suite that runs on both stores: each
// test runs on bbolt as a top-level test of its own, and on PostgreSQL
// under TestIntegrationPostgres. The tests left out check what only one
// store has: bbolt's file locks and reader processes, or the lookup cache
// that only a store written by one process can keep.
var itStoreSuite = []struct {
	name string
	fn   func(*testing.T)
}{
	{"RegisterDefaults", TestIntegrationRegisterDefaults},
	{"ManagementOff", TestIntegrationManagementOff},
	{"RegisterEchoesMetadata", TestIntegrationRegisterEchoesMetadata},
	{"RegisterClients", TestIntegrationRegisterClients},
	{"SecretLifetime", TestIntegrationSecretLifetime},
	{"IssuedValuesAreDistinct", TestIntegrationIssuedValuesAreDistinct},
	{"MaxBody", TestIntegrationMaxBody},
	{"Logging", TestIntegrationLogging},
	{"MCPClientFlow", TestIntegrationMCPClientFlow},
	{"InitialAccessToken", TestIntegrationInitialAccessToken},
	{"ManageRead", TestIntegrationManageRead},
	{"ManageUpdate", TestIntegrationManageUpdate},
	{"ManageRotateToken", TestIntegrationManageRotateToken},
	{"ManageAuthMethod", TestIntegrationManageAuthMethod},
	{"ManageRotateSecret", TestIntegrationManageRotateSecret},
	{"ManageSecretExpiry", TestIntegrationManageSecretExpiry},
	{"ManageDelete", TestIntegrationManageDelete},
	{"ManageUnauthorized", TestIntegrationManageUnauthorized},
	{"ManageConcurrentUpdates", TestIntegrationManageConcurrentUpdates},
	{"ManageDeleteRacesUpdate", TestIntegrationManageDeleteRacesUpdate},
	{"ManageTombstoneTTL", TestIntegrationManageTombstoneTTL},
	{"ManageReload", TestIntegrationManageReload},
	{"ManageLogging", TestIntegrationManageLogging},
	{"EnforceAuthorize", TestIntegrationEnforceAuthorize},
	{"EnforceToken", TestIntegrationEnforceToken},
	{"EnforceSecretExpiry", TestIntegrationEnforceSecretExpiry},
	{"EnforceClientName", TestIntegrationEnforceClientName},
	{"EnforceLastUsed", TestIntegrationEnforceLastUsed},
	{"EnforceExpireUnused", TestIntegrationEnforceExpireUnused},
	{"EnforceExpireUsedBeforeReload", TestIntegrationEnforceExpireUsedBeforeReload},
	{"LimitsMaxClients", TestIntegrationLimitsMaxClients},
	{"AuditTrail", TestIntegrationAuditTrail},
	{"AuditRetention", TestIntegrationAuditRetention},
	{"Metrics", TestIntegrationMetrics},
	{"MetricsReload", TestIntegrationMetricsReload},
	{"AdminClients", TestIntegrationAdminClients},
	{"AdminTokens", TestIntegrationAdminTokens},
	{"TokenStatic", TestIntegrationTokenStatic},
	{"TokenRequired", TestIntegrationTokenRequired},
	{"TokenMaxUses", TestIntegrationTokenMaxUses},
	{"TokenConcurrentUses", TestIntegrationTokenConcurrentUses},
	{"TokenExpiryAndRevocation", TestIntegrationTokenExpiryAndRevocation},
	{"TokenRefusalKeepsUse", TestIntegrationTokenRefusalKeepsUse},
	{"TokenNarrowedPolicy", TestIntegrationTokenNarrowedPolicy},
	{"TokenNarrowedUpdate", TestIntegrationTokenNarrowedUpdate},
	{"TokenListing", TestIntegrationTokenListing},
	{"OIDCFullRegistration", TestIntegrationOIDCFullRegistration},
	{"StatementUpdate", TestIntegrationStatementUpdate},
	{"AssertionJWKS", TestIntegrationAssertionJWKS},
	{"UnstorableJWKS", TestIntegrationUnstorableJWKS},
	{"Policies", TestIntegrationPolicies},
	{"HooksWebhook", TestIntegrationHooksWebhook},
	{"HooksWithoutSecret", TestIntegrationHooksWithoutSecret},
	{"HooksAdminAndExpiry", TestIntegrationHooksAdminAndExpiry},
	{"CIMDFlow", TestIntegrationCIMDFlow},
	{"CIMDRefusals", TestIntegrationCIMDRefusals},
	{"CIMDRefresh", TestIntegrationCIMDRefresh},
}

// TestIntegrationPostgres runs itStoreSuite with a PostgreSQL store, a new
// database for each test.
func TestIntegrationPostgres(t *testing.T) {
	if os.Getenv(pgtest.EnvDSN) == "" {
		t.Skipf("PostgreSQL store suite skipped: %s is not set; "+
			".ci/run starts a server and sets it", pgtest.EnvDSN)
	}
	for _, tc := range itStoreSuite {
		t.Run(tc.name, func(t *testing.T) {
			itOnPostgres = true
			defer func() { itOnPostgres = false }()
			tc.fn(t)
		})
	}
}

// itTokenStore mints and revokes initial access tokens, as an operator's
// tool does on either store.
type itTokenStore interface {
	CreateInitialToken(ctx context.Context, spec clientdb.InitialTokenSpec,
		now time.Time) (string, *clientdb.InitialToken, error)
	RevokeInitialToken(ctx context.Context, id string,
		now time.Time) (*clientdb.InitialToken, error)
}

// writer opens the server's store for writing, as another process would.
func (s *itServer) writer(t *testing.T) itTokenStore {
	t.Helper()
	if s.pg {
		ctx, cancel := context.WithTimeout(context.Background(), storeWait)
		defer cancel()
		p, err := clientdb.OpenPostgres(ctx, s.store, clientdb.PostgresOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p
	}
	w, err := clientdb.NewWriter(s.store)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// itPostgresRows returns the first column of every row query returns, as
// text.
func itPostgresRows(t *testing.T, dsn, query string) [][]byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), storeWait)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connecting to the store: %v", err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, query)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	var out [][]byte
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		out = append(out, []byte(v))
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return out
}

// itPostgresDump returns the text of every row of every table of the
// store, for tests that look for what must never be stored.
func itPostgresDump(t *testing.T, dsn string) []byte {
	t.Helper()
	var all []string
	for _, table := range []string{
		"dcr_clients", "dcr_tombstones", "dcr_initial_tokens", "dcr_audit",
	} {
		for _, row := range itPostgresRows(t, dsn,
			"SELECT t::text FROM "+table+" t") {
			all = append(all, string(row))
		}
	}
	return []byte(strings.Join(all, "\n"))
}
