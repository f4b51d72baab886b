package control

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Sentinel errors, for errors.Is.
var (
	// ErrInvalidConfig: a Config field is wrong; the error is a
	// *ConfigError naming it.
	ErrInvalidConfig = errors.New("control: invalid config")
	// ErrInvalidArgument: a call's arguments were refused before anything
	// was sent (an empty id, a bulk action without a filter, a Job filter
	// without Config.WorkerPublicURL, a bad periodic declaration).
	ErrInvalidArgument = errors.New("control: invalid argument")
	// ErrAPI: QStash refused the call or could not be reached; the error is
	// an *APIError.
	ErrAPI = errors.New("control: qstash call failed")
	// ErrNotFound: QStash answered 404 (the message, DLQ entry, queue or
	// schedule is not there, or no longer). Also an *APIError.
	ErrNotFound = errors.New("control: not found")
)

// ConfigError names the configuration field that is wrong, never its value.
// It matches ErrInvalidConfig with errors.Is.
type ConfigError struct {
	Field  string // e.g. "Config.Token"
	Reason string
}

func (e *ConfigError) Error() string { return "control: " + e.Field + " " + e.Reason }

// Is makes errors.Is(err, ErrInvalidConfig) true.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// APIError is a QStash call that did not succeed. It matches ErrAPI, and
// ErrNotFound on a 404, with errors.Is, and whatever caused a failure
// without an answer (e.g. context.DeadlineExceeded).
type APIError struct {
	// Op names the call, e.g. "dlq retry".
	Op string
	// StatusCode is QStash's HTTP status, or 0 when no answer arrived.
	StatusCode int
	// Message is QStash's error text (at most 300 bytes).
	Message string
	// RetryAfter is QStash's Retry-After on a 429/503, when it sent one.
	RetryAfter time.Duration
	// Err is the transport error when StatusCode is 0.
	Err error
}

func (e *APIError) Error() string {
	if e.StatusCode == 0 {
		return fmt.Sprintf("control: %s: %v", e.Op, e.Err)
	}
	if e.Message == "" {
		return fmt.Sprintf("control: %s: qstash answered %d", e.Op, e.StatusCode)
	}
	return fmt.Sprintf("control: %s: qstash answered %d: %s", e.Op, e.StatusCode, e.Message)
}

// Unwrap lets errors.Is match ErrAPI, ErrNotFound (404) and the cause.
func (e *APIError) Unwrap() []error {
	errs := []error{ErrAPI}
	if e.StatusCode == http.StatusNotFound {
		errs = append(errs, ErrNotFound)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// Temporary reports whether trying again later may succeed: no answer, 429,
// or a 5xx.
func (e *APIError) Temporary() bool {
	return e.StatusCode == 0 || e.StatusCode == http.StatusTooManyRequests || e.StatusCode >= 500
}

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidArgument}, a...)...)
}
