// Package idempotency makes retried requests and redelivered messages take
// effect once, with Redis as the shared memory.
//
// # The core: Store and Lease
//
// A Store hands out short, renewable leases on keys and keeps the result of
// finished work, one Redis hash per key and one Lua script per step (so it
// runs on Redis Cluster and Upstash). The worker's QStash dedupe and the
// Stripe event dedupe use it directly:
//
//	store, err := idempotency.NewStore(rdb, idempotency.StoreConfig{
//		Namespace: "qstash",           // keys: Prefix + "idem:qstash:" + key
//		ResultTTL: 7 * 24 * time.Hour, // longer than the sender's retry horizon
//	})
//	res, err := store.Acquire(ctx, messageID, "")
//	switch {
//	case errors.Is(err, idempotency.ErrUnavailable): // 503, nothing runs
//	case err != nil:                                  // ErrFingerprintMismatch or a bug
//	case res.Outcome == idempotency.Done:             // 200, already processed
//	case res.Outcome == idempotency.InProgress:       // non-2xx + Retry-After
//	default: // idempotency.Acquired: run it
//		ctx, stop := res.Lease.KeepAlive(ctx) // renews every LeaseTTL/3
//		err := handle(ctx)
//		_ = stop()
//		if err != nil {
//			_ = res.Lease.Release(ctx) // owner-checked: the retry runs it
//		} else {
//			_ = res.Lease.Complete(ctx, nil) // done for ResultTTL
//		}
//	}
//
// Guarantees: Acquire claims or reports the existing record atomically, so
// a finished key is never claimed again while its record lives; only the
// owner (by a random token) can renew, complete or release; a lease lives
// LeaseTTL (default 30 s) unless renewed, so a crashed owner frees the key
// quickly; a result lives ResultTTL (default 24 h). Redis errors are
// ErrUnavailable: callers fail closed. StoreConfig.Timeout bounds how long
// every call waits. Build the go-redis client with ContextTimeoutEnabled so
// the round trip itself is cut off at the deadline too (otherwise the caller
// stops waiting while the round trip runs on until the client's ReadTimeout).
//
// Concurrent calls of one Store share round trips: at most 4 are
// outstanding, and calls arriving while all are busy leave together as one
// pipeline (split by slot on Redis Cluster). A lone call is never delayed,
// and each call is still its own atomic script run, so batching changes no
// answer; a call whose deadline passes while it is queued is never sent.
//
// # The Idempotency-Key middleware
//
// For Echo routes with side effects (POST /api/tips/quick), placed after
// auth, rate limits and body limits:
//
//	mw, err := idempotency.Middleware(store, func(c echo.Context) string { return userID(c) })
//	api.POST("/tips/quick", quickTip, mw)
//
// Behaviour (IETF draft-ietf-httpapi-idempotency-key-header, Stripe):
//
//   - Idempotency-Key is required: 1–255 printable ASCII characters, bare or
//     as an RFC 8941 quoted string; missing, invalid or repeated → 400.
//   - The stored key is a SHA-256 of principal, method, route template and
//     key: keys never cross users or routes, and no client input or user id
//     reaches Redis.
//   - The fingerprint is method, path with query and the raw body bytes; the
//     same key with another request → 422. Bodies over 1 MiB → 413.
//   - One execution per key: a concurrent duplicate → 409 + Retry-After.
//   - A finished key replays the stored status, body, Content-Type and
//     Location with Idempotent-Replayed: true. Set-Cookie is never stored.
//   - Redis unavailable → 503 + Retry-After; nothing runs.
//   - What is stored is decided in one place (see decide in policy.go):
//     400, 401, 403, 404, 405, 413, 415, 422 and 429 and errors wrapped with
//     NoSideEffect release the key; a panic, a 5xx or a plain returned error
//     is an ambiguous outcome, recorded and replayed, never run again;
//     everything else is stored. Returned errors are rendered by Echo's
//     HTTPErrorHandler inside the middleware, so their bodies are recorded.
//   - Records expire after ResultTTL (24 h by default); the same key after
//     that is a new request. A process crash mid-handler (no panic to
//     recover) frees the key after one lease; pass DownstreamKey(ctx) to the
//     payment provider so that re-run cannot charge twice.
//
// Metrics: jobworker_idempotency_requests_total{outcome} with first,
// replayed, conflict, mismatch, ambiguous, unavailable, released and
// invalid, and jobworker_idempotency_store_errors_total{op}.
package idempotency
