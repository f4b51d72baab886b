package scriptbatch

import (
	"context"
	"errors"
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

func TestQueuedCallPastDeadlineIsNotSent(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	b := New(rdb, Config{MaxInFlight: 1})
	b.inline = false // both callers leave at their deadlines
	ctx := context.Background()
	if err := incr.Load(ctx, rdb).Err(); err != nil {
		t.Fatal(err)
	}
	srv.Pause() // a hung Redis holds the only slot
	resumed := false
	defer func() {
		if !resumed {
			srv.Resume()
		}
	}()
	first := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		first <- b.Run(ctx, incr, []string{"first"}).Err()
	}()
	// Wait until the first call holds the slot, so the second one queues.
	for {
		b.mu.Lock()
		busy := b.inFlight == 1 && len(b.queue) == 0
		b.mu.Unlock()
		if busy {
			break
		}
		time.Sleep(time.Millisecond)
	}
	qctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := b.Run(qctx, incr, []string{"queued"}).Err(); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("queued call = %v, want deadline exceeded", err)
	}
	if err := <-first; err == nil {
		t.Fatal("call on a hung Redis succeeded")
	}
	// The slot is given up once the queue is drained (the queued call dropped).
	for {
		b.mu.Lock()
		idle := b.inFlight == 0
		b.mu.Unlock()
		if idle {
			break
		}
		time.Sleep(time.Millisecond)
	}
	srv.Resume()
	resumed = true
	if n, err := rdb.Exists(ctx, "queued").Result(); err != nil || n != 0 {
		t.Fatalf("queued call was sent after its caller left: exists=%d %v", n, err)
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
