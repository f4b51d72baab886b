// Package server runs an HTTP service the way jobworker's binaries do: an
// Echo instance with request ids, panic recovery, body limits, request
// deadlines, a structured access log and Prometheus metrics; /healthz,
// /readyz and /metrics; and a graceful shutdown that lets in-flight requests
// finish, then stops the process's parts in order.
//
//	srv, err := server.New(server.Config{Name: "worker", Addr: ":3001", Logger: log})
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
// The binaries also use Probe (their -healthcheck mode), NewLogger and
// NewRegistry.
package server
