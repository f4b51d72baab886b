// Package config reads the environment into typed, validated settings for
// the jobworker binaries.
//
// Variable names follow the ones the Upstash and Stripe SDKs already use
// (REDIS_URL, QSTASH_TOKEN, QSTASH_CURRENT_SIGNING_KEY, ...). Loading stops at
// the first bad value and returns an *Error naming the variable, so a
// misconfigured process exits with one clear line. Secret values are never
// part of an error message.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/digis/jobworker/internal/redisconn"
)

// Error is a bad or missing configuration value.
type Error struct {
	Var    string // the environment variable
	Reason string // what is wrong, without the value if it may be secret
}

func (e *Error) Error() string { return "config: " + e.Var + ": " + e.Reason }

// Default listen ports when PORT is unset.
const (
	DefaultAPIPort    = 3000
	DefaultWorkerPort = 3001
)

// Common holds what both binaries read.
type Common struct {
	// Port to listen on (PORT). Defaults per binary: api 3000, worker 3001.
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
}

// Getenv looks up one variable; os.Getenv fits.
type Getenv func(string) string

// reader keeps the first error so loaders read straight through.
type reader struct {
	getenv Getenv
	err    error
}

func (r *reader) fail(name, format string, args ...any) {
	if r.err == nil {
		r.err = &Error{Var: name, Reason: fmt.Sprintf(format, args...)}
	}
}

func (r *reader) common(defaultPort int) Common {
	c := Common{
		Port:            r.port("PORT", defaultPort),
		KeyPrefix:       r.str("REDIS_KEY_PREFIX", ""),
		RequestTimeout:  r.duration("REQUEST_TIMEOUT", 30*time.Second),
		ShutdownTimeout: r.duration("SHUTDOWN_TIMEOUT", 25*time.Second),
		DrainDelay:      r.durationZero("SHUTDOWN_DRAIN_DELAY", 0),
		BodyLimit:       r.bytes("BODY_LIMIT", 1<<20),
		LogLevel:        r.level("LOG_LEVEL"),
		LogFormat:       r.oneOf("LOG_FORMAT", "json", "json", "text"),
	}
	c.Redis = redisconn.Config{
		URL:     r.getenv("REDIS_URL"),
		Timeout: r.duration("REDIS_TIMEOUT", redisconn.DefaultTimeout),
	}
	if strings.TrimSpace(c.Redis.URL) == "" {
		r.fail("REDIS_URL", "required (redis://, rediss:// or redis+cluster://)")
	} else if err := c.Redis.Validate(); err != nil {
		r.fail("REDIS_URL", "%v", err)
	}
	if strings.ContainsAny(c.KeyPrefix, " \t\r\n") {
		r.fail("REDIS_KEY_PREFIX", "must not contain white space")
	}
	return c
}

// MemoryStore is the DATABASE_URL value that selects the in-memory store.
// It must be asked for by name: an unset DATABASE_URL is an error, so a
// deployment that loses the variable cannot quietly keep money in memory.
const MemoryStore = "memory"

// databaseURL reads DATABASE_URL; MemoryStore gives "" (the in-memory store).
func (r *reader) databaseURL() string {
	v := r.str("DATABASE_URL", "")
	switch {
	case v == "":
		r.fail("DATABASE_URL", "required: a postgres:// URL, or %q for the in-memory store of the local stack", MemoryStore)
	case v == MemoryStore:
		return ""
	}
	return v
}

func (r *reader) str(name, def string) string {
	if v := strings.TrimSpace(r.getenv(name)); v != "" {
		return v
	}
	return def
}

// secret reads a required secret. It is not trimmed (a key is bytes) but a
// value of only white space counts as empty.
func (r *reader) secret(name string) string {
	v := r.getenv(name)
	if strings.TrimSpace(v) == "" {
		r.fail(name, "required and must not be empty or white space")
		return ""
	}
	if v != strings.TrimSpace(v) {
		r.fail(name, "has leading or trailing white space (a copy-paste slip?)")
	}
	return v
}

func (r *reader) secretList(name string) []string {
	raw := r.secret(name)
	if raw == "" {
		return nil
	}
	var out []string
	for i, s := range strings.Split(raw, ",") {
		if strings.TrimSpace(s) == "" {
			r.fail(name, "entry %d of the comma-separated list is empty", i+1)
			return nil
		}
		out = append(out, strings.TrimSpace(s))
	}
	return out
}

func (r *reader) port(name string, def int) int {
	v := strings.TrimSpace(r.getenv(name))
	if v == "" {
		return def
	}
	p, err := strconv.Atoi(v)
	if err != nil || p < 1 || p > 65535 {
		r.fail(name, "%q is not a TCP port (1-65535)", v)
	}
	return p
}

func (r *reader) duration(name string, def time.Duration) time.Duration {
	d := r.durationZero(name, def)
	if d == 0 && r.getenv(name) != "" {
		r.fail(name, "must be positive")
	}
	return d
}

func (r *reader) durationZero(name string, def time.Duration) time.Duration {
	v := strings.TrimSpace(r.getenv(name))
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		r.fail(name, "%q is not a duration like 250ms or 30s", v)
		return def
	}
	return d
}

func (r *reader) bytes(name string, def int64) int64 {
	v := strings.TrimSpace(r.getenv(name))
	if v == "" {
		return def
	}
	n, err := parseBytes(v)
	if err != nil || n <= 0 {
		r.fail(name, "%q is not a size like 1048576, 512KiB or 1MiB", v)
		return def
	}
	return n
}

func (r *reader) level(name string) slog.Level {
	var l slog.Level
	v := strings.TrimSpace(r.getenv(name))
	if v == "" {
		return slog.LevelInfo
	}
	if err := l.UnmarshalText([]byte(v)); err != nil {
		r.fail(name, "%q is not one of debug, info, warn, error", v)
	}
	return l
}

func (r *reader) oneOf(name, def string, allowed ...string) string {
	v := strings.ToLower(r.str(name, def))
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	r.fail(name, "%q is not one of %s", v, strings.Join(allowed, ", "))
	return def
}

// url reads an absolute http(s) URL without a trailing slash. An empty def
// makes it required.
func (r *reader) url(name, def string) string {
	v := r.str(name, def)
	if v == "" {
		r.fail(name, "required (an absolute http:// or https:// URL)")
		return ""
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		r.fail(name, "must be an absolute http:// or https:// URL")
		return ""
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		r.fail(name, "must not carry a query, fragment or credentials")
		return ""
	}
	return strings.TrimRight(v, "/")
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
