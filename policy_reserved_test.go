package dcr

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/caddy-dcr/caddy-dcr/clientdb"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// newReservedNames returns a provisioned and validated policy.
func newReservedNames(t *testing.T, names ...string) *PolicyReservedNames {
	t.Helper()
	p := &PolicyReservedNames{Names: names}
	if err := p.Provision(caddy.Context{}); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	if err := p.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	return p
}

// TestReservedNamesClientName checks client_name against reserved names.
// The look-alikes are spelt with escapes so that the test says which
// character stands where.
func TestReservedNamesClientName(t *testing.T) {
	acme := []string{"acme"}
	cases := []struct {
		name     string
		reserved []string
		client   string
		refused  bool
	}{
		// The cases the policy exists for.
		{"same", acme, "acme", true},
		{"capitalised", acme, "Acme", true},
		{"trailing space", acme, "ACME ", true},
		{"greek capital alpha", acme, "\u0391cme", true},

		// Case, width and font.
		{"upper case", acme, "ACME", true},
		{"fullwidth capitals", acme, "\uff21\uff23\uff2d\uff25", true},
		{"fullwidth small", acme, "\uff41\uff43\uff4d\uff45", true},
		{"mathematical bold", acme,
			"\U0001d400\U0001d41c\U0001d426\U0001d41e", true},

		// Letters of other scripts.
		{"cyrillic small a", acme, "\u0430cme", true},
		{"cyrillic small a, es, ie", acme, "\u0430\u0441m\u0435", true},
		{"cyrillic capitals", acme, "\u0410\u0421\u041c\u0415", true},
		{"cyrillic capital em, mixed case", acme, "Ac\u041cE", true},
		{"greek capital iota for I", []string{"Acme Inc"},
			"ACME \u0399NC", true},
		{"upper case of two words", []string{"Acme Inc"}, "ACME INC",
			true},
		{"greek and cyrillic capitals", acme,
			"\u0391\u0421\u039c\u0395", true},
		{"cyrillic small o", []string{"Globex"}, "Gl\u043ebex", true},
		// The skeleton leaves Cyrillic small em alone: it looks like a
		// small capital M, not like m.
		{"cyrillic small em", acme, "ac\u043ce", false},

		// Sequences and digits the skeleton maps.
		{"rn for m", acme, "Acrne", true},
		{"digit zero for o", []string{"Globex"}, "Gl0bex", true},
		{"digit one for l", []string{"Globex"}, "G1obex", true},
		{"small l for capital I", []string{"Initech"}, "lnitech", true},
		{"digit one for capital I", []string{"Initech"}, "1nitech",
			true},
		{"small l for capital I, configured small", []string{"initech"},
			"lnitech", true},
		{"upper case with i", []string{"Initech"}, "INITECH", true},
		{"mixed case with i", []string{"Mini Corp"}, "MINi corp", true},
		{"upper case with l for I", []string{"Mail"}, "MAlL", true},
		// A capital I looks like a small l, and MAIL is a spelling of
		// Mail, so Mall is taken with it.
		{"l in place of i", []string{"Mail"}, "Mall", true},
		// Mixed case on two i's and a capital look-alike: neither key
		// catches it, as the godoc says.
		{"mixed case and capital look-alike", []string{"Mini"},
			"\u041ciNI", false},
		{"mixed case and small look-alike", []string{"Mini"},
			"MIN\u0456", true},
		// The skeleton does not map 3 to E.
		{"digit three for e", acme, "acm3", false},

		// Characters that are not seen, and separators.
		{"zero width space", acme, "Ac\u200bme", true},
		{"zero width joiner", acme, "Ac\u200dme", true},
		{"soft hyphen", acme, "Ac\u00adme", true},
		{"word joiner", acme, "A\u2060cme", true},
		{"variation selector", acme, "Acme\ufe0f", true},
		{"spaced", acme, "A C M E", true},
		{"split", acme, "Ac me", true},
		{"dotted", acme, "A.C.M.E.", true},
		{"full stop", acme, "Acme.", true},
		{"hyphen", acme, "A-cme", true},
		{"no-break space", acme, "Acme\u00a0", true},
		{"trade mark", acme, "Acme\u2122", true},
		{"registered", acme, "Acme\u00ae", true},

		// Runs of words.
		{"first word", acme, "Acme Login", true},
		{"last word", acme, "Login for ACME", true},
		{"middle word", acme, "The (Acme) app", true},
		{"hyphenated", acme, "ACME-Login", true},
		{"reserved run", []string{"Acme Login"}, "Sign in: acme login",
			true},
		{"reserved run written as one word", []string{"Acme Login"},
			"AcmeLogin", true},
		{"reserved run interrupted", []string{"Acme Login"},
			"Acme Cloud Login", false},
		{"prefix", acme, "Macme", false},
		{"suffix", acme, "Acmeville", false},
		{"glued to another word", acme, "AcmeLogin", false},
		{"glued by zero width space", acme, "Acme\u200bLogin", false},
		{"near miss", acme, "Acne", false},
		{"split differently", acme, "Ace me", false},

		// Names that are fine.
		{"clean name", acme, "Example App", false},
		{"empty", acme, "", false},
		{"only separators", acme, " - . ", false},
		{"several reserved, none hit", []string{"acme", "Globex"},
			"Initech Reports", false},
		{"several reserved, second hit", []string{"acme", "Globex"},
			"GLOBEX reports", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newReservedNames(t, tc.reserved...)
			in := &PolicyInput{
				Operation: OperationRegister,
				Metadata:  &clientdb.Metadata{ClientName: tc.client},
			}
			err := p.Check(context.Background(), in)
			if !tc.refused {
				if err != nil {
					t.Fatalf("Check(%q) = %v, want nil", tc.client, err)
				}
				return
			}

			var pe *PolicyError
			if !errors.As(err, &pe) {
				t.Fatalf("Check(%q) = %v, want a *PolicyError",
					tc.client, err)
			}
			if pe.Code != "invalid_client_metadata" {
				t.Errorf("code = %q, want invalid_client_metadata",
					pe.Code)
			}
			want := fmt.Sprintf("client_name %q is reserved", tc.client)
			if pe.Description != want {
				t.Errorf("description = %s, want %s",
					pe.Description, want)
			}
		})
	}
}

// TestReservedNamesLocalized checks the language variants of client_name
// and leaves other members alone.
func TestReservedNamesLocalized(t *testing.T) {
	cases := []struct {
		name      string
		client    string
		localized map[string]string
		want      string // description, or empty when accepted
	}{
		{
			name:   "variant refused",
			client: "Example",
			localized: map[string]string{
				"client_name#ja-Jpan-JP": "\uff21\uff23\uff2d\uff25",
			},
			want: `client_name#ja-Jpan-JP "ＡＣＭＥ" is reserved`,
		},
		{
			name:   "first variant in order",
			client: "Example",
			localized: map[string]string{
				"client_name#fr": "Connexion Acme",
				"client_name#de": "Acme Anmeldung",
				"client_name#en": "Example",
			},
			want: `client_name#de "Acme Anmeldung" is reserved`,
		},
		{
			name:   "plain name first",
			client: "Acme",
			localized: map[string]string{
				"client_name#fr": "Acme",
			},
			want: `client_name "Acme" is reserved`,
		},
		{
			name:   "clean variants",
			client: "Example",
			localized: map[string]string{
				"client_name#fr": "Exemple",
				"client_name#ja": "例",
			},
		},
		{
			name:   "other members",
			client: "Example",
			localized: map[string]string{
				"tos_uri#fr":    "https://acme.example/cgu",
				"policy_uri#de": "Acme",
				"logo_uri#en":   "acme",
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newReservedNames(t, "Acme")
			in := &PolicyInput{
				Operation: OperationUpdate,
				ClientID:  "c1",
				Metadata: &clientdb.Metadata{
					ClientName: tc.client,
					Localized:  tc.localized,
				},
			}
			err := p.Check(context.Background(), in)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Check = %v, want nil", err)
				}
				return
			}
			var pe *PolicyError
			if !errors.As(err, &pe) {
				t.Fatalf("Check = %v, want a *PolicyError", err)
			}
			if pe.Description != tc.want {
				t.Errorf("description = %s, want %s",
					pe.Description, tc.want)
			}
		})
	}
}

// TestReservedNamesDescription checks the wording of refusals: the value
// quoted with Go escapes, so that an invisible character shows, and no
// more than its first 64 runes.
func TestReservedNamesDescription(t *testing.T) {
	cases := []struct {
		name, client, want string
	}{
		{"trailing space", "ACME ", `client_name "ACME " is reserved`},
		{
			"invisible character", "Ac\u200bme",
			`client_name "Ac\u200bme" is reserved`,
		},
		{
			"64 runes", "Acme " + strings.Repeat("é", 59),
			`client_name "Acme ` + strings.Repeat("é", 59) +
				`" is reserved`,
		},
		{
			"truncated", "Acme " + strings.Repeat("é", 100),
			`client_name "Acme ` + strings.Repeat("é", 59) +
				`…" is reserved`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newReservedNames(t, "Acme")
			in := &PolicyInput{
				Operation: OperationRegister,
				Metadata:  &clientdb.Metadata{ClientName: tc.client},
			}
			err := p.Check(context.Background(), in)

			var pe *PolicyError
			if !errors.As(err, &pe) {
				t.Fatalf("Check = %v, want a *PolicyError", err)
			}
			if pe.Description != tc.want {
				t.Errorf("description = %s, want %s",
					pe.Description, tc.want)
			}
		})
	}
}

// TestReservedNamesKeys pins the keys of some names, as the godoc of
// PolicyReservedNames describes them.
func TestReservedNamesKeys(t *testing.T) {
	cases := []struct {
		name, in         string
		visual, caseless string
	}{
		{"skeleton maps m", "Acme", "acrne", "acrne"},
		{"words joined", "A.C.M.E.", "acrne", "acrne"},
		{"greek alpha", "\u0391cme", "acrne", "acrne"},
		{"cyrillic capital em", "\u0410\u0421\u041c\u0415",
			"acrne", "ac\u028de"},
		{"capital I", "INC", "lnc", "inc"},
		{"digit zero", "C0", "co", "cO"},
		{"full case folding", "Stra\u00dfe", "strasse", "strasse"},
		{"ligature", "\ufb01ne", "fine", "fine"},
		{"format characters", "a\u200b\u00adb", "ab", "ab"},
		{"nothing left", "\u200b - \u2122", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := nameKeys(tc.in)
			if got.visual != tc.visual || got.caseless != tc.caseless {
				t.Errorf("nameKeys(%q) = %+q, want {%q %q}", tc.in,
					got, tc.visual, tc.caseless)
			}
		})
	}
}

// TestReservedNamesValidate checks the refusal of bad configurations.
func TestReservedNamesValidate(t *testing.T) {
	cases := []struct {
		name  string
		names []string
		want  string // part of the error, or empty for none
	}{
		{"one name", []string{"Acme"}, ""},
		{"several", []string{"Acme", "Acme Login", "Globex"}, ""},
		{"no names", nil, "no names given"},
		{"empty list", []string{}, "no names given"},
		{"empty name", []string{"Acme", ""}, `names[1]: ""`},
		{"only punctuation", []string{"---"}, `names[0]: "---"`},
		{"only white space", []string{"Acme", "Globex", "  "},
			`names[2]: "  "`},
		{"only format characters", []string{"\u200b\u200d"},
			`names[0]: "\u200b\u200d"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := &PolicyReservedNames{Names: tc.names}
			if err := p.Provision(caddy.Context{}); err != nil {
				t.Fatalf("Provision: %v", err)
			}
			err := p.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate = %v, want nil", err)
			case tc.want == "":
			case err == nil:
				t.Fatalf("Validate = nil, want an error with %q",
					tc.want)
			case !strings.Contains(err.Error(), tc.want):
				t.Errorf("Validate = %q, want it to hold %q",
					err, tc.want)
			}
		})
	}
}

// TestReservedNamesCaddyfile parses the policy's Caddyfile tokens the way
// the handler's parser hands them over: through caddyfile.UnmarshalModule
// with the dispenser at the module name.
func TestReservedNamesCaddyfile(t *testing.T) {
	cases := []struct {
		name  string
		input string
		want  []string
		err   string // part of the error, or empty for none
	}{
		{"one name", `policy reserved_names acme`, []string{"acme"}, ""},
		{
			"quoted names", `policy reserved_names Acme "Acme Login" Globex`,
			[]string{"Acme", "Acme Login", "Globex"}, "",
		},
		{"no name", `policy reserved_names`, nil, "at least one name"},
		{
			"block", "policy reserved_names acme {\n\tnames globex\n}",
			nil, `unexpected "names"`,
		},
		{
			"block without names", "policy reserved_names {\n\tacme\n}",
			nil, "at least one name",
		},
		{
			"name that folds to nothing", `policy reserved_names acme "--"`,
			nil, `"--" has no letter or digit`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := caddyfile.NewTestDispenser(tc.input)
			d.Next() // policy
			d.NextArg()
			unm, err := caddyfile.UnmarshalModule(d,
				"dcr.policies.reserved_names")
			if tc.err != "" {
				if err == nil {
					t.Fatalf("no error, want one with %q", tc.err)
				}
				if !strings.Contains(err.Error(), tc.err) {
					t.Errorf("error = %q, want it to hold %q", err,
						tc.err)
				}
				if !strings.Contains(err.Error(), "Testfile:") {
					t.Errorf("error = %q, want the file and line", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("UnmarshalModule: %v", err)
			}
			p, ok := unm.(*PolicyReservedNames)
			if !ok {
				t.Fatalf("module is %T, want *PolicyReservedNames", unm)
			}
			if !slices.Equal(p.Names, tc.want) {
				t.Errorf("Names = %q, want %q", p.Names, tc.want)
			}
		})
	}
}

// TestReservedNamesModule checks the module's registration.
func TestReservedNamesModule(t *testing.T) {
	mod, err := caddy.GetModule("dcr.policies.reserved_names")
	if err != nil {
		t.Fatalf("GetModule: %v", err)
	}
	if _, ok := mod.New().(Policy); !ok {
		t.Errorf("module is %T, not a Policy", mod.New())
	}
}

// TestReservedNamesConcurrent runs Check from several goroutines at once,
// for the race detector.
func TestReservedNamesConcurrent(t *testing.T) {
	p := newReservedNames(t, "Acme", "Globex")
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			name := []string{"ACME", "Example"}[i%2]
			in := &PolicyInput{
				Operation: OperationRegister,
				Metadata:  &clientdb.Metadata{ClientName: name},
			}
			err := p.Check(context.Background(), in)
			if (err != nil) != (name == "ACME") {
				t.Errorf("Check(%q) = %v", name, err)
			}
		})
	}
	wg.Wait()
}
