package webhooks

import (
	"errors"
)

// Sentinel errors. Every verification failure is a *VerificationError that
// wraps one of them, so callers branch with errors.Is and log the Check.
var (
	// ErrInvalidSignature means the request is not proven to come from the
	// sender: the signature header is missing, malformed, signed with an
	// unknown key, expired, for another URL, or over another body.
	ErrInvalidSignature = errors.New("webhooks: invalid signature")

	// ErrInvalidEvent means the signature is valid but the signed payload is
	// not an event this package can hand on (Stripe: not JSON, no id, no
	// type).
	ErrInvalidEvent = errors.New("webhooks: invalid event")

	// ErrBodyTooLarge is returned by ReadBody when the body exceeds its cap.
	ErrBodyTooLarge = errors.New("webhooks: body too large")

	// ErrInvalidConfig wraps every *ConfigError.
	ErrInvalidConfig = errors.New("webhooks: invalid config")
)

// ConfigError names the configuration field that is wrong, never its value
// (most are secrets). It matches ErrInvalidConfig with errors.Is.
type ConfigError struct {
	Field  string // e.g. "QStashConfig.NextSigningKey", "StripeConfig.Secrets[1]"
	Reason string
}

func (e *ConfigError) Error() string { return "webhooks: " + e.Field + " " + e.Reason }

// Is makes errors.Is(err, ErrInvalidConfig) true.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// Checks named by VerificationError.Check and by the result label of
// jobworker_webhook_verifications_total. They are stable: dashboards and
// alerts may match on them.
const (
	CheckMissing        = "missing"          // no signature header
	CheckMalformed      = "malformed"        // header is not the expected shape
	CheckAlg            = "alg"              // QStash: header alg is not HS256
	CheckScheme         = "scheme"           // Stripe: no v1 signature in the header
	CheckSignature      = "signature"        // no configured key or secret produced the MAC
	CheckIssuer         = "issuer"           // QStash: iss is not "Upstash"
	CheckSubject        = "subject"          // QStash: sub is not the endpoint's public URL
	CheckExpired        = "expired"          // QStash exp passed / Stripe t older than the tolerance
	CheckNotYetValid    = "not_yet_valid"    // QStash: nbf in the future beyond the skew
	CheckIssuedInFuture = "issued_in_future" // QStash iat / Stripe t in the future beyond skew/tolerance
	CheckBodyHash       = "body_hash"        // QStash: body claim does not hash the received bytes
	CheckClaims         = "claims"           // QStash: a required claim is missing or mistyped
	CheckPayload        = "payload"          // Stripe: signed payload is not a JSON event
	CheckEventID        = "event_id"         // Stripe: event has no id (nothing to dedupe on)
	CheckEventType      = "event_type"       // Stripe: event has no type (nothing to route on)
	CheckBodyTooLarge   = "body_too_large"   // middleware: body above the cap (413)
	CheckBodyRead       = "body_read"        // middleware: the body could not be read
)

// VerificationError names the check that failed. Its message carries the
// source and the check only: never a key, a token, a header or a payload, so
// it is safe to log. It must still not be sent to the client: the check tells
// a forger how far they got.
type VerificationError struct {
	// Source is "qstash" or "stripe".
	Source string
	// Check is one of the Check* constants.
	Check string

	sentinel error // ErrInvalidSignature or ErrInvalidEvent
	cause    error // library error, kept for errors.As in tests; never printed
}

func (e *VerificationError) Error() string {
	return e.sentinel.Error() + " (" + e.Source + ": " + e.Check + ")"
}

// Unwrap lets errors.Is match the sentinel (and the underlying library
// error, when there is one).
func (e *VerificationError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.sentinel}
	}
	return []error{e.sentinel, e.cause}
}

func newVerificationError(source, check string, cause error) *VerificationError {
	sentinel := ErrInvalidSignature
	switch check {
	case CheckPayload, CheckEventID, CheckEventType:
		sentinel = ErrInvalidEvent
	}
	return &VerificationError{Source: source, Check: check, sentinel: sentinel, cause: cause}
}

// CheckOf returns the Check of a *VerificationError in err's chain, or "" if
// there is none. Handy for log fields.
func CheckOf(err error) string {
	var ve *VerificationError
	if errors.As(err, &ve) {
		return ve.Check
	}
	return ""
}
