package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	qstash "github.com/upstash/qstash-go"

	"github.com/digis/jobworker/internal/publicurl"
)

// PathPrefix is the path, below ClientConfig.WorkerPublicURL, under which
// jobs are delivered: $WORKER_PUBLIC_URL/jobs/<kind>. The worker routes
// POST PathPrefix+":name" to Registry.Dispatch.
const PathPrefix = "/jobs/"

// DefaultQStashURL is ClientConfig.QStashURL's default.
const DefaultQStashURL = "https://qstash.upstash.io"

// DefaultPublishTimeout bounds one publish call unless ClientConfig says otherwise.
const DefaultPublishTimeout = 10 * time.Second

// ClientConfig configures a Client.
type ClientConfig struct {
	// QStashURL is the QStash API base URL (QSTASH_URL), e.g. a region's
	// URL or a local qstashdev server. It wins over the QSTASH_URL
	// environment variable that qstash-go would otherwise prefer. Defaults
	// to DefaultQStashURL.
	QStashURL string
	// Token is the QStash token (QSTASH_TOKEN). Required. Never logged.
	Token string
	// WorkerPublicURL is the public base URL of the worker
	// (WORKER_PUBLIC_URL), e.g. "https://worker.example.com"; a job named
	// k is delivered to WorkerPublicURL + PathPrefix + k. Absolute http(s),
	// no query, fragment or credentials. Required.
	WorkerPublicURL string
	// HTTPClient carries the publish requests. Its Transport, redirect policy
	// and cookie jar are used; its Timeout becomes the default of Timeout.
	// Defaults to a client with connect, TLS and response-header timeouts.
	HTTPClient *http.Client
	// Timeout bounds one Enqueue or EnqueueBatch call (on top of the
	// caller's context). Defaults to HTTPClient.Timeout when set, else
	// DefaultPublishTimeout.
	Timeout time.Duration
	// Logger receives a line per publish: debug on success, warn on
	// failure (job name, message id, status; never the token or payload).
	// Defaults to discarding.
	Logger *slog.Logger
	// Registerer receives jobworker_jobs_enqueued_total{job,result} and
	// jobworker_jobs_publish_duration_seconds{call,result}. Defaults to nil:
	// no metrics are registered anywhere.
	Registerer prometheus.Registerer
}

// Validate reports missing or malformed fields, each a *ConfigError
// (joined when several are wrong).
func (c ClientConfig) Validate() error {
	var errs []error
	bad := func(field, reason string) {
		errs = append(errs, &ConfigError{Field: "ClientConfig." + field, Reason: reason})
	}
	if c.Token == "" {
		bad("Token", "is required")
	}
	if c.QStashURL != "" {
		if _, err := parseBaseURL(c.QStashURL); err != nil {
			bad("QStashURL", urlReason(err))
		}
	}
	if c.WorkerPublicURL == "" {
		bad("WorkerPublicURL", "is required")
	} else if _, err := parseBaseURL(c.WorkerPublicURL); err != nil {
		bad("WorkerPublicURL", urlReason(err))
	}
	if c.Timeout < 0 {
		bad("Timeout", "must not be negative, got "+c.Timeout.String())
	}
	return errors.Join(errs...)
}

// parseBaseURL applies the one rule for base URLs the worker and the
// verifier apply too (absolute http(s), no credentials, query or fragment).
func parseBaseURL(raw string) (*url.URL, error) {
	base, err := publicurl.Parse(raw)
	if err != nil {
		return nil, err
	}
	return url.Parse(base)
}

func urlReason(err error) string {
	var pe *publicurl.Error
	if errors.As(err, &pe) {
		return pe.Reason
	}
	return "is not a valid base URL"
}

// Client enqueues jobs by publishing them to QStash with qstash-go. It is
// safe for concurrent use.
type Client struct {
	token       string
	qstashURL   string
	target      *url.URL
	destination string // WorkerPublicURL + PathPrefix, without the name
	transport   http.RoundTripper
	redirect    func(*http.Request, []*http.Request) error
	jar         http.CookieJar
	timeout     time.Duration
	log         *slog.Logger
	metrics     *clientMetrics
}

// NewClient validates cfg and returns a Client.
func NewClient(cfg ClientConfig) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.QStashURL == "" {
		cfg.QStashURL = DefaultQStashURL
	}
	target, _ := parseBaseURL(cfg.QStashURL)
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: defaultTransport()}
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = hc.Timeout
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultPublishTimeout
	}
	rt := hc.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := newClientMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Client{
		token:       cfg.Token,
		qstashURL:   strings.TrimSuffix(cfg.QStashURL, "/"),
		target:      target,
		destination: strings.TrimSuffix(cfg.WorkerPublicURL, "/") + PathPrefix,
		transport:   rt,
		redirect:    hc.CheckRedirect,
		jar:         hc.Jar,
		timeout:     cfg.Timeout,
		log:         logger,
		metrics:     m,
	}, nil
}

func defaultTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 5 * time.Second
	t.ResponseHeaderTimeout = DefaultPublishTimeout
	t.MaxIdleConnsPerHost = 32
	return t
}

// Destination returns the URL QStash delivers the named job to.
func (c *Client) Destination(kind string) string { return c.destination + kind }

// EnqueueResult is what QStash answered to one publish.
type EnqueueResult struct {
	// MessageID is QStash's id for the message (on a deduplicated publish:
	// the id of the message that was published first).
	MessageID string
	// Deduplicated is true when QStash dropped the publish as a duplicate.
	Deduplicated bool
}

// EnqueueRequest is one job of an EnqueueBatch.
type EnqueueRequest struct {
	Args    Args
	Options []EnqueueOption
}

// prepared is one publish, validated and encoded.
type prepared struct {
	kind  string
	body  string
	s     enqueueSettings
	extra map[string]string // headers qstash-go cannot set
	fwd   map[string]string // headers to forward to the worker
}

func prepare(ctx context.Context, args Args, opts []EnqueueOption) (*prepared, error) {
	if args == nil {
		return nil, fmt.Errorf("%w: nil args", ErrInvalidOption)
	}
	kind := args.Kind()
	if err := ValidateName(kind); err != nil {
		return nil, err
	}
	p := &prepared{kind: kind}
	if d, ok := args.(ArgsWithDefaults); ok {
		for _, o := range d.EnqueueDefaults() {
			o.applyEnqueue(&p.s)
		}
	}
	for _, o := range opts {
		o.applyEnqueue(&p.s)
	}
	if len(p.s.errs) > 0 {
		return nil, fmt.Errorf("jobs: %s: %w", kind, errors.Join(p.s.errs...))
	}
	if v, ok := args.(validator); ok {
		if err := v.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %s: invalid args: %w", ErrInvalidOption, kind, err)
		}
	}
	body, err := json.Marshal(args)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: encode args: %w", ErrInvalidOption, kind, err)
	}
	p.body = string(body)
	p.finish(TraceparentFromContext(ctx))
	return p, nil
}

// finish derives the headers from the merged settings and the traceparent
// to forward ("" for none).
func (p *prepared) finish(traceparent string) {
	// Forwarded headers are part of QStash's content hash, and every request
	// has its own trace: forwarding it would defeat content-based dedup.
	if traceparent != "" && !p.s.contentDedup {
		p.fwd = map[string]string{"Traceparent": traceparent}
	}
	if p.s.flow != nil || p.s.retryDelay != "" {
		p.extra = map[string]string{}
		if p.s.flow != nil {
			p.extra["Upstash-Flow-Control-Key"] = p.s.flow.Key
			p.extra["Upstash-Flow-Control-Value"] = p.s.flow.value()
		}
		if p.s.retryDelay != "" {
			p.extra["Upstash-Retry-Delay"] = p.s.retryDelay
		}
	}
}

// delay and notBefore render the "when" setting for qstash-go.
func (p *prepared) delay() string {
	if p.s.delay > 0 {
		return seconds(p.s.delay)
	}
	return ""
}

func (p *prepared) notBefore() string {
	if !p.s.notBefore.IsZero() {
		return strconv.FormatInt(p.s.notBefore.Unix(), 10)
	}
	return ""
}

func (p *prepared) timeout() string {
	if p.s.timeout > 0 {
		return seconds(p.s.timeout)
	}
	return ""
}

// call runs fn with a qstash-go client bound to ctx (see callTransport).
// qstash-go's client is a small struct, so one per call costs little and
// keeps concurrent calls apart; connections are pooled in c.transport.
func (c *Client) call(ctx context.Context, t *callTransport, fn func(q *qstash.Client) error) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	t.base, t.ctx, t.target = c.transport, ctx, c.target
	q := qstash.NewClientWith(qstash.Options{
		Url:    c.qstashURL,
		Token:  c.token,
		Client: &http.Client{Transport: t, CheckRedirect: c.redirect, Jar: c.jar},
	})
	return fn(q)
}

func (c *Client) publishError(job string, t *callTransport, err error) *PublishError {
	pe := &PublishError{Job: job, Err: err}
	if t.status >= 300 {
		pe.StatusCode = t.status
		if n, perr := strconv.Atoi(t.retryAfter); perr == nil && n >= 0 {
			pe.RetryAfter = time.Duration(n) * time.Second
		}
	}
	return pe
}

// Enqueue publishes one job to QStash for delivery to
// Destination(args.Kind()), applying the args type's EnqueueDefaults and
// then opts. The JSON encoding of args is the body; a traceparent set with
// WithTraceparent on ctx is forwarded.
//
// Errors: ErrInvalidName / ErrInvalidOption before anything is sent;
// otherwise a *PublishError (errors.Is ErrPublish). Cancelling ctx, or the
// client's Timeout, aborts the request at once — but QStash may already have
// accepted it, so a caller that retries should pass WithDeduplicationID.
// Enqueue does not retry by itself for the same reason.
func (c *Client) Enqueue(ctx context.Context, args Args, opts ...EnqueueOption) (EnqueueResult, error) {
	p, err := prepare(ctx, args, opts)
	if err != nil {
		c.countInvalid(args)
		return EnqueueResult{}, err
	}
	return c.publish(ctx, p)
}

// publish sends one prepared job (Enqueue, PublishMessage).
func (c *Client) publish(ctx context.Context, p *prepared) (EnqueueResult, error) {
	po := qstash.PublishOptions{
		Url:                       c.Destination(p.kind),
		Body:                      p.body,
		ContentType:               "application/json",
		Headers:                   p.fwd,
		Retries:                   p.s.retries,
		Callback:                  p.s.callback,
		FailureCallback:           p.s.failureCB,
		Delay:                     p.delay(),
		NotBefore:                 p.notBefore(),
		DeduplicationId:           p.s.dedupID,
		ContentBasedDeduplication: p.s.contentDedup,
		Timeout:                   p.timeout(),
	}
	t := &callTransport{}
	if p.extra != nil {
		t.header = http.Header{}
		for k, v := range p.extra {
			t.header.Set(k, v)
		}
	}
	callName := "publish"
	if p.s.queue != "" {
		callName = "enqueue"
	}
	var res qstash.PublishOrEnqueueResponse
	start := time.Now()
	err := c.call(ctx, t, func(q *qstash.Client) (err error) {
		if p.s.queue != "" {
			res, err = q.Enqueue(qstash.EnqueueOptions{Queue: p.s.queue, PublishOptions: po})
		} else {
			res, err = q.Publish(po)
		}
		return err
	})
	if err == nil && res.MessageId == "" {
		err = errors.New("qstash answered without a message id")
	}
	c.metrics.observe(callName, err == nil, time.Since(start))
	if err != nil {
		pe := c.publishError(p.kind, t, err)
		c.metrics.count(p.kind, resultError)
		c.log.LogAttrs(ctx, slog.LevelWarn, "job publish failed", slog.String("job", p.kind),
			slog.Int("status", pe.StatusCode), slog.String("error", err.Error()))
		return EnqueueResult{}, pe
	}
	c.record(ctx, p.kind, res.MessageId, res.Deduplicated)
	return EnqueueResult{MessageID: res.MessageId, Deduplicated: res.Deduplicated}, nil
}

func (c *Client) countInvalid(args Args) {
	if args != nil {
		c.countInvalidKind(args.Kind())
	}
}

func (c *Client) countInvalidKind(kind string) {
	// Only a valid name may become a label.
	if ValidateName(kind) == nil {
		c.metrics.count(kind, resultInvalid)
	}
}

func (c *Client) record(ctx context.Context, kind, id string, dedup bool) {
	result := resultOK
	if dedup {
		result = resultDeduplicated
	}
	c.metrics.count(kind, result)
	c.log.LogAttrs(ctx, slog.LevelDebug, "job published", slog.String("job", kind),
		slog.String("message_id", id), slog.Bool("deduplicated", dedup))
}

// EnqueueBatch publishes several jobs in one QStash call (POST /v2/batch),
// each with its own options, and returns one result per request, in order.
// Nothing is sent when any request is invalid. When QStash rejects the whole
// call the error is a *PublishError; when it accepts the call but answers
// some items without a message id, the results of the others are still
// returned, with an error (errors.Is ErrPublish) naming the failed items.
// Cancellation behaves as in Enqueue.
func (c *Client) EnqueueBatch(ctx context.Context, reqs []EnqueueRequest) ([]EnqueueResult, error) {
	if len(reqs) == 0 {
		return nil, nil
	}
	ps := make([]*prepared, len(reqs))
	for i, r := range reqs {
		p, err := prepare(ctx, r.Args, r.Options)
		if err != nil {
			c.countInvalid(r.Args)
			return nil, fmt.Errorf("jobs: batch request %d: %w", i, err)
		}
		ps[i] = p
	}
	return c.publishBatch(ctx, ps)
}

// publishBatch sends prepared jobs in one batch call (EnqueueBatch,
// PublishMessages).
func (c *Client) publishBatch(ctx context.Context, ps []*prepared) ([]EnqueueResult, error) {
	items := make([]qstash.BatchOptions, len(ps))
	t := &callTransport{batch: make([]map[string]string, len(ps))}
	for i, p := range ps {
		t.batch[i] = p.extra
		items[i] = qstash.BatchOptions{
			Queue:                     p.s.queue,
			Url:                       c.Destination(p.kind),
			Body:                      p.body,
			ContentType:               "application/json",
			Headers:                   p.fwd,
			Retries:                   p.s.retries,
			Callback:                  p.s.callback,
			FailureCallback:           p.s.failureCB,
			Delay:                     p.delay(),
			NotBefore:                 p.notBefore(),
			DeduplicationId:           p.s.dedupID,
			ContentBasedDeduplication: p.s.contentDedup,
			Timeout:                   p.timeout(),
		}
	}
	var res [][]qstash.PublishOrEnqueueResponse
	start := time.Now()
	err := c.call(ctx, t, func(q *qstash.Client) (err error) {
		res, err = q.Batch(items)
		return err
	})
	if err == nil && len(res) != len(ps) {
		err = fmt.Errorf("qstash answered %d results for %d messages", len(res), len(ps))
	}
	c.metrics.observe("batch", err == nil, time.Since(start))
	if err != nil {
		for _, p := range ps {
			c.metrics.count(p.kind, resultError)
		}
		pe := c.publishError("batch", t, err)
		c.log.LogAttrs(ctx, slog.LevelWarn, "job batch publish failed", slog.Int("messages", len(ps)),
			slog.Int("status", pe.StatusCode), slog.String("error", err.Error()))
		return nil, pe
	}
	out := make([]EnqueueResult, len(ps))
	var failed []error
	for i, r := range res {
		kind := ps[i].kind
		if len(r) == 0 || r[0].MessageId == "" {
			c.metrics.count(kind, resultError)
			failed = append(failed, fmt.Errorf("request %d (%s): no message id", i, kind))
			continue
		}
		out[i] = EnqueueResult{MessageID: r[0].MessageId, Deduplicated: r[0].Deduplicated}
		c.record(ctx, kind, r[0].MessageId, r[0].Deduplicated)
	}
	if len(failed) > 0 {
		err := &PublishError{Job: "batch", StatusCode: t.status, Err: errors.Join(failed...)}
		c.log.LogAttrs(ctx, slog.LevelWarn, "job batch partly failed", slog.Int("messages", len(ps)),
			slog.Int("failed", len(failed)))
		return out, err
	}
	return out, nil
}
