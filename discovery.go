package dcr

import (
	"bytes"
	"encoding/json"
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
// after the OAuth one (RFC 8414 section 3.1) or before the OpenID one
// (OpenID Connect Discovery section 4.1).
func isMetadataPath(path string) bool {
	return path == oauthMetadataPath ||
		strings.HasPrefix(path, oauthMetadataPath+"/") ||
		strings.HasSuffix(path, oidcMetadataPath)
}

// serveMetadata passes a metadata request to the backend and adds the
// registration endpoint to a JSON answer, keeping everything else as the
// backend sent it. Answers that are not a 200 with an uncompressed JSON
// object pass through untouched.
func (h *Handler) serveMetadata(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	// Ask the backend for an uncompressed document, so that it can be
	// rewritten; HTTP clients send Accept-Encoding by default, and Caddy's
	// encode handler, if configured, compresses the final answer anyway.
	r.Header.Del("Accept-Encoding")

	var buf bytes.Buffer
	rec := caddyhttp.NewResponseRecorder(w, &buf, func(status int, hdr http.Header) bool {
		return status == http.StatusOK && isJSON(hdr.Get("Content-Type")) &&
			hdr.Get("Content-Encoding") == "" &&
			contentLengthWithin(hdr.Get("Content-Length"), maxMetadataBody)
	})
	if err := next.ServeHTTP(rec, r); err != nil {
		return err
	}
	if !rec.Buffered() {
		return nil
	}

	body, err := h.injectMetadata(buf.Bytes(), r)
	if err != nil {
		// Not a JSON object after all: leave it as it was.
		h.logger.Debug("metadata left unchanged",
			zap.String("path", r.URL.Path), zap.Error(err))
		return rec.WriteResponse()
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(rec.Status())
	_, err = w.Write(body)
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
	} {
		if v, ok := set[name]; ok {
			write(name, v)
		}
	}
	out.WriteByte('}')
	return out.Bytes(), nil
}

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
