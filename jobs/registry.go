package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Job is one delivery of a job to its handler: the decoded payload and what
// QStash said about the attempt.
type Job[T Args] struct {
	// Args is the decoded payload.
	Args T
	// Delivery holds the message id, attempt count, etc.
	Delivery
}

// HandlerFunc runs one job. Return nil when done; Permanent(err) when
// retrying cannot help; RetryAfter(d, err) to be retried no sooner than d;
// any other error to be retried with QStash's backoff. Delivery is
// at-least-once: a handler must tolerate running twice for one MessageID
// (the worker dedupes, but a crash between the effect and the record can
// still repeat it).
type HandlerFunc[T Args] func(ctx context.Context, job *Job[T]) error

// HandlerOption configures one registered handler.
type HandlerOption interface{ applyHandler(*handlerSettings) }

type handlerSettings struct {
	timeout time.Duration
	strict  bool
}

type handlerOptionFunc func(*handlerSettings)

func (f handlerOptionFunc) applyHandler(s *handlerSettings) { f(s) }

// WithHandlerTimeout bounds each run of this handler with a context deadline
// (instead of RegistryConfig.DefaultTimeout). The handler must watch ctx:
// Dispatch does not abandon a handler that ignores it. Keep it below the
// QStash timeout (WithTimeout, or the plan's limit) and below the worker's
// idempotency lease, or QStash retries a message that is still running.
func WithHandlerTimeout(d time.Duration) HandlerOption {
	return handlerOptionFunc(func(s *handlerSettings) { s.timeout = d })
}

// WithDisallowUnknownFields makes payload decoding reject JSON fields the
// args type does not have (a bad payload: permanent). Off by default so that
// during a rolling deploy an older worker still runs jobs a newer API
// enqueued with an added field.
func WithDisallowUnknownFields() HandlerOption {
	return handlerOptionFunc(func(s *handlerSettings) { s.strict = true })
}

// RegistryConfig configures a Registry. The zero value is valid.
type RegistryConfig struct {
	// DefaultTimeout bounds each handler run unless the handler was
	// registered WithHandlerTimeout. Defaults to 60 seconds.
	DefaultTimeout time.Duration
	// Registerer receives the dispatch metrics
	// (jobworker_jobs_handled_total{job,outcome},
	// jobworker_jobs_handle_duration_seconds{job}). Defaults to nil: no
	// metrics are registered anywhere.
	Registerer prometheus.Registerer
}

// DefaultHandlerTimeout is RegistryConfig.DefaultTimeout's default.
const DefaultHandlerTimeout = 60 * time.Second

// Validate reports a negative timeout.
func (c RegistryConfig) Validate() error {
	if c.DefaultTimeout < 0 {
		return &ConfigError{Field: "RegistryConfig.DefaultTimeout", Reason: "must not be negative, got " + c.DefaultTimeout.String()}
	}
	return nil
}

// Registry routes deliveries to typed handlers by job name. It is safe for
// concurrent use; register handlers at start-up, before serving.
type Registry struct {
	timeout time.Duration
	metrics *dispatchMetrics

	mu       sync.RWMutex
	handlers map[string]*handler
	periodic []Periodic
}

type handler struct {
	timeout time.Duration
	run     func(ctx context.Context, d Delivery, body []byte) error
	ok      jobMetrics // the common outcome's children, resolved once
}

// NewRegistry returns an empty Registry.
func NewRegistry(cfg RegistryConfig) (*Registry, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.DefaultTimeout == 0 {
		cfg.DefaultTimeout = DefaultHandlerTimeout
	}
	m, err := newDispatchMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Registry{timeout: cfg.DefaultTimeout, metrics: m, handlers: map[string]*handler{}}, nil
}

// Register adds the handler for job type T under T's Kind. It fails with
// ErrInvalidName for a bad name and ErrDuplicateJob when the name is taken.
//
// T must be a concrete type (a struct, or a pointer to one) whose JSON
// encoding is the payload.
func Register[T Args](r *Registry, h HandlerFunc[T], opts ...HandlerOption) error {
	if r == nil || h == nil {
		return errors.New("jobs: Register needs a registry and a handler")
	}
	if reflect.TypeFor[T]().Kind() == reflect.Interface {
		return fmt.Errorf("jobs: Register needs a concrete args type, got interface %s", reflect.TypeFor[T]())
	}
	name := kindOf[T]()
	if err := ValidateName(name); err != nil {
		return err
	}
	s := handlerSettings{timeout: r.timeout}
	for _, o := range opts {
		o.applyHandler(&s)
	}
	if s.timeout <= 0 {
		return fmt.Errorf("jobs: %s: handler timeout must be positive, got %s", name, s.timeout)
	}
	entry := &handler{timeout: s.timeout, run: typedRunner(name, h, s.strict), ok: r.metrics.forJob(name)}

	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.handlers[name]; dup {
		return fmt.Errorf("%w: %q", ErrDuplicateJob, name)
	}
	r.handlers[name] = entry
	return nil
}

// typedRunner closes over T so Dispatch can stay non-generic.
func typedRunner[T Args](name string, h HandlerFunc[T], strict bool) func(context.Context, Delivery, []byte) error {
	return func(ctx context.Context, d Delivery, body []byte) (err error) {
		// Armed first: a Validate method can panic too.
		defer func() {
			if p := recover(); p != nil {
				err = &PanicError{Job: name, Value: p, Stack: debug.Stack()}
			}
		}()
		job := &Job[T]{Delivery: d}
		if err := decodePayload(body, &job.Args, strict); err != nil {
			return Permanent(fmt.Errorf("%w: %s: %w", ErrBadPayload, name, err))
		}
		if v, ok := any(job.Args).(validator); ok {
			if err := v.Validate(); err != nil {
				return Permanent(fmt.Errorf("%w: %s: %w", ErrBadPayload, name, err))
			}
		}
		if err := h(ctx, job); err != nil {
			return fmt.Errorf("jobs: %s: %w", name, err)
		}
		return nil
	}
}

// decodePayload is encoding/json; an empty body and trailing data after the
// JSON value are errors (json.Unmarshal rejects the latter by itself; the
// Decoder needed for DisallowUnknownFields does not).
func decodePayload(body []byte, v any, strict bool) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return errors.New("empty body")
	}
	if !strict {
		return json.Unmarshal(body, v)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// Dispatch runs the handler registered for name with the delivery's body and
// returns its result (package worker turns it into the HTTP answer).
//
//   - unknown name: Permanent, wrapping ErrUnknownJob;
//   - body not valid JSON for the args type, or its Validate method fails:
//     Permanent, wrapping ErrBadPayload (unknown fields are ignored unless
//     the handler was registered WithDisallowUnknownFields);
//   - the handler runs with the job's timeout as a context deadline and
//     d.Traceparent on the context (see TraceparentFromContext);
//   - a handler panic is recovered and returned as a *PanicError (retry);
//   - a handler error is returned wrapped with the job name, so errors.Is,
//     IsPermanent and RetryAfterOf still see what the handler returned.
//
// Dispatch logs nothing: the caller logs the error with its request context.
// Capping the body size is the HTTP layer's job.
func (r *Registry) Dispatch(ctx context.Context, name string, d Delivery, body []byte) error {
	r.mu.RLock()
	h := r.handlers[name]
	r.mu.RUnlock()
	if h == nil {
		// An unregistered name is caller-controlled text: never a label.
		r.metrics.observe("_unknown", classPermanent, false, 0)
		return Permanent(fmt.Errorf("%w: %q", ErrUnknownJob, name))
	}
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	if d.Traceparent != "" {
		ctx = WithTraceparent(ctx, d.Traceparent)
	}
	start := time.Now()
	err := h.run(ctx, d, body)
	if err == nil {
		h.ok.observe(time.Since(start))
		return nil
	}
	var pe *PanicError
	r.metrics.observe(name, classify(err), errors.As(err, &pe), time.Since(start))
	return err
}

// Kinds returns the registered job names, sorted.
func (r *Registry) Kinds() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.handlers))
	for n := range r.handlers {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Timeout returns the handler timeout of the named job, e.g. to size the
// worker's idempotency lease so it outlives a run.
func (r *Registry) Timeout(name string) (time.Duration, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if h := r.handlers[name]; h != nil {
		return h.timeout, true
	}
	return 0, false
}
