package qstashdev

import (
	"fmt"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// This file holds the pure parsers of the publish headers of
// docs/qstash-protocol.md §3.3. They take plain
// values and return errors, never panic, so they are easy to table-test and
// fuzz.

// parseDuration parses QStash's "<int><unit>" durations, compounds allowed
// ("1d10h30m", "50s"). Units: d, h, m, s, and (an extension, for tests and
// benchmarks) ms. A bare integer means seconds.
func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty duration")
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 || n > math.MaxInt64/int64(time.Second) {
			return 0, fmt.Errorf("duration %q out of range", s)
		}
		return time.Duration(n) * time.Second, nil
	}
	var total time.Duration
	for i := 0; i < len(s); {
		j := i
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		if j == i {
			return 0, fmt.Errorf("invalid duration %q: expected a number at offset %d", s, i)
		}
		n, err := strconv.ParseInt(s[i:j], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		k := j
		for k < len(s) && (s[k] < '0' || s[k] > '9') {
			k++
		}
		var unit time.Duration
		switch strings.ToLower(s[j:k]) {
		case "ms":
			unit = time.Millisecond
		case "s":
			unit = time.Second
		case "m":
			unit = time.Minute
		case "h":
			unit = time.Hour
		case "d":
			unit = 24 * time.Hour
		default:
			return 0, fmt.Errorf("invalid duration %q: unit must be one of s, m, h, d", s)
		}
		if n > int64(math.MaxInt64/unit) {
			return 0, fmt.Errorf("duration %q out of range", s)
		}
		d := time.Duration(n) * unit
		if total > math.MaxInt64-d {
			return 0, fmt.Errorf("duration %q out of range", s)
		}
		total += d
		i = k
	}
	return total, nil
}

// parseRetryAfter reads Retry-After and the X-RateLimit-Reset* family
// (docs/qstash-protocol.md §6.4):
// integer seconds (0 = now), an HTTP date, or a Go duration. ok is false for
// unparsable, negative or beyond-one-day values: the default backoff applies.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	var d time.Duration
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 || n > 86400 {
			return 0, false
		}
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
		if d < 0 {
			d = 0
		}
	} else if gd, err := time.ParseDuration(v); err == nil {
		d = gd
	} else {
		return 0, false
	}
	if d < 0 || d > 24*time.Hour {
		return 0, false
	}
	return d, true
}

// retryAfterHeaders are consulted in order on a failed attempt.
var retryAfterHeaders = []string{"Retry-After", "X-RateLimit-Reset", "X-RateLimit-Reset-Requests", "X-RateLimit-Reset-Tokens"}

type flowConfig struct {
	key         string
	parallelism int
	rate        int
	period      time.Duration
}

// parseFlowControlValue parses "parallelism=5, rate=10, period=1m" (any
// non-empty subset, spaces optional).
func parseFlowControlValue(v string) (parallelism, rate int, period time.Duration, err error) {
	seen := 0
	for part := range strings.SplitSeq(v, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, val, ok := strings.Cut(part, "=")
		if !ok {
			return 0, 0, 0, fmt.Errorf("invalid flow control value %q: want name=value", part)
		}
		name, val = strings.ToLower(strings.TrimSpace(name)), strings.TrimSpace(val)
		switch name {
		case "parallelism", "rate", "ratepersecond":
			n, perr := strconv.Atoi(val)
			if perr != nil || n <= 0 || n > 1_000_000 {
				return 0, 0, 0, fmt.Errorf("invalid flow control %s %q: want a positive integer", name, val)
			}
			if name == "parallelism" {
				parallelism = n
			} else {
				rate = n
			}
		case "period":
			d, perr := parseDuration(val)
			if perr != nil || d <= 0 || d > 7*24*time.Hour {
				return 0, 0, 0, fmt.Errorf("invalid flow control period %q: want a duration up to 1 week", val)
			}
			period = d
		default:
			return 0, 0, 0, fmt.Errorf("unknown flow control setting %q", name)
		}
		seen++
	}
	if seen == 0 || (parallelism == 0 && rate == 0) {
		return 0, 0, 0, fmt.Errorf("flow control value must set parallelism and/or rate")
	}
	if period == 0 {
		period = time.Second
	}
	return parallelism, rate, period, nil
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

func validName(s string) bool { return len(s) <= 200 && namePattern.MatchString(s) }

var allowedMethods = map[string]bool{"GET": true, "POST": true, "PUT": true, "PATCH": true, "DELETE": true, "HEAD": true, "OPTIONS": true}

// callbackConfig configures the message QStash publishes to a callback or
// failure-callback URL.
type callbackConfig struct {
	url        string
	method     string
	header     http.Header
	retries    int
	hasRetries bool
	retryDelay *retryExpr
	timeout    time.Duration
	delay      time.Duration
}

type redaction struct {
	body       bool
	allHeaders bool
	headers    []string // canonical names
}

// publishOptions is everything the publish headers
// (docs/qstash-protocol.md §3.3) say about one message.
type publishOptions struct {
	method       string
	header       http.Header // what the destination receives: forwarded headers + Content-Type
	delay        time.Duration
	notBefore    time.Time
	hasNotBefore bool
	retries      int
	retryDelay   *retryExpr
	timeout      time.Duration
	dedupID      string
	contentDedup bool
	callback     *callbackConfig
	failure      *callbackConfig
	flow         *flowConfig
	labels       []string
	redact       redaction
	// Schedule creation only.
	cron       string
	scheduleID string
	queueName  string
}

type parseLimits struct {
	maxRetries int
	maxTimeout time.Duration
}

const defaultRetries = 3
const maxDelay = 365 * 24 * time.Hour

// hopHeaders are never forwarded, even with Upstash-Header-Forward: they
// describe the publish request itself, and Authorization holds our token.
var hopHeaders = map[string]bool{
	"Authorization": true, "Host": true, "Content-Length": true, "Connection": true,
	"Transfer-Encoding": true, "Accept-Encoding": true, "Keep-Alive": true, "Te": true,
	"Trailer": true, "Upgrade": true, "Proxy-Authorization": true, "Proxy-Connection": true,
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// parsePublishHeaders turns publish headers into options. It rejects
// malformed values with an error whose text is returned to the client.
func parsePublishHeaders(h http.Header, lim parseLimits, now time.Time) (*publishOptions, error) {
	o := &publishOptions{method: http.MethodPost, header: http.Header{}, retries: defaultRetries}
	get := func(name string) string { return strings.TrimSpace(h.Get(name)) }

	if m := get("Upstash-Method"); m != "" {
		m = strings.ToUpper(m)
		if !allowedMethods[m] {
			return nil, fmt.Errorf("invalid Upstash-Method %q", m)
		}
		o.method = m
	}
	headerForward := strings.EqualFold(get("Upstash-Header-Forward"), "true")
	for k, vs := range h {
		switch {
		case hasPrefixFold(k, "Upstash-Forward-"):
			name := http.CanonicalHeaderKey(k[len("Upstash-Forward-"):])
			if name == "" {
				continue
			}
			o.header[name] = append([]string(nil), vs...)
		case strings.EqualFold(k, "Content-Type"):
			o.header.Set("Content-Type", vs[0])
		case hasPrefixFold(k, "Upstash-Workflow-"):
			// Kept for the destination: the Workflow SDKs read them there
			// (docs/qstash-protocol.md §18).
			o.header[http.CanonicalHeaderKey(k)] = append([]string(nil), vs...)
		case headerForward && !hasPrefixFold(k, "Upstash-") && !hopHeaders[http.CanonicalHeaderKey(k)]:
			if _, set := o.header[http.CanonicalHeaderKey(k)]; !set {
				o.header[http.CanonicalHeaderKey(k)] = append([]string(nil), vs...)
			}
		}
	}
	if v := get("Upstash-Delay"); v != "" {
		d, err := parseDuration(v)
		if err != nil {
			return nil, fmt.Errorf("invalid Upstash-Delay: %v", err)
		}
		if d > maxDelay {
			return nil, fmt.Errorf("invalid Upstash-Delay: exceeds the maximum of 365d")
		}
		o.delay = d
	}
	if v := get("Upstash-Not-Before"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || n > now.Add(maxDelay).Unix()+1 {
			return nil, fmt.Errorf("invalid Upstash-Not-Before %q: want unix seconds within a year", v)
		}
		o.notBefore, o.hasNotBefore = time.Unix(n, 0), true
	}
	if v := get("Upstash-Retries"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("invalid Upstash-Retries %q: want an integer >= 0", v)
		}
		if n > lim.maxRetries {
			return nil, fmt.Errorf("invalid Upstash-Retries %d: exceeds the maximum of %d", n, lim.maxRetries)
		}
		o.retries = n
	}
	if v := get("Upstash-Retry-Delay"); v != "" {
		e, err := parseRetryExpr(v)
		if err != nil {
			return nil, fmt.Errorf("invalid Upstash-Retry-Delay: %v", err)
		}
		o.retryDelay = e
	}
	var err error
	if o.timeout, err = parseTimeout(get("Upstash-Timeout"), "Upstash-Timeout", lim); err != nil {
		return nil, err
	}
	if v := get("Upstash-Deduplication-Id"); v != "" {
		o.dedupID = v
	}
	if v := get("Upstash-Content-Based-Deduplication"); v != "" {
		switch strings.ToLower(v) {
		case "true":
			o.contentDedup = true
		case "false":
		default:
			return nil, fmt.Errorf("invalid Upstash-Content-Based-Deduplication %q: want true or false", v)
		}
	}
	if o.callback, err = parseCallback(h, "Upstash-Callback", lim); err != nil {
		return nil, err
	}
	if o.failure, err = parseCallback(h, "Upstash-Failure-Callback", lim); err != nil {
		return nil, err
	}
	key, val := get("Upstash-Flow-Control-Key"), get("Upstash-Flow-Control-Value")
	switch {
	case key != "" && val != "":
		p, r, per, err := parseFlowControlValue(val)
		if err != nil {
			return nil, err
		}
		o.flow = &flowConfig{key: key, parallelism: p, rate: r, period: per}
	case key != "" || val != "":
		return nil, fmt.Errorf("Upstash-Flow-Control-Key and Upstash-Flow-Control-Value must be given together")
	}
	if v := get("Upstash-Label"); v != "" {
		for l := range strings.SplitSeq(v, ",") {
			if l = strings.TrimSpace(l); l != "" {
				o.labels = append(o.labels, l)
			}
		}
	}
	if v := get("Upstash-Redact-Fields"); v != "" {
		if o.redact, err = parseRedact(v); err != nil {
			return nil, err
		}
	}
	o.cron = strings.TrimSpace(get("Upstash-Cron"))
	o.scheduleID = get("Upstash-Schedule-Id")
	o.queueName = get("Upstash-Queue-Name")
	return o, nil
}

func parseTimeout(v, name string, lim parseLimits) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := parseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("invalid %s %q: want a positive duration like 30s", name, v)
	}
	// It can only shorten the plan's maximum response duration.
	return min(d, lim.maxTimeout), nil
}

func validDestinationURL(s string) bool {
	if !hasPrefixFold(s, "http://") && !hasPrefixFold(s, "https://") {
		return false
	}
	u, err := url.Parse(s)
	return err == nil && u.Host != ""
}

// parseCallback reads Upstash-Callback (or Upstash-Failure-Callback) and its
// -Forward-*, -Method, -Timeout, -Retries, -Retry-Delay and -Delay kin.
func parseCallback(h http.Header, base string, lim parseLimits) (*callbackConfig, error) {
	u := strings.TrimSpace(h.Get(base))
	if u == "" {
		return nil, nil
	}
	if !validDestinationURL(u) {
		return nil, fmt.Errorf("invalid %s url %q: add http:// or https://", base, u)
	}
	c := &callbackConfig{url: u, method: http.MethodPost, header: http.Header{}}
	prefix, wfPrefix := base+"-Forward-", base+"-Workflow-"
	for k, vs := range h {
		if hasPrefixFold(k, prefix) && len(k) > len(prefix) {
			c.header[http.CanonicalHeaderKey(k[len(prefix):])] = append([]string(nil), vs...)
		}
		if hasPrefixFold(k, wfPrefix) && len(k) > len(wfPrefix) {
			// The Workflow headers of the callback message itself.
			c.header[http.CanonicalHeaderKey("Upstash-Workflow-"+k[len(wfPrefix):])] = append([]string(nil), vs...)
		}
	}
	if m := strings.TrimSpace(h.Get(base + "-Method")); m != "" {
		m = strings.ToUpper(m)
		if !allowedMethods[m] {
			return nil, fmt.Errorf("invalid %s-Method %q", base, m)
		}
		c.method = m
	}
	var err error
	if c.timeout, err = parseTimeout(strings.TrimSpace(h.Get(base+"-Timeout")), base+"-Timeout", lim); err != nil {
		return nil, err
	}
	if v := strings.TrimSpace(h.Get(base + "-Retries")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > lim.maxRetries {
			return nil, fmt.Errorf("invalid %s-Retries %q: want an integer in 0..%d", base, v, lim.maxRetries)
		}
		c.retries, c.hasRetries = n, true
	}
	if v := strings.TrimSpace(h.Get(base + "-Retry-Delay")); v != "" {
		if c.retryDelay, err = parseRetryExpr(v); err != nil {
			return nil, fmt.Errorf("invalid %s-Retry-Delay: %v", base, err)
		}
	}
	if v := strings.TrimSpace(h.Get(base + "-Delay")); v != "" {
		d, err := parseDuration(v)
		if err != nil || d > maxDelay {
			return nil, fmt.Errorf("invalid %s-Delay %q", base, v)
		}
		c.delay = d
	}
	return c, nil
}

// parseRedact accepts every spelling seen in docs and SDKs: body, header,
// headers, header[Name], headers[Name].
func parseRedact(v string) (redaction, error) {
	var r redaction
	for f := range strings.SplitSeq(v, ",") {
		f = strings.TrimSpace(f)
		lf := strings.ToLower(f)
		switch {
		case f == "":
		case lf == "body":
			r.body = true
		case lf == "header" || lf == "headers":
			r.allHeaders = true
		case (strings.HasPrefix(lf, "header[") || strings.HasPrefix(lf, "headers[")) && strings.HasSuffix(f, "]"):
			name := f[strings.IndexByte(f, '[')+1 : len(f)-1]
			if name == "" {
				return r, fmt.Errorf("invalid Upstash-Redact-Fields entry %q", f)
			}
			r.headers = append(r.headers, http.CanonicalHeaderKey(name))
		default:
			return r, fmt.Errorf("invalid Upstash-Redact-Fields entry %q", f)
		}
	}
	return r, nil
}
