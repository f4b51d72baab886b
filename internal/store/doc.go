// Package store is the reference application's data layer: streams,
// wallets on a double-entry ledger, and tips.
//
//	s, closeDB, err := store.Open(ctx, store.Config{DatabaseURL: os.Getenv("DATABASE_URL"), Migrate: true})
//	defer closeDB()
//	tip, err := s.Tip(ctx, store.TipRequest{TipperID: user, StreamID: id, Amount: 100, IdempotencyKey: key})
//
// Postgres (pgx v5) is the real implementation; Memory, chosen by Open when
// DATABASE_URL is empty and logged as such, exists only for the one-command
// local stack. Both pass one contract test suite.
//
// # Money
//
// Amounts are int64 tokens (minor units); there are no floats. Each money
// movement is a ledger transaction with entries that sum to zero: a tip
// debits the tipper's wallet and credits the creator's; a Stripe deposit
// (Credit) debits the system account "stripe/deposits" and credits the
// user; a refund (Reverse) posts the opposite. The schema enforces it:
// balances are maintained from the entries by a trigger, user balances have
// CHECK (balance >= 0), an unbalanced transaction fails at commit, entries
// are append-only, a PaymentIntent id (external_ref) is credited once, a
// deposit is reversed once, and (tipper_id, idempotency_key) is unique.
//
// # Idempotency, the last guard
//
// The API's Redis Idempotency-Key layer answers retries first. If its record
// is lost (flush, failover, expiry), Tip still cannot pay twice for one key:
// the key is stored in the same transaction as the money movement, and a
// repeat returns the original tip with Replayed set. A new key spends only
// what the balance holds.
//
// # Errors
//
// Sentinels, for one mapping to HTTP in the application (suggested):
// ErrInvalid 400 (422 also fits), ErrNotFound 404, ErrNotCreator 403,
// ErrInsufficientFunds 402, ErrStreamNotLive 409, ErrSelfTip 422,
// ErrIdempotencyKeyReused 422 (the IETF draft's status for a reused key).
// Any other error is a 500 (or 503 when the context timed out).
//
// # Refunds
//
// Reverse undoes a whole deposit once. When the user has already spent the
// money it refuses with ErrInsufficientFunds and writes nothing; the Stripe
// job should fail permanently (dead letter) for an operator, because the
// tokens now sit in creators' wallets. Partial refunds are a later schema
// change (a refund reference per reversal instead of one reversal per
// deposit).
//
// # Migrations
//
// Numbered files in migrations/ are embedded in the binary. Migrate applies
// the missing ones under a PostgreSQL advisory lock, so replicas starting
// together are safe; call it from a start-up flag or a release step.
package store
