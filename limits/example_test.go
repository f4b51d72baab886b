package limits_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/limits"
)

// The examples run against miniredis so they need no server; the package's
// tests use a real redis-server.

// hashKey keys the identifier hashes in Redis keys: a secret every instance
// shares (in production from the environment, e.g. RATE_LIMIT_HASH_KEY).
var hashKey = []byte("example-only-key-use-a-secret")

func exampleRedis() (*redis.Client, func()) {
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	return rdb, func() { _ = rdb.Close(); mr.Close() }
}

func ExampleLimiter_Allow() {
	rdb, done := exampleRedis()
	defer done()

	// Tiers and buckets default to the origin guide's; one bucket is
	// overridden, as RATE_LIMIT_OVERRIDES="tips:quick=2/1m" would.
	overrides, _ := limits.ParseOverrides("tips:quick=2/1m")
	l, err := limits.New(limits.Config{Client: rdb, HashKey: hashKey, Prefix: "app:", Overrides: overrides, Timeout: time.Second})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		res, err := l.Allow(ctx, "tips:quick", "user:42")
		if err != nil {
			panic(err)
		}
		fmt.Println(res.Allowed, res.Reason, res.Remaining, res.RetryAfter > 0)
	}
	// Output:
	// true allowed 1 false
	// true allowed 0 false
	// false blocked-locally 0 true
}

func ExampleConfig_leases() {
	rdb, done := exampleRedis()
	defer done()

	// An API-key quota of 1000 requests a minute; an instance may hold up
	// to 50 of a busy key's requests, as RATE_LIMIT_LEASES="api:key=50"
	// would set.
	leases, _ := limits.ParseLeases("api:key=50")
	l, err := limits.New(limits.Config{
		Client:  rdb,
		HashKey: hashKey,
		Tiers:   map[string]limits.Quota{"partner": limits.PerMinute(1000)},
		Buckets: map[string]string{"api:key": "partner"},
		Leases:  leases,
		Timeout: time.Second,
	})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	reasons := map[limits.Reason]int{}
	var last limits.Result
	for i := 0; i < 300; i++ {
		if last, err = l.Allow(ctx, "api:key", "key:7f3a"); err != nil {
			panic(err)
		}
		reasons[last.Reason]++
	}
	fmt.Println("asked Redis:", reasons[limits.ReasonAllowed])
	fmt.Println("from the lease:", reasons[limits.ReasonAllowedLocally])
	fmt.Println("remaining:", last.Remaining)
	// Output:
	// asked Redis: 11
	// from the lease: 289
	// remaining: 700
}

func ExampleMiddleware() {
	rdb, done := exampleRedis()
	defer done()

	l, err := limits.New(limits.Config{Client: rdb, HashKey: hashKey, Timeout: time.Second})
	if err != nil {
		panic(err)
	}
	// The deployment mode is explicit: RATE_LIMIT_IP_SOURCE=xff,
	// RATE_LIMIT_TRUSTED_PROXIES=10.0.0.0/8.
	ips, err := limits.ParseIPSource("xff", "10.0.0.0/8")
	if err != nil {
		panic(err)
	}
	mw, err := limits.MiddlewareConfig{
		Limiter:     l,
		Bucket:      "auth:otp",
		IPExtractor: ips,
		// The auth middleware runs first and stores the user id.
		UserID: func(c echo.Context) string { s, _ := c.Get("user_id").(string); return s },
	}.ToMiddleware()
	if err != nil {
		panic(err)
	}
	e := echo.New()
	e.IPExtractor = ips.EchoIPExtractor() // c.RealIP() elsewhere agrees with the limiter
	e.POST("/auth/otp", func(c echo.Context) error { return c.NoContent(http.StatusNoContent) }, mw)

	req := httptest.NewRequest(http.MethodPost, "/auth/otp", nil)
	req.RemoteAddr = "10.0.0.5:443"                           // the load balancer
	req.Header.Set("X-Forwarded-For", "6.6.6.6, 203.0.113.7") // client-written, then proxy-appended
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	fmt.Println(rec.Code, rec.Header().Get("X-RateLimit-Remaining"), rec.Header().Get("RateLimit-Policy"))
	// Output:
	// 204 9 "auth:otp";q=10;w=60
}

func ExampleConfigError() {
	// Every configuration error names the field or input at fault, so an
	// application maps it to its own setting (an environment variable, a
	// flag) with errors.As instead of reading the message.
	var ce *limits.ConfigError
	_, err := limits.ParseLeases("generous=lots")
	if errors.As(err, &ce) {
		fmt.Println(ce.Field, ce.Name)
	}
	// Policies checks tiers, buckets, overrides, failure modes and leases
	// without a Redis client, e.g. at start-up.
	_, err = limits.Config{Leases: map[string]int{limits.TierStrict: 11}}.Policies()
	if errors.As(err, &ce) {
		fmt.Println(ce.Field, ce.Name+":", ce.Reason)
	}
	fmt.Println(errors.Is(err, limits.ErrInvalidConfig))
	// Output:
	// Leases generous
	// Leases strict: lease 11 for "strict" exceeds the limit 10 of bucket "auth:login"
	// true
}
