package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/singleflight"
)

// Config describes one server. The zero value of every field but Name and
// Addr is usable.
type Config struct {
	// Name labels logs and metrics ("api", "worker").
	Name string
	// Addr to listen on, e.g. ":3000".
	Addr string
	// BodyLimit caps request bodies; larger ones get 413. Defaults to 1 MiB.
	BodyLimit int64
	// RequestTimeout is the deadline put on each request's context.
	// Defaults to 30s.
	RequestTimeout time.Duration
	// ShutdownTimeout bounds how long in-flight requests may run after
	// shutdown begins. Defaults to 25s.
	ShutdownTimeout time.Duration
	// DrainDelay is how long to keep serving (readiness 503) after shutdown
	// begins and before the listener closes. Defaults to 0.
	DrainDelay time.Duration
	// Ready reports whether dependencies answer; nil means always ready.
	Ready func(context.Context) error
	// Logger for the access log and errors. Defaults to a discarding logger.
	Logger *slog.Logger
	// Registry receives the HTTP metrics and is served on /metrics.
	// Defaults to a new registry with Go and process collectors.
	Registry *prometheus.Registry
	// MetricsAddr is where Run opens a second listener that serves only
	// /metrics, e.g. ":9300" (keep it off the public network; it must not
	// be Addr's port). Defaults to "": no metrics listener.
	MetricsAddr string
	// MetricsToken, when set (at least MinMetricsTokenLen bytes), makes
	// every /metrics answer require "Authorization: Bearer <MetricsToken>",
	// and serves /metrics on Addr too, for platforms that route only one
	// port. Defaults to "": /metrics is not on Addr at all.
	MetricsToken string
}

// Server is an Echo instance with the shared middleware and endpoints.
type Server struct {
	// Echo is where callers add their routes.
	Echo *echo.Echo

	cfg      Config
	log      *slog.Logger
	draining atomic.Bool

	metrics        *httpMetrics
	metricsHandler http.Handler
	ready          singleflight.Group

	stopMu sync.Mutex
	stops  []stopFunc
}

type stopFunc struct {
	name string
	fn   func(context.Context) error
}

const (
	defaultBodyLimit       = 1 << 20
	defaultRequestTimeout  = 30 * time.Second
	defaultShutdownTimeout = 25 * time.Second
	readyTimeout           = 2 * time.Second
)

// NewRegistry returns a Prometheus registry with the Go runtime and process
// collectors, the base every binary exposes.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// New builds the server. Routes are added to s.Echo before Run.
func New(cfg Config) (*Server, error) {
	if cfg.Name == "" {
		return nil, errors.New("server: Name is required")
	}
	if cfg.BodyLimit == 0 {
		cfg.BodyLimit = defaultBodyLimit
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = defaultRequestTimeout
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = defaultShutdownTimeout
	}
	if cfg.BodyLimit < 0 || cfg.RequestTimeout < 0 || cfg.ShutdownTimeout < 0 || cfg.DrainDelay < 0 {
		return nil, errors.New("server: limits and timeouts must not be negative")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Registry == nil {
		cfg.Registry = NewRegistry()
	}
	if err := checkMetrics(cfg); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("server", cfg.Name), metricsHandler: newMetricsHandler(cfg)}

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleError
	// Real client addresses are the rate limiter's business (limits package,
	// explicit trust config); nothing here reads them.
	e.IPExtractor = echo.ExtractIPDirect()

	metrics, err := newHTTPMetrics(cfg.Registry, cfg.Name)
	if err != nil {
		return nil, err
	}
	s.metrics = metrics
	e.Use(
		requestID(),
		accessLog(s.log, metrics),
		middleware.RecoverWithConfig(middleware.RecoverConfig{
			DisableErrorHandler: true, // the error goes up to accessLog and the error handler
			LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
				s.log.Error("panic recovered", "request_id", RequestIDOf(c), "route", c.Path(),
					"panic", err.Error(), "stack", string(stack))
				return err
			},
		}),
		// The body must arrive within the request's deadline.
		admit(cfg.BodyLimit, cfg.RequestTimeout, s.log),
	)
	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	if cfg.MetricsToken != "" {
		e.GET(MetricsPath, echo.WrapHandler(s.metricsHandler))
	}
	s.Echo = e
	return s, nil
}

// Draining reports whether shutdown has begun.
func (s *Server) Draining() bool { return s.draining.Load() }

// StartDraining flips readiness to 503 and makes RejectWhileDraining routes
// answer 503. Run calls it on shutdown; tests may call it directly.
func (s *Server) StartDraining() { s.draining.Store(true) }

// OnStop registers fn to run at shutdown, after in-flight requests have
// finished (or ShutdownTimeout passed). Stop functions run in reverse order
// of registration, each with the shutdown's remaining time (at least
// minStopTime): register what others depend on first, e.g. the Redis client
// before the cache that refreshes through it, so Redis closes last. Errors
// are logged and returned joined from Serve. Call it while wiring, before
// Serve.
func (s *Server) OnStop(name string, fn func(context.Context) error) {
	s.stopMu.Lock()
	defer s.stopMu.Unlock()
	s.stops = append(s.stops, stopFunc{name: name, fn: fn})
}

// minStopTime is what stop functions get even when the requests used up
// the whole ShutdownTimeout: closing clients must not be skipped.
const minStopTime = 5 * time.Second

// runStops runs the stop functions in reverse order of registration.
func (s *Server) runStops(deadline time.Time) error {
	s.stopMu.Lock()
	stops := s.stops
	s.stops = nil
	s.stopMu.Unlock()
	ctx, cancel := context.WithDeadline(context.Background(), later(deadline, time.Now().Add(minStopTime)))
	defer cancel()
	var errs []error
	for i := len(stops) - 1; i >= 0; i-- {
		if err := stops[i].fn(ctx); err != nil {
			s.log.Error("stopping failed", "part", stops[i].name, "error", err.Error())
			errs = append(errs, fmt.Errorf("server: stopping %s: %w", stops[i].name, err))
		}
	}
	return errors.Join(errs...)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Abort runs the stop functions without serving: for a process whose
// wiring failed after some parts were built.
func (s *Server) Abort() error { return s.runStops(time.Now()) }

// Run serves on cfg.Addr, and /metrics on cfg.MetricsAddr when set, until
// ctx is done, then shuts down gracefully and runs the stop functions (also
// when listening fails). The metrics listener closes last, after the stop
// functions.
func (s *Server) Run(ctx context.Context) error {
	var metricsDone <-chan error
	if s.cfg.MetricsAddr != "" {
		mln, err := net.Listen("tcp", s.cfg.MetricsAddr)
		if err != nil {
			return errors.Join(fmt.Errorf("server: listen %s (metrics): %w", s.cfg.MetricsAddr, err), s.runStops(time.Now()))
		}
		stop := make(chan struct{})
		defer close(stop)
		metricsDone = s.serveMetrics(mln, stop)
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return errors.Join(fmt.Errorf("server: listen %s: %w", s.cfg.Addr, err), s.runStops(time.Now()))
	}
	if metricsDone == nil {
		return s.Serve(ctx, ln)
	}
	// A metrics listener that fails takes the process down with it, as
	// the main one does: nothing should run unobserved.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		if err := <-metricsDone; err != nil {
			cancel(fmt.Errorf("server: metrics: %w", err))
		}
	}()
	err = s.Serve(ctx, ln)
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		err = errors.Join(cause, err)
	}
	return err
}

// Serve is Run on an existing listener (tests pass a :0 listener). It does
// not open MetricsAddr: tests read /metrics through MetricsHandler or a
// MetricsToken.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	// One budget for the whole shutdown: the drain delay, the requests, then
	// the stop functions with what is left.
	var deadline time.Time
	err := s.serve(ctx, ln, func() { deadline = time.Now().Add(s.cfg.DrainDelay + s.cfg.ShutdownTimeout) })
	if deadline.IsZero() {
		deadline = time.Now()
	}
	err = errors.Join(err, s.runStops(deadline))
	s.log.Info("stopped")
	return err
}

func (s *Server) serve(ctx context.Context, ln net.Listener, shuttingDown func()) error {
	s.metrics.setRoutes(s.Echo)
	hs := &http.Server{
		Handler:           s.Echo,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.log.Info("listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()

	select {
	case err := <-errc:
		return fmt.Errorf("server: %w", err)
	case <-ctx.Done():
	}

	shuttingDown()
	s.StartDraining()
	s.log.Info("shutting down", "drain_delay", s.cfg.DrainDelay, "timeout", s.cfg.ShutdownTimeout)
	if s.cfg.DrainDelay > 0 {
		time.Sleep(s.cfg.DrainDelay)
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		_ = hs.Close()
		return fmt.Errorf("server: in-flight requests did not finish within %s: %w", s.cfg.ShutdownTimeout, err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("server: %w", err)
	}
	return nil
}

// SignalContext is done on the first SIGINT or SIGTERM. A second signal is
// left to the runtime's default, so an impatient operator can still kill.
func SignalContext() context.Context {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
	}()
	return ctx
}

// RejectWhileDraining answers 503 with Retry-After once shutdown has begun.
// The worker wraps delivery routes with it so QStash and Stripe retry the
// delivery on a live instance instead of losing it to a dying one.
func (s *Server) RejectWhileDraining() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if s.draining.Load() {
				c.Response().Header().Set("Retry-After", "5")
				return echo.NewHTTPError(http.StatusServiceUnavailable, "shutting down, retry later")
			}
			return next(c)
		}
	}
}

func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(c echo.Context) error {
	if s.draining.Load() {
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "draining"})
	}
	if s.cfg.Ready != nil {
		if err := s.checkReady(c.Request().Context()); err != nil {
			return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "unavailable"})
		}
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// checkReady runs the readiness checks once for all the probes that arrive
// while it runs: 200 concurrent probes make one Redis PING and one database
// round trip, not 200 that queue for the pools' connections and miss their
// deadlines (which made /readyz flap under load). The check runs detached
// from the first prober, so one prober hanging up fails no other.
func (s *Server) checkReady(ctx context.Context) error {
	ch := s.ready.DoChan("ready", func() (any, error) {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readyTimeout)
		defer cancel()
		err := s.cfg.Ready(cctx)
		if err != nil {
			s.log.Warn("not ready", "error", err.Error())
		}
		return nil, err
	})
	select {
	case r := <-ch:
		return r.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}
