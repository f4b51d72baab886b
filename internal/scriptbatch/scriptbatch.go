// Package scriptbatch sends concurrent Lua script runs to Redis together.
//
// At most MaxInFlight round trips are outstanding at once per Batcher; runs
// that arrive while they are all busy queue up and leave together as one
// pipeline when a slot frees. A lone caller is never delayed: with a free
// slot it sends its own run at once. Under load this turns N syscalls on
// each side into one, which is most of the cost on a small machine. Each run
// is still its own EVALSHA, atomic on its own keys, so batching changes no
// answer; on a ClusterClient the pipeline is split by slot by go-redis.
//
// # Deadlines: the caller's and the round trip's
//
// Two clocks bound a run, and they answer different questions:
//
//   - The caller's ctx is its absolute give-up time, queue wait included. A
//     run still queued when its ctx ends is never sent (sending it would
//     change Redis behind the back of a caller who has left), and a caller
//     whose ctx ends while its round trip is out returns at once.
//   - Config.Timeout bounds one round trip, measured from when it is sent.
//     Time spent queued behind other round trips is this process's own
//     load, not Redis being slow, so it does not count against it. A round
//     trip past Timeout fails with context.DeadlineExceeded.
//
// A run's round trip therefore ends at the earlier of its ctx's deadline
// and its send time plus Timeout.
//
// # Merged batches: one script run for many
//
// A pipeline saves syscalls but Redis still runs each script on its own:
// parsing the command, setting up the Lua call, replying. A script listed
// in Config.Merge has a batch form that decides many runs in one call, and
// a batch of two or more of its runs then leaves as one EVALSHA of that
// form: the runs' keys and arguments concatenated in order, its reply an
// array of each run's reply (an element may be an error, that run's alone).
// The batch form must give each run the answer it would get alone, run
// after run, which a script over independent keys does by looping.
//
// Only where every key lives on one server: a *redis.Client (a single node,
// or Sentinel's failover client) or a wrapper passing its Options through.
// On a ClusterClient or Ring the keys of a batch belong to different slots,
// so runs stay separate EVALSHA in a pipeline that go-redis splits by node.
// A single endpoint may still front several shards (a sharding proxy, a
// managed service): the first merged run it refuses with CROSSSLOT turns
// merging off for the Batcher, and that run's runs are sent again on their
// own in the same round trip's follow-up.
//
// # Bounded queue: shed, never wait forever
//
// At most Config.MaxQueue runs wait for a slot. A run arriving at a full
// queue is not queued and not sent: Run returns ErrOverloaded at once. A
// full queue means Redis is answering more slowly than runs arrive, and
// waiting longer would only grow the queue; the caller decides what a shed
// run means (the rate limiter refuses the request, the idempotency store
// reports itself unavailable). With the defaults the queue drains in about
// two round trips of full pipelines (1024 runs, 4 slots of 128).
//
// # Deferred runs: no caller waiting
//
// Defer queues a run whose caller does not wait for it (a write whose
// answer only matters if it failed, like a done marker). It leaves at the
// front of the next round trip this Batcher sends for a waiting caller, so
// under load it costs no round trip of its own, or on its own once
// Config.DeferFor has passed. Being first in that pipeline, it runs in Redis
// before every run sent with it or later (until the Batcher has seen its
// script run, it is sent with the script's text, so a NOSCRIPT retry
// cannot reorder it). Round trips on two connections can reach Redis in
// either order, so a run on the key of a deferred run (its first key) is
// never sent ahead of it: queued deferred runs on the key go in front of
// it, and a round trip carrying one that is already on its way is waited
// for (up to Timeout). Runs on other keys wait for nothing. Flush sends
// what is deferred and waits for the replies (at shutdown).
package scriptbatch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrOverloaded is the error of a run refused because the queue was full.
// It was never sent.
var ErrOverloaded = errors.New("scriptbatch: queue full, run shed")

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
	// a negative value sends every run on its own (no queue, no batching).
	MaxInFlight int
	// MaxBatch bounds the runs in one pipeline. Defaults to 128.
	MaxBatch int
	// MaxQueue bounds the runs waiting for a slot; a run arriving when it
	// is full fails with ErrOverloaded without being sent. Defaults to 1024.
	MaxQueue int
	// Timeout bounds one round trip from when it is sent (see the package
	// doc). Defaults to 1s.
	Timeout time.Duration
	// Observe, when set, is told the duration of every round trip (from
	// send to reply) and its first error.
	Observe func(time.Duration, error)
	// DeferFor bounds how long a deferred run (Defer) waits for a round
	// trip to share before it is sent on its own. Defaults to 2ms.
	DeferFor time.Duration
	// Merge lists scripts whose batched runs leave as one run of a batch
	// form (see "Merged batches"), on clients where every key lives on one
	// server. Defaults to none: every run is its own EVALSHA.
	Merge []Merge
}

// Merge is the batch form of a script. Each run of Script that passes
// exactly Keys keys and Args arguments may be merged; others are sent as
// they are. Batch takes the merged runs' keys (KEYS) and arguments (ARGV)
// run after run and returns an array with one reply per run, in order; an
// element that is an error reply fails that run only.
type Merge struct {
	Script     *redis.Script
	Keys, Args int
	Batch      *redis.Script
}

// Defaults of Config.
const (
	DefaultMaxInFlight = 4
	DefaultMaxBatch    = 128
	DefaultMaxQueue    = 1024
	DefaultTimeout     = time.Second
	DefaultDeferFor    = 2 * time.Millisecond
)

// Batcher queues script runs and sends them. It is safe for concurrent use.
type Batcher struct {
	client      Client
	pipe        pipeliner // nil: no batching possible
	inline      bool      // the client honours deadlines, so a caller may send itself
	maxInFlight int
	maxBatch    int
	maxQueue    int
	timeout     time.Duration
	observe     func(time.Duration, error)
	deferFor    time.Duration
	loaded      sync.Map                // *redis.Script → bool: Redis has it (see sendAt)
	merge       map[*redis.Script]Merge // nil unless every key lives on one server
	// unmerged is set once Redis refused a merged run with CROSSSLOT: a
	// proxy in front of several shards looks like one server to go-redis.
	unmerged atomic.Bool

	mu       sync.Mutex
	queue    []*call
	inFlight int

	// Deferred runs (Defer), guarded by mu.
	deferred []*call
	overdue  bool          // the oldest deferred run waited DeferFor: send even without a waiting caller
	armed    bool          // timer is set to mark them overdue
	timer    *time.Timer   // created with the first Defer
	unsent   int           // deferred runs not yet answered
	flushed  chan struct{} // closed when unsent drops to 0 (nil: nobody waits)
	// flying maps the first key of each deferred run in flight to a channel
	// closed when its round trip is answered: a later run on that key waits
	// for it (see take), since two round trips on two connections may reach
	// Redis in either order.
	flying map[string]chan struct{}
}

// call is one queued script run.
type call struct {
	ctx    context.Context
	script *redis.Script
	keys   []string
	args   []any
	cmd    *redis.Cmd
	done   chan struct{} // closed once cmd is set
	// sent is closed when the round trip starts, after deadline is set. It
	// exists only when the client may block past deadlines (not inline), so
	// the caller can leave at the round trip's deadline by itself.
	sent     chan struct{}
	deadline time.Time
	// then receives a deferred run's reply; nil for a waiting caller's run.
	then func(*redis.Cmd)
	// landed is closed when a deferred run's round trip is answered.
	landed chan struct{}
}

// New returns a Batcher sending through c.
func New(c Client, cfg Config) *Batcher {
	b := &Batcher{
		client:      c,
		inline:      RespectsDeadlines(c),
		maxInFlight: cfg.MaxInFlight,
		maxBatch:    cfg.MaxBatch,
		maxQueue:    cfg.MaxQueue,
		timeout:     cfg.Timeout,
		observe:     cfg.Observe,
	}
	if b.maxInFlight == 0 {
		b.maxInFlight = DefaultMaxInFlight
	}
	if b.maxBatch <= 0 {
		b.maxBatch = DefaultMaxBatch
	}
	if b.maxQueue <= 0 {
		b.maxQueue = DefaultMaxQueue
	}
	if b.timeout <= 0 {
		b.timeout = DefaultTimeout
	}
	b.deferFor = cfg.DeferFor
	if b.deferFor <= 0 {
		b.deferFor = DefaultDeferFor
	}
	b.pipe, _ = c.(pipeliner)
	if b.maxInFlight < 0 || b.pipe == nil {
		// Unbatched: every run is its own round trip and leads itself, so
		// nothing ever waits in the queue.
		b.maxInFlight, b.maxBatch = int(^uint(0)>>1), 1
	}
	if len(cfg.Merge) > 0 && b.maxBatch > 1 && OneServer(c) {
		b.merge = make(map[*redis.Script]Merge, len(cfg.Merge))
		for _, m := range cfg.Merge {
			b.merge[m.Script] = m
		}
	}
	return b
}

// OneServer reports whether every key c reaches lives on one server, so a
// script may take keys of different hash slots: a *redis.Client (a single
// node or Sentinel's failover client) or a wrapper passing its Options
// through, not a ClusterClient or a Ring.
func OneServer(c any) bool {
	o, ok := c.(interface{ Options() *redis.Options })
	return ok && o.Options() != nil
}

// Run runs script on keys with args, batched with concurrent runs, and
// returns its reply. It returns when the reply arrives, when ctx ends or
// when the round trip passes Timeout from its send, whichever is first. A
// run still queued when its ctx ends is never sent; a run that finds the
// queue full fails with ErrOverloaded and is never sent.
func (b *Batcher) Run(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	c := &call{ctx: ctx, script: script, keys: keys, args: args, done: make(chan struct{})}
	if !b.inline {
		c.sent = make(chan struct{})
	}
	b.mu.Lock()
	lead := b.inFlight < b.maxInFlight
	if !lead && len(b.queue) >= b.maxQueue {
		b.mu.Unlock()
		return failed(ctx, ErrOverloaded)
	}
	b.queue = append(b.queue, c)
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
	if c.sent == nil {
		select {
		case <-c.done:
			return c.cmd
		case <-ctx.Done():
			return failed(ctx, ctx.Err())
		}
	}
	select {
	case <-c.done:
		return c.cmd
	case <-ctx.Done():
		return failed(ctx, ctx.Err())
	case <-c.sent:
	}
	t := time.NewTimer(time.Until(c.deadline))
	defer t.Stop()
	select {
	case <-c.done:
		return c.cmd
	case <-ctx.Done():
		return failed(ctx, ctx.Err())
	case <-t.C:
		select {
		case <-c.done: // the reply and the deadline arrived together
			return c.cmd
		default:
		}
		return failed(ctx, context.DeadlineExceeded)
	}
}

func failed(ctx context.Context, err error) *redis.Cmd {
	cmd := redis.NewCmd(ctx)
	cmd.SetErr(err)
	return cmd
}

// take removes up to maxBatch queued calls whose callers still wait; on an
// empty queue it gives up the in-flight slot (under the same lock, so no
// queued call is stranded).
//
// after lists the round trips in flight that carry deferred runs on a key
// of the batch: the batch is sent once they are answered (or Timeout has
// passed), so a run never overtakes the deferred write it must see. Queued
// deferred runs on a key of the batch always go with it, ahead of it.
func (b *Batcher) take() (batch []*call, after []chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		n := min(len(b.queue), b.maxBatch)
		if n == 0 {
			if b.overdue && len(b.deferred) > 0 {
				return b.takeDeferred(nil)
			}
			b.inFlight--
			return nil, nil
		}
		batch := make([]*call, 0, n)
		for _, c := range b.queue[:n] {
			if err := c.ctx.Err(); err != nil {
				// Its caller has left: sending it would change Redis
				// behind the caller's back.
				c.cmd = failed(c.ctx, err)
				close(c.done)
				continue
			}
			batch = append(batch, c)
		}
		b.queue = append([]*call(nil), b.queue[n:]...)
		if len(batch) > 0 {
			return b.takeDeferred(batch)
		}
	}
}

// takeDeferred puts deferred runs at the front of batch, as many as fit in
// maxBatch and every one on a key of the batch, and returns it with the
// round trips it must wait for (see take); an empty batch gets at least
// one. Called with mu held.
func (b *Batcher) takeDeferred(batch []*call) ([]*call, []chan struct{}) {
	if len(b.deferred) == 0 && len(b.flying) == 0 {
		return batch, nil
	}
	var after []chan struct{}
	var keys map[string]bool
	for _, c := range batch {
		if firstKey(c) == "" {
			continue
		}
		if ch, ok := b.flying[firstKey(c)]; ok && !slices.Contains(after, ch) {
			after = append(after, ch)
		}
		if len(b.deferred) > 0 {
			if keys == nil {
				keys = make(map[string]bool, len(batch))
			}
			keys[firstKey(c)] = true
		}
	}
	room := b.maxBatch - len(batch)
	if len(batch) == 0 {
		room = max(room, 1)
	}
	var taken, left []*call
	for _, d := range b.deferred {
		if len(taken) < room || (firstKey(d) != "" && keys[firstKey(d)]) {
			taken = append(taken, d)
		} else {
			left = append(left, d)
		}
	}
	if len(taken) == 0 {
		return batch, after
	}
	b.deferred = left
	if len(b.deferred) == 0 {
		b.overdue = false
	}
	landed := make(chan struct{})
	if b.flying == nil {
		b.flying = make(map[string]chan struct{})
	}
	for _, d := range taken {
		d.landed = landed
		if k := firstKey(d); k != "" {
			b.flying[k] = landed
		}
	}
	return append(taken, batch...), after
}

// firstKey is the key a run is ordered by: its first, the record key of
// every script batched here.
func firstKey(c *call) string {
	if len(c.keys) == 0 {
		return ""
	}
	return c.keys[0]
}

// await holds a batch until the round trips it must follow are answered,
// or Timeout has passed (their Redis is then failing them anyway).
func (b *Batcher) await(after []chan struct{}) {
	if len(after) == 0 {
		return
	}
	t := time.NewTimer(b.timeout)
	defer t.Stop()
	for _, ch := range after {
		select {
		case <-ch:
		case <-t.C:
			return
		}
	}
}

// Defer queues a run no caller waits for: it is sent first in the next
// round trip, or on its own once DeferFor has passed (see the package doc),
// and then is called with its reply from the goroutine that received it.
// Its round trip is bounded by Timeout. A run that finds MaxQueue deferred
// runs already waiting is not queued: then gets ErrOverloaded at once.
func (b *Batcher) Defer(script *redis.Script, keys []string, args []any, then func(*redis.Cmd)) {
	ctx := context.Background()
	c := &call{ctx: ctx, script: script, keys: keys, args: args, done: make(chan struct{}), then: then}
	b.mu.Lock()
	if len(b.deferred) >= b.maxQueue {
		b.mu.Unlock()
		then(failed(ctx, ErrOverloaded))
		return
	}
	b.deferred = append(b.deferred, c)
	b.unsent++
	if !b.armed && !b.overdue {
		b.armed = true
		if b.timer == nil {
			b.timer = time.AfterFunc(b.deferFor, b.deferredDue)
		} else {
			b.timer.Reset(b.deferFor)
		}
	}
	b.mu.Unlock()
}

// deferredDue runs when the oldest deferred run has waited DeferFor: it
// marks the deferred runs overdue and sends them when a slot is free
// (otherwise the round trip in flight takes them when it ends).
func (b *Batcher) deferredDue() {
	b.mu.Lock()
	b.armed = false
	if len(b.deferred) == 0 {
		b.mu.Unlock()
		return
	}
	b.overdue = true
	lead := b.inFlight < b.maxInFlight
	if lead {
		b.inFlight++
	}
	b.mu.Unlock()
	if lead {
		b.drain()
	}
}

// Flush sends the deferred runs now and waits until every deferred run
// has been answered, or ctx ends. It returns how many were still
// unanswered then (0 when all were).
func (b *Batcher) Flush(ctx context.Context) int {
	b.mu.Lock()
	if b.unsent == 0 {
		b.mu.Unlock()
		return 0
	}
	if b.flushed == nil {
		b.flushed = make(chan struct{})
	}
	wait := b.flushed
	b.overdue = len(b.deferred) > 0
	lead := b.overdue && b.inFlight < b.maxInFlight
	if lead {
		b.inFlight++
	}
	b.mu.Unlock()
	if lead {
		go b.drain()
	}
	select {
	case <-wait:
		return 0
	case <-ctx.Done():
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.unsent
	}
}

// answered hands deferred runs their replies and counts them off.
func (b *Batcher) answered(batch []*call) {
	n := 0
	var landed chan struct{}
	for _, c := range batch {
		if c.then != nil {
			c.then(c.cmd)
			n++
			landed = c.landed
		}
	}
	if n == 0 {
		return
	}
	b.mu.Lock()
	for _, c := range batch {
		if k := firstKey(c); c.then != nil && k != "" && b.flying[k] == c.landed {
			delete(b.flying, k)
		}
	}
	if landed != nil {
		close(landed)
	}
	b.unsent -= n
	if b.unsent == 0 && b.flushed != nil {
		close(b.flushed)
		b.flushed = nil
	}
	b.mu.Unlock()
}

// sendOnce sends one batch from the calling goroutine, then hands any
// remaining queue to a background drain so the caller returns promptly.
func (b *Batcher) sendOnce() {
	batch, after := b.take()
	if batch == nil {
		return
	}
	b.await(after)
	b.send(batch)
	b.mu.Lock()
	more := len(b.queue) > 0 || (b.overdue && len(b.deferred) > 0)
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
		batch, after := b.take()
		if batch == nil {
			return
		}
		b.await(after)
		if b.inline {
			b.send(batch)
			continue
		}
		// The client may hold the round trip past its deadline. Its callers
		// leave at the deadline; so does this slot, or runs queued behind a
		// hung connection would wait for the client's own timeout. The late
		// reply goes to callers who have left.
		start := time.Now()
		done := make(chan struct{})
		go func() { b.sendAt(start, batch); close(done) }()
		t := time.NewTimer(time.Until(b.deadline(start, batch)))
		select {
		case <-done:
		case <-t.C:
		}
		t.Stop()
	}
}

// send runs a batch: one EVALSHA (EVAL on NOSCRIPT) for a single call, else
// a pipeline of EVALSHA (the runs of a merged script as one, see plan) with
// the NOSCRIPT replies retried as one pipeline of EVAL, which also loads the
// script. The round trip's deadline starts now.
func (b *Batcher) send(batch []*call) { b.sendAt(time.Now(), batch) }

// sendAt is send for a round trip whose deadline counts from start.
func (b *Batcher) sendAt(start time.Time, batch []*call) {
	if len(batch) == 1 {
		c := batch[0]
		// c.ctx's own deadline, if earlier, still applies; when it is, it
		// is the round trip's deadline and no second context is needed.
		ctx := c.ctx
		if d, ok := ctx.Deadline(); !ok || d.After(start.Add(b.timeout)) {
			var cancel context.CancelFunc
			ctx, cancel = context.WithDeadline(c.ctx, start.Add(b.timeout))
			defer cancel()
		}
		b.started(ctx, batch)
		c.cmd = c.script.Run(ctx, b.client, c.keys, c.args...)
		if c.cmd.Err() == nil {
			b.setLoaded(c.script, true)
		}
		b.observed(start, c.cmd.Err())
		close(c.done)
		b.answered(batch)
		return
	}
	// The round trip serves every caller in it: one caller's cancellation
	// must not fail the others, so it lives until Timeout from now or the
	// latest of their deadlines, whichever is first.
	ctx, cancel := context.WithDeadline(context.WithoutCancel(batch[0].ctx), b.deadline(start, batch))
	defer cancel()
	b.started(ctx, batch)
	units := b.plan(batch)
	pipe := b.pipe.Pipeline()
	for i := range units {
		u := &units[i]
		if u.deferred() && !b.isLoaded(u.script) {
			// A deferred run must run before those sent behind it, which a
			// NOSCRIPT retry would reverse: until Redis is known to have
			// its script, it carries the script itself.
			u.cmd = u.script.Eval(ctx, pipe, u.keys, u.args...)
			continue
		}
		u.cmd = u.script.EvalSha(ctx, pipe, u.keys, u.args...)
	}
	_, _ = pipe.Exec(ctx) // errors are per command
	var retry []*unit
	for i := range units {
		u := &units[i]
		err := u.cmd.Err()
		if err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
			b.setLoaded(u.script, false)
			retry = append(retry, u)
		} else if err == nil {
			b.setLoaded(u.script, true)
		}
	}
	if len(retry) > 0 {
		pipe = b.pipe.Pipeline()
		for _, u := range retry {
			u.cmd = u.script.Eval(ctx, pipe, u.keys, u.args...)
		}
		_, _ = pipe.Exec(ctx)
	}
	units = b.unmergeCrossSlot(ctx, units)
	var firstErr error
	for i := range units {
		if firstErr == nil {
			firstErr = units[i].cmd.Err()
		}
		units[i].settle()
	}
	b.observed(start, firstErr)
	for _, c := range batch {
		close(c.done)
	}
	b.answered(batch)
}

// unmergeCrossSlot handles merged runs Redis refused with CROSSSLOT: the
// client reaches one endpoint, but the keys live on several shards behind
// it (a proxy, a managed service). Merging stops for good on this Batcher
// and those runs are sent again, each on its own, in one pipeline (EVAL,
// which also loads the script). The other units keep their replies.
func (b *Batcher) unmergeCrossSlot(ctx context.Context, units []unit) []unit {
	if !slices.ContainsFunc(units, crossSlot) {
		return units
	}
	var again []unit
	keep := units[:0:0]
	for i := range units {
		u := units[i]
		if crossSlot(u) {
			for _, c := range u.calls {
				again = append(again, unit{calls: []*call{c}, script: c.script, keys: c.keys, args: c.args})
			}
			continue
		}
		keep = append(keep, u)
	}
	b.unmerged.Store(true)
	pipe := b.pipe.Pipeline()
	for i := range again {
		again[i].cmd = again[i].script.Eval(ctx, pipe, again[i].keys, again[i].args...)
	}
	_, _ = pipe.Exec(ctx)
	return append(keep, again...)
}

// crossSlot reports whether Redis refused u, a merged run, with CROSSSLOT.
func crossSlot(u unit) bool {
	err := u.cmd.Err()
	return u.merged && err != nil && strings.HasPrefix(err.Error(), "CROSSSLOT")
}

// isLoaded reports whether script last ran in Redis without NOSCRIPT.
func (b *Batcher) isLoaded(script *redis.Script) bool {
	v, _ := b.loaded.Load(script)
	ok, _ := v.(bool)
	return ok
}

func (b *Batcher) setLoaded(script *redis.Script, ok bool) {
	if b.isLoaded(script) != ok {
		b.loaded.Store(script, ok)
	}
}

// unit is one command of a pipelined round trip: a single run, or runs of
// one script merged into one run of its batch form.
type unit struct {
	calls   []*call
	merged  bool
	batchOf *redis.Script // of a merged command: the script whose runs it carries
	script  *redis.Script
	keys    []string
	args    []any
	cmd     *redis.Cmd
}

// plan groups a batch into the commands that carry it: the runs of each
// script with a batch form (see Config.Merge) become one merged command
// when there are two or more of them, every other run (deferred ones
// included) its own command.
// Order among the runs of one script is kept, so merged runs see each
// other's writes in the order they were queued.
func (b *Batcher) plan(batch []*call) []unit {
	units := make([]unit, 0, len(batch))
	var merged []int // indexes in units of the merged commands, one per script
	for _, c := range batch {
		m, ok := b.merge[c.script]
		if !ok || b.unmerged.Load() || len(c.keys) != m.Keys || len(c.args) != m.Args || c.then != nil {
			units = append(units, unit{calls: []*call{c}, script: c.script, keys: c.keys, args: c.args})
			continue
		}
		i := slices.IndexFunc(merged, func(i int) bool { return units[i].batchOf == c.script })
		if i < 0 {
			n := len(batch)
			merged = append(merged, len(units))
			units = append(units, unit{merged: true, batchOf: c.script, script: m.Batch, calls: make([]*call, 0, n),
				keys: make([]string, 0, n*m.Keys), args: make([]any, 0, n*m.Args)})
			i = len(merged) - 1
		}
		u := &units[merged[i]]
		u.calls = append(u.calls, c)
		u.keys = append(u.keys, c.keys...)
		u.args = append(u.args, c.args...)
	}
	for _, i := range merged {
		if u := &units[i]; len(u.calls) == 1 { // nothing to merge with
			c := u.calls[0]
			*u = unit{calls: u.calls, script: c.script, keys: c.keys, args: c.args}
		}
	}
	return units
}

// deferred reports whether u is a deferred run (see Defer), never merged.
func (u *unit) deferred() bool { return !u.merged && u.calls[0].then != nil }

// settle hands each run of u its own reply.
func (u *unit) settle() {
	if !u.merged {
		u.calls[0].cmd = u.cmd
		return
	}
	v, err := u.cmd.Result()
	replies, ok := v.([]any)
	if err == nil && (!ok || len(replies) != len(u.calls)) {
		err = fmt.Errorf("scriptbatch: merged reply %T for %d runs", v, len(u.calls))
	}
	for i, c := range u.calls {
		cmd := redis.NewCmd(c.ctx)
		switch {
		case err != nil:
			cmd.SetErr(err)
		case replies[i] == nil:
			cmd.SetErr(redis.Nil) // as a run of its own would report it
		default:
			if e, isErr := replies[i].(error); isErr {
				cmd.SetErr(e)
			} else {
				cmd.SetVal(replies[i])
			}
		}
		c.cmd = cmd
	}
}

// deadline of a pipelined round trip sent at start: Timeout from start, or
// earlier when every caller in it gives up earlier.
func (b *Batcher) deadline(start time.Time, batch []*call) time.Time {
	limit := start.Add(b.timeout)
	var latest time.Time
	for _, c := range batch {
		d, ok := c.ctx.Deadline()
		if !ok {
			return limit
		}
		if d.After(latest) {
			latest = d
		}
	}
	if latest.Before(limit) {
		return latest
	}
	return limit
}

// started tells callers that may need to leave by themselves (a client that
// ignores deadlines) when their round trip must end.
func (b *Batcher) started(ctx context.Context, batch []*call) {
	d, _ := ctx.Deadline()
	for _, c := range batch {
		if c.sent != nil {
			c.deadline = d
			close(c.sent)
		}
	}
}

func (b *Batcher) observed(start time.Time, err error) {
	if b.observe != nil {
		b.observe(time.Since(start), err)
	}
}

// RespectsDeadlines reports whether c applies context deadlines to socket
// I/O, so a caller may send its own round trip without an extra goroutine
// and still leave at its deadline. A wrapping client can say so by passing
// its inner client's Options method through.
func RespectsDeadlines(c any) bool {
	switch v := c.(type) {
	case interface{ Options() *redis.Options }: // *redis.Client and wrappers
		o := v.Options()
		return o != nil && o.ContextTimeoutEnabled
	case *redis.ClusterClient:
		return v.Options().ContextTimeoutEnabled
	case *redis.Ring:
		return v.Options().ContextTimeoutEnabled
	}
	return false
}
