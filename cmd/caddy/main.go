// Command caddy is Caddy with its standard modules and the dcr plugin, so
// that the plugin can be run from a clone without xcaddy:
//
//	go run ./cmd/caddy run --config Caddyfile.example
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-dcr/caddy-dcr"
)

func main() {
	caddycmd.Main()
}
