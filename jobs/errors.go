package jobs

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Sentinel errors, for errors.Is.
var (
	// ErrInvalidName: a job name breaks the ValidateName rules.
	ErrInvalidName = errors.New("jobs: invalid job name")
	// ErrDuplicateJob: Register was called twice for the same job name.
	ErrDuplicateJob = errors.New("jobs: job already registered")
	// ErrUnknownJob: Dispatch got a name no handler is registered for. The
	// error Dispatch returns is also permanent (489): retrying cannot help.
	ErrUnknownJob = errors.New("jobs: unknown job")
	// ErrBadPayload: the body did not decode into the job's args type, or
	// the args' Validate method rejected it. Permanent in Dispatch.
	ErrBadPayload = errors.New("jobs: bad payload")
	// ErrInvalidOption: an enqueue option (or the args' Validate method)
	// rejected the request before anything was sent.
	ErrInvalidOption = errors.New("jobs: invalid enqueue option")
	// ErrPublish: QStash refused the publish or could not be reached. The
	// error is a *PublishError carrying the status code.
	ErrPublish = errors.New("jobs: publish failed")
	// ErrInvalidConfig: a ClientConfig or RegistryConfig field is wrong; the
	// error is a *ConfigError naming it.
	ErrInvalidConfig = errors.New("jobs: invalid config")
)

// ConfigError names the configuration field that is wrong, never its value
// (a token). It matches ErrInvalidConfig with errors.Is.
type ConfigError struct {
	Field  string // e.g. "ClientConfig.WorkerPublicURL"
	Reason string
}

func (e *ConfigError) Error() string { return "jobs: " + e.Field + " " + e.Reason }

// Is makes errors.Is(err, ErrInvalidConfig) true.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// StatusNonRetryable is the status QStash reads, together with the
// HeaderNonRetryable header, as "do not retry; dead-letter now".
const StatusNonRetryable = 489

// HeaderNonRetryable must be "true" on a StatusNonRetryable answer; QStash
// requires both.
const HeaderNonRetryable = "Upstash-NonRetryable-Error"

// MaxRetryAfter is the longest Retry-After QStash honours; longer values are
// ignored by QStash (it falls back to its default backoff), so RetryAfter clamps
// to it.
const MaxRetryAfter = 24 * time.Hour

type permanentError struct{ err error }

func (e *permanentError) Error() string {
	if e.err == nil {
		return "jobs: permanent failure"
	}
	return e.err.Error()
}

func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as a failure retrying cannot fix (bad input, a
// referenced row that is gone, a business rule). The worker answers 489 with
// Upstash-NonRetryable-Error: true and QStash moves the message to its DLQ
// at once, firing the failure callback. errors.Is/As still see err.
// Permanent(nil) is a permanent failure without a cause.
func Permanent(err error) error { return &permanentError{err: err} }

// IsPermanent reports whether err (or anything it wraps) was marked with
// Permanent. Dispatch marks unknown jobs and bad payloads this way.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

type retryAfterError struct {
	after time.Duration
	err   error
}

func (e *retryAfterError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("jobs: retry after %s", e.after)
	}
	return e.err.Error()
}

func (e *retryAfterError) Unwrap() error { return e.err }

// RetryAfter asks QStash to retry no sooner than d (e.g. a rate-limited
// upstream, or the same message still running elsewhere). The worker answers
// 500 with Retry-After: <seconds, rounded up>. It still counts as one of the
// message's retries. d is clamped to [0, MaxRetryAfter]; 0 means "retry now".
// RetryAfter(d, nil) is allowed. A Permanent anywhere in the chain wins.
func RetryAfter(d time.Duration, err error) error {
	return &retryAfterError{after: min(max(d, 0), MaxRetryAfter), err: err}
}

// RetryAfterOf returns the delay requested with RetryAfter anywhere in err's
// chain.
func RetryAfterOf(err error) (time.Duration, bool) {
	var r *retryAfterError
	if errors.As(err, &r) {
		return r.after, true
	}
	return 0, false
}

// PanicError is what Dispatch returns when a handler panics: the panic is
// recovered so one bad job cannot take the worker down, counted, and turned
// into a retryable failure (a panic may come from a transient state; QStash's
// retry budget bounds the damage). Log Stack on the HTTP side.
type PanicError struct {
	Job   string // job name
	Value any    // the value passed to panic
	Stack []byte // the goroutine's stack at the panic
}

func (e *PanicError) Error() string { return fmt.Sprintf("jobs: %s: panic: %v", e.Job, e.Value) }

// Unwrap exposes the panic value when it is an error.
func (e *PanicError) Unwrap() error {
	if err, ok := e.Value.(error); ok {
		return err
	}
	return nil
}

// class is the kind of answer an error from Dispatch calls for; it labels
// the dispatch metrics. The HTTP answer itself is package worker's.
type class int

const (
	classOK        class = iota // done (nil error)
	classRetry                  // transient failure: QStash retries
	classPermanent              // retrying cannot help: dead-letter now
)

// String returns "ok", "retry" or "permanent" (the metric label).
func (c class) String() string {
	switch c {
	case classOK:
		return "ok"
	case classRetry:
		return "retry"
	case classPermanent:
		return "permanent"
	}
	return "class(" + strconv.Itoa(int(c)) + ")"
}

// classify sorts an error returned by Dispatch: nil is classOK, an error
// marked Permanent is classPermanent, anything else (handler errors,
// timeouts, panics) is classRetry.
func classify(err error) class {
	switch {
	case err == nil:
		return classOK
	case IsPermanent(err):
		return classPermanent
	default:
		return classRetry
	}
}

// PublishError is the error Enqueue and EnqueueBatch return when QStash
// refused the request or could not be reached. It matches ErrPublish with
// errors.Is, and whatever caused it (e.g. context.DeadlineExceeded).
type PublishError struct {
	// Job is the job name, or "batch" for EnqueueBatch.
	Job string
	// StatusCode is QStash's HTTP status (a 2xx when a batch was accepted
	// but some items failed), or 0 when no complete answer arrived (network
	// error, timeout, cancellation): the publish may still have landed, so
	// retry with the same deduplication id.
	StatusCode int
	// RetryAfter is QStash's Retry-After on a 429/503, when it sent one.
	RetryAfter time.Duration
	// Err is the underlying error (QStash's error text for a 4xx/5xx).
	Err error
}

func (e *PublishError) Error() string {
	if e.StatusCode == 0 {
		return fmt.Sprintf("jobs: publish %s: %v", e.Job, e.Err)
	}
	return fmt.Sprintf("jobs: publish %s: qstash answered %d: %v", e.Job, e.StatusCode, e.Err)
}

// Unwrap lets errors.Is match both ErrPublish and the cause.
func (e *PublishError) Unwrap() []error { return []error{ErrPublish, e.Err} }

// Temporary reports whether trying again later may succeed: no answer, 429,
// or a 5xx. A 4xx other than 429 is a bug in the request.
func (e *PublishError) Temporary() bool {
	return e.StatusCode == 0 || e.StatusCode == http.StatusTooManyRequests || e.StatusCode >= 500
}
