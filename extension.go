package dcr

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
)

// This file holds the interfaces of the handler's guest modules: policies
// in the dcr.policies namespace, which vet registrations, and hooks in
// the dcr.hooks namespace, which hear of every change to a client.

// Operations a policy is asked about.
const (
	// OperationRegister is a new registration (RFC 7591 section 3.1).
	OperationRegister = "register"

	// OperationUpdate is an update of a registration (RFC 7592
	// section 2.2).
	OperationUpdate = "update"

	// OperationMetadataDocument is a client ID metadata document the
	// server fetched, before its client is stored or refreshed; the
	// client ID is the document's URL.
	OperationMetadataDocument = "metadata_document"
)

// Policy is implemented by modules in the dcr.policies namespace. The
// handler runs its policies in the order the configuration lists them,
// after the built-in rules accepted the metadata, on every registration
// and every RFC 7592 update.
type Policy interface {
	// Check vets in.Metadata. It may amend the metadata in place; the
	// built-in rules then check the result again, so an amendment cannot
	// smuggle in what the policy of the Caddyfile refuses. A
	// *PolicyError refuses the request with its code and description;
	// any other error fails it with 500 server_error and goes to the log
	// only. Check is called concurrently and must not keep in or its
	// metadata after it returns.
	Check(ctx context.Context, in *PolicyInput) error
}

// PolicyInput is what a policy is asked to vet.
type PolicyInput struct {
	// Operation is OperationRegister, OperationUpdate or
	// OperationMetadataDocument.
	Operation string

	// ClientID is the client being updated or the URL of a metadata
	// document, or empty for a new registration.
	ClientID string

	// Metadata is the client metadata after the built-in rules
	// normalised it (defaults filled in, software statement claims in
	// place of the plain members). A policy may change it.
	Metadata *clientdb.Metadata

	// Request is the HTTP request, for its headers, client address and
	// context. Its body has been read and must not be read again.
	Request *http.Request
}

// PolicyError is a policy's refusal, answered to the client as an RFC 7591
// section 3.2.2 error with status 400.
type PolicyError struct {
	// Code is the OAuth error code, such as "invalid_client_metadata"
	// (the default when empty), "invalid_redirect_uri" or
	// "invalid_software_statement".
	Code string

	// Description is shown to the client as error_description. It must
	// not hold anything the client should not see.
	Description string
}

// Error returns the code and the description.
func (e *PolicyError) Error() string {
	return e.code() + ": " + e.Description
}

// code returns the error code, defaulting to invalid_client_metadata.
func (e *PolicyError) code() string {
	if e.Code == "" {
		return codeInvalidClientMetadata
	}
	return e.Code
}

// Refuse returns a policy refusal with the given OAuth error code and
// description.
func Refuse(code, description string) *PolicyError {
	return &PolicyError{Code: code, Description: description}
}

// Types of the events hooks receive.
const (
	// EventCreated: a client registered, or a metadata document client
	// was first stored.
	EventCreated = "created"

	// EventUpdated: a client's metadata changed, through RFC 7592 or a
	// refreshed metadata document.
	EventUpdated = "updated"

	// EventDeleted: a client was deleted, by itself or an operator.
	EventDeleted = "deleted"

	// EventExpired: a client unused for expire_unused was deleted.
	EventExpired = "expired"

	// EventRotated: a client was issued a new secret.
	EventRotated = "rotated"

	// EventDisabled: an operator disabled a client; treat it as deleted
	// until it is enabled.
	EventDisabled = "disabled"

	// EventEnabled: an operator enabled a disabled client again.
	EventEnabled = "enabled"
)

// HookEvent is one change to a client, as hooks receive it once the change
// is durable. Its JSON form is the body a webhook posts.
type HookEvent struct {
	// ID identifies the event, the same for every hook and every
	// attempt to deliver it, so that a receiver can drop a repeat.
	ID string `json:"id"`

	// Type is what happened: one of the Event constants.
	Type string `json:"type"`

	// Time is when the change was made, in Unix seconds; it is durable
	// from the moment the event exists.
	Time int64 `json:"time"`

	// ClientID is the client concerned.
	ClientID string `json:"client_id"`

	// Actor is who made the change: "client" (RFC 7591, RFC 7592),
	// "operator" (the admin API) or "system" (expiry, and metadata
	// documents the server fetched).
	Actor string `json:"actor"`

	// Client is the client as committed, in the form of an RFC 7591
	// client information response without any secret or token, plus
	// "disabled_at" for a disabled client. It is absent from deleted
	// and expired events.
	Client json.RawMessage `json:"client,omitempty"`

	// ClientSecret is the plaintext secret issued at registration. It is
	// set only on created events, and only for hooks that implement
	// SecretReceiver and return a key.
	ClientSecret string `json:"client_secret,omitempty"`
}

// Hook is implemented by modules in the dcr.hooks namespace. Every event is
// written to the hook's queue in the store in the same transaction as the
// change it describes, and delivered from there: in order, one at a time,
// again with exponential back-off until Deliver succeeds, and again after
// a restart if Caddy stopped before it did. Delivery never delays or fails
// the request that made the change.
type Hook interface {
	// Deliver hands one event to the hook. nil means it was delivered;
	// any other error means the same event is offered again later, and
	// no later event is offered before it. ctx bounds the attempt.
	Deliver(ctx context.Context, e *HookEvent) error
}

// HookQueue is implemented by hooks that name their queue in the store.
// The name must stay the same across reloads and restarts for events
// waiting in the queue to reach the hook. Hooks that do not implement it
// get the name of their module and their position in the hook list.
type HookQueue interface {
	// HookQueue returns the name of the hook's queue, at most 200
	// bytes.
	HookQueue() string
}

// SecretReceiver is implemented by hooks that may receive the client
// secret issued at registration in the created event. The plaintext
// waits in the store only sealed (AES-256-GCM) with the hook's key.
type SecretReceiver interface {
	// SecretKey returns the 32-byte key that seals the secret while the
	// event waits, or nil when the hook wants no secret. It must return
	// the same key across restarts, or waiting secrets are lost.
	SecretKey() []byte
}
