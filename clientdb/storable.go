package clientdb

import (
	"bytes"
	"errors"
	"strconv"
)

// ErrUnstorable is returned by [Tx.Create] and [Tx.Put] for a client whose
// record holds a string PostgreSQL cannot store: U+0000, or an unpaired
// UTF-16 surrogate, which only members kept as raw JSON (jwks) can carry.
// Both stores refuse such a client, so that a registration succeeds or
// fails alike on either.
var ErrUnstorable = errors.New("client metadata holds U+0000 or an unpaired UTF-16 surrogate")

// storable reports whether the JSON encoding of a record is free of the
// escapes ErrUnstorable names. encoding/json writes every other character
// of a string as UTF-8, so only \u escapes need a look.
func storable(record []byte) bool {
	for rest := record; ; {
		i := bytes.Index(rest, []byte(`\u`))
		if i < 0 {
			return true
		}
		if i > 0 && countBackslashes(rest[:i])%2 == 1 {
			// The backslash is itself escaped: "\\u".
			rest = rest[i+2:]
			continue
		}
		r, ok := escapeAt(rest[i:])
		switch {
		case !ok:
			return false
		case r == 0:
			return false
		case r >= 0xDC00 && r <= 0xDFFF:
			return false // a low surrogate without a high one
		case r >= 0xD800 && r <= 0xDBFF:
			low, ok := escapeAt(rest[i+6:])
			if !ok || low < 0xDC00 || low > 0xDFFF {
				return false
			}
			rest = rest[i+12:]
			continue
		}
		rest = rest[i+6:]
	}
}

// escapeAt decodes the \uXXXX escape at the start of b.
func escapeAt(b []byte) (rune, bool) {
	if len(b) < 6 || b[0] != '\\' || b[1] != 'u' {
		return 0, false
	}
	v, err := strconv.ParseUint(string(b[2:6]), 16, 16)
	return rune(v), err == nil
}

// countBackslashes counts the backslashes at the end of b.
func countBackslashes(b []byte) int {
	n := 0
	for n < len(b) && b[len(b)-1-n] == '\\' {
		n++
	}
	return n
}
