package server

import (
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inflight prometheus.Gauge
}

func newHTTPMetrics(reg prometheus.Registerer, name string) (*httpMetrics, error) {
	constLabels := prometheus.Labels{"server": name}
	m := &httpMetrics{
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
			m.requests.WithLabelValues(route, req.Method, strconv.Itoa(res.Status)).Inc()
			m.duration.WithLabelValues(route, req.Method).Observe(elapsed.Seconds())
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
