// Package apiapp wires cmd/api: the origin guide's reference routes on top
// of the shared server, with PostgreSQL (internal/store) as the source of
// truth and Redis for derived data only. cmd/api and cmd/dev both build the
// API through Build, so the local stack runs exactly the production wiring.
//
// # Routes
//
//	GET  /api/streams/status?username=  auth optional, bucket streams:status (generous)
//	POST /api/streams/start              auth required, bucket streams:start (moderate)
//	POST /api/streams/stop               auth required, bucket streams:stop  (moderate)
//	POST /api/tips/quick                 auth required, bucket tips:quick (strict), Idempotency-Key
//
// Middleware runs in that order on every route: body limit (POST), auth,
// rate limit (the user id when authenticated, else the client IP from the
// configured RATE_LIMIT_IP_SOURCE), Idempotency-Key (tips only), handler.
//
// # Stream status
//
// The public part (live, title, viewers, started at) is read through the
// cache with its mini-lock under "status:{username}" (Redis:
// <prefix>cache:status:{username}) for CACHE_STATUS_TTL (10 s); unknown
// usernames are cached as "not found" too, so probing names costs no
// database reads. Usernames are public handles, not PII: the key names the
// channel, never who asked. The viewer-specific part (isCreator, canTip) is
// computed on every request from the verified token and never cached; the
// answer carries Vary: Cookie, Authorization and Cache-Control: private.
// When Redis is down the cache computes from the database directly. The
// X-Cache response header names the cache outcome (hit, miss_computed,
// degraded, …) for debugging.
//
// # Follow-up jobs: the outbox
//
// With PostgreSQL, a change and the jobs that follow it are one
// transaction: the store runs the FollowUps this package gives it
// (store.Postgres.WithFollowUps), which write the jobs into the outbox
// (package outbox), and a relay publishes them to QStash once the
// transaction committed. A job is published if and only if its change
// committed; a QStash outage or a crash after the commit delays it, never
// loses it; the routes never wait for QStash. The jobs are written without
// an in-transaction NOTIFY (it would serialise every tip's commit on
// PostgreSQL's notification lock); once the store call returned, the
// handler wakes the process's relay, or, with OUTBOX_RELAY=off, sends one
// NOTIFY outside the transaction for relays elsewhere (the relays' sweep
// finds the rows in any case). The relay runs in the process unless
// OUTBOX_RELAY=off (serverless: a QStash schedule calls the worker's relay
// route instead); it stops at shutdown after the last request, before the
// pool closes. See docs/outbox.md.
//
// With the in-memory store of the local stack there is no transaction to
// write them in: the handlers publish the jobs right after the change, as
// described below for each route. That path is for development only.
//
// # Stream start and stop
//
// The creator's request updates PostgreSQL, deletes the status key at once
// (so the next read on any instance recomputes), and queues
// streams.notify-followers, whose worker handler deletes the key again and
// notifies followers. The job is written in the transaction that put the
// stream live or ended it; a start of a live stream (a retry, a new title)
// or a stop of an ended one writes none, so a retried request never
// notifies twice. The answer is 200 whether or not QStash is reachable. On
// the dev path the job is published after the change (deduplicated by the
// broadcast's start or end instant) and a failed publish answers 503 +
// Retry-After, so the client retries the idempotent request.
//
// # Quick tips and idempotency
//
// The Idempotency-Key middleware (Redis, namespace "http") answers retries
// and concurrent duplicates first. The handler then moves the money in one
// database transaction that also records the key under the unique
// (tipper, key) constraint; the key stored is idempotency.DownstreamKey, a
// hash of user, route and the client's key. Because that constraint makes
// the tip idempotent on its own, every store error releases the Redis key
// (idempotency.NoSideEffect) instead of being recorded:
//
//   - 402 insufficient funds, 409 stream not live, 422 self-tip, 404: nothing
//     was written, so a retry with the same key after a top-up (or when the
//     stream is live again) is a new attempt — the same answer a lost Redis
//     record would give.
//   - a 500 from a database error whose commit may or may not have happened:
//     the retry with the same key either finds the committed tip (and
//     replays it) or runs once.
//
// Only a 201 is recorded in Redis. When the Redis record is gone (flush,
// failover, expiry) the same key is answered from the database: the
// original tip, 201, with Idempotent-Replayed: true, and no money moves; a
// new key can only spend what the balance still holds (402 otherwise).
// tips.notify-creator and tips.refresh-count are written in the tip's
// transaction (deduplicated per tip); a replay writes nothing, since the
// original transaction did, and a refused tip leaves none. On the dev path
// they are published after the tip in one batch (a replay publishes again,
// harmlessly); if QStash cannot be reached the tip still answers 201 and the
// failure is logged, since failing a request whose money moved would invite
// a retry with a new key.
//
// # Failure policy
//
// Redis down: rate limits fail open (unless RATE_LIMIT_FAIL_CLOSED), the
// status route computes from the database, tips answer 503 + Retry-After
// (the idempotency layer fails closed). /readyz checks Redis and the
// database.
//
// # Errors
//
// Store errors become problem+json in one place (errors.go): ErrInvalid 400,
// ErrNotFound 404, ErrNotCreator 403, ErrInsufficientFunds 402,
// ErrStreamNotLive 409, ErrSelfTip 422, ErrIdempotencyKeyReused 422, a
// timeout 503, anything else 500 (logged, never shown).
//
// # Redis keys and PII
//
// cache:status:{username} (public handle), cache:count:tips:30d:{creatorId}
// (written by the worker), rl:… and idem:http:… (hashes only). Values hold
// ids, titles and amounts; the tip answer stored for replays leaves out the
// tipper's id. No token, IP address or e-mail is ever written to Redis.
package apiapp
