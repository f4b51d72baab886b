// Package redisconn opens the one Redis client a jobworker process uses.
//
// Open accepts the URL forms a deployment meets in practice and returns a
// redis.UniversalClient, so the rest of the code does not care whether it
// talks to one node or a cluster:
//
//	redis://[user:password@]host:port[/db]         plain TCP
//	rediss://[user:password@]host:port[/db]        TLS (Upstash, ElastiCache in-transit encryption)
//	redis+cluster://[user:password@]host:port?addr=host:port&addr=...
//	rediss+cluster://...                           cluster over TLS
//
// Every command runs under a deadline (Config.Timeout) even when the caller's
// context has none: a hung Redis must turn into a prompt error that the
// failure policy of each caller (fail open, fail closed, retry later) can act
// on, not into a request that hangs until the client gives up.
package redisconn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultTimeout is the per-call deadline when Config.Timeout is zero. It is
// well under the origin guide's 3–5 s ceiling: a Redis that has not answered
// in this time is treated as unavailable.
const DefaultTimeout = 250 * time.Millisecond

// ErrInvalidURL reports a REDIS_URL that cannot be used. Its message never
// contains the URL, which may hold a password.
var ErrInvalidURL = errors.New("invalid Redis URL")

// Config says how to reach Redis.
type Config struct {
	// URL in one of the forms listed in the package doc. Required.
	URL string
	// Timeout bounds every command, including dial and retries.
	// Defaults to DefaultTimeout.
	Timeout time.Duration
	// PoolSize is the connection pool size per node. Defaults to go-redis's
	// default (10 per CPU).
	PoolSize int
}

// Validate checks the URL without connecting.
func (c Config) Validate() error {
	_, err := c.options()
	return err
}

// Open builds the client. It does not connect; use Ping for readiness.
func Open(cfg Config) (redis.UniversalClient, error) {
	opts, err := cfg.options()
	if err != nil {
		return nil, err
	}
	c := redis.NewUniversalClient(opts)
	c.AddHook(deadlineHook{timeout: opts.ReadTimeout})
	return c, nil
}

// Ping reports whether Redis answers within the client's deadline.
func Ping(ctx context.Context, c redis.UniversalClient) error {
	return c.Ping(ctx).Err()
}

func (c Config) options() (*redis.UniversalOptions, error) {
	if strings.TrimSpace(c.URL) == "" {
		return nil, fmt.Errorf("%w: empty", ErrInvalidURL)
	}
	if c.Timeout < 0 {
		return nil, fmt.Errorf("redis timeout must not be negative")
	}
	timeout := c.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		// url.Parse errors quote the input; keep the password out of logs.
		return nil, fmt.Errorf("%w: not a URL", ErrInvalidURL)
	}
	var opts redis.UniversalOptions
	switch u.Scheme {
	case "redis", "rediss":
		o, err := redis.ParseURL(c.URL)
		if err != nil {
			return nil, fmt.Errorf("%w: %s", ErrInvalidURL, scrub(err, c.URL))
		}
		opts = redis.UniversalOptions{
			Addrs: []string{o.Addr}, DB: o.DB, Username: o.Username, Password: o.Password,
			TLSConfig: o.TLSConfig, ClientName: o.ClientName,
		}
	case "redis+cluster", "rediss+cluster":
		plain := strings.TrimSuffix(u.Scheme, "+cluster") + c.URL[len(u.Scheme):]
		o, err := redis.ParseClusterURL(plain)
		if err != nil {
			return nil, fmt.Errorf("%w: %s", ErrInvalidURL, scrub(err, c.URL))
		}
		opts = redis.UniversalOptions{
			Addrs: o.Addrs, Username: o.Username, Password: o.Password,
			TLSConfig: o.TLSConfig, ClientName: o.ClientName, IsClusterMode: true,
		}
	default:
		return nil, fmt.Errorf("%w: scheme must be redis, rediss, redis+cluster or rediss+cluster", ErrInvalidURL)
	}
	for _, a := range opts.Addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("%w: address needs host:port", ErrInvalidURL)
		}
	}
	opts.DialTimeout = timeout
	opts.ReadTimeout = timeout
	opts.WriteTimeout = timeout
	opts.ContextTimeoutEnabled = true
	opts.PoolSize = c.PoolSize
	// One retry at most: the deadline hook bounds the total anyway, and a
	// retry storm against a sick Redis helps nobody.
	opts.MaxRetries = 1
	return &opts, nil
}

// scrub removes the URL (and so any password) from a parse error message.
func scrub(err error, raw string) string {
	msg := strings.ReplaceAll(err.Error(), raw, "<url>")
	if u, perr := url.Parse(raw); perr == nil && u.User != nil {
		if p, ok := u.User.Password(); ok && p != "" {
			msg = strings.ReplaceAll(msg, p, "<redacted>")
		}
	}
	return msg
}

// deadlineHook gives every command and pipeline a deadline when the caller's
// context has none (or a later one).
type deadlineHook struct{ timeout time.Duration }

func (h deadlineHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h deadlineHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		ctx, cancel := h.bound(ctx)
		defer cancel()
		return next(ctx, cmd)
	}
}

func (h deadlineHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		ctx, cancel := h.bound(ctx)
		defer cancel()
		return next(ctx, cmds)
	}
}

func (h deadlineHook) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if d, ok := ctx.Deadline(); ok && time.Until(d) <= h.timeout {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, h.timeout)
}
