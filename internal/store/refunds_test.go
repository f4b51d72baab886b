package store_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/digis/jobworker/internal/store"
)

// The refunds of one test payment: 100 tokens bought with a charge of 2.99
// (299 cents, so shares do not divide evenly). Stripe's amount_refunded is
// cumulative: refund A (1.00), then B (0.50 more), then the rest.
const (
	testTokens = 100
	testCharge = 299
)

var (
	refundA    = store.Refund{ChargeRef: "ch_1", ChargeAmount: testCharge, AmountRefunded: 100}
	refundB    = store.Refund{ChargeRef: "ch_1", ChargeAmount: testCharge, AmountRefunded: 150}
	refundFull = store.Refund{ChargeRef: "ch_1", ChargeAmount: testCharge, AmountRefunded: testCharge, FullyRefunded: true}
)

// Tokens those refunds take back: floor(100 × 100 / 299), floor(100 × 150 / 299), all.
const (
	targetA    = 33
	targetB    = 50
	targetFull = testTokens
)

func refundOf(r store.Refund, pi string) store.Refund { r.PaymentRef = pi; return r }

var refundContract = []contractCase{
	{"a refund before its payment is recorded, then applied with the credit", func(t *testing.T, b bundle) {
		ctx := t.Context()
		res, err := b.s.ApplyRefund(ctx, refundOf(refundFull, "pi_1"))
		if err != nil || res.Outcome != store.RefundPending || res.Reversed != 0 || !res.State.Recorded || res.State.Deposit != 0 {
			t.Fatalf("refund first = %+v, %v; want pending", res, err)
		}
		if again, err := b.s.ApplyRefund(ctx, refundOf(refundFull, "pi_1")); err != nil || again.Outcome != store.RefundUnchanged {
			t.Fatalf("duplicate pending refund = %+v, %v", again, err)
		}
		ex := wantExceptions(t, b.s, 1)
		if ex[0].Kind != store.ExceptionPending || ex[0].PaymentRef != "pi_1" || ex[0].Amount != testCharge || ex[0].Since.IsZero() {
			t.Fatalf("exception = %+v", ex[0])
		}
		tr := mustCredit(t, b.s, "fan", testTokens, "pi_1")
		if tr.Replayed || tr.Reversed != testTokens {
			t.Fatalf("credit after refund = %+v, want %d reversed with it", tr, testTokens)
		}
		wantBalance(t, b.s, "fan", 0)
		wantRefundState(t, b.s, "pi_1", store.RefundState{Recorded: true, Deposit: testTokens, UserID: "fan",
			ChargeAmount: testCharge, AmountRefunded: testCharge, FullyRefunded: true, Target: testTokens, Reversed: testTokens})
		wantExceptions(t, b.s, 0)
		// Nothing repeats: neither the payment nor the refund.
		if tr, err := b.s.Credit(ctx, "fan", testTokens, "pi_1"); err != nil || !tr.Replayed || tr.Reversed != 0 {
			t.Fatalf("credit again = %+v, %v", tr, err)
		}
		if res, err := b.s.ApplyRefund(ctx, refundOf(refundFull, "pi_1")); err != nil || res.Outcome != store.RefundUnchanged {
			t.Fatalf("refund again = %+v, %v", res, err)
		}
		wantBalance(t, b.s, "fan", 0)
	}},
	{"partial refunds add up, round down, never go beyond the deposit", func(t *testing.T, b bundle) {
		ctx := t.Context()
		mustCredit(t, b.s, "fan", testTokens, "pi_1")
		steps := []struct {
			name     string
			r        store.Refund
			outcome  store.RefundOutcome
			reversed int64 // by this call
			total    int64
		}{
			{"A", refundA, store.RefundReversed, targetA, targetA},
			{"A again", refundA, store.RefundUnchanged, 0, targetA},
			{"stale, lower cumulative", store.Refund{ChargeRef: "ch_1", ChargeAmount: testCharge, AmountRefunded: 50}, store.RefundUnchanged, 0, targetA},
			{"B", refundB, store.RefundReversed, targetB - targetA, targetB},
			{"A after B", refundA, store.RefundUnchanged, 0, targetB},
			{"the rest", refundFull, store.RefundReversed, targetFull - targetB, targetFull},
			{"all refunded, flag not set", store.Refund{ChargeAmount: testCharge, AmountRefunded: testCharge}, store.RefundUnchanged, 0, targetFull},
			{"B after all", refundB, store.RefundUnchanged, 0, targetFull},
		}
		for _, s := range steps {
			res, err := b.s.ApplyRefund(ctx, refundOf(s.r, "pi_1"))
			if err != nil || res.Outcome != s.outcome || res.Reversed != s.reversed || res.State.Reversed != s.total || res.Shortfall != 0 {
				t.Fatalf("%s: %+v, %v; want %s, %d reversed, %d in all", s.name, res, err, s.outcome, s.reversed, s.total)
			}
			if (res.TransactionID != 0) != (s.reversed > 0) {
				t.Fatalf("%s: transaction id %d for %d reversed", s.name, res.TransactionID, s.reversed)
			}
			wantBalance(t, b.s, "fan", testTokens-s.total)
		}
	}},
	{"every ordering of a payment and its refunds ends in the same ledger", func(t *testing.T, b bundle) {
		testAllOrderings(t, b)
	}},
	{"a full refund without amounts takes back the whole deposit", func(t *testing.T, b bundle) {
		// What an older job payload (only the charge's "refunded" flag) says.
		mustCredit(t, b.s, "fan", 70, "pi_1")
		res, err := b.s.ApplyRefund(t.Context(), store.Refund{PaymentRef: "pi_1", FullyRefunded: true})
		if err != nil || res.Outcome != store.RefundReversed || res.Reversed != 70 {
			t.Fatalf("refund = %+v, %v", res, err)
		}
		// The amounts arriving later agree with it.
		if res, err := b.s.ApplyRefund(t.Context(), refundOf(refundB, "pi_1")); err != nil || res.Outcome != store.RefundUnchanged || res.State.Reversed != 70 {
			t.Fatalf("amounts after = %+v, %v", res, err)
		}
		wantBalance(t, b.s, "fan", 0)
	}},
	{"refund of spent tokens takes what is left and records the shortfall", func(t *testing.T, b bundle) {
		ctx := t.Context()
		st := mustStart(t, b.s, "creator", "creator", "")
		mustCredit(t, b.s, "fan", 100, "pi_1")
		if _, err := b.s.Tip(ctx, store.TipRequest{TipperID: "fan", StreamID: st.ID, Amount: 60, IdempotencyKey: "k"}); err != nil {
			t.Fatal(err)
		}
		// 30% refunded: 30 tokens, covered by the 40 left.
		res, err := b.s.ApplyRefund(ctx, store.Refund{PaymentRef: "pi_1", ChargeAmount: 1000, AmountRefunded: 300})
		if err != nil || res.Outcome != store.RefundReversed || res.Reversed != 30 {
			t.Fatalf("partial refund = %+v, %v", res, err)
		}
		// The rest: 70 owed, 10 left.
		res, err = b.s.ApplyRefund(ctx, store.Refund{PaymentRef: "pi_1", ChargeAmount: 1000, AmountRefunded: 1000, FullyRefunded: true})
		if err != nil || res.Outcome != store.RefundShortfall || res.Reversed != 10 || res.Shortfall != 60 ||
			res.State.Reversed != 40 || res.State.Shortfall != 60 || res.State.Target != 100 {
			t.Fatalf("full refund = %+v, %v; want 10 reversed, 60 shortfall", res, err)
		}
		wantBalance(t, b.s, "fan", 0)
		wantBalance(t, b.s, "creator", 60) // tips are not clawed back automatically
		ex := wantExceptions(t, b.s, 1)
		if ex[0].Kind != store.ExceptionShortfall || ex[0].PaymentRef != "pi_1" || ex[0].UserID != "fan" || ex[0].Tokens != 60 || ex[0].Since.IsZero() {
			t.Fatalf("exception = %+v", ex[0])
		}
		// Recorded once: a redelivery does not take it again from the
		// user's next purchase; the operator decides.
		mustCredit(t, b.s, "fan", 50, "pi_2")
		if res, err := b.s.ApplyRefund(ctx, store.Refund{PaymentRef: "pi_1", ChargeAmount: 1000, AmountRefunded: 1000, FullyRefunded: true}); err != nil || res.Outcome != store.RefundUnchanged {
			t.Fatalf("redelivered refund = %+v, %v", res, err)
		}
		wantBalance(t, b.s, "fan", 50)
		wantRefundState(t, b.s, "pi_1", store.RefundState{Recorded: true, Deposit: 100, UserID: "fan",
			ChargeAmount: 1000, AmountRefunded: 1000, FullyRefunded: true, Target: 100, Reversed: 40, Shortfall: 60})
	}},
	{"refund failures are recorded once and move no money", func(t *testing.T, b bundle) {
		ctx := t.Context()
		mustCredit(t, b.s, "fan", 100, "pi_1")
		if _, err := b.s.ApplyRefund(ctx, store.Refund{PaymentRef: "pi_1", ChargeAmount: 500, AmountRefunded: 500, FullyRefunded: true}); err != nil {
			t.Fatal(err)
		}
		f := store.RefundFailure{RefundRef: "re_1", PaymentRef: "pi_1", Amount: 500, Status: store.RefundFailed, Reason: "expired_or_canceled_card"}
		got, err := b.s.RecordRefundFailure(ctx, f)
		if err != nil || got.Replayed || got.CreatedAt.IsZero() || got.Status != store.RefundFailed {
			t.Fatalf("record = %+v, %v", got, err)
		}
		// refund.failed, refund.updated and charge.refund.updated report the same failure.
		f2 := f
		f2.Status = store.RefundCanceled
		again, err := b.s.RecordRefundFailure(ctx, f2)
		if err != nil || !again.Replayed || again.Status != store.RefundFailed || !again.CreatedAt.Equal(got.CreatedAt) {
			t.Fatalf("record again = %+v, %v", again, err)
		}
		wantBalance(t, b.s, "fan", 0)
		ex := wantExceptions(t, b.s, 1)
		if ex[0].Kind != store.ExceptionRefundFailed || ex[0].RefundRef != "re_1" || ex[0].UserID != "fan" || ex[0].Amount != 500 {
			t.Fatalf("exception = %+v", ex[0])
		}
		other := f
		other.PaymentRef = "pi_2"
		if _, err := b.s.RecordRefundFailure(ctx, other); !errors.Is(err, store.ErrIdempotencyKeyReused) {
			t.Fatalf("same refund, other payment: err = %v", err)
		}
		for _, bad := range []store.RefundFailure{
			{RefundRef: "", PaymentRef: "pi_1", Status: store.RefundFailed},
			{RefundRef: "re_2", PaymentRef: "", Status: store.RefundFailed},
			{RefundRef: "re_2", PaymentRef: "pi_1", Status: "succeeded"},
			{RefundRef: "re_2", PaymentRef: "pi_1", Status: store.RefundFailed, Reason: "Card <b>lost</b>"},
			{RefundRef: "re_2", PaymentRef: "pi_1", Status: store.RefundFailed, Amount: -1},
		} {
			if _, err := b.s.RecordRefundFailure(ctx, bad); !errors.Is(err, store.ErrInvalid) {
				t.Errorf("RecordRefundFailure(%+v) err = %v, want ErrInvalid", bad, err)
			}
		}
		wantExceptions(t, b.s, 1)
	}},
	{"refund input is validated and contradicting facts are refused", func(t *testing.T, b bundle) {
		ctx := t.Context()
		for _, bad := range []store.Refund{
			{PaymentRef: "", ChargeAmount: 100, AmountRefunded: 10},
			{PaymentRef: "pi_1", ChargeAmount: 100, AmountRefunded: 101},
			{PaymentRef: "pi_1", ChargeAmount: 100, AmountRefunded: -1},
			{PaymentRef: "pi_1", ChargeAmount: -1, FullyRefunded: true},
			{PaymentRef: "pi_1", ChargeAmount: store.MaxChargeAmount + 1, AmountRefunded: 1},
			{PaymentRef: "pi_1", AmountRefunded: 10}, // a partial refund of unknown share
		} {
			if _, err := b.s.ApplyRefund(ctx, bad); !errors.Is(err, store.ErrInvalid) {
				t.Errorf("ApplyRefund(%+v) err = %v, want ErrInvalid", bad, err)
			}
		}
		mustCredit(t, b.s, "fan", testTokens, "pi_1")
		if _, err := b.s.ApplyRefund(ctx, refundOf(refundA, "pi_1")); err != nil {
			t.Fatal(err)
		}
		for _, bad := range []store.Refund{
			{PaymentRef: "pi_1", ChargeRef: "ch_other", ChargeAmount: testCharge, AmountRefunded: testCharge},
			{PaymentRef: "pi_1", ChargeRef: "ch_1", ChargeAmount: testCharge + 1, AmountRefunded: testCharge + 1},
		} {
			if _, err := b.s.ApplyRefund(ctx, bad); !errors.Is(err, store.ErrIdempotencyKeyReused) {
				t.Errorf("ApplyRefund(%+v) err = %v, want ErrIdempotencyKeyReused", bad, err)
			}
		}
		wantRefundState(t, b.s, "pi_1", store.RefundState{Recorded: true, Deposit: testTokens, UserID: "fan",
			ChargeAmount: testCharge, AmountRefunded: 100, Target: targetA, Reversed: targetA})
		wantBalance(t, b.s, "fan", testTokens-targetA)
		if st, err := b.s.RefundState(ctx, "pi_unknown"); err != nil || st != (store.RefundState{PaymentRef: "pi_unknown"}) {
			t.Fatalf("unknown payment state = %+v, %v", st, err)
		}
		if _, err := b.s.RefundState(ctx, ""); !errors.Is(err, store.ErrInvalid) {
			t.Fatalf("empty ref err = %v", err)
		}
	}},
	{"a payment and its refunds at once reverse exactly the target", func(t *testing.T, b bundle) {
		// 20 deliveries released together: the payment and each refund
		// five times. Whatever interleaving the store allows, the end is
		// one deposit and its whole reversal, never more.
		calls := []func() error{
			func() error { _, err := b.s.Credit(context.Background(), "fan", testTokens, "pi_1"); return err },
			func() error { _, err := b.s.ApplyRefund(context.Background(), refundOf(refundA, "pi_1")); return err },
			func() error { _, err := b.s.ApplyRefund(context.Background(), refundOf(refundB, "pi_1")); return err },
			func() error {
				_, err := b.s.ApplyRefund(context.Background(), refundOf(refundFull, "pi_1"))
				return err
			},
		}
		_, errs := concurrently(20, func(i int) (struct{}, error) { return struct{}{}, calls[i%len(calls)]() })
		for i, err := range errs {
			if err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
		}
		wantBalance(t, b.s, "fan", 0)
		wantRefundState(t, b.s, "pi_1", store.RefundState{Recorded: true, Deposit: testTokens, UserID: "fan",
			ChargeAmount: testCharge, AmountRefunded: testCharge, FullyRefunded: true, Target: testTokens, Reversed: testTokens})
		if b.pool != nil {
			if got := ledgerReversed(t, b.pool, "pi_1"); got != testTokens {
				t.Fatalf("ledger reverses %d tokens, want %d", got, testTokens)
			}
		}
	}},
}

// testAllOrderings runs every permutation of {payment, refund A, refund B,
// full refund}, each event delivered twice (once right after itself, or
// all again in reverse order at the end), and again without the full
// refund. Every run has its own payment and user on the same store; every
// run must end in the same ledger, and no step may ever reverse more than
// the refunds seen so far allow.
func testAllOrderings(t *testing.T, b bundle) {
	ctx := t.Context()
	type event struct {
		name   string
		refund *store.Refund // nil: the payment
	}
	scenarios := []struct {
		name   string
		events []event
		want   int64 // tokens reversed at the end
	}{
		{"with full refund", []event{{"payment", nil}, {"A", &refundA}, {"B", &refundB}, {"full", &refundFull}}, targetFull},
		{"partial only", []event{{"payment", nil}, {"A", &refundA}, {"B", &refundB}}, targetB},
	}
	runs := 0
	for si, sc := range scenarios {
		for pi, perm := range permutations(len(sc.events)) {
			dupes := map[string][]int{"each twice in a row": nil, "all again in reverse": nil}
			for _, i := range perm {
				dupes["each twice in a row"] = append(dupes["each twice in a row"], i, i)
			}
			dupes["all again in reverse"] = append(append([]int{}, perm...), reversed(perm)...)
			for dn, seq := range dupes {
				runs++
				ref, user := fmt.Sprintf("pi_%d_%d_%d", si, pi, runs), fmt.Sprintf("user_%d", runs)
				var names []string
				var seen int64 // the largest target any refund delivered so far allows
				for _, i := range seq {
					ev := sc.events[i]
					names = append(names, ev.name)
					if ev.refund == nil {
						mustCredit(t, b.s, user, testTokens, ref)
					} else {
						r := *ev.refund
						seen = max(seen, store.ReversalTarget(testTokens, r.ChargeAmount, r.AmountRefunded, r.FullyRefunded))
						if _, err := b.s.ApplyRefund(ctx, refundOf(r, ref)); err != nil {
							t.Fatalf("%s %v: %v", sc.name, names, err)
						}
					}
					st, err := b.s.RefundState(ctx, ref)
					if err != nil {
						t.Fatal(err)
					}
					if st.Reversed > seen || st.Reversed > st.Deposit || st.Shortfall != 0 {
						t.Fatalf("%s %v: reversed %d (shortfall %d) with deposit %d; refunds so far allow %d", sc.name, names, st.Reversed, st.Shortfall, st.Deposit, seen)
					}
				}
				st, err := b.s.RefundState(ctx, ref)
				if err != nil {
					t.Fatal(err)
				}
				if st.Deposit != testTokens || st.Reversed != sc.want || st.Target != sc.want {
					t.Fatalf("%s, %s %v: state %+v, want %d reversed", sc.name, dn, names, st, sc.want)
				}
				wantBalance(t, b.s, user, testTokens-sc.want)
				if b.pool != nil {
					if got := ledgerReversed(t, b.pool, ref); got != sc.want {
						t.Fatalf("%s %v: ledger reverses %d tokens, want %d", sc.name, names, got, sc.want)
					}
				}
			}
		}
	}
	if runs != 2*(24+6) {
		t.Fatalf("%d runs, want every permutation twice", runs)
	}
}

// permutations lists every ordering of 0..n-1 (Heap's algorithm).
func permutations(n int) [][]int {
	a := make([]int, n)
	for i := range a {
		a[i] = i
	}
	var out [][]int
	var gen func(k int)
	gen = func(k int) {
		if k <= 1 {
			out = append(out, append([]int(nil), a...))
			return
		}
		for i := 0; i < k; i++ {
			gen(k - 1)
			if k%2 == 0 {
				a[i], a[k-1] = a[k-1], a[i]
			} else {
				a[0], a[k-1] = a[k-1], a[0]
			}
		}
	}
	gen(n)
	return out
}

func reversed(s []int) []int {
	out := make([]int, len(s))
	for i, v := range s {
		out[len(s)-1-i] = v
	}
	return out
}

func TestPermutations(t *testing.T) {
	t.Parallel()
	for n, want := range []int{1, 1, 2, 6, 24} {
		seen := map[string]bool{}
		for _, p := range permutations(n) {
			seen[fmt.Sprint(p)] = true
		}
		if len(seen) != want {
			t.Errorf("permutations(%d): %d distinct, want %d", n, len(seen), want)
		}
	}
}

// ledgerReversed reads from the ledger itself (not the store's answer) the
// tokens taken back from the deposit with that reference.
func ledgerReversed(t *testing.T, pool *pgxpool.Pool, ref string) int64 {
	t.Helper()
	var n int64
	err := pool.QueryRow(context.Background(), `
		SELECT coalesce(-sum(e.amount), 0)::bigint
		FROM ledger_transactions d
		JOIN ledger_transactions r ON r.reverses_id = d.id
		JOIN ledger_entries e ON e.transaction_id = r.id
		JOIN accounts a ON a.id = e.account_id AND a.user_id IS NOT NULL
		WHERE d.external_ref = $1`, ref).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func wantRefundState(t *testing.T, s store.Store, ref string, want store.RefundState) {
	t.Helper()
	want.PaymentRef = ref
	got, err := s.RefundState(t.Context(), ref)
	if err != nil || got != want {
		t.Fatalf("RefundState(%s) = %+v, %v\nwant %+v", ref, got, err, want)
	}
}

func wantExceptions(t *testing.T, s store.Store, n int) []store.RefundException {
	t.Helper()
	ex, err := s.RefundExceptions(t.Context(), 0)
	if err != nil || len(ex) != n {
		t.Fatalf("RefundExceptions = %+v, %v; want %d", ex, err, n)
	}
	return ex
}

func TestReversalTarget(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                   string
		deposit, charge, refnd int64
		full                   bool
		want                   int64
	}{
		{"nothing refunded", 100, 299, 0, false, 0},
		{"rounds down", 100, 299, 100, false, 33},
		{"cumulative, not per refund", 100, 299, 150, false, 50}, // 33 + floor(50×100/299)=16 would be 49
		{"one cent short of all", 100, 299, 298, false, 99},
		{"all of it", 100, 299, 299, false, 100},
		{"full flag", 100, 299, 10, true, 100},
		{"full flag, no amounts", 100, 0, 0, true, 100},
		{"unknown share", 100, 0, 0, false, 0},
		{"more than the charge is capped", 100, 299, 400, false, 100},
		{"no deposit", 0, 299, 299, true, 0},
		{"large numbers do not overflow", store.MaxCreditAmount, store.MaxChargeAmount, store.MaxChargeAmount - 1, false, store.MaxCreditAmount - 1},
		{"int64 edge", math.MaxInt64, math.MaxInt64, math.MaxInt64 - 1, false, math.MaxInt64 - 1},
	}
	for _, tt := range tests {
		if got := store.ReversalTarget(tt.deposit, tt.charge, tt.refnd, tt.full); got != tt.want {
			t.Errorf("%s: ReversalTarget(%d, %d, %d, %v) = %d, want %d", tt.name, tt.deposit, tt.charge, tt.refnd, tt.full, got, tt.want)
		}
	}
}
