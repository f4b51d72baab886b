package limits

import (
	"hash/maphash"
	"sync"
	"time"
)

// fallback is the limiter of an outage (FailureLocal): a fixed window per
// (bucket, identifier) in this instance's memory, opened by the first
// degraded decision and Period long by this instance's clock, admitting at
// most Limit per window. Each instance counts alone, so an outage admits at
// most Limit × instances per window in all: bounded, never unlimited.
//
// When the local cache still knows the window Redis was counting (a spent
// window, or a leasing bucket's entry), the local window takes its place:
// it ends when that window ends and admits only what this instance last
// heard was left, so the switch to local counting never hands one instance
// a fresh quota mid-window.
//
// Size is bounded like the local cache's: a full shard first drops the
// expired windows among a few it samples. Unlike the cache it never drops a
// live window (forgetting one would restart its count and break the bound):
// a new identifier that finds its shard full of live windows is refused.
type fallback struct {
	seed   maphash.Seed
	shards [cacheShards]fallbackShard
	per    int // capacity of one shard
}

type fallbackShard struct {
	mu sync.Mutex
	m  map[string]fallbackWindow
}

// fallbackWindow is one local window.
type fallbackWindow struct {
	used  int
	until time.Time
}

func newFallback(size int) *fallback {
	f := &fallback{seed: maphash.MakeSeed(), per: max(1, (size+cacheShards-1)/cacheShards)}
	for i := range f.shards {
		f.shards[i].m = make(map[string]fallbackWindow)
	}
	return f
}

// fallbackResult is what take decided.
type fallbackResult int

const (
	localAdmitted fallbackResult = iota
	localRefused                 // the window cannot admit n
	localFull                    // no room for a new window: refused
)

// take counts n in key's window when it fits (or always, with force: the
// FailureOpen mode, which admits everything and counts only to report).
// known, when its until is set, is the local cache's view of the window
// Redis was counting, used to open a new local window. It returns the
// window after the call.
func (f *fallback) take(key string, n int, q Quota, known localEntry, force bool, now time.Time) (fallbackWindow, fallbackResult) {
	s := &f.shards[maphash.String(f.seed, key)%cacheShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	w, ok := s.m[key]
	if !ok || !now.Before(w.until) {
		if !ok && len(s.m) >= f.per && !s.dropExpired(now) {
			return fallbackWindow{}, localFull
		}
		w = fallbackWindow{until: now.Add(q.Period)}
		if now.Before(known.until) {
			w = fallbackWindow{used: max(q.Limit-known.tokens-known.remaining, 0), until: known.until}
		}
	}
	out := localAdmitted
	if w.used+n > q.Limit {
		out = localRefused
	}
	if out == localAdmitted || force {
		w.used += n
	}
	s.m[key] = w
	return w, out
}

// peek returns key's live window without changing it (zero when none).
func (f *fallback) peek(key string, now time.Time) fallbackWindow {
	s := &f.shards[maphash.String(f.seed, key)%cacheShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	if w, ok := s.m[key]; ok && now.Before(w.until) {
		return w
	}
	return fallbackWindow{}
}

func (f *fallback) remove(key string) {
	s := &f.shards[maphash.String(f.seed, key)%cacheShards]
	s.mu.Lock()
	delete(s.m, key)
	s.mu.Unlock()
}

// clear forgets every window.
func (f *fallback) clear() {
	if f == nil {
		return
	}
	for i := range f.shards {
		s := &f.shards[i]
		s.mu.Lock()
		clear(s.m)
		s.mu.Unlock()
	}
}

// dropExpired deletes the expired windows among a sample and reports
// whether it made room.
func (s *fallbackShard) dropExpired(now time.Time) bool {
	seen, dropped := 0, false
	for k, w := range s.m {
		if !now.Before(w.until) {
			delete(s.m, k)
			dropped = true
		}
		if seen++; seen == evictSample {
			break
		}
	}
	return dropped
}

func (f *fallback) len() int {
	n := 0
	for i := range f.shards {
		s := &f.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
