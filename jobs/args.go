package jobs

import (
	"fmt"
	"reflect"
)

// Args is implemented by every job payload type. Kind returns the job's
// stable name: it is the last path segment of the URL QStash delivers to
// ($WORKER_PUBLIC_URL/jobs/<kind>), the routing key in a Registry and a
// metric label, so it must never change once jobs with it may be in flight.
//
// Kind must return a constant that does not read the receiver: the registry
// calls it on the zero value. Implement it on the value type:
//
//	type NotifyFollowers struct{ StreamID string `json:"stream_id"` }
//
//	func (NotifyFollowers) Kind() string { return "streams.notify-followers" }
//
// The payload travels as the JSON encoding of the value (encoding/json).
type Args interface {
	Kind() string
}

// ArgsWithDefaults is implemented by job types that declare their enqueue
// defaults (retries, delay, timeout, deduplication, flow control, ...) next to
// the payload, so every process that enqueues the job agrees on them without
// sharing a registry. Options given to Enqueue are applied after these and win.
//
// The method is called on the value being enqueued, so a default may depend
// on the payload, e.g. a deduplication id built from its ids:
//
//	func (a NotifyFollowers) EnqueueDefaults() []jobs.EnqueueOption {
//		return []jobs.EnqueueOption{
//			jobs.WithRetries(5),
//			jobs.WithDeduplicationID("notify-followers:" + a.StreamID),
//		}
//	}
type ArgsWithDefaults interface {
	Args
	EnqueueDefaults() []EnqueueOption
}

// validator is the optional payload check. When the args type has a
// Validate() error method, Enqueue calls it before publishing (a bug is
// caught in the API, not in the DLQ) and Dispatch calls it after decoding
// (a failure there is a bad payload: permanent).
type validator interface {
	Validate() error
}

// MaxNameLength is the longest job name ValidateName accepts.
const MaxNameLength = 100

// ValidateName reports whether name is a valid job name: 1 to MaxNameLength
// characters, lowercase ASCII letters and digits in segments joined by single
// '.', '-' or '_', starting with a letter ("streams.notify-followers",
// "tips.settle", "stripe.event"). Such names are safe as a URL path segment
// without escaping, as a Prometheus label value and in logs. Uppercase is
// rejected so that two spellings can never name two different jobs.
// The returned error wraps ErrInvalidName.
func ValidateName(name string) error {
	if len(name) == 0 || len(name) > MaxNameLength {
		return fmt.Errorf("%w: %q must be 1 to %d characters", ErrInvalidName, name, MaxNameLength)
	}
	prevSep := true // a name may not start with a separator
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z':
			prevSep = false
		case c >= '0' && c <= '9':
			if i == 0 {
				return fmt.Errorf("%w: %q must start with a letter", ErrInvalidName, name)
			}
			prevSep = false
		case c == '.' || c == '-' || c == '_':
			if prevSep {
				return fmt.Errorf("%w: %q has a separator at the start or twice in a row", ErrInvalidName, name)
			}
			prevSep = true
		default:
			return fmt.Errorf("%w: %q may only hold a-z, 0-9, '.', '-' and '_'", ErrInvalidName, name)
		}
	}
	if prevSep {
		return fmt.Errorf("%w: %q ends with a separator", ErrInvalidName, name)
	}
	return nil
}

// kindOf returns the Kind of T without a value at hand. For a pointer type
// the zero value is nil, so it calls Kind on a fresh element instead: a
// pointer-receiver Kind would otherwise dereference nil.
func kindOf[T Args]() string {
	var zero T
	if t := reflect.TypeFor[T](); t.Kind() == reflect.Pointer {
		return reflect.New(t.Elem()).Interface().(T).Kind()
	}
	return zero.Kind()
}
