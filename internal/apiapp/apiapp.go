package apiapp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/digis/jobworker/cache"
	"github.com/digis/jobworker/idempotency"
	"github.com/digis/jobworker/internal/auth"
	"github.com/digis/jobworker/internal/process"
	"github.com/digis/jobworker/internal/store"
	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/limits"
	"github.com/digis/jobworker/outbox"
	"github.com/digis/jobworker/server"
)

// Routes the API serves.
const (
	StatusRoute    = "/api/streams/status"
	StartRoute     = "/api/streams/start"
	StopRoute      = "/api/streams/stop"
	QuickTipRoute  = "/api/tips/quick"
	jsonBodyLimit  = 16 << 10 // the JSON bodies here are a few dozen bytes
	publishTimeout = 5 * time.Second
)

// Rate-limit buckets of the routes. streams:status and tips:quick are the
// limits package's defaults; the stream controls are added in the moderate
// tier (see apiBuckets).
const (
	BucketStatus = "streams:status"
	BucketStart  = "streams:start"
	BucketStop   = "streams:stop"
	BucketTip    = "tips:quick"
	// BucketForgedToken counts, per client address, bearer tokens that may
	// be forgeries or guesses (malformed or badly signed; see
	// auth.Forgery): strict tier, 10 a minute, then 429. Valid tokens never
	// touch it, and stale ones (expired) are not counted.
	BucketForgedToken = "auth:forged-token"
)

// Deps are the parts Build does not create itself.
type Deps struct {
	// Store is the database. Required. cmd/api opens it with store.Open;
	// cmd/dev shares one store with the worker. With a *store.Postgres the
	// follow-up jobs are written to the outbox in the change's transaction
	// and the outbox relay runs (unless OUTBOX_RELAY=off); with any other
	// store (the in-memory one of the local stack) they are published
	// after the change, the dev-only path. The caller closes it after Run
	// returns, so the relay stops first.
	Store store.Store
}

// app holds what the handlers use.
type app struct {
	log        *slog.Logger
	store      store.Store
	cache      *cache.Cache
	jobs       *jobs.Client
	failureURL string // QStash failure callback: dead jobs are recorded by the worker
	statusTTL  time.Duration
	tipMax     int64
	// outbox: the store writes the follow-ups in the change's transaction
	// (Postgres); else the handlers publish them after the change.
	outbox bool
	// committed wakes the relays after a change whose follow-ups were
	// written (process.OutboxCommitted).
	committed func()
	// variant: the benchmark's alternative wirings.
	variant
}

// variant is how the benchmark's alternative wirings differ from Build's.
type variant struct {
	// notifyInTx writes the jobs with the NOTIFY in the transaction (the
	// outbox's default), for the benchmark that shows its cost.
	notifyInTx bool
	// rowPerJob writes a tip's two jobs as two outbox rows (EnqueueMany),
	// the layout before multi-job rows.
	rowPerJob bool
	// relayConcurrency is the in-process relay's Concurrency (0: the
	// default).
	relayConcurrency int
}

// Build creates the API process: the shared server with the reference
// routes, rate limits, idempotency, cache, auth and the jobs client. The
// caller runs it (p.Run, or p.Server.Serve in tests) and closes the store.
func Build(cfg Config, deps Deps) (*process.Process, error) {
	return build(cfg, deps, variant{})
}

func build(cfg Config, deps Deps, v variant) (*process.Process, error) {
	if deps.Store == nil {
		return nil, errors.New("apiapp: Deps.Store is required")
	}
	if cfg.RateLimit.IPExtractor == nil {
		return nil, errors.New("apiapp: the rate-limit IP extractor is required (RATE_LIMIT_IP_SOURCE)")
	}
	p, err := process.New("api", cfg.Common)
	if err != nil {
		return nil, err
	}
	if err := wire(p, cfg, deps, v); err != nil {
		p.Abort()
		return nil, err
	}
	return p, nil
}

func wire(p *process.Process, cfg Config, deps Deps, v variant) error {
	e := p.Server.Echo
	// c.RealIP() anywhere in the app sees what the limiter sees.
	e.IPExtractor = cfg.RateLimit.IPExtractor.EchoIPExtractor()
	warnBroadTrust(p.Log, cfg.RateLimit.IPExtractor)
	p.Server.AddReadinessCheck("store", deps.Store.Ping)

	limiter, err := limits.New(limits.Config{
		Client:     p.Redis,
		Prefix:     cfg.KeyPrefix,
		Buckets:    apiBuckets(),
		Overrides:  cfg.RateLimit.Overrides,
		Failure:    apiFailure(cfg.RateLimit.Failure),
		Leases:     cfg.RateLimit.Leases,
		Timeout:    cfg.RateLimit.RedisTimeout,
		HashKey:    cfg.RateLimit.HashKey,
		Registerer: p.Registry,
		Logger:     p.Log,
	})
	if err != nil {
		return err
	}
	// Resets made elsewhere (another instance, jobctl limits reset) reach
	// this instance's block cache and leases.
	listenCtx, stopListen := context.WithCancel(context.Background())
	listening := make(chan struct{})
	go func() {
		defer close(listening)
		if err := limiter.Listen(listenCtx); err != nil {
			p.Log.Warn("rate-limit resets from other instances are not applied here", "error", err.Error())
		}
	}()
	p.OnStop("rate-limit reset listener", func(context.Context) error {
		stopListen()
		<-listening
		return nil
	})
	idemStore, err := idempotency.NewStore(p.Redis, idempotency.StoreConfig{
		Prefix:     cfg.KeyPrefix,
		Namespace:  "http",
		ResultTTL:  cfg.IdempotencyResultTTL,
		Timeout:    cfg.Redis.Timeout,
		Logger:     p.Log,
		Registerer: p.Registry,
	})
	if err != nil {
		return err
	}
	p.OnStop("idempotency", func(ctx context.Context) error {
		if n := idemStore.Close(ctx); n > 0 {
			return fmt.Errorf("%d cleanups still pending", n)
		}
		return nil
	})
	idemCfg := idempotency.DefaultMiddlewareConfig
	idemCfg.Store = idemStore
	idemCfg.Principal = userID
	idemCfg.MaxBodyBytes = jsonBodyLimit
	idemCfg.Logger = p.Log
	idemCfg.Registerer = p.Registry
	idem, err := idemCfg.ToMiddleware()
	if err != nil {
		return err
	}
	c, err := cache.New(p.Redis, cache.Config{
		Prefix:       cfg.KeyPrefix,
		Logger:       p.Log,
		Registerer:   p.Registry,
		RedisTimeout: cfg.CacheRedisTimeout,
	})
	if err != nil {
		return err
	}
	p.OnStop("cache", c.Close)
	authCfg := cfg.Auth
	authCfg.Logger, authCfg.Registerer = p.Log, p.Registry
	authCfg.LimitForgery = forgeryLimit(limiter, cfg.RateLimit.IPExtractor)
	authn, err := auth.New(authCfg)
	if err != nil {
		return err
	}
	p.OnStop("auth", func(context.Context) error { authn.Close(); return nil })
	jc, err := jobs.NewClient(jobs.ClientConfig{
		QStashURL:       cfg.QStashURL,
		Token:           cfg.QStashToken,
		WorkerPublicURL: cfg.WorkerPublicURL,
		Timeout:         publishTimeout,
		Logger:          p.Log,
		Registerer:      p.Registry,
	})
	if err != nil {
		return err
	}
	statusTTL := cfg.CacheStatusTTL
	if statusTTL <= 0 {
		statusTTL = 10 * time.Second
	}
	a := &app{
		log: p.Log, store: deps.Store, cache: c, jobs: jc,
		failureURL: cfg.WorkerPublicURL + jobs.FailureCallbackPath,
		statusTTL:  statusTTL, tipMax: cfg.TipMaxAmount, variant: v,
	}
	if a.tipMax <= 0 {
		a.tipMax = store.DefaultMaxTipAmount
	}
	if pg, ok := deps.Store.(*store.Postgres); ok {
		a.store = pg.WithFollowUps(store.FollowUps{Tip: a.writeTipJobs, StreamChange: a.writeStreamJob})
		a.outbox = true
		var local *outbox.Relay
		if cfg.OutboxRelay {
			// Registered last, so stopped first: after the last request's
			// transaction, before the caller closes the pool.
			if local, err = p.Relay(outbox.Config{Pool: pg.Pool(), Publisher: jc, Concurrency: v.relayConcurrency}, true); err != nil {
				return err
			}
		}
		a.committed = p.OutboxCommitted(pg.Pool(), local)
	}

	limit := func(bucket string) (echo.MiddlewareFunc, error) {
		return limits.MiddlewareConfig{
			Limiter: limiter, Bucket: bucket, IPExtractor: cfg.RateLimit.IPExtractor, UserID: userID,
		}.ToMiddleware()
	}
	// 413 for a body above the cap, declared or chunked.
	bodyLimit := server.LimitBody(jsonBodyLimit)
	routes := []struct {
		method, path, bucket string
		h                    echo.HandlerFunc
		optionalAuth, idem   bool
	}{
		{http.MethodGet, StatusRoute, BucketStatus, a.status, true, false},
		{http.MethodPost, StartRoute, BucketStart, a.start, false, false},
		{http.MethodPost, StopRoute, BucketStop, a.stop, false, false},
		{http.MethodPost, QuickTipRoute, BucketTip, a.quickTip, false, true},
	}
	for _, r := range routes {
		lm, err := limit(r.bucket)
		if err != nil {
			return err
		}
		var mw []echo.MiddlewareFunc
		if r.method == http.MethodPost {
			mw = append(mw, bodyLimit)
		}
		if r.optionalAuth {
			mw = append(mw, authn.Optional())
		} else {
			mw = append(mw, authn.Required())
		}
		mw = append(mw, lm)
		if r.idem {
			mw = append(mw, idem)
		}
		e.Add(r.method, r.path, r.h, mw...)
	}
	return nil
}

// outboxTx is what the follow-ups write through: the transaction without
// its NOTIFY, since the handlers wake the relays after the commit.
func (a *app) outboxTx(tx outbox.Tx) outbox.Tx {
	if a.notifyInTx {
		return tx
	}
	return outbox.WithoutNotify(tx)
}

// broadTrust is the size past which a trusted range is more than a few
// proxies: more than 256 addresses.
const broadTrustV4, broadTrustV6 = 24, 120

// warnBroadTrust logs, at start-up, the xff mode's hazard when a trusted
// range is broad: any client inside it (another pod, a VM in the VPC) is
// taken for a proxy, its X-Forwarded-For is believed, and it picks its own
// rate-limit identity. Loopback and link-local ranges are exempt: only this
// machine or the platform's own front end (Cloud Run's 169.254.0.0/16)
// connect from there.
func warnBroadTrust(log *slog.Logger, x *limits.IPExtractor) {
	if x.Source() != limits.IPSourceXFF {
		return
	}
	var broad []string
	for _, p := range x.TrustedProxies() {
		if p.Addr().IsLoopback() || p.Addr().IsLinkLocalUnicast() {
			continue
		}
		if p.Addr().Is4() && p.Bits() < broadTrustV4 || !p.Addr().Is4() && p.Bits() < broadTrustV6 {
			broad = append(broad, p.String())
		}
	}
	if len(broad) > 0 {
		log.Warn("RATE_LIMIT_IP_SOURCE=xff trusts broad ranges: a client inside them is taken for a proxy and chooses its own rate-limit identity with X-Forwarded-For; list only your proxies' addresses in RATE_LIMIT_TRUSTED_PROXIES",
			"ranges", strings.Join(broad, ","))
	}
}

// forgeryLimit counts a refused, possibly forged token against the client's
// address (hashed by the limiter) and answers 429 once it used its quota,
// so guessing tokens is throttled like guessing passwords. A request whose
// address cannot be found, or a limiter error, keeps its 401.
func forgeryLimit(l *limits.Limiter, ips *limits.IPExtractor) func(echo.Context) error {
	return func(c echo.Context) error {
		id, err := ips.Identity(c.Request())
		if err != nil {
			return nil
		}
		res, err := l.Allow(c.Request().Context(), BucketForgedToken, id)
		if err != nil || res.Allowed {
			return nil
		}
		limits.WriteHeaders(c.Response().Header(), res)
		return limits.DefaultDenyHandler(c, res)
	}
}

// apiFailure is RATE_LIMIT_FAILURE with the forged-token bucket falling
// back to the local limiter during a Redis outage (unless configured):
// failing closed would turn a forged token's 401 into a 503.
func apiFailure(configured map[string]limits.FailureMode) map[string]limits.FailureMode {
	out := map[string]limits.FailureMode{BucketForgedToken: limits.FailureLocal}
	for k, v := range configured {
		out[k] = v
	}
	return out
}

// userID is the verified subject, "" for anonymous requests: the
// rate-limit identity and the idempotency principal.
func userID(c echo.Context) string {
	id, _ := auth.UserID(c)
	return id
}

// detached keeps the request's values but not its cancellation, bounded by
// d: work that must happen once the database changed (invalidation,
// publishing the follow-up on the dev path) is not abandoned because the
// client left.
func detached(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), d)
}
