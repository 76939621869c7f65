// Package clientdb holds the on-disk schema of the caddy-dcr client store and
// the locking protocol that lets other processes read it while Caddy writes.
//
// The store is a bbolt file. bbolt takes a lock on the whole file for as long
// as a database is open, so no process keeps it open between operations.
// Every process instead follows this protocol, built on flock(2) and two
// small lock files beside the database:
//
//   - A reader takes an exclusive lock on "<file>.gate" and releases it at
//     once, then takes a shared lock on "<file>.lock", opens the database
//     read-only, reads, closes it and releases the shared lock.
//   - The writer takes an exclusive lock on "<file>.gate", then an exclusive
//     lock on "<file>.lock", releases the gate, opens the database
//     read-write, commits one transaction with fsync, closes it and releases
//     the lock.
//
// The gate keeps a stream of readers from starving the writer: once the
// writer holds the gate, new readers queue behind it while the readers
// already inside finish. Both locks are taken blocking, so waiting costs no
// polling delay.
//
// The writer commits many changes in one transaction (group commit): changes
// that arrive while a commit is running are applied together by the next
// one. A change is acknowledged only after its transaction is on disk; any
// reader that takes the lock afterwards sees it. While changes keep coming,
// the writer keeps the database open from one commit to the next, for at
// most 5 ms, then closes it and lets waiting readers in before it takes the
// lock again; when no change is queued it closes at once.
//
// # Schema
//
// Bucket "clients" maps a client ID (UTF-8 bytes) to the JSON encoding of a
// [Client]. Bucket "tombstones" maps the ID of a deleted client to a
// [Tombstone], and "tombstone_expiry" indexes them by deletion time.
// Bucket "initial_tokens" maps the ID of an issued initial access token to
// an [InitialToken], and "initial_token_hashes" maps the token's hash to
// its ID. Bucket "outbox" holds one nested bucket per queue of
// [Tx.Enqueue], mapping each entry's 8-byte big-endian Seq to its 8-byte
// big-endian Unix time followed by the payload; it is created by the first
// Enqueue. Bucket "meta" holds key "schema_version", currently "1"; buckets
// added since then are created on the next write, and a store without them
// reads as empty.
// Readers in other languages follow the same protocol with their own bbolt
// library and JSON decoder; the README of the repository documents every
// member.
package clientdb
