package webhooks

import (
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
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
		return nil, &ConfigError{Field: "VerifyQStashConfig.MaxBodyBytes", Reason: "is negative"}
	}
	if config.Verifier == nil {
		return nil, &ConfigError{Field: "VerifyQStashConfig.Verifier", Reason: "is nil"}
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
			claims, _, err := v.verifyRequest(c.Request(), func() string { return expected(c) }, config.MaxBodyBytes)
			if err != nil {
				return refuse(c, err, http.StatusUnauthorized)
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

// VerifyRequest verifies a QStash delivery as net/http receives it: exactly
// one Upstash-Signature header, a body of at most maxBody bytes (read, and
// put back on r for the handler), and the token checked against baseURL +
// the request-target exactly as received (see VerifyQStashConfig.PublicURL;
// baseURL is what ParsePublicURL returns). It returns the verified claims
// and the raw body. Every failure is a *VerificationError, counted and
// logged like Verify's: answer 413 for CheckBodyTooLarge, 401 otherwise.
//
// The body is read last: a declared Content-Length above maxBody is
// refused first (413), then the token's MAC and claims are checked, and
// only a token that passes gets its body read (at most maxBody+1 bytes)
// and compared with the signed hash. A forged, expired or misaddressed
// token costs no body read, so a client dripping a body behind a junk
// signature is answered at once.
func (v *QStashVerifier) VerifyRequest(r *http.Request, baseURL string, maxBody int64) (QStashClaims, []byte, error) {
	return v.verifyRequest(r, func() string { return baseURL + requestTarget(r) }, maxBody)
}

func (v *QStashVerifier) verifyRequest(r *http.Request, url func() string, maxBody int64) (QStashClaims, []byte, error) {
	ctx := r.Context()
	sig, err := signatureHeader(r, HeaderUpstashSignature, sourceQStash)
	if err == nil && r.ContentLength > maxBody {
		err = newVerificationError(sourceQStash, CheckBodyTooLarge, nil)
	}
	var c QStashClaims
	if err == nil {
		c, err = v.verifyToken(sig, url())
	}
	var body []byte
	if err == nil {
		body, err = readBody(r, sourceQStash, maxBody)
	}
	if err == nil {
		c, err = checkBodyHash(c, body)
	}
	if c, err = v.count(ctx, c, err); err != nil {
		return QStashClaims{}, nil, err
	}
	return c, body, nil
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
