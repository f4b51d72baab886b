package outbox

import (
	"errors"
	"fmt"
	"time"
)

var (
	// ErrSchemaBehind: the database lacks an outbox migration this binary
	// needs (see CheckSchema).
	ErrSchemaBehind = errors.New("outbox: database schema is behind")
	// ErrUnavailable: QStash could not take the jobs now (unreachable, 5xx,
	// 429, or refusing the relay's credentials). Nothing was lost: the rows
	// stay pending and are retried with backoff. RunOnce returns it wrapped
	// with the cause.
	ErrUnavailable = errors.New("outbox: qstash unavailable")
	// ErrStarted: Start was called on a relay that is already running.
	ErrStarted = errors.New("outbox: relay already started")
	// ErrInvalidConfig: a Config field is wrong; the error is a
	// *ConfigError naming it.
	ErrInvalidConfig = errors.New("outbox: invalid config")
)

// ConfigError names the Config field that is wrong. It matches
// ErrInvalidConfig with errors.Is.
type ConfigError struct {
	Field  string // e.g. "BatchSize"
	Reason string
}

func (e *ConfigError) Error() string { return "outbox: Config." + e.Field + " " + e.Reason }

// Is makes errors.Is(err, ErrInvalidConfig) true.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// UnavailableError is returned by RunOnce when QStash could not take jobs.
// It matches ErrUnavailable and the cause with errors.Is.
type UnavailableError struct {
	// RetryAfter is how long the relay would wait before trying again: its
	// jittered backoff, or QStash's Retry-After when longer.
	RetryAfter time.Duration
	// Err is the publish error (a *jobs.PublishError).
	Err error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("outbox: qstash unavailable (retry in %s): %v", e.RetryAfter, e.Err)
}

// Unwrap lets errors.Is match ErrUnavailable and the cause.
func (e *UnavailableError) Unwrap() []error { return []error{ErrUnavailable, e.Err} }
