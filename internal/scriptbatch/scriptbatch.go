// Package scriptbatch sends concurrent Lua script runs to Redis together.
//
// At most MaxInFlight round trips are outstanding at once per Batcher; runs
// that arrive while they are all busy queue up and leave together as one
// pipeline when a slot frees. A lone caller is never delayed: with a free
// slot it sends its own run at once. Under load this turns N syscalls on
// each side into one, which is most of the cost on a small machine. Each run
// is still its own EVALSHA, atomic on its own keys, so batching changes no
// answer; on a ClusterClient the pipeline is split by slot by go-redis.
package scriptbatch

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Client is what a Batcher needs. Every go-redis client satisfies it. A
// client without a Pipeline method (a bare redis.Scripter) is accepted and
// gets no batching: each run is then its own round trip.
type Client interface {
	redis.Scripter
}

type pipeliner interface {
	Pipeline() redis.Pipeliner
}

// Config configures a Batcher.
type Config struct {
	// MaxInFlight bounds the round trips outstanding at once. Defaults to 4;
	// a negative value sends every run on its own.
	MaxInFlight int
	// MaxBatch bounds the runs in one pipeline. Defaults to 128.
	MaxBatch int
	// Timeout bounds a round trip whose calls carry no deadline. Defaults
	// to 1s.
	Timeout time.Duration
	// Observe, when set, is told the duration of every round trip and its
	// first error.
	Observe func(time.Duration, error)
}

// Defaults of Config.
const (
	DefaultMaxInFlight = 4
	DefaultMaxBatch    = 128
	DefaultTimeout     = time.Second
)

// Batcher queues script runs and sends them. It is safe for concurrent use.
type Batcher struct {
	client      Client
	pipe        pipeliner // nil: no batching possible
	inline      bool      // the client honours deadlines, so a caller may send itself
	maxInFlight int
	maxBatch    int
	timeout     time.Duration
	observe     func(time.Duration, error)

	mu       sync.Mutex
	queue    []*call
	inFlight int
}

// call is one queued script run.
type call struct {
	ctx    context.Context
	script *redis.Script
	keys   []string
	args   []any
	cmd    *redis.Cmd
	done   chan struct{}
}

// New returns a Batcher sending through c.
func New(c Client, cfg Config) *Batcher {
	b := &Batcher{
		client:      c,
		inline:      RespectsDeadlines(c),
		maxInFlight: cfg.MaxInFlight,
		maxBatch:    cfg.MaxBatch,
		timeout:     cfg.Timeout,
		observe:     cfg.Observe,
	}
	if b.maxInFlight == 0 {
		b.maxInFlight = DefaultMaxInFlight
	}
	if b.maxBatch <= 0 {
		b.maxBatch = DefaultMaxBatch
	}
	if b.timeout <= 0 {
		b.timeout = DefaultTimeout
	}
	b.pipe, _ = c.(pipeliner)
	if b.maxInFlight < 0 || b.pipe == nil {
		// Unbatched: every run is its own round trip.
		b.maxInFlight, b.maxBatch = int(^uint(0)>>1), 1
	}
	return b
}

// Run runs script on keys with args, batched with concurrent runs, and
// returns its reply. It returns when the reply arrives or ctx ends,
// whichever is first; a run still queued when its ctx ends is never sent.
func (b *Batcher) Run(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	c := &call{ctx: ctx, script: script, keys: keys, args: args, done: make(chan struct{})}
	b.mu.Lock()
	b.queue = append(b.queue, c)
	lead := b.inFlight < b.maxInFlight
	if lead {
		b.inFlight++
	}
	b.mu.Unlock()
	if lead {
		if b.inline {
			b.sendOnce()
		} else {
			// The client may block past the deadline: send from a goroutine
			// so this caller can leave at its deadline.
			go b.drain()
		}
	}
	select {
	case <-c.done:
		return c.cmd
	case <-ctx.Done():
		cmd := redis.NewCmd(ctx)
		cmd.SetErr(ctx.Err())
		return cmd
	}
}

// take removes up to maxBatch queued calls whose callers still wait; on an
// empty queue it gives up the in-flight slot (under the same lock, so no
// queued call is stranded).
func (b *Batcher) take() []*call {
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		n := min(len(b.queue), b.maxBatch)
		if n == 0 {
			b.inFlight--
			return nil
		}
		batch := make([]*call, 0, n)
		for _, c := range b.queue[:n] {
			if err := c.ctx.Err(); err != nil {
				// Its caller has left: sending it would change Redis
				// behind the caller's back.
				c.cmd = redis.NewCmd(c.ctx)
				c.cmd.SetErr(err)
				close(c.done)
				continue
			}
			batch = append(batch, c)
		}
		b.queue = append([]*call(nil), b.queue[n:]...)
		if len(batch) > 0 {
			return batch
		}
	}
}

// sendOnce sends one batch from the calling goroutine, then hands any
// remaining queue to a background drain so the caller returns promptly.
func (b *Batcher) sendOnce() {
	batch := b.take()
	if batch == nil {
		return
	}
	b.send(batch)
	b.mu.Lock()
	more := len(b.queue) > 0
	if !more {
		b.inFlight--
	}
	b.mu.Unlock()
	if more {
		go b.drain()
	}
}

func (b *Batcher) drain() {
	for {
		batch := b.take()
		if batch == nil {
			return
		}
		b.send(batch)
	}
}

// send runs a batch: one EVALSHA (EVAL on NOSCRIPT) for a single call, else
// a pipeline of EVALSHA with the NOSCRIPT replies retried as one pipeline of
// EVAL, which also loads the script.
func (b *Batcher) send(batch []*call) {
	start := time.Now()
	if len(batch) == 1 {
		c := batch[0]
		ctx, cancel := b.bound(c.ctx, c)
		c.cmd = c.script.Run(ctx, b.client, c.keys, c.args...)
		cancel()
		b.observed(start, c.cmd.Err())
		close(c.done)
		return
	}
	// The round trip serves every caller in it: one caller's cancellation
	// must not fail the others, so it lives until the latest deadline.
	ctx, cancel := b.bound(context.WithoutCancel(batch[0].ctx), batch...)
	defer cancel()
	pipe := b.pipe.Pipeline()
	for _, c := range batch {
		c.cmd = c.script.EvalSha(ctx, pipe, c.keys, c.args...)
	}
	_, _ = pipe.Exec(ctx) // errors are per command
	var retry []*call
	for _, c := range batch {
		if err := c.cmd.Err(); err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
			retry = append(retry, c)
		}
	}
	if len(retry) > 0 {
		pipe = b.pipe.Pipeline()
		for _, c := range retry {
			c.cmd = c.script.Eval(ctx, pipe, c.keys, c.args...)
		}
		_, _ = pipe.Exec(ctx)
	}
	var firstErr error
	for _, c := range batch {
		if firstErr == nil {
			firstErr = c.cmd.Err()
		}
	}
	b.observed(start, firstErr)
	for _, c := range batch {
		close(c.done)
	}
}

// bound returns base limited to the latest deadline of calls, or to the
// Timeout when one of them has none.
func (b *Batcher) bound(base context.Context, calls ...*call) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, c := range calls {
		d, ok := c.ctx.Deadline()
		if !ok {
			return context.WithTimeout(base, b.timeout)
		}
		if d.After(latest) {
			latest = d
		}
	}
	return context.WithDeadline(base, latest)
}

func (b *Batcher) observed(start time.Time, err error) {
	if b.observe != nil {
		b.observe(time.Since(start), err)
	}
}

// RespectsDeadlines reports whether c applies context deadlines to socket
// I/O, so a caller may send its own round trip without an extra goroutine
// and still leave at its deadline.
func RespectsDeadlines(c any) bool {
	switch v := c.(type) {
	case *redis.Client:
		return v.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		return v.Options().ContextTimeoutEnabled
	case *redis.Ring:
		return v.Options().ContextTimeoutEnabled
	}
	return false
}
