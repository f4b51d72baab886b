package scriptbatch

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/redistest"
)

var incr = redis.NewScript(`return redis.call('INCR', KEYS[1])`)

// pipeHook counts pipelines of two or more script runs (go-redis pipelines
// its own connection setup too).
type pipeHook struct{ n atomic.Int64 }

func (h *pipeHook) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *pipeHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *pipeHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 1 && (cmds[0].Name() == "evalsha" || cmds[0].Name() == "eval") {
			h.n.Add(1)
		}
		return next(ctx, cmds)
	}
}

// scripterOnly hides the client's Pipeline method.
type scripterOnly struct{ redis.Scripter }

func TestRunIsExactAndBatches(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		ctxClient bool // ContextTimeoutEnabled: callers send inline
		bare      bool // no Pipeline method: no batching
	}{
		{"inline sender", true, false},
		{"background sender", false, false},
		{"scripter without pipeline", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: tc.ctxClient})
			t.Cleanup(func() { _ = rdb.Close() })
			hook := &pipeHook{}
			rdb.AddHook(hook)
			var c Client = rdb
			if tc.bare {
				c = scripterOnly{rdb}
			}
			b := New(c, Config{MaxInFlight: 1, Timeout: 5 * time.Second})
			ctx := context.Background()
			// A fresh script cache: the first pipeline meets NOSCRIPT.
			if err := rdb.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			const g, each = 64, 10
			seen := make([]atomic.Bool, g*each+1)
			var wg sync.WaitGroup
			release := make(chan struct{})
			for range g {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-release
					for range each {
						n, err := b.Run(ctx, incr, []string{"k"}).Int64()
						if err != nil || n < 1 || n > g*each || seen[n].Swap(true) {
							t.Errorf("Run = %d, %v (duplicate or out of range)", n, err)
							return
						}
					}
				}()
			}
			close(release)
			wg.Wait()
			if got, _ := rdb.Get(ctx, "k").Int(); got != g*each {
				t.Fatalf("counter %d, want %d", got, g*each)
			}
			if batched := hook.n.Load() > 0; batched == tc.bare {
				t.Fatalf("pipelines formed: %v, want %v", batched, !tc.bare)
			}
		})
	}
}

// gatedClient holds every single-run EVALSHA until release is closed and
// reports each one on entered: a Redis that has not answered yet, with the
// batcher's slot provably taken.
type gatedClient struct {
	*redis.Client
	entered chan struct{}
	release chan struct{}
}

func newGated(t *testing.T, rdb *redis.Client) *gatedClient {
	t.Helper()
	if err := incr.Load(context.Background(), rdb).Err(); err != nil {
		t.Fatal(err)
	}
	return &gatedClient{Client: rdb, entered: make(chan struct{}, 64), release: make(chan struct{})}
}

func (g *gatedClient) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	g.entered <- struct{}{}
	select {
	case <-g.release:
	case <-ctx.Done():
	}
	return g.Client.EvalSha(ctx, sha, keys, args...)
}

func TestQueuedCallPastDeadlineIsNotSent(t *testing.T) {
	t.Parallel()
	for _, inline := range []bool{true, false} {
		t.Run(fmt.Sprintf("inline=%v", inline), func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
			t.Cleanup(func() { _ = rdb.Close() })
			g := newGated(t, rdb)
			b := New(g, Config{MaxInFlight: 1, Timeout: 10 * time.Second})
			b.inline = inline
			ctx := context.Background()
			first := make(chan error, 1)
			go func() { first <- b.Run(ctx, incr, []string{"first"}).Err() }()
			<-g.entered // the only slot is taken by a round trip Redis has not answered
			qctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
			defer cancel()
			if err := b.Run(qctx, incr, []string{"queued"}).Err(); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("queued call = %v, want deadline exceeded", err)
			}
			close(g.release)
			if err := <-first; err != nil {
				t.Fatalf("first call: %v", err)
			}
			// A later call queues behind whatever the batcher still had: once
			// it is answered, the abandoned call was either sent or dropped.
			if err := b.Run(ctx, incr, []string{"later"}).Err(); err != nil {
				t.Fatal(err)
			}
			if n, err := rdb.Exists(ctx, "queued").Result(); err != nil || n != 0 {
				t.Fatalf("queued call was sent after its caller left: exists=%d %v", n, err)
			}
		})
	}
}

// TestFullQueueSheds: with the only slot held and room for one queued run,
// of ten concurrent runs exactly one queues and nine are shed at once with
// ErrOverloaded; none of the shed ones ever reaches Redis.
func TestFullQueueSheds(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	g := newGated(t, rdb)
	b := New(g, Config{MaxInFlight: 1, MaxQueue: 1, Timeout: 10 * time.Second})
	ctx := context.Background()
	first := make(chan error, 1)
	go func() { first <- b.Run(ctx, incr, []string{"k"}).Err() }()
	<-g.entered
	const n = 10
	results := make(chan error, n)
	for range n {
		go func() { results <- b.Run(ctx, incr, []string{"k"}).Err() }()
	}
	// Nine answers arrive while the slot is still held: they were shed.
	for i := range n - 1 {
		if err := <-results; !errors.Is(err, ErrOverloaded) {
			t.Fatalf("answer %d while the queue is full: %v, want ErrOverloaded", i, err)
		}
	}
	close(g.release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-results; err != nil {
		t.Fatalf("the queued run: %v", err)
	}
	if got, _ := rdb.Get(ctx, "k").Int(); got != 2 {
		t.Fatalf("counter %d, want 2 (shed runs must never be sent)", got)
	}
}

// TestDeadlineStartsAtSend: every round trip takes about 100 ms, under the
// 400 ms Timeout, but runs queue one behind the other for much longer than
// Timeout. Queueing is this process's load, not Redis being slow: every run
// must succeed.
func TestDeadlineStartsAtSend(t *testing.T) {
	t.Parallel()
	for _, ctxClient := range []bool{true, false} {
		t.Run(fmt.Sprintf("ContextTimeoutEnabled=%v", ctxClient), func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			const delay, timeout, runs = 100 * time.Millisecond, 400 * time.Millisecond, 6
			rdb := redis.NewClient(&redis.Options{Addr: redistest.Delay(t, srv.Addr(), delay),
				ContextTimeoutEnabled: ctxClient, MaxRetries: -1, ReadTimeout: 10 * time.Second, PoolSize: 2})
			t.Cleanup(func() { _ = rdb.Close() })
			ctx := context.Background()
			if err := incr.Load(ctx, rdb).Err(); err != nil {
				t.Fatal(err)
			}
			b := New(rdb, Config{MaxInFlight: 1, MaxBatch: 1, Timeout: timeout})
			start := time.Now()
			var wg sync.WaitGroup
			var slowest atomic.Int64
			for range runs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := b.Run(ctx, incr, []string{"k"}).Err(); err != nil {
						t.Errorf("run: %v (its round trip was well under Timeout)", err)
					}
					slowest.Store(max(slowest.Load(), int64(time.Since(start))))
				}()
			}
			wg.Wait()
			if got, _ := rdb.Get(ctx, "k").Int(); got != runs {
				t.Fatalf("counter %d, want %d", got, runs)
			}
			// The proof needs a run that waited, in all, longer than Timeout.
			if waited := time.Duration(slowest.Load()); waited <= timeout {
				t.Fatalf("slowest run took %s, not above Timeout %s: the test proved nothing", waited, timeout)
			}
		})
	}
}

// TestRoundTripPastTimeoutFails: a hung Redis fails the round trip at
// Timeout from its send, also when the client itself would wait far longer
// (no ContextTimeoutEnabled, 10 s read timeout).
func TestRoundTripPastTimeoutFails(t *testing.T) {
	t.Parallel()
	for _, ctxClient := range []bool{true, false} {
		t.Run(fmt.Sprintf("ContextTimeoutEnabled=%v", ctxClient), func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: ctxClient,
				MaxRetries: -1, ReadTimeout: 10 * time.Second})
			t.Cleanup(func() { _ = rdb.Close() })
			ctx := context.Background()
			if err := incr.Load(ctx, rdb).Err(); err != nil {
				t.Fatal(err)
			}
			const timeout = 100 * time.Millisecond
			b := New(rdb, Config{Timeout: timeout})
			srv.Pause()
			t.Cleanup(srv.Resume)
			start := time.Now()
			err := b.Run(ctx, incr, []string{"k"}).Err()
			if el := time.Since(start); err == nil || el > timeout+2*time.Second {
				t.Fatalf("hung Redis: %v after %s, want an error at about %s", err, el, timeout)
			}
		})
	}
}

func TestPipelineRetriesNoScript(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		client func(t *testing.T) redis.UniversalClient
	}{
		{"single node", func(t *testing.T) redis.UniversalClient { return redistest.Start(t).Client(t) }},
		{"cluster", func(t *testing.T) redis.UniversalClient { return redistest.StartCluster(t).Client(t) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rdb := tc.client(t)
			ctx := context.Background()
			// No node knows the script yet: every EVALSHA meets NOSCRIPT.
			if err := rdb.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			b := New(rdb, Config{})
			keys := []string{"a", "b", "c", "d", "e", "f"} // several slots on a cluster
			batch := make([]*call, len(keys))
			for i, k := range keys {
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				batch[i] = &call{ctx: cctx, script: incr, keys: []string{k}, done: make(chan struct{})}
			}
			b.send(batch)
			for i, c := range batch {
				<-c.done
				if n, err := c.cmd.Int64(); err != nil || n != 1 {
					t.Fatalf("call %d = %d, %v; want 1", i, n, err)
				}
			}
		})
	}
}

var (
	incrBy      = redis.NewScript(`return redis.call('INCRBY', KEYS[1], ARGV[1])`)
	incrByBatch = redis.NewScript(`
local out = {}
for i = 1, #KEYS do
  local ok, r = pcall(redis.call, 'INCRBY', KEYS[i], ARGV[i])
  out[i] = r
end
return out`)
)

// cmdHook records the scripts of every pipeline: command and key count.
type cmdHook struct {
	mu    sync.Mutex
	pipes [][]string
}

func (h *cmdHook) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *cmdHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *cmdHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		var p []string
		for _, c := range cmds {
			if a := c.Args(); len(a) > 2 && (c.Name() == "evalsha" || c.Name() == "eval") {
				p = append(p, fmt.Sprintf("%s/%v", c.Name(), a[2]))
			}
		}
		if len(p) > 0 { // not the connection's own set-up
			h.mu.Lock()
			h.pipes = append(h.pipes, p)
			h.mu.Unlock()
		}
		return next(ctx, cmds)
	}
}

// TestMergedRuns: a batch of runs of a script with a batch form leaves as
// one command on a single node (one EVALSHA with every key, retried as one
// EVAL after NOSCRIPT) while other scripts' runs go beside it; each run gets
// its own reply, in order, a failing key fails only its own run. On a
// cluster, where the keys live in different slots, nothing is merged and
// the replies are the same.
func TestMergedRuns(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		single bool
		client func(t *testing.T) redis.UniversalClient
	}{
		{"single node", true, func(t *testing.T) redis.UniversalClient { return redistest.Start(t).Client(t) }},
		{"cluster", false, func(t *testing.T) redis.UniversalClient { return redistest.StartCluster(t).Client(t) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rdb := tc.client(t)
			hook := &cmdHook{}
			rdb.AddHook(hook)
			ctx := context.Background()
			if err := rdb.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			if err := rdb.HSet(ctx, "wrong", "f", "v").Err(); err != nil {
				t.Fatal(err)
			}
			b := New(rdb, Config{Merge: []Merge{{Script: incrBy, Keys: 1, Args: 1, Batch: incrByBatch}}})
			if got := b.merge != nil; got != tc.single {
				t.Fatalf("merging on: %v, want %v", got, tc.single)
			}
			type reply struct {
				n   int64
				err string
			}
			var calls []struct {
				c *call
				w reply
			}
			add := func(s *redis.Script, keys []string, w reply, args ...any) {
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				t.Cleanup(cancel)
				calls = append(calls, struct {
					c *call
					w reply
				}{&call{ctx: cctx, script: s, keys: keys, args: args, done: make(chan struct{})}, w})
			}
			add(incrBy, []string{"a"}, reply{1, ""}, 1)
			add(incrBy, []string{"b"}, reply{5, ""}, 5)
			add(incr, []string{"c"}, reply{1, ""}) // no batch form: its own command
			add(incrBy, []string{"a"}, reply{3, ""}, 2)
			add(incrBy, []string{"wrong"}, reply{0, "WRONGTYPE"}, 1)
			add(incrBy, []string{"{e}1", "{e}2"}, reply{4, ""}, 4) // not the merged shape: sent alone
			add(incrBy, []string{"d"}, reply{7, ""}, 7)
			batch := make([]*call, len(calls))
			for i, c := range calls {
				batch[i] = c.c
			}
			b.send(batch)
			for i, c := range calls {
				<-c.c.done
				n, err := c.c.cmd.Int64()
				if c.w.err != "" {
					if err == nil || !strings.Contains(err.Error(), c.w.err) {
						t.Errorf("call %d: %d, %v; want an error %s", i, n, err, c.w.err)
					}
					continue
				}
				if err != nil || n != c.w.n {
					t.Errorf("call %d: %d, %v; want %d", i, n, err, c.w.n)
				}
			}
			if !tc.single {
				return
			}
			// One pipeline meeting NOSCRIPT, one retrying it as EVAL: in each,
			// the merged command with the five merged runs' keys, then the
			// two runs that could not be merged.
			hook.mu.Lock()
			defer hook.mu.Unlock()
			want := fmt.Sprint([][]string{{"evalsha/5", "evalsha/1", "evalsha/2"}, {"eval/5", "eval/1", "eval/2"}})
			if got := fmt.Sprint(hook.pipes); got != want {
				t.Fatalf("pipelines %s, want %s", got, want)
			}
		})
	}
}

var (
	appendScript = redis.NewScript(`return redis.call('RPUSH', KEYS[1], ARGV[1])`)
	appendEager  = redis.NewScript(`return redis.call('RPUSH', KEYS[1], ARGV[1]) -- eager`)
)

// A deferred run rides in front of the next run sent for a waiting caller
// (one round trip, and Redis runs it first), even when Redis has the
// eager run's script but not the deferred one's (a NOSCRIPT retry would
// reorder them).
func TestDeferredRunLeavesFirstWithTheNextRun(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	hook := &pipeHook{}
	rdb.AddHook(hook)
	// Long enough that only the next Run can have sent it.
	b := New(rdb, Config{DeferFor: time.Hour, Timeout: 5 * time.Second})
	ctx := context.Background()
	if err := appendEager.Load(ctx, rdb).Err(); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	b.Defer(appendScript, []string{"log"}, []any{"deferred"}, func(c *redis.Cmd) { got <- c.Err() })
	if err := b.Run(ctx, appendEager, []string{"log"}, "eager").Err(); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("deferred run: %v", err)
	}
	if order, _ := rdb.LRange(ctx, "log", 0, -1).Result(); fmt.Sprint(order) != "[deferred eager]" {
		t.Fatalf("order in Redis = %v, want the deferred run first", order)
	}
	if n := hook.n.Load(); n != 1 {
		t.Fatalf("pipelines = %d, want both runs in one", n)
	}
}

// With no other run coming, a deferred run is sent on its own after
// DeferFor; Flush sends at once and waits for the replies.
func TestDeferredRunIsSentAloneAndFlushed(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()

	alone := New(rdb, Config{DeferFor: time.Millisecond})
	got := make(chan error, 1)
	alone.Defer(incr, []string{"alone"}, nil, func(c *redis.Cmd) { got <- c.Err() })
	if err := <-got; err != nil {
		t.Fatalf("deferred run: %v", err)
	}

	flushed := New(rdb, Config{DeferFor: time.Hour})
	var answered atomic.Int64
	for range 10 {
		flushed.Defer(incr, []string{"flushed"}, nil, func(c *redis.Cmd) {
			if c.Err() == nil {
				answered.Add(1)
			}
		})
	}
	if left := flushed.Flush(ctx); left != 0 || answered.Load() != 10 {
		t.Fatalf("Flush left %d, answered %d; want 0 and 10", left, answered.Load())
	}
	if n, _ := rdb.Get(ctx, "flushed").Int(); n != 10 {
		t.Fatalf("counter = %d, want 10", n)
	}
	if left := flushed.Flush(ctx); left != 0 {
		t.Fatalf("Flush with nothing deferred left %d", left)
	}
}

// Deferred runs are bounded like the queue: past MaxQueue, the run is
// refused at once with ErrOverloaded and never sent.
func TestDeferredRunsAreBounded(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	b := New(rdb, Config{DeferFor: time.Hour, MaxQueue: 2})
	for range 2 {
		b.Defer(incr, []string{"bounded"}, nil, func(*redis.Cmd) {})
	}
	var err error
	b.Defer(incr, []string{"bounded"}, nil, func(c *redis.Cmd) { err = c.Err() })
	if !errors.Is(err, ErrOverloaded) {
		t.Fatalf("third deferred run = %v, want ErrOverloaded", err)
	}
	if left := b.Flush(context.Background()); left != 0 {
		t.Fatalf("Flush left %d", left)
	}
	if n, _ := rdb.Get(context.Background(), "bounded").Int(); n != 2 {
		t.Fatalf("counter = %d, want 2", n)
	}
}

// TestDeferredRunsAreNotMerged: a deferred run of a script with a batch
// form keeps its own command at the front (carrying the script until Redis
// has it), and the waiting runs behind it merge: Redis runs it first.
func TestDeferredRunsAreNotMerged(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client(t)
	hook := &cmdHook{}
	rdb.AddHook(hook)
	ctx := context.Background()
	b := New(rdb, Config{Merge: []Merge{{Script: incrBy, Keys: 1, Args: 1, Batch: incrByBatch}}})
	var deferred atomic.Int64
	b.mu.Lock()
	b.unsent = 1
	b.mu.Unlock()
	first := &call{ctx: ctx, script: incrBy, keys: []string{"a"}, args: []any{1}, done: make(chan struct{}),
		then: func(c *redis.Cmd) { n, _ := c.Int64(); deferred.Store(n) }}
	second := &call{ctx: ctx, script: incrBy, keys: []string{"a"}, args: []any{10}, done: make(chan struct{})}
	third := &call{ctx: ctx, script: incrBy, keys: []string{"b"}, args: []any{5}, done: make(chan struct{})}
	b.send([]*call{first, second, third})
	if got := deferred.Load(); got != 1 {
		t.Fatalf("deferred run = %d, want 1 (run first)", got)
	}
	if n, err := second.cmd.Int64(); err != nil || n != 11 {
		t.Fatalf("second = %d, %v; want 11", n, err)
	}
	if n, err := third.cmd.Int64(); err != nil || n != 5 {
		t.Fatalf("third = %d, %v; want 5", n, err)
	}
	hook.mu.Lock()
	defer hook.mu.Unlock()
	if got := fmt.Sprint(hook.pipes[0]); got != "[eval/1 evalsha/2]" {
		t.Fatalf("first pipeline %s, want the deferred run alone in front of the merged two", got)
	}
}

// crossSlotHook refuses every run of one script with CROSSSLOT, as Redis
// behind a sharding proxy answers a script whose keys span shards.
type crossSlotHook struct {
	script  *redis.Script
	refused atomic.Int64
}

func (h *crossSlotHook) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *crossSlotHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *crossSlotHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		pass := cmds[:0:0]
		for _, c := range cmds {
			if a := c.Args(); len(a) > 1 && (a[1] == h.script.Hash() || (c.Name() == "eval" && strings.Contains(fmt.Sprint(a[1]), "for i"))) {
				c.SetErr(errors.New("CROSSSLOT Keys in request don't hash to the same slot"))
				h.refused.Add(1)
				continue
			}
			pass = append(pass, c)
		}
		if len(pass) == 0 {
			return nil
		}
		return next(ctx, pass)
	}
}

// TestMergedRunsRefusedCrossSlotRunAlone: a client that looks like one
// server but fronts several shards refuses a merged run; its runs are sent
// again each on its own, get their own replies, and merging stops.
func TestMergedRunsRefusedCrossSlotRunAlone(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client(t)
	hook := &crossSlotHook{script: incrByBatch}
	rdb.AddHook(hook)
	ctx := context.Background()
	b := New(rdb, Config{Merge: []Merge{{Script: incrBy, Keys: 1, Args: 1, Batch: incrByBatch}}})
	for round := range 2 {
		var batch []*call
		for i, k := range []string{"a", "b", "a"} {
			batch = append(batch, &call{ctx: ctx, script: incrBy, keys: []string{k}, args: []any{i + 1}, done: make(chan struct{})})
		}
		b.send(batch)
		want := []int64{1, 2, 4}
		if round == 1 {
			want = []int64{5, 4, 8}
		}
		for i, c := range batch {
			<-c.done
			if n, err := c.cmd.Int64(); err != nil || n != want[i] {
				t.Fatalf("round %d, run %d: %d, %v; want %d", round, i, n, err, want[i])
			}
		}
	}
	if n := hook.refused.Load(); n != 1 {
		t.Fatalf("merged runs refused %d times, want once (merging stops after the first)", n)
	}
}

// slowHook holds every command of one script for a while, and says when
// the first is on its way: a slow round trip, the scenario itself.
type slowHook struct {
	script  *redis.Script
	hold    time.Duration
	sending chan struct{}
	once    sync.Once
}

func (h *slowHook) carries(cmds []redis.Cmder) bool {
	for _, c := range cmds {
		if a := c.Args(); len(a) > 1 && (a[1] == h.script.Hash() || (c.Name() == "eval" && strings.Contains(fmt.Sprint(a[1]), "-- slow"))) {
			return true
		}
	}
	return false
}

func (h *slowHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *slowHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.carries([]redis.Cmder{cmd}) {
			h.once.Do(func() { close(h.sending) })
			time.Sleep(h.hold) // the slow round trip under test
		}
		return next(ctx, cmd)
	}
}
func (h *slowHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if h.carries(cmds) {
			h.once.Do(func() { close(h.sending) })
			time.Sleep(h.hold) // the slow round trip under test
		}
		return next(ctx, cmds)
	}
}

// TestRunWaitsForADeferredRunInFlightOnItsKey: a deferred run already on
// its way (alone, after DeferFor) and slow; a run on the same key, sent on
// another connection meanwhile, must still find its write, and a run on
// another key does not wait for it.
func TestRunWaitsForADeferredRunInFlightOnItsKey(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	slowSet := redis.NewScript(`return redis.call('SET', KEYS[1], ARGV[1]) -- slow`)
	get := redis.NewScript(`return redis.call('GET', KEYS[1]) or ''`)
	hook := &slowHook{script: slowSet, hold: time.Second, sending: make(chan struct{})}
	rdb.AddHook(hook)
	b := New(rdb, Config{DeferFor: time.Millisecond, MaxInFlight: 2, Timeout: 5 * time.Second})
	ctx := context.Background()
	landed := make(chan error, 1)
	b.Defer(slowSet, []string{"rec"}, []any{"done"}, func(c *redis.Cmd) { landed <- c.Err() })
	<-hook.sending
	if v, err := b.Run(ctx, get, []string{"other"}).Text(); err != nil || v != "" {
		t.Fatalf("run on another key: %q, %v", v, err)
	}
	select {
	case <-landed:
		t.Fatal("the run on another key waited for the deferred one")
	default:
	}
	if v, err := b.Run(ctx, get, []string{"rec"}).Text(); err != nil || v != "done" {
		t.Fatalf("run on the deferred run's key = %q, %v; want its write", v, err)
	}
	if err := <-landed; err != nil {
		t.Fatal(err)
	}
}

// TestQueuedDeferredRunsOnTheKeyGoAlong: deferred runs beyond a batch's
// room still leave with it when they are on one of its keys.
func TestQueuedDeferredRunsOnTheKeyGoAlong(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	set := redis.NewScript(`return redis.call('SET', KEYS[1], ARGV[1])`)
	get := redis.NewScript(`return redis.call('GET', KEYS[1]) or ''`)
	b := New(rdb, Config{DeferFor: time.Hour, MaxBatch: 2, Timeout: 5 * time.Second})
	ctx := context.Background()
	for i := range 3 {
		b.Defer(set, []string{"k" + strconv.Itoa(i)}, []any{"v"}, func(*redis.Cmd) {})
	}
	if v, err := b.Run(ctx, get, []string{"k2"}).Text(); err != nil || v != "v" {
		t.Fatalf("run on the third deferred run's key = %q, %v; want its write", v, err)
	}
}
