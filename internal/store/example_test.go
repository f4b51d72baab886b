package store_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/digis/jobworker/internal/store"
)

// A tip retried with the same idempotency key pays once; the retry gets
// the original tip back.
func ExampleStore_Tip() {
	ctx := context.Background()
	s, closeDB, _ := store.Open(ctx, store.Config{}) // no DATABASE_URL: in-memory
	defer closeDB()
	stream, demo, _ := store.SeedDemo(ctx, s, store.Demo{FanBalance: 500})

	req := store.TipRequest{TipperID: demo.FanID, StreamID: stream.ID, Amount: 300, IdempotencyKey: "7f9c2ba4"}
	first, _ := s.Tip(ctx, req)
	again, _ := s.Tip(ctx, req)
	fmt.Println(first.ID == again.ID, first.Replayed, again.Replayed)

	req.IdempotencyKey = "0d1e8a11" // a new key spends only what is left
	_, err := s.Tip(ctx, req)
	fmt.Println(errors.Is(err, store.ErrInsufficientFunds))

	balance, _ := s.Balance(ctx, demo.FanID)
	fmt.Println(balance)
	// Output:
	// true false true
	// true
	// 200
}

// Stripe deposits are credited once per PaymentIntent, however often the
// event is delivered.
func ExampleStore_Credit() {
	ctx := context.Background()
	s, _ := store.NewMemory(store.Options{})
	for range 3 {
		tr, _ := s.Credit(ctx, "user-1", 1000, "pi_3N1x")
		fmt.Println(tr.Amount, tr.Replayed)
	}
	b, _ := s.Balance(ctx, "user-1")
	fmt.Println(b)
	// Output:
	// 1000 false
	// 1000 true
	// 1000 true
	// 1000
}

// A refund handled before its payment is recorded, and applied in the
// credit's transaction when the payment lands. Partial refunds add up; the
// cumulative amount refunded is what counts, so duplicates and stale events
// change nothing.
func ExampleStore_ApplyRefund() {
	ctx := context.Background()
	s, _ := store.NewMemory(store.Options{})
	// charge.refunded for 2.00 of a 10.00 charge, before payment_intent.succeeded.
	res, _ := s.ApplyRefund(ctx, store.Refund{PaymentRef: "pi_3N1x", ChargeAmount: 1000, AmountRefunded: 200})
	fmt.Println(res.Outcome)

	dep, _ := s.Credit(ctx, "user-1", 500, "pi_3N1x") // 500 tokens bought
	fmt.Println(dep.Amount, dep.Reversed)

	// A second refund (2.00 + 3.00), then the first one redelivered.
	for _, cumulative := range []int64{500, 200} {
		res, _ = s.ApplyRefund(ctx, store.Refund{PaymentRef: "pi_3N1x", ChargeAmount: 1000, AmountRefunded: cumulative})
		fmt.Println(res.Outcome, res.Reversed, res.State.Reversed)
	}
	b, _ := s.Balance(ctx, "user-1")
	fmt.Println(b)
	// Output:
	// pending
	// 500 100
	// reversed 150 250
	// unchanged 0 250
	// 250
}
