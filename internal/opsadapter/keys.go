package opsadapter

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/keyscan"
	"github.com/digis/jobworker/internal/opsconsole"
)

// Keys samples the deployment's keys with SCAN (never KEYS), on every
// master of a Cluster (internal/keyscan), stopping at a limit.
type Keys struct {
	rdb     redis.UniversalClient
	prefix  string
	timeout time.Duration
}

var _ opsconsole.Keys = (*Keys)(nil)

// NewKeys samples the keys under prefix (REDIS_KEY_PREFIX); timeout bounds
// each round trip.
func NewKeys(rdb redis.UniversalClient, prefix string, timeout time.Duration) *Keys {
	return &Keys{rdb: rdb, prefix: prefix, timeout: timeout}
}

// errEnough stops the walk once the sample is full.
var errEnough = errors.New("sample full")

// Sample scans up to limit keys and reports them per prefix
// (keyscan.Prefix after the deployment's prefix: "rl:generous:streams:status:",
// "idem:qstash:", "cache:status:"), with their TTLs; the rate-limit
// counters among them give the most-limited identities.
func (k *Keys) Sample(ctx context.Context, limit int) (opsconsole.KeyReport, error) {
	var (
		mu       sync.Mutex
		seen     = map[string]bool{}
		rep      = opsconsole.KeyReport{Complete: true, Prefixes: []opsconsole.KeyPrefix{}, TopLimited: []opsconsole.LimitedIdentity{}}
		byPrefix = map[string]*opsconsole.KeyPrefix{}
	)
	err := keyscan.Each(ctx, k.rdb, keyscan.Options{Pattern: globEscape(k.prefix) + "*", Timeout: k.timeout},
		func(ctx context.Context, node *redis.Client, keys []string) error {
			ctx, cancel := context.WithTimeout(ctx, k.timeout)
			defer cancel()
			ttls := make([]*redis.DurationCmd, len(keys))
			counts := map[int]*redis.StringCmd{}
			if _, err := node.Pipelined(ctx, func(p redis.Pipeliner) error {
				for i, key := range keys {
					ttls[i] = p.PTTL(ctx, key)
					if _, _, _, ok := k.limiterKey(key); ok {
						counts[i] = p.Get(ctx, key)
					}
				}
				return nil
			}); err != nil && !errors.Is(err, redis.Nil) {
				return fmt.Errorf("opsadapter: sample TTLs: %w", err)
			}
			mu.Lock()
			defer mu.Unlock()
			for i, key := range keys {
				if seen[key] || ttls[i].Val() == -2 { // SCAN may return a key twice; -2: gone since
					continue
				}
				if len(seen) >= limit {
					rep.Complete = false
					return errEnough
				}
				seen[key] = true
				name := keyscan.Prefix(strings.TrimPrefix(key, k.prefix))
				kp := byPrefix[name]
				if kp == nil {
					kp = &opsconsole.KeyPrefix{Prefix: name, TTL: map[string]int{}}
					byPrefix[name] = kp
				}
				kp.Count++
				kp.TTL[ttlBucket(ttls[i].Val())]++
				if c, ok := counts[i]; ok {
					n, err := strconv.ParseInt(c.Val(), 10, 64)
					if err != nil {
						continue
					}
					tier, bucket, id, _ := k.limiterKey(key)
					if len(id) > 12 {
						id = id[:12] + "…"
					}
					rep.TopLimited = append(rep.TopLimited, opsconsole.LimitedIdentity{Tier: tier, Bucket: bucket, Identity: id, Count: n})
				}
			}
			return nil
		})
	if err != nil && !errors.Is(err, errEnough) {
		return opsconsole.KeyReport{}, fmt.Errorf("opsadapter: scan: %w", err)
	}
	rep.Sampled = len(seen)
	for _, kp := range byPrefix {
		rep.Prefixes = append(rep.Prefixes, *kp)
	}
	sort.Slice(rep.Prefixes, func(a, b int) bool { return rep.Prefixes[a].Count > rep.Prefixes[b].Count })
	sort.Slice(rep.TopLimited, func(a, b int) bool { return rep.TopLimited[a].Count > rep.TopLimited[b].Count })
	if len(rep.TopLimited) > 20 {
		rep.TopLimited = rep.TopLimited[:20]
	}
	return rep, nil
}

// limiterKey parses <prefix>rl:<tier>:<bucket>:{<hmac>} (a bucket name
// may hold ':').
func (k *Keys) limiterKey(key string) (tier, bucket, id string, ok bool) {
	rest, ok := strings.CutPrefix(key, k.prefix+"rl:")
	if !ok {
		return "", "", "", false
	}
	tier, rest, ok = strings.Cut(rest, ":")
	if !ok {
		return "", "", "", false
	}
	i := strings.LastIndex(rest, ":{")
	if i < 0 || !strings.HasSuffix(rest, "}") {
		return "", "", "", false
	}
	return tier, rest[:i], rest[i+2 : len(rest)-1], true
}

func ttlBucket(d time.Duration) string {
	switch {
	case d < 0: // -1 no TTL; -2 gone since the scan
		return "none"
	case d < time.Minute:
		return "<1m"
	case d < time.Hour:
		return "<1h"
	case d < 24*time.Hour:
		return "<1d"
	}
	return ">=1d"
}

// globEscape makes the prefix literal in a SCAN MATCH pattern.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
