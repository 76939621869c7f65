package dcr

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Well-known paths of authorization server metadata: RFC 8414 section 3
// and OpenID Connect Discovery 1.0 section 4.
const (
	oauthMetadataPath = "/.well-known/oauth-authorization-server"
	oidcMetadataPath  = "/.well-known/openid-configuration"
)

// maxMetadataBody bounds the metadata document the handler rewrites; a
// larger one passes through untouched.
const maxMetadataBody = 1 << 20

// isMetadataPath reports whether path is where a client looks for the
// backend's metadata: the well-known paths, with an issuer path inserted
// after them (RFC 8414 sections 3.1 and 5) or appended before the OpenID
// one (OpenID Connect Discovery section 4.1).
func isMetadataPath(path string) bool {
	return path == oauthMetadataPath ||
		hasIssuerPath(path, oauthMetadataPath) ||
		hasIssuerPath(path, oidcMetadataPath) ||
		strings.HasSuffix(path, oidcMetadataPath)
}

// hasIssuerPath reports whether path is prefix, a slash and a non-empty
// issuer path.
func hasIssuerPath(path, prefix string) bool {
	rest, ok := strings.CutPrefix(path, prefix+"/")
	return ok && rest != ""
}

// serveMetadata passes a metadata request to the backend and adds the
// registration endpoint to a JSON answer, keeping everything else as the
// backend sent it. Answers that are not a 200 with an uncompressed JSON
// object pass through untouched.
func (h *Handler) serveMetadata(w http.ResponseWriter, r *http.Request,
	next caddyhttp.Handler) error {
	// Ask the backend for an uncompressed document, so that it can be
	// rewritten; HTTP clients send Accept-Encoding by default, and Caddy's
	// encode handler, if configured, compresses the final answer anyway.
	r.Header.Del("Accept-Encoding")

	rec := &metadataRecorder{
		ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w},
	}
	if err := next.ServeHTTP(rec, r); err != nil {
		return err
	}
	if !rec.buffering {
		return nil
	}
	buf := &rec.buf
	body, err := h.injectMetadata(buf.Bytes(), r)
	if err != nil {
		// Not a JSON object after all: leave it as it was.
		h.logger.Debug("metadata left unchanged",
			zap.String("path", r.URL.Path), zap.Error(err))
		return rec.flush()
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(rec.status)
	_, err = w.Write(body)
	return err
}

// metadataRecorder holds back a response that may be a metadata document
// to rewrite: a 200 with an uncompressed JSON body. Any other response, or
// one that grows past maxMetadataBody, streams through unchanged.
type metadataRecorder struct {
	*caddyhttp.ResponseWriterWrapper

	status      int
	wroteHeader bool
	buffering   bool
	buf         bytes.Buffer
}

// WriteHeader decides whether to hold the response back.
func (m *metadataRecorder) WriteHeader(status int) {
	if m.wroteHeader {
		return
	}
	if status >= 100 && status < 200 {
		m.ResponseWriterWrapper.WriteHeader(status)
		return
	}
	m.wroteHeader = true
	m.status = status
	hdr := m.Header()
	m.buffering = status == http.StatusOK && isJSON(hdr.Get("Content-Type")) &&
		hdr.Get("Content-Encoding") == "" &&
		contentLengthWithin(hdr.Get("Content-Length"), maxMetadataBody)
	if !m.buffering {
		m.ResponseWriterWrapper.WriteHeader(status)
	}
}

// Write holds body bytes back, or passes them on once the response is
// known not to be rewritten.
func (m *metadataRecorder) Write(p []byte) (int, error) {
	m.WriteHeader(http.StatusOK)
	if m.buffering && m.buf.Len()+len(p) > maxMetadataBody {
		if err := m.flush(); err != nil {
			return 0, err
		}
	}
	if !m.buffering {
		return m.ResponseWriterWrapper.Write(p)
	}
	return m.buf.Write(p)
}

// ReadFrom goes through Write, so that the size limit applies.
func (m *metadataRecorder) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(struct{ io.Writer }{m}, r)
}

// FlushError keeps held-back bytes held back: the response is written
// whole at the end.
func (m *metadataRecorder) FlushError() error {
	if m.buffering {
		return nil
	}
	return http.NewResponseController(m.ResponseWriterWrapper.ResponseWriter).Flush()
}

// flush stops holding back: it writes the status and what was held, and
// lets the rest stream.
func (m *metadataRecorder) flush() error {
	m.buffering = false
	m.ResponseWriterWrapper.WriteHeader(m.status)
	_, err := m.ResponseWriterWrapper.Write(m.buf.Bytes())
	m.buf.Reset()
	return err
}

// injectMetadata adds registration_endpoint to a metadata document and
// makes the supported auth methods, grant types and response types include
// what the registration policy lets clients register. Members keep their
// order; no other member changes.
func (h *Handler) injectMetadata(doc []byte, r *http.Request) ([]byte, error) {
	members, perr := splitObject(doc)
	if perr != nil {
		return nil, perr
	}

	endpoint, _ := json.Marshal(h.baseURL(r) + h.Endpoint)
	set := map[string]json.RawMessage{
		"registration_endpoint": endpoint,
	}
	// A list the backend gives gains what the policy allows; an absent
	// one (whose RFC 8414 default may name grants the policy refuses, such
	// as implicit) becomes what the policy allows.
	lists := []struct {
		name    string
		allowed []string
	}{
		{"token_endpoint_auth_methods_supported", h.policy.authMethods},
		{"grant_types_supported", h.policy.grantTypes},
		{"response_types_supported", responsesFor(h.policy.grantTypes)},
	}
	if h.cimdEnabled() {
		set[cimdSupported] = json.RawMessage("true")
	}
	for _, l := range lists {
		i := slices.IndexFunc(members, func(m member) bool { return m.name == l.name })
		var current []string
		if i >= 0 && json.Unmarshal(members[i].value, &current) != nil {
			// A member of another shape is the backend's business.
			continue
		}
		merged := slices.Clone(current)
		for _, v := range l.allowed {
			if !slices.Contains(merged, v) {
				merged = append(merged, v)
			}
		}
		if len(merged) == 0 || (i >= 0 && len(merged) == len(current)) {
			continue
		}
		raw, err := json.Marshal(merged)
		if err != nil {
			return nil, err
		}
		set[l.name] = raw
	}

	var out bytes.Buffer
	out.WriteByte('{')
	write := func(name string, value json.RawMessage) {
		if out.Len() > 1 {
			out.WriteByte(',')
		}
		key, _ := json.Marshal(name)
		out.Write(key)
		out.WriteByte(':')
		out.Write(value)
	}
	for _, m := range members {
		if v, ok := set[m.name]; ok {
			write(m.name, v)
			delete(set, m.name)
			continue
		}
		write(m.name, m.value)
	}
	for _, name := range []string{
		"registration_endpoint",
		"token_endpoint_auth_methods_supported",
		"grant_types_supported",
		"response_types_supported",
		cimdSupported,
	} {
		if v, ok := set[name]; ok {
			write(name, v)
		}
	}
	out.WriteByte('}')
	return out.Bytes(), nil
}

// cimdSupported is the metadata member that advertises client ID metadata
// documents (draft-ietf-oauth-client-id-metadata-document).
const cimdSupported = "client_id_metadata_document_supported"

// isJSON reports whether a Content-Type names JSON.
func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

// contentLengthWithin reports whether a Content-Length header, if any, is
// at most limit.
func contentLengthWithin(v string, limit int64) bool {
	if v == "" {
		return true
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return err == nil && n <= limit
}
