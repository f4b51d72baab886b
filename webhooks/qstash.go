package webhooks

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"github.com/prometheus/client_golang/prometheus"
)

const sourceQStash = "qstash"

// QStashIssuer is the iss claim of every QStash token.
const QStashIssuer = "Upstash"

// DefaultQStashSkew is the clock skew allowed on exp, nbf and iat. QStash
// tokens live 5 minutes and the SDKs allow 0 s; a few seconds absorbs clock
// drift between QStash and the worker without widening the replay window
// much.
const DefaultQStashSkew = 5 * time.Second

// MaxQStashSkew bounds QStashConfig.Skew: a skew as long as the token's
// lifetime would make exp meaningless.
const MaxQStashSkew = 5 * time.Minute

// QStashConfig configures a QStashVerifier.
type QStashConfig struct {
	// CurrentSigningKey is QSTASH_CURRENT_SIGNING_KEY (the whole "sig_…"
	// string; its UTF-8 bytes are the HMAC key). Required.
	CurrentSigningKey string
	// NextSigningKey is QSTASH_NEXT_SIGNING_KEY. Required: after QStash
	// rolls its keys it signs with this one, and an unset next key is how
	// the official Go SDK came to accept tokens forged with an empty key.
	NextSigningKey string
	// Skew is the clock tolerance applied to exp, nbf and iat. Defaults to
	// DefaultQStashSkew (5 s); at most MaxQStashSkew.
	Skew time.Duration
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
	// Logger receives one line per failed verification (source and check
	// only, never the token, URL or body). Defaults to discarding.
	Logger *slog.Logger
	// Registerer receives the jobworker_webhook_* collectors. Defaults to
	// nil: no metrics are registered.
	Registerer prometheus.Registerer
}

// Validate reports a configuration that must stop start-up. Messages name
// the field, never its value.
func (c QStashConfig) Validate() error {
	if err := validateSecret("QStashConfig.CurrentSigningKey", c.CurrentSigningKey); err != nil {
		return err
	}
	if err := validateSecret("QStashConfig.NextSigningKey", c.NextSigningKey); err != nil {
		return err
	}
	if c.Skew < 0 || c.Skew > MaxQStashSkew {
		return fmt.Errorf("webhooks: QStashConfig.Skew must be between 0 and %s", MaxQStashSkew)
	}
	return nil
}

func validateSecret(field, s string) error {
	if strings.TrimSpace(s) == "" {
		return fmt.Errorf("webhooks: %s is empty", field)
	}
	// A trailing newline from a secret file or a pasted space would make
	// every real signature fail; say so at start-up, not at 3 a.m.
	if strings.TrimSpace(s) != s {
		return fmt.Errorf("webhooks: %s has leading or trailing whitespace", field)
	}
	return nil
}

// QStashClaims are the verified facts of a QStash delivery.
type QStashClaims struct {
	// Subject is the URL QStash called (equal to the URL passed to Verify).
	Subject string
	// ID is the token's jti, unique per delivery attempt; a replay cache
	// keyed on it for Expires+skew stops a captured request being replayed.
	// (Upstash-Message-Id, the dedupe key across retries, is not signed.)
	ID string
	// IssuedAt and Expires are iat and exp.
	IssuedAt, Expires time.Time
	// Key is "current" or "next": the signing key whose MAC matched.
	Key string
}

// QStashVerifier verifies Upstash-Signature JWTs. It is safe for concurrent
// use.
type QStashVerifier struct {
	current, next []byte
	skew          time.Duration
	now           func() time.Time
	log           *slog.Logger
	m             *metrics
}

var qstashChecks = []string{
	CheckMissing, CheckMalformed, CheckAlg, CheckSignature, CheckIssuer, CheckSubject,
	CheckExpired, CheckNotYetValid, CheckIssuedInFuture, CheckBodyHash, CheckClaims,
	CheckBodyTooLarge, CheckBodyRead,
}

// NewQStashVerifier validates cfg and builds a verifier. An empty or
// whitespace key is an error, never a disabled check.
func NewQStashVerifier(cfg QStashConfig) (*QStashVerifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("webhooks: registering metrics: %w", err)
	}
	m.initResults(sourceQStash, qstashChecks...)
	v := &QStashVerifier{
		current: []byte(cfg.CurrentSigningKey),
		next:    []byte(cfg.NextSigningKey),
		skew:    cfg.Skew,
		now:     cfg.Now,
		log:     discardIfNil(cfg.Logger),
		m:       m,
	}
	if v.skew == 0 {
		v.skew = DefaultQStashSkew
	}
	if v.now == nil {
		v.now = time.Now
	}
	return v, nil
}

var requiredQStashClaims = []string{
	jwt.IssuerKey, jwt.SubjectKey, jwt.ExpirationKey, jwt.NotBeforeKey,
	jwt.IssuedAtKey, jwt.JwtIDKey, "body",
}

// Verify checks signature (the Upstash-Signature header value) against url,
// the exact public URL QStash was asked to call (scheme, host, port, path
// and query; see VerifyQStashConfig for building it behind proxies), and
// body, the raw request bytes. It returns the verified claims, or a
// *VerificationError wrapping ErrInvalidSignature that names the first
// failed check.
//
// Order: structure and alg; the MAC decides current vs next key; then the
// claims are checked once, with that key's token (so an expired token is
// reported as expired, not as a bad signature).
func (v *QStashVerifier) Verify(ctx context.Context, signature, url string, body []byte) (QStashClaims, error) {
	c, err := v.verify(signature, url, body)
	if err != nil {
		v.fail(ctx, err)
		return QStashClaims{}, err
	}
	v.m.verifications.WithLabelValues(sourceQStash, "ok").Inc()
	v.m.keyUsed.WithLabelValues(sourceQStash, c.Key).Inc()
	return c, nil
}

func (v *QStashVerifier) verify(signature, url string, body []byte) (QStashClaims, error) {
	fail := func(check string, cause error) (QStashClaims, error) {
		return QStashClaims{}, newVerificationError(sourceQStash, check, cause)
	}
	tok, err := ParseQStashSignature(signature)
	if err != nil {
		return QStashClaims{}, err
	}

	// jwx verifies with HS256 (pinned above and here) and tries current,
	// then next; keyUsed tells which one matched.
	var keyUsed []byte
	payload, err := jws.Verify([]byte(signature),
		jws.WithKey(jwa.HS256, v.current),
		jws.WithKey(jwa.HS256, v.next),
		jws.WithKeyUsed(&keyUsed))
	if err != nil {
		return fail(CheckSignature, err)
	}
	if !bytes.Equal(payload, tok.Payload) { // cannot happen; refuse rather than guess
		return fail(CheckMalformed, nil)
	}
	key := "next"
	if bytes.Equal(keyUsed, v.current) {
		key = "current"
	}

	claims := jwt.New()
	if err := json.Unmarshal(payload, claims); err != nil {
		return fail(CheckClaims, err)
	}
	required := make([]jwt.ValidateOption, 0, len(requiredQStashClaims)+1)
	required = append(required, jwt.WithResetValidators(true))
	for _, name := range requiredQStashClaims {
		required = append(required, jwt.WithRequiredClaim(name))
	}
	if err := jwt.Validate(claims, required...); err != nil {
		return fail(CheckClaims, err)
	}
	// jwx skips exp/iat checks when the claim is 0; QStash never sends 0
	// there (nbf 0 is normal and allowed).
	if claims.Expiration().Unix() <= 0 || claims.IssuedAt().Unix() <= 0 {
		return fail(CheckClaims, nil)
	}
	bodyClaim, ok := claimString(claims, "body")
	if !ok {
		return fail(CheckClaims, nil)
	}

	if claims.Issuer() != QStashIssuer {
		return fail(CheckIssuer, nil)
	}
	// Exact string match: a trailing slash, another scheme or host, or a
	// different query string is another endpoint.
	if url == "" || claims.Subject() != url {
		return fail(CheckSubject, nil)
	}

	// exp, then nbf, then iat, so the most specific reason is named when
	// several fail (QStash's nbf equals iat or is 0).
	if err := jwt.Validate(claims,
		jwt.WithResetValidators(true),
		jwt.WithValidator(jwt.IsExpirationValid()),
		jwt.WithValidator(jwt.IsNbfValid()),
		jwt.WithValidator(jwt.IsIssuedAtValid()),
		jwt.WithClock(jwt.ClockFunc(v.now)),
		jwt.WithAcceptableSkew(v.skew)); err != nil {
		switch {
		case errors.Is(err, jwt.ErrTokenExpired()):
			return fail(CheckExpired, err)
		case errors.Is(err, jwt.ErrTokenNotYetValid()):
			return fail(CheckNotYetValid, err)
		case errors.Is(err, jwt.ErrInvalidIssuedAt()):
			return fail(CheckIssuedInFuture, err)
		default:
			return fail(CheckClaims, err)
		}
	}

	// QStash pads the body claim, SDK-made tokens do not: compare without
	// trailing '='. The hash is over the raw bytes, never a re-encoding.
	sum := sha256.Sum256(body)
	var want [43]byte // RawURLEncoding of 32 bytes
	base64.RawURLEncoding.Encode(want[:], sum[:])
	got := strings.TrimRight(bodyClaim, "=")
	if subtle.ConstantTimeCompare(want[:], []byte(got)) != 1 {
		return fail(CheckBodyHash, nil)
	}

	return QStashClaims{
		Subject:  claims.Subject(),
		ID:       claims.JwtID(),
		IssuedAt: claims.IssuedAt(),
		Expires:  claims.Expiration(),
		Key:      key,
	}, nil
}

func claimString(t jwt.Token, name string) (string, bool) {
	raw, ok := t.Get(name)
	if !ok {
		return "", false
	}
	s, ok := raw.(string)
	return s, ok
}

// fail counts and logs a failed verification. Only the source and check are
// logged: the token, URL and body may carry customer data, and a failure
// log must not become a way to read them.
func (v *QStashVerifier) fail(ctx context.Context, err error) {
	check := CheckOf(err)
	if check == "" {
		check = CheckMalformed
	}
	v.m.verifications.WithLabelValues(sourceQStash, check).Inc()
	v.log.LogAttrs(ctx, slog.LevelWarn, "webhook verification failed",
		slog.String("source", sourceQStash), slog.String("check", check))
}
