package dcr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-dcr/caddy-dcr/clientdb"

	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// Bounds of the admin API.
const (
	// defaultListLimit and maxListLimit are the default and the largest
	// number of clients in one page of a listing.
	defaultListLimit = 50
	maxListLimit     = 500

	// maxAdminBody bounds the body of a token creation request.
	maxAdminBody = 64 << 10
)

// maxListScan bounds the clients one listing reads. The writer waits
// while a read lasts, so a filter that matches little must not hold up
// registrations while it reads the whole store; the page then ends early
// and "next" says where to go on. Tests lower it.
var maxListScan = 10_000

// AdminAPI is the dcr handler's part of Caddy's admin API, at /dcr/. It
// lets operators list, inspect, disable, enable and delete registered
// clients, rotate their secrets, and issue and revoke initial access
// tokens, in the stores that loaded dcr handlers use:
//
//	GET    /dcr/clients?name=&state=&after=&limit=
//	GET    /dcr/clients/<id>
//	DELETE /dcr/clients/<id>
//	POST   /dcr/clients/<id>/disable
//	POST   /dcr/clients/<id>/enable
//	POST   /dcr/clients/<id>/rotate-secret
//	GET    /dcr/tokens
//	POST   /dcr/tokens
//	DELETE /dcr/tokens/<id>
//
// Every path takes the query parameter store=<absolute path> to choose a
// store; it may be left out while only one is in use. Answers are JSON
// and never carry a hash; a plaintext secret or token appears only in the
// answer that issued it. Every change is committed together with its
// audit event (actor "operator") and goes through the store's writer,
// which clears the handlers' client cache, so that it holds from the next
// request on.
//
// Caddy loads every admin.api module by itself; it needs no
// configuration. The admin endpoint's own access rules protect it.
type AdminAPI struct {
	logger *zap.Logger
	now    func() time.Time
}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.dcr",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Provision sets up the logger and the clock.
func (a *AdminAPI) Provision(ctx caddy.Context) error {
	// Admin routers are provisioned outside any module, so the logger
	// is named for this one explicitly.
	a.logger = ctx.Logger(a)
	a.now = timeNow
	return nil
}

// Routes returns the route of the dcr admin API.
func (a *AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{
		Pattern: "/dcr/",
		Handler: caddy.AdminHandlerFunc(a.serve),
	}}
}

// adminOp answers one method at one path, on the chosen store.
type adminOp func(w http.ResponseWriter, r *http.Request, s *adminStore) error

// idOp is an adminOp on the client or token named in the path.
type idOp func(w http.ResponseWriter, r *http.Request, s *adminStore, id string) error

// adminStore is the store an admin request acts on.
type adminStore struct {
	*sharedStore
	path string
}

// serve routes a request under /dcr/.
func (a *AdminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	ops, err := a.route(r)
	if err != nil {
		return err
	}
	op, ok := ops[r.Method]
	if !ok {
		allowed := slices.Sorted(maps.Keys(ops))
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		return apiError(http.StatusMethodNotAllowed,
			"method %s is not allowed here; use %s", r.Method,
			strings.Join(allowed, " or "))
	}

	s, err := selectStore(r.URL.Query().Get("store"))
	if err != nil {
		return err
	}
	return op(w, r, s)
}

// route returns the operations at the request's path, by method.
func (a *AdminAPI) route(r *http.Request) (map[string]adminOp, error) {
	rest, _ := strings.CutPrefix(r.URL.EscapedPath(), "/dcr/")
	var segs []string
	for raw := range strings.SplitSeq(rest, "/") {
		// IDs are escaped in the path, so that any ID can be named.
		seg, err := url.PathUnescape(raw)
		if err != nil {
			return nil, apiError(http.StatusBadRequest,
				"path %q: %v", r.URL.EscapedPath(), err)
		}
		segs = append(segs, seg)
	}

	with := func(id string, fn idOp) adminOp {
		return func(w http.ResponseWriter, r *http.Request, s *adminStore) error {
			return fn(w, r, s, id)
		}
	}
	switch {
	case len(segs) == 1 && segs[0] == "clients":
		return map[string]adminOp{http.MethodGet: a.listClients}, nil
	case len(segs) == 2 && segs[0] == "clients" && segs[1] != "":
		return map[string]adminOp{
			http.MethodGet:    with(segs[1], a.showClient),
			http.MethodDelete: with(segs[1], a.deleteClient),
		}, nil
	case len(segs) == 3 && segs[0] == "clients" && segs[1] != "":
		var fn idOp
		switch segs[2] {
		case "disable":
			fn = a.disableClient
		case "enable":
			fn = a.enableClient
		case "rotate-secret":
			fn = a.rotateSecret
		}
		if fn != nil {
			return map[string]adminOp{http.MethodPost: with(segs[1], fn)}, nil
		}
	case len(segs) == 1 && segs[0] == "tokens":
		return map[string]adminOp{
			http.MethodGet:  a.listTokens,
			http.MethodPost: a.createToken,
		}, nil
	case len(segs) == 2 && segs[0] == "tokens" && segs[1] != "":
		return map[string]adminOp{
			http.MethodDelete: with(segs[1], a.revokeToken),
		}, nil
	}
	return nil, apiError(http.StatusNotFound, "no dcr admin API at %s", r.URL.Path)
}

// selectStore returns the store named by the store parameter, or the one
// store in use when the parameter is empty.
func selectStore(param string) (*adminStore, error) {
	path, err := pickStore(param, storePaths())
	if err != nil {
		return nil, err
	}
	s, ok := storeAt(path)
	if !ok {
		// A reload released it since storePaths looked.
		return nil, apiError(http.StatusNotFound,
			"no dcr handler uses the client store %s any more", path)
	}
	return &adminStore{sharedStore: s, path: path}, nil
}

// pickStore chooses among the absolute paths of the stores in use: the one
// named by param, or the only one when param is empty.
func pickStore(param string, inUse []string) (string, error) {
	switch {
	case len(inUse) == 0:
		return "", apiError(http.StatusNotFound,
			"no dcr handler is loaded, so no client store is in use")
	case param == "" && len(inUse) == 1:
		return inUse[0], nil
	case param == "":
		return "", apiError(http.StatusBadRequest,
			"%d client stores are in use; choose one with the store parameter: %s",
			len(inUse), strings.Join(inUse, ", "))
	case clientdb.IsPostgresURL(param):
		// PostgreSQL stores are known by their password-free address.
	case !filepath.IsAbs(param):
		return "", apiError(http.StatusBadRequest,
			"store %q: want an absolute path or a postgres:// address", param)
	default:
		param = filepath.Clean(param)
	}
	path := param
	if !slices.Contains(inUse, path) {
		return "", apiError(http.StatusNotFound,
			"no dcr handler uses the client store %s; in use: %s",
			path, strings.Join(inUse, ", "))
	}
	return path, nil
}

// update commits fn to the store, waiting as long as a request of the
// handler would.
func (a *AdminAPI) update(r *http.Request, s *adminStore, fn func(clientdb.Tx) error) error {
	ctx, cancel := writeContext(r)
	defer cancel()
	return s.Update(ctx, fn)
}

// operatorEvent returns the audit event of an operator's change.
func operatorEvent(op string, now time.Time, clientID, tokenID string) *clientdb.Event {
	return &clientdb.Event{
		Time:     now.Unix(),
		Op:       op,
		Actor:    clientdb.ActorOperator,
		ClientID: clientID,
		TokenID:  tokenID,
	}
}

// recordOperator records an operator's change to client id in tx: its
// audit event, and the event of the hooks of the config serving last; c is
// the client as the change left it, nil for a delete.
func (s *adminStore) recordOperator(tx clientdb.Tx, op string, now time.Time,
	id string, c *clientdb.Client) error {
	return recordEvent(tx, s.hooks.current(), operatorEvent(op, now, id, ""), c, "")
}

// Outcomes of an operator's change, as logged.
const (
	outcomeOK        = "ok"
	outcomeUnchanged = "unchanged"
	outcomeNotFound  = "not_found"
	outcomeRefused   = "refused"
	outcomeFailed    = "failed"
)

// logChange logs the outcome of an operator's change: err is what the
// commit returned, changed whether it changed anything. Store failures
// are errors; everything else is info.
func (a *AdminAPI) logChange(s *adminStore, op string, subject zap.Field, err error,
	changed bool) {
	outcome := outcomeOK
	switch {
	case errors.Is(err, clientdb.ErrNotFound), errors.Is(err, clientdb.ErrDeleted),
		errors.Is(err, clientdb.ErrTokenNotFound):
		outcome = outcomeNotFound
	case errors.Is(err, errNoSecret):
		outcome = outcomeRefused
	case err != nil:
		a.logger.Error("operator change failed",
			zap.String("operation", op), subject,
			zap.String("outcome", outcomeFailed),
			zap.String("store", s.path), zap.Error(err))
		return
	case !changed:
		outcome = outcomeUnchanged
	}
	a.logger.Info("operator change",
		zap.String("operation", op), subject,
		zap.String("outcome", outcome),
		zap.String("store", s.path))
}

// clientMissing turns the error of a read or change of client id into an
// API error: 404 for an unknown or deleted client.
func clientMissing(id string, err error) error {
	switch {
	case errors.Is(err, clientdb.ErrDeleted):
		return apiError(http.StatusNotFound, "client %q was deleted", id)
	case errors.Is(err, clientdb.ErrNotFound):
		return apiError(http.StatusNotFound, "client %q not found", id)
	}
	return storeAPIError(err)
}

// storeAPIError is the API error of a failed store operation.
func storeAPIError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return caddy.APIError{
			HTTPStatus: http.StatusServiceUnavailable,
			Err: fmt.Errorf("the client store did not answer within %s; "+
				"the change may still be made: %w", storeWait, err),
		}
	}
	return caddy.APIError{
		HTTPStatus: http.StatusInternalServerError,
		Err:        fmt.Errorf("client store: %w", err),
	}
}

// apiError returns an API error with a message made as fmt.Sprintf does.
func apiError(status int, format string, args ...any) error {
	return caddy.APIError{HTTPStatus: status, Err: fmt.Errorf(format, args...)}
}

// writeAdminJSON answers v as JSON. Answers may carry a new secret or
// token, so none is stored by caches.
func writeAdminJSON(w http.ResponseWriter, status int, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return caddy.APIError{
			HTTPStatus: http.StatusInternalServerError,
			Err:        fmt.Errorf("encoding answer: %w", err),
		}
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	// A failed write means the caller left; there is nobody to tell.
	w.Write(append(body, '\n'))
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner = (*AdminAPI)(nil)
	_ caddy.AdminRouter = (*AdminAPI)(nil)
)
