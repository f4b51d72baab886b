package apiapp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/digis/jobworker/internal/store"
	"github.com/digis/jobworker/internal/validtext"
	"github.com/digis/jobworker/server"
)

// storeError maps a store error to the HTTP answer, the one place this
// mapping lives. The server's error handler renders the *echo.HTTPError as
// problem+json; 5xx details are never shown.
func (a *app) storeError(c echo.Context, err error) *echo.HTTPError {
	switch {
	case errors.Is(err, store.ErrInvalid):
		return echo.NewHTTPError(http.StatusBadRequest, invalidDetail(err))
	case errors.Is(err, store.ErrNotFound):
		return echo.NewHTTPError(http.StatusNotFound, "no such stream")
	case errors.Is(err, store.ErrNotCreator):
		return echo.NewHTTPError(http.StatusForbidden, "only the stream's creator may do this")
	case errors.Is(err, store.ErrInsufficientFunds):
		return echo.NewHTTPError(http.StatusPaymentRequired, "your balance is too low for this tip")
	case errors.Is(err, store.ErrStreamNotLive):
		return echo.NewHTTPError(http.StatusConflict, "the stream is not live")
	case errors.Is(err, store.ErrSelfTip):
		return echo.NewHTTPError(http.StatusUnprocessableEntity, "you cannot tip your own stream")
	case errors.Is(err, store.ErrIdempotencyKeyReused):
		return echo.NewHTTPError(http.StatusUnprocessableEntity,
			"this Idempotency-Key was already used for a different tip; use a new key")
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		c.Response().Header().Set(echo.HeaderRetryAfter, "1")
		return echo.NewHTTPError(http.StatusServiceUnavailable, "the database did not answer in time; retry")
	}
	a.log.ErrorContext(c.Request().Context(), "store call failed",
		"request_id", server.RequestIDOf(c), "route", c.Path(), "error", err.Error())
	return echo.NewHTTPError(http.StatusInternalServerError).SetInternal(err)
}

// invalidDetail is what the store says is wrong ("amount must be ...").
func invalidDetail(err error) string {
	var ie *store.InvalidError
	if errors.As(err, &ie) {
		return ie.Reason
	}
	return "invalid request"
}

// decodeJSON reads exactly one JSON object into v, refusing unknown fields,
// so a misspelt field is a 400 instead of a silently ignored value. Every
// string in it must be one line of valid text (validtext.Line): the bodies
// here hold names, titles and ids, and PostgreSQL refuses a NUL.
func decodeJSON(c echo.Context, v any) error {
	raw, err := io.ReadAll(c.Request().Body)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return echo.ErrStatusRequestEntityTooLarge
		}
		return badRequest("the body could not be read")
	}
	if err := validtext.JSON(raw, validtext.Line); err != nil {
		return badRequest(err.Error())
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("the body must be one JSON object: " + jsonProblem(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest("the body must be one JSON object with nothing after it")
	}
	return nil
}

func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return "the body is empty"
	case errors.As(err, &syn):
		return "malformed JSON"
	case errors.As(err, &typ):
		return "field " + typ.Field + " has the wrong type (want " + typ.Type.String() + ")"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// encoding/json has no typed error for DisallowUnknownFields.
		return strings.TrimPrefix(err.Error(), "json: ")
	}
	return "malformed JSON"
}

func badRequest(detail string) *echo.HTTPError {
	return echo.NewHTTPError(http.StatusBadRequest, detail)
}
