package idempotency_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/alicebob/miniredis/v2"
	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/idempotency"
)

// The examples run on miniredis so they work anywhere; the tests use a real
// redis-server.

// A worker deduping deliveries by message id.
func ExampleStore() {
	mr := miniredis.NewMiniRedis()
	_ = mr.Start()
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	defer rdb.Close()

	store, err := idempotency.NewStore(rdb, idempotency.StoreConfig{Namespace: "qstash"})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	deliver := func(messageID string) string {
		res, err := store.Acquire(ctx, messageID, "")
		if err != nil {
			return "503: " + err.Error()
		}
		switch res.Outcome {
		case idempotency.Done:
			return "200 (duplicate, result " + string(res.Value) + ")"
		case idempotency.InProgress:
			return "409, retry later"
		}
		work, stop := res.Lease.KeepAlive(ctx)
		_ = work // run the job under this context
		_ = stop()
		if err := res.Lease.Complete(ctx, []byte("tip_42")); err != nil {
			return "500: " + err.Error()
		}
		return "200 (ran)"
	}
	fmt.Println(deliver("msg_1"))
	fmt.Println(deliver("msg_1"))
	// Output:
	// 200 (ran)
	// 200 (duplicate, result tip_42)
}

// The middleware on a money route.
func ExampleMiddleware() {
	mr := miniredis.NewMiniRedis()
	_ = mr.Start()
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	defer rdb.Close()

	store, _ := idempotency.NewStore(rdb, idempotency.StoreConfig{Namespace: "http"})
	mw, err := idempotency.Middleware(store, func(c echo.Context) string {
		return "user_1" // the authenticated user id, set by the auth middleware
	})
	if err != nil {
		panic(err)
	}
	e := echo.New()
	e.POST("/api/tips/quick", func(c echo.Context) error {
		return c.JSON(http.StatusCreated, map[string]string{"tip": "tip_42"})
	}, mw)

	for i := 0; i < 2; i++ {
		req := httptest.NewRequest(http.MethodPost, "/api/tips/quick", strings.NewReader(`{"amount":500}`))
		req.Header.Set("Idempotency-Key", "8e03978e-40d5-43e8-bc93-6894a57f9324")
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		fmt.Println(rec.Code, strings.TrimSpace(rec.Body.String()), "replayed:", rec.Header().Get("Idempotent-Replayed") == "true")
	}
	// Output:
	// 201 {"tip":"tip_42"} replayed: false
	// 201 {"tip":"tip_42"} replayed: true
}
