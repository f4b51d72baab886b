package idempotency

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/digis/jobworker/internal/collector"
)

// cleanup finishes, in the background, what callers could not tell Redis
// because it did not answer: releasing a claim whose Acquire timed out (the
// claim may still be run by a stalled Redis), releasing a lease after failed
// work, and writing a done record. Without it a retry waits for the lease to
// expire (Release) or can run the work again (Complete).
//
// It is deliberately small: one goroutine while there is work, retries with
// doubling waits, every task bounded by the time after which it no longer
// matters, and at most maxCleanupTasks remembered (the oldest is dropped,
// and logged, when more fail at once).
type cleanup struct {
	store *Store
	m     *storeMetrics

	mu      sync.Mutex
	tasks   map[string][]cleanupTask // by record key
	n       int
	running bool
	closed  bool
}

type cleanupOp string

const (
	opRelease  cleanupOp = "release"
	opComplete cleanupOp = "complete"
)

type cleanupTask struct {
	op          cleanupOp
	key, token  string
	fingerprint string
	value       []byte
	// until is when the task stops mattering: a lease has expired by
	// itself, or a done record is too late to prevent anything.
	until time.Time
}

const (
	// maxCleanupTasks bounds the memory an outage can make the store hold.
	maxCleanupTasks = 10000
	// completeRetryFor is how long a done record is retried: past it the
	// lease has long expired and a retry may have run the work already.
	completeRetryFor = 10 * time.Minute
	cleanupFirstWait = 20 * time.Millisecond
	cleanupMaxWait   = time.Second
)

func newCleanup(s *Store, m *storeMetrics) *cleanup {
	return &cleanup{store: s, m: m, tasks: map[string][]cleanupTask{}}
}

func (c *cleanup) add(t cleanupTask) {
	if t.until.IsZero() {
		t.until = time.Now().Add(c.store.cfg.LeaseTTL)
	}
	// The server may keep a lease a little longer than this host thinks
	// (its expiry counts from when Redis ran the command).
	t.until = t.until.Add(c.store.cfg.Timeout)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		c.m.cleanups.WithLabelValues(string(t.op), "dropped").Inc()
		return
	}
	if c.n >= maxCleanupTasks {
		c.dropOldestLocked()
	}
	c.tasks[t.key] = append(c.tasks[t.key], t)
	c.n++
	if !c.running {
		c.running = true
		go c.run()
	}
}

func (c *cleanup) dropOldestLocked() {
	var oldestKey string
	var oldest time.Time
	for k, ts := range c.tasks {
		if oldestKey == "" || ts[0].until.Before(oldest) {
			oldestKey, oldest = k, ts[0].until
		}
	}
	t := c.tasks[oldestKey][0]
	c.removeLocked(oldestKey, 0)
	c.m.cleanups.WithLabelValues(string(t.op), "dropped").Inc()
	c.store.cfg.Logger.Error("idempotency: too many pending cleanups; dropping the oldest",
		"namespace", c.store.cfg.Namespace, "op", string(t.op))
}

func (c *cleanup) removeLocked(key string, i int) {
	ts := c.tasks[key]
	ts = append(ts[:i:i], ts[i+1:]...)
	if len(ts) == 0 {
		delete(c.tasks, key)
	} else {
		c.tasks[key] = ts
	}
	c.n--
}

// abandonedToken returns the owner token of a claim or lease on key that
// this store gave up (a pending release), for Acquire to take over.
func (c *cleanup) abandonedToken(key string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	ts := c.tasks[key]
	for i := len(ts) - 1; i >= 0; i-- {
		if ts[i].op == opRelease {
			return ts[i].token
		}
	}
	return ""
}

// forget drops the pending release of token on key (it was taken over).
func (c *cleanup) forget(key, token string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, t := range c.tasks[key] {
		if t.token == token && t.op == opRelease {
			c.removeLocked(key, i)
			c.m.cleanups.WithLabelValues(string(opRelease), "taken_over").Inc()
			return
		}
	}
}

// run works until no task is left.
func (c *cleanup) run() {
	wait := cleanupFirstWait
	for {
		time.Sleep(wait)
		progress, left := c.pass(context.Background())
		if left == 0 {
			c.mu.Lock()
			if c.n == 0 {
				c.running = false
				c.mu.Unlock()
				return
			}
			c.mu.Unlock()
		}
		if progress {
			wait = cleanupFirstWait
		} else {
			wait = min(2*wait, cleanupMaxWait)
		}
	}
}

// pass tries every task once. It reports whether Redis answered at all and
// how many tasks are left.
func (c *cleanup) pass(ctx context.Context) (answered bool, left int) {
	c.mu.Lock()
	var batch []cleanupTask
	for _, ts := range c.tasks {
		batch = append(batch, ts...)
	}
	c.mu.Unlock()
	now := time.Now()
	for _, t := range batch {
		result := ""
		if now.After(t.until) {
			result = "expired"
		} else {
			err := c.try(ctx, t)
			switch {
			case err == nil:
				result, answered = "done", true
			case errors.Is(err, ErrLeaseLost):
				// Someone else owns or finished the key, or it expired: nothing
				// left to do.
				result, answered = "lost", true
			default:
				continue
			}
		}
		c.mu.Lock()
		for i, p := range c.tasks[t.key] {
			if p.token == t.token && p.op == t.op {
				c.removeLocked(t.key, i)
				break
			}
		}
		c.mu.Unlock()
		c.m.cleanups.WithLabelValues(string(t.op), result).Inc()
		if result == "expired" && t.op == opComplete {
			c.store.cfg.Logger.Error("idempotency: gave up recording a finished result; a redelivery may run the work again",
				"namespace", c.store.cfg.Namespace)
		}
	}
	c.mu.Lock()
	left = c.n
	c.mu.Unlock()
	return answered, left
}

func (c *cleanup) try(ctx context.Context, t cleanupTask) error {
	s := c.store
	var n int64
	var err error
	switch t.op {
	case opRelease:
		n, err = s.call(ctx, releaseScript, t.key, t.token)
	case opComplete:
		n, err = s.call(ctx, completeScript, t.key, t.token, t.fingerprint, t.value, s.resultMS)
	}
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrLeaseLost
	}
	return nil
}

// close tries every pending task once more within ctx and stops taking new
// ones. It returns how many were given up.
func (c *cleanup) close(ctx context.Context) int {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	for {
		_, left := c.pass(ctx)
		if left == 0 || ctx.Err() != nil {
			c.mu.Lock()
			n := c.n
			for k := range c.tasks {
				for _, t := range c.tasks[k] {
					c.m.cleanups.WithLabelValues(string(t.op), "dropped").Inc()
				}
				delete(c.tasks, k)
			}
			c.n = 0
			c.mu.Unlock()
			if n > 0 {
				c.store.cfg.Logger.Error("idempotency: cleanups still pending at close were dropped",
					"namespace", c.store.cfg.Namespace, "count", n)
			}
			return n
		}
		select {
		case <-ctx.Done():
		case <-time.After(cleanupFirstWait):
		}
	}
}

type storeMetrics struct {
	cleanups *prometheus.CounterVec
}

func newStoreMetrics(reg prometheus.Registerer) (*storeMetrics, error) {
	m := &storeMetrics{cleanups: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jobworker_idempotency_cleanups_total",
		Help: "Background cleanups after Redis did not answer, by op (release, complete) and result (done, lost, taken_over, expired, dropped).",
	}, []string{"op", "result"})}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.cleanups, err = collector.Register(reg, m.cleanups); err != nil {
		return nil, err
	}
	return m, nil
}
