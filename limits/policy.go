package limits

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Tier names of the origin guide.
const (
	TierStrict   = "strict"
	TierModerate = "moderate"
	TierGenerous = "generous"
)

// DefaultBucket is the bucket used when a route names none.
const DefaultBucket = "default"

// Quota is how many requests one identifier may make per Period.
type Quota struct {
	// Limit is the number of requests admitted per window. Must be ≥ 1.
	Limit int
	// Period is the window length. Must be at least one second and a whole
	// number of milliseconds; the IETF RateLimit-Policy field carries it in
	// whole seconds (rounded up).
	Period time.Duration
}

// PerMinute is a Quota of n requests per minute.
func PerMinute(n int) Quota { return Quota{Limit: n, Period: time.Minute} }

// String renders q as ParseOverrides reads it, e.g. "10/1m0s".
func (q Quota) String() string { return strconv.Itoa(q.Limit) + "/" + q.Period.String() }

func (q Quota) validate() error {
	if q.Limit < 1 {
		return fmt.Errorf("limit %d must be ≥ 1", q.Limit)
	}
	if q.Period < time.Second {
		return fmt.Errorf("period %s must be ≥ 1s", q.Period)
	}
	if q.Period%time.Millisecond != 0 {
		return fmt.Errorf("period %s must be a whole number of milliseconds", q.Period)
	}
	return nil
}

// windowSeconds is the period as the IETF `w` parameter: a positive integer.
func (q Quota) windowSeconds() int64 {
	return int64(math.Ceil(q.Period.Seconds()))
}

// DefaultTiers returns the origin guide's tiers: strict 10/min, moderate
// 60/min, generous 120/min. A fresh map each call, safe to modify.
func DefaultTiers() map[string]Quota {
	return map[string]Quota{
		TierStrict:   PerMinute(10),
		TierModerate: PerMinute(60),
		TierGenerous: PerMinute(120),
	}
}

// DefaultBuckets returns the origin guide's bucket → tier mapping. A fresh
// map each call, safe to modify.
func DefaultBuckets() map[string]string {
	return map[string]string{
		"auth:otp":       TierStrict,
		"auth:login":     TierStrict,
		"tips:quick":     TierStrict,
		"content:upload": TierStrict,
		"calls:request":  TierStrict,
		"messages:send":  TierModerate,
		DefaultBucket:    TierModerate,
		"streams:status": TierGenerous,
	}
}

// Policy is the resolved rule of one bucket.
type Policy struct {
	Bucket string
	Tier   string
	Quota
	// FailClosed: when Redis cannot answer, deny instead of admitting.
	FailClosed bool
	// Lease is the most requests of one identifier's window this instance
	// may hold taken ahead of need; 0 asks Redis for every admission.
	Lease int
}

// ParseOverrides reads per-bucket quotas in the env form
// "bucket=limit/period,…", e.g. "tips:quick=5/1m,streams:status=300/1m".
// The period is a Go duration ("30s", "1m", "1h30m") or a bare unit ("s",
// "m", "h") meaning one of it. An empty string yields an empty map.
// Proposed variable: RATE_LIMIT_OVERRIDES.
func ParseOverrides(s string) (map[string]Quota, error) {
	out := map[string]Quota{}
	for _, item := range splitList(s) {
		bucket, spec, ok := strings.Cut(item, "=")
		bucket, spec = strings.TrimSpace(bucket), strings.TrimSpace(spec)
		if !ok || bucket == "" {
			return nil, fmt.Errorf("limits: override %q: want bucket=limit/period", item)
		}
		if _, dup := out[bucket]; dup {
			return nil, fmt.Errorf("limits: override for bucket %q given twice", bucket)
		}
		n, per, ok := strings.Cut(spec, "/")
		if !ok {
			return nil, fmt.Errorf("limits: override %q: want bucket=limit/period", item)
		}
		limit, err := strconv.Atoi(strings.TrimSpace(n))
		if err != nil {
			return nil, fmt.Errorf("limits: override %q: limit: %w", item, err)
		}
		period, err := parsePeriod(strings.TrimSpace(per))
		if err != nil {
			return nil, fmt.Errorf("limits: override %q: period: %w", item, err)
		}
		q := Quota{Limit: limit, Period: period}
		if err := q.validate(); err != nil {
			return nil, fmt.Errorf("limits: override %q: %w", item, err)
		}
		out[bucket] = q
	}
	return out, nil
}

func parsePeriod(s string) (time.Duration, error) {
	switch s {
	case "s":
		return time.Second, nil
	case "m":
		return time.Minute, nil
	case "h":
		return time.Hour, nil
	}
	return time.ParseDuration(s)
}

// ParseLeases reads per-tier and/or per-bucket leases in the env form
// "name=requests,…", e.g. "generous=12,streams:status=20" (see
// Config.Leases). An empty string yields an empty map. Proposed variable:
// RATE_LIMIT_LEASES.
func ParseLeases(s string) (map[string]int, error) {
	out := map[string]int{}
	for _, item := range splitList(s) {
		name, v, ok := strings.Cut(item, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			return nil, fmt.Errorf("limits: lease %q: want name=requests", item)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("limits: lease for %q given twice", name)
		}
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("limits: lease %q: want a whole number of requests ≥ 0", item)
		}
		out[name] = n
	}
	return out, nil
}

// ParseFailClosed reads a comma-separated list of tier and/or bucket names
// whose decisions fail closed when Redis is unavailable, e.g. "strict" or
// "auth:otp,auth:login". Proposed variable: RATE_LIMIT_FAIL_CLOSED.
func ParseFailClosed(s string) []string {
	return splitList(s)
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// resolvePolicies turns the config's data into one Policy per bucket.
func resolvePolicies(tiers map[string]Quota, buckets map[string]string, overrides map[string]Quota, failClosed []string, leases map[string]int) (map[string]Policy, error) {
	for name, q := range tiers {
		if err := validName(name); err != nil {
			return nil, fmt.Errorf("tier %q: %w", name, err)
		}
		if err := q.validate(); err != nil {
			return nil, fmt.Errorf("tier %q: %w", name, err)
		}
	}
	closed := map[string]bool{}
	for _, n := range failClosed {
		_, isTier := tiers[n]
		_, isBucket := buckets[n]
		if !isTier && !isBucket {
			return nil, fmt.Errorf("fail-closed name %q is neither a tier nor a bucket", n)
		}
		closed[n] = true
	}
	for n, v := range leases {
		_, isTier := tiers[n]
		_, isBucket := buckets[n]
		if !isTier && !isBucket {
			return nil, fmt.Errorf("lease name %q is neither a tier nor a bucket", n)
		}
		if v < 0 {
			return nil, fmt.Errorf("lease %q: %d must not be negative", n, v)
		}
	}
	out := make(map[string]Policy, len(buckets))
	for bucket, tier := range buckets {
		if err := validName(bucket); err != nil {
			return nil, fmt.Errorf("bucket %q: %w", bucket, err)
		}
		q, ok := tiers[tier]
		if !ok {
			return nil, fmt.Errorf("bucket %q: unknown tier %q", bucket, tier)
		}
		if o, ok := overrides[bucket]; ok {
			q = o
		}
		lease, ok := leases[bucket]
		if !ok {
			lease = leases[tier]
		}
		if lease > q.Limit {
			return nil, fmt.Errorf("bucket %q: lease %d exceeds its limit %d", bucket, lease, q.Limit)
		}
		out[bucket] = Policy{Bucket: bucket, Tier: tier, Quota: q, FailClosed: closed[tier] || closed[bucket], Lease: lease}
	}
	var unknown []string
	for bucket, q := range overrides {
		if _, ok := buckets[bucket]; !ok {
			unknown = append(unknown, bucket)
		}
		if err := q.validate(); err != nil {
			return nil, fmt.Errorf("override %q: %w", bucket, err)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("overrides for unknown buckets %q", unknown)
	}
	return out, nil
}

// validName keeps names usable in Redis keys, metric labels and the
// RateLimit-Policy string item: printable ASCII, no braces (they would
// change the key's hash tag), no quotes or backslashes.
func validName(s string) error {
	if s == "" {
		return fmt.Errorf("empty name")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '{' || c == '}' || c == '"' || c == '\\' {
			return fmt.Errorf("character %q not allowed", c)
		}
	}
	return nil
}
