// Package idempotency makes retried requests and redelivered messages take
// effect once, with Redis as the shared memory.
//
// # The core: Store and Lease
//
// A Store hands out short, renewable leases on keys and keeps the result of
// finished work, one Redis hash per key and one Lua script per step (so it
// runs on Redis Cluster and Upstash). The worker kit's QStash dedupe and the
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
//		ctx, stop := res.Lease.KeepAlive(ctx) // renews the claim, then every LeaseTTL/3
//		err := handle(ctx)
//		_ = stop()
//		if err != nil {
//			_ = res.Lease.Release(ctx) // owner-checked: the retry runs it
//		} else {
//			_ = res.Lease.Complete(ctx, nil) // done for ResultTTL
//		}
//	}
//	// at shutdown, before closing rdb:
//	store.Close(ctx)
//
// Guarantees: Acquire claims or reports the existing record atomically, so
// a finished key is never claimed again while its record lives; only the
// owner (by a random token) can renew, complete or release; a result lives
// ResultTTL (default 24 h). Redis errors are ErrUnavailable: callers fail
// closed. StoreConfig.Timeout bounds how long every call waits. Build the
// go-redis client with ContextTimeoutEnabled so the round trip itself is cut
// off at the deadline too (otherwise the caller stops waiting while the round
// trip runs on until the client's ReadTimeout).
//
// # A caller that gave up never blocks its own retry
//
// A stalled Redis (paused, overloaded, a failover) keeps commands in its
// socket and runs them when it resumes, after their callers have given up.
// Three things keep such a claim from holding the key:
//
//   - A new lease is written with an absolute expiry, the caller's deadline
//     plus StoreConfig.ClaimGrace (1 s), which Redis applies on its own
//     clock: a claim run late expires on arrival. The owner's KeepAlive
//     renews it into a full LeaseTTL (30 s) lease before the grace ends, so
//     only work that runs longer than the claim window costs a renewal. A
//     host whose clock is behind Redis's by more than the window is detected
//     (the reply comes in time yet the claim expired) and falls back to a
//     relative lease, with a warning.
//   - The store remembers claims it gave up on, and releases and completions
//     Redis did not answer, and finishes them in the background once Redis
//     answers (at most 10,000 at a time; see Store.Close).
//   - A later Acquire of the same key through the same store takes over a
//     claim it abandoned.
//
// So after Redis returns, the first retry of a refused request runs, once.
//
// # Nonces: a credential accepted once
//
// WithNonce records a nonce (a signed token's jti) with the claim, in the
// same script and round trip, until the token expires: the same nonce for
// another key is ErrNonceReused and claims nothing. Package worker uses it so
// a captured QStash delivery cannot be replayed under another message id.
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
