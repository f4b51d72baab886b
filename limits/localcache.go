package limits

import (
	"hash/maphash"
	"math"
	"sync"
	"time"
)

// localCache is what this instance knows of the windows it has seen: which
// identifiers have used up their window (so a repeat offender is answered in
// memory, with no Redis call, until the window ends) and, for buckets with a
// lease, the requests this instance has taken ahead and not yet spent. It is
// keyed by the full Redis key (tier, bucket and hashed identifier), so an
// entry of one bucket never shadows another.
//
// Answering from it is safe because, within one window, the quota left in
// Redis can only shrink (other instances consume, nothing refunds except
// Reset), and an entry's deadline is computed from the moment the request
// was sent, which is never later than the server's window end.
//
// Size is bounded: an insert into a full shard drops the expired entries
// among a few it samples, or else the one of them worth least, preferring
// identifiers seen once to busy ones and to spent windows (an evicted lease
// is quota this instance gives up).
type localCache struct {
	seed   maphash.Seed
	shards [cacheShards]cacheShard
	per    int // capacity of one shard
}

const cacheShards = 32

type cacheShard struct {
	mu sync.Mutex
	m  map[string]localEntry
}

// localEntry is one window as this instance knows it.
type localEntry struct {
	tokens    int       // leased to this instance, not yet spent
	asked     int       // leases asked for by round trips still in flight
	remaining int       // left in Redis, leased to nobody, at the latest answer
	taken     int       // taken by this instance in this window (sizes the next lease)
	until     time.Time // local clock (monotonic) deadline
	reset     time.Time // server clock window end, reported to clients
}

// outcome of consulting the local cache before Redis.
type outcome int

const (
	askRedis outcome = iota // nothing decisive here
	spent                   // admitted from this instance's lease
	blocked                 // the window cannot admit n: refuse
)

func newLocalCache(size int) *localCache {
	if size <= 0 {
		return nil
	}
	per := (size + cacheShards - 1) / cacheShards
	c := &localCache{seed: maphash.MakeSeed(), per: per}
	for i := range c.shards {
		c.shards[i].m = make(map[string]localEntry)
	}
	return c
}

func (c *localCache) shard(key string) *cacheShard {
	return &c.shards[maphash.String(c.seed, key)%cacheShards]
}

// take spends n leased requests when this instance holds them, or reports
// that the window is spent. The entry is returned as it is after the call
// (zero when there is none). When Redis must be asked, extra is the lease
// to ask for on top of n (at most lease, see leaseSize); it is counted as
// asked until settle or unask, so concurrent callers never hold more than
// lease between them.
func (c *localCache) take(key string, n, lease int, now time.Time) (e localEntry, out outcome, extra int) {
	if c == nil {
		return localEntry{}, askRedis, 0
	}
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[key]
	switch {
	case !ok:
		return localEntry{}, askRedis, 0
	case !now.Before(e.until):
		delete(s.m, key)
		return localEntry{}, askRedis, 0
	case e.tokens >= n:
		e.tokens -= n
		s.m[key] = e
		return e, spent, 0
	case e.tokens+e.remaining < n:
		return e, blocked, 0
	}
	if extra = leaseSize(e, n, lease); extra > 0 {
		e.asked += extra
		s.m[key] = e
	}
	return e, askRedis, extra
}

// leaseSize is how many requests beyond n to take from Redis for later. The
// first request of a window on this instance takes none (there is no entry
// yet), so an identifier seen once costs exactly what it would without
// leases; after that each lease is as large as everything taken here so far
// in the window (the lease doubles while the identifier stays busy), at most
// lease minus what this instance holds or is asking for, and at most half of
// what was left, so instances near the limit share the end of a window in
// ever smaller pieces instead of one of them holding it.
func leaseSize(e localEntry, n, lease int) int {
	if lease == 0 || e.taken == 0 {
		return 0
	}
	return max(0, min(lease-e.tokens-e.asked, e.taken, (e.remaining-n)/2))
}

// unask forgets a lease asked for by a round trip that failed.
func (c *localCache) unask(key string, extra int) {
	if c == nil || extra == 0 {
		return
	}
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[key]; ok {
		e.asked = max(e.asked-extra, 0)
		s.m[key] = e
	}
}

// peek returns the live entry for key without changing it.
func (c *localCache) peek(key string, now time.Time) localEntry {
	if c == nil {
		return localEntry{}
	}
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[key]; ok && now.Before(e.until) {
		return e
	}
	return localEntry{}
}

// settle records a Redis answer to a round trip that asked for extra.
// fresh is the window as that answer describes it, with the requests it
// leased to this instance in tokens and taken; keep says whether to
// remember it when nothing is known yet. An entry still live belongs to the
// same window (its deadline is never later than the window's end), so the
// two are merged: leases add up, and the smaller remaining is the newer one.
// It returns the merged entry.
func (c *localCache) settle(key string, fresh localEntry, extra int, keep bool, now time.Time) localEntry {
	if c == nil {
		return fresh
	}
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[key]
	if ok && now.Before(e.until) {
		e.asked = max(e.asked-extra, 0)
		e.tokens += fresh.tokens
		e.taken += fresh.taken
		e.remaining = min(e.remaining, fresh.remaining)
		if fresh.until.After(e.until) {
			e.until = fresh.until
		}
		s.m[key] = e
		return e
	}
	if !keep {
		if ok {
			delete(s.m, key)
		}
		return fresh
	}
	if !ok && len(s.m) >= c.per {
		s.evict(now)
	}
	s.m[key] = fresh
	return fresh
}

// evictSample bounds the work of making room: a full shard looks at this
// many entries, not all of them.
const evictSample = 8

// evict makes room for one entry: it drops the expired entries among a
// sample (map order is random) or, when none has expired, the sampled entry
// worth least. A known-spent window is worth most (dropping it costs a
// Redis call per request until it is learnt again); otherwise an entry is
// worth what this instance has taken of its window: an identifier seen once
// (most of a long tail) is cheap to forget, while a busy identifier's entry
// holds its lease, which would be lost, and how far it has doubled, which
// would start again from one request per round trip.
func (s *cacheShard) evict(now time.Time) {
	var victim string
	worth := -1
	seen, dropped := 0, false
	for k, e := range s.m {
		if !now.Before(e.until) {
			delete(s.m, k)
			dropped = true
		} else if w := e.worth(); worth < 0 || w < worth {
			victim, worth = k, w
		}
		if seen++; seen == evictSample {
			break
		}
	}
	if !dropped {
		delete(s.m, victim)
	}
}

// worth ranks live entries for eviction (see evict).
func (e localEntry) worth() int {
	if e.tokens+e.remaining == 0 {
		return math.MaxInt
	}
	return e.taken + e.tokens
}

func (c *localCache) remove(key string) {
	if c == nil {
		return
	}
	s := c.shard(key)
	s.mu.Lock()
	delete(s.m, key)
	s.mu.Unlock()
}

// clear forgets every entry (a missed reset may concern any of them).
func (c *localCache) clear() {
	if c == nil {
		return
	}
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		clear(s.m)
		s.mu.Unlock()
	}
}

func (c *localCache) len() int {
	if c == nil {
		return 0
	}
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
