package limits

import (
	"errors"
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

// FailureMode is what a bucket's decisions do while Redis cannot answer
// them (see "Degraded mode" in the package doc).
type FailureMode string

const (
	// FailureLocal: during an outage, a bounded limiter in this instance's
	// memory decides: at most Limit per instance and window, so at most
	// Limit × instances in all. The default of every tier but strict.
	FailureLocal FailureMode = "local"
	// FailureClosed: refuse (503 with Retry-After). The default of the
	// strict tier, whose routes (logins, one-time codes, tips) are the ones
	// an attacker would hammer while the limiter is blind.
	FailureClosed FailureMode = "closed"
	// FailureOpen: admit every request, with no limit at all, while Redis
	// cannot answer. Only on explicit request.
	FailureOpen FailureMode = "open"
)

func (m FailureMode) valid() bool {
	return m == FailureLocal || m == FailureClosed || m == FailureOpen
}

// defaultFailure is the mode of a bucket of tier when the config names
// neither.
func defaultFailure(tier string) FailureMode {
	if tier == TierStrict {
		return FailureClosed
	}
	return FailureLocal
}

// Policy is the resolved rule of one bucket.
type Policy struct {
	Bucket string
	Tier   string
	Quota
	// Failure is what the bucket's decisions do while Redis cannot answer.
	Failure FailureMode
	// Lease is the most requests of one identifier's window this instance
	// may hold taken ahead of need; 0 asks Redis for every admission.
	Lease int
}

// ParseOverrides reads per-bucket quotas in the env form
// "bucket=limit/period,…", e.g. "tips:quick=5/1m,streams:status=300/1m".
// The period is a Go duration ("30s", "1m", "1h30m") or a bare unit ("s",
// "m", "h") meaning one of it. An empty string yields an empty map. Errors
// are *ConfigError with Field "Overrides". Proposed variable:
// RATE_LIMIT_OVERRIDES.
func ParseOverrides(s string) (map[string]Quota, error) {
	const field = "Overrides"
	out := map[string]Quota{}
	for _, item := range splitList(s) {
		bucket, spec, ok := strings.Cut(item, "=")
		bucket, spec = strings.TrimSpace(bucket), strings.TrimSpace(spec)
		if !ok || bucket == "" {
			return nil, configErr(field, item, "%q: want bucket=limit/period", item)
		}
		if _, dup := out[bucket]; dup {
			return nil, configErr(field, bucket, "bucket %q given twice", bucket)
		}
		n, per, ok := strings.Cut(spec, "/")
		if !ok {
			return nil, configErr(field, bucket, "%q: want bucket=limit/period", item)
		}
		limit, err := strconv.Atoi(strings.TrimSpace(n))
		if err != nil {
			return nil, configErr(field, bucket, "%q: limit %q is not a whole number", item, strings.TrimSpace(n))
		}
		period, err := parsePeriod(strings.TrimSpace(per))
		if err != nil {
			return nil, configErr(field, bucket, "%q: period: %w", item, err)
		}
		q := Quota{Limit: limit, Period: period}
		if err := q.validate(); err != nil {
			return nil, configErr(field, bucket, "%q: %w", item, err)
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
// Config.Leases). An empty string yields an empty map. Errors are
// *ConfigError with Field "Leases". Proposed variable: RATE_LIMIT_LEASES.
func ParseLeases(s string) (map[string]int, error) {
	return parseNamed(s, "Leases", "name=requests", func(v string) (int, string) {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, "want a whole number of requests ≥ 0"
		}
		return n, ""
	})
}

// parseNamed reads "name=value,…" into a map: names are trimmed, never
// empty, never given twice; value parses one trimmed value or says what is
// wrong with it. Errors are *ConfigError with Field field.
func parseNamed[V any](s, field, form string, value func(v string) (V, string)) (map[string]V, error) {
	out := map[string]V{}
	for _, item := range splitList(s) {
		name, v, ok := strings.Cut(item, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			return nil, configErr(field, item, "%q: want %s", item, form)
		}
		if _, dup := out[name]; dup {
			return nil, configErr(field, name, "%q given twice", name)
		}
		val, bad := value(strings.TrimSpace(v))
		if bad != "" {
			return nil, configErr(field, name, "%q: %s", item, bad)
		}
		out[name] = val
	}
	return out, nil
}

// ParseFailure reads per-tier and/or per-bucket failure modes in the env
// form "name=mode,…" with modes local, closed and open, e.g.
// "strict=local,auth:otp=closed" (see Config.Failure). An empty string
// yields an empty map. Errors are *ConfigError with Field "Failure".
// Proposed variable: RATE_LIMIT_FAILURE.
func ParseFailure(s string) (map[string]FailureMode, error) {
	return parseNamed(s, "Failure", "name=mode", func(v string) (FailureMode, string) {
		m := FailureMode(strings.ToLower(v))
		if !m.valid() {
			return "", "mode must be local, closed or open"
		}
		return m, ""
	})
}

// ParseFailClosed reads a comma-separated list of tier and/or bucket names
// whose decisions fail closed when Redis is unavailable, e.g.
// "moderate,streams:status": the shorthand for name=closed in ParseFailure.
// Errors are *ConfigError with Field FieldFailClosed. Proposed variable:
// RATE_LIMIT_FAIL_CLOSED.
func ParseFailClosed(s string) ([]string, error) {
	names := splitList(s)
	for _, n := range names {
		if err := validName(n); err != nil {
			return nil, configErr(FieldFailClosed, n, "%q: %w", n, err)
		}
	}
	return names, nil
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

// resolvePolicies turns the config's data into one Policy per bucket. It
// walks every map in sorted order, so the error reported is always the same.
func resolvePolicies(tiers map[string]Quota, buckets map[string]string, overrides map[string]Quota, failure map[string]FailureMode, leases map[string]int) (map[string]Policy, error) {
	for _, name := range sortedKeys(tiers) {
		if err := validName(name); err != nil {
			return nil, configErr("Tiers", name, "tier %q: %w", name, err)
		}
		if err := tiers[name].validate(); err != nil {
			return nil, configErr("Tiers", name, "tier %q: %w", name, err)
		}
	}
	known := func(n string) bool {
		_, isTier := tiers[n]
		_, isBucket := buckets[n]
		return isTier || isBucket
	}
	for _, n := range sortedKeys(failure) {
		if !known(n) {
			return nil, configErr("Failure", n, "%q is neither a tier nor a bucket", n)
		}
		if m := failure[n]; !m.valid() {
			return nil, configErr("Failure", n, "%q: mode %q must be local, closed or open", n, m)
		}
	}
	for _, n := range sortedKeys(leases) {
		if !known(n) {
			return nil, configErr("Leases", n, "%q is neither a tier nor a bucket", n)
		}
		if leases[n] < 0 {
			return nil, configErr("Leases", n, "lease %d for %q must not be negative", leases[n], n)
		}
	}
	for _, bucket := range sortedKeys(overrides) {
		if _, ok := buckets[bucket]; !ok {
			return nil, configErr("Overrides", bucket, "unknown bucket %q", bucket)
		}
		if err := overrides[bucket].validate(); err != nil {
			return nil, configErr("Overrides", bucket, "bucket %q: %w", bucket, err)
		}
	}
	out := make(map[string]Policy, len(buckets))
	for _, bucket := range sortedKeys(buckets) {
		tier := buckets[bucket]
		if err := validName(bucket); err != nil {
			return nil, configErr("Buckets", bucket, "bucket %q: %w", bucket, err)
		}
		q, ok := tiers[tier]
		if !ok {
			return nil, configErr("Buckets", bucket, "bucket %q: unknown tier %q", bucket, tier)
		}
		if o, ok := overrides[bucket]; ok {
			q = o
		}
		leaseFrom := bucket
		lease, ok := leases[bucket]
		if !ok {
			leaseFrom, lease = tier, leases[tier]
		}
		if lease > q.Limit {
			return nil, configErr("Leases", leaseFrom, "lease %d for %q exceeds the limit %d of bucket %q", lease, leaseFrom, q.Limit, bucket)
		}
		mode, ok := failure[bucket]
		if !ok {
			if mode, ok = failure[tier]; !ok {
				mode = defaultFailure(tier)
			}
		}
		out[bucket] = Policy{Bucket: bucket, Tier: tier, Quota: q, Failure: mode, Lease: lease}
	}
	return out, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// validName keeps names usable in Redis keys, metric labels and the
// RateLimit-Policy string item: printable ASCII, no braces (they would
// change the key's hash tag), no quotes or backslashes.
func validName(s string) error {
	if s == "" {
		return errors.New("empty name")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '{' || c == '}' || c == '"' || c == '\\' {
			return fmt.Errorf("character %q not allowed", c)
		}
	}
	return nil
}
