// Package server runs an HTTP service the way jobworker's binaries do: an
// Echo instance with request ids, panic recovery, body limits, request
// deadlines, a structured access log (one line per request, to which
// handlers and the jobs they run add fields with AddLogAttrs) and
// Prometheus metrics; /healthz,
// /readyz and /metrics (on its own listener); and a graceful shutdown that
// lets in-flight requests finish, then stops the process's parts in order.
//
//	srv, err := server.New(server.Config{Name: "worker", Addr: ":3001", MetricsAddr: ":9301", Logger: log})
//	w, err := worker.New(worker.Config{..., Draining: srv.Draining})
//	w.Mount(srv.Echo)
//	srv.AddReadinessCheck("redis", func(ctx context.Context) error { return rdb.Ping(ctx).Err() })
//	srv.OnStop("redis", func(context.Context) error { return rdb.Close() }) // registered first, runs last
//	srv.OnStop("worker", w.Close)
//	err = srv.Run(server.SignalContext())
//
// Shutdown, in order: the server starts draining (/readyz answers 503;
// routes wrapped in RejectWhileDraining, and worker handlers given
// Draining, answer 503 with Retry-After, so QStash and Stripe redeliver
// elsewhere), waits DrainDelay for load balancers to notice, stops accepting
// connections and waits up to ShutdownTimeout for in-flight requests, then
// runs the OnStop functions in reverse order of registration.
//
// Edges: every request body is capped at BodyLimit (413, whether declared
// or chunked; LimitBody caps one route lower) and must arrive within
// RequestTimeout, after which its read fails (408) and the connection
// closes; an answer sent before the body was read closes the connection
// instead of waiting for the rest. Metric labels are bounded: the route
// template ("unmatched" otherwise), a standard method ("other" otherwise),
// the status code. /metrics is not served on Addr unless MetricsToken is
// set: Run serves it on its own listener, MetricsAddr, and MetricsHandler
// returns it for mounting elsewhere. Concurrent /readyz probes share one
// run of the readiness checks.
//
// The binaries also use Probe (their -healthcheck mode), NewLogger and
// NewRegistry.
package server
