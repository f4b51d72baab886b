package idempotency_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/idempotency"
	"github.com/digis/jobworker/internal/redistest"
)

// roundTrips counts Redis round trips: one per command or pipeline sent.
type roundTrips struct{ n atomic.Int64 }

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.n.Add(1); return next(ctx, cmd) }
}
func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.n.Add(1); return next(ctx, cmds) }
}

var benchKeys atomic.Int64

// BenchmarkMiddleware measures what the middleware adds to a route, against
// the same handler without it in the same run (loopback Redis, in-process
// HTTP), and reports Redis round trips per request.
func BenchmarkMiddleware(b *testing.B) {
	srv := redistest.Start(b)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	b.Cleanup(func() { _ = rdb.Close() })
	rt := &roundTrips{}
	rdb.AddHook(rt)
	store, err := idempotency.NewStore(rdb, idempotency.StoreConfig{Namespace: "http"})
	if err != nil {
		b.Fatal(err)
	}
	mw, err := idempotency.Middleware(store, func(echo.Context) string { return "user_1" })
	if err != nil {
		b.Fatal(err)
	}
	e := echo.New()
	h := func(c echo.Context) error {
		return c.JSON(http.StatusCreated, map[string]string{"tip": "tip_1", "status": "settled"})
	}
	e.POST("/baseline", h)
	e.POST("/tips/quick", h, mw)
	const body = `{"amount":500,"streamId":"str_123","currency":"usd"}`
	serve := func(b *testing.B, path, key string) {
		r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		if key != "" {
			r.Header.Set(idempotency.HeaderIdempotencyKey, key)
		}
		w := httptest.NewRecorder()
		e.ServeHTTP(w, r)
		if w.Code != http.StatusCreated {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
	serve(b, "/tips/quick", "warm-up") // loads the scripts (EVALSHA then EVAL once)
	serve(b, "/tips/quick", "warm-up")
	cases := []struct {
		name, path string
		key        func() string
	}{
		{"baseline", "/baseline", func() string { return "" }},
		{"first", "/tips/quick", func() string { return "bench-" + strconv.FormatInt(benchKeys.Add(1), 10) }},
		{"replay", "/tips/quick", func() string { return "warm-up" }},
	}
	b.Run("redis-ping", func(b *testing.B) { // one bare round trip, for scale
		for i := 0; i < b.N; i++ {
			if err := rdb.Ping(context.Background()).Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			keys := make([]string, b.N)
			for i := range keys {
				keys[i] = c.key()
			}
			rt.n.Store(0)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				serve(b, c.path, keys[i])
			}
			b.ReportMetric(float64(rt.n.Load())/float64(b.N), "redis-rt/op")
		})
	}
}
