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
// check) and a replayed tip with the baseline of one indexed read.
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
}
