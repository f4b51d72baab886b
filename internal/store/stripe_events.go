package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// StripeEventReceipt is a verified Stripe event as the worker records it
// (table stripe_events): ids only, never the payload.
type StripeEventReceipt struct {
	// ID is the event id (evt_…). Required, at most 255 bytes.
	ID string
	// Type is the event type (payment_intent.succeeded, …), at most 255
	// bytes.
	Type string
	// Retention is how long receipts are kept. Older ones are deleted along
	// the way, at most pruneStripeEvents per new receipt, so the table stays
	// bounded without a job of its own. Stripe stops redelivering an event
	// after 3 days. 0 keeps every receipt.
	Retention time.Duration
}

// pruneStripeEvents bounds the receipts one new receipt deletes, so a
// backlog is cleared gradually and no receipt waits on a long DELETE.
const pruneStripeEvents = 10

// errDuplicateEvent rolls back the receipt transaction of an event already
// recorded.
var errDuplicateEvent = errors.New("store: stripe event already received")

// ReceiveStripeEvent records a verified Stripe event once per event id and,
// for the first receipt only, runs then in the same transaction: what then
// writes (the event's job, into the outbox) commits together with the
// receipt or not at all. A receipt already recorded returns duplicate and
// runs nothing. A concurrent receipt of the same id waits for the first
// one's transaction: it is a duplicate if that committed, the first receipt
// if that rolled back. An error from then rolls everything back (wrapped in
// the returned error), so the event can be received again. Like the
// FollowUps, then runs again if PostgreSQL aborts the transaction on a race.
func (s *Postgres) ReceiveStripeEvent(ctx context.Context, r StripeEventReceipt, then func(ctx context.Context, tx pgx.Tx) error) (duplicate bool, err error) {
	if err := checkID("stripe event id", r.ID); err != nil {
		return false, err
	}
	if len(r.Type) > maxIDLen {
		return false, invalid("stripe event type must be at most %d bytes", maxIDLen)
	}
	if r.Retention < 0 {
		return false, invalid("retention must not be negative")
	}
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		// One round trip: prune a few expired receipts (skipping any another
		// receipt is pruning) and record this one.
		var inserted bool
		err := tx.QueryRow(ctx, `
			WITH pruned AS (
				DELETE FROM stripe_events WHERE $3::bigint > 0 AND event_id IN (
					SELECT event_id FROM stripe_events
					WHERE received_at < now() - $3::bigint * interval '1 millisecond'
					ORDER BY received_at LIMIT $4 FOR UPDATE SKIP LOCKED))
			INSERT INTO stripe_events (event_id, type) VALUES ($1, $2)
			ON CONFLICT (event_id) DO NOTHING
			RETURNING true`, r.ID, r.Type, r.Retention.Milliseconds(), pruneStripeEvents).Scan(&inserted)
		if errors.Is(err, pgx.ErrNoRows) {
			return errDuplicateEvent
		}
		if err != nil {
			return err
		}
		if then != nil {
			if err := then(ctx, tx); err != nil {
				return fmt.Errorf("store: stripe event follow-up: %w", err)
			}
		}
		s.beforeCommit("stripe-event")
		return nil
	})
	if errors.Is(err, errDuplicateEvent) {
		return true, nil
	}
	return false, err
}
