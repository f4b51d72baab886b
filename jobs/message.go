package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Message is a job validated and encoded for publishing later: what Enqueue
// would send, as plain data. It marshals to JSON, so it can be stored — in
// a transactional outbox, for example — and handed to PublishMessage or
// PublishMessages by another process. PrepareMessage builds one.
type Message struct {
	// Kind is the job name (Args.Kind).
	Kind string `json:"kind"`
	// Body is the JSON encoding of the args, byte for byte as sent.
	Body string `json:"body"`
	// Options are the merged enqueue settings (type defaults, then the
	// call's options).
	Options MessageOptions `json:"options"`
}

// MessageOptions are the publish settings of a Message, one field per
// EnqueueOption; zero values mean "not set". Durations are nanoseconds in
// JSON.
type MessageOptions struct {
	Delay                     time.Duration `json:"delay,omitempty"`
	NotBefore                 time.Time     `json:"not_before,omitzero"`
	Retries                   *int          `json:"retries,omitempty"`
	RetryDelay                string        `json:"retry_delay,omitempty"`
	DeduplicationID           string        `json:"deduplication_id,omitempty"`
	ContentBasedDeduplication bool          `json:"content_based_deduplication,omitempty"`
	Callback                  string        `json:"callback,omitempty"`
	FailureCallback           string        `json:"failure_callback,omitempty"`
	FlowControl               *FlowControl  `json:"flow_control,omitempty"`
	Timeout                   time.Duration `json:"timeout,omitempty"`
	Queue                     string        `json:"queue,omitempty"`
	// Traceparent is forwarded to the delivery (see WithTraceparent). It is
	// dropped under content-based deduplication, as in Enqueue.
	Traceparent string `json:"traceparent,omitempty"`
}

// PrepareMessage does everything Enqueue does before sending — the args
// type's EnqueueDefaults, then opts, the args' Validate method, the JSON
// encoding, the traceparent on ctx — and returns the result instead of
// publishing it. Errors are Enqueue's: ErrInvalidName or ErrInvalidOption.
func PrepareMessage(ctx context.Context, args Args, opts ...EnqueueOption) (Message, error) {
	p, err := prepare(ctx, args, opts)
	if err != nil {
		return Message{}, err
	}
	s := p.s
	m := Message{Kind: p.kind, Body: p.body, Options: MessageOptions{
		Delay: s.delay, NotBefore: s.notBefore, Retries: s.retries, RetryDelay: s.retryDelay,
		DeduplicationID: s.dedupID, ContentBasedDeduplication: s.contentDedup,
		Callback: s.callback, FailureCallback: s.failureCB, FlowControl: s.flow,
		Timeout: s.timeout, Queue: s.queue, Traceparent: p.fwd["Traceparent"],
	}}
	return m, nil
}

// enqueueOptions turns o back into the options it stands for, so a stored
// Message is checked by the same code as a fresh Enqueue.
func (o MessageOptions) enqueueOptions() []EnqueueOption {
	var opts []EnqueueOption
	add := func(ok bool, opt EnqueueOption) {
		if ok {
			opts = append(opts, opt)
		}
	}
	add(o.Delay != 0, WithDelay(o.Delay))
	add(!o.NotBefore.IsZero(), WithNotBefore(o.NotBefore))
	if o.Retries != nil {
		opts = append(opts, WithRetries(*o.Retries))
	}
	add(o.RetryDelay != "", WithRetryDelay(o.RetryDelay))
	add(o.DeduplicationID != "", WithDeduplicationID(o.DeduplicationID))
	add(o.ContentBasedDeduplication, WithContentBasedDeduplication())
	add(o.Callback != "", WithCallback(o.Callback))
	add(o.FailureCallback != "", WithFailureCallback(o.FailureCallback))
	if o.FlowControl != nil {
		opts = append(opts, WithFlowControl(*o.FlowControl))
	}
	add(o.Timeout != 0, WithTimeout(o.Timeout))
	add(o.Queue != "", WithQueue(o.Queue))
	return opts
}

// Validate reports whether m can be published: a valid Kind, a JSON Body,
// and options Enqueue would accept (at most one of Delay and NotBefore, at
// most one deduplication mode). The error wraps ErrInvalidName or
// ErrInvalidOption.
func (m Message) Validate() error {
	_, err := m.prepared()
	return err
}

func (m Message) prepared() (*prepared, error) {
	if err := ValidateName(m.Kind); err != nil {
		return nil, err
	}
	o := m.Options
	var errs []error
	if !json.Valid([]byte(m.Body)) {
		errs = append(errs, fmt.Errorf("%w: body is not JSON", ErrInvalidOption))
	}
	if o.Delay != 0 && !o.NotBefore.IsZero() {
		errs = append(errs, fmt.Errorf("%w: both delay and not-before are set", ErrInvalidOption))
	}
	if o.DeduplicationID != "" && o.ContentBasedDeduplication {
		errs = append(errs, fmt.Errorf("%w: both a deduplication id and content-based deduplication are set", ErrInvalidOption))
	}
	if o.Traceparent != "" && !validTraceparent(o.Traceparent) {
		errs = append(errs, fmt.Errorf("%w: malformed traceparent", ErrInvalidOption))
	}
	p := &prepared{kind: m.Kind, body: m.Body}
	for _, opt := range o.enqueueOptions() {
		opt.applyEnqueue(&p.s)
	}
	errs = append(errs, p.s.errs...)
	if len(errs) > 0 {
		return nil, fmt.Errorf("jobs: %s: %w", m.Kind, errors.Join(errs...))
	}
	p.finish(o.Traceparent)
	return p, nil
}

// PublishMessage publishes one prepared message, exactly as Enqueue would
// have published the job it was prepared from. The message is validated
// again first (it may have been stored by another version). Errors and
// cancellation behave as in Enqueue.
func (c *Client) PublishMessage(ctx context.Context, m Message) (EnqueueResult, error) {
	p, err := m.prepared()
	if err != nil {
		c.countInvalidKind(m.Kind)
		return EnqueueResult{}, err
	}
	return c.publish(ctx, p)
}

// PublishMessages publishes prepared messages in one QStash call
// (POST /v2/batch), as EnqueueBatch does, with the same results and errors.
// Nothing is sent when any message is invalid.
func (c *Client) PublishMessages(ctx context.Context, msgs []Message) ([]EnqueueResult, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	ps := make([]*prepared, len(msgs))
	for i, m := range msgs {
		p, err := m.prepared()
		if err != nil {
			c.countInvalidKind(m.Kind)
			return nil, fmt.Errorf("jobs: batch message %d: %w", i, err)
		}
		ps[i] = p
	}
	return c.publishBatch(ctx, ps)
}

// Header returns the QStash configuration headers that publish m's options
// (docs/qstash-protocol.md §3.3): Upstash-Retries, -Delay, -Not-Before,
// -Timeout, -Retry-Delay, -Callback, -Failure-Callback, -Flow-Control-*,
// -Deduplication-Id, -Content-Based-Deduplication, -Queue-Name (read by the
// schedule and enqueue calls), the forwarded traceparent and the JSON
// content type. It is what a raw call, such as a schedule's creation, sends
// to configure the messages it makes.
func (m Message) Header() http.Header {
	h := http.Header{"Content-Type": {"application/json"}}
	o := m.Options
	set := func(ok bool, name, v string) {
		if ok {
			h.Set(name, v)
		}
	}
	if o.Retries != nil {
		h.Set("Upstash-Retries", strconv.Itoa(*o.Retries))
	}
	set(o.Delay > 0, "Upstash-Delay", seconds(o.Delay))
	set(!o.NotBefore.IsZero(), "Upstash-Not-Before", strconv.FormatInt(o.NotBefore.Unix(), 10))
	set(o.Timeout > 0, "Upstash-Timeout", seconds(o.Timeout))
	set(o.RetryDelay != "", "Upstash-Retry-Delay", o.RetryDelay)
	set(o.Callback != "", "Upstash-Callback", o.Callback)
	set(o.FailureCallback != "", "Upstash-Failure-Callback", o.FailureCallback)
	if fc := o.FlowControl; fc != nil {
		h.Set("Upstash-Flow-Control-Key", fc.Key)
		h.Set("Upstash-Flow-Control-Value", fc.value())
	}
	set(o.DeduplicationID != "", "Upstash-Deduplication-Id", o.DeduplicationID)
	set(o.ContentBasedDeduplication, "Upstash-Content-Based-Deduplication", "true")
	set(o.Queue != "", "Upstash-Queue-Name", o.Queue)
	set(o.Traceparent != "" && !o.ContentBasedDeduplication, "Upstash-Forward-Traceparent", o.Traceparent)
	return h
}
