// Package server is the HTTP scaffolding shared by cmd/api and cmd/worker:
// an Echo instance with request ids, panic recovery, body limits, request
// deadlines, a structured access log and Prometheus metrics; the /healthz,
// /readyz and /metrics endpoints; and a graceful shutdown that lets in-flight
// requests finish.
//
//	srv, err := server.New(server.Config{Name: "worker", Addr: ":3001", Ready: ping})
//	srv.Echo.POST("/jobs/:name", h, srv.RejectWhileDraining())
//	err = srv.Run(server.SignalContext())
//
// Shutdown, in order: the server starts draining (/readyz answers 503 and
// routes wrapped in RejectWhileDraining answer 503 with Retry-After, so QStash
// and Stripe redeliver elsewhere), waits DrainDelay for load balancers to
// notice, stops accepting connections and waits up to ShutdownTimeout for
// in-flight requests to finish.
package server
