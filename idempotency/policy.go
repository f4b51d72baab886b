package idempotency

import (
	"errors"
	"net/http"
)

// ErrNoSideEffect marks a handler error that happened before the handler
// changed anything (no charge, no write): the key is released, nothing is
// stored, and a retry with the same key runs the handler again. Wrap errors
// with NoSideEffect; test with errors.Is.
var ErrNoSideEffect = errors.New("idempotency: failed before any side effect")

// NoSideEffect wraps err (which may be an *echo.HTTPError, rendered as
// usual) to say the request failed before any side effect. Use it for
// transient failures you can vouch for, e.g. the database refused the
// transaction's first statement, so the client may retry the same key.
func NoSideEffect(err error) error {
	if err == nil {
		return nil
	}
	return &noSideEffectError{err: err}
}

type noSideEffectError struct{ err error }

func (e *noSideEffectError) Error() string   { return e.err.Error() }
func (e *noSideEffectError) Unwrap() error   { return e.err }
func (e *noSideEffectError) Is(t error) bool { return t == ErrNoSideEffect }

// unwrapNoSideEffect returns the error Echo's error handler should render:
// Echo's default handler type-asserts *echo.HTTPError, so our wrapper must
// not hide it.
func unwrapNoSideEffect(err error) error {
	var w *noSideEffectError
	for errors.As(err, &w) {
		err = w.err
	}
	return err
}

type decision int

const (
	// decisionStore records the response; every retry replays it.
	decisionStore decision = iota + 1
	// decisionAmbiguous records the response too, but the outcome is not
	// known (the work may or may not have happened). Replayed, never re-run.
	decisionAmbiguous
	// decisionRelease stores nothing and frees the key: nothing happened.
	decisionRelease
)

// notStored are statuses that mean "refused before doing anything":
// validation failures (400, 422), authentication and permission (401, 403),
// not found (404), wrong method or media (405, 415), too large (413) and
// rate limited (429). Stripe stores none of these either; storing them
// would block the corrected retry (the Truxify #2885 complaint).
var notStored = map[int]bool{
	http.StatusBadRequest:            true,
	http.StatusUnauthorized:          true,
	http.StatusForbidden:             true,
	http.StatusNotFound:              true,
	http.StatusMethodNotAllowed:      true,
	http.StatusRequestEntityTooLarge: true,
	http.StatusUnsupportedMediaType:  true,
	http.StatusUnprocessableEntity:   true,
	http.StatusTooManyRequests:       true,
}

// decide is the one place that says what happens to a key after the
// handler ran. Rows, first match wins:
//
//	handler panicked                          → ambiguous: a fixed 500 problem is stored and replayed
//	returned error wraps ErrNoSideEffect      → release: answer sent, nothing stored, retry re-runs
//	final status in notStored (400 401 403 404 405 413 415 422 429)
//	                                          → release
//	final status 5xx (incl. a plain Go error, a timeout or a lost lease after work began)
//	                                          → ambiguous: stored and replayed as sent
//	anything else (2xx, 3xx, 402, 409, 410, …) → store
//
// "Final status" is what the client got, after Echo's HTTPErrorHandler
// rendered any returned error (the middleware calls c.Error itself).
// A record expires after the store's ResultTTL; after that the key is new.
func decide(status int, panicked bool, handlerErr error) decision {
	switch {
	case panicked:
		return decisionAmbiguous
	case errors.Is(handlerErr, ErrNoSideEffect):
		return decisionRelease
	case notStored[status]:
		return decisionRelease
	case status >= 500:
		return decisionAmbiguous
	}
	return decisionStore
}
