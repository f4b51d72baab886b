package server

import (
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inflight prometheus.Gauge

	// children caches the series of each (route, method, status) seen with
	// a standard method: WithLabelValues hashes and locks on every call,
	// and strconv.Itoa allocates. Routes are templates, so this is bounded.
	mu       sync.RWMutex
	children map[seriesKey]series
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
		requests: m.requests.WithLabelValues(route, method, strconv.Itoa(code)),
		duration: m.duration.WithLabelValues(route, method),
	}
	if standardMethod(method) {
		m.mu.Lock()
		m.children[k] = s
		m.mu.Unlock()
	}
	return s
}

// standardMethod keeps client-chosen method names out of the cache.
func standardMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return true
	}
	return false
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

func promHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

// accessLog writes one structured line per request and records metrics. It
// runs outside recovery and calls the error handler itself, so the logged
// status is the one the client got. It logs the route template, never the
// raw path, query or body: those may carry user names or payloads.
func accessLog(log *slog.Logger, m *httpMetrics) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			m.inflight.Inc()
			defer m.inflight.Dec()
			if err := next(c); err != nil {
				c.Error(err)
			}
			route := c.Path()
			if route == "" {
				route = "unmatched"
			}
			req, res := c.Request(), c.Response()
			elapsed := time.Since(start)
			ser := m.series(route, req.Method, res.Status)
			ser.requests.Inc()
			ser.duration.Observe(elapsed.Seconds())
			level := slog.LevelInfo
			if res.Status >= 500 {
				level = slog.LevelWarn
			}
			log.LogAttrs(req.Context(), level, "request",
				slog.String("request_id", RequestIDOf(c)),
				slog.String("method", req.Method),
				slog.String("route", route),
				slog.Int("status", res.Status),
				slog.Int64("bytes_out", res.Size),
				slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
			)
			return nil
		}
	}
}
