package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Option adjusts one GetOrCompute call. When several local callers share a
// flight, the options of the one that started it apply.
type Option func(*params)

type params struct {
	codec      Codec
	swr        time.Duration
	staleIfErr time.Duration
	lockTTL    time.Duration
	waitBudget time.Duration
	outcome    *Outcome
}

// WithStaleWhileRevalidate keeps a value for d after its TTL. In that window
// callers get the stale value at once while one instance refreshes it in the
// background under the mini-lock, so hot keys never block on expiry.
func WithStaleWhileRevalidate(d time.Duration) Option {
	return func(p *params) { p.swr = d }
}

// WithStaleIfError keeps a value for d after its TTL to serve when the
// refresh fails or the wait budget runs out (RFC 5861). Callers in this
// window still wait for the refresh first. Its window starts at the TTL,
// like WithStaleWhileRevalidate's; the longer of the two sets the key's
// Redis expiry.
func WithStaleIfError(d time.Duration) Option {
	return func(p *params) { p.staleIfErr = d }
}

// WithCodec overrides Config.Codec for this call.
func WithCodec(c Codec) Option { return func(p *params) { p.codec = c } }

// WithLockTTL overrides Config.LockTTL for this call.
func WithLockTTL(d time.Duration) Option { return func(p *params) { p.lockTTL = d } }

// WithWaitBudget overrides Config.WaitBudget for this call.
func WithWaitBudget(d time.Duration) Option { return func(p *params) { p.waitBudget = d } }

// WithOutcome stores the call's Outcome in *dst, e.g. for an X-Cache header.
func WithOutcome(dst *Outcome) Option { return func(p *params) { p.outcome = dst } }

// request is one key's resolution as the flight leader asked for it.
type request struct {
	key     string // the caller's key; logged only as keyHash
	k       redisKeys
	ttl     time.Duration
	p       params
	compute func(context.Context) (any, error)
	decode  func([]byte) (any, error)
}

// GetOrCompute returns the value cached under key, or computes, stores and
// returns it. ttl is how long a value stays fresh; sub-millisecond parts are
// rounded up to whole milliseconds (Redis PX), nothing else is changed.
//
// Concurrent callers of a missing key share one computation: callers in
// this process join the running flight, other instances wait for the Redis
// mini-lock holder, re-reading with jittered backoff for up to WaitBudget.
// Past it they serve a stale value if one is kept (WithStaleIfError), else
// compute themselves. When Redis fails or times out, compute runs directly
// and nothing is stored.
//
// compute runs detached from ctx (with Config.MaxComputeTime as deadline,
// and cancelled if Close gives up waiting for it), so a caller that gives
// up does not cancel it for the others. The same
// value may be returned to many callers: treat it as read-only.
//
// Keys must hold ids (or public handles), never private data, unless
// Config.HashKeys is on.
func GetOrCompute[T any](ctx context.Context, c *Cache, key string, ttl time.Duration,
	compute func(ctx context.Context) (T, error), opts ...Option) (T, error) {
	var zero T
	if c == nil || compute == nil {
		return zero, errors.New("cache: nil cache or compute func")
	}
	p := params{codec: c.cfg.Codec, lockTTL: c.cfg.LockTTL, waitBudget: c.cfg.WaitBudget}
	for _, o := range opts {
		o(&p)
	}
	if ttl <= 0 || p.swr < 0 || p.staleIfErr < 0 {
		return zero, fmt.Errorf("%w: ttl %s, stale windows %s/%s", ErrInvalidTTL, ttl, p.swr, p.staleIfErr)
	}
	if p.lockTTL < 3*time.Millisecond {
		p.lockTTL = 3 * time.Millisecond
	}
	k, err := c.keyer.keys(key)
	if err != nil {
		return zero, err
	}
	if c.isClosed() {
		return zero, ErrClosed
	}
	family := keyFamily(key)
	report := func(o Outcome) {
		c.m.outcome(family, o)
		if p.outcome != nil {
			*p.outcome = o
		}
	}
	rq := &request{
		key: key, k: k, ttl: ttl, p: p,
		compute: func(ctx context.Context) (any, error) { return compute(ctx) },
		decode: func(b []byte) (any, error) {
			var v T
			err := p.codec.Unmarshal(b, &v)
			return v, err
		},
	}

	// A flight for this key means it is missing (or Redis is failing):
	// join it without another GET, which keeps a stampede's load on Redis
	// to the few callers that arrive before the flight starts.
	if f := c.flights.lookup(k.value); f != nil {
		return await[T](ctx, c, f, false, p, report)
	}

	// Fast path: one GET. Only a fresh value, or one in its
	// stale-while-revalidate window, is answered here.
	raw, err := c.get(ctx, k.value)
	redisDown := false
	switch {
	case err == nil:
		if e, derr := decodeEnvelope(raw); derr == nil {
			now := c.cfg.Now().UnixMilli()
			if now < e.serveUntil || now < e.soft {
				var v T
				if uerr := p.codec.Unmarshal(e.payload, &v); uerr == nil {
					if now < e.soft {
						report(OutcomeHit)
						return v, nil
					}
					c.revalidate(ctx, rq)
					report(OutcomeStaleServed)
					return v, nil
				}
			}
		}
	case isNil(err):
	case ctx.Err() != nil:
		report(OutcomeCanceled)
		return zero, ctx.Err()
	default:
		c.redisFailed("get", key, err)
		redisDown = true
	}

	// Slow path: join or lead this process's flight for the key.
	f, leader, ok := c.flights.join(k.value, func(f *flight) bool {
		return c.goDetached(func() {
			fctx, cancel := c.detachedContext(ctx)
			defer cancel()
			c.flights.finish(k.value, f, c.resolve(fctx, rq, redisDown))
		})
	})
	if !ok {
		return zero, ErrClosed
	}
	return await[T](ctx, c, f, leader, p, report)
}

// await waits for flight f (or ctx) and converts its result to T.
func await[T any](ctx context.Context, c *Cache, f *flight, leader bool, p params, report func(Outcome)) (T, error) {
	var zero T
	if !leader && c.hooks.joined != nil {
		c.hooks.joined()
	}
	select {
	case <-f.done:
	case <-ctx.Done():
		report(OutcomeCanceled)
		return zero, ctx.Err()
	}
	r := f.res
	o := r.outcome
	if !leader && o == OutcomeMissComputed {
		o = OutcomeWaitedHit
	}
	report(o)
	if r.err != nil {
		return zero, r.err
	}
	if v, ok := r.val.(T); ok {
		return v, nil
	}
	// Another caller of the same key used another type: go through bytes.
	payload := r.payload
	if payload == nil {
		var err error
		if payload, err = p.codec.Marshal(r.val); err != nil {
			return zero, fmt.Errorf("cache: re-encode for a caller of another type: %w", err)
		}
	}
	var v T
	if err := p.codec.Unmarshal(payload, &v); err != nil {
		return zero, fmt.Errorf("cache: decode for a caller of another type: %w", err)
	}
	return v, nil
}

// resolve is the flight's work: the miss path of one key.
func (c *Cache) resolve(ctx context.Context, rq *request, redisDown bool) result {
	if redisDown {
		return c.computeUnstored(ctx, rq, OutcomeDegraded, nil)
	}
	token := newToken()
	deadline := time.Now().Add(rq.p.waitBudget)
	backoff := c.cfg.PollMin
	var stale *staleValue
	for attempt := 0; ; attempt++ {
		st, raw, err := c.readOrLock(ctx, rq.k, token, rq.p.lockTTL)
		if err != nil {
			c.redisFailed("read_or_lock", rq.key, err)
			return c.computeUnstored(ctx, rq, OutcomeDegraded, stale)
		}
		if raw != nil {
			if e, derr := decodeEnvelope(raw); derr == nil {
				if v, uerr := rq.decode(e.payload); uerr == nil {
					stale = &staleValue{val: v, payload: e.payload, serveUntil: e.serveUntil, soft: e.soft}
				} else {
					c.log.Warn("cache: stored value does not decode; recomputing",
						slog.String("key_hash", keyHash(rq.key)), slog.Any("error", uerr))
				}
			}
		}
		switch st {
		case stateFresh:
			if stale == nil || c.cfg.Now().UnixMilli() >= stale.soft {
				// Undecodable (e.g. the type changed in a deploy): compute,
				// leave it to expire.
				return c.computeUnstored(ctx, rq, OutcomeMissComputed, nil)
			}
			o := OutcomeHit
			if attempt > 0 {
				o = OutcomeWaitedHit
			}
			return result{val: stale.val, payload: stale.payload, outcome: o}
		case stateAcquired:
			return c.computeLocked(ctx, rq, token, stale)
		}
		// Another instance holds the lock.
		if stale != nil && c.cfg.Now().UnixMilli() < stale.serveUntil {
			return stale.result()
		}
		remaining := time.Until(deadline)
		if remaining <= 0 {
			break
		}
		sleep := min(jitter(backoff), remaining)
		backoff = min(backoff*2, c.cfg.PollMax)
		t := time.NewTimer(sleep)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return result{outcome: OutcomeError, err: ctx.Err()}
		}
	}
	if stale != nil {
		c.log.Info("cache: wait budget spent; serving stale", slog.String("key_hash", keyHash(rq.key)))
		return stale.result()
	}
	c.log.Info("cache: wait budget spent; computing without the lock", slog.String("key_hash", keyHash(rq.key)))
	return c.computeUnstored(ctx, rq, OutcomeLockTimeout, nil)
}

type staleValue struct {
	val        any
	payload    []byte
	soft       int64
	serveUntil int64
}

func (s *staleValue) result() result {
	return result{val: s.val, payload: s.payload, outcome: OutcomeStaleServed}
}

// jitter spreads waiters over [d/2, d] so instances do not poll in step.
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// computeLocked runs compute while holding the mini-lock (extending it on a
// ticker) and stores the result with the fenced write.
func (c *Cache) computeLocked(ctx context.Context, rq *request, token string, stale *staleValue) result {
	stop := c.keepLock(ctx, rq, token)
	v, err := c.runCompute(ctx, rq)
	stop()
	if err != nil {
		c.unlock(ctx, rq.k, token)
		return c.computeFailed(rq, err, stale)
	}
	payload, err := rq.p.codec.Marshal(v)
	if err != nil {
		c.unlock(ctx, rq.k, token)
		c.m.writesSkipped.WithLabelValues("encode_error").Inc()
		c.log.Warn("cache: value does not encode; not stored",
			slog.String("key_hash", keyHash(rq.key)), slog.Any("error", err))
		return result{val: v, outcome: OutcomeMissComputed}
	}
	now := c.cfg.Now()
	soft := now.Add(rq.ttl).UnixMilli()
	entry := encodeEnvelope(soft, now.Add(rq.ttl+rq.p.swr).UnixMilli(), payload)
	stored, err := c.store(ctx, rq.k, token, entry, rq.ttl+max(rq.p.swr, rq.p.staleIfErr))
	switch {
	case err != nil:
		c.redisFailed("store", rq.key, err)
		c.m.writesSkipped.WithLabelValues("redis_error").Inc()
	case !stored:
		// Expired while we were stuck, taken over, or invalidated: our value
		// may predate the invalidation, so it must not land.
		c.m.writesSkipped.WithLabelValues("lock_lost").Inc()
		c.log.Info("cache: lock lost before store; value not stored", slog.String("key_hash", keyHash(rq.key)))
	}
	return result{val: v, payload: payload, outcome: OutcomeMissComputed}
}

// computeUnstored computes without the lock and stores nothing: Redis is
// failing, the wait budget is spent, or the stored value is unreadable.
func (c *Cache) computeUnstored(ctx context.Context, rq *request, o Outcome, stale *staleValue) result {
	v, err := c.runCompute(ctx, rq)
	if err != nil {
		return c.computeFailed(rq, err, stale)
	}
	switch o {
	case OutcomeDegraded:
		c.m.writesSkipped.WithLabelValues("degraded").Inc()
	case OutcomeLockTimeout:
		c.m.writesSkipped.WithLabelValues("lock_timeout").Inc()
	}
	return result{val: v, outcome: o}
}

func (c *Cache) computeFailed(rq *request, err error, stale *staleValue) result {
	if stale != nil {
		c.log.Warn("cache: compute failed; serving stale",
			slog.String("key_hash", keyHash(rq.key)), slog.Any("error", err))
		return stale.result()
	}
	return result{outcome: OutcomeError, err: err}
}

// runCompute calls compute, turning a panic into an error so one bad
// computation cannot take down the process through a detached goroutine.
func (c *Cache) runCompute(ctx context.Context, rq *request) (v any, err error) {
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("cache: compute panicked: %v", p)
		}
		c.m.computeSeconds.Observe(time.Since(start).Seconds())
		res := "ok"
		if err != nil {
			res = "error"
		}
		c.m.computations.WithLabelValues(res).Inc()
	}()
	return rq.compute(ctx)
}

// keepLock extends the lock every LockTTL/3 until stop is called or the lock
// turns out lost. A process that dies stops extending, so its lock expires
// within LockTTL and one waiter takes over.
func (c *Cache) keepLock(ctx context.Context, rq *request, token string) (stop func()) {
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(rq.p.lockTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				ok, err := c.extend(ctx, rq.k, token, rq.p.lockTTL)
				if err != nil {
					c.redisFailed("extend", rq.key, err)
					continue // a blip; the next tick may still save the lock
				}
				if !ok {
					return // lost: the fenced store will skip the write
				}
			}
		}
	}()
	return func() { close(done); <-exited }
}

// revalidate refreshes a stale key in the background, at most once at a
// time per process, and only by the mini-lock holder across instances.
func (c *Cache) revalidate(ctx context.Context, rq *request) {
	c.mu.Lock()
	if _, busy := c.refreshing[rq.k.value]; busy || c.closed.Load() {
		c.mu.Unlock()
		return
	}
	c.refreshing[rq.k.value] = struct{}{}
	c.mu.Unlock()
	started := c.goDetached(func() {
		defer func() {
			c.mu.Lock()
			delete(c.refreshing, rq.k.value)
			c.mu.Unlock()
		}()
		fctx, cancel := c.detachedContext(ctx)
		defer cancel()
		token := newToken()
		st, _, err := c.readOrLock(fctx, rq.k, token, rq.p.lockTTL)
		if err != nil {
			c.redisFailed("read_or_lock", rq.key, err)
			return
		}
		if st != stateAcquired {
			return // fresh already, or another instance is refreshing
		}
		r := c.computeLocked(fctx, rq, token, nil)
		if r.err != nil {
			c.log.Warn("cache: background refresh failed", slog.String("key_hash", keyHash(rq.key)), slog.Any("error", r.err))
		}
	})
	if !started {
		c.mu.Lock()
		delete(c.refreshing, rq.k.value)
		c.mu.Unlock()
	}
}

func (c *Cache) redisFailed(op, key string, err error) {
	c.m.redisErrors.WithLabelValues(op).Inc()
	c.log.Warn("cache: redis call failed; failing open",
		slog.String("op", op), slog.String("key_hash", keyHash(key)), slog.Any("error", err))
}
