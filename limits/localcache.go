package limits

import (
	"hash/maphash"
	"sync"
	"time"
)

// blockCache remembers identifiers that have used up their window, so a
// repeat offender is answered in memory, with no Redis call, until the
// window ends. It is keyed by the full Redis key (tier, bucket and hashed
// identifier), so a block in one bucket never shadows another.
//
// Remaining quota can only shrink until the window ends (other instances
// consume, nothing refunds except Reset), so answering "denied" from a cached
// remaining count is safe; the entry's deadline is computed from the moment
// the request was sent, which is never later than the server's window end.
//
// Size is bounded: an insert into a full shard first drops expired entries,
// then arbitrary ones.
type blockCache struct {
	seed   maphash.Seed
	shards [cacheShards]cacheShard
	per    int // capacity of one shard
}

const cacheShards = 32

type cacheShard struct {
	mu sync.Mutex
	m  map[string]blockEntry
}

type blockEntry struct {
	remaining int
	until     time.Time // local clock (monotonic) deadline
	reset     time.Time // server clock window end, reported to clients
}

func newBlockCache(size int) *blockCache {
	if size <= 0 {
		return nil
	}
	per := (size + cacheShards - 1) / cacheShards
	c := &blockCache{seed: maphash.MakeSeed(), per: per}
	for i := range c.shards {
		c.shards[i].m = make(map[string]blockEntry)
	}
	return c
}

func (c *blockCache) shard(key string) *cacheShard {
	return &c.shards[maphash.String(c.seed, key)%cacheShards]
}

// get returns the live entry for key, dropping it when expired.
func (c *blockCache) get(key string, now time.Time) (blockEntry, bool) {
	if c == nil {
		return blockEntry{}, false
	}
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[key]
	if !ok {
		return blockEntry{}, false
	}
	if !now.Before(e.until) {
		delete(s.m, key)
		return blockEntry{}, false
	}
	return e, true
}

func (c *blockCache) put(key string, e blockEntry, now time.Time) {
	if c == nil {
		return
	}
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[key]; !ok && len(s.m) >= c.per {
		for k, old := range s.m {
			if !now.Before(old.until) {
				delete(s.m, k)
			}
		}
		for k := range s.m {
			if len(s.m) < c.per {
				break
			}
			delete(s.m, k) // map order is random: an arbitrary victim
		}
	}
	s.m[key] = e
}

func (c *blockCache) remove(key string) {
	if c == nil {
		return
	}
	s := c.shard(key)
	s.mu.Lock()
	delete(s.m, key)
	s.mu.Unlock()
}

func (c *blockCache) len() int {
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
