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
// user; a refund (ApplyRefund) posts the opposite, in one or more steps. The
// schema enforces it: balances are maintained from the entries by a
// trigger, user balances have CHECK (balance >= 0), an unbalanced
// transaction fails at commit, entries are append-only, a PaymentIntent id
// (external_ref) is credited once, a deposit's reversal steps are unique
// per running total and never add up to more than the deposit, and
// (tipper_id, idempotency_key) is unique.
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
// Stripe does not order its events, and a job delayed by a retry runs after
// later ones, so a refund may be handled before the payment it refunds.
// Refunds are therefore applied so that every ordering and repetition of a
// payment and its refunds ends in the same ledger:
//
//   - ApplyRefund records what a charge.refunded event says, per
//     PaymentIntent (table stripe_refunds), merged with what was recorded
//     before: the largest cumulative amount_refunded (the latest, whatever
//     the delivery order), the "refunded" flag once set, the charge and its
//     amount (another charge or amount is ErrIdempotencyKeyReused).
//   - The tokens the refunds take back are ReversalTarget: all of them when
//     the charge is fully refunded, else floor(tokens × amount_refunded /
//     charge amount). Rounding is down, on the cumulative amount, so it
//     never takes more than the refunded share and does not add up over
//     partial refunds (the user keeps less than one token more than the
//     exact share); a full refund takes back exactly the deposit.
//   - Only the positive difference between that target and what is already
//     reversed (or recorded as shortfall) is posted, as one reversal step
//     carrying the new running total. Duplicates and stale events (a lower
//     cumulative amount) find nothing to do; several partial refunds add
//     up; nothing goes beyond the deposit.
//   - A refund before its deposit is recorded (RefundPending, never
//     ignored), and Credit reverses its share in the same database
//     transaction as the deposit: the tokens are never spendable. A
//     per-PaymentIntent advisory lock (pg_advisory_xact_lock) serialises the
//     payment and its refunds even before their rows exist, so a refund and
//     its payment committing at the same moment cannot miss each other.
//
// Tokens already spent (tipped to creators) are not clawed back from the
// creators: ApplyRefund takes what the wallet still holds (a balance never
// goes negative) and records the rest as the payment's shortfall
// (RefundShortfall; stripe_refunds.shortfall and shortfall_at). The
// stripe.event job then succeeds with result reversal_shortfall and a
// warning: the row is the durable record an operator works from, where a
// dead-lettered job would add nothing and expire. A shortfall is recorded
// once: later events for the payment, or the user's next purchase, do not
// collect it; the operator decides (claw back from the creator, write off).
//
// Failed or canceled refunds (refund.failed, or refund.created,
// refund.updated and charge.refund.updated with status failed or canceled:
// whichever arrives first) are recorded once
// per refund (stripe_refund_failures) and move no money: the reversal
// stays. Reversing the reversal automatically would be wrong twice over:
// Stripe returns a failed refund's money to the merchant, who still owes
// the customer the refund and usually delivers it another way (re-crediting
// the tokens too would pay twice); and a charge.refunded delivered later
// says nothing about which refunds its cumulative amount includes, so an
// automatic re-credit could be undone or doubled by event order. The
// operator either delivers the refund another way (nothing to do here) or
// credits the tokens back under a new reference, e.g.
// Credit(ctx, user, tokens, "operator:"+refundID), which the ledger keeps.
//
// A refund whose PaymentIntent never becomes a deposit (it was not a token
// purchase, or its payment job is in the dead-letter queue) stays recorded
// as pending indefinitely: nothing expires it, and if the payment is ever
// credited (a DLQ replay) the refund is applied then. Delete such a row
// only when sure the payment will never be credited.
//
// What an operator looks at, oldest first (RefundExceptions from Go):
//
//	SELECT * FROM refund_exceptions ORDER BY since;
//
// kind "pending" (a refund without its deposit yet; amount is the amount
// refunded, in the charge's minor units), "shortfall" (user_id and the
// tokens not taken back), "refund_failed" and "refund_canceled" (refund_ref
// and its amount). The Stripe endpoint must send payment_intent.succeeded,
// charge.refunded and refund.failed (or refund.updated); other events are
// ignored.
//
// # Follow-up jobs
//
// What must happen after a change (notify a creator of a tip, a stream's
// followers) is written in the change's own transaction, so it is committed
// with the change or not at all. Postgres.WithFollowUps gives a store whose
// Tip, StartStream and StopStream call the application's FollowUps inside
// their transactions (the API writes its jobs into the outbox there, package
// outbox); ReceiveStripeEvent records a verified Stripe event's id, its
// dedupe, in one transaction with what the caller writes for it (the
// worker's stripe.event job). Memory cannot: the local stack publishes
// after its "commit" instead (see internal/apiapp).
//
// # Migrations
//
// Numbered files in migrations/ are embedded in the binary. Migrate applies
// the missing ones under a PostgreSQL advisory lock, so replicas starting
// together are safe, then the outbox's (outbox.Migrate, its own table and
// lock); call it from a start-up flag or a release step. CheckSchema, and so
// readiness, checks both.
package store
