package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// serveBaseline is the baseline process (loadgen -serve-baseline ADDR
// REDIS_ADDR): plain net/http, no middleware, and per delivery one Redis
// SET NX PX on the message id with the same 200 answer the worker gives.
// It is what a dedupe-on-Redis handler cannot beat on this machine.
func serveBaseline(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: loadgen -serve-baseline LISTEN_ADDR REDIS_ADDR")
	}
	rdb := redis.NewClient(&redis.Options{Addr: args[1], ContextTimeoutEnabled: true})
	defer rdb.Close()
	return serve(args[0], baselineHandler(rdb))
}

// serve serves h on addr until SIGINT or SIGTERM.
func serve(addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); _ = hs.Close() }()
	if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

var baselineDone = []byte(`{"status":"done"}`)

func baselineHandler(rdb *redis.Client) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.HandleFunc("POST /jobs/{name}", func(w http.ResponseWriter, r *http.Request) {
		ok, err := rdb.SetNX(r.Context(), "base:"+r.Header.Get("Upstash-Message-Id"), 1, time.Hour).Result()
		if err != nil || !ok {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(baselineDone)
	})
	return mux
}
