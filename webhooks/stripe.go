package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	stripe "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"
)

// StripeAPIVersion is the Stripe API version the bundled stripe-go (v76)
// pins. Create the webhook endpoint with this api_version so events are
// rendered in the shape stripe-go expects; events of other versions are
// still accepted (see StripeVerifier.Verify).
const StripeAPIVersion = stripe.APIVersion

// DefaultStripeTolerance is how far the signature timestamp may be from
// now, in either direction: stripe-go's default, and Standard Webhooks' ±5
// minutes.
const DefaultStripeTolerance = webhook.DefaultTolerance

// StripeConfig configures a StripeVerifier.
type StripeConfig struct {
	// Secrets are the endpoint's signing secrets ("whsec_…"), tried in
	// order: the current one first, then the previous one while a roll is
	// in progress (Stripe keeps signing with the old one for up to 24 h).
	// At least one; an empty or whitespace secret is an error.
	Secrets []string
	// Tolerance bounds |now - t|. Defaults to DefaultStripeTolerance (300 s).
	// Unlike stripe-go, timestamps in the future beyond it are refused too.
	Tolerance time.Duration
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
	// Logger receives one line per failed verification (source and check
	// only) and API-version mismatches. Defaults to discarding.
	Logger *slog.Logger
	// Registerer receives the jobworker_webhook_* and
	// jobworker_stripe_api_version_mismatch_total collectors. Defaults to
	// nil: no metrics are registered.
	Registerer prometheus.Registerer
}

// Validate reports a configuration that must stop start-up. Messages name
// the secret's position, never its value.
func (c StripeConfig) Validate() error {
	if len(c.Secrets) == 0 {
		return &ConfigError{Field: "StripeConfig.Secrets", Reason: "is empty"}
	}
	for i, s := range c.Secrets {
		if err := validateSecret(fmt.Sprintf("StripeConfig.Secrets[%d]", i), s); err != nil {
			return err
		}
	}
	if c.Tolerance < 0 {
		return &ConfigError{Field: "StripeConfig.Tolerance", Reason: "is negative"}
	}
	return nil
}

// StripeEvent is the part of a verified Stripe event this project reads.
// It keeps stripe-go's types out of callers, so a stripe-go major version
// touches this package only. Decode Object (or Payload) yourself for
// anything else.
type StripeEvent struct {
	ID         string
	Type       string
	APIVersion string
	// Account is the connected account for Connect events, else "".
	Account  string
	Livemode bool
	Created  time.Time
	// Object is data.object, raw.
	Object json.RawMessage
	// Payload is the whole verified body, exactly as received.
	Payload []byte
}

// StripeVerifier verifies Stripe-Signature headers. It is safe for
// concurrent use.
type StripeVerifier struct {
	secrets   []string
	tolerance time.Duration
	now       func() time.Time
	log       *slog.Logger
	m         *metrics

	mu           sync.Mutex
	seenVersions map[string]struct{} // api versions already warned about
}

var stripeChecks = []string{
	CheckMissing, CheckMalformed, CheckScheme, CheckSignature, CheckExpired,
	CheckIssuedInFuture, CheckPayload, CheckEventID, CheckEventType,
	CheckBodyTooLarge, CheckBodyRead,
}

// NewStripeVerifier validates cfg and builds a verifier.
func NewStripeVerifier(cfg StripeConfig) (*StripeVerifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("webhooks: registering metrics: %w", err)
	}
	m.initResults(sourceStripe, stripeChecks...)
	v := &StripeVerifier{
		secrets:      append([]string(nil), cfg.Secrets...),
		tolerance:    cfg.Tolerance,
		now:          cfg.Now,
		log:          discardIfNil(cfg.Logger),
		m:            m,
		seenVersions: make(map[string]struct{}),
	}
	if v.tolerance == 0 {
		v.tolerance = DefaultStripeTolerance
	}
	if v.now == nil {
		v.now = time.Now
	}
	return v, nil
}

// Verify checks header (the Stripe-Signature value) over payload, the raw
// body, and returns the event. Failures are *VerificationError wrapping
// ErrInvalidSignature (header, MAC, timestamp) or ErrInvalidEvent (signed
// but not JSON, or without an id or type).
//
// Order: the header is parsed strictly; stripe-go's
// webhook.ConstructEventWithOptions checks the MAC with each secret in turn
// (v1 only) and decodes the event; then the timestamp must be within the
// tolerance on both sides of now; then the event needs an id and a type.
//
// API-version policy: an event whose api_version differs from
// StripeAPIVersion is accepted (IgnoreAPIVersionMismatch), counted in
// jobworker_stripe_api_version_mismatch_total and logged (Warn the first
// time a version is seen, Debug after). That is safe because StripeEvent
// carries only fields that are stable across versions; whoever decodes
// Object must read it leniently.
func (v *StripeVerifier) Verify(ctx context.Context, payload []byte, header string) (StripeEvent, error) {
	ev, key, err := v.verify(payload, header)
	if err != nil {
		v.fail(ctx, err)
		return StripeEvent{}, err
	}
	v.m.verifications.WithLabelValues(sourceStripe, "ok").Inc()
	v.m.keyUsed.WithLabelValues(sourceStripe, strconv.Itoa(key)).Inc()
	if ev.APIVersion != StripeAPIVersion {
		v.apiVersionMismatch(ctx, ev.APIVersion)
	}
	return ev, nil
}

func (v *StripeVerifier) verify(payload []byte, header string) (StripeEvent, int, error) {
	fail := func(check string, cause error) (StripeEvent, int, error) {
		return StripeEvent{}, 0, newVerificationError(sourceStripe, check, cause)
	}
	h, err := parseStripeSignatureHeader(header)
	if err != nil {
		return StripeEvent{}, 0, err
	}

	// MAC first, then time: a forged request is logged as forged even when
	// its timestamp is also stale.
	var (
		ev      stripe.Event
		matched = -1
	)
	opts := webhook.ConstructEventOptions{IgnoreTolerance: true, IgnoreAPIVersionMismatch: true}
	for i, secret := range v.secrets {
		ev, err = webhook.ConstructEventWithOptions(payload, header, secret, opts)
		if errors.Is(err, webhook.ErrNoValidSignature) {
			continue
		}
		if err != nil {
			// Only the JSON decode can fail once the header parsed: the
			// MAC matched, so the payload is Stripe's but not an event.
			if errors.Is(err, webhook.ErrInvalidHeader) || errors.Is(err, webhook.ErrNotSigned) {
				return fail(CheckMalformed, err)
			}
			return fail(CheckPayload, err)
		}
		matched = i
		break
	}
	if matched < 0 {
		return fail(CheckSignature, webhook.ErrNoValidSignature)
	}

	// Compare instants, not a Sub: a Duration saturates at ±292 years, and
	// t may be anything up to 18 digits.
	now := v.now()
	if h.Timestamp.Before(now.Add(-v.tolerance)) {
		return fail(CheckExpired, webhook.ErrTooOld)
	}
	if h.Timestamp.After(now.Add(v.tolerance)) {
		return fail(CheckIssuedInFuture, nil)
	}

	// Dedupe keys on the id: a signed "{}" must not become the event "".
	if ev.ID == "" {
		return fail(CheckEventID, nil)
	}
	if ev.Type == "" {
		return fail(CheckEventType, nil)
	}
	out := StripeEvent{
		ID:         ev.ID,
		Type:       string(ev.Type),
		APIVersion: ev.APIVersion,
		Account:    ev.Account,
		Livemode:   ev.Livemode,
		Created:    time.Unix(ev.Created, 0),
		Payload:    payload,
	}
	if ev.Data != nil {
		out.Object = ev.Data.Raw
	}
	return out, matched, nil
}

// maxWarnedVersions bounds the set of versions warned about (they come
// from signed payloads, so only Stripe chooses them, but memory stays
// bounded regardless).
const maxWarnedVersions = 32

func (v *StripeVerifier) apiVersionMismatch(ctx context.Context, got string) {
	v.m.apiMismatch.Inc()
	v.mu.Lock()
	_, seen := v.seenVersions[got]
	if !seen && len(v.seenVersions) < maxWarnedVersions {
		v.seenVersions[got] = struct{}{}
	}
	v.mu.Unlock()
	level := slog.LevelDebug
	if !seen {
		level = slog.LevelWarn
	}
	v.log.LogAttrs(ctx, level, "stripe event api_version differs from stripe-go's; accepted, read leniently",
		slog.String("source", sourceStripe),
		slog.String("api_version", got),
		slog.String("expected", StripeAPIVersion))
}

func (v *StripeVerifier) fail(ctx context.Context, err error) {
	check := CheckOf(err)
	if check == "" {
		check = CheckMalformed
	}
	v.m.verifications.WithLabelValues(sourceStripe, check).Inc()
	v.log.LogAttrs(ctx, slog.LevelWarn, "webhook verification failed",
		slog.String("source", sourceStripe), slog.String("check", check))
}
