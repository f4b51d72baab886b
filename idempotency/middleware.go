package idempotency

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/digis/jobworker/internal/problem"
)

// Response headers.
const (
	// HeaderIdempotencyKey is the request header the client sends.
	HeaderIdempotencyKey = "Idempotency-Key"
	// HeaderReplayed is set to "true" on every replayed response.
	HeaderReplayed = "Idempotent-Replayed"
)

// MiddlewareConfig configures the Idempotency-Key middleware.
//
// Place it after authentication, rate limiting and body limits (so 401s,
// 429s and 413s never touch a key) and only on routes that opt in, e.g.
//
//	api.POST("/tips/quick", handler, mw)
type MiddlewareConfig struct {
	// Skipper defines a function to skip the middleware. Defaults to
	// skipping the safe methods GET, HEAD, OPTIONS and TRACE, which are
	// idempotent by definition.
	Skipper middleware.Skipper
	// Store holds leases and results. Required. Its LeaseTTL and ResultTTL
	// are the middleware's two TTLs; its Namespace separates the keys (e.g.
	// "http").
	Store *Store
	// Principal returns who is calling (the authenticated user or account
	// id), set by the auth middleware that runs before this one. Required.
	// An empty principal is refused with 401: money routes are never
	// anonymous. For a route without login, return a server-issued
	// identity (a session id), never a client-chosen one.
	Principal func(c echo.Context) string
	// MaxKeyLength caps the key's decoded length. Defaults to 255.
	MaxKeyLength int
	// MaxBodyBytes caps the request body read for the fingerprint; a larger
	// body is answered 413 before anything is claimed. Defaults to 1 MiB.
	MaxBodyBytes int64
	// MaxResponseBytes caps the stored response body. A larger (or a
	// streamed) response still reaches the client, but what is stored and
	// replayed is its status with a problem body saying it was not kept.
	// Defaults to 256 KiB.
	MaxResponseBytes int
	// ReplayHeaders are the response headers stored and replayed besides
	// the status and body. Set-Cookie is refused: a replay must never hand
	// out a session. Defaults to Content-Type and Location.
	ReplayHeaders []string
	// ConflictRetryAfter is the Retry-After sent with 409 while another
	// request holds the key. The holder renews its lease, so the lease's
	// remaining TTL says nothing about when it finishes; a short fixed hint
	// suits the typical sub-second handler. Defaults to 1s.
	ConflictRetryAfter time.Duration
	// UnavailableRetryAfter is the Retry-After sent with 503 when Redis is
	// unreachable. Defaults to 2s.
	UnavailableRetryAfter time.Duration
	// Logger receives one line per decision that needs attention. Defaults
	// to discarding.
	Logger *slog.Logger
	// Registerer receives the metrics. Defaults to nil: not registered.
	Registerer prometheus.Registerer
}

// DefaultMiddlewareConfig holds the defaults; Store and Principal must be
// set by the caller.
var DefaultMiddlewareConfig = MiddlewareConfig{
	Skipper:               skipSafeMethods,
	MaxKeyLength:          255,
	MaxBodyBytes:          1 << 20,
	MaxResponseBytes:      256 << 10,
	ReplayHeaders:         []string{echo.HeaderContentType, echo.HeaderLocation},
	ConflictRetryAfter:    time.Second,
	UnavailableRetryAfter: 2 * time.Second,
}

func skipSafeMethods(c echo.Context) bool {
	switch c.Request().Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// Middleware is MiddlewareConfig{Store: store, Principal: principal}
// with defaults.
func Middleware(store *Store, principal func(echo.Context) string) (echo.MiddlewareFunc, error) {
	cfg := DefaultMiddlewareConfig
	cfg.Store, cfg.Principal = store, principal
	return cfg.ToMiddleware()
}

func (config MiddlewareConfig) withDefaults() MiddlewareConfig {
	d := DefaultMiddlewareConfig
	if config.Skipper == nil {
		config.Skipper = d.Skipper
	}
	if config.MaxKeyLength == 0 {
		config.MaxKeyLength = d.MaxKeyLength
	}
	if config.MaxBodyBytes == 0 {
		config.MaxBodyBytes = d.MaxBodyBytes
	}
	if config.MaxResponseBytes == 0 {
		config.MaxResponseBytes = d.MaxResponseBytes
	}
	if config.ReplayHeaders == nil {
		config.ReplayHeaders = d.ReplayHeaders
	}
	if config.ConflictRetryAfter == 0 {
		config.ConflictRetryAfter = d.ConflictRetryAfter
	}
	if config.UnavailableRetryAfter == 0 {
		config.UnavailableRetryAfter = d.UnavailableRetryAfter
	}
	if config.Logger == nil {
		config.Logger = slog.New(slog.DiscardHandler)
	}
	return config
}

// Validate reports a configuration that cannot work.
func (config MiddlewareConfig) Validate() error {
	c := config.withDefaults()
	switch {
	case c.Store == nil:
		return errors.New("idempotency: MiddlewareConfig.Store is required")
	case c.Principal == nil:
		return errors.New("idempotency: MiddlewareConfig.Principal is required")
	case c.MaxKeyLength < 1 || c.MaxKeyLength > 1024:
		return fmt.Errorf("idempotency: MaxKeyLength %d outside 1..1024", c.MaxKeyLength)
	case c.MaxBodyBytes < 0 || c.MaxResponseBytes < 0:
		return errors.New("idempotency: negative MaxBodyBytes or MaxResponseBytes")
	case c.UnavailableRetryAfter < 0 || c.ConflictRetryAfter < 0:
		return errors.New("idempotency: negative ConflictRetryAfter or UnavailableRetryAfter")
	}
	for _, h := range c.ReplayHeaders {
		if strings.EqualFold(h, "Set-Cookie") {
			return errors.New("idempotency: Set-Cookie must never be stored or replayed")
		}
	}
	return nil
}

// ToMiddleware validates the config and returns the middleware.
func (config MiddlewareConfig) ToMiddleware() (echo.MiddlewareFunc, error) {
	if err := config.Validate(); err != nil {
		return nil, err
	}
	c := config.withDefaults()
	m, err := newMetrics(c.Registerer)
	if err != nil {
		return nil, err
	}
	h := &handler{cfg: c, metrics: m}
	for _, name := range c.ReplayHeaders {
		h.replay = append(h.replay, http.CanonicalHeaderKey(name))
	}
	return h.wrap, nil
}

type handler struct {
	cfg     MiddlewareConfig
	metrics *metrics
	replay  []string
}

type downstreamKeyCtx struct{}

// DownstreamKey returns a stable, server-derived idempotency key for the
// request being handled (same principal, route and Idempotency-Key → same
// value). Pass it to payment providers (Stripe's Idempotency-Key) for any
// charge made inside the handler: if this process dies mid-request, the
// lease expires and the retry runs the handler again, and the provider then
// dedupes the charge. Never forward the client's own key.
func DownstreamKey(ctx context.Context) (string, bool) {
	k, ok := ctx.Value(downstreamKeyCtx{}).(string)
	return k, ok
}

func (h *handler) wrap(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if h.cfg.Skipper(c) {
			return next(c)
		}
		req := c.Request()
		principal := h.cfg.Principal(c)
		if principal == "" {
			return h.refuse(c, outcomeInvalid, http.StatusUnauthorized, "authentication is required to use an Idempotency-Key", 0)
		}
		key, err := parseKey(req.Header.Values(HeaderIdempotencyKey), h.cfg.MaxKeyLength)
		if err != nil {
			return h.refuse(c, outcomeInvalid, http.StatusBadRequest, err.Error(), 0)
		}
		body, status, err := h.readBody(req)
		if err != nil {
			return h.refuse(c, outcomeInvalid, status, err.Error(), 0)
		}
		route := c.Path()
		if route == "" {
			route = req.URL.Path
		}
		skey := scopedKey(principal, req.Method, route, key)
		fp := fingerprint(req.Method, req.URL.RequestURI(), body)

		res, err := h.cfg.Store.Acquire(req.Context(), skey, fp)
		switch {
		case errors.Is(err, ErrFingerprintMismatch):
			return h.refuse(c, outcomeMismatch, http.StatusUnprocessableEntity,
				"this Idempotency-Key was already used with a different request; use a new key", 0)
		case err != nil:
			h.cfg.Logger.LogAttrs(req.Context(), slog.LevelError, "idempotency: store unavailable, refusing",
				slog.String("route", route), slog.String("err", err.Error()))
			return h.refuse(c, outcomeUnavailable, http.StatusServiceUnavailable,
				"the request cannot be made safely right now; retry with the same Idempotency-Key", h.cfg.UnavailableRetryAfter)
		}
		switch res.Outcome {
		case InProgress:
			return h.refuse(c, outcomeConflict, http.StatusConflict,
				"a request with this Idempotency-Key is in progress; retry later with the same key", h.cfg.ConflictRetryAfter)
		case Done:
			return h.replayStored(c, route, res.Value)
		}
		return h.execute(c, next, res.Lease, route, skey, body)
	}
}

func (h *handler) readBody(req *http.Request) ([]byte, int, error) {
	tooLarge := fmt.Errorf("the request body exceeds %d bytes", h.cfg.MaxBodyBytes)
	if req.ContentLength > h.cfg.MaxBodyBytes {
		return nil, http.StatusRequestEntityTooLarge, tooLarge
	}
	if req.Body == nil || req.Body == http.NoBody {
		return nil, 0, nil
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, h.cfg.MaxBodyBytes+1))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, http.StatusRequestEntityTooLarge, tooLarge
	case err != nil:
		return nil, http.StatusBadRequest, errors.New("the request body could not be read")
	case int64(len(body)) > h.cfg.MaxBodyBytes:
		return nil, http.StatusRequestEntityTooLarge, tooLarge
	}
	_ = req.Body.Close()
	req.Body = io.NopCloser(bytes.NewReader(body))
	return body, 0, nil
}

// execute runs the handler under the lease, then records or releases the
// key as decide says and only then sends the response.
func (h *handler) execute(c echo.Context, next echo.HandlerFunc, lease *Lease, route, skey string, body []byte) error {
	req := c.Request()
	resp := c.Response()
	kctx, stop := lease.KeepAlive(req.Context())
	kctx = context.WithValue(kctx, downstreamKeyCtx{}, downstreamKey(skey))
	c.SetRequest(req.WithContext(kctx))
	before := resp.Header().Clone()
	rec := newRecorder(resp.Writer, h.cfg.MaxResponseBytes)
	resp.Writer = rec
	defer func() {
		resp.Writer = rec.w
		c.SetRequest(req)
	}()

	herr, panicked := runHandler(c, next, h.cfg.Logger, route)
	if panicked && !rec.passthrough {
		rec.reset(before)
		rec.header.Set(echo.HeaderContentType, problem.ContentType)
		rec.WriteHeader(http.StatusInternalServerError)
		_, _ = rec.Write(ambiguousBody)
	} else if herr != nil {
		// Echo renders a returned error only after the whole chain
		// has returned, too late to record. Render it here, inside the
		// recorder, and return nil so it is not rendered twice.
		c.Error(unwrapNoSideEffect(herr))
	}
	lost := stop()
	if rec.status == 0 {
		rec.status = http.StatusOK
	}

	outcome := outcomeFirst
	// The client may be gone; the record must still be written.
	ctx := context.WithoutCancel(req.Context())
	switch decide(rec.status, panicked, herr) {
	case decisionRelease:
		outcome = outcomeReleased
		if err := lease.Release(ctx); err != nil {
			h.storeError(ctx, "release", route, err)
		}
	case decisionAmbiguous:
		outcome = outcomeAmbiguous
		fallthrough
	default:
		if err := lease.Complete(ctx, h.stored(rec, panicked).encode()); err != nil {
			h.storeError(ctx, "complete", route, err)
		}
	}
	if lost != nil {
		h.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "idempotency: lease lost while the handler ran",
			slog.String("route", route), slog.String("err", lost.Error()))
	}
	h.metrics.requests.WithLabelValues(outcome).Inc()
	rec.finish()
	resp.Status, resp.Committed = rec.status, true
	return nil
}

// ambiguousBody is the one answer every retry of a panicked request gets.
var ambiguousBody = mustJSON(problem.New(http.StatusInternalServerError,
	"the outcome of the original request is unknown; it will not be run again with this Idempotency-Key"))

func runHandler(c echo.Context, next echo.HandlerFunc, log *slog.Logger, route string) (err error, panicked bool) {
	defer func() {
		if r := recover(); r != nil {
			panicked = true
			log.LogAttrs(c.Request().Context(), slog.LevelError, "idempotency: handler panicked; outcome recorded as ambiguous",
				slog.String("route", route), slog.Any("panic", r), slog.String("stack", string(debug.Stack())))
		}
	}()
	return next(c), false
}

func (h *handler) stored(rec *recorder, panicked bool) storedResponse {
	s := storedResponse{V: 1, Status: rec.status, Header: map[string][]string{}}
	if panicked { // the same answer whether or not part of a response escaped
		s.Status = http.StatusInternalServerError
		s.Header[echo.HeaderContentType] = []string{problem.ContentType}
		s.Body = ambiguousBody
		return s
	}
	if rec.tooLarge || rec.streamed {
		s.Header[echo.HeaderContentType] = []string{problem.ContentType}
		s.Body = mustJSON(problem.New(rec.status, fmt.Sprintf(
			"the original request completed with status %d; its response was too large or streamed and was not kept", rec.status)))
		return s
	}
	for _, name := range h.replay {
		if v, ok := rec.header[name]; ok {
			s.Header[name] = v
		}
	}
	s.Body = rec.buf
	return s
}

func (h *handler) replayStored(c echo.Context, route string, value []byte) error {
	s, err := decodeStored(value)
	if err != nil {
		h.cfg.Logger.LogAttrs(c.Request().Context(), slog.LevelError, "idempotency: stored response unreadable",
			slog.String("route", route), slog.String("err", err.Error()))
		return h.refuse(c, outcomeAmbiguous, http.StatusInternalServerError, "the stored result of this request cannot be read", 0)
	}
	h.metrics.requests.WithLabelValues(outcomeReplayed).Inc()
	hdr := c.Response().Header()
	for k, v := range s.Header {
		hdr[k] = v
	}
	hdr.Set(HeaderReplayed, "true")
	c.Response().WriteHeader(s.Status)
	_, err = c.Response().Write(s.Body)
	return err
}

func (h *handler) refuse(c echo.Context, outcome string, status int, detail string, retryAfter time.Duration) error {
	h.metrics.requests.WithLabelValues(outcome).Inc()
	hdr := c.Response().Header()
	hdr.Set(echo.HeaderCacheControl, "no-store")
	if retryAfter > 0 {
		hdr.Set(echo.HeaderRetryAfter, strconv.Itoa(int(math.Ceil(retryAfter.Seconds()))))
	}
	return problem.Respond(c, status, detail)
}

func (h *handler) storeError(ctx context.Context, op, route string, err error) {
	h.metrics.storeErrors.WithLabelValues(op).Inc()
	msg := "idempotency: could not record the result; a retry after the lease expires will run the handler again"
	if op == "release" {
		msg = "idempotency: could not release the key; retries get 409 until the lease expires"
	}
	if errors.Is(err, ErrLeaseLost) {
		msg = "idempotency: lease lost before " + op + "; another attempt holds or finished the key"
	}
	h.cfg.Logger.LogAttrs(ctx, slog.LevelError, msg, slog.String("route", route), slog.String("err", err.Error()))
}

func mustJSON(p problem.Details) []byte {
	b, err := json.Marshal(p)
	if err != nil {
		panic(err) // a fixed struct of strings and an int: cannot happen
	}
	return b
}
