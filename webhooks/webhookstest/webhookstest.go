// Package webhookstest signs QStash and Stripe test deliveries the way the
// real senders do, for tests of code that sits behind package webhooks.
//
// QStash tokens are signed with jwx (HS256, header {"alg":"HS256","typ":"JWT"},
// key = the UTF-8 bytes of the "sig_…" string), following the emulator
// recipe of docs/qstash-protocol.md §5.1; Stripe headers come from stripe-go's
// webhook.GenerateTestSignedPayload. Nothing here is for production use.
package webhookstest

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	stripe "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"
)

// Dev-server signing keys of the official QStash CLI (public, test only).
const (
	QStashDevCurrentKey = "sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r"
	QStashDevNextKey    = "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs"
)

// BodyHash is the QStash body claim for body: base64url(SHA-256(body)),
// padded like production tokens.
func BodyHash(body []byte) string {
	sum := sha256.Sum256(body)
	return base64.URLEncoding.EncodeToString(sum[:])
}

// QStashClaims returns the claim set QStash puts in a delivery to url at
// now: iss, sub, exp (now+300 s), nbf (0, as QStash sends since 2024), iat,
// a random jti (unique per token, as QStash's are: a worker refuses a jti
// it has seen for another message) and body. Edit the map to build bad
// tokens, or to reuse a jti on purpose.
func QStashClaims(url string, body []byte, now time.Time) map[string]any {
	return map[string]any{
		"iss":  "Upstash",
		"sub":  url,
		"exp":  now.Unix() + 300,
		"nbf":  0,
		"iat":  now.Unix(),
		"jti":  "jwt_test_" + randomID(),
		"body": BodyHash(body),
	}
}

func randomID() string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("webhookstest: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}

// SignQStash signs claims (any JSON-encodable map, so claims may be
// missing or mistyped on purpose) with key using HS256.
func SignQStash(key string, claims map[string]any) (string, error) {
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	hdr := jws.NewHeaders()
	if err := hdr.Set(jws.TypeKey, "JWT"); err != nil {
		return "", err
	}
	tok, err := jws.Sign(payload, jws.WithKey(jwa.HS256, []byte(key), jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return "", fmt.Errorf("webhookstest: signing: %w", err)
	}
	return string(tok), nil
}

// QStashSignature is SignQStash(key, QStashClaims(url, body, now)).
func QStashSignature(key, url string, body []byte, now time.Time) (string, error) {
	return SignQStash(key, QStashClaims(url, body, now))
}

// StripeSignature returns a Stripe-Signature header value for payload,
// signed with secret at t (stripe-go's GenerateTestSignedPayload, v1).
func StripeSignature(secret string, payload []byte, t time.Time) string {
	return webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{
		Payload: payload, Secret: secret, Timestamp: t,
	}).Header
}

// StripeEvent returns a minimal event payload with the API version
// stripe-go pins, as Stripe would send it.
func StripeEvent(id, eventType string, created time.Time) []byte {
	b, _ := json.Marshal(map[string]any{
		"id":          id,
		"object":      "event",
		"api_version": stripe.APIVersion,
		"created":     created.Unix(),
		"livemode":    false,
		"type":        eventType,
		"data": map[string]any{
			"object": map[string]any{"id": "pi_test", "object": "payment_intent", "amount": 500},
		},
		"pending_webhooks": 1,
		"request":          map[string]any{"id": nil, "idempotency_key": nil},
	})
	return b
}
