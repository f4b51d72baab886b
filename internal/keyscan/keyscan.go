// Package keyscan walks a Redis keyspace the way an operator tool must on a
// live server: SCAN with a COUNT hint on every master (Redis Cluster
// included), never KEYS, so each round trip does a bounded amount of work
// and other clients are served between them. It counts keys, TTLs and
// memory per prefix exactly (SCAN may return a key twice while the table
// is resized; each key is counted once), and lists keys with their value
// redacted unless asked otherwise.
//
//	rep, err := keyscan.Scan(ctx, rdb, keyscan.Options{Pattern: "jw:rl:*", Progress: bar})
//	for _, p := range rep.Prefixes { fmt.Println(p.Prefix, p.Keys, p.Bytes) }
//
// Each walks the keys in batches for callers that do their own work per key
// (resetting a limit, forgetting an idempotency record).
package keyscan

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultCount is the SCAN COUNT hint unless Options.Count says otherwise:
// well under a millisecond of server time per call on a 500k-key server.
const DefaultCount = 500

// DefaultMaxKeys bounds Report.Keys unless Options.MaxKeys says otherwise.
const DefaultMaxKeys = 100

// ErrInvalidOptions: an Options field is wrong.
var ErrInvalidOptions = errors.New("keyscan: invalid options")

// Options configure a scan.
type Options struct {
	// Pattern is SCAN's MATCH glob. Defaults to "*".
	Pattern string
	// Count is SCAN's COUNT hint and the size of each pipelined batch of
	// TTL/MEMORY USAGE calls. Defaults to DefaultCount.
	Count int
	// MaxKeys bounds how many keys Report.Keys lists (every key is still
	// counted); -1 lists none. Defaults to DefaultMaxKeys.
	MaxKeys int
	// Values fetches the value of each listed string key (others show
	// their type and length).
	Values bool
	// Reveal shows values as stored; otherwise a value is shown as its
	// length and a short SHA-256, so keys can be compared without reading
	// them. Only with Values.
	Reveal bool
	// Group maps a key to the prefix it is counted under. Defaults to
	// Prefix.
	Group func(key string) string
	// Progress, when set, is called after every SCAN round trip with the
	// running totals (from several goroutines on a cluster: it must be
	// safe for concurrent use).
	Progress func(Progress)
	// Timeout bounds each round trip. Defaults to 5 seconds.
	Timeout time.Duration
	// Pause is a wait after every SCAN round trip and the work on its
	// keys, as redis-cli's --scan -i: a scan with no pause keeps one core
	// busy between the scanner and Redis, and on a small machine other
	// clients then wait for the scheduler rather than for Redis. A pause
	// about as long as a round trip (DefaultPause) roughly halves that
	// share; 500k keys then take 5.5 s instead of 3.4. Zero scans back to
	// back.
	Pause time.Duration
}

// DefaultPause is what jobctl keys waits between SCAN calls unless told
// otherwise: about one SCAN COUNT 500 with its describe pipeline on a
// loopback server. Measured in docs/benchmarks.md: with it, no PING from
// another client above 10 ms over 500k keys; without it, one in 18 walks.
const DefaultPause = 2 * time.Millisecond

func (o *Options) defaults() error {
	if o.Count < 0 || o.Timeout < 0 || o.MaxKeys < -1 || o.Pause < 0 {
		return fmt.Errorf("%w: negative Count, MaxKeys, Timeout or Pause", ErrInvalidOptions)
	}
	if o.Reveal && !o.Values {
		return fmt.Errorf("%w: Reveal needs Values", ErrInvalidOptions)
	}
	if o.Pattern == "" {
		o.Pattern = "*"
	}
	if o.Count == 0 {
		o.Count = DefaultCount
	}
	if o.MaxKeys == 0 {
		o.MaxKeys = DefaultMaxKeys
	}
	if o.Group == nil {
		o.Group = Prefix
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	return nil
}

// Progress is the running state of a scan.
type Progress struct {
	// Nodes is how many masters are scanned; Done how many are finished.
	Nodes, Done int
	// Calls is the number of SCAN round trips so far; Keys the keys seen
	// (before de-duplication).
	Calls, Keys int64
}

// Prefix is the default grouping: a key up to its hash tag ("jw:idem:qstash:{job}:id"
// → "jw:idem:qstash:"), else up to and including its last ':' ("jw:a:b" →
// "jw:a:"), else the whole key.
func Prefix(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		return key[:i]
	}
	if i := strings.LastIndexByte(key, ':'); i >= 0 {
		return key[:i+1]
	}
	return key
}

// Key is one key of a listing.
type Key struct {
	Key  string `json:"key"`
	Type string `json:"type"`
	// TTL is the time left, or -1 for a key without expiry.
	TTL time.Duration `json:"ttl"`
	// Bytes is MEMORY USAGE: the key and value with Redis's overhead.
	Bytes int64 `json:"bytes"`
	// Value is set with Options.Values (redacted unless Options.Reveal).
	Value string `json:"value,omitempty"`
}

// PrefixStats are the totals of one prefix.
type PrefixStats struct {
	Prefix string `json:"prefix"`
	Keys   int64  `json:"keys"`
	Bytes  int64  `json:"bytes"`
	// NoTTL counts keys without expiry.
	NoTTL int64 `json:"no_ttl"`
	// MinTTL and MaxTTL span the TTLs of the keys that have one.
	MinTTL time.Duration `json:"min_ttl"`
	MaxTTL time.Duration `json:"max_ttl"`
}

// Report is the result of Scan.
type Report struct {
	// Keys is how many distinct keys matched.
	Keys  int64 `json:"keys"`
	Bytes int64 `json:"bytes"`
	// Prefixes are sorted by prefix.
	Prefixes []PrefixStats `json:"prefixes"`
	// Listed are the first Options.MaxKeys keys, sorted.
	Listed []Key `json:"listed"`
	// Vanished counts keys that expired or were deleted between SCAN and
	// the TTL call (not counted in Keys).
	Vanished int64 `json:"vanished"`
	Nodes    int   `json:"nodes"`
}

// Masters calls fn for every master: each node of a cluster, or the one
// server. fn runs concurrently per master on a cluster.
func Masters(ctx context.Context, c redis.UniversalClient, fn func(ctx context.Context, node *redis.Client) error) error {
	switch cc := c.(type) {
	case *redis.ClusterClient:
		return cc.ForEachMaster(ctx, fn)
	case *redis.Client:
		return fn(ctx, cc)
	default:
		return fmt.Errorf("keyscan: unsupported client %T", c)
	}
}

// countMasters returns how many masters Masters will visit.
func countMasters(ctx context.Context, c redis.UniversalClient) (int, error) {
	var n atomic.Int32
	if cc, ok := c.(*redis.ClusterClient); ok {
		if err := cc.ForEachMaster(ctx, func(context.Context, *redis.Client) error { n.Add(1); return nil }); err != nil {
			return 0, err
		}
		return int(n.Load()), nil
	}
	return 1, nil
}

// Each walks every key matching opts.Pattern with SCAN … MATCH COUNT on
// every master and calls fn with each batch SCAN returned, with the node
// that holds them (so per-key work can be pipelined on it), then waits
// opts.Pause. Only Pattern, Count, Timeout and Pause are used. A key may
// be passed twice (SCAN's guarantee); every key present for the whole walk
// is passed at least once. fn runs concurrently for different masters of a
// cluster.
func Each(ctx context.Context, c redis.UniversalClient, opts Options,
	fn func(ctx context.Context, node *redis.Client, keys []string) error) error {
	if err := opts.defaults(); err != nil {
		return err
	}
	return Masters(ctx, c, func(ctx context.Context, node *redis.Client) error {
		return walk(ctx, node, opts, fn)
	})
}

// walk is Each on one node, with opts already defaulted.
func walk(ctx context.Context, node *redis.Client, opts Options,
	fn func(ctx context.Context, node *redis.Client, keys []string) error) error {
	var cursor uint64
	for {
		cctx, cancel := context.WithTimeout(ctx, opts.Timeout)
		keys, next, err := node.Scan(cctx, cursor, opts.Pattern, int64(opts.Count)).Result()
		cancel()
		if err != nil {
			return fmt.Errorf("keyscan: scan %s: %w", node.Options().Addr, err)
		}
		if len(keys) > 0 {
			if err := fn(ctx, node, keys); err != nil {
				return err
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
		if opts.Pause > 0 {
			if err := pause(ctx, opts.Pause); err != nil {
				return fmt.Errorf("keyscan: %w", err)
			}
		}
	}
}

// pause waits d or until ctx ends; a variable so tests can count the
// pauses without waiting for them.
var pause = func(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Scan counts and lists the keys matching opts.Pattern on every master.
func Scan(ctx context.Context, c redis.UniversalClient, opts Options) (Report, error) {
	if err := opts.defaults(); err != nil {
		return Report{}, err
	}
	nodes, err := countMasters(ctx, c)
	if err != nil {
		return Report{}, fmt.Errorf("keyscan: %w", err)
	}
	var (
		mu       sync.Mutex
		seen     = map[string]struct{}{}
		stats    = map[string]*PrefixStats{}
		listed   []Key
		rep      = Report{Nodes: nodes}
		calls    atomic.Int64
		scanned  atomic.Int64
		done     atomic.Int32
		progress = func() {
			if opts.Progress != nil {
				opts.Progress(Progress{Nodes: nodes, Done: int(done.Load()), Calls: calls.Load(), Keys: scanned.Load()})
			}
		}
	)
	err = Masters(ctx, c, func(ctx context.Context, node *redis.Client) error {
		defer func() { done.Add(1); progress() }()
		return walk(ctx, node, opts, func(ctx context.Context, node *redis.Client, keys []string) error {
			calls.Add(1)
			scanned.Add(int64(len(keys)))
			// Drop the keys already counted before asking about them.
			mu.Lock()
			fresh := keys[:0:0]
			for _, k := range keys {
				if _, dup := seen[k]; !dup {
					seen[k] = struct{}{}
					fresh = append(fresh, k)
				}
			}
			mu.Unlock()
			facts, err := describe(ctx, node, fresh, opts)
			if err != nil {
				return err
			}
			mu.Lock()
			for _, f := range facts {
				if f.Type == "none" { // gone since SCAN saw it
					rep.Vanished++
					continue
				}
				rep.Keys++
				rep.Bytes += f.Bytes
				p := opts.Group(f.Key)
				s := stats[p]
				if s == nil {
					s = &PrefixStats{Prefix: p}
					stats[p] = s
				}
				s.Keys++
				s.Bytes += f.Bytes
				if f.TTL < 0 {
					s.NoTTL++
				} else {
					if s.MinTTL == 0 || f.TTL < s.MinTTL {
						s.MinTTL = f.TTL
					}
					s.MaxTTL = max(s.MaxTTL, f.TTL)
				}
				if opts.MaxKeys > 0 {
					listed = append(listed, f)
				}
			}
			if opts.MaxKeys > 0 && len(listed) > 4*opts.MaxKeys {
				listed = firstKeys(listed, opts.MaxKeys)
			}
			mu.Unlock()
			progress()
			return nil
		})
	})
	if err != nil {
		return Report{}, err
	}
	for _, s := range stats {
		rep.Prefixes = append(rep.Prefixes, *s)
	}
	slices.SortFunc(rep.Prefixes, func(a, b PrefixStats) int { return strings.Compare(a.Prefix, b.Prefix) })
	if opts.MaxKeys > 0 {
		rep.Listed = firstKeys(listed, opts.MaxKeys)
	}
	if opts.Values {
		if err := values(ctx, c, rep.Listed, opts); err != nil {
			return Report{}, err
		}
	}
	return rep, nil
}

func firstKeys(ks []Key, n int) []Key {
	slices.SortFunc(ks, func(a, b Key) int { return strings.Compare(a.Key, b.Key) })
	if len(ks) > n {
		ks = ks[:n]
	}
	return slices.Clip(ks)
}

// describe pipelines TYPE, PTTL and MEMORY USAGE for keys on node, in
// round trips of describeBatch keys, each command O(1) (MEMORY USAGE
// samples aggregates), so the server serves other clients between them.
func describe(ctx context.Context, node *redis.Client, keys []string, opts Options) ([]Key, error) {
	var out []Key
	for len(keys) > 0 {
		n := min(len(keys), describeBatch)
		part, err := describeBatchOf(ctx, node, keys[:n], opts)
		if err != nil {
			return nil, err
		}
		out = append(out, part...)
		keys = keys[n:]
	}
	return out, nil
}

// describeBatch keys make one pipeline: Redis runs a client's pipelined
// commands back to back, so a pipeline of 3 x 200 commands holds other
// clients for well under a millisecond.
const describeBatch = 200

func describeBatchOf(ctx context.Context, node *redis.Client, keys []string, opts Options) ([]Key, error) {
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	pipe := node.Pipeline()
	types := make([]*redis.StatusCmd, len(keys))
	ttls := make([]*redis.DurationCmd, len(keys))
	sizes := make([]*redis.IntCmd, len(keys))
	for i, k := range keys {
		types[i] = pipe.Type(ctx, k)
		ttls[i] = pipe.PTTL(ctx, k)
		sizes[i] = pipe.MemoryUsage(ctx, k)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("keyscan: describe on %s: %w", node.Options().Addr, err)
	}
	out := make([]Key, len(keys))
	for i, k := range keys {
		out[i] = Key{Key: k, Type: types[i].Val(), TTL: ttls[i].Val(), Bytes: sizes[i].Val()}
		if out[i].TTL < 0 {
			out[i].TTL = -1
		}
	}
	return out, nil
}

// values fills Value for listed keys (a few, so one call each is fine).
func values(ctx context.Context, c redis.UniversalClient, ks []Key, opts Options) error {
	for i := range ks {
		cctx, cancel := context.WithTimeout(ctx, opts.Timeout)
		var v string
		var err error
		switch ks[i].Type {
		case "string":
			v, err = c.Get(cctx, ks[i].Key).Result()
			if err == nil && !opts.Reveal {
				v = Redact(v)
			} else if err == nil && len(v) > 512 {
				v = v[:512] + "…"
			}
		case "hash":
			var n int64
			n, err = c.HLen(cctx, ks[i].Key).Result()
			v = fmt.Sprintf("<hash, %d fields>", n)
		case "list":
			var n int64
			n, err = c.LLen(cctx, ks[i].Key).Result()
			v = fmt.Sprintf("<list, %d items>", n)
		case "set":
			var n int64
			n, err = c.SCard(cctx, ks[i].Key).Result()
			v = fmt.Sprintf("<set, %d members>", n)
		case "zset":
			var n int64
			n, err = c.ZCard(cctx, ks[i].Key).Result()
			v = fmt.Sprintf("<zset, %d members>", n)
		default:
			v = "<" + ks[i].Type + ">"
		}
		cancel()
		if errors.Is(err, redis.Nil) {
			v, err = "<gone>", nil
		}
		if err != nil {
			return fmt.Errorf("keyscan: value of a listed key: %w", err)
		}
		ks[i].Value = v
	}
	return nil
}

// Redact shows a value as its length and the start of its SHA-256.
func Redact(v string) string {
	sum := sha256.Sum256([]byte(v))
	return fmt.Sprintf("<%d bytes, sha256:%s>", len(v), hex.EncodeToString(sum[:6]))
}
