package server

import (
	"context"
	"errors"
	"net/http"
	"os"

	"github.com/labstack/echo/v4"

	"github.com/digis/jobworker/internal/problem"
)

// handleError is the one place an error returned by a handler becomes a
// response: echo.HTTPError keeps its status (and its message below 500);
// anything else is a 500 whose detail stays in the log, never in the body.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	status, detail := http.StatusInternalServerError, ""
	var he *echo.HTTPError
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		// A handler that returned its body's read error as is.
		status, detail = http.StatusRequestEntityTooLarge, "Request Entity Too Large"
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The body did not arrive within the request's deadline.
		status, detail = http.StatusRequestTimeout, "the request body did not arrive in time"
	case errors.As(err, &he):
		status = he.Code
		// 503 messages ("shutting down, retry later") are safe and useful.
		if msg, ok := he.Message.(string); ok && (status < 500 || status == http.StatusServiceUnavailable) {
			detail = msg
		}
	case errors.Is(err, context.DeadlineExceeded):
		status = http.StatusServiceUnavailable
		detail = "request timed out"
	}
	if status >= 500 {
		s.log.Error("request failed", "request_id", RequestIDOf(c), "route", c.Path(),
			"status", status, "error", err.Error())
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(status)
		return
	}
	_ = problem.Respond(c, status, detail)
}
