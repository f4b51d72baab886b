package store

import (
	"fmt"
	"math/bits"
	"regexp"
)

// ReversalTarget is the number of tokens a deposit of deposit tokens loses
// to refunds of amountRefunded out of chargeAmount (money, the same units):
// all of them when fullyRefunded, else
//
//	floor(deposit × amountRefunded / chargeAmount)
//
// Rounding down never takes back more than the refunded share; because it
// is applied to the cumulative amount, not to each partial refund, the
// rounding never adds up: the user keeps less than one token more than the
// exact share, and a full refund always takes back exactly the deposit. It
// returns 0 when chargeAmount is not positive (the share is unknown) and
// caps the share at the whole deposit.
func ReversalTarget(deposit, chargeAmount, amountRefunded int64, fullyRefunded bool) int64 {
	switch {
	case deposit <= 0:
		return 0
	case fullyRefunded || (chargeAmount > 0 && amountRefunded >= chargeAmount):
		return deposit
	case chargeAmount <= 0 || amountRefunded <= 0:
		return 0
	}
	// 128-bit product: tokens × cents overflows int64 for large deposits.
	// The quotient is below deposit because amountRefunded < chargeAmount,
	// so hi < chargeAmount and Div64 cannot overflow.
	hi, lo := bits.Mul64(uint64(deposit), uint64(amountRefunded))
	q, _ := bits.Div64(hi, lo, uint64(chargeAmount))
	return int64(q)
}

// refundFacts is the merge of every charge.refunded event of a payment.
type refundFacts struct {
	ChargeRef      string
	ChargeAmount   int64
	AmountRefunded int64
	FullyRefunded  bool
}

func (f refundFacts) target(deposit int64) int64 {
	return ReversalTarget(deposit, f.ChargeAmount, f.AmountRefunded, f.FullyRefunded)
}

// MaxChargeAmount bounds a charge amount (minor units): far above any real
// charge, far below where tokens × amount could trouble the arithmetic.
const MaxChargeAmount int64 = 1_000_000_000_000_000

func checkRefund(r Refund) error {
	if err := checkID("payment reference", r.PaymentRef); err != nil {
		return err
	}
	if r.ChargeRef != "" {
		if err := checkID("charge reference", r.ChargeRef); err != nil {
			return err
		}
	}
	switch {
	case r.ChargeAmount < 0 || r.ChargeAmount > MaxChargeAmount:
		return invalid("charge amount must be between 0 and %d", MaxChargeAmount)
	case r.AmountRefunded < 0 || r.AmountRefunded > r.ChargeAmount:
		return invalid("amount refunded must be between 0 and the charge amount")
	case r.ChargeAmount == 0 && !r.FullyRefunded:
		return invalid("a partial refund needs the charge amount to know its share")
	}
	return nil
}

// merge folds one event into the recorded facts. Every rule is
// commutative, associative and idempotent (the largest cumulative amount,
// the flag once set, the first known charge and amount), which is what
// makes the end state independent of the order and repetition of events.
// Facts that cannot belong to the same charge are ErrIdempotencyKeyReused.
func (f refundFacts) merge(r Refund) (refundFacts, bool, error) {
	out := f
	if r.ChargeRef != "" {
		if f.ChargeRef != "" && f.ChargeRef != r.ChargeRef {
			return f, false, fmt.Errorf("%w: another charge was already refunded for this payment", ErrIdempotencyKeyReused)
		}
		out.ChargeRef = r.ChargeRef
	}
	if r.ChargeAmount > 0 {
		if f.ChargeAmount > 0 && f.ChargeAmount != r.ChargeAmount {
			return f, false, fmt.Errorf("%w: the charge amount differs from the one recorded", ErrIdempotencyKeyReused)
		}
		out.ChargeAmount = r.ChargeAmount
	}
	out.AmountRefunded = max(f.AmountRefunded, r.AmountRefunded)
	out.FullyRefunded = f.FullyRefunded || r.FullyRefunded
	if out.AmountRefunded > out.ChargeAmount {
		// Unreachable while every event passes checkRefund (the charge
		// amount never changes once known); the schema's CHECK mirrors it.
		return f, false, invalid("amount refunded exceeds the charge amount")
	}
	return out, out != f, nil
}

var refundReasonRE = regexp.MustCompile(`^[a-z_]{0,64}$`)

func checkRefundFailure(f RefundFailure) error {
	if err := checkID("refund reference", f.RefundRef); err != nil {
		return err
	}
	if err := checkID("payment reference", f.PaymentRef); err != nil {
		return err
	}
	switch {
	case f.Status != RefundFailed && f.Status != RefundCanceled:
		return invalid("refund failure status must be %q or %q", RefundFailed, RefundCanceled)
	case f.Amount < 0 || f.Amount > MaxChargeAmount:
		return invalid("refund amount must be between 0 and %d", MaxChargeAmount)
	case !refundReasonRE.MatchString(f.Reason):
		return invalid("refund failure reason must be 0-64 of [a-z_]")
	}
	return nil
}
