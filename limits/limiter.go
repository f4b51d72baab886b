package limits

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/scriptbatch"
)

// Reason says how a decision was reached.
type Reason string

const (
	// ReasonAllowed: Redis admitted the request and counted it.
	ReasonAllowed Reason = "allowed"
	// ReasonDenied: Redis refused it; nothing was consumed.
	ReasonDenied Reason = "denied"
	// ReasonAllowedLocally: admitted from requests this instance leased
	// earlier in the same window (see Config.Leases), no Redis call.
	ReasonAllowedLocally Reason = "allowed-locally"
	// ReasonBlockedLocally: refused from the local block cache: this
	// instance knows the window is spent. No Redis call.
	ReasonBlockedLocally Reason = "blocked-locally"
	// ReasonDegradedLocal: Redis could not answer and the bucket falls back
	// to the local limiter (FailureLocal), which decided; Allowed tells
	// which way.
	ReasonDegradedLocal Reason = "degraded-local"
	// ReasonDegradedClosed: Redis could not answer and the request was
	// refused: the bucket fails closed (FailureClosed), or the local limiter
	// had no room for a new identifier. HTTP 503.
	ReasonDegradedClosed Reason = "degraded-closed"
	// ReasonDegradedOpen: Redis could not answer and the bucket fails open
	// (FailureOpen): admitted with no limit.
	ReasonDegradedOpen Reason = "degraded-open"
	// ReasonOverloaded: this instance had more decisions waiting for Redis
	// than Config.MaxQueue; the request was refused without asking Redis.
	// HTTP 503.
	ReasonOverloaded Reason = "overloaded"
)

// Degraded reports whether the decision was taken without Redis because
// Redis could not answer.
func (r Reason) Degraded() bool {
	return r == ReasonDegradedLocal || r == ReasonDegradedClosed || r == ReasonDegradedOpen
}

// Unavailable reports whether a refusal says "this service cannot decide
// now" (503) rather than "this client used its quota" (429).
func (r Reason) Unavailable() bool { return r == ReasonDegradedClosed || r == ReasonOverloaded }

// Result is one decision, in units that cannot be confused: times are
// time.Time, waits are time.Duration.
type Result struct {
	Bucket string
	Tier   string
	// Allowed reports whether the request may proceed.
	Allowed bool
	Reason  Reason
	// Limit and Period are the bucket's quota.
	Limit  int
	Period time.Duration
	// Remaining requests in the current window; never negative, and on a
	// refusal always less than the cost asked for (0 for Allow). From
	// Redis it counts what is left there plus what this instance holds
	// leased (not what other instances hold); from the local limiter of an
	// outage, what is left in this instance's local window; 0 when refused
	// for a failure or overload.
	Remaining int
	// Reset is when the current window ends: by the Redis server's clock
	// for Redis decisions, by this instance's for local ones, and the
	// Retry-After instant for 503 refusals.
	Reset time.Time
	// ResetAfter is the time from the decision to Reset.
	ResetAfter time.Duration
	// RetryAfter is how long to wait before retrying a refused request; 0
	// when allowed.
	RetryAfter time.Duration
	// Err is the Redis error behind a degraded or overloaded decision; nil
	// otherwise.
	Err error

	// The bucket's constant header values, rendered once by the Limiter.
	limitValue, policyValue string
}

// Config configures a Limiter. The zero value of every optional field picks
// its default.
type Config struct {
	// Client is any go-redis client (single node, cluster, ring). Required.
	Client Client
	// HashKey keys the identifier hash in Redis keys (HMAC-SHA-256), so the
	// keys cannot be reversed to IP addresses or user ids by hashing
	// guesses. Every instance sharing a Redis must use the same key;
	// changing it starts every window afresh once. Keep it out of Redis.
	// Required, at least MinHashKeyLen bytes.
	HashKey []byte
	// Prefix is the deployment's global key prefix, prepended to every key
	// (e.g. "myapp:"). Must not contain '{' or '}'. Defaults to "".
	Prefix string
	// Tiers maps a tier name to its quota. Defaults to DefaultTiers().
	Tiers map[string]Quota
	// Buckets maps a bucket name to its tier. Defaults to DefaultBuckets().
	Buckets map[string]string
	// Overrides replaces the quota of single buckets (see ParseOverrides).
	// Defaults to none.
	Overrides map[string]Quota
	// Failure maps tier and/or bucket names (a bucket's entry wins over its
	// tier's) to what their decisions do while Redis cannot answer (see
	// ParseFailure and "Degraded mode" in the package doc). Names not
	// listed keep the defaults: the strict tier FailureClosed, every other
	// tier FailureLocal.
	Failure map[string]FailureMode
	// Leases maps tier and/or bucket names (a bucket's entry wins over its
	// tier's) to the most requests of one identifier's window an instance
	// may take from Redis ahead of need and then admit from memory (see
	// ParseLeases and "Leases" in the package doc). It trades up to that
	// many requests per instance and identifier going unused for far fewer
	// round trips on busy identifiers; it never admits more than the limit.
	// Must not exceed the bucket's limit. Defaults to none: every request
	// of a window with quota left asks Redis.
	Leases map[string]int
	// Timeout is the deadline of one Redis round trip, measured from when
	// it is sent: time queued behind other round trips does not count.
	// Defaults to 50ms. Set go-redis's ContextTimeoutEnabled so the
	// connection is also freed at the deadline (otherwise the call lingers
	// in the background until the client's ReadTimeout).
	Timeout time.Duration
	// DegradedRetryAfter is the Retry-After of a 503 refusal (failure or
	// overload). Defaults to 1s.
	DegradedRetryAfter time.Duration
	// LocalCacheSize bounds the local block and lease cache (entries).
	// Defaults to 10000; a negative value disables it (and Leases).
	LocalCacheSize int
	// DegradedCacheSize bounds the windows the outage limiter keeps
	// (identifiers per instance); a new identifier finding no room during
	// an outage is refused. Defaults to 10000.
	DegradedCacheSize int
	// MaxInFlight bounds the decision round trips outstanding at once per
	// Limiter; decisions arriving while all are busy are sent together when
	// one returns, as one script run on a single-server client (a lone
	// caller is never delayed). Batching cuts syscalls and Redis's per-call
	// work, the main cost under load; fewer slots make larger batches.
	// Defaults to 2; a negative value sends every decision on its own.
	MaxInFlight int
	// MaxQueue bounds the decisions waiting for a round trip; one arriving
	// when it is full is refused as ReasonOverloaded (503) without asking
	// Redis. Defaults to 1024.
	MaxQueue int
	// Registerer receives the metrics. Defaults to nil: not registered.
	Registerer prometheus.Registerer
	// Logger receives degraded-mode warnings. Defaults to nil: discarded.
	Logger *slog.Logger
	// LogEvery is the minimum interval between two degraded-mode log lines;
	// the lines in between are counted in the next one. Defaults to 10s.
	LogEvery time.Duration

	// now is the clock of everything kept in this instance's memory
	// (block cache, leases, the outage limiter); a test hook.
	// Defaults to time.Now. Windows in Redis follow the Redis server's
	// clock only.
	now func() time.Time
	// unmerged sends batches as pipelines of single-decision scripts even
	// where they could be one script run (the behaviour before merged
	// batches); a benchmark hook.
	unmerged bool
}

// Defaults for Config.
const (
	DefaultTimeout            = 50 * time.Millisecond
	DefaultDegradedRetryAfter = time.Second
	DefaultLocalCacheSize     = 10000
	DefaultDegradedCacheSize  = 10000
	DefaultLogEvery           = 10 * time.Second
	DefaultMaxInFlight        = 2
	DefaultMaxQueue           = 1024
	// MinHashKeyLen is the shortest HashKey accepted.
	MinHashKeyLen = 16
)

func (c Config) withDefaults() Config {
	if c.Tiers == nil {
		c.Tiers = DefaultTiers()
	}
	if c.Buckets == nil {
		c.Buckets = DefaultBuckets()
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.DegradedRetryAfter == 0 {
		c.DegradedRetryAfter = DefaultDegradedRetryAfter
	}
	if c.LocalCacheSize == 0 {
		c.LocalCacheSize = DefaultLocalCacheSize
	}
	if c.DegradedCacheSize == 0 {
		c.DegradedCacheSize = DefaultDegradedCacheSize
	}
	if c.LogEvery == 0 {
		c.LogEvery = DefaultLogEvery
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.MaxQueue == 0 {
		c.MaxQueue = DefaultMaxQueue
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

// Validate reports the first configuration error as a *ConfigError
// (matching ErrInvalidConfig) naming the field.
func (c Config) Validate() error {
	_, err := c.withDefaults().validate()
	return err
}

// Policies resolves the per-bucket policies (tiers, buckets, overrides,
// failure modes, leases) without needing a client, e.g. to check settings
// at start-up or to print them. Errors are *ConfigError values.
func (c Config) Policies() (map[string]Policy, error) {
	c = c.withDefaults()
	return resolvePolicies(c.Tiers, c.Buckets, c.Overrides, c.Failure, c.Leases)
}

func (c Config) validate() (map[string]Policy, error) {
	if c.Client == nil {
		return nil, configErr("Client", "", "required")
	}
	if len(c.HashKey) < MinHashKeyLen {
		return nil, configErr("HashKey", "", "required: at least %d bytes, shared by every instance (got %d)", MinHashKeyLen, len(c.HashKey))
	}
	if strings.ContainsAny(c.Prefix, "{}") {
		return nil, configErr("Prefix", "", "%q must not contain braces (they would set the hash tag)", c.Prefix)
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{{"Timeout", c.Timeout}, {"DegradedRetryAfter", c.DegradedRetryAfter}, {"LogEvery", c.LogEvery}} {
		if d.v < 0 {
			return nil, configErr(d.field, "", "%s must not be negative", d.v)
		}
	}
	if c.DegradedCacheSize < 0 {
		return nil, configErr("DegradedCacheSize", "", "%d must not be negative", c.DegradedCacheSize)
	}
	if c.MaxQueue < 0 {
		return nil, configErr("MaxQueue", "", "%d must not be negative", c.MaxQueue)
	}
	p, err := resolvePolicies(c.Tiers, c.Buckets, c.Overrides, c.Failure, c.Leases)
	if err != nil {
		return nil, err
	}
	if c.LocalCacheSize < 0 {
		for _, n := range sortedKeys(c.Leases) {
			if c.Leases[n] > 0 {
				return nil, configErr("Leases", n, "leases need the local cache (LocalCacheSize must not be negative)")
			}
		}
	}
	return p, nil
}

// Limiter decides requests per bucket and identifier against Redis. It is
// safe for concurrent use.
type Limiter struct {
	client     Client
	batch      *scriptbatch.Batcher
	timeout    time.Duration
	degradedRA time.Duration
	buckets    map[string]*bucket
	cache      *localCache
	fallback   *fallback
	hashPool   sync.Pool
	metrics    *metrics
	logger     *slog.Logger
	logs       logThrottle
	now        func() time.Time
	// resetChannel and keyPrefix (Prefix + "rl:") are for Listen; resets
	// counts the resets applied, so a round trip that overlapped one is
	// not remembered.
	resetChannel string
	keyPrefix    string
	resets       atomic.Uint64
}

type bucket struct {
	Policy
	keyPrefix   string // Prefix + "rl:" + tier + ":" + bucket + ":{"
	m           *bucketMetrics
	limitValue  string // X-RateLimit-Limit
	policyValue string // RateLimit-Policy
}

// New builds a Limiter from cfg.
func New(cfg Config) (*Limiter, error) {
	cfg = cfg.withDefaults()
	policies, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	l := &Limiter{
		client:     cfg.Client,
		timeout:    cfg.Timeout,
		degradedRA: cfg.DegradedRetryAfter,
		buckets:    make(map[string]*bucket, len(policies)),
		cache:      newLocalCache(cfg.LocalCacheSize),
		fallback:   newFallback(cfg.DegradedCacheSize),
		metrics:    m,
		logger:     logger,
		logs:       logThrottle{every: cfg.LogEvery},
		now:        cfg.now,

		resetChannel: cfg.Prefix + ResetChannel,
		keyPrefix:    cfg.Prefix + "rl:",
	}
	key := append([]byte(nil), cfg.HashKey...)
	l.hashPool.New = func() any { return hmac.New(sha256.New, key) }
	l.batch = newBatcher(cfg, l.observe)
	for name, p := range policies {
		b := &bucket{
			Policy:    p,
			keyPrefix: cfg.Prefix + "rl:" + p.Tier + ":" + name + ":{",
			m:         m.forBucket(p),
		}
		b.limitValue, b.policyValue = policyValues(name, p.Quota)
		l.buckets[name] = b
	}
	return l, nil
}

// Policy returns the resolved policy of bucket.
func (l *Limiter) Policy(bucket string) (Policy, bool) {
	b, ok := l.buckets[bucket]
	if !ok {
		return Policy{}, false
	}
	return b.Policy, true
}

// Allow is AllowN(ctx, bucket, identifier, 1).
func (l *Limiter) Allow(ctx context.Context, bucketName, identifier string) (Result, error) {
	return l.AllowN(ctx, bucketName, identifier, 1)
}

// AllowN decides whether identifier may spend n requests of bucket now. A
// refused request consumes nothing. Redis failures and overload do not
// return an error: they yield a result with a degraded or overloaded
// Reason. Errors are reserved for misuse (unknown bucket, bad cost, empty
// identifier) and for ctx ending before Redis answered.
func (l *Limiter) AllowN(ctx context.Context, bucketName, identifier string, n int) (Result, error) {
	b, key, err := l.prepare(bucketName, identifier)
	if err != nil {
		return Result{}, err
	}
	if n < 1 || n > b.Limit {
		return Result{}, fmt.Errorf("%w: %d for bucket %q with limit %d", ErrInvalidCost, n, bucketName, b.Limit)
	}
	start := l.now()
	gen := l.resets.Load()
	switch e, out, extra := l.cache.take(key, n, b.Lease, start); out {
	case spent:
		return b.local(ReasonAllowedLocally, e, n, start), nil
	case blocked:
		return b.local(ReasonBlockedLocally, e, n, start), nil
	default:
		rep, err := l.decide(ctx, key, b.Quota, n, n+extra)
		if err != nil {
			l.cache.unask(key, extra)
			if ctx.Err() != nil {
				return Result{}, ctx.Err()
			}
			return l.failed(b, key, n, err), nil
		}
		now := l.now()
		fresh := localEntry{
			remaining: max(b.Limit-int(rep.used), 0), // 0 if the limit was lowered under a live window
			until:     start.Add(rep.ttl),
			reset:     rep.now.Add(rep.ttl),
		}
		if rep.allowed {
			fresh.tokens, fresh.taken = rep.taken-n, rep.taken
		}
		// Remember a spent window (later requests are refused without
		// Redis) and, in a leasing bucket, every window: the lease and how
		// busy the identifier is here.
		keep := !rep.allowed || fresh.remaining == 0 || b.Lease > 0
		if l.resets.Load() != gen {
			keep = false // a reset arrived meanwhile: this answer may predate it
		}
		e = l.cache.settle(key, fresh, extra, keep, now)
		if !rep.allowed {
			// Redis has nothing left, but a concurrent round trip may have
			// leased this instance enough meanwhile: serve from it rather
			// than refuse a request the instance holds quota for.
			if e2, out, _ := l.cache.take(key, n, 0, now); out == spent {
				return b.local(ReasonAllowedLocally, e2, n, now), nil
			} else if out == blocked {
				e = e2
			}
		}
		res := b.base()
		res.Allowed, res.Reason, res.Remaining = rep.allowed, ReasonAllowed, e.tokens+e.remaining
		res.Reset, res.ResetAfter = fresh.reset, rep.ttl
		if !rep.allowed {
			res.Reason, res.RetryAfter = ReasonDenied, rep.ttl
			res.Remaining = min(res.Remaining, n-1)
		}
		b.m.byReason[res.Reason].Inc()
		return res, nil
	}
}

// base is a Result with the bucket's constant fields filled in.
func (b *bucket) base() Result {
	return Result{
		Bucket: b.Bucket, Tier: b.Tier, Limit: b.Limit, Period: b.Period,
		limitValue: b.limitValue, policyValue: b.policyValue,
	}
}

// local is a decision answered from the local cache entry e with no Redis
// call, counted.
func (b *bucket) local(reason Reason, e localEntry, n int, now time.Time) Result {
	res := b.base()
	res.Allowed, res.Reason, res.Remaining = reason == ReasonAllowedLocally, reason, e.tokens+e.remaining
	res.Reset, res.ResetAfter = e.reset, e.until.Sub(now)
	if !res.Allowed {
		res.RetryAfter = res.ResetAfter
		res.Remaining = min(res.Remaining, max(n-1, 0))
		if n > 0 {
			b.m.cacheHits.Inc()
		}
	}
	if n > 0 {
		b.m.byReason[reason].Inc()
	}
	return res
}

// Peek reports identifier's state in bucket without consuming anything:
// Allowed tells whether one more request would be admitted now.
func (l *Limiter) Peek(ctx context.Context, bucketName, identifier string) (Result, error) {
	b, key, err := l.prepare(bucketName, identifier)
	if err != nil {
		return Result{}, err
	}
	rep, err := l.decide(ctx, key, b.Quota, 0, 0)
	if err != nil {
		if ctx.Err() != nil {
			return Result{}, ctx.Err()
		}
		return l.failed(b, key, 0, err), nil
	}
	now := l.now()
	res := b.base()
	res.Remaining = max(b.Limit-int(rep.used), 0) + l.cache.peek(key, now).tokens
	res.Reset, res.ResetAfter = rep.now.Add(rep.ttl), rep.ttl
	res.Allowed, res.Reason = res.Remaining > 0, ReasonAllowed
	if !res.Allowed {
		res.Reason, res.RetryAfter = ReasonDenied, res.ResetAfter
	}
	return res, nil
}

// Reset clears identifier's window in bucket (one DEL of one key, never a
// scan), forgets this instance's block, lease and outage window, and
// publishes the reset so every instance running Listen forgets them too.
// The DEL is what counts: an error is returned only when it failed; a
// failed publish leaves other instances' caches until their windows end,
// and is returned wrapped in ErrResetNotPublished.
func (l *Limiter) Reset(ctx context.Context, bucketName, identifier string) error {
	_, key, err := l.prepare(bucketName, identifier)
	if err != nil {
		return err
	}
	l.forget(key)
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	if err := l.client.Del(ctx, key).Err(); err != nil {
		return fmt.Errorf("limits: reset %q: %w", bucketName, err)
	}
	if err := l.publishReset(ctx, key); err != nil {
		return fmt.Errorf("%w: %q: %w", ErrResetNotPublished, bucketName, err)
	}
	return nil
}

func (l *Limiter) prepare(bucketName, identifier string) (*bucket, string, error) {
	b, ok := l.buckets[bucketName]
	if !ok {
		return nil, "", fmt.Errorf("%w: %q", ErrUnknownBucket, bucketName)
	}
	if identifier == "" {
		return nil, "", ErrNoIdentity
	}
	return b, l.key(b, identifier), nil
}

// key is Prefix + "rl:{tier}:{bucket}:{<hash>}": the identifier appears only
// as a truncated HMAC-SHA-256 under HashKey, and the braces make it the hash
// tag, so identifiers spread over cluster slots.
func (l *Limiter) key(b *bucket, identifier string) string {
	h := l.hashPool.Get().(hash.Hash)
	h.Reset()
	_, _ = io.WriteString(h, identifier)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	l.hashPool.Put(h)
	var hx [32]byte
	hex.Encode(hx[:], sum[:16])
	var sb strings.Builder
	sb.Grow(len(b.keyPrefix) + len(hx) + 1)
	sb.WriteString(b.keyPrefix)
	sb.Write(hx[:])
	sb.WriteByte('}')
	return sb.String()
}

func (l *Limiter) observe(d time.Duration, err error) {
	obs := l.metrics.redisOK
	if err != nil {
		obs = l.metrics.redisErr
	}
	obs.Observe(d.Seconds())
}

// overloaded reports errors meaning this process, not Redis, had no room:
// the batcher's queue or the client's connection pool was full.
func overloaded(err error) bool {
	return errors.Is(err, scriptbatch.ErrOverloaded) || errors.Is(err, redis.ErrPoolTimeout)
}

// failed decides a request Redis did not answer (n = 0: a Peek, nothing is
// consumed or counted): overload refuses; a window the local cache knows is
// spent stays refused; otherwise the bucket's failure mode decides.
func (l *Limiter) failed(b *bucket, key string, n int, cause error) Result {
	now := l.now()
	if overloaded(cause) {
		return l.refuse(b, ReasonOverloaded, n, cause, now, "overloaded")
	}
	known := l.cache.peek(key, now)
	if now.Before(known.until) && known.tokens+known.remaining < max(n, 1) {
		return b.local(ReasonBlockedLocally, known, n, now)
	}
	if b.Failure == FailureClosed {
		return l.refuse(b, ReasonDegradedClosed, n, cause, now, "closed")
	}
	open := b.Failure == FailureOpen
	res := b.base()
	res.Reason, res.Err = ReasonDegradedLocal, cause
	if open {
		res.Reason = ReasonDegradedOpen
	}
	var w fallbackWindow
	out := localAdmitted
	if n == 0 {
		w = l.fallback.peek(key, now)
		if w.until.IsZero() {
			w.until = now.Add(b.Period)
		}
		if w.used >= b.Limit {
			out = localRefused
		}
	} else {
		w, out = l.fallback.take(key, n, b.Quota, known, open, now)
	}
	action := "local-allowed"
	switch {
	case out == localFull && !open:
		return l.refuse(b, ReasonDegradedClosed, n, cause, now, "closed-local-full")
	case open:
		action = "open"
		res.Allowed = true
	case out == localAdmitted:
		res.Allowed = true
	default:
		action = "local-refused"
	}
	if out == localFull {
		w = fallbackWindow{used: b.Limit, until: now.Add(b.Period)} // nothing known: report none left
	}
	res.Remaining = max(b.Limit-w.used, 0)
	res.Reset, res.ResetAfter = w.until, w.until.Sub(now)
	if !res.Allowed {
		res.RetryAfter = res.ResetAfter
		res.Remaining = min(res.Remaining, max(n-1, 0))
	}
	l.count(b, res.Reason, action, n, cause, now)
	return res
}

// refuse is a 503 refusal: nothing is known of the window.
func (l *Limiter) refuse(b *bucket, reason Reason, n int, cause error, now time.Time, action string) Result {
	res := b.base()
	res.Reason, res.Err = reason, cause
	res.RetryAfter, res.ResetAfter = l.degradedRA, l.degradedRA
	res.Reset = now.Add(res.ResetAfter)
	l.count(b, reason, action, n, cause, now)
	return res
}

// count records a failed or overloaded decision and logs it, throttled.
func (l *Limiter) count(b *bucket, reason Reason, action string, n int, cause error, now time.Time) {
	if n == 0 {
		return // a Peek decides nothing
	}
	b.m.byReason[reason].Inc()
	if reason != ReasonOverloaded {
		b.m.degraded(action).Inc()
	}
	if suppressed, ok := l.logs.allow(now); ok {
		msg := "rate limit degraded: Redis unavailable"
		if reason == ReasonOverloaded {
			msg = "rate limit overloaded: decision queue full"
		}
		l.logger.Warn(msg, "bucket", b.Bucket, "tier", b.Tier, "action", action,
			"error", cause.Error(), "suppressed", suppressed)
	}
}

// logThrottle lets one log line through per interval and counts the rest.
type logThrottle struct {
	every      time.Duration
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (t *logThrottle) allow(now time.Time) (suppressed int, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.last.IsZero() && now.Sub(t.last) < t.every {
		t.suppressed++
		return 0, false
	}
	suppressed, t.suppressed, t.last = t.suppressed, 0, now
	return suppressed, true
}
