package server

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/digis/jobworker/internal/reqlog"
)

type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inflight prometheus.Gauge

	// children caches the series of each (route, method, status):
	// WithLabelValues hashes and locks on every call, and strconv.Itoa
	// allocates. Every label is bounded (see labels), so this is too.
	mu       sync.RWMutex
	children map[seriesKey]series

	// routes is the set of registered route templates, taken when the
	// server starts serving; nil until then (every path is kept).
	routes atomic.Pointer[map[string]bool]
}

type seriesKey struct {
	route, method string
	code          int
}

type series struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

func (m *httpMetrics) series(route, method string, code int) series {
	k := seriesKey{route, method, code}
	m.mu.RLock()
	s, ok := m.children[k]
	m.mu.RUnlock()
	if ok {
		return s
	}
	s = series{
		requests: m.requests.WithLabelValues(route, method, codeLabel(code)),
		duration: m.duration.WithLabelValues(route, method),
	}
	m.mu.Lock()
	m.children[k] = s
	m.mu.Unlock()
	return s
}

// Label values for what a client chose and the server does not know.
const (
	unmatchedRoute = "unmatched"
	otherLabel     = "other"
)

// labels bounds the label values of one request: the route is a
// registered template or "unmatched", the method a standard one or
// "other", so a client inventing methods or paths adds no series.
func (m *httpMetrics) labels(route, method string) (string, string) {
	if routes := m.routes.Load(); route == "" || routes != nil && !(*routes)[route] {
		route = unmatchedRoute
	}
	return route, methodLabel(method)
}

// methodLabel is method if it is one of RFC 9110's, else "other".
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return method
	}
	return otherLabel
}

// codeLabel is the status code, or "other" outside 100-599.
func codeLabel(code int) string {
	if code < 100 || code > 599 {
		return otherLabel
	}
	return strconv.Itoa(code)
}

// setRoutes records the registered route templates (called by Serve).
func (m *httpMetrics) setRoutes(e *echo.Echo) {
	set := map[string]bool{}
	for _, r := range e.Routes() {
		set[r.Path] = true
	}
	m.routes.Store(&set)
}

func newHTTPMetrics(reg prometheus.Registerer, name string) (*httpMetrics, error) {
	constLabels := prometheus.Labels{"server": name}
	m := &httpMetrics{
		children: make(map[seriesKey]series),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jobworker_http_requests_total", Help: "HTTP requests by route, method and status code.",
			ConstLabels: constLabels,
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "jobworker_http_request_duration_seconds", Help: "HTTP request latency by route.",
			ConstLabels: constLabels,
			Buckets:     []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "method"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jobworker_http_requests_in_flight", Help: "Requests being served.",
			ConstLabels: constLabels,
		}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.inflight} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// accessLog writes one structured line per request and records metrics. It
// runs outside recovery and calls the error handler itself, so the logged
// status is the one the client got. It logs the route template, never the
// raw path, query or body: those may carry user names or payloads; and the
// method as labelled (a client may send a kilobyte of invented method).
//
// What the request's handlers add with AddLogAttrs (the worker: the job,
// message id and outcome of a delivery) goes on the same line, so a request
// is one line. The line is built without allocating: its fields and the
// added ones are one inlined group (slog stores up to five attributes in a
// record and allocates for more), and the record goes to the handler
// directly, without the source lookup Logger does and no handler here uses.
func accessLog(log *slog.Logger, m *httpMetrics) echo.MiddlewareFunc {
	h := log.Handler()
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			m.inflight.Inc()
			defer m.inflight.Dec()
			if err := next(c); err != nil {
				c.Error(err)
			}
			req, res := c.Request(), c.Response()
			// The line admit put in the request's context; none when the
			// request was refused before (a body too large).
			ctx := req.Context()
			line := reqlog.From(ctx)
			route, method := m.labels(c.Path(), req.Method)
			end := time.Now()
			elapsed := end.Sub(start)
			ser := m.series(route, method, res.Status)
			ser.requests.Inc()
			ser.duration.Observe(elapsed.Seconds())
			level := slog.LevelInfo
			if res.Status >= 500 {
				level = slog.LevelWarn
			}
			if !h.Enabled(ctx, level) {
				line.Take() // later additions are not kept for nothing
				return nil
			}
			r := slog.NewRecord(end, level, "request", 0)
			r.AddAttrs(slog.Attr{Value: line.Take(
				slog.String("request_id", RequestIDOf(c)),
				slog.String("method", method),
				slog.String("route", route),
				slog.Int("status", res.Status),
				slog.Int64("bytes_out", res.Size),
				// An integer: slog's JSON handler writes a float through
				// encoding/json, which allocates and costs a microsecond.
				slog.Int64("duration_us", elapsed.Microseconds()),
			)})
			_ = h.Handle(ctx, r)
			return nil
		}
	}
}

// AddLogAttrs puts attrs on the access line of the request ctx belongs to
// (its context, or one derived from it: a job run by a delivery), so a
// handler with something worth logging about a request that went well adds
// it to the request's one line instead of writing a second. It reports
// whether the line will carry them: false when ctx is not a request this
// server serves, or its line was written already; a caller that must be
// heard then logs a line of its own. Failures still deserve their own
// warning or error: an operator filters on the level.
func AddLogAttrs(ctx context.Context, attrs ...slog.Attr) bool { return reqlog.Add(ctx, attrs...) }
