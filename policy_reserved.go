package dcr

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/mtibben/confusables"
	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func init() {
	caddy.RegisterModule(PolicyReservedNames{})
}

// PolicyReservedNames is the policy dcr.policies.reserved_names. It keeps
// clients from registering under a name that looks like one the operator
// reserved, such as the name of a first-party application, so that a
// consent screen cannot be made to show it. It refuses a registration or
// an update with invalid_client_metadata when client_name, or any of its
// language variants ("client_name#fr", "client_name#ja-Jpan-JP"), is
// confusable with a reserved name. Other members are not looked at.
//
// Names are compared by keys. A name is first split into words at white
// space, punctuation, symbols and control characters (Unicode White_Space
// and categories Z, P, S and Cc), so "Acme-Login™" has the words "Acme"
// and "Login". Each word has two keys:
//
//   - the visual key: NFKC, then the confusable skeleton of Unicode
//     Technical Standard #39, then full case folding, then the skeleton
//     again. Look-alikes are resolved before case is: "Αcme" with a Greek
//     capital alpha and "ACME" with Cyrillic capitals both become the
//     skeleton of "acme", and a capital I becomes a small l.
//   - the caseless key: NFKC, then full case folding, then the skeleton.
//     Case is resolved first, so "ACME INC" matches "Acme Inc", which
//     the visual key does not, since its capital I became l.
//
// Both keys then drop format characters (category Cf, such as the zero
// width space and joiners and the soft hyphen), variation selectors,
// other default-ignorable characters, and what the skeleton turned into
// white space, punctuation or symbols. Case folding is followed by
// lower-casing, so that Cherokee, which folds to capitals, folds one way.
// Keys of the skeleton are not readable text: "acme" becomes "acrne",
// since the skeleton maps m to rn, which is why "Acrne" is refused too.
//
// The keys of a name are the keys of its words joined. A reserved name
// has the visual keys of four spellings, as configured, in lower case, in
// upper case and with each word capitalised, and the caseless key of its
// spelling as configured. A client's name is refused when any run of its
// consecutive words, the whole name included, has a visual key or a
// caseless key of a reserved name: with "Acme" reserved, "ACME ",
// "A C M E", "A.C.M.E.", "Acme Login", "Login for Acme" and "Acme®" are
// refused, while "Acmeville", "Macme" and "AcmeLogin" are not, since
// "Acme" is only part of a word in them.
//
// What the skeleton does not map is not caught: it maps the digits 0 and
// 1 to O and l, but 3 to nothing like E, and Cyrillic small м to nothing
// like m. Because a capital I looks like a small l, a reserved name with
// an i also reserves the same name with an l in its place ("Mail"
// reserves "Mall"). A client may still mix case and look-alikes in ways
// neither key catches: with "Mini" reserved, "МiNI" with a Cyrillic
// capital М passes, since its capital I has the visual key l, its small i
// the key i, and no spelling of "Mini" has both. The policy narrows
// impersonation; it does not rule it out.
type PolicyReservedNames struct {
	// Names are the reserved names, such as the names of the operator's
	// own applications. A name of several words reserves those words in
	// a row. At least one name is required, and each must keep a letter
	// or digit once folded; there is no default.
	Names []string `json:"names,omitempty"`

	// visual and caseless are the keys of Names, from Provision.
	visual   map[string]struct{}
	caseless map[string]struct{}

	// longest is the length in bytes of the longest key.
	longest int
}

// CaddyModule returns the Caddy module information.
func (PolicyReservedNames) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "dcr.policies.reserved_names",
		New: func() caddy.Module { return new(PolicyReservedNames) },
	}
}

// Provision computes the keys of the reserved names once.
func (p *PolicyReservedNames) Provision(caddy.Context) error {
	p.visual = make(map[string]struct{})
	p.caseless = make(map[string]struct{})
	p.longest = 0
	for _, name := range p.Names {
		for _, s := range spellings(name) {
			p.add(p.visual, nameKeys(s).visual)
		}
		p.add(p.caseless, nameKeys(name).caseless)
	}
	return nil
}

// spellings returns name as configured, in lower case, in upper case and
// with each word capitalised. Their visual keys differ where the skeleton
// tells a capital from a small letter, as it does I from i.
func spellings(name string) []string {
	words := strings.FieldsFunc(name, isWordBreak)
	for i, w := range words {
		r, n := utf8.DecodeRuneInString(w)
		words[i] = string(unicode.ToTitle(r)) + strings.ToLower(w[n:])
	}
	return []string{
		name,
		strings.ToLower(name),
		strings.ToUpper(name),
		strings.Join(words, " "),
	}
}

// add puts a non-empty key into set and keeps track of the longest.
func (p *PolicyReservedNames) add(set map[string]struct{}, key string) {
	if key == "" {
		return
	}
	set[key] = struct{}{}
	p.longest = max(p.longest, len(key))
}

// Validate refuses an empty list and names that fold to nothing.
func (p *PolicyReservedNames) Validate() error {
	if len(p.Names) == 0 {
		return errors.New("reserved_names: no names given")
	}
	for i, name := range p.Names {
		if err := checkReservedName(name); err != nil {
			return fmt.Errorf("reserved_names: names[%d]: %w", i, err)
		}
	}
	return nil
}

// checkReservedName refuses a name whose keys are empty, which would
// reserve nothing.
func checkReservedName(name string) error {
	k := nameKeys(name)
	if k.visual == "" || k.caseless == "" {
		return fmt.Errorf("%q has no letter or digit left after folding",
			name)
	}
	return nil
}

// Check refuses the metadata when client_name or one of its language
// variants is confusable with a reserved name. Variants are looked at in
// the order of their member names, so that the refusal is always the
// same.
func (p *PolicyReservedNames) Check(_ context.Context, in *PolicyInput) error {
	m := in.Metadata
	if p.reserved(m.ClientName) {
		return refuseReserved("client_name", m.ClientName)
	}
	for _, member := range slices.Sorted(maps.Keys(m.Localized)) {
		if !strings.HasPrefix(member, "client_name#") {
			continue
		}
		if v := m.Localized[member]; p.reserved(v) {
			return refuseReserved(member, v)
		}
	}
	return nil
}

// maxQuoted is how many runes of a refused name the refusal quotes.
const maxQuoted = 64

// refuseReserved returns the refusal of the value of member.
func refuseReserved(member, value string) *PolicyError {
	if utf8.RuneCountInString(value) > maxQuoted {
		runes := []rune(value)
		value = string(runes[:maxQuoted]) + "…"
	}
	return Refuse(codeInvalidClientMetadata,
		fmt.Sprintf("%s %q is reserved", member, value))
}

// reserved reports whether a run of consecutive words of name has a key
// of a reserved name.
func (p *PolicyReservedNames) reserved(name string) bool {
	var words []keys
	for _, w := range strings.FieldsFunc(name, isWordBreak) {
		// A word of nothing but ignored characters, such as a lone
		// zero width space, joins its neighbours' runs unseen.
		if k := wordKeys(w); k.visual != "" || k.caseless != "" {
			words = append(words, k)
		}
	}

	var visual, caseless strings.Builder
	for i := range words {
		visual.Reset()
		caseless.Reset()
		for _, k := range words[i:] {
			visual.WriteString(k.visual)
			caseless.WriteString(k.caseless)
			if has(p.visual, visual.String()) ||
				has(p.caseless, caseless.String()) {
				return true
			}

			// Keys only grow along the run.
			if visual.Len() > p.longest && caseless.Len() > p.longest {
				break
			}
		}
	}
	return false
}

// has reports whether key is a non-empty member of set.
func has(set map[string]struct{}, key string) bool {
	if key == "" {
		return false
	}
	_, ok := set[key]
	return ok
}

// keys are the two keys of a word or a name, described on
// PolicyReservedNames.
type keys struct {
	visual, caseless string
}

// nameKeys returns the keys of name: those of its words, joined.
func nameKeys(name string) keys {
	var visual, caseless strings.Builder
	for _, w := range strings.FieldsFunc(name, isWordBreak) {
		k := wordKeys(w)
		visual.WriteString(k.visual)
		caseless.WriteString(k.caseless)
	}
	return keys{visual: visual.String(), caseless: caseless.String()}
}

// wordKeys returns the keys of one word.
func wordKeys(word string) keys {
	// A Caser keeps state, so each call has its own; Check runs
	// concurrently.
	fold := cases.Fold()
	foldCase := func(s string) string {
		return strings.ToLower(fold.String(s))
	}
	skeleton := confusables.Skeleton

	s := norm.NFKC.String(word)
	return keys{
		visual:   strings.Map(dropIgnored, skeleton(foldCase(skeleton(s)))),
		caseless: strings.Map(dropIgnored, skeleton(foldCase(s))),
	}
}

// isWordBreak reports whether r separates words: white space,
// punctuation, symbols and control characters.
func isWordBreak(r rune) bool {
	return unicode.In(r, unicode.White_Space, unicode.Z, unicode.P,
		unicode.S, unicode.Cc)
}

// dropIgnored is a strings.Map function that drops word breaks and the
// characters that are not seen: format characters, variation selectors
// and the other default-ignorable code points.
func dropIgnored(r rune) rune {
	if isWordBreak(r) || unicode.In(r, unicode.Cf,
		unicode.Variation_Selector,
		unicode.Other_Default_Ignorable_Code_Point) {
		return -1
	}
	return r
}

// UnmarshalCaddyfile sets up the policy from Caddyfile tokens. Syntax,
// inside the dcr block:
//
//	policy reserved_names <name...>
//
// A name with spaces in it is quoted: policy reserved_names Acme "Acme
// Login". The names are all on the line; the policy takes no block.
func (p *PolicyReservedNames) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the module name

	for d.NextArg() {
		name := d.Val()
		if err := checkReservedName(name); err != nil {
			return d.Errf("reserved_names: %w", err)
		}
		p.Names = append(p.Names, name)
	}
	if len(p.Names) == 0 {
		return d.Errf("reserved_names: give at least one name")
	}
	if d.NextBlock(d.Nesting()) {
		return d.Errf("reserved_names: unexpected %q: the policy takes "+
			"no block, list the names on its line", d.Val())
	}
	return nil
}

// Interface guards
var (
	_ Policy                = (*PolicyReservedNames)(nil)
	_ caddy.Provisioner     = (*PolicyReservedNames)(nil)
	_ caddy.Validator       = (*PolicyReservedNames)(nil)
	_ caddyfile.Unmarshaler = (*PolicyReservedNames)(nil)
)
