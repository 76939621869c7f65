package clientdb

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"time"
)

// ClientIDLength is the length of the client IDs [NewClientID] makes.
const ClientIDLength = 12 + 22

// NewClientID returns a new client ID issued at t: the time in
// milliseconds since the Unix epoch as 12 hexadecimal digits, then 128
// random bits from crypto/rand in unpadded base64url, 34 characters in
// all.
//
// IDs sort by issue time, so a store appends each new client next to the
// previous one instead of writing into a random place of its B+tree: a
// registration costs the same with a million clients stored as with none.
// The time it reveals is no secret, since client_id_issued_at states it.
func NewClientID(t time.Time) string {
	var b [8 + 16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(max(t.UnixMilli(), 0)))
	rand.Read(b[8:]) // never fails; it aborts the program instead
	out := make([]byte, 0, ClientIDLength)
	out = hex.AppendEncode(out, b[2:8])
	return string(base64.RawURLEncoding.AppendEncode(out, b[8:]))
}
