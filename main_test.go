package dcr

import (
	"fmt"
	"io"
	"os"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// envCaddyChild carries a Caddyfile to a re-executed test binary, which
// then runs that config as a stand-alone Caddy instead of running tests.
const envCaddyChild = "DCR_TEST_CADDY_CHILD"

// testBinary is the path of this test binary, kept before any test runs:
// caddytest replaces os.Args when it starts its in-process Caddy, and the
// store tests re-execute the binary as a second process.
var testBinary string

func TestMain(m *testing.M) {
	testBinary = os.Args[0]

	if src, ok := os.LookupEnv(envCaddyChild); ok {
		runCaddyChild(src)
	}
	os.Exit(m.Run())
}

// runCaddyChild runs the Caddyfile src the way "caddy run" would, prints
// "ready" once the config is serving, and exits when its stdin closes.
// The parent test kills it with SIGKILL or closes stdin; reading stdin
// means a child whose parent died does not linger holding its ports.
func runCaddyChild(src string) {
	adapter := caddyconfig.GetAdapter("caddyfile")
	if adapter == nil {
		fmt.Fprintln(os.Stderr, "caddyfile adapter is not registered")
		os.Exit(2)
	}
	cfg, _, err := adapter.Adapt([]byte(src), nil)
	if err != nil {
		fmt.Fprintf(os.Stderr, "adapting caddyfile: %v\n", err)
		os.Exit(2)
	}
	if err := caddy.Load(cfg, true); err != nil {
		fmt.Fprintf(os.Stderr, "loading config: %v\n", err)
		os.Exit(2)
	}
	fmt.Println("ready")

	io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}
