package dcr

import (
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// checkRate takes one registration from the client IP's allowance. Over
// the limit it counts the refusal, sets Retry-After and returns the
// error to answer.
func (h *Handler) checkRate(w http.ResponseWriter, r *http.Request) *protoError {
	if h.limiter == nil {
		return nil
	}
	ok, wait := h.limiter.allow(clientIP(r), h.now())
	if ok {
		return nil
	}
	metrics.rateLimited()
	secs := int64((wait + time.Second - 1) / time.Second)
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	return &protoError{
		Status: http.StatusTooManyRequests,
		Code:   "temporarily_unavailable",
		Description: fmt.Sprintf("too many registrations from this address: "+
			"the limit is %d per %s (rate_limit); retry after %d seconds",
			h.RateLimit.Requests, time.Duration(h.RateLimit.Window), secs),
		Rule: "rate_limit",
	}
}
