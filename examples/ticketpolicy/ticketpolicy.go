// Package ticketpolicy is an example registration policy for caddy-dcr: a
// guest module in the dcr.policies namespace that admits only clients
// whose software_id carries a change ticket number, such as "CHG-1234",
// writes the ticket in one canonical form, and adds the operators'
// contact address to every client it admits.
//
// Build it into Caddy beside the plugin:
//
//	xcaddy build \
//		--with github.com/caddy-dcr/caddy-dcr \
//		--with github.com/caddy-dcr/caddy-dcr/examples/ticketpolicy
//
// and name it in the dcr block:
//
//	dcr {
//		policy ticket {
//			prefix  CHG
//			contact security@example.com
//		}
//	}
package ticketpolicy

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	dcr "github.com/caddy-dcr/caddy-dcr"
)

func init() {
	caddy.RegisterModule(Ticket{})
}

// Ticket requires a ticket number in software_id.
type Ticket struct {
	// Prefix is the ticket system's prefix, such as "CHG"; software_id
	// must be the prefix, a hyphen and one to ten digits, in any case.
	// Default: "CHG".
	Prefix string `json:"prefix,omitempty"`

	// Contact, when set, is added to the contacts of every client the
	// policy admits. Default: none.
	Contact string `json:"contact,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Ticket) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "dcr.policies.ticket",
		New: func() caddy.Module { return new(Ticket) },
	}
}

// Provision fills in the default prefix.
func (t *Ticket) Provision(caddy.Context) error {
	if t.Prefix == "" {
		t.Prefix = "CHG"
	}
	t.Prefix = strings.ToUpper(t.Prefix)
	return nil
}

// Check implements dcr.Policy: it refuses a software_id that is not a
// ticket number and amends the metadata of a client it admits.
func (t *Ticket) Check(_ context.Context, in *dcr.PolicyInput) error {
	m := in.Metadata
	num, ok := strings.CutPrefix(strings.ToUpper(m.SoftwareID), t.Prefix+"-")
	if !ok || len(num) == 0 || len(num) > 10 || strings.Trim(num, "0123456789") != "" {
		return dcr.Refuse("invalid_client_metadata", fmt.Sprintf(
			"software_id must be a change ticket such as %s-1234", t.Prefix))
	}
	m.SoftwareID = t.Prefix + "-" + num
	if t.Contact != "" && !slices.Contains(m.Contacts, t.Contact) {
		m.Contacts = append(m.Contacts, t.Contact)
	}
	return nil
}

// UnmarshalCaddyfile sets the policy up from Caddyfile tokens:
//
//	policy ticket {
//		prefix  <prefix>
//		contact <address>
//	}
func (t *Ticket) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the module name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		var dst *string
		switch d.Val() {
		case "prefix":
			dst = &t.Prefix
		case "contact":
			dst = &t.Contact
		default:
			return d.Errf("unknown subdirective %s", d.Val())
		}
		if *dst != "" {
			return d.Errf("subdirective %s given more than once", d.Val())
		}
		if !d.NextArg() {
			return d.ArgErr()
		}
		*dst = d.Val()
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	return nil
}

// Interface guards
var (
	_ dcr.Policy            = (*Ticket)(nil)
	_ caddy.Provisioner     = (*Ticket)(nil)
	_ caddyfile.Unmarshaler = (*Ticket)(nil)
)
