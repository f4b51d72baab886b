// Package env reads the environment into typed, validated settings: the
// reader every binary's loader uses, and the settings both binaries share
// (Common). Each binary's own loader lives with its app (apiapp.LoadConfig,
// workerapp.LoadConfig).
//
// Variable names follow the ones the Upstash and Stripe SDKs already use
// (REDIS_URL, QSTASH_TOKEN, QSTASH_CURRENT_SIGNING_KEY, ...). Loading stops at
// the first bad value and returns an *Error naming the variable, so a
// misconfigured process exits with one clear line. Secret values are never
// part of an error message.
package env

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/digis/jobworker/internal/publicurl"
	"github.com/digis/jobworker/internal/redisconn"
)

// Error is a bad or missing configuration value.
type Error struct {
	Var    string // the environment variable
	Reason string // what is wrong, without the value if it may be secret
}

func (e *Error) Error() string { return "config: " + e.Var + ": " + e.Reason }

// Common holds what both binaries read.
type Common struct {
	// Port to listen on (PORT). Defaults per binary (apiapp.DefaultPort,
	// workerapp.DefaultPort).
	Port int
	// Redis connection (REDIS_URL, REDIS_TIMEOUT).
	Redis redisconn.Config
	// KeyPrefix is prepended to every Redis key (REDIS_KEY_PREFIX), so several
	// apps can share one Redis. Defaults to none.
	KeyPrefix string
	// RequestTimeout bounds each request's context (REQUEST_TIMEOUT).
	RequestTimeout time.Duration
	// ShutdownTimeout is how long in-flight requests may run after SIGTERM
	// (SHUTDOWN_TIMEOUT). Defaults to 25s, under Kubernetes' 30 s grace.
	ShutdownTimeout time.Duration
	// DrainDelay keeps serving (with /readyz answering 503) this long after
	// SIGTERM before closing the listener, so load balancers stop routing
	// here first (SHUTDOWN_DRAIN_DELAY). Defaults to 0.
	DrainDelay time.Duration
	// BodyLimit caps request bodies in bytes (BODY_LIMIT). Defaults to 1 MiB.
	BodyLimit int64
	// LogLevel is debug, info, warn or error (LOG_LEVEL). Defaults to info.
	LogLevel slog.Level
	// LogFormat is json or text (LOG_FORMAT). Defaults to json.
	LogFormat string
	// OpsStatsInterval is how often the process adds its counters to the
	// fleet-wide per-minute numbers in Redis the ops console reads
	// (OPS_STATS_INTERVAL); 0 turns the flush off. Defaults to 10s.
	OpsStatsInterval time.Duration
	// Development is JOBWORKER_ENV=development: the published development
	// secrets are accepted (see RefuseDevSecret). Defaults to false
	// (production).
	Development bool
	// MetricsAddr is the listener that serves /metrics and nothing else
	// (METRICS_ADDR, host:port or :port; "off" for none). Defaults per
	// binary (:9300 for the API, :9301 for the worker): never the serving
	// port, so a platform that exposes PORT does not expose the metrics.
	MetricsAddr string
	// MetricsToken, when set, makes /metrics require
	// "Authorization: Bearer <token>" and serves it on PORT too
	// (METRICS_TOKEN, at least 16 bytes). Defaults to none.
	MetricsToken string
}

// MetricsOff is the METRICS_ADDR value that turns the metrics listener off.
const MetricsOff = "off"

// MetricsWhere says where /metrics is served, for the start-up line.
func (c Common) MetricsWhere() string {
	token := c.MetricsToken != ""
	switch {
	case c.MetricsAddr == "" && token:
		return "PORT, behind METRICS_TOKEN"
	case c.MetricsAddr == "":
		return "nowhere (METRICS_ADDR=off)"
	case token:
		return c.MetricsAddr + " and PORT, behind METRICS_TOKEN"
	}
	return c.MetricsAddr
}

// Getenv looks up one variable; os.Getenv fits.
type Getenv func(string) string

// Reader reads variables and keeps the first error, so loaders read
// straight through and report one line.
type Reader struct {
	getenv Getenv
	err    error
}

// NewReader reads through getenv.
func NewReader(getenv Getenv) *Reader { return &Reader{getenv: getenv} }

// Err is the first error, an *Error, or nil.
func (r *Reader) Err() error { return r.err }

// Getenv is the raw value of name.
func (r *Reader) Getenv(name string) string { return r.getenv(name) }

// Fail records an error for name unless one is already recorded. format
// must not print a secret value.
func (r *Reader) Fail(name, format string, args ...any) {
	if r.err == nil {
		r.err = &Error{Var: name, Reason: fmt.Sprintf(format, args...)}
	}
}

// Common reads the settings both binaries share; defaultPort is PORT's
// default and defaultMetricsPort METRICS_ADDR's.
func (r *Reader) Common(defaultPort, defaultMetricsPort int) Common {
	c := Common{
		Port:             r.Port("PORT", defaultPort),
		KeyPrefix:        r.Str("REDIS_KEY_PREFIX", ""),
		RequestTimeout:   r.Duration("REQUEST_TIMEOUT", 30*time.Second),
		ShutdownTimeout:  r.Duration("SHUTDOWN_TIMEOUT", 25*time.Second),
		DrainDelay:       r.DurationOrZero("SHUTDOWN_DRAIN_DELAY", 0),
		BodyLimit:        r.Bytes("BODY_LIMIT", 1<<20),
		LogLevel:         r.Level("LOG_LEVEL"),
		LogFormat:        r.OneOf("LOG_FORMAT", "json", "json", "text"),
		OpsStatsInterval: r.DurationOrZero("OPS_STATS_INTERVAL", 10*time.Second),
		Development:      r.Development(),
	}
	c.Redis = redisconn.Config{
		URL:     r.getenv("REDIS_URL"),
		Timeout: r.Duration("REDIS_TIMEOUT", redisconn.DefaultTimeout),
	}
	if strings.TrimSpace(c.Redis.URL) == "" {
		r.Fail("REDIS_URL", "required (redis://, rediss:// or redis+cluster://)")
	} else if err := c.Redis.Validate(); err != nil {
		r.Fail("REDIS_URL", "%v", err)
	}
	if strings.ContainsAny(c.KeyPrefix, " \t\r\n") {
		r.Fail("REDIS_KEY_PREFIX", "must not contain white space")
	}
	c.MetricsAddr = r.metricsAddr(c.Port, defaultMetricsPort)
	if t := r.getenv("METRICS_TOKEN"); t != "" {
		switch {
		case strings.TrimSpace(t) != t:
			r.Fail("METRICS_TOKEN", "has leading or trailing white space (a copy-paste slip?)")
		case len(t) < 16:
			r.Fail("METRICS_TOKEN", "must be at least 16 bytes")
		}
		c.MetricsToken = t
	}
	return c
}

// metricsAddr reads METRICS_ADDR: host:port or :port, "off", or unset for
// :defaultPort. It may not be the serving port.
func (r *Reader) metricsAddr(servingPort, defaultPort int) string {
	v := r.Str("METRICS_ADDR", ":"+strconv.Itoa(defaultPort))
	if strings.EqualFold(v, MetricsOff) {
		return ""
	}
	_, p, err := net.SplitHostPort(v)
	n, perr := strconv.Atoi(p)
	switch {
	case err != nil || perr != nil || n < 0 || n > 65535:
		r.Fail("METRICS_ADDR", "%q is not host:port, :port or %q", v, MetricsOff)
	case n == servingPort:
		r.Fail("METRICS_ADDR", "must not be the serving port (PORT=%d): /metrics would be public", servingPort)
	}
	return v
}

// MemoryStore is the DATABASE_URL value that selects the in-memory store.
// It must be asked for by name: an unset DATABASE_URL is an error, so a
// deployment that loses the variable cannot quietly keep money in memory.
const MemoryStore = "memory"

// DatabaseURL reads DATABASE_URL; MemoryStore gives "" (the in-memory store).
func (r *Reader) DatabaseURL() string {
	v := r.Str("DATABASE_URL", "")
	switch {
	case v == "":
		r.Fail("DATABASE_URL", "required: a postgres:// URL, or %q for the in-memory store of the local stack", MemoryStore)
	case v == MemoryStore:
		return ""
	}
	return v
}

// Str reads a trimmed value, def when unset or blank.
func (r *Reader) Str(name, def string) string {
	if v := strings.TrimSpace(r.getenv(name)); v != "" {
		return v
	}
	return def
}

// Secret reads a required secret. It is not trimmed (a key is bytes) but a
// value of only white space counts as empty, and a published development
// secret is refused outside development (RefuseDevSecret).
func (r *Reader) Secret(name string) string {
	v := r.getenv(name)
	if strings.TrimSpace(v) == "" {
		r.Fail(name, "required and must not be empty or white space")
		return ""
	}
	if v != strings.TrimSpace(v) {
		r.Fail(name, "has leading or trailing white space (a copy-paste slip?)")
	}
	r.RefuseDevSecret(name, v)
	return v
}

// Port reads a TCP port, def when unset.
func (r *Reader) Port(name string, def int) int {
	v := strings.TrimSpace(r.getenv(name))
	if v == "" {
		return def
	}
	p, err := strconv.Atoi(v)
	if err != nil || p < 1 || p > 65535 {
		r.Fail(name, "%q is not a TCP port (1-65535)", v)
	}
	return p
}

// Duration reads a positive time.ParseDuration value, def when unset.
func (r *Reader) Duration(name string, def time.Duration) time.Duration {
	d := r.DurationOrZero(name, def)
	if d == 0 && r.getenv(name) != "" {
		r.Fail(name, "must be positive")
	}
	return d
}

// DurationOrZero is Duration that also accepts 0.
func (r *Reader) DurationOrZero(name string, def time.Duration) time.Duration {
	v := strings.TrimSpace(r.getenv(name))
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		r.Fail(name, "%q is not a duration like 250ms or 30s", v)
		return def
	}
	return d
}

// Bytes reads a size like 1048576, 512KiB or 1MiB, def when unset.
func (r *Reader) Bytes(name string, def int64) int64 {
	v := strings.TrimSpace(r.getenv(name))
	if v == "" {
		return def
	}
	n, err := parseBytes(v)
	if err != nil || n <= 0 {
		r.Fail(name, "%q is not a size like 1048576, 512KiB or 1MiB", v)
		return def
	}
	return n
}

// Level reads a slog level (debug, info, warn, error); info when unset.
func (r *Reader) Level(name string) slog.Level {
	var l slog.Level
	v := strings.TrimSpace(r.getenv(name))
	if v == "" {
		return slog.LevelInfo
	}
	if err := l.UnmarshalText([]byte(v)); err != nil {
		r.Fail(name, "%q is not one of debug, info, warn, error", v)
	}
	return l
}

// OneOf reads one of allowed (case-insensitive), def when unset.
func (r *Reader) OneOf(name, def string, allowed ...string) string {
	v := strings.ToLower(r.Str(name, def))
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	r.Fail(name, "%q is not one of %s", v, strings.Join(allowed, ", "))
	return def
}

// URL reads a base URL (publicurl's one rule: absolute http or https, no
// user info, query or fragment) and returns it without trailing slashes.
// An empty def makes it required.
func (r *Reader) URL(name, def string) string {
	v := r.Str(name, def)
	if v == "" {
		r.Fail(name, "required (an absolute http:// or https:// URL)")
		return ""
	}
	base, err := publicurl.Parse(v)
	if err != nil {
		var pe *publicurl.Error
		reason := "is not a valid base URL"
		if errors.As(err, &pe) {
			reason = pe.Reason
		}
		r.Fail(name, "%s", reason)
		return ""
	}
	return base
}

// Bool reads true or false; unset is false.
func (r *Reader) Bool(name string) bool {
	v := strings.TrimSpace(r.getenv(name))
	if v == "" {
		return false
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		r.Fail(name, "%q is not true or false", v)
	}
	return b
}

var errBadSize = errors.New("bad size")

// parseBytes reads a plain byte count or one with a KiB/MiB/GiB suffix.
func parseBytes(s string) (int64, error) {
	mult := int64(1)
	for suffix, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if strings.HasSuffix(s, suffix) {
			s, mult = strings.TrimSuffix(s, suffix), m
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n > (1<<62)/mult {
		return 0, errBadSize
	}
	return n * mult, nil
}
