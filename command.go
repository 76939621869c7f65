package dcr

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

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
--store names the one to act on by its absolute path.
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

// dcrClient calls the dcr admin API and prints what it answers.
type dcrClient struct {
	address string
	store   string
	json    bool
	out     io.Writer
}

// newDCRClient reads the common flags of cmd.
func newDCRClient(cmd *cobra.Command) (*dcrClient, error) {
	fl := cmd.Flags()
	address, _ := fl.GetString("address")
	config, _ := fl.GetString("config")
	adapter, _ := fl.GetString("adapter")
	address, err := caddycmd.DetermineAdminAPIAddress(address, nil, config, adapter)
	if err != nil {
		return nil, fmt.Errorf("finding the admin endpoint: %w", err)
	}
	c := &dcrClient{address: address, out: cmd.OutOrStdout()}
	c.store, _ = fl.GetString("store")
	c.json, _ = fl.GetBool("json")
	return c, nil
}

// call sends a request to the dcr admin API at path (below /dcr/) with
// query and, unless nil, body as JSON, and returns the answer's body.
func (c *dcrClient) call(method, path string, query url.Values, body any) ([]byte, error) {
	if c.store != "" {
		if query == nil {
			query = url.Values{}
		}
		query.Set("store", c.store)
	}
	uri := "/dcr/" + path
	if len(query) > 0 {
		uri += "?" + query.Encode()
	}

	// A nil *bytes.Reader in the interface would count as a body.
	var reader io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		reader = bytes.NewReader(b)
	}
	resp, err := caddycmd.AdminAPIRequest(c.address, method, uri, nil, reader)
	if err != nil {
		return nil, adminCallError(c.address, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading the answer of %s %s: %w", method, uri, err)
	}
	return raw, nil
}

// adminStatus matches the error AdminAPIRequest returns for an answer
// with an error status; it keeps the status and the body only as text.
var adminStatus = regexp.MustCompile(`(?s)HTTP (\d{3}): (.*)$`)

// adminCallError turns an error of AdminAPIRequest into a message for the
// operator. AdminAPIRequest formats its causes with %v, so they can only
// be told apart by their text.
func adminCallError(address string, err error) error {
	msg := err.Error()
	if m := adminStatus.FindStringSubmatch(msg); m != nil {
		text := strings.TrimSpace(m[2])
		var body struct {
			Error string `json:"error"`
		}
		if json.Unmarshal([]byte(text), &body) == nil && body.Error != "" {
			return fmt.Errorf("%s (HTTP %s)", body.Error, m[1])
		}
		if m[1] == "404" {
			// Caddy's own answer for a path nobody serves.
			return fmt.Errorf("the Caddy at %s has no dcr admin API: "+
				"is it built with the dcr plugin? (HTTP 404)", address)
		}
		return fmt.Errorf("%s (HTTP %s)", text, m[1])
	}
	for _, errno := range []syscall.Errno{syscall.ECONNREFUSED, syscall.ENOENT} {
		if strings.Contains(msg, errno.Error()) {
			return fmt.Errorf("cannot reach Caddy's admin endpoint at %s: "+
				"is Caddy running? (%s)", address, errno.Error())
		}
	}
	return fmt.Errorf("cannot reach Caddy's admin endpoint at %s: %w", address, err)
}

// printJSON prints an answer of the API as indented JSON.
func (c *dcrClient) printJSON(raw []byte) error {
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return fmt.Errorf("the admin API answered something other than JSON: %w", err)
	}
	b.WriteByte('\n')
	_, err := c.out.Write(b.Bytes())
	return err
}

// list prints a page of clients.
func (c *dcrClient) list(q url.Values) error {
	raw, err := c.call(http.MethodGet, "clients", q, nil)
	if err != nil || c.json {
		return c.printed(raw, err)
	}
	var page struct {
		Clients []json.RawMessage `json:"clients"`
		Next    string            `json:"next"`
	}
	if err := json.Unmarshal(raw, &page); err != nil {
		return fmt.Errorf("decoding the client list: %w", err)
	}
	if len(page.Clients) == 0 && page.Next == "" {
		fmt.Fprintln(c.out, "no clients")
		return nil
	}

	tw := newTable(c.out)
	fmt.Fprintln(tw, "CLIENT ID\tNAME\tSTATE\tAUTH METHOD\tREGISTERED\tLAST USED")
	for _, item := range page.Clients {
		v, err := decodeAdminClient(item)
		if err != nil {
			return err
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", v.ClientID,
			orDash(v.Metadata.ClientName), v.State, v.Metadata.TokenEndpointAuthMethod,
			formatTime(v.ClientIDIssuedAt, "-"), formatTime(v.LastUsedAt, "never"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if page.Next != "" {
		fmt.Fprintf(c.out, "more clients follow: list again with --after=%s\n", page.Next)
	}
	return nil
}

// client sends method to the client's path with suffix and prints the
// client of the answer with show.
func (c *dcrClient) client(method, id, suffix string,
	show func(*dcrClient, *adminClient)) error {
	raw, err := c.call(method, "clients/"+url.PathEscape(id)+suffix, nil, nil)
	if err != nil || c.json {
		return c.printed(raw, err)
	}
	v, err := decodeAdminClient(raw)
	if err != nil {
		return err
	}
	show(c, v)
	return nil
}

// printClient prints what an operator wants to know about a client.
func (c *dcrClient) printClient(v *adminClient) {
	m := &v.Metadata
	tw := newTable(c.out)
	row := func(name, value string) { fmt.Fprintf(tw, "%s:\t%s\n", name, value) }
	row("client_id", v.ClientID)
	row("client_name", orDash(m.ClientName))
	row("state", v.State)
	if v.DisabledAt != 0 {
		row("disabled_at", formatTime(v.DisabledAt, ""))
	}
	row("registered", formatTime(v.ClientIDIssuedAt, "-"))
	row("updated", formatTime(v.ClientUpdatedAt, "never"))
	row("last_used", formatTime(v.LastUsedAt, "never"))
	row("auth_method", m.TokenEndpointAuthMethod)
	row("secret", secretState(v))
	row("grant_types", orDash(strings.Join(m.GrantTypes, ", ")))
	row("response_types", orDash(strings.Join(m.ResponseTypes, ", ")))
	row("redirect_uris", orDash(strings.Join(m.RedirectURIs, ", ")))
	row("scope", orDash(m.Scope))
	if m.ApplicationType != "" {
		row("application_type", m.ApplicationType)
	}
	if m.SoftwareID != "" {
		row("software_id", m.SoftwareID)
	}
	row("initial_token_id", orDash(v.InitialTokenID))
	if v.Policy != nil {
		row("policy", formatPolicy(v.Policy))
	}
	tw.Flush()
}

// secretState describes a client's secret without showing it.
func secretState(v *adminClient) string {
	if !v.HasSecret {
		return "none"
	}
	s := "expires " + formatTime(v.ClientSecretExpiresAt, "never")
	if v.ClientSecretExpiresAt == 0 {
		s = "never expires"
	}
	if v.PreviousSecretExpiresAt != 0 {
		s += "; previous secret valid until " + formatTime(v.PreviousSecretExpiresAt, "")
	}
	return s
}

// printRotated prints the answer to rotate-secret, with the new secret.
func (c *dcrClient) printRotated(v *adminClient) {
	tw := newTable(c.out)
	fmt.Fprintf(tw, "client_id:\t%s\n", v.ClientID)
	fmt.Fprintf(tw, "client_secret:\t%s\n", v.ClientSecret)
	fmt.Fprintf(tw, "expires:\t%s\n", formatTime(v.ClientSecretExpiresAt, "never"))
	previous := "no longer accepted"
	if v.PreviousSecretExpiresAt != 0 {
		previous = "accepted until " + formatTime(v.PreviousSecretExpiresAt, "")
	}
	fmt.Fprintf(tw, "previous secret:\t%s\n", previous)
	tw.Flush()
	fmt.Fprintln(c.out, "The secret is shown only this once; hand it to the client now.")
}

// delete deletes a client.
func (c *dcrClient) delete(id string) error {
	raw, err := c.call(http.MethodDelete, "clients/"+url.PathEscape(id), nil, nil)
	if err != nil || c.json {
		return c.printed(raw, err)
	}
	var ts clientdb.Tombstone
	if err := json.Unmarshal(raw, &ts); err != nil {
		return fmt.Errorf("decoding the answer: %w", err)
	}
	fmt.Fprintf(c.out, "client %s is deleted\n", ts.ID)
	return nil
}

// createToken creates an initial access token and prints it.
func (c *dcrClient) createToken(req *tokenRequest) error {
	raw, err := c.call(http.MethodPost, "tokens", nil, req)
	if err != nil || c.json {
		return c.printed(raw, err)
	}
	var v adminToken
	if err := json.Unmarshal(raw, &v); err != nil {
		return fmt.Errorf("decoding the answer: %w", err)
	}
	tw := newTable(c.out)
	fmt.Fprintf(tw, "token:\t%s\n", v.Token)
	fmt.Fprintf(tw, "id:\t%s\n", v.ID)
	fmt.Fprintf(tw, "label:\t%s\n", orDash(v.Label))
	fmt.Fprintf(tw, "expires:\t%s\n", formatTime(v.ExpiresAt, "never"))
	fmt.Fprintf(tw, "max_uses:\t%s\n", formatMaxUses(v.MaxUses))
	if v.Policy != nil {
		fmt.Fprintf(tw, "policy:\t%s\n", formatPolicy(v.Policy))
	}
	tw.Flush()
	fmt.Fprintln(c.out, "The token is shown only this once; hand it on now.")
	return nil
}

// listTokens prints every initial access token.
func (c *dcrClient) listTokens() error {
	raw, err := c.call(http.MethodGet, "tokens", nil, nil)
	if err != nil || c.json {
		return c.printed(raw, err)
	}
	var list tokenList
	if err := json.Unmarshal(raw, &list); err != nil {
		return fmt.Errorf("decoding the token list: %w", err)
	}
	if len(list.Tokens) == 0 {
		fmt.Fprintln(c.out, "no initial access tokens")
		return nil
	}
	tw := newTable(c.out)
	fmt.Fprintln(tw, "TOKEN ID\tLABEL\tSTATE\tUSES\tCREATED\tEXPIRES")
	for _, v := range list.Tokens {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%s\t%s\t%s\n", v.ID, orDash(v.Label), v.State,
			v.Uses, formatMaxUses(v.MaxUses), formatTime(v.CreatedAt, "-"),
			formatTime(v.ExpiresAt, "never"))
	}
	return tw.Flush()
}

// revokeToken revokes an initial access token.
func (c *dcrClient) revokeToken(id string) error {
	raw, err := c.call(http.MethodDelete, "tokens/"+url.PathEscape(id), nil, nil)
	if err != nil || c.json {
		return c.printed(raw, err)
	}
	var v adminToken
	if err := json.Unmarshal(raw, &v); err != nil {
		return fmt.Errorf("decoding the answer: %w", err)
	}
	fmt.Fprintf(c.out, "token %s is revoked\n", v.ID)
	return nil
}

// printed returns err, or prints raw as JSON when there is none.
func (c *dcrClient) printed(raw []byte, err error) error {
	if err != nil {
		return err
	}
	return c.printJSON(raw)
}

// decodeAdminClient decodes a client as the admin API shows it.
func decodeAdminClient(raw []byte) (*adminClient, error) {
	// The type's own fields first, then the metadata, which are members
	// of the same object.
	type fields adminClient
	var v adminClient
	if err := json.Unmarshal(raw, (*fields)(&v)); err != nil {
		return nil, fmt.Errorf("decoding client: %w", err)
	}
	if err := json.Unmarshal(raw, &v.Metadata); err != nil {
		return nil, fmt.Errorf("decoding client metadata: %w", err)
	}
	return &v, nil
}

// newTable returns a writer that aligns tab-separated columns.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}

// formatTime formats Unix seconds in UTC, or returns zero for 0.
func formatTime(sec int64, zero string) string {
	if sec == 0 {
		return zero
	}
	return time.Unix(sec, 0).UTC().Format(time.RFC3339)
}

// formatMaxUses formats a token's use limit.
func formatMaxUses(n int) string {
	if n == 0 {
		return "unlimited"
	}
	return strconv.Itoa(n)
}

// formatPolicy formats the lists of a token policy that are set.
func formatPolicy(p *clientdb.TokenPolicy) string {
	var parts []string
	for _, l := range []struct {
		name  string
		items []string
	}{
		{"grant_types", p.GrantTypes},
		{"scopes", p.Scopes},
		{"redirect_hosts", p.RedirectHosts},
	} {
		if len(l.items) > 0 {
			parts = append(parts, l.name+"="+strings.Join(l.items, ","))
		}
	}
	return orDash(strings.Join(parts, " "))
}

// orDash returns s, or "-" when it is empty, so that table cells are
// never blank.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
