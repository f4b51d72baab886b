package limits

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/digis/jobworker/internal/problem"
)

// Problem types of the IETF rate-limit headers draft.
const (
	ProblemQuotaExceeded   = "https://iana.org/assignments/http-problem-types#quota-exceeded"
	ProblemReducedCapacity = "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity"
)

// MiddlewareConfig configures the Echo rate-limit middleware.
type MiddlewareConfig struct {
	// Skipper skips the middleware for a request. Defaults to
	// middleware.DefaultSkipper (never skip).
	Skipper middleware.Skipper
	// Limiter decides. Required.
	Limiter *Limiter
	// Bucket is the bucket of the routes this middleware guards. Defaults to
	// DefaultBucket ("default").
	Bucket string
	// BucketFunc, when set, picks the bucket per request instead (e.g.
	// BucketByRoute); an empty answer means Bucket.
	BucketFunc func(c echo.Context) string
	// IPExtractor finds the client address of anonymous requests. Required
	// unless IdentifierExtractor is set: there is deliberately no default
	// (see IPSource).
	IPExtractor *IPExtractor
	// UserID returns the authenticated user's id, or "" for anonymous
	// requests. When non-empty it is the identity instead of the IP, so users
	// behind one NAT do not share a bucket. The auth middleware must run
	// before this one. Defaults to nil: IP only.
	UserID func(c echo.Context) string
	// IdentifierExtractor, when set, replaces UserID and IPExtractor
	// altogether. The identifier is hashed before it reaches Redis.
	IdentifierExtractor func(c echo.Context) (string, error)
	// DenyHandler answers a refused request; the rate-limit headers are
	// already set. Defaults to DefaultDenyHandler: 429 (503 when Redis could
	// not decide or the limiter is overloaded) with Retry-After and a
	// problem+json body.
	DenyHandler func(c echo.Context, res Result) error
	// ErrorHandler answers when no identity can be found or the limiter
	// reports misuse (unknown bucket). Defaults to a 500 problem+json.
	ErrorHandler func(c echo.Context, err error) error
}

// DefaultMiddlewareConfig holds the defaults; Limiter and IPExtractor must
// still be set.
var DefaultMiddlewareConfig = MiddlewareConfig{
	Skipper:      middleware.DefaultSkipper,
	Bucket:       DefaultBucket,
	DenyHandler:  DefaultDenyHandler,
	ErrorHandler: defaultErrorHandler,
}

// Middleware guards routes with one bucket, identifying clients by ip.
func Middleware(l *Limiter, bucket string, ip *IPExtractor) (echo.MiddlewareFunc, error) {
	cfg := DefaultMiddlewareConfig
	cfg.Limiter, cfg.Bucket, cfg.IPExtractor = l, bucket, ip
	return cfg.ToMiddleware()
}

// ToMiddleware validates the config and builds the middleware.
func (config MiddlewareConfig) ToMiddleware() (echo.MiddlewareFunc, error) {
	if config.Skipper == nil {
		config.Skipper = DefaultMiddlewareConfig.Skipper
	}
	if config.Bucket == "" {
		config.Bucket = DefaultMiddlewareConfig.Bucket
	}
	if config.DenyHandler == nil {
		config.DenyHandler = DefaultMiddlewareConfig.DenyHandler
	}
	if config.ErrorHandler == nil {
		config.ErrorHandler = DefaultMiddlewareConfig.ErrorHandler
	}
	if config.Limiter == nil {
		return nil, configErr("Limiter", "", "the middleware needs a Limiter")
	}
	if _, ok := config.Limiter.Policy(config.Bucket); !ok {
		return nil, configErr("Bucket", config.Bucket, "middleware bucket %q is not configured", config.Bucket)
	}
	if config.IdentifierExtractor == nil && config.IPExtractor == nil {
		return nil, configErr("IPExtractor", "", "the middleware needs an IPExtractor (no default: say how clients reach the service)")
	}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if config.Skipper(c) {
				return next(c)
			}
			bucket := config.Bucket
			if config.BucketFunc != nil {
				if b := config.BucketFunc(c); b != "" {
					bucket = b
				}
			}
			id, err := config.identity(c)
			if err != nil {
				return config.ErrorHandler(c, err)
			}
			res, err := config.Limiter.Allow(c.Request().Context(), bucket, id)
			if err != nil {
				return config.ErrorHandler(c, err)
			}
			WriteHeaders(c.Response().Header(), res)
			if !res.Allowed {
				return config.DenyHandler(c, res)
			}
			return next(c)
		}
	}, nil
}

func (config *MiddlewareConfig) identity(c echo.Context) (string, error) {
	if config.IdentifierExtractor != nil {
		id, err := config.IdentifierExtractor(c)
		if err == nil && id == "" {
			err = ErrNoIdentity
		}
		return id, err
	}
	if config.UserID != nil {
		if uid := config.UserID(c); uid != "" {
			return "user:" + uid, nil
		}
	}
	return config.IPExtractor.Identity(c.Request())
}

// BucketByRoute maps Echo route paths (c.Path(), e.g. "/tips/quick") to
// buckets, for one middleware guarding many routes. Unlisted routes get "",
// which means the config's Bucket.
func BucketByRoute(routes map[string]string) func(echo.Context) string {
	return func(c echo.Context) string { return routes[c.Path()] }
}

// quotaProblem is an RFC 9457 body with the draft's violated-policies member.
type quotaProblem struct {
	problem.Details
	ViolatedPolicies []string `json:"violated-policies,omitempty"`
}

// DefaultDenyHandler answers 429 Too Many Requests with a quota-exceeded
// problem when the client used its quota (ReasonDenied, ReasonBlockedLocally,
// and the outage limiter's ReasonDegradedLocal), or 503 Service Unavailable
// with a temporary-reduced-capacity problem when this service could not
// decide (ReasonDegradedClosed: Redis unavailable; ReasonOverloaded: too
// many decisions waiting): the client did nothing wrong and should come
// back after Retry-After. The headers, including Retry-After, are already
// set.
func DefaultDenyHandler(c echo.Context, res Result) error {
	p := quotaProblem{Details: problem.New(http.StatusTooManyRequests, "rate limit exceeded; retry after the Retry-After delay")}
	p.Type = ProblemQuotaExceeded
	p.ViolatedPolicies = []string{res.Bucket}
	if res.Reason.Unavailable() {
		p = quotaProblem{Details: problem.New(http.StatusServiceUnavailable, "rate limiting is temporarily unavailable; retry after the Retry-After delay")}
		p.Type = ProblemReducedCapacity
	}
	body, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return c.Blob(p.Status, problem.ContentType, body)
}

func defaultErrorHandler(c echo.Context, err error) error {
	if errors.Is(err, context.Canceled) {
		return err // the client left; nobody reads an answer
	}
	// The error text stays in the server: it may name configuration.
	c.Logger().Error(err)
	return problem.Respond(c, http.StatusInternalServerError, "rate limiting failed")
}
