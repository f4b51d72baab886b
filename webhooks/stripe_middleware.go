package webhooks

import (
	"net/http"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
)

// HeaderStripeSignature carries Stripe's signature.
const HeaderStripeSignature = "Stripe-Signature"

const stripeEventKey = "webhooks.stripe_event"

// VerifyStripeConfig configures the VerifyStripe middleware.
//
// Put no body-rewriting middleware (Decompress) before this one: the
// signature covers the bytes as received.
type VerifyStripeConfig struct {
	// Skipper defines a function to skip the middleware. Skipped requests
	// are not verified at all. Defaults to middleware.DefaultSkipper.
	Skipper middleware.Skipper
	// Verifier checks the signature. Required.
	Verifier *StripeVerifier
	// MaxBodyBytes caps the body; larger bodies get 413 without being
	// hashed. Defaults to DefaultMaxBodyBytes (1 MiB).
	MaxBodyBytes int64
}

// DefaultVerifyStripeConfig is the default VerifyStripe configuration
// (Verifier must still be set).
var DefaultVerifyStripeConfig = VerifyStripeConfig{
	Skipper:      middleware.DefaultSkipper,
	MaxBodyBytes: DefaultMaxBodyBytes,
}

// VerifyStripe returns a middleware that verifies Stripe webhooks with v.
func VerifyStripe(v *StripeVerifier) (echo.MiddlewareFunc, error) {
	c := DefaultVerifyStripeConfig
	c.Verifier = v
	return c.ToMiddleware()
}

// ToMiddleware validates the configuration and returns the middleware.
//
// Per request: a body above MaxBodyBytes → 413; any verification failure
// (header, MAC, timestamp, event without id or type) or an unreadable body
// → 400, the one terse answer Stripe's docs use, as problem+json without
// detail. Stripe retries non-2xx answers for up to 3 days. On success the
// raw body is put back on the request and the event is available through
// StripeEventFrom. Deduplication on the event id is the handler's job.
func (config VerifyStripeConfig) ToMiddleware() (echo.MiddlewareFunc, error) {
	if config.Skipper == nil {
		config.Skipper = DefaultVerifyStripeConfig.Skipper
	}
	if config.MaxBodyBytes == 0 {
		config.MaxBodyBytes = DefaultVerifyStripeConfig.MaxBodyBytes
	}
	if config.MaxBodyBytes < 0 {
		return nil, &ConfigError{Field: "VerifyStripeConfig.MaxBodyBytes", Reason: "is negative"}
	}
	if config.Verifier == nil {
		return nil, &ConfigError{Field: "VerifyStripeConfig.Verifier", Reason: "is nil"}
	}
	v := config.Verifier

	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if config.Skipper(c) {
				return next(c)
			}
			req := c.Request()
			sig, body, err := readSigned(req, HeaderStripeSignature, sourceStripe, config.MaxBodyBytes)
			if err != nil {
				v.fail(req.Context(), err)
				return refuse(c, err, http.StatusBadRequest)
			}
			ev, err := v.Verify(req.Context(), body, sig)
			if err != nil {
				return refuse(c, err, http.StatusBadRequest)
			}
			c.Set(stripeEventKey, ev)
			return next(c)
		}
	}, nil
}

// StripeEventFrom returns the event VerifyStripe verified for this
// request.
func StripeEventFrom(c echo.Context) (StripeEvent, bool) {
	ev, ok := c.Get(stripeEventKey).(StripeEvent)
	return ev, ok
}
