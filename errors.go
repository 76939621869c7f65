package dcr

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/caddy-dcr/caddy-dcr/clientdb"
	"go.uber.org/zap"
)

// Error codes of RFC 7591 section 3.2.2 and RFC 6749 section 5.2 that the
// handler answers with.
const (
	codeInvalidRequest        = "invalid_request"
	codeInvalidRedirectURI    = "invalid_redirect_uri"
	codeInvalidClientMetadata = "invalid_client_metadata"
	codeServerError           = "server_error"
)

// protoError is a protocol error answered to the client in the JSON form
// of RFC 7591 section 3.2.2. Description is written for the client and
// names the offending member or value; Rule names the check that fired and
// goes to the log with Cause, which never reaches the client.
type protoError struct {
	Status      int
	Code        string
	Description string
	Rule        string
	Cause       error
}

// Error describes the error for logs, with the cause.
func (e *protoError) Error() string {
	if e.Cause != nil {
		return e.Code + ": " + e.Description + ": " + e.Cause.Error()
	}
	return e.Code + ": " + e.Description
}

// Unwrap returns the internal cause.
func (e *protoError) Unwrap() error { return e.Cause }

// metadataError returns a 400 invalid_client_metadata error.
func metadataError(rule, description string) *protoError {
	return &protoError{
		Status:      http.StatusBadRequest,
		Code:        codeInvalidClientMetadata,
		Description: description,
		Rule:        rule,
	}
}

// redirectError returns a 400 invalid_redirect_uri error.
func redirectError(rule, description string) *protoError {
	return &protoError{
		Status:      http.StatusBadRequest,
		Code:        codeInvalidRedirectURI,
		Description: description,
		Rule:        rule,
	}
}

// requestError returns an invalid_request error with the given status.
func requestError(status int, rule, description string) *protoError {
	return &protoError{
		Status:      status,
		Code:        codeInvalidRequest,
		Description: description,
		Rule:        rule,
	}
}

// storeError is the answer when the client store fails: the client may
// try again shortly.
func storeError(err error) *protoError {
	if errors.Is(err, clientdb.ErrUnstorable) {
		// Every other member is checked before the store sees it;
		// raw JSON members are stored as sent.
		return &protoError{
			Status:      http.StatusBadRequest,
			Code:        codeInvalidClientMetadata,
			Description: "a JSON member holds U+0000 or an unpaired surrogate",
			Rule:        "unstorable",
		}
	}
	return &protoError{
		Status:      http.StatusServiceUnavailable,
		Code:        codeServerError,
		Description: "the client store is unavailable; try again later",
		Rule:        "store",
		Cause:       err,
	}
}

// logProtoError logs a protocol error with the rule that fired: msg at
// info level for a refusal, failMsg at error level, with the cause, for a
// server-side failure. The description is left out: it may quote what the
// client sent.
func logProtoError(logger *zap.Logger, msg, failMsg string, r *http.Request,
	e *protoError, extra ...zap.Field) {
	fields := append(extra,
		zap.String("error", e.Code),
		zap.String("rule", e.Rule),
		zap.Int("status", e.Status),
		zap.String("client_ip", clientIP(r)))
	if e.Cause != nil {
		fields = append(fields, zap.NamedError("cause", e.Cause))
	}
	switch {
	case errors.Is(e.Cause, clientdb.ErrUnavailable):
		// The store logs an outage once, when it begins; a line per
		// request would bury it.
		logger.Debug(failMsg, fields...)
		return
	case e.Status >= 500:
		logger.Error(failMsg, fields...)
		return
	}
	logger.Info(msg, fields...)
}

// errorBody is the JSON body of an error response.
type errorBody struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

// writeError answers a protocol error. A store outage is temporary, so
// its answer says when to try again.
func writeError(w http.ResponseWriter, e *protoError) {
	if e.Status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, e.Status, errorBody{Error: e.Code, Description: e.Description})
}

// writeJSON answers v as JSON with the headers RFC 7591 section 3.2
// requires of every registration response.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		// Only the handler's own types reach here; they always encode.
		status = http.StatusInternalServerError
		body = []byte(`{"error":"server_error"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(status)
	w.Write(body)
}
