package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/apiapp"
	"github.com/digis/jobworker/internal/env"
	"github.com/digis/jobworker/internal/keyscan"
	"github.com/digis/jobworker/internal/redisconn"
	"github.com/digis/jobworker/limits"
)

// redis opens REDIS_URL (REDIS_TIMEOUT bounds each call) and returns the
// client and REDIS_KEY_PREFIX.
func (a *app) redis() (redis.UniversalClient, string, error) {
	r := env.NewReader(a.getenv)
	prefix := r.Str("REDIS_KEY_PREFIX", "")
	cfg := redisconn.Config{URL: a.getenv("REDIS_URL"), Timeout: r.Duration("REDIS_TIMEOUT", time.Second)}
	if strings.TrimSpace(cfg.URL) == "" {
		r.Fail("REDIS_URL", "required (redis://, rediss:// or redis+cluster://)")
	} else if err := cfg.Validate(); err != nil {
		r.Fail("REDIS_URL", "%v", err)
	}
	if err := r.Err(); err != nil {
		return nil, "", err
	}
	c, err := redisconn.Open(cfg)
	return c, prefix, err
}

// keys scans PATTERN (after the key prefix) and prints per-prefix totals
// and the first keys.
func (a *app) keys(ctx context.Context, args []string) error {
	opts := keyscan.Options{}
	var progress bool
	fs, err := flags("keys", args, func(fs *flag.FlagSet) {
		fs.IntVar(&opts.Count, "count", keyscan.DefaultCount, "SCAN COUNT hint per round trip")
		fs.DurationVar(&opts.Pause, "pause", keyscan.DefaultPause, "wait after every SCAN call and its batches, leaving the server's CPU to other clients (0: none)")
		fs.IntVar(&opts.MaxKeys, "max", 20, "list at most this many keys (-1: none)")
		fs.BoolVar(&opts.Values, "values", false, "show values (redacted unless -reveal)")
		fs.BoolVar(&opts.Reveal, "reveal", false, "show values as stored (with -values)")
		fs.BoolVar(&progress, "progress", false, "draw the progress bar even when stderr is not a terminal")
	})
	if err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("keys needs one PATTERN, e.g. 'rl:*'")
	}
	if opts.MaxKeys == 0 {
		opts.MaxKeys = -1
	}
	if opts.Reveal && !opts.Values {
		return usagef("-reveal needs -values")
	}
	if opts.Count < 1 {
		return usagef("-count must be at least 1")
	}
	if opts.Pause < 0 {
		return usagef("-pause must not be negative")
	}
	rdb, prefix, err := a.redis()
	if err != nil {
		return err
	}
	defer rdb.Close()
	opts.Pattern = prefix + fs.Arg(0)
	if progress || a.isTerminal {
		bar := a.progressBar(ctx, rdb)
		opts.Progress = bar.update
		defer bar.done()
	}
	rep, err := keyscan.Scan(ctx, rdb, opts)
	if err != nil {
		return err
	}
	return a.emit(rep, func(t *tabwriter.Writer) {
		row(t, "PREFIX", "KEYS", "BYTES", "NO TTL", "MIN TTL", "MAX TTL")
		for _, p := range rep.Prefixes {
			row(t, p.Prefix, p.Keys, size(p.Bytes), p.NoTTL, ttlRange(p, p.MinTTL), ttlRange(p, p.MaxTTL))
		}
		row(t, "total", rep.Keys, size(rep.Bytes), "", "", "")
		if len(rep.Listed) > 0 {
			row(t)
			header := []any{"KEY", "TYPE", "TTL", "BYTES"}
			if opts.Values {
				header = append(header, "VALUE")
			}
			row(t, header...)
			for _, k := range rep.Listed {
				cols := []any{k.Key, k.Type, ttl(k.TTL), size(k.Bytes)}
				if opts.Values {
					cols = append(cols, short(k.Value, 80))
				}
				row(t, cols...)
			}
			if int64(len(rep.Listed)) < rep.Keys {
				row(t, fmt.Sprintf("(%d of %d keys listed)", len(rep.Listed), rep.Keys))
			}
		}
	})
}

func ttlRange(p keyscan.PrefixStats, d time.Duration) string {
	if p.NoTTL == p.Keys {
		return "-"
	}
	return ttl(d)
}

// bar draws scan progress on stderr: keys seen against the keyspace size
// (DBSIZE of every master, read once at the start).
type bar struct {
	a     *app
	total int64
	mu    sync.Mutex
	last  time.Time
}

func (a *app) progressBar(ctx context.Context, rdb redis.UniversalClient) *bar {
	b := &bar{a: a}
	var mu sync.Mutex
	_ = keyscan.Masters(ctx, rdb, func(ctx context.Context, node *redis.Client) error {
		n, err := node.DBSize(ctx).Result()
		mu.Lock()
		b.total += n
		mu.Unlock()
		return err
	})
	return b
}

func (b *bar) update(p keyscan.Progress) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if now := time.Now(); now.Sub(b.last) >= 100*time.Millisecond || p.Done == p.Nodes {
		b.last = now
		frac := 1.0
		if b.total > 0 {
			frac = min(float64(p.Keys)/float64(b.total), 1)
		}
		const width = 30
		n := int(frac * width)
		fmt.Fprintf(b.a.stderr, "\rscanning [%s%s] %3.0f%%  %d keys seen, %d calls, %d/%d nodes done",
			strings.Repeat("#", n), strings.Repeat(".", width-n), frac*100, p.Keys, p.Calls, p.Done, p.Nodes)
	}
}

func (b *bar) done() { fmt.Fprintln(b.a.stderr) }

// limits shows or resets one identity's window in a bucket, with the API's
// own configuration (prefix, hash key, quotas). A reset is honoured by
// every API instance: the limiter publishes it and each instance drops its
// local block and lease for that window.
func (a *app) limits(ctx context.Context, verb string, args []string) error {
	if len(args) != 2 {
		return usagef("limits %s needs BUCKET and IDENTITY (user:<id> or ip:<address>)", verb)
	}
	bucket, identity := args[0], args[1]
	if ip, ok := strings.CutPrefix(identity, "ip:"); ok {
		addr, err := netip.ParseAddr(ip)
		if err != nil {
			return usagef("IDENTITY %q: not an IP address", identity)
		}
		identity = limits.IPIdentity(addr)
	} else if !strings.HasPrefix(identity, "user:") {
		return usagef("IDENTITY must be user:<id> or ip:<address>")
	}
	cfg, err := apiapp.LimiterConfig(a.getenv)
	if err != nil {
		return err
	}
	rdb, _, err := a.redis()
	if err != nil {
		return err
	}
	defer rdb.Close()
	cfg.Client = rdb
	cfg.LocalCacheSize = -1
	cfg.Leases = nil
	// The API's deadline (RATE_LIMIT_TIMEOUT, 50 ms) protects its request
	// path; an operator's one-off call, which may dial and load the script
	// first, gets the tool's REDIS_TIMEOUT instead.
	cfg.Timeout = env.NewReader(a.getenv).Duration("REDIS_TIMEOUT", time.Second)
	l, err := limits.New(cfg)
	if err != nil {
		return err
	}
	if _, ok := l.Policy(bucket); !ok {
		return usagef("unknown bucket %q", bucket)
	}
	if verb == "reset" {
		if err := l.Reset(ctx, bucket, identity); err != nil {
			return err
		}
	}
	res, err := l.Peek(ctx, bucket, identity)
	if err != nil {
		return err
	}
	if res.Reason.Degraded() || res.Reason.Unavailable() {
		return fmt.Errorf("redis did not answer (%s)", res.Reason)
	}
	out := struct {
		Bucket    string        `json:"bucket"`
		Tier      string        `json:"tier"`
		Limit     int           `json:"limit"`
		Period    time.Duration `json:"period"`
		Remaining int           `json:"remaining"`
		ResetIn   time.Duration `json:"resetIn"`
		Reset     bool          `json:"reset,omitempty"`
	}{Bucket: res.Bucket, Tier: res.Tier, Limit: res.Limit, Period: res.Period, Remaining: res.Remaining, Reset: verb == "reset"}
	if res.Remaining < res.Limit {
		out.ResetIn = res.ResetAfter
	}
	return a.emit(out, func(t *tabwriter.Writer) {
		if out.Reset {
			row(t, "reset", "done; every instance drops its cached window")
		}
		row(t, "bucket", out.Bucket)
		row(t, "tier", out.Tier)
		row(t, "limit", fmt.Sprintf("%d per %s", out.Limit, out.Period))
		row(t, "remaining", out.Remaining)
		if out.ResetIn > 0 {
			row(t, "window ends in", out.ResetIn.Round(time.Millisecond))
		}
	})
}

// idemKey resolves KEY: a key as jobctl keys lists it, or one relative to
// REDIS_KEY_PREFIX + "idem:" ("http:<hash>", "qstash:{job}:<message id>").
func idemKey(prefix, key string) string {
	switch {
	case strings.HasPrefix(key, prefix+"idem:"):
		return key
	case strings.HasPrefix(key, "idem:"):
		return prefix + key
	}
	return prefix + "idem:" + key
}

// idem shows or forgets one idempotency record. Values are never printed:
// a stored answer may hold a user's data; its length and digest are.
func (a *app) idem(ctx context.Context, verb string, args []string) error {
	var force bool
	fs, err := flags("idem "+verb, args, func(fs *flag.FlagSet) {
		if verb == "forget" {
			fs.BoolVar(&force, "force", false, "forget a record whose work is still running (a lease)")
		}
	})
	if err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("idem %s needs one KEY", verb)
	}
	rdb, prefix, err := a.redis()
	if err != nil {
		return err
	}
	defer rdb.Close()
	key := idemKey(prefix, fs.Arg(0))
	typ, err := rdb.Type(ctx, key).Result()
	if err != nil {
		return err
	}
	if typ == "none" {
		return &notFound{what: "key " + key}
	}
	pttl, err := rdb.PTTL(ctx, key).Result()
	if err != nil {
		return err
	}
	out := struct {
		Key         string        `json:"key"`
		Type        string        `json:"type"`
		State       string        `json:"state,omitempty"`
		Fingerprint string        `json:"fingerprint,omitempty"`
		Value       string        `json:"value,omitempty"`
		TTL         time.Duration `json:"ttl"`
		Forgotten   bool          `json:"forgotten,omitempty"`
	}{Key: key, Type: typ, TTL: pttl}
	switch typ {
	case "hash":
		h, err := rdb.HGetAll(ctx, key).Result()
		if err != nil {
			return err
		}
		out.State, out.Fingerprint = h["s"], short(h["f"], 16)
		if v, ok := h["v"]; ok {
			out.Value = keyscan.Redact(v)
		}
	case "string":
		v, err := rdb.Get(ctx, key).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		out.Value = keyscan.Redact(v)
	}
	if verb == "forget" {
		if out.State == "lease" && !force {
			return usagef("%s is a lease: its work may be running now; forgetting it lets a duplicate run at once (use -force)", key)
		}
		if err := rdb.Del(ctx, key).Err(); err != nil {
			return err
		}
		out.Forgotten = true
	}
	return a.emit(out, func(t *tabwriter.Writer) {
		row(t, "key", out.Key)
		row(t, "type", out.Type)
		if out.State != "" {
			row(t, "state", out.State)
		}
		if out.Fingerprint != "" {
			row(t, "fingerprint", out.Fingerprint)
		}
		if out.Value != "" {
			row(t, "value", out.Value)
		}
		row(t, "ttl", ttl(out.TTL))
		if out.Forgotten {
			row(t, "forgotten", "yes: the next delivery or request with this key runs again")
		}
	})
}
