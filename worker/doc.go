// Package worker receives QStash job deliveries: an http.Handler that
// verifies each request's signature, runs each message's job at most once
// per message id, and answers with the status that makes QStash stop, retry
// or dead-letter. It works with any router; Mount adds it to Echo.
//
//	reg, _ := jobs.NewRegistry(jobs.RegistryConfig{})
//	_ = jobs.Register(reg, sendWelcome) // func(ctx, *jobs.Job[Welcome]) error
//
//	rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
//	w, err := worker.New(worker.Config{
//		Registry:          reg,
//		Redis:             rdb,
//		PublicURL:         os.Getenv("WORKER_PUBLIC_URL"),
//		CurrentSigningKey: os.Getenv("QSTASH_CURRENT_SIGNING_KEY"),
//		NextSigningKey:    os.Getenv("QSTASH_NEXT_SIGNING_KEY"),
//	})
//	if err != nil {
//		log.Fatal(err)
//	}
//	http.Handle("/jobs/", w)
//	http.Handle(worker.DefaultFailureCallbackPath, w) // dead jobs, if published WithFailureCallback
//
// The jobs client publishes to the same PublicURL (jobs.ClientConfig's
// WorkerPublicURL); a job named n is delivered to PublicURL + "/jobs/" + n.
// Package server wraps the handler in a process with health, readiness,
// metrics and a graceful drain (Config.Draining = srv.Draining).
//
// # What happens to a delivery
//
//  1. While draining (shutdown began), 503 with Retry-After before any
//     work: QStash delivers again, to a live instance.
//  2. The Upstash-Signature JWT is verified against PublicURL + the
//     request-target exactly as received, over the raw body (see package
//     webhooks). A failure is 401 and nothing runs. The body is read last:
//     a declared length above MaxBodyBytes is 413 at once, and a token whose
//     MAC, iss, sub or times fail is refused from the headers alone, the
//     connection closed, the body unread; only a token that passes gets its
//     body read (at most MaxBodyBytes+1) and compared with the signed hash.
//     Nothing touches Redis before that comparison: the claim of step 3
//     records the token's jti and the body hash, and a token must not spend
//     its jti, nor hold its message, on a body it did not sign.
//  3. The message is claimed in Redis under its job and message id, in one
//     round trip that also records the token's jti until it expires: a
//     captured request replayed with another message id is refused (401),
//     and a token for one job can never touch another job's messages.
//  4. The job runs under a renewed lease. Success stores a done marker for
//     DedupeTTL; failure releases the claim so QStash's retry runs it. The
//     200 does not wait for the marker: it leaves with the next delivery's
//     claim (one Redis round trip per delivery under load) or on its own
//     within milliseconds, while the lease still holds the message, so a
//     duplicate in between gets 409 and finds the marker when it returns.
//
// Delivery is at-least-once and the worker makes each message's effect
// happen once while its done marker lives. What remains for handlers: a
// worker killed after the effect and before the marker is written leaves
// the message to run again once its lease lapses, so handlers that change a
// database keep a unique constraint as the last guard.
//
// # Answers
//
// Every answer is decided in one place:
//
//	done, or already done                 200
//	running on another instance           409 + Retry-After (its lease, at least Backoff)
//	handler error                         500 (+ Retry-After for jobs.RetryAfter)
//	panic                                 500, stack in the log
//	permanent: bad payload, unknown job,
//	  jobs.Permanent, id ran with another body  489 + Upstash-NonRetryable-Error: true
//	Redis unavailable, draining           503 + Retry-After: Backoff(attempt)
//	bad signature, replayed token         401
//	body too large                        413
//
// Backoff defaults to QStash's own schedule (12 s, 2.5 min, 30 min, 6 h,
// 24 h), so an outage of Redis does not spend a message's retries faster
// than QStash would; with the default 3 retries a message survives about
// 30 minutes of it.
//
// # When Redis fails
//
// A claim Redis runs after its caller gave up (Redis stalled past the
// deadline) expires on arrival instead of holding the message, and releases
// and done markers Redis did not take are retried in the background, so the
// first retry after Redis returns runs the job (see package idempotency).
// Call Close at shutdown to flush them.
//
// # Failure callbacks
//
// A POST to FailureCallbackPath is QStash's failure callback: the dead job
// is logged (job, message id, DLQ id, last status and the worker's own last
// answer) and counted in jobworker_dead_jobs_total{job}, once per DLQ entry.
package worker
