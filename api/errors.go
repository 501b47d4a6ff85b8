package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/vectis-ft/vectis/store"
)

// Error codes of the JSON error body {"error": code, "message": text}.
const (
	CodeBadRequest       = "bad_request"
	CodeInvalid          = "invalid"
	CodeUnauthorized     = "unauthorized"
	CodeForbidden        = "forbidden"
	CodeNotFound         = "not_found"
	CodeMethodNotAllowed = "method_not_allowed"
	CodeConflict         = "conflict"
	CodeNotLeader        = "not_leader"
	CodeTooLarge         = "request_too_large"
	CodeUnsupportedMedia = "unsupported_media_type"
	CodeTooManyRequests  = "too_many_requests"
	CodeUnavailable      = "unavailable"
	CodeInternal         = "internal"
)

// errorBody is the JSON shape of every error response.
type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
	Leader  string `json:"leader,omitempty"` // with not_leader
}

// httpError is an error with its HTTP status and code; handlers return it
// and the router writes it.
type httpError struct {
	status  int
	code    string
	message string
	leader  string
	cause   error // logged, never sent
}

func (e *httpError) Error() string {
	if e.cause != nil {
		return fmt.Sprintf("%d %s: %s: %v", e.status, e.code, e.message, e.cause)
	}
	return fmt.Sprintf("%d %s: %s", e.status, e.code, e.message)
}

func (e *httpError) Unwrap() error { return e.cause }

func errorf(status int, code, format string, args ...any) *httpError {
	return &httpError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

func badRequest(format string, args ...any) *httpError {
	return errorf(http.StatusBadRequest, CodeBadRequest, format, args...)
}

func invalid(format string, args ...any) *httpError {
	return errorf(http.StatusBadRequest, CodeInvalid, format, args...)
}

func notFound(format string, args ...any) *httpError {
	return errorf(http.StatusNotFound, CodeNotFound, format, args...)
}

func conflict(format string, args ...any) *httpError {
	return errorf(http.StatusConflict, CodeConflict, format, args...)
}

func notLeader(leader, action string) *httpError {
	msg := fmt.Sprintf("this node is not the leader; %s on the leader", action)
	if leader != "" {
		msg = fmt.Sprintf("this node is not the leader; %s on the leader %q", action, leader)
	}
	return &httpError{status: http.StatusConflict, code: CodeNotLeader, message: msg, leader: leader}
}

// storeError maps a store error to an HTTP error. what names the object for
// the message, e.g. `partner "CXCLIENT"`. The store's message is kept for 400
// and 409 (it explains the validation or the conflict and holds no secret)
// and dropped otherwise.
func storeError(err error, what string) *httpError {
	var he *httpError
	switch {
	case errors.As(err, &he):
		return he
	case errors.Is(err, store.ErrNotFound):
		return &httpError{status: http.StatusNotFound, code: CodeNotFound, message: what + " not found", cause: err}
	case errors.Is(err, store.ErrConflict):
		return &httpError{status: http.StatusConflict, code: CodeConflict, message: what + ": " + trimStorePrefix(err), cause: err}
	case errors.Is(err, store.ErrInvalid):
		return &httpError{status: http.StatusBadRequest, code: CodeInvalid, message: trimStorePrefix(err), cause: err}
	case errors.Is(err, store.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return &httpError{status: http.StatusServiceUnavailable, code: CodeUnavailable, message: "the database is unavailable; retry later", cause: err}
	case errors.Is(err, store.ErrStaleEpoch):
		return &httpError{status: http.StatusConflict, code: CodeNotLeader, message: "this node is no longer the leader", cause: err}
	default:
		return &httpError{status: http.StatusInternalServerError, code: CodeInternal, message: "internal error", cause: err}
	}
}

// trimStorePrefix returns the store's message without the "store: " noise.
func trimStorePrefix(err error) string {
	s := err.Error()
	for _, p := range []string{"store: invalid: ", "store: conflict: ", "store: "} {
		if strings.Contains(s, p) {
			return strings.Replace(s, p, "", 1)
		}
	}
	return s
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, e *httpError) {
	switch e.status {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Basic realm="vectis", charset="UTF-8"`)
	}
	writeJSON(w, e.status, errorBody{Error: e.code, Message: e.message, Leader: e.leader})
}
