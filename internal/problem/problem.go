// Package problem writes RFC 9457 problem details (application/problem+json),
// the one error body every jobworker endpoint answers with.
package problem

import (
	"encoding/json"
	"net/http"

	"github.com/labstack/echo/v4"
)

// ContentType is the media type of a problem details body.
const ContentType = "application/problem+json"

// Details is an RFC 9457 problem. Type defaults to "about:blank" and Title to
// the status text. Detail must never carry secrets, payloads or internal
// error text: it is shown to whoever sent the request.
type Details struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

// New builds a problem for status with an optional human-readable detail.
func New(status int, detail string) Details {
	return Details{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail}
}

// Write sends p as the response. Headers set on the response before the call
// (Retry-After, rate-limit fields) are kept.
func Write(c echo.Context, p Details) error {
	if p.Type == "" {
		p.Type = "about:blank"
	}
	if p.Title == "" {
		p.Title = http.StatusText(p.Status)
	}
	body, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return c.Blob(p.Status, ContentType, body)
}

// Respond is Write(c, New(status, detail)).
func Respond(c echo.Context, status int, detail string) error {
	return Write(c, New(status, detail))
}

// Send writes the problem for status, with an optional detail, to a plain
// net/http response. Headers set on w before the call are kept.
func Send(w http.ResponseWriter, status int, detail string) {
	body, _ := json.Marshal(New(status, detail)) // strings and an int: cannot fail
	w.Header().Set("Content-Type", ContentType)
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
