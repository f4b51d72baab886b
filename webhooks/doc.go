// Package webhooks verifies the signed requests the worker receives: QStash
// deliveries (an HS256 JWT in Upstash-Signature) and Stripe events
// (Stripe-Signature). It is the only package that knows these formats;
// stripe-go and jwx stay behind it.
//
// Verifiers are built once at start-up from config structs; an empty or
// whitespace key stops start-up instead of disabling a check:
//
//	qv, err := webhooks.NewQStashVerifier(webhooks.QStashConfig{
//		CurrentSigningKey: os.Getenv("QSTASH_CURRENT_SIGNING_KEY"),
//		NextSigningKey:    os.Getenv("QSTASH_NEXT_SIGNING_KEY"),
//		Logger: logger, Registerer: reg,
//	})
//	mw, err := webhooks.VerifyQStash(qv, publicURL) // e.g. https://worker.example.com
//	e.POST("/jobs/:name", handler, mw)
//
//	secrets, err := webhooks.ParseSecrets(os.Getenv("STRIPE_WEBHOOK_SECRET"))
//	sv, err := webhooks.NewStripeVerifier(webhooks.StripeConfig{Secrets: secrets, Registerer: reg})
//	smw, err := webhooks.VerifyStripe(sv)
//	e.POST("/webhooks/stripe", stripeHandler, smw) // webhooks.StripeEventFrom(c)
//
// QStash: the algorithm is pinned to HS256; the MAC decides between the
// current and next key, then the claims are checked once: iss "Upstash",
// sub equal to the exact public URL called, exp/nbf (0 allowed)/iat within
// a small skew, all required claims present, and the body claim equal to
// the SHA-256 of the raw bytes (padding-insensitive).
//
// Stripe: v1 signatures only, each configured secret tried in turn (for
// rotation), the timestamp within ±tolerance (stripe-go only rejects old
// ones), and an event id and type required. Events of another API version
// are accepted, counted and logged (see StripeVerifier.Verify).
//
// Every failure is a *VerificationError naming the check that failed
// (errors.Is ErrInvalidSignature or ErrInvalidEvent). The check goes to the
// log and to jobworker_webhook_verifications_total{source,result}; the
// HTTP answer (401 for QStash, 400 for Stripe, 413 above the body cap) is a
// problem+json without detail. Keys, tokens and payloads are never logged.
//
// For net/http, QStashVerifier.VerifyRequest reads the header and the
// capped body and verifies in one call. It checks everything the token
// alone proves (MAC, claims, times) before it reads the body, so a forged
// token costs no body read; the middlewares do the same, and close the
// connection after refusing a request whose body they did not read.
//
// Verification is all this package does: it holds no Redis client and no
// QStash publisher. Deduplication (Upstash-Message-Id with the token's jti,
// event.id) belongs to the handlers behind it; package worker is the
// complete QStash receiver. Package webhookstest signs test deliveries.
package webhooks
