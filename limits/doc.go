// Package limits rate-limits requests in Redis by named bucket and tier, with
// at most one round trip per decision, honest headers and an identity clients
// cannot spoof.
//
// Policy is data: tiers (strict 10/min, moderate 60/min, generous 120/min)
// carry quotas, buckets ("auth:otp", "tips:quick", "streams:status", …) pick a
// tier, and single buckets may override their quota:
//
//	l, err := limits.New(limits.Config{Client: rdb, HashKey: key, Prefix: "app:"})
//	res, err := l.Allow(ctx, "tips:quick", "user:42")
//	if !res.Allowed { /* res.RetryAfter; res.Reason.Unavailable() means 503 */ }
//
// For Echo, Middleware (or MiddlewareConfig.ToMiddleware) sets
// X-RateLimit-Limit/-Remaining/-Reset (Reset in Unix epoch seconds) and the
// IETF RateLimit-Policy/RateLimit fields (delta seconds) on every response
// and answers refusals with 429 (the client used its quota) or 503 (the
// limiter could not decide: Redis unavailable on a fail-closed bucket, or
// too many decisions waiting), an integer Retry-After and a problem+json
// body. The client identity is the authenticated user id when there is one,
// else the client IP found by an IPExtractor built for the deployment
// (direct, xff, x-real-ip, cloudflare, vercel; there is no default), with IPv6
// grouped by /64.
//
// # Algorithm: a fixed window per identifier, opened by its first request
//
// Each (tier, bucket, identifier) has one counter key. The first admitted
// request creates it with the bucket's period as expiry; later requests are
// admitted while count+cost ≤ limit; a refusal writes nothing. The window
// ends when the key expires, so window edges come from the Redis server's
// clock (never an application server's), and the script also returns Redis
// TIME so the reported reset instant is the same on every instance.
//
// Why not GCRA (go-redis/redis_rate) or a sliding window: for abuse-control
// tiers measured in requests per minute the counter is enough, its script is
// the cheapest (integer GET/PTTL/INCRBY, no float formatting: pipelined on
// the 2-core test machine Redis ran it at ~170k/s against ~110–136k/s for
// redis_rate's GCRA script), its headers are exact (Remaining is the true count,
// Reset is the true window end, Retry-After is exactly when quota returns),
// and its bound is simple to state and to test:
//
//   - per window, at most Limit requests are admitted, across any number of
//     processes (the script is atomic on one key), with or without leases,
//     while Redis answers within Timeout (see "Degraded mode" for outages);
//   - in any interval of one Period, at most 2×Limit (the end of one window
//     and the start of the next). Windows start at each identifier's first
//     request, so resets of different clients do not line up.
//
// GCRA would be smoother (no 2× edge) but answers "retry in 6 s" for a
// 10/min tier, and a sliding-window counter is an approximation whose
// Remaining is not an exact count.
//
// Windows are whole milliseconds long and a key in its last millisecond
// counts as expired, so a client that waits exactly the reported Retry-After
// is admitted.
//
// # Round trips, batching and queueing
//
// A decision that reaches Redis is one script run (EVALSHA; EVAL once after
// a NOSCRIPT). At most Config.MaxInFlight (2) round trips per Limiter are
// outstanding; decisions that arrive while all are busy wait in a queue and
// leave together when a round trip returns. A lone caller is never delayed:
// with a free slot it sends its own decision at once. On a client whose keys
// all live on one server (a *redis.Client, single node or Sentinel) a batch
// is one run of a batch script that decides each key in turn, so Redis
// parses one command, enters Lua once and reads TIME once for the whole
// batch; on a ClusterClient or Ring, whose batches span hash slots, it is a
// pipeline of one script run per decision. Either way each decision is
// atomic on its own key and gets the answer it would get alone (decisions
// on one key are taken in the order they were queued), so batching changes
// no answer and no bound; a key that fails in Redis (a wrong type) fails
// its own decision only. Under load this saves most of the syscalls and
// most of Redis's per-call work, which is what a decision costs on a small
// machine.
//
// What batching costs is latency, and it is bounded: a queued decision
// waits for one round trip in flight, then makes its own (a batch holds up
// to 128 decisions; MaxQueue 1024 drain in at most four round trips of two
// slots). The benchmarks in docs/benchmarks.md report p50 and p99 per
// decision beside go-redis/redis_rate's.
//
// Config.Timeout (50 ms) bounds one round trip from the moment it is sent:
// time spent queued behind other round trips is this process's own load,
// not Redis being slow, and never turns a decision into a degraded one (an
// earlier release counted it, and a loaded host then admitted bursts far
// past strict limits). The queue is bounded (Config.MaxQueue, 1024): a
// decision that finds it full is refused at once as ReasonOverloaded, 503
// with Retry-After (Config.DegradedRetryAfter, 1 s), never admitted and
// never sent. 503 rather than 429: the client did not use its quota, this
// instance is short of capacity and the client should come back soon. The
// caller's ctx still bounds queue and round trip together; a decision whose
// ctx ends while queued is never sent.
//
// # Keys
//
// Prefix + "rl:<tier>:<bucket>:{<hash>}", where <hash> is 128 bits of
// HMAC-SHA-256 of the identifier under Config.HashKey: no IP address or user
// id is stored, and without the key a Redis reader cannot recover an IPv4
// address by hashing all 2³² of them. The key is required (at least 16
// bytes), shared by every instance, and must not be kept in Redis; changing
// it starts every window afresh once. The braces make the hash the Redis
// Cluster hash tag. Every key carries the window as its TTL.
//
// # Local block cache
//
// When a window is spent (a refusal, or an admission that leaves 0), the
// limiter remembers the (bucket, identifier) until the window's end and
// refuses further requests in memory (ReasonBlockedLocally): a repeat
// offender costs no Redis call. The cache is bounded (Config.LocalCacheSize);
// when it is full, a new entry replaces the one worth least among a few
// sampled: an identifier seen once before a busy identifier's lease, and
// that before a spent window (expired entries always go first).
//
// # Leases: busy identifiers without a round trip each
//
// A round trip per admission is what a decision costs, in latency (one
// caller cannot go faster than Redis answers) and in CPU on both sides. For
// buckets listed in Config.Leases an instance takes more than it needs from
// the window of an identifier it has already seen in that window, and
// admits the next requests from memory (ReasonAllowedLocally):
//
//   - the first request of a window on an instance takes only itself, so an
//     identifier seen once costs exactly one round trip, as without leases;
//   - each later trip takes as much again as the instance has taken so far
//     (the lease doubles while the identifier stays busy), at most the
//     configured lease and at most half of what is left, so near the limit
//     instances share the end of a window in ever smaller pieces;
//   - the script grants a lease only from what is left: admission depends on
//     the request's own cost, and the counter never passes Limit;
//   - a lease lives in the local cache until the window's end by this
//     instance's clock, measured from when the request was sent, so it is
//     never spent in the next window;
//   - when Redis refuses a request while a concurrent round trip has just
//     leased this instance enough, the request is served from that lease:
//     a refusal always means nothing is left here (Remaining 0).
//
// What it costs: requests an instance holds are counted as used in Redis.
// If an identifier's traffic moves to other instances, up to the lease per
// instance goes unused that window (admitted nowhere); Remaining counts what
// is left in Redis plus what this instance holds, so it is exact for one
// instance and may be low by what others hold. An identifier's first
// requests on each instance still ask Redis, so leases pay off for busy
// identifiers (tenants, API keys, heavy clients) and do nothing for a crowd
// of identifiers seen once each. Requests held when Redis fails are still
// admitted. Leases
// are off by default: every admission then asks Redis and every header is
// exact across instances.
//
// # Resets reach every instance
//
// Reset deletes the window's key and publishes it on Prefix + ResetChannel
// (Redis Pub/Sub); every instance that runs Limiter.Listen drops its block,
// lease and outage window for it when the message arrives, so a reset
// identifier is admitted everywhere at once, not when each instance's
// cached window ends. Pub/Sub forgets messages sent while an instance was
// disconnected, so each (re)subscription empties that instance's local
// cache; a round trip that overlapped a reset is answered but not cached.
//
// # Degraded mode: when Redis cannot answer
//
// A round trip that fails or passes Timeout is an outage for that decision
// (Redis may or may not have counted it). Config.Failure sets, per tier or
// bucket, what happens then:
//
//   - FailureClosed, the strict tier's default: refused, 503 with
//     Retry-After (ReasonDegradedClosed). Strict buckets (logins, one-time
//     codes, tips) are what an attacker hammers while the limiter is blind.
//   - FailureLocal, every other tier's default: a fixed window per (bucket,
//     identifier) in this instance's memory, Period long by its clock,
//     admitting at most Limit (ReasonDegradedLocal; 429 once spent). Each
//     instance counts alone, so an outage admits at most Limit × instances
//     per window, never an unlimited flood. Memory is bounded
//     (Config.DegradedCacheSize windows); a live window is never dropped
//     (that would restart its count), so a new identifier that finds no
//     room is refused with 503. A window the local cache knows (spent, or a
//     leasing bucket's) carries on: its end and what was left, not a fresh
//     quota.
//   - FailureOpen, only when configured: admitted with no limit
//     (ReasonDegradedOpen). The headers still report the local count.
//
// Whatever the mode, a window this instance knows is spent stays refused
// (ReasonBlockedLocally). While Redis answers within Timeout no decision is
// taken locally, so no tier passes its limit across any number of
// instances; a Redis slower than Timeout is an outage, and only the local
// bounds above hold. Every degraded decision is counted
// (jobworker_ratelimit_degraded_total{action}, and
// jobworker_ratelimit_decisions_total{reason}) and logged at most once per
// Config.LogEvery.
//
// # Headers in every mode
//
// A refusal never reports quota remaining (X-RateLimit-Remaining and the
// RateLimit field's r are 0 for Allow; Result.Remaining is below the cost
// asked for). Redis decisions report the window as Redis counts it (plus
// this instance's lease); local ones (lease, block, outage limiter) what
// this instance knows, with Reset by its clock; 503s (fail-closed,
// overload) report 0 remaining and Reset = Retry-After. The middleware's
// golden tests cover each Reason.
//
// # Tests and time
//
// Windows in Redis follow only the Redis server's clock (key expiry and
// TIME). Everything kept in memory (block cache, leases, the outage
// limiter) reads an injectable clock (an unexported Config hook the
// package's tests drive), so tests of windows, leases and outages never
// sleep; they end a Redis window by expiring its key.
//
// # Configuration from the environment
//
// ParseIPSource, ParseOverrides, ParseFailure, ParseFailClosed and
// ParseLeases read the proposed variables RATE_LIMIT_IP_SOURCE,
// RATE_LIMIT_TRUSTED_PROXIES, RATE_LIMIT_OVERRIDES, RATE_LIMIT_FAILURE,
// RATE_LIMIT_FAIL_CLOSED and RATE_LIMIT_LEASES; RATE_LIMIT_REDIS_TIMEOUT is a
// time.ParseDuration value for Config.Timeout. Every configuration error is
// a *ConfigError naming the field or input at fault (errors.As), so a
// caller maps it to its variable without reading the message;
// Config.Policies checks the policy fields without a client.
package limits
