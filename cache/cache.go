package cache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Sentinel errors, for errors.Is.
var (
	// ErrInvalidConfig wraps every error returned by Config.Validate (a
	// *ConfigError naming the field).
	ErrInvalidConfig = errors.New("cache: invalid config")
	// ErrInvalidKey is returned for an empty key, or one whose cache and
	// lock keys would land in different Redis Cluster slots.
	ErrInvalidKey = errors.New("cache: invalid key")
	// ErrInvalidTTL is returned for a TTL (or stale window) that is not
	// positive.
	ErrInvalidTTL = errors.New("cache: invalid ttl")
	// ErrClosed is returned by calls made after Close.
	ErrClosed = errors.New("cache: closed")
)

// Redis is the subset of go-redis the cache needs. *redis.Client,
// *redis.ClusterClient, *redis.Ring and redis.UniversalClient all satisfy it.
type Redis interface {
	redis.Scripter
	Get(ctx context.Context, key string) *redis.StringCmd
	Del(ctx context.Context, keys ...string) *redis.IntCmd
	Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error)
}

// Config configures a Cache. The zero value is usable: every field has a
// default.
type Config struct {
	// Prefix is the deployment's global key prefix, prepended to every key
	// (e.g. "myapp:"). If it holds a Redis Cluster hash tag ("{app}:") all
	// cache keys share that slot. Defaults to "".
	Prefix string

	// Logger receives one line per notable decision (degraded, lock lost,
	// compute failed). Keys are never logged, only a short hash of them.
	// Defaults to discarding.
	Logger *slog.Logger

	// Registerer is where the Prometheus collectors are registered.
	// Defaults to nil: not registered anywhere (never the global registry).
	Registerer prometheus.Registerer

	// Codec encodes cached values. Defaults to JSON.
	Codec Codec

	// LockTTL is how long the cross-instance mini-lock lives without being
	// extended. The holder extends it every LockTTL/3 while computing, so it
	// only bounds how long a crashed holder blocks the key. Defaults to 2s.
	LockTTL time.Duration

	// WaitBudget bounds how long a caller waits for another instance's
	// computation before serving stale or computing itself. Keep it above
	// LockTTL, so that when the holder dies one waiter takes the expired
	// lock over instead of every waiting instance computing. Defaults to
	// 2.5s.
	WaitBudget time.Duration

	// PollMin and PollMax bound the jittered exponential backoff of waiters
	// re-reading Redis. PollMax is the most a waiter can lag behind the
	// value appearing (plus a round trip). Default to 5ms and 20ms.
	PollMin, PollMax time.Duration

	// RedisTimeout is the deadline of each Redis call. Past it the call
	// counts as a Redis failure and the cache fails open (computes directly,
	// skips the write). It holds even when the client ignores context
	// deadlines (go-redis without ContextTimeoutEnabled). Defaults to 100ms.
	RedisTimeout time.Duration

	// MaxComputeTime bounds one shared computation. Computations run detached
	// from the callers' contexts (a caller that gives up must not cancel the
	// work others wait for), so this is what stops a hung one. Defaults to
	// 30s.
	MaxComputeTime time.Duration

	// HashKeys stores SHA-256 digests of the caller's keys instead of the
	// keys themselves. Turn it on when keys could hold anything private; the
	// price is that keys are unreadable in redis-cli. Defaults to false.
	HashKeys bool

	// Now is the clock used for soft (stale-while-revalidate) expiry, stored
	// in each entry. Hard expiry is Redis's own PX. Defaults to time.Now.
	Now func() time.Time
}

// ConfigError names the Config field that is wrong. It matches
// ErrInvalidConfig with errors.Is.
type ConfigError struct {
	Field  string // e.g. "LockTTL"
	Reason string
}

func (e *ConfigError) Error() string {
	return ErrInvalidConfig.Error() + ": " + e.Field + " " + e.Reason
}

// Is makes errors.Is(err, ErrInvalidConfig) true.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// Validate reports the first invalid field as a *ConfigError.
func (c Config) Validate() error {
	durations := []struct {
		name string
		d    time.Duration
	}{
		{"LockTTL", c.LockTTL}, {"WaitBudget", c.WaitBudget}, {"PollMin", c.PollMin},
		{"PollMax", c.PollMax}, {"RedisTimeout", c.RedisTimeout}, {"MaxComputeTime", c.MaxComputeTime},
	}
	for _, f := range durations {
		if f.d < 0 {
			return &ConfigError{Field: f.name, Reason: "is negative (" + f.d.String() + ")"}
		}
	}
	if c.LockTTL != 0 && c.LockTTL < 3*time.Millisecond {
		return &ConfigError{Field: "LockTTL", Reason: c.LockTTL.String() + " is below 3ms"}
	}
	if c.PollMin != 0 && c.PollMax != 0 && c.PollMin > c.PollMax {
		return &ConfigError{Field: "PollMin", Reason: c.PollMin.String() + " exceeds PollMax " + c.PollMax.String()}
	}
	if _, err := newKeyer(c.Prefix, false).keys("x"); err != nil {
		return &ConfigError{Field: "Prefix", Reason: "breaks Redis Cluster hash tags (unbalanced '{')"}
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Codec == nil {
		c.Codec = JSON
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.LockTTL, 2*time.Second)
	def(&c.WaitBudget, 2500*time.Millisecond)
	def(&c.PollMin, 5*time.Millisecond)
	def(&c.PollMax, 20*time.Millisecond)
	if c.PollMin > c.PollMax {
		c.PollMin = c.PollMax
	}
	def(&c.RedisTimeout, 100*time.Millisecond)
	def(&c.MaxComputeTime, 30*time.Second)
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Cache is a Redis-backed read-through cache with two-level stampede
// protection. It is safe for concurrent use. Create it with New.
type Cache struct {
	rdb   Redis
	cfg   Config
	keyer keyer
	m     *metrics
	log   *slog.Logger

	// ctxBounded is true when the client itself honours context deadlines
	// on socket I/O, so calls need no watchdog goroutine.
	ctxBounded bool

	flights flightGroup

	mu         sync.Mutex          // guards refreshing and orders wg.Add before Close's Wait
	closed     atomic.Bool         // read on every call, so not under mu
	refreshing map[string]struct{} // keys with a background refresh running here
	wg         sync.WaitGroup      // detached computations and refreshes

	// life is the parent of every detached computation and refresh; Close
	// cancels it when its own context ends before they do.
	life   context.Context
	cancel context.CancelFunc

	// calls counts Redis calls running in a watchdog goroutine (see
	// bounded), which can outlive their caller by the client's ReadTimeout.
	// callsMu orders their Add before Close's Wait; once callsDone is set
	// (all detached work has finished), late calls are no longer counted.
	callsMu   sync.RWMutex
	callsDone bool
	calls     sync.WaitGroup

	// hooks are test seams, set by a test before the Cache is used; nil in
	// production.
	hooks struct {
		joined func() // a caller starts waiting on a flight it did not start
	}
}

// New returns a Cache on rdb. It registers its metrics on cfg.Registerer.
func New(rdb Redis, cfg Config) (*Cache, error) {
	if rdb == nil {
		return nil, fmt.Errorf("%w: nil Redis client", ErrInvalidConfig)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	c := &Cache{
		rdb:        rdb,
		cfg:        cfg,
		keyer:      newKeyer(cfg.Prefix, cfg.HashKeys),
		m:          m,
		log:        cfg.Logger,
		refreshing: make(map[string]struct{}),
	}
	c.life, c.cancel = context.WithCancel(context.Background())
	switch cl := rdb.(type) {
	case *redis.Client:
		c.ctxBounded = cl.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		c.ctxBounded = cl.Options().ContextTimeoutEnabled
	}
	c.flights.m = make(map[string]*flight)
	return c, nil
}

// Invalidate deletes the cached values of keys, so the next read on any
// instance recomputes. It also deletes their mini-locks: a computation that
// started before the invalidation (and may have read old data) then fails
// its fenced write and never stores its result. Callers already waiting on
// such a computation may still receive its value.
func (c *Cache) Invalidate(ctx context.Context, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	ks := make([]redisKeys, 0, len(keys))
	for _, key := range keys {
		k, err := c.keyer.keys(key)
		if err != nil {
			return err
		}
		ks = append(ks, k)
	}
	// Later local callers must not join a flight that began before now.
	for _, k := range ks {
		c.flights.forget(k.value)
	}
	_, err := bounded(c, ctx, func(ctx context.Context) (struct{}, error) {
		_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range ks {
				// Both keys share a hash tag, so one DEL works on a cluster.
				p.Del(ctx, k.value, k.lock)
			}
			return nil
		})
		return struct{}{}, err
	})
	if err != nil {
		c.m.redisErrors.WithLabelValues("invalidate").Inc()
		return fmt.Errorf("cache: invalidate: %w", err)
	}
	return nil
}

// Close is for a process that is shutting down, before it closes Redis.
// New calls get ErrClosed and no background refresh starts any more; Close
// then waits until the detached computations and refreshes already running
// have finished, their Redis writes included, and until no Redis call of
// the cache is still running. When it returns nil, Redis may be closed.
//
// If ctx ends first, Close cancels the context of the work still running
// (compute functions see it end) and returns ctx.Err() without waiting
// further. Close may be called more than once.
func (c *Cache) Close(ctx context.Context) error {
	c.mu.Lock()
	c.closed.Store(true)
	c.mu.Unlock()
	done := make(chan struct{})
	go func() {
		c.wg.Wait()
		// Detached work is over: only calls of callers that raced Close
		// could still start, and those are not waited for.
		c.callsMu.Lock()
		c.callsDone = true
		c.callsMu.Unlock()
		c.calls.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		c.cancel()
		return ctx.Err()
	}
}

// detachedContext is the context of work that outlives its caller: the
// caller's values without its cancellation, bounded by MaxComputeTime and
// by Close.
func (c *Cache) detachedContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.MaxComputeTime)
	stop := context.AfterFunc(c.life, cancel)
	return ctx, func() { stop(); cancel() }
}

// goDetached runs fn in a goroutine Close waits for. It reports false after
// Close.
func (c *Cache) goDetached(fn func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		fn()
	}()
	return true
}

func (c *Cache) isClosed() bool { return c.closed.Load() }

// bounded runs one Redis call under cfg.RedisTimeout. When the client does
// not honour context deadlines on socket I/O, the call runs in a goroutine
// that is abandoned at the deadline: a hung Redis then costs the caller
// RedisTimeout, not the client's ReadTimeout. Close waits for such
// goroutines.
func bounded[R any](c *Cache, ctx context.Context, fn func(context.Context) (R, error)) (R, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RedisTimeout)
	defer cancel()
	if c.ctxBounded {
		return fn(ctx)
	}
	type res struct {
		r   R
		err error
	}
	c.callsMu.RLock()
	counted := !c.callsDone
	if counted {
		c.calls.Add(1)
	}
	c.callsMu.RUnlock()
	ch := make(chan res, 1)
	go func() {
		if counted {
			defer c.calls.Done()
		}
		r, err := fn(ctx)
		ch <- res{r, err}
	}()
	select {
	case r := <-ch:
		return r.r, r.err
	case <-ctx.Done():
		var zero R
		return zero, ctx.Err()
	}
}

// newToken returns a random lock owner token.
func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}
