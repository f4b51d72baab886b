package qstashdev

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// The public credentials of the official QStash development server
// (docs/qstash-protocol.md §17). The official JS SDK only treats a server as
// its dev server when GET /v2/keys returns exactly these keys, so they are
// the defaults.
const (
	DevToken             = "eyJVc2VySUQiOiJkZWZhdWx0VXNlciIsIlBhc3N3b3JkIjoiZGVmYXVsdFBhc3N3b3JkIn0="
	DevCurrentSigningKey = "sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r"
	DevNextSigningKey    = "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs"
)

// DefaultAddr is where the official dev server listens, and where SDK dev
// modes look for it.
const DefaultAddr = "127.0.0.1:8080"

// Config configures a Server. The zero value is usable: every field has a
// default, documented on the field.
type Config struct {
	// Token is the bearer token every API call must present (header
	// "Authorization: Bearer <token>", or query "?qstash_token=<token>" with
	// AllowQueryToken). Defaults to DevToken.
	Token string
	// AllowQueryToken accepts the token as "?qstash_token=" too, as QStash
	// does for webhook senders that cannot set headers. Off, because a URL
	// is what any web page can make a developer's browser send. Defaults
	// to false.
	AllowQueryToken bool
	// AllowedHosts are the Host names the server answers to besides
	// localhost and IP literals, e.g. its docker compose service name
	// ("qstash-dev"); any other name is refused with 421, so a page using
	// DNS rebinding cannot read the API. Defaults to none.
	AllowedHosts []string
	// CurrentSigningKey signs deliveries. Defaults to DevCurrentSigningKey.
	CurrentSigningKey string
	// NextSigningKey becomes current on rotation. Defaults to DevNextSigningKey.
	NextSigningKey string
	// TimeScale multiplies every wait between two delivery attempts (the default
	// backoff, Upstash-Retry-Delay, Retry-After and its X-RateLimit-Reset* kin),
	// so tests need not wait 12 s for a first retry. Delays, not-before times,
	// timeouts, flow-control periods and cron times are not scaled.
	// Defaults to 1; must be > 0.
	TimeScale float64
	// DelayScale multiplies the wait before a message's first attempt
	// (Upstash-Delay, Upstash-Not-Before, callback delays, Workflow sleeps),
	// so a test of a job delayed 15 minutes need not wait 15 minutes. The
	// API still reports the unscaled notBefore. Opt-in. Defaults to 1 (real
	// time); must be > 0.
	DelayScale float64
	// MaxBodyBytes caps a message body (publish, enqueue, schedule, each batch
	// item). Larger bodies get 413. Defaults to 1 MiB (the free plan's limit).
	MaxBodyBytes int64
	// MaxRetries caps Upstash-Retries. Defaults to 20.
	MaxRetries int
	// DeliveryTimeout is the longest a destination may take to answer one
	// attempt; Upstash-Timeout can only shorten it. Defaults to 15 minutes.
	DeliveryTimeout time.Duration
	// MaxPendingMessages caps messages not yet delivered or dead-lettered;
	// publishes beyond it get 429. Defaults to 1,000,000.
	MaxPendingMessages int
	// MaxDLQMessages caps the dead-letter queue; the oldest entry is dropped
	// when a new one would exceed it. Defaults to 10,000.
	MaxDLQMessages int
	// MaxEvents caps the in-memory event log served at /v2/events; the oldest
	// events are dropped first. Defaults to 10,000.
	MaxEvents int
	// MaxSchedules caps schedules; more get 412. Defaults to 1,000.
	MaxSchedules int
	// Region, when set, is sent as the Upstash-Region delivery header (e.g.
	// "EU-CENTRAL-1"). Defaults to "" (header not sent).
	Region string
	// AllowAnyToken accepts any non-empty bearer token instead of only Token.
	// Defaults to false.
	AllowAnyToken bool
	// DataDir, when set, keeps pending messages, dead letters, schedules,
	// queues, URL groups, Workflow runs and the signing keys in a journal
	// in this directory, so a restart (even after the process is killed)
	// loses nothing it acknowledged; see docs/qstash-dev.md for exactly
	// what is durable when. One server per directory. Defaults to "" (in
	// memory only).
	DataDir string
	// Logger receives structured logs. Tokens and signing keys are never
	// logged. Defaults to a logger that discards everything.
	Logger *slog.Logger
	// HTTPClient performs deliveries. Its redirect policy is respected; the
	// default one does not follow redirects (a 3xx is a failed attempt).
	// Defaults to a client with a connection pool sized for loopback load:
	// at most 256 connections per destination host, kept open between
	// deliveries; further attempts wait for one of them.
	HTTPClient *http.Client
	// Now returns the current time; tests may inject a clock for the
	// time-stamps the server reports and signs. Timers always run on the real
	// monotonic clock. Defaults to time.Now.
	Now func() time.Time
}

// Validate reports what is wrong with c. Zero fields are fine: they take
// their defaults.
func (c Config) Validate() error {
	var errs []error
	if c.TimeScale < 0 {
		errs = append(errs, fmt.Errorf("TimeScale must be > 0, got %v", c.TimeScale))
	}
	if c.DelayScale < 0 {
		errs = append(errs, fmt.Errorf("DelayScale must be > 0, got %v", c.DelayScale))
	}
	if c.MaxBodyBytes < 0 {
		errs = append(errs, errors.New("MaxBodyBytes must be >= 0"))
	}
	if c.MaxRetries < 0 {
		errs = append(errs, errors.New("MaxRetries must be >= 0"))
	}
	if c.DeliveryTimeout < 0 {
		errs = append(errs, errors.New("DeliveryTimeout must be >= 0"))
	}
	if c.MaxPendingMessages < 0 || c.MaxDLQMessages < 0 || c.MaxEvents < 0 || c.MaxSchedules < 0 {
		errs = append(errs, errors.New("Max* limits must be >= 0"))
	}
	for name, k := range map[string]string{"CurrentSigningKey": c.CurrentSigningKey, "NextSigningKey": c.NextSigningKey, "Token": c.Token} {
		if k != "" && strings.TrimSpace(k) != k {
			errs = append(errs, fmt.Errorf("%s has leading or trailing white space", name))
		}
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.Token == "" {
		c.Token = DevToken
	}
	if c.CurrentSigningKey == "" {
		c.CurrentSigningKey = DevCurrentSigningKey
	}
	if c.NextSigningKey == "" {
		c.NextSigningKey = DevNextSigningKey
	}
	if c.TimeScale == 0 {
		c.TimeScale = 1
	}
	if c.DelayScale == 0 {
		c.DelayScale = 1
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = 20
	}
	if c.DeliveryTimeout == 0 {
		c.DeliveryTimeout = 15 * time.Minute
	}
	if c.MaxPendingMessages == 0 {
		c.MaxPendingMessages = 1_000_000
	}
	if c.MaxDLQMessages == 0 {
		c.MaxDLQMessages = 10_000
	}
	if c.MaxEvents == 0 {
		c.MaxEvents = 10_000
	}
	if c.MaxSchedules == 0 {
		c.MaxSchedules = 1000
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.HTTPClient == nil {
		c.HTTPClient = defaultHTTPClient()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// maxConnsPerHost bounds the default client's connections to one
// destination host (and so its concurrent deliveries there).
const maxConnsPerHost = 256

func defaultHTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// Many parallel deliveries to one loopback destination: keep connections
	// around instead of exhausting ephemeral ports, and never open more than
	// the pool keeps. Without the cap, thousands of messages due at once
	// (one Upstash-Not-Before second) dialled thousands of connections at
	// once, overflowed the destination's accept queue, and the dropped SYNs
	// were retried by the kernel 1 s and 3 s later: deliveries seconds late.
	// With it, they queue for a pooled connection instead.
	tr.MaxIdleConns = 512
	tr.MaxIdleConnsPerHost = maxConnsPerHost
	tr.MaxConnsPerHost = maxConnsPerHost
	return &http.Client{
		Transport: tr,
		// QStash signs the exact URL it calls; following a redirect would
		// deliver a token whose sub does not match. Treat 3xx as an answer.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
