package dcr

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/caddy-dcr/caddy-dcr/clientdb"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "dcr",
		Usage: "<command> [--address <interface>] [--store <path>] [--json]",
		Short: "Manages registered clients and initial access tokens",
		Long: `
Manages the clients that the dcr handler registered, and the initial access
tokens that open registration, in a running Caddy through its admin API
(the admin.api.dcr module, at /dcr/ on the admin endpoint).

  caddy dcr list [--name <text>] [--state active|disabled] [--limit <n>]
  caddy dcr show <client_id>
  caddy dcr disable <client_id>
  caddy dcr enable <client_id>
  caddy dcr delete <client_id>
  caddy dcr rotate-secret <client_id>
  caddy dcr token create [--label <text>] [--expires-in 168h] [--max-uses <n>]
        [--grant-types a,b] [--scopes a,b] [--redirect-hosts a,b]
  caddy dcr token list
  caddy dcr token revoke <token_id>

A disabled client is refused everywhere as if it were deleted, until it is
enabled again. A deleted client leaves a tombstone and its ID is never
issued again. The new secret of rotate-secret and the token of token
create are printed once and cannot be shown again.

The admin endpoint is --address if given, else the one in the --config
file, else localhost:2019. When dcr handlers use more than one store,
--store names the one to act on by its absolute path, or a PostgreSQL
store by its address without the password (postgres://user@host:port/db).
`,
		CobraFunc: func(cmd *cobra.Command) {
			setupDCRCommand(cmd)
		},
	})
}

// runDCR runs "caddy dcr" with args, the words after "dcr", against the
// admin endpoint at address ("" for the default), printing to stdout. It
// is what the command does, without the process around it.
func runDCR(address string, args []string, stdout io.Writer) error {
	cmd := &cobra.Command{
		Use:           "dcr",
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	cmd.CompletionOptions.DisableDefaultCmd = true
	setupDCRCommand(cmd)
	if address != "" {
		if err := cmd.PersistentFlags().Set("address", address); err != nil {
			return err
		}
	}
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(io.Discard)
	return cmd.Execute()
}

// setupDCRCommand adds the flags and subcommands of "caddy dcr" to cmd.
func setupDCRCommand(cmd *cobra.Command) {
	pf := cmd.PersistentFlags()
	pf.String("address", "",
		"Address of Caddy's admin endpoint, if not the default or the one in --config")
	pf.StringP("config", "c", "",
		"Configuration file to read the admin address from, if --address is not used")
	pf.StringP("adapter", "a", "", "Name of the config adapter to apply to --config")
	pf.String("store", "",
		"Absolute path of the client store, when dcr handlers use several")
	pf.Bool("json", false, "Print the admin API's JSON answers")

	list := &cobra.Command{
		Use:   "list [--name <text>] [--state active|disabled] [--limit <n>] [--after <id>]",
		Short: "Lists registered clients in the order of their IDs",
		Args:  cobra.NoArgs,
		RunE: dcrRun(func(c *dcrClient, cmd *cobra.Command, _ []string) error {
			fl := cmd.Flags()
			q := url.Values{}
			for _, name := range []string{"name", "state", "after"} {
				if v, _ := fl.GetString(name); v != "" {
					q.Set(name, v)
				}
			}
			if n, _ := fl.GetInt("limit"); n != 0 {
				q.Set("limit", strconv.Itoa(n))
			}
			return c.list(q)
		}),
	}
	list.Flags().String("name", "", "Only clients whose client_name contains this text, "+
		"in any case")
	list.Flags().String("state", "", "Only active or only disabled clients")
	list.Flags().Int("limit", 0, "Most clients to list (default 50, at most 500)")
	list.Flags().String("after", "", "List the clients after this client ID, "+
		"to see the next page")

	cmd.AddCommand(list,
		clientCommand("show", "Shows a registered client", http.MethodGet, "",
			(*dcrClient).printClient),
		clientCommand("disable",
			"Disables a client: it is refused as if deleted until enabled",
			http.MethodPost, "/disable", func(c *dcrClient, v *adminClient) {
				fmt.Fprintf(c.out, "client %s is disabled\n", v.ClientID)
			}),
		clientCommand("enable", "Enables a disabled client again",
			http.MethodPost, "/enable", func(c *dcrClient, v *adminClient) {
				fmt.Fprintf(c.out, "client %s is enabled\n", v.ClientID)
			}),
		clientCommand("rotate-secret",
			"Gives a client a new secret and prints it once",
			http.MethodPost, "/rotate-secret", (*dcrClient).printRotated),
		idCommand("delete <client_id>", "Deletes a client, leaving a tombstone",
			(*dcrClient).delete),
		tokenCommand())
}

// tokenCommand returns "caddy dcr token" and its subcommands.
func tokenCommand() *cobra.Command {
	token := &cobra.Command{
		Use:   "token",
		Short: "Creates, lists and revokes initial access tokens",
	}

	create := &cobra.Command{
		Use:   "create [--label <text>] [--expires-in <duration>] [--max-uses <n>]",
		Short: "Creates an initial access token and prints it once",
		Args:  cobra.NoArgs,
		RunE: dcrRun(func(c *dcrClient, cmd *cobra.Command, _ []string) error {
			fl := cmd.Flags()
			req := tokenRequest{Policy: &clientdb.TokenPolicy{}}
			req.Label, _ = fl.GetString("label")
			req.ExpiresIn, _ = fl.GetString("expires-in")
			req.MaxUses, _ = fl.GetInt("max-uses")
			req.Policy.GrantTypes, _ = fl.GetStringSlice("grant-types")
			req.Policy.Scopes, _ = fl.GetStringSlice("scopes")
			req.Policy.RedirectHosts, _ = fl.GetStringSlice("redirect-hosts")
			return c.createToken(&req)
		}),
	}
	fl := create.Flags()
	fl.String("label", "", "Note on what the token is for")
	fl.String("expires-in", "", "How long the token is accepted, such as 168h "+
		"(default: for ever)")
	fl.Int("max-uses", 0, "How many registrations the token allows (default: any number)")
	fl.StringSlice("grant-types", nil, "Grant types its clients may register, "+
		"among those the server allows")
	fl.StringSlice("scopes", nil, "Scopes its clients may register, "+
		"among those the server allows")
	fl.StringSlice("redirect-hosts", nil, "Hosts its clients' https redirect URIs "+
		"may use, such as app.example.com or *.example.com")

	token.AddCommand(create,
		&cobra.Command{
			Use:   "list",
			Short: "Lists the initial access tokens, whatever their state",
			Args:  cobra.NoArgs,
			RunE: dcrRun(func(c *dcrClient, _ *cobra.Command, _ []string) error {
				return c.listTokens()
			}),
		},
		idCommand("revoke <token_id>",
			"Revokes an initial access token; its clients stay registered",
			(*dcrClient).revokeToken))
	return token
}

// clientCommand returns a subcommand that sends method to the client's
// path with suffix and prints the client it gets back with show.
func clientCommand(name, short, method, suffix string,
	show func(*dcrClient, *adminClient)) *cobra.Command {
	return idCommand(name+" <client_id>", short, func(c *dcrClient, id string) error {
		return c.client(method, id, suffix, show)
	})
}

// idCommand returns a subcommand that takes one client or token ID.
//
// IDs are base64url, so one in 64 begins with "-", which cobra would take
// for a flag. These commands parse their own flags instead: an argument
// that is not one of them is the ID, and "--" ends the flags.
func idCommand(use, short string, run func(c *dcrClient, id string) error) *cobra.Command {
	return &cobra.Command{
		Use:                use,
		Short:              short,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			ids, err := parseIDArgs(cmd, args)
			if err != nil {
				return err
			}
			if help, _ := cmd.Flags().GetBool("help"); help {
				return cmd.Help()
			}
			if len(ids) != 1 {
				return fmt.Errorf("want one ID, got %d arguments: usage: %s",
					len(ids), cmd.UseLine())
			}
			c, err := newDCRClient(cmd)
			if err != nil {
				return err
			}
			return run(c, ids[0])
		},
	}
}

// parseIDArgs sets the flags among args on cmd and returns the other
// arguments. A flag is one of cmd's own or inherited flags, as "--name",
// "--name=value", "-x" or "-x=value"; anything else is an argument.
func parseIDArgs(cmd *cobra.Command, args []string) ([]string, error) {
	// Merges the parents' persistent flags into cmd.Flags(), which
	// cobra skips when it does not parse.
	cmd.InheritedFlags()
	flags := cmd.Flags()

	var rest []string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			rest = append(rest, args[i+1:]...)
			break
		}
		name, value, hasValue := strings.Cut(arg, "=")
		f := flags.Lookup(strings.TrimPrefix(name, "--"))
		if !strings.HasPrefix(name, "--") {
			f = nil
			if len(name) == 2 && name[0] == '-' {
				f = flags.ShorthandLookup(name[1:])
			}
		}
		if f == nil {
			rest = append(rest, arg)
			continue
		}
		if !hasValue {
			switch {
			case f.NoOptDefVal != "":
				value = f.NoOptDefVal
			case i+1 < len(args):
				i++
				value = args[i]
			default:
				return nil, fmt.Errorf("flag needs an argument: %s", name)
			}
		}
		if err := flags.Set(f.Name, value); err != nil {
			return nil, fmt.Errorf("invalid argument %q for %s: %w", value, name, err)
		}
	}
	return rest, nil
}

// dcrRun returns a cobra RunE that sets up the admin API client from the
// flags and calls fn.
func dcrRun(fn func(*dcrClient, *cobra.Command, []string) error) func(
	*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := newDCRClient(cmd)
		if err != nil {
			return err
		}
		return fn(c, cmd, args)
	}
}
