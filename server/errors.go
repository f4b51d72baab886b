package server

import (
	"context"
	"errors"
	"net/http"

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
	switch {
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
