package limits

import (
	"math"
	"net/http"
	"strconv"
	"time"
)

// Header names written by WriteHeaders.
const (
	HeaderLimit      = "X-RateLimit-Limit"
	HeaderRemaining  = "X-RateLimit-Remaining"
	HeaderReset      = "X-RateLimit-Reset"
	HeaderPolicy     = "RateLimit-Policy"
	HeaderRateLimit  = "RateLimit"
	HeaderRetryAfter = "Retry-After"
)

// The header names as net/http stores them, so WriteHeaders can fill the map
// directly instead of canonicalizing each name on every response.
var (
	keyLimit      = http.CanonicalHeaderKey(HeaderLimit)
	keyRemaining  = http.CanonicalHeaderKey(HeaderRemaining)
	keyReset      = http.CanonicalHeaderKey(HeaderReset)
	keyPolicy     = http.CanonicalHeaderKey(HeaderPolicy)
	keyRateLimit  = http.CanonicalHeaderKey(HeaderRateLimit)
	keyRetryAfter = http.CanonicalHeaderKey(HeaderRetryAfter)
)

// WriteHeaders sets both header styles for res on h:
//
//	X-RateLimit-Limit: 10
//	X-RateLimit-Remaining: 0
//	X-RateLimit-Reset: 1767225660          (Unix epoch seconds, GitHub style)
//	RateLimit-Policy: "auth:otp";q=10;w=60  (IETF draft, w in seconds)
//	RateLimit: "auth:otp";r=0;t=42          (IETF draft, t in delta seconds)
//	Retry-After: 42                         (only when refused; delta seconds)
//
// Every value is an integer and every rounding goes up, so a client that
// waits as told is never early: Retry-After is never below t.
func WriteHeaders(h http.Header, res Result) {
	limit, policy := res.limitValue, res.policyValue // precomputed per bucket by the Limiter
	if limit == "" {
		limit, policy = policyValues(res.Bucket, Quota{Limit: res.Limit, Period: res.Period})
	}
	remaining := strconv.Itoa(res.Remaining)
	// One allocation backs every value slice.
	v := make([]string, 6)
	v[0], v[1], v[2], v[3] = limit, remaining, strconv.FormatInt(ceilUnix(res.Reset), 10), policy
	v[4] = `"` + res.Bucket + `";r=` + remaining + ";t=" + strconv.FormatInt(ceilSeconds(res.ResetAfter), 10)
	h[keyLimit], h[keyRemaining], h[keyReset] = v[0:1:1], v[1:2:2], v[2:3:3]
	h[keyPolicy], h[keyRateLimit] = v[3:4:4], v[4:5:5]
	if !res.Allowed {
		v[5] = strconv.FormatInt(max(ceilSeconds(res.RetryAfter), 1), 10)
		h[keyRetryAfter] = v[5:6:6]
	}
}

// policyValues renders the constant headers of a bucket: X-RateLimit-Limit
// and RateLimit-Policy.
func policyValues(bucket string, q Quota) (limit, policy string) {
	limit = strconv.Itoa(q.Limit)
	return limit, `"` + bucket + `";q=` + limit + ";w=" + strconv.FormatInt(q.windowSeconds(), 10)
}

// ceilSeconds rounds a wait up to whole seconds, never negative.
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64(math.Ceil(d.Seconds()))
}

// ceilUnix is t as Unix seconds, rounded up.
func ceilUnix(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return s
}
