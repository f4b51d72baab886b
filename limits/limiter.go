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
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/digis/jobworker/internal/scriptbatch"
)

// Sentinel errors, for errors.Is.
var (
	// ErrInvalidConfig wraps every configuration error from New, Validate,
	// NewIPExtractor and the middleware's ToMiddleware.
	ErrInvalidConfig = errors.New("limits: invalid config")
	// ErrUnknownBucket: the bucket is not in the configuration.
	ErrUnknownBucket = errors.New("limits: unknown bucket")
	// ErrInvalidCost: AllowN with n < 1 or n above the bucket's limit (such a
	// request could never be admitted, so it is refused before Redis).
	ErrInvalidCost = errors.New("limits: invalid cost")
	// ErrNoIdentity: the identifier is empty.
	ErrNoIdentity = errors.New("limits: empty identifier")
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
	// ReasonBlockedLocally: refused from the local block cache, no Redis call.
	ReasonBlockedLocally Reason = "blocked-locally"
	// ReasonDegraded: Redis failed or missed the deadline; the bucket's
	// failure policy decided (Allowed tells which way).
	ReasonDegraded Reason = "degraded"
)

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
	// Remaining requests in the current window; never negative. It counts
	// what is left in Redis plus what this instance holds leased; requests
	// other instances hold leased are not in it. For a fail-open degraded
	// decision usage is unknown and the full quota minus this request is
	// reported.
	Remaining int
	// Reset is when the current window ends, by the Redis server's clock.
	Reset time.Time
	// ResetAfter is the time from the decision to Reset.
	ResetAfter time.Duration
	// RetryAfter is how long to wait before retrying a refused request; 0
	// when allowed.
	RetryAfter time.Duration
	// Err is the Redis error behind a degraded decision; nil otherwise.
	Err error

	// The bucket's constant header values, rendered once by the Limiter.
	limitValue, policyValue string
}

// Config configures a Limiter. The zero value of every optional field picks
// its default.
type Config struct {
	// Client is any go-redis client (single node, cluster, ring). Required.
	Client Client
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
	// FailClosed lists tier and/or bucket names that deny when Redis cannot
	// answer (see ParseFailClosed). Defaults to none: every bucket fails open.
	FailClosed []string
	// Leases maps tier and/or bucket names (a bucket's entry wins over its
	// tier's) to the most requests of one identifier's window an instance
	// may take from Redis ahead of need and then admit from memory (see
	// ParseLeases and "Leases" in the package doc). It trades up to that
	// many requests per instance and identifier going unused for far fewer
	// round trips on busy identifiers; it never admits more than the limit.
	// Must not exceed the bucket's limit. Defaults to none: every request
	// of a window with quota left asks Redis.
	Leases map[string]int
	// Timeout is the deadline of one Redis round trip. Defaults to 50ms. It
	// holds with any client; set go-redis's ContextTimeoutEnabled so the
	// connection is also freed at the deadline (otherwise the call lingers in
	// the background until the client's ReadTimeout).
	Timeout time.Duration
	// DegradedRetryAfter is the Retry-After of a fail-closed degraded
	// decision. Defaults to 1s.
	DegradedRetryAfter time.Duration
	// LocalCacheSize bounds the local block cache (entries). Defaults to
	// 10000; a negative value disables the cache.
	LocalCacheSize int
	// HashKey, when set, keys the identifier hash (HMAC-SHA-256), so Redis
	// keys cannot be reversed to IP addresses by trying all of them. Every
	// instance sharing a Redis must use the same key. Defaults to none (plain
	// truncated SHA-256, still no raw identifier in Redis).
	HashKey []byte
	// MaxInFlight bounds the decision round trips outstanding at once per
	// Limiter; decisions arriving while all are busy are sent together as one
	// pipeline when one returns (a lone caller is never delayed). Batching
	// cuts syscalls, the main cost under load. Defaults to 4; a negative
	// value sends every decision on its own.
	MaxInFlight int
	// Registerer receives the metrics. Defaults to nil: not registered.
	Registerer prometheus.Registerer
	// Logger receives degraded-mode warnings. Defaults to nil: discarded.
	Logger *slog.Logger
	// LogEvery is the minimum interval between two degraded-mode log lines;
	// the lines in between are counted in the next one. Defaults to 10s.
	LogEvery time.Duration
}

// Defaults for Config.
const (
	DefaultTimeout            = 50 * time.Millisecond
	DefaultDegradedRetryAfter = time.Second
	DefaultLocalCacheSize     = 10000
	DefaultLogEvery           = 10 * time.Second
	DefaultMaxInFlight        = 4
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
	if c.LogEvery == 0 {
		c.LogEvery = DefaultLogEvery
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	return c
}

// Validate reports the first configuration error, wrapped in
// ErrInvalidConfig.
func (c Config) Validate() error {
	_, err := c.withDefaults().policies()
	return err
}

func (c Config) policies() (map[string]Policy, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, a...)...)
	}
	if c.Client == nil {
		return nil, bad("Client is required")
	}
	if strings.ContainsAny(c.Prefix, "{}") {
		return nil, bad("Prefix %q must not contain braces (they would set the hash tag)", c.Prefix)
	}
	if c.Timeout < 0 || c.DegradedRetryAfter < 0 || c.LogEvery < 0 {
		return nil, bad("durations must not be negative")
	}
	if len(c.Leases) > 0 && c.LocalCacheSize < 0 {
		return nil, bad("Leases need the local cache (LocalCacheSize must not be negative)")
	}
	p, err := resolvePolicies(c.Tiers, c.Buckets, c.Overrides, c.FailClosed, c.Leases)
	if err != nil {
		return nil, bad("%v", err)
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
	hashKey    []byte
	hashPool   sync.Pool
	metrics    *metrics
	logger     *slog.Logger
	logs       logThrottle
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
	policies, err := cfg.policies()
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
		hashKey:    append([]byte(nil), cfg.HashKey...),
		metrics:    m,
		logger:     logger,
		logs:       logThrottle{every: cfg.LogEvery},
	}
	l.hashPool.New = func() any {
		if len(l.hashKey) > 0 {
			return hmac.New(sha256.New, l.hashKey)
		}
		return sha256.New()
	}
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
// refused request consumes nothing. Redis failures do not return an error:
// they yield a ReasonDegraded result decided by the bucket's failure policy.
// Errors are reserved for misuse (unknown bucket, bad cost, empty
// identifier) and for ctx ending before Redis answered.
func (l *Limiter) AllowN(ctx context.Context, bucketName, identifier string, n int) (Result, error) {
	b, key, err := l.prepare(bucketName, identifier)
	if err != nil {
		return Result{}, err
	}
	if n < 1 || n > b.Limit {
		return Result{}, fmt.Errorf("%w: %d for bucket %q with limit %d", ErrInvalidCost, n, bucketName, b.Limit)
	}
	start := time.Now()
	switch e, out, extra := l.cache.take(key, n, b.Lease, start); out {
	case spent:
		b.m.byReason[ReasonAllowedLocally].Inc()
		return b.local(ReasonAllowedLocally, e, start), nil
	case blocked:
		b.m.cacheHits.Inc()
		b.m.byReason[ReasonBlockedLocally].Inc()
		return b.local(ReasonBlockedLocally, e, start), nil
	default:
		rep, err := l.run(ctx, key, b.Quota, n, n+extra)
		if err != nil {
			l.cache.unask(key, extra)
			if ctx.Err() != nil {
				return Result{}, ctx.Err()
			}
			return l.degraded(b, n, err), nil
		}
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
		e = l.cache.settle(key, fresh, extra, keep, time.Now())
		res := b.base()
		res.Allowed, res.Reason, res.Remaining = rep.allowed, ReasonAllowed, e.tokens+e.remaining
		res.Reset, res.ResetAfter = fresh.reset, rep.ttl
		if !rep.allowed {
			res.Reason, res.RetryAfter = ReasonDenied, rep.ttl
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

// local is a decision answered from e with no Redis call.
func (b *bucket) local(reason Reason, e localEntry, now time.Time) Result {
	res := b.base()
	res.Allowed, res.Reason, res.Remaining = reason == ReasonAllowedLocally, reason, e.tokens+e.remaining
	res.Reset, res.ResetAfter = e.reset, e.until.Sub(now)
	if !res.Allowed {
		res.RetryAfter = res.ResetAfter
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
	rep, err := l.run(ctx, key, b.Quota, 0, 0)
	if err != nil {
		if ctx.Err() != nil {
			return Result{}, ctx.Err()
		}
		return l.degraded(b, 0, err), nil
	}
	res := b.result(rep)
	res.Remaining += l.cache.peek(key, time.Now()).tokens
	res.Allowed = res.Remaining > 0
	res.Reason = ReasonAllowed
	if !res.Allowed {
		res.Reason = ReasonDenied
		res.RetryAfter = res.ResetAfter
	}
	return res, nil
}

// Reset clears identifier's window in bucket (one DEL of one key, never a
// scan) and forgets this instance's block and lease. Other instances' local
// caches keep refusing that identifier (or admitting from their lease) until
// their cached window ends.
func (l *Limiter) Reset(ctx context.Context, bucketName, identifier string) error {
	_, key, err := l.prepare(bucketName, identifier)
	if err != nil {
		return err
	}
	l.cache.remove(key)
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	if err := l.client.Del(ctx, key).Err(); err != nil {
		return fmt.Errorf("limits: reset %q: %w", bucketName, err)
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
// as a truncated (optionally keyed) SHA-256, and the braces make it the hash
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

func (l *Limiter) run(ctx context.Context, key string, q Quota, cost, want int) (reply, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	return l.decide(ctx, key, q, cost, want)
}

func (l *Limiter) observe(d time.Duration, err error) {
	obs := l.metrics.redisOK
	if err != nil {
		obs = l.metrics.redisErr
	}
	obs.Observe(d.Seconds())
}

func (b *bucket) result(rep reply) Result {
	remaining := b.Limit - int(rep.used)
	if remaining < 0 {
		remaining = 0 // the limit was lowered under a live window
	}
	res := b.base()
	res.Allowed, res.Remaining = rep.allowed, remaining
	res.Reset, res.ResetAfter = rep.now.Add(rep.ttl), rep.ttl
	return res
}

// degraded applies the bucket's failure policy, counts and (throttled) logs.
func (l *Limiter) degraded(b *bucket, n int, cause error) Result {
	res := b.base()
	res.Reason, res.Err = ReasonDegraded, cause
	action := "open"
	if b.FailClosed {
		action = "closed"
		res.RetryAfter, res.ResetAfter = l.degradedRA, l.degradedRA
		b.m.degradedClosed.Inc()
	} else {
		res.Allowed = true
		res.Remaining = max(b.Limit-n, 0)
		res.ResetAfter = b.Period
		b.m.degradedOpen.Inc()
	}
	res.Reset = time.Now().Add(res.ResetAfter)
	if n > 0 {
		b.m.byReason[ReasonDegraded].Inc()
	}
	if suppressed, ok := l.logs.allow(time.Now()); ok {
		l.logger.Warn("rate limit degraded: Redis unavailable",
			"bucket", b.Bucket, "tier", b.Tier, "action", action,
			"error", cause.Error(), "suppressed", suppressed)
	}
	return res
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
