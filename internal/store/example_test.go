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
