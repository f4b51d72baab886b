package store_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/digis/jobworker/internal/pgtest"
	"github.com/digis/jobworker/internal/store"
)

var benchKeys atomic.Int64

// BenchmarkPostgres compares a tip (one transaction: key claim, two wallet
// locks, two ledger entries, the balance trigger and the deferred balance
// check), a replayed tip, a credit and the refund paths with the baseline
// of one indexed read.
func BenchmarkPostgres(b *testing.B) {
	pool := pgtest.New(b)
	s, err := store.NewPostgres(pool, store.Options{MaxTipAmount: 1})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	st, err := s.StartStream(ctx, store.StartStreamRequest{CreatorID: "creator", Username: "creator"})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.Credit(ctx, "fan", store.MaxCreditAmount, "pi_bench"); err != nil {
		b.Fatal(err)
	}
	b.Run("baseline_balance_read", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.Balance(ctx, "fan"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("tip", func(b *testing.B) {
		for b.Loop() {
			// Unique across -count repeats, which rerun this sub-benchmark.
			key := fmt.Sprint("k", benchKeys.Add(1))
			if _, err := s.Tip(ctx, store.TipRequest{TipperID: "fan", StreamID: st.ID, Amount: 1, IdempotencyKey: key}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("tip_replay", func(b *testing.B) {
		req := store.TipRequest{TipperID: "fan", StreamID: st.ID, Amount: 1, IdempotencyKey: "replay"}
		if _, err := s.Tip(ctx, req); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := s.Tip(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("credit", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.Credit(ctx, "buyer", 100, fmt.Sprint("pi_c", benchKeys.Add(1))); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("refund_pending", func(b *testing.B) {
		// A refund before its payment: recorded, nothing posted.
		for b.Loop() {
			r := store.Refund{PaymentRef: fmt.Sprint("pi_p", benchKeys.Add(1)), ChargeAmount: 500, AmountRefunded: 200}
			if _, err := s.ApplyRefund(ctx, r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("credit_applying_refund", func(b *testing.B) {
		// The payment after its refund: the credit and the reversal in one
		// transaction. The refund is recorded outside the timer.
		for range b.N {
			ref := fmt.Sprint("pi_a", benchKeys.Add(1))
			b.StopTimer()
			if _, err := s.ApplyRefund(ctx, store.Refund{PaymentRef: ref, ChargeAmount: 500, AmountRefunded: 200}); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if tr, err := s.Credit(ctx, "buyer", 100, ref); err != nil || tr.Reversed != 40 {
				b.Fatal(tr, err)
			}
		}
	})
	b.Run("refund_step", func(b *testing.B) {
		// Partial refunds, each one cent more than the last: one reversal
		// step per call (1,000 tokens per cent). A deposit takes ten steps,
		// then the next one is credited outside the timer: the reversal
		// guard sums a deposit's steps, and real charges have a few.
		var ref string
		var cents int64
		for i := range b.N {
			if i%10 == 0 {
				b.StopTimer()
				ref, cents = fmt.Sprint("pi_s", benchKeys.Add(1)), 0
				if _, err := s.Credit(ctx, "buyer", store.MaxCreditAmount, ref); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			cents++
			res, err := s.ApplyRefund(ctx, store.Refund{PaymentRef: ref, ChargeAmount: 1_000_000_000, AmountRefunded: cents})
			if err != nil || res.Reversed != 1000 {
				b.Fatal(res, err)
			}
		}
	})
}
