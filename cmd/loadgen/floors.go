package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/idempotency"
	"github.com/digis/jobworker/internal/keyid"
	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/webhooks"
	"github.com/digis/jobworker/worker"
)

// The floors (-floors) split the worker's cost against the baseline into
// layers, each a process of its own measured in the same rounds:
//
//   - verified: the baseline (one SET NX PX on the message id) after
//     verifying the QStash token with package webhooks: what verification
//     alone costs.
//   - guarantees: plain net/http doing only what keeps a delivery's
//     guarantees, through this module's packages: verify the QStash token
//     (webhooks), claim the message id with the token's replay nonce and
//     write the done marker after the (empty) job (idempotency, the
//     production store settings). No routing, job registry, lease renewal,
//     metrics or logging. What no implementation that keeps the guarantees
//     can skip.
//   - kit: package worker's Handler (the public worker kit: the guarantees
//     plus job dispatch, lease renewal, the answer mapping and its metrics)
//     on plain net/http, without package server (Echo, the shared
//     middleware, the access line).
//
// So worker ÷ kit is what the server layer costs, kit ÷ guarantees what the
// kit adds, guarantees ÷ verified what the claim and done-marker scripts
// cost over one SET NX, and verified ÷ baseline the token check.
const (
	floorVerified   = "verified"
	floorGuarantees = "guarantees"
	floorKit        = "kit"
)

// floorKinds are the floors in the order they run and are reported, the
// upper layer first.
var floorKinds = []string{floorKit, floorGuarantees, floorVerified}

// demoHello is the job the deliveries name (see jobPath).
type demoHello struct {
	Name string `json:"name"`
}

func (demoHello) Kind() string { return "demo.hello" }

// serveFloor is a floor process: loadgen -serve-floor KIND LISTEN_ADDR
// REDIS_ADDR SIGNING_KEY. The public URL it verifies against is
// http://LISTEN_ADDR, as the worker's.
func serveFloor(args []string) error {
	if len(args) != 4 {
		return errors.New("usage: loadgen -serve-floor kit|guarantees|verified LISTEN_ADDR REDIS_ADDR SIGNING_KEY")
	}
	kind, addr, redisAddr, key := args[0], args[1], args[2], args[3]
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, ContextTimeoutEnabled: true})
	defer rdb.Close()
	var h http.Handler
	var err error
	switch kind {
	case floorVerified:
		h, err = verifiedHandler(rdb, "http://"+addr, key)
	case floorGuarantees:
		h, err = guaranteesHandler(rdb, "http://"+addr, key)
	case floorKit:
		h, err = kitHandler(rdb, "http://"+addr, key)
	default:
		err = fmt.Errorf("unknown floor %q", kind)
	}
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.Handle("/jobs/", h)
	return serve(addr, mux)
}

func newVerifier(key string) (*webhooks.QStashVerifier, error) {
	return webhooks.NewQStashVerifier(webhooks.QStashConfig{CurrentSigningKey: key, NextSigningKey: qstashdev.DevNextSigningKey})
}

// verifiedHandler is the baseline's handler behind the token check.
func verifiedHandler(rdb *redis.Client, publicURL, key string) (http.Handler, error) {
	v, err := newVerifier(key)
	if err != nil {
		return nil, err
	}
	next := baselineHandler(rdb)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, _, err := v.VerifyRequest(r, publicURL, worker.DefaultMaxBodyBytes); err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	}), nil
}

// guaranteesHandler verifies, claims with the nonce, and marks done, as
// worker.Handler does for a job that succeeds at once.
func guaranteesHandler(rdb *redis.Client, publicURL, key string) (http.Handler, error) {
	v, err := newVerifier(key)
	if err != nil {
		return nil, err
	}
	store, err := idempotency.NewStore(rdb, idempotency.StoreConfig{
		Namespace: "qstash", LeaseTTL: worker.DefaultLeaseTTL, ResultTTL: worker.DefaultDedupeTTL, Timeout: worker.DefaultRedisTimeout,
	})
	if err != nil {
		return nil, err
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, _, err := v.VerifyRequest(r, publicURL, worker.DefaultMaxBodyBytes)
		if err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		ttl := max(time.Until(claims.Expires.Add(v.Skew())), time.Second)
		acq, err := store.Acquire(context.WithoutCancel(r.Context()), "{demo.hello}:"+keyid.Encode(r.Header.Get("Upstash-Message-Id")),
			claims.BodyHash, idempotency.WithNonce(keyid.Encode(claims.ID), ttl))
		if err != nil || acq.Outcome != idempotency.Acquired {
			w.WriteHeader(http.StatusConflict)
			return
		}
		acq.Lease.CompleteAsync(nil, nil)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(baselineDone)
	}), nil
}

// kitHandler is package worker's Handler with a no-op demo.hello, its
// metrics registered, logging nowhere.
func kitHandler(rdb *redis.Client, publicURL, key string) (http.Handler, error) {
	// Metrics are part of the kit: registered as a worker registers them.
	metrics := prometheus.NewRegistry()
	reg, err := jobs.NewRegistry(jobs.RegistryConfig{Registerer: metrics})
	if err != nil {
		return nil, err
	}
	if err := jobs.Register(reg, func(context.Context, *jobs.Job[demoHello]) error { return nil }); err != nil {
		return nil, err
	}
	return worker.New(worker.Config{
		Registry: reg, Redis: rdb, PublicURL: publicURL,
		CurrentSigningKey: key, NextSigningKey: qstashdev.DevNextSigningKey,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: metrics,
	})
}
