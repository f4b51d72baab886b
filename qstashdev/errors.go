package qstashdev

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// apiError is an error with the HTTP status it maps to. Every handler error
// is turned into {"error": "..."} by writeError, the one place doing so.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) error {
	return &apiError{status: status, msg: fmt.Sprintf(format, args...)}
}

func errTooLarge(limit int64) error {
	return errorf(http.StatusRequestEntityTooLarge, "message size exceeds the limit of %d bytes", limit)
}

var (
	errNotFound = errorf(http.StatusNotFound, "not found")
	errMethod   = errorf(http.StatusMethodNotAllowed, "method not allowed")
)

// writeError answers err as {"error": "..."}; anything that is not an
// apiError is a 500 whose text is not shown.
func writeError(w http.ResponseWriter, err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		ae = &apiError{status: http.StatusInternalServerError, msg: "internal error"}
	}
	writeJSON(w, ae.status, map[string]string{"error": ae.msg})
}

// writeJSON answers v as JSON. It does network I/O: never call it with
// s.mu held.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
