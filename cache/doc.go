// Package cache is a Redis read-through cache for hot paths, with stampede
// protection at two levels and a failure policy that never takes the
// caller down with Redis.
//
//	c, err := cache.New(rdb, cache.Config{Prefix: "myapp:", Registerer: reg})
//	...
//	st, err := cache.GetOrCompute(ctx, c, "status:{"+id+"}", 10*time.Second,
//		func(ctx context.Context) (Status, error) { return db.Status(ctx, id) },
//		cache.WithStaleWhileRevalidate(5*time.Second))
//	...
//	err = c.Invalidate(ctx, "status:{"+id+"}") // e.g. when a stream starts
//
// On a miss, callers in one process share one flight (a caller that gives
// up does not cancel it); across processes the flight's leader takes a
// short Redis lock (SET NX PX with an owner token, extended while it
// computes, released by compare-and-delete) and the other instances re-read
// with jittered backoff for up to Config.WaitBudget. Past the budget they
// serve a stale value if one is kept, else compute themselves. A holder
// that dies leaves its lock to expire after Config.LockTTL, and one waiter
// takes over: at most one extra computation.
//
// The value is stored only while its computation still holds the lock
// (a fenced write), so Invalidate, which deletes value and lock together,
// also stops computations that started before it from storing old data.
//
// TTLs are honoured down to the millisecond (Redis PX). With
// WithStaleWhileRevalidate a value past its TTL is served at once while one
// instance refreshes it in the background; WithStaleIfError keeps it to
// serve when the refresh fails. Values are JSON by default (Config.Codec,
// WithCodec).
//
// When Redis errors or exceeds Config.RedisTimeout, GetOrCompute computes
// directly and skips the write (fail open). Every call is counted by
// key family (the first segment of the key, "status" for "status:{42}")
// and outcome in jobworker_cache_requests_total: hit, miss_computed,
// waited_hit, stale_served, lock_timeout, degraded, error, canceled.
//
// At shutdown call Close before closing Redis: it refuses new calls and
// waits for background refreshes, shared computations and Redis calls
// still running (cancelling them if its context ends first).
//
// # Keys
//
// Keys are stored as <Prefix>cache:<key>, locks as <Prefix>lock:cache:<key>.
// Both keys of an entry share a Redis Cluster hash tag: the key's own
// ("status:{42}") if it has one, else the whole key is wrapped in braces.
// Keys must hold ids, or public handles such as usernames, never private
// data: they are visible to anyone with Redis access. Set Config.HashKeys to
// store SHA-256 digests instead. Logs never carry keys, only a short hash.
package cache
