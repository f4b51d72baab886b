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
	resetAfter := ceilSeconds(res.ResetAfter)
	h.Set(HeaderLimit, strconv.Itoa(res.Limit))
	h.Set(HeaderRemaining, strconv.Itoa(res.Remaining))
	h.Set(HeaderReset, strconv.FormatInt(ceilUnix(res.Reset), 10))
	h.Set(HeaderPolicy, `"`+res.Bucket+`";q=`+strconv.Itoa(res.Limit)+";w="+
		strconv.FormatInt(Quota{Period: res.Period}.windowSeconds(), 10))
	h.Set(HeaderRateLimit, `"`+res.Bucket+`";r=`+strconv.Itoa(res.Remaining)+";t="+
		strconv.FormatInt(resetAfter, 10))
	if !res.Allowed {
		h.Set(HeaderRetryAfter, strconv.FormatInt(max(ceilSeconds(res.RetryAfter), 1), 10))
	}
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
