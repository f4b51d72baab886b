// Package limits rate-limits requests in Redis by named bucket and tier, with
// at most one round trip per decision, honest headers and an identity clients
// cannot spoof.
//
// Policy is data: tiers (strict 10/min, moderate 60/min, generous 120/min)
// carry quotas, buckets ("auth:otp", "tips:quick", "streams:status", …) pick a
// tier, and single buckets may override their quota:
//
//	l, err := limits.New(limits.Config{Client: rdb, Prefix: "app:"})
//	res, err := l.Allow(ctx, "tips:quick", "user:42")
//	if !res.Allowed { /* res.RetryAfter */ }
//
// For Echo, Middleware (or MiddlewareConfig.ToMiddleware) sets
// X-RateLimit-Limit/-Remaining/-Reset (Reset in Unix epoch seconds) and the
// IETF RateLimit-Policy/RateLimit fields (delta seconds) on every response
// and answers refusals with 429, an integer Retry-After and a problem+json
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
//     processes (the script is atomic on one key), with or without leases;
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
// # Round trips and batching
//
// Each decision that reaches Redis is one EVALSHA (EVAL once after a
// NOSCRIPT). At most Config.MaxInFlight (4) round trips per Limiter are
// outstanding; decisions that arrive while all are busy leave together as
// one pipeline. A lone
// caller is never delayed; under load this saves most of the syscalls, which
// is what a decision costs on a small machine. Each decision is still its own
// atomic script run on its own key, so batching changes no answer.
//
// # Keys
//
// Prefix + "rl:<tier>:<bucket>:{<hash>}", where <hash> is 128 bits of
// SHA-256 (HMAC-SHA-256 with Config.HashKey) of the identifier: no IP address
// or user id is stored, and the braces make the hash the Redis Cluster hash
// tag. Every key carries the window as its TTL.
//
// # Local block cache
//
// When a window is spent (a refusal, or an admission that leaves 0), the
// limiter remembers the (bucket, identifier) until the window's end and
// refuses further requests in memory (ReasonBlockedLocally): a repeat
// offender costs no Redis call. The cache is bounded (Config.LocalCacheSize).
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
//     never spent in the next window.
//
// What it costs: requests an instance holds are counted as used in Redis.
// If an identifier's traffic moves to other instances, up to the lease per
// instance goes unused that window (admitted nowhere); Remaining counts what
// is left in Redis plus what this instance holds, so it is exact for one
// instance and may be low by what others hold. An identifier's first
// requests on each instance still ask Redis, so leases pay off for busy
// identifiers (tenants, API keys, heavy clients) and do nothing for a crowd
// of identifiers seen once each. Requests held when Redis fails are still
// admitted; Reset clears this instance's lease, not other instances'. Leases
// are off by default: every admission then asks Redis and every header is
// exact across instances.
//
// # Degraded mode
//
// Each round trip has a short deadline (Config.Timeout, 50 ms by default).
// On timeout or error the bucket's policy decides: fail open (default) or,
// for tiers/buckets listed in Config.FailClosed, refuse with a 503 and
// Retry-After. A fail-open decision reports the full quota, since usage is
// unknown. Every degraded decision is counted
// (jobworker_ratelimit_degraded_total) and logged at most once per
// Config.LogEvery.
//
// # Tests and time
//
// Enforcement uses only the Redis server's clock (key expiry and TIME); there
// is no clock hook. Tests use short periods through per-bucket overrides
// (1 s) instead of shifting time.
//
// # Configuration from the environment
//
// ParseIPSource, ParseOverrides, ParseFailClosed and ParseLeases read the
// proposed variables RATE_LIMIT_IP_SOURCE, RATE_LIMIT_TRUSTED_PROXIES,
// RATE_LIMIT_OVERRIDES, RATE_LIMIT_FAIL_CLOSED and RATE_LIMIT_LEASES;
// RATE_LIMIT_REDIS_TIMEOUT is a time.ParseDuration value for Config.Timeout.
package limits
