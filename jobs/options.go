package jobs

import (
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// EnqueueOption configures one Enqueue call (or one EnqueueRequest of a
// batch). Options apply in order — the args type's EnqueueDefaults first,
// then the call's — and a later option replaces an earlier one of the same
// kind, so a call overrides a job's defaults.
type EnqueueOption interface{ applyEnqueue(*enqueueSettings) }

type enqueueOptionFunc func(*enqueueSettings)

func (f enqueueOptionFunc) applyEnqueue(s *enqueueSettings) { f(s) }

// FlowControl limits deliveries of every message sharing Key
// (Upstash-Flow-Control-Key / -Value): at most Parallelism in flight and at
// most Rate started per Period. Set Parallelism, Rate or both. Excess
// messages wait at QStash; the latest message's values update the key's
// limits.
type FlowControl struct {
	// Key groups messages, e.g. "creator-42". Printable ASCII.
	Key string
	// Parallelism caps concurrent deliveries. 0 means no cap.
	Parallelism int
	// Rate caps deliveries started per Period. 0 means no cap.
	Rate int
	// Period is the rate window, whole seconds, at most a week. Defaults
	// to QStash's 1 s when 0; only meaningful with Rate.
	Period time.Duration
}

const maxFlowPeriod = 7 * 24 * time.Hour

// enqueueSettings is the merged result of all options. Delay and not-before
// are one setting ("when"): the last of WithDelay/WithNotBefore wins, which
// also matches QStash (Not-Before beats Delay) without sending both.
type enqueueSettings struct {
	delay        time.Duration
	notBefore    time.Time
	retries      *int
	retryDelay   string
	dedupID      string
	contentDedup bool
	callback     string
	failureCB    string
	flow         *FlowControl
	timeout      time.Duration
	queue        string
	errs         []error
}

func (s *enqueueSettings) fail(format string, a ...any) {
	s.errs = append(s.errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidOption}, a...)...))
}

// WithDelay delays the first delivery by d (Upstash-Delay, whole seconds,
// rounded up). 0 removes a default delay or not-before. Replaces WithNotBefore.
func WithDelay(d time.Duration) EnqueueOption {
	return enqueueOptionFunc(func(s *enqueueSettings) {
		if d < 0 {
			s.fail("negative delay %s", d)
			return
		}
		s.delay, s.notBefore = d, time.Time{}
	})
}

// WithNotBefore delivers no sooner than t (Upstash-Not-Before, unix seconds;
// a time in the past means now). The zero time removes a default delay or
// not-before. Replaces WithDelay.
func WithNotBefore(t time.Time) EnqueueOption {
	return enqueueOptionFunc(func(s *enqueueSettings) { s.notBefore, s.delay = t, 0 })
}

// WithRetries sets how many times QStash retries a failed delivery
// (Upstash-Retries; 0 means one attempt only). Without it QStash's default
// applies (3). The plan caps it.
func WithRetries(n int) EnqueueOption {
	return enqueueOptionFunc(func(s *enqueueSettings) {
		if n < 0 {
			s.fail("negative retries %d", n)
			return
		}
		s.retries = &n
	})
}

// WithRetryDelay replaces QStash's default backoff (12 s, 2.5 min, 30 min,
// 6 h, then daily) with an expression in milliseconds over the variable
// "retried" (0 before the first retry), e.g. "1000 * pow(2, retried)"
// (Upstash-Retry-Delay). A handler's RetryAfter still takes precedence.
// "" removes a default.
func WithRetryDelay(expr string) EnqueueOption {
	return enqueueOptionFunc(func(s *enqueueSettings) {
		if !printableASCII(expr) {
			s.fail("retry delay must be printable ASCII")
			return
		}
		s.retryDelay = expr
	})
}

// WithDeduplicationID makes QStash drop a publish with an id it has seen in
// the last 10 minutes, answering with the first message's id
// (Upstash-Deduplication-Id; EnqueueResult.Deduplicated reports it). Use one
// when a publish may be retried: a timed-out Enqueue may still have landed.
// Replaces WithContentBasedDeduplication; "" removes a default.
func WithDeduplicationID(id string) EnqueueOption {
	return enqueueOptionFunc(func(s *enqueueSettings) {
		if len(id) > 512 || !printableASCII(id) {
			s.fail("deduplication id must be printable ASCII, at most 512 bytes")
			return
		}
		s.dedupID, s.contentDedup = id, false
	})
}

// WithContentBasedDeduplication makes QStash derive the deduplication id
// from the destination, body and forwarded headers
// (Upstash-Content-Based-Deduplication): two publishes of equal args within
// 10 minutes deliver once. The traceparent is not forwarded with this
// option, since it differs per request and would defeat the hash.
// Replaces WithDeduplicationID.
func WithContentBasedDeduplication() EnqueueOption {
	return enqueueOptionFunc(func(s *enqueueSettings) { s.contentDedup, s.dedupID = true, "" })
}

// WithCallback has QStash POST the outcome of every delivery attempt to url
// (Upstash-Callback), as a signed QStash message. "" removes a default.
func WithCallback(url string) EnqueueOption {
	return enqueueOptionFunc(func(s *enqueueSettings) {
		if err := checkCallbackURL(url); err != nil {
			s.fail("callback: %v", err)
			return
		}
		s.callback = url
	})
}

// WithFailureCallback has QStash POST to url once the message has failed for
// good — retries exhausted or a 489 — (Upstash-Failure-Callback). "" removes
// a default.
func WithFailureCallback(url string) EnqueueOption {
	return enqueueOptionFunc(func(s *enqueueSettings) {
		if err := checkCallbackURL(url); err != nil {
			s.fail("failure callback: %v", err)
			return
		}
		s.failureCB = url
	})
}

// WithFlowControl limits deliveries of all messages sharing fc.Key. A zero
// FlowControl removes a default.
func WithFlowControl(fc FlowControl) EnqueueOption {
	return enqueueOptionFunc(func(s *enqueueSettings) {
		if fc == (FlowControl{}) {
			s.flow = nil
			return
		}
		switch {
		case fc.Key == "" || len(fc.Key) > 256 || !printableASCII(fc.Key):
			s.fail("flow-control key must be 1 to 256 printable ASCII bytes")
		case fc.Parallelism < 0 || fc.Rate < 0 || fc.Period < 0:
			s.fail("flow-control values must not be negative")
		case fc.Parallelism == 0 && fc.Rate == 0:
			s.fail("flow control %q needs Parallelism or Rate", fc.Key)
		case fc.Period > 0 && fc.Rate == 0:
			s.fail("flow control %q: Period needs Rate", fc.Key)
		case fc.Period > maxFlowPeriod:
			s.fail("flow control %q: Period %s exceeds a week", fc.Key, fc.Period)
		default:
			s.flow = &fc
		}
	})
}

// WithTimeout bounds how long QStash waits for the worker's answer to one
// attempt (Upstash-Timeout, whole seconds, rounded up); a timed-out attempt
// is retried. It can only shorten the plan's limit. Keep it above the
// handler's timeout (WithHandlerTimeout). 0 removes a default.
func WithTimeout(d time.Duration) EnqueueOption {
	return enqueueOptionFunc(func(s *enqueueSettings) {
		if d < 0 {
			s.fail("negative timeout %s", d)
			return
		}
		s.timeout = d
	})
}

// WithQueue publishes through the named QStash queue (FIFO; parallelism 1
// unless the queue was configured otherwise; created on first use). Names
// are letters, digits, '-', '.', '_'. "" removes a default.
func WithQueue(name string) EnqueueOption {
	return enqueueOptionFunc(func(s *enqueueSettings) {
		if !validQueueName(name) {
			s.fail("queue name %q may only hold letters, digits, '-', '.' and '_'", name)
			return
		}
		s.queue = name
	})
}

func validQueueName(name string) bool {
	if len(name) > 100 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

func checkCallbackURL(raw string) error {
	if raw == "" {
		return nil
	}
	if !printableASCII(raw) {
		return fmt.Errorf("URL must be printable ASCII")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("URL must be absolute http(s)")
	}
	if u.User != nil {
		return fmt.Errorf("URL must not hold credentials")
	}
	return nil
}

// printableASCII: what can go into a header value unchanged.
func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// seconds renders d as QStash's "<n>s", rounding up so a delay or timeout
// is never shorter than asked.
func seconds(d time.Duration) string {
	return strconv.FormatInt(int64(math.Ceil(d.Seconds())), 10) + "s"
}

// flowValue renders Upstash-Flow-Control-Value, e.g. "parallelism=5,rate=10,period=60s".
func (fc *FlowControl) value() string {
	var parts []string
	if fc.Parallelism > 0 {
		parts = append(parts, "parallelism="+strconv.Itoa(fc.Parallelism))
	}
	if fc.Rate > 0 {
		parts = append(parts, "rate="+strconv.Itoa(fc.Rate))
	}
	if fc.Period > 0 {
		parts = append(parts, "period="+seconds(fc.Period))
	}
	return strings.Join(parts, ",")
}
