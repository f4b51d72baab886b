package limits

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// batcher sends concurrent decisions together. At most maxInFlight round
// trips for decisions are outstanding at once; decisions that arrive while
// they are all busy queue up and leave together as one pipeline when a slot
// frees. A lone caller is never delayed: with a free slot it sends its own
// decision at once. Under load this turns N syscalls on each side into one,
// which is most of the cost on a small machine; each decision is still its
// own script run, atomic on its own key.
type batcher struct {
	client      Client
	timeout     time.Duration
	inline      bool // the client honours deadlines, so the caller may send itself
	maxInFlight int
	maxBatch    int
	observe     func(time.Duration, error)

	mu       sync.Mutex
	queue    []*call
	inFlight int
}

// call is one queued decision.
type call struct {
	key  string
	q    Quota
	cost int
	rep  reply
	err  error
	done chan struct{}
}

const defaultMaxBatch = 128

// do queues c and waits for its answer or ctx.
func (b *batcher) do(ctx context.Context, c *call) (reply, error) {
	c.done = make(chan struct{})
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
			// The client may block past the deadline: send from a goroutine so
			// this caller can leave at its deadline.
			go b.drain()
		}
	}
	select {
	case <-c.done:
		return c.rep, c.err
	case <-ctx.Done():
		return reply{}, ctx.Err()
	}
}

// take removes up to maxBatch queued calls; on an empty queue it gives up
// the in-flight slot (under the same lock, so no queued call is stranded).
func (b *batcher) take() []*call {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := min(len(b.queue), b.maxBatch)
	if n == 0 {
		b.inFlight--
		return nil
	}
	batch := b.queue[:n:n]
	b.queue = append([]*call(nil), b.queue[n:]...)
	return batch
}

// sendOnce sends one batch from the calling goroutine, then hands any
// remaining queue to a background drain so the caller returns promptly.
func (b *batcher) sendOnce() {
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

func (b *batcher) drain() {
	for {
		batch := b.take()
		if batch == nil {
			return
		}
		b.send(batch)
	}
}

// send runs a batch: one plain EVALSHA for a single call, else a pipeline.
// A NOSCRIPT reply (a fresh or flushed server) falls back to EVAL per call.
func (b *batcher) send(batch []*call) {
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	start := time.Now()
	if len(batch) == 1 {
		c := batch[0]
		c.rep, c.err = runWindow(ctx, b.client, c.key, c.q, c.cost)
		b.observe(time.Since(start), c.err)
		close(c.done)
		return
	}
	pipe := b.client.Pipeline()
	cmds := make([]*redis.Cmd, len(batch))
	for i, c := range batch {
		cmds[i] = window.EvalSha(ctx, pipe, []string{c.key}, c.q.Limit, c.q.Period.Milliseconds(), c.cost)
	}
	_, _ = pipe.Exec(ctx) // errors are per command
	var firstErr error
	for i, c := range batch {
		v, err := cmds[i].Result()
		if err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
			c.rep, c.err = runWindow(ctx, b.client, c.key, c.q, c.cost)
		} else {
			c.rep, c.err = parseReply(v, err)
		}
		if firstErr == nil {
			firstErr = c.err
		}
	}
	b.observe(time.Since(start), firstErr)
	for _, c := range batch {
		close(c.done)
	}
}
