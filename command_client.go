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
