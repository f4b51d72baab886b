package webhooks

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
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
		return &ConfigError{Field: "QStashConfig.Skew", Reason: "must be between 0 and " + MaxQStashSkew.String()}
	}
	return nil
}

func validateSecret(field, s string) error {
	if strings.TrimSpace(s) == "" {
		return &ConfigError{Field: field, Reason: "is empty"}
	}
	// A trailing newline from a secret file or a pasted space would make
	// every real signature fail; say so at start-up, not at 3 a.m.
	if strings.TrimSpace(s) != s {
		return &ConfigError{Field: field, Reason: "has leading or trailing whitespace"}
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
	// BodyHash is the verified body claim: the unpadded base64url SHA-256
	// of the body. It identifies the payload without holding it.
	BodyHash string
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
	// The accepted path's series, resolved once: WithLabelValues hashes
	// the labels and takes a lock on every call.
	ok, byCurrent, byNext prometheus.Counter
}

// The values of QStashClaims.Key.
const (
	keyCurrent = "current"
	keyNext    = "next"
)

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

		ok:        m.verifications.WithLabelValues(sourceQStash, "ok"),
		byCurrent: m.keyUsed.WithLabelValues(sourceQStash, keyCurrent),
		byNext:    m.keyUsed.WithLabelValues(sourceQStash, keyNext),
	}
	if v.skew == 0 {
		v.skew = DefaultQStashSkew
	}
	if v.now == nil {
		v.now = time.Now
	}
	return v, nil
}

// Skew is the clock tolerance the verifier applies: a token is accepted
// until Expires plus Skew, which is how long a replay cache must remember it.
func (v *QStashVerifier) Skew() time.Duration { return v.skew }

// hs256 is jwx's HMAC-SHA256 verifier, used directly on the segments the
// strict parser already decoded: going through jws.Verify and jwt.Parse
// would parse the token twice more and cost several times the MAC itself.
var hs256 = func() jws.Verifier {
	v, err := jws.NewVerifier(jwa.HS256)
	if err != nil {
		panic("webhooks: jwx has no HS256 verifier: " + err.Error())
	}
	return v
}()

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
	c, err := v.verifyToken(signature, url)
	if err == nil {
		c, err = checkBodyHash(c, body)
	}
	return v.count(ctx, c, err)
}

// count records a verification's outcome in the metrics and, when it
// failed, the log.
func (v *QStashVerifier) count(ctx context.Context, c QStashClaims, err error) (QStashClaims, error) {
	if err != nil {
		v.fail(ctx, err)
		return QStashClaims{}, err
	}
	v.ok.Inc()
	if c.Key == keyNext {
		v.byNext.Inc()
	} else {
		v.byCurrent.Inc()
	}
	return c, nil
}

// verifyToken is every check that needs no body: structure and alg, the
// MAC, the required claims, iss, sub and the times. The claims it returns
// carry the body claim as signed in BodyHash, not yet compared with any
// body (checkBodyHash does that); so a forged or expired token is refused
// before a byte of the body is read.
func (v *QStashVerifier) verifyToken(signature, url string) (QStashClaims, error) {
	fail := func(check string, cause error) (QStashClaims, error) {
		return QStashClaims{}, newVerificationError(sourceQStash, check, cause)
	}
	tok, err := parseQStashSignature(signature)
	if err != nil {
		return QStashClaims{}, err
	}

	// The MAC decides the key: current first, then next (rotation).
	input := []byte(tok.SigningInput)
	key := keyCurrent
	if hs256.Verify(input, tok.Signature, v.current) != nil {
		if err := hs256.Verify(input, tok.Signature, v.next); err != nil {
			return fail(CheckSignature, err)
		}
		key = keyNext
	}

	// A small strict decoder (qstash_json.go), not encoding/json: every
	// claim required, of its JSON type, at most once.
	c, err := decodeQStashClaims(tok.Payload)
	if err != nil {
		return fail(CheckClaims, err)
	}
	if c.have != claimAll {
		return fail(CheckClaims, nil)
	}
	// A zero exp or iat would disable those checks in most JWT libraries;
	// QStash never sends one (nbf 0 is normal and allowed).
	if c.Exp <= 0 || c.Iat <= 0 || c.Nbf < 0 {
		return fail(CheckClaims, nil)
	}

	if c.Iss != QStashIssuer {
		return fail(CheckIssuer, nil)
	}
	// Exact string match: a trailing slash, another scheme or host, or a
	// different query string is another endpoint.
	if url == "" || c.Sub != url {
		return fail(CheckSubject, nil)
	}

	// exp, then nbf, then iat, so the most specific reason is named when
	// several fail (QStash's nbf equals iat or is 0). Whole seconds, as
	// NumericDate is.
	now := v.now().Truncate(time.Second)
	exp, iat := time.Unix(c.Exp, 0), time.Unix(c.Iat, 0)
	switch {
	case !now.Before(exp.Add(v.skew)):
		return fail(CheckExpired, nil)
	case c.Nbf != 0 && now.Before(time.Unix(c.Nbf, 0).Add(-v.skew)):
		return fail(CheckNotYetValid, nil)
	case now.Before(iat.Add(-v.skew)):
		return fail(CheckIssuedInFuture, nil)
	}

	return QStashClaims{
		Subject:  c.Sub,
		ID:       c.Jti,
		IssuedAt: iat,
		Expires:  exp,
		BodyHash: c.Body, // as signed; checkBodyHash compares and normalises it
		Key:      key,
	}, nil
}

// checkBodyHash compares the signed body claim of c (from verifyToken) with
// the SHA-256 of body and returns c with BodyHash in its canonical form.
func checkBodyHash(c QStashClaims, body []byte) (QStashClaims, error) {
	// QStash pads the body claim, SDK-made tokens do not: compare without
	// trailing '='. The hash is over the raw bytes, never a re-encoding.
	sum := sha256.Sum256(body)
	var want [43]byte // RawURLEncoding of 32 bytes
	base64.RawURLEncoding.Encode(want[:], sum[:])
	got := strings.TrimRight(c.BodyHash, "=")
	if subtle.ConstantTimeCompare(want[:], []byte(got)) != 1 {
		return QStashClaims{}, newVerificationError(sourceQStash, CheckBodyHash, nil)
	}
	c.BodyHash = string(want[:])
	return c, nil
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
