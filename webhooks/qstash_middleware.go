package webhooks

import (
	"errors"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/digis/jobworker/internal/problem"
)

// HeaderUpstashSignature carries the QStash JWT.
const HeaderUpstashSignature = "Upstash-Signature"

const qstashClaimsKey = "webhooks.qstash_claims"

// VerifyQStashConfig configures the VerifyQStash middleware.
//
// Security: the URL checked against the token's sub claim is built from
// PublicURL, never from the Host or X-Forwarded-* headers, because behind
// a load balancer or TLS proxy the request the worker sees is not the URL
// QStash called, and forwarded headers are attacker-controlled. Set
// PublicURL to the base QStash is given when jobs are published (the same
// setting the publisher uses), e.g. "https://worker.example.com".
//
// Put no body-rewriting middleware (Decompress, BodyDump that alters the
// stream) before this one: the signature covers the bytes as received.
type VerifyQStashConfig struct {
	// Skipper defines a function to skip the middleware. Skipped requests
	// are not verified at all. Defaults to middleware.DefaultSkipper.
	Skipper middleware.Skipper
	// Verifier checks the token. Required.
	Verifier *QStashVerifier
	// PublicURL is the scheme://host[:port][/base] QStash calls this
	// worker at; the request-target (path and query exactly as received)
	// is appended to it. See ParsePublicURL. Required unless ExpectedURL
	// is set.
	PublicURL string
	// ExpectedURL, if set, returns the exact URL QStash was asked to call
	// for this request, replacing PublicURL + request-target (for path
	// rewrites the default cannot express). Defaults to nil.
	ExpectedURL func(c echo.Context) string
	// MaxBodyBytes caps the body; larger bodies get 413 without being
	// hashed. Defaults to DefaultMaxBodyBytes (1 MiB). Raise it if jobs
	// carry bigger payloads (QStash's paid plans allow up to 10–50 MB).
	MaxBodyBytes int64
}

// DefaultVerifyQStashConfig is the default VerifyQStash configuration
// (Verifier and PublicURL must still be set).
var DefaultVerifyQStashConfig = VerifyQStashConfig{
	Skipper:      middleware.DefaultSkipper,
	MaxBodyBytes: DefaultMaxBodyBytes,
}

// VerifyQStash returns a middleware that verifies QStash deliveries
// against publicURL + request-target. See VerifyQStashConfig.
func VerifyQStash(v *QStashVerifier, publicURL string) (echo.MiddlewareFunc, error) {
	c := DefaultVerifyQStashConfig
	c.Verifier = v
	c.PublicURL = publicURL
	return c.ToMiddleware()
}

// ToMiddleware validates the configuration and returns the middleware.
//
// Per request: a missing or repeated Upstash-Signature header → 401; a
// body above MaxBodyBytes → 413; an unreadable body → 400; a failed
// verification → 401. All answers are application/problem+json without
// detail (the failed check goes to the verifier's log and metrics only).
// On success the raw body is put back on the request for the handler and
// the claims are available through QStashClaimsFrom.
//
// 401 makes QStash retry and then dead-letter the message, so a forgery
// never runs and a misconfiguration (wrong key, wrong PublicURL) shows up
// in the DLQ instead of silently dropping work.
func (config VerifyQStashConfig) ToMiddleware() (echo.MiddlewareFunc, error) {
	if config.Skipper == nil {
		config.Skipper = DefaultVerifyQStashConfig.Skipper
	}
	if config.MaxBodyBytes == 0 {
		config.MaxBodyBytes = DefaultVerifyQStashConfig.MaxBodyBytes
	}
	if config.MaxBodyBytes < 0 {
		return nil, errors.New("webhooks: VerifyQStashConfig.MaxBodyBytes is negative")
	}
	if config.Verifier == nil {
		return nil, errors.New("webhooks: VerifyQStashConfig.Verifier is nil")
	}
	expected := config.ExpectedURL
	if expected == nil {
		base, err := ParsePublicURL(config.PublicURL)
		if err != nil {
			return nil, err
		}
		expected = func(c echo.Context) string { return base + requestTarget(c.Request()) }
	}
	v := config.Verifier

	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if config.Skipper(c) {
				return next(c)
			}
			sig, body, ok, err := signedRequest(c, HeaderUpstashSignature, sourceQStash,
				config.MaxBodyBytes, http.StatusUnauthorized, v.fail)
			if !ok {
				return err
			}
			claims, err := v.Verify(c.Request().Context(), sig, expected(c), body)
			if err != nil {
				return problem.Respond(c, http.StatusUnauthorized, "")
			}
			c.Set(qstashClaimsKey, claims)
			return next(c)
		}
	}, nil
}

// QStashClaimsFrom returns the claims VerifyQStash verified for this
// request.
func QStashClaimsFrom(c echo.Context) (QStashClaims, bool) {
	claims, ok := c.Get(qstashClaimsKey).(QStashClaims)
	return claims, ok
}

// requestTarget is the path and query exactly as the client sent them
// (RequestURI), so an encoded path or an empty "?" compares as QStash
// signed it. Absolute-form targets fall back to the parsed URL.
func requestTarget(r *http.Request) string {
	if strings.HasPrefix(r.RequestURI, "/") {
		return r.RequestURI
	}
	return r.URL.RequestURI()
}
