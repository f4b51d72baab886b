package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/digis/jobworker/jobs"
)

// Publisher publishes prepared jobs; *jobs.Client implements it.
type Publisher interface {
	PublishMessages(ctx context.Context, msgs []jobs.Message) ([]jobs.EnqueueResult, error)
	PublishMessage(ctx context.Context, msg jobs.Message) (jobs.EnqueueResult, error)
}

// Defaults of Config.
const (
	DefaultBatchSize          = 100
	DefaultConcurrency        = 1
	DefaultSweepInterval      = time.Second
	DefaultMinBackoff         = 250 * time.Millisecond
	DefaultMaxBackoff         = time.Minute
	DefaultRetention          = 24 * time.Hour
	DefaultCleanupInterval    = time.Minute
	DefaultMetricsInterval    = 10 * time.Second
	DefaultRunOnceMaxRows     = 10_000
	DefaultRunOnceMaxDuration = 25 * time.Second
	// MaxBatchSize bounds Config.BatchSize (one QStash batch call and one
	// claiming statement).
	MaxBatchSize = 1000
	// MaxRetryAfter bounds how long a Retry-After from QStash holds the
	// relay back, so a garbled header cannot park it for days.
	MaxRetryAfter = 10 * time.Minute
)

// Config configures a Relay. Zero fields take the documented defaults.
type Config struct {
	// Pool is the database holding the outbox table (see Migrate): rows are
	// claimed, marked and cleaned up through it. The relay also opens one
	// connection of its own, with Pool's settings, for LISTEN while
	// started. Required.
	Pool *pgxpool.Pool
	// Publisher sends the rows to QStash: a *jobs.Client configured like
	// the one the application would enqueue with directly. Its Timeout
	// bounds every publish call, hence how long a relay round (and a
	// graceful Stop) can take. Required.
	Publisher Publisher
	// BatchSize is the most rows one round claims and publishes in one
	// QStash batch call (POST /v2/batch). 1 publishes each row with its own
	// call. Defaults to DefaultBatchSize (100); at most MaxBatchSize.
	BatchSize int
	// Concurrency is how many rounds a started relay runs at once (rounds
	// claim disjoint rows). More than 1 raises throughput when a QStash
	// round trip dominates, and loosens the publish order. Defaults to 1.
	Concurrency int
	// SweepInterval is how often a started relay looks for due rows without
	// being notified: the safety net for lost notifications, a LISTEN
	// connection that is down, rows whose backoff ended, and delays set by
	// a database clock. Defaults to DefaultSweepInterval (1 s).
	SweepInterval time.Duration
	// MinBackoff and MaxBackoff bound the jittered exponential backoff
	// after QStash was unavailable, per relay and per row, and between
	// LISTEN reconnects. A Retry-After from QStash is honoured instead when
	// it is longer (up to MaxRetryAfter). Default to 250 ms and 1 min.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// Retention is how long sent rows are kept (for audits and debugging)
	// before the relay deletes them. Failed rows are never deleted by the
	// relay. Must exceed QStash's 10-minute deduplication window. Defaults
	// to DefaultRetention (24 h).
	Retention time.Duration
	// CleanupInterval is how often a started relay deletes expired sent
	// rows (RunOnce cleans up on every call). Defaults to 1 min.
	CleanupInterval time.Duration
	// MetricsInterval is how often the pending, failed and oldest-age
	// gauges are refreshed (one count over the pending index). Defaults to
	// 10 s. Only used with Registerer.
	MetricsInterval time.Duration
	// RunOnceMaxRows and RunOnceMaxDuration bound one RunOnce call: it
	// starts no new round past either. Default to 10,000 rows and 25 s.
	RunOnceMaxRows     int
	RunOnceMaxDuration time.Duration
	// Logger receives a warning per unavailable QStash or lost LISTEN
	// connection and an error per row given up (row id, job, status,
	// QStash's reason; never the payload). Defaults to discarding.
	Logger *slog.Logger
	// Registerer receives the jobworker_outbox_* metrics. Defaults to nil:
	// none are registered.
	Registerer prometheus.Registerer
	// Now is the relay's clock (cleanup cutoff, publish lag, RunOnce's
	// deadline). Defaults to time.Now.
	Now func() time.Time
}

// Validate reports missing or out-of-range fields.
func (c Config) Validate() error {
	var errs []error
	if c.Pool == nil {
		errs = append(errs, &ConfigError{Field: "Pool", Reason: "is required"})
	}
	if c.Publisher == nil {
		errs = append(errs, &ConfigError{Field: "Publisher", Reason: "is required"})
	}
	if c.BatchSize < 0 || c.BatchSize > MaxBatchSize {
		errs = append(errs, &ConfigError{Field: "BatchSize", Reason: fmt.Sprintf("must be 0 to %d, got %d", MaxBatchSize, c.BatchSize)})
	}
	if c.Concurrency < 0 {
		errs = append(errs, &ConfigError{Field: "Concurrency", Reason: fmt.Sprintf("must not be negative, got %d", c.Concurrency)})
	}
	if c.RunOnceMaxRows < 0 {
		errs = append(errs, &ConfigError{Field: "RunOnceMaxRows", Reason: fmt.Sprintf("must not be negative, got %d", c.RunOnceMaxRows)})
	}
	for name, d := range map[string]time.Duration{
		"SweepInterval": c.SweepInterval, "MinBackoff": c.MinBackoff, "MaxBackoff": c.MaxBackoff,
		"Retention": c.Retention, "CleanupInterval": c.CleanupInterval, "MetricsInterval": c.MetricsInterval,
		"RunOnceMaxDuration": c.RunOnceMaxDuration,
	} {
		if d < 0 {
			errs = append(errs, &ConfigError{Field: name, Reason: "must not be negative, got " + d.String()})
		}
	}
	if c.MinBackoff > 0 && c.MaxBackoff > 0 && c.MinBackoff > c.MaxBackoff {
		errs = append(errs, &ConfigError{Field: "MinBackoff", Reason: fmt.Sprintf("(%s) exceeds MaxBackoff (%s)", c.MinBackoff, c.MaxBackoff)})
	}
	if c.Retention > 0 && c.Retention <= dedupWindow {
		errs = append(errs, &ConfigError{Field: "Retention", Reason: fmt.Sprintf("must exceed QStash's %s deduplication window, got %s", dedupWindow, c.Retention)})
	}
	return errors.Join(errs...)
}

// dedupWindow is how long QStash remembers a deduplication id.
const dedupWindow = 10 * time.Minute

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.RunOnceMaxRows == 0 {
		c.RunOnceMaxRows = DefaultRunOnceMaxRows
	}
	def(&c.SweepInterval, DefaultSweepInterval)
	def(&c.MinBackoff, DefaultMinBackoff)
	def(&c.MaxBackoff, max(DefaultMaxBackoff, c.MinBackoff))
	def(&c.Retention, DefaultRetention)
	def(&c.CleanupInterval, DefaultCleanupInterval)
	def(&c.MetricsInterval, DefaultMetricsInterval)
	def(&c.RunOnceMaxDuration, DefaultRunOnceMaxDuration)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Relay publishes committed outbox rows to QStash. Run it in a long-lived
// process with Start and Stop, or call RunOnce (or serve Handler) from a
// QStash schedule. Any number of relays may share one database: each row
// is claimed by one of them at a time. A Relay is safe for concurrent use.
type Relay struct {
	cfg     Config
	pool    *pgxpool.Pool
	pub     Publisher
	log     *slog.Logger
	metrics *metrics

	wake *signal // closed on NOTIFY

	mu          sync.Mutex
	failures    int       // consecutive unavailable rounds, for the backoff
	lastCleanup time.Time // relay clock
	lastStats   time.Time
	running     *run
}

// New validates cfg and returns a Relay. It does not touch the database.
func New(cfg Config) (*Relay, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Relay{cfg: cfg, pool: cfg.Pool, pub: cfg.Publisher, log: cfg.Logger, metrics: m, wake: newSignal()}, nil
}

// Wake makes a started relay look for due rows now, as a notification on
// Channel does: for the process that committed rows enqueued WithoutNotify.
// It never blocks; a relay that is not started ignores it.
func (r *Relay) Wake() { r.wake.Notify() }

// backoff is the jittered exponential delay after the n-th consecutive
// failure (n >= 1): between half and all of MinBackoff·2^(n-1), capped at
// MaxBackoff. The jitter spreads relays that failed together.
func backoff(n int, lo, hi time.Duration, rnd func() float64) time.Duration {
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	return d/2 + time.Duration(rnd()*float64(d/2))
}

func (r *Relay) backoff(n int) time.Duration {
	return backoff(n, r.cfg.MinBackoff, r.cfg.MaxBackoff, rand.Float64)
}

// unavailable records a round QStash could not serve and returns how long
// the relay should wait: the backoff, or QStash's Retry-After if longer.
func (r *Relay) unavailable(retryAfter time.Duration) time.Duration {
	r.mu.Lock()
	r.failures++
	n := r.failures
	r.mu.Unlock()
	return max(r.backoff(n), min(retryAfter, MaxRetryAfter))
}

func (r *Relay) available() {
	r.mu.Lock()
	r.failures = 0
	r.mu.Unlock()
}

// signal is a broadcast wake-up: C returns a channel that Notify closes.
// A waiter takes C before it looks for work, so a notification that arrives
// while it works is not lost.
type signal struct {
	mu sync.Mutex
	ch chan struct{}
}

func newSignal() *signal { return &signal{ch: make(chan struct{})} }

func (s *signal) C() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ch
}

func (s *signal) Notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.ch)
	s.ch = make(chan struct{})
}
