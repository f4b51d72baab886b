package cache

import "sync"

// flightGroup is the in-process level of deduplication: one flight per
// Redis key at a time, whatever the number of local callers. Unlike
// x/sync/singleflight the flight runs in its own goroutine, detached from
// every caller, so callers can leave (context done) without cancelling the
// computation the others are waiting for.
type flightGroup struct {
	mu sync.Mutex
	m  map[string]*flight
}

// flight is one in-progress resolution of a key. Fields other than done are
// written once, before done is closed.
type flight struct {
	done chan struct{}
	res  result
}

type result struct {
	val     any    // decoded or computed value, of the leader's type
	payload []byte // its encoding when known, for callers of another type
	outcome Outcome
	err     error
}

// join returns the running flight for key, or starts one with start, which
// must launch the work and eventually call finish. leader reports whether
// this call started it.
func (g *flightGroup) join(key string, start func(f *flight) bool) (f *flight, leader bool, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f, found := g.m[key]; found {
		return f, false, true
	}
	f = &flight{done: make(chan struct{})}
	if !start(f) {
		return nil, false, false
	}
	g.m[key] = f
	return f, true, true
}

// lookup returns the running flight for key, or nil.
func (g *flightGroup) lookup(key string) *flight {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.m[key]
}

// finish publishes r to every caller of f and removes f from the group.
func (g *flightGroup) finish(key string, f *flight, r result) {
	f.res = r
	g.mu.Lock()
	if g.m[key] == f {
		delete(g.m, key)
	}
	g.mu.Unlock()
	close(f.done)
}

// forget detaches the running flight for key, if any: later callers start a
// new one. Callers already joined still get its result.
func (g *flightGroup) forget(key string) {
	g.mu.Lock()
	delete(g.m, key)
	g.mu.Unlock()
}
