package opsadapter

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/opsconsole"
)

// Keys samples the deployment's keys with SCAN (never KEYS), on every
// master of a Cluster.
type Keys struct {
	rdb    redis.UniversalClient
	prefix string
}

var _ opsconsole.Keys = (*Keys)(nil)

// NewKeys samples the keys under prefix (REDIS_KEY_PREFIX).
func NewKeys(rdb redis.UniversalClient, prefix string) *Keys { return &Keys{rdb: rdb, prefix: prefix} }

// scanBatch is SCAN's COUNT hint and the size of one pipeline of PTTLs.
const scanBatch = 500

// Sample scans up to limit keys and reports them per prefix: the key's
// first two ':'-separated segments after the deployment's prefix, hash
// tags cut off ("rl:strict", "idem:qstash", "cache:status").
func (k *Keys) Sample(ctx context.Context, limit int) (opsconsole.KeyReport, error) {
	var (
		mu       sync.Mutex
		keys     []string
		complete = true
	)
	scan := func(ctx context.Context, c *redis.Client) error {
		var cursor uint64
		for {
			batch, next, err := c.Scan(ctx, cursor, globEscape(k.prefix)+"*", scanBatch).Result()
			if err != nil {
				return err
			}
			mu.Lock()
			room := limit - len(keys)
			if len(batch) > room {
				batch, next = batch[:max(room, 0)], 1
			}
			keys = append(keys, batch...)
			full := len(keys) >= limit
			mu.Unlock()
			if next == 0 {
				return nil
			}
			if full {
				mu.Lock()
				complete = false
				mu.Unlock()
				return nil
			}
			cursor = next
		}
	}
	var err error
	switch c := k.rdb.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, scan)
	case *redis.Client:
		err = scan(ctx, c)
	default:
		return opsconsole.KeyReport{}, fmt.Errorf("opsadapter: cannot scan a %T", k.rdb)
	}
	if err != nil {
		return opsconsole.KeyReport{}, fmt.Errorf("opsadapter: scan: %w", err)
	}

	rep := opsconsole.KeyReport{Sampled: len(keys), Complete: complete, Prefixes: []opsconsole.KeyPrefix{}, TopLimited: []opsconsole.LimitedIdentity{}}
	byPrefix := map[string]*opsconsole.KeyPrefix{}
	for lo := 0; lo < len(keys); lo += scanBatch {
		part := keys[lo:min(lo+scanBatch, len(keys))]
		ttls := make([]*redis.DurationCmd, len(part))
		counts := map[int]*redis.StringCmd{}
		if _, err := k.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, key := range part {
				ttls[i] = p.PTTL(ctx, key)
				if _, _, _, ok := k.limiterKey(key); ok {
					counts[i] = p.Get(ctx, key)
				}
			}
			return nil
		}); err != nil && err != redis.Nil {
			return opsconsole.KeyReport{}, fmt.Errorf("opsadapter: sample TTLs: %w", err)
		}
		for i, key := range part {
			name := k.prefixOf(key)
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
	}
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

func (k *Keys) prefixOf(key string) string {
	rest := strings.TrimPrefix(key, k.prefix)
	if i := strings.IndexByte(rest, '{'); i >= 0 {
		rest = rest[:i]
	}
	parts := strings.SplitN(rest, ":", 3)
	if len(parts) > 2 {
		parts = parts[:2]
	}
	p := strings.TrimSuffix(strings.Join(parts, ":"), ":")
	if p == "" {
		return "(other)"
	}
	return p
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
