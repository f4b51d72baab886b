// Package opsstats makes fleet-wide numbers out of per-process Prometheus
// counters: each process's Flusher reads its own registry on an interval
// and adds what grew since the last flush to a per-minute hash in Redis, in
// one MULTI/EXEC on one key; a Reader sums those hashes for the ops console.
// The counters are the ones the packages already keep (rate-limit
// decisions, cache outcomes, idempotency outcomes, deliveries, dead jobs,
// outbox), so nothing is added to any request path: the flush runs in its
// own goroutine, and a failed flush keeps its deltas for the next one.
//
//	f, err := opsstats.NewFlusher(opsstats.Config{Redis: rdb, Prefix: "app:", Gatherer: reg})
//	f.Start()
//	defer f.Stop(ctx) // flushes what is left
//
//	r := opsstats.NewReader(rdb, "app:")
//	minutes, err := r.Read(ctx, time.Now().Add(-time.Hour), time.Now())
//
// # Keys
//
// <prefix>ops:stats:{<unix minute>} is a hash per minute; its fields are
// series (the metric name, then its labels as a JSON object), its values
// the counts added during that minute by every instance. The field
// "_instances:<id>" counts the flushes of one instance (a random id per
// process, no host name). A minute's hash carries its own hash tag, so the
// one write of a flush stays on one Cluster slot. It lives Config.Retention.
//
// A flush whose answer is lost (a timeout after Redis applied it) is sent
// again with the next one: counts may then be high by one interval of one
// instance, never low.
package opsstats

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
)

// Families are the counters flushed, by metric name. Every one has bounded
// label values (bucket and tier names from configuration, job names from
// the registry, fixed outcomes).
var Families = []string{
	"jobworker_ratelimit_decisions_total",   // bucket, tier, reason
	"jobworker_cache_requests_total",        // family, outcome
	"jobworker_idempotency_requests_total",  // outcome
	"jobworker_deliveries_total",            // job, outcome
	"jobworker_dead_jobs_total",             // job
	"jobworker_outbox_published_total",      // outbox relay
	"jobworker_outbox_publish_errors_total", // outbox relay
	"jobworker_cache_redis_errors_total",    // op
}

// Gauges are the gauges flushed as their last value: the outbox's, which
// every relay reads from the one database, so any instance's value is the
// deployment's.
var Gauges = []string{
	"jobworker_outbox_pending",
	"jobworker_outbox_failed",
	"jobworker_outbox_oldest_pending_age_seconds",
}

// ErrInvalidConfig is matched by every *ConfigError.
var ErrInvalidConfig = errors.New("opsstats: invalid config")

// ConfigError names the Config field that is wrong.
type ConfigError struct {
	Field, Reason string
}

func (e *ConfigError) Error() string {
	return ErrInvalidConfig.Error() + ": " + e.Field + " " + e.Reason
}

// Is makes errors.Is(err, ErrInvalidConfig) true.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// Config configures a Flusher.
type Config struct {
	// Redis receives the flushes. Required.
	Redis redis.UniversalClient
	// Gatherer is the process's registry. Required.
	Gatherer prometheus.Gatherer
	// Prefix is the deployment's key prefix (REDIS_KEY_PREFIX). Defaults
	// to "".
	Prefix string
	// Interval between flushes. Defaults to 10s.
	Interval time.Duration
	// Retention is the TTL of a minute's hash. Defaults to 25h.
	Retention time.Duration
	// Timeout bounds one flush's Redis call. Defaults to 2s.
	Timeout time.Duration
	// Logger receives a line when a flush fails. Defaults to discarding.
	Logger *slog.Logger
	// Now is the clock that picks the minute. Defaults to time.Now.
	Now func() time.Time
}

// Validate reports the first invalid field as a *ConfigError.
func (c Config) Validate() error {
	switch {
	case c.Redis == nil:
		return &ConfigError{"Redis", "is required"}
	case c.Gatherer == nil:
		return &ConfigError{"Gatherer", "is required"}
	case c.Interval < 0:
		return &ConfigError{"Interval", "is negative"}
	case c.Retention != 0 && c.Retention < 2*time.Minute:
		return &ConfigError{"Retention", "is below 2m"}
	case c.Timeout < 0:
		return &ConfigError{"Timeout", "is negative"}
	}
	return nil
}

// Defaults.
const (
	DefaultInterval  = 10 * time.Second
	DefaultRetention = 25 * time.Hour
	DefaultTimeout   = 2 * time.Second
)

// Flusher adds the growth of a process's counters to Redis.
type Flusher struct {
	cfg      Config
	instance string
	families map[string]bool
	gauges   map[string]bool

	mu      sync.Mutex         // one flush at a time
	sent    map[string]float64 // series → value already in Redis
	stop    chan struct{}
	done    chan struct{}
	started bool
}

// NewFlusher validates cfg and builds a Flusher; Start runs it.
func NewFlusher(cfg Config) (*Flusher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Retention == 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	var id [6]byte
	_, _ = rand.Read(id[:])
	f := &Flusher{cfg: cfg, instance: hex.EncodeToString(id[:]), families: map[string]bool{}, gauges: map[string]bool{},
		sent: map[string]float64{}, stop: make(chan struct{}), done: make(chan struct{})}
	for _, n := range Families {
		f.families[n] = true
	}
	for _, n := range Gauges {
		f.gauges[n] = true
	}
	return f, nil
}

// Start flushes every Interval in the background until Stop.
func (f *Flusher) Start() {
	f.started = true
	go func() {
		defer close(f.done)
		t := time.NewTicker(f.cfg.Interval)
		defer t.Stop()
		for {
			select {
			case <-f.stop:
				return
			case <-t.C:
				if err := f.Flush(context.Background()); err != nil {
					f.cfg.Logger.Warn("ops stats: flush failed; its counts go with the next one", "error", err.Error())
				}
			}
		}
	}()
}

// Stop ends the background loop and flushes what is left, so a process
// that stops (a serverless instance scaled in) loses nothing it counted.
func (f *Flusher) Stop(ctx context.Context) error {
	if f.started {
		close(f.stop)
		select {
		case <-f.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return f.Flush(ctx)
}

// Key is the hash of the minute that holds t.
func Key(prefix string, t time.Time) string {
	return prefix + "ops:stats:{" + strconv.FormatInt(t.Unix()/60, 10) + "}"
}

// Flush sends what grew since the last successful flush, in one MULTI/EXEC
// on the current minute's hash. Nothing grew: no Redis call.
func (f *Flusher) Flush(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	mfs, err := f.cfg.Gatherer.Gather()
	if err != nil && len(mfs) == 0 {
		return fmt.Errorf("opsstats: gather: %w", err)
	}
	now := map[string]float64{}
	gauges := map[string]float64{}
	for _, mf := range mfs {
		name := mf.GetName()
		for _, m := range mf.GetMetric() {
			switch {
			case f.families[name] && m.GetCounter() != nil:
				now[field(name, m.GetLabel())] = m.GetCounter().GetValue()
			case f.gauges[name] && m.GetGauge() != nil:
				gauges[gaugeMark+field(name, m.GetLabel())] = m.GetGauge().GetValue()
			}
		}
	}
	deltas := map[string]int64{}
	for k, v := range now {
		d := v - f.sent[k]
		if d < 0 { // a counter that was reset: all of it is new
			d = v
		}
		if n := int64(math.Round(d)); n > 0 {
			deltas[k] = n
		}
	}
	if len(deltas) == 0 && len(gauges) == 0 {
		return nil
	}
	key := Key(f.cfg.Prefix, f.cfg.Now())
	ctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	defer cancel()
	_, err = f.cfg.Redis.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for k, n := range deltas {
			p.HIncrBy(ctx, key, k, n)
		}
		for k, v := range gauges {
			p.HSet(ctx, key, k, strconv.FormatFloat(v, 'g', -1, 64))
		}
		p.HIncrBy(ctx, key, instanceField+f.instance, 1)
		p.Expire(ctx, key, f.cfg.Retention)
		return nil
	})
	if err != nil {
		return fmt.Errorf("opsstats: flush: %w", err)
	}
	for k, n := range deltas {
		f.sent[k] += float64(n)
	}
	return nil
}

const (
	instanceField = "_instances:"
	gaugeMark     = "=" // a gauge's field: its last value, not a sum
)

// field is a series' hash field: the name, a '|', then the labels as a
// JSON object (sorted keys: one series, one field).
func field(name string, labels []*dto.LabelPair) string {
	m := make(map[string]string, len(labels))
	for _, l := range labels {
		m[l.GetName()] = l.GetValue()
	}
	b, _ := json.Marshal(m) // maps marshal with sorted keys
	return name + "|" + string(b)
}

// Series is one counter's growth during one minute, summed over
// instances, or a gauge's last value flushed in that minute.
type Series struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels"`
	Value  float64           `json:"value"`
	Gauge  bool              `json:"gauge,omitempty"`
}

// Minute is what every instance flushed during one minute.
type Minute struct {
	Start     time.Time `json:"start"`
	Series    []Series  `json:"series"`
	Instances int       `json:"instances"` // distinct instances that flushed
}

// Reader reads the per-minute hashes.
type Reader struct {
	rdb    redis.UniversalClient
	prefix string
}

// NewReader reads what the Flushers of the deployment with prefix wrote.
func NewReader(rdb redis.UniversalClient, prefix string) *Reader {
	return &Reader{rdb: rdb, prefix: prefix}
}

// MaxMinutes bounds one Read.
const MaxMinutes = 24 * 60

// Read returns the minutes from from to to (both included), oldest first,
// one pipelined HGETALL per minute.
func (r *Reader) Read(ctx context.Context, from, to time.Time) ([]Minute, error) {
	first, last := from.Unix()/60, to.Unix()/60
	if last < first {
		return nil, nil
	}
	if last-first >= MaxMinutes {
		first = last - MaxMinutes + 1
	}
	cmds := make([]*redis.MapStringStringCmd, 0, last-first+1)
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for m := first; m <= last; m++ {
			cmds = append(cmds, p.HGetAll(ctx, Key(r.prefix, time.Unix(m*60, 0))))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("opsstats: read: %w", err)
	}
	out := make([]Minute, 0, len(cmds))
	for i, c := range cmds {
		min := Minute{Start: time.Unix((first+int64(i))*60, 0).UTC(), Series: []Series{}}
		for k, v := range c.Val() {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				continue // not ours
			}
			if strings.HasPrefix(k, instanceField) {
				min.Instances++
				continue
			}
			gauge := strings.HasPrefix(k, gaugeMark)
			name, labels, ok := strings.Cut(strings.TrimPrefix(k, gaugeMark), "|")
			if !ok {
				continue
			}
			s := Series{Name: name, Value: n, Gauge: gauge}
			if json.Unmarshal([]byte(labels), &s.Labels) != nil {
				continue
			}
			min.Series = append(min.Series, s)
		}
		sort.Slice(min.Series, func(a, b int) bool {
			if min.Series[a].Name != min.Series[b].Name {
				return min.Series[a].Name < min.Series[b].Name
			}
			return fmt.Sprint(min.Series[a].Labels) < fmt.Sprint(min.Series[b].Labels)
		})
		out = append(out, min)
	}
	return out, nil
}
