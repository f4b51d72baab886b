package store

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/digis/jobworker/internal/validtext"
)

// Sentinel errors. Every Store implementation returns these (possibly
// wrapped), so callers test them with errors.Is and map them to HTTP answers
// in one place.
var (
	// ErrNotFound: no such stream, or no such deposit to reverse.
	ErrNotFound = errors.New("store: not found")
	// ErrInsufficientFunds: the debited wallet holds less than the amount
	// (HTTP 402 on the tip route).
	ErrInsufficientFunds = errors.New("store: insufficient funds")
	// ErrStreamNotLive: tips go to live streams only.
	ErrStreamNotLive = errors.New("store: stream is not live")
	// ErrSelfTip: a creator cannot tip their own stream.
	ErrSelfTip = errors.New("store: cannot tip yourself")
	// ErrNotCreator: the caller does not own the stream (HTTP 403).
	ErrNotCreator = errors.New("store: not the stream's creator")
	// ErrIdempotencyKeyReused: the tip idempotency key (or a deposit's
	// external reference) was already used with different parameters.
	ErrIdempotencyKeyReused = errors.New("store: idempotency key reused with different parameters")
	// ErrInvalid: an argument failed validation (empty id, amount out of
	// range, malformed username, ...). The wrapped message says which.
	ErrInvalid = errors.New("store: invalid argument")
	// ErrSchemaBehind: the database lacks a migration this binary needs
	// (readiness fails until `api -migrate` has run).
	ErrSchemaBehind = errors.New("store: database schema is behind this release")
)

// InvalidError is an argument that failed validation. It matches
// ErrInvalid with errors.Is; Reason is safe to show the caller ("amount
// must be between 1 and 100000").
type InvalidError struct{ Reason string }

func (e *InvalidError) Error() string { return ErrInvalid.Error() + ": " + e.Reason }

// Is makes errors.Is(err, ErrInvalid) true.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

func invalid(format string, a ...any) error {
	return &InvalidError{Reason: fmt.Sprintf(format, a...)}
}

// Store is what the reference application's routes and jobs need from the
// database. Two implementations pass the same contract tests: Postgres (the
// real one) and Memory (the one-command local stack only).
type Store interface {
	// Ping checks the database answers (readiness).
	Ping(ctx context.Context) error

	// StreamByUsername returns the stream with that username (matched
	// case-insensitively), or ErrNotFound.
	StreamByUsername(ctx context.Context, username string) (Stream, error)
	// StreamByID returns the stream, or ErrNotFound.
	StreamByID(ctx context.Context, id int64) (Stream, error)
	// StartStream puts the creator's stream named req.Username live. The
	// first start claims the username; a username owned by someone else
	// gives ErrNotCreator. Starting a live stream again only updates the
	// title (started_at is kept), so a retried request is harmless.
	StartStream(ctx context.Context, req StartStreamRequest) (Stream, error)
	// StopStream ends a live stream. Only its creator may (ErrNotCreator);
	// stopping a stream that is not live returns it unchanged.
	StopStream(ctx context.Context, creatorID string, streamID int64) (Stream, error)

	// Tip moves req.Amount from the tipper's wallet to the stream creator's
	// in one database transaction, together with the tip row that records
	// the idempotency key. A repeat of the same (tipper, key) returns the
	// original tip with Replayed set and moves nothing; the same key with a
	// different stream or amount is ErrIdempotencyKeyReused. A replay is
	// answered before any other check, so a retry after the stream ended
	// still gets the original tip. Otherwise: ErrInvalid, ErrNotFound,
	// ErrStreamNotLive, ErrSelfTip, ErrInsufficientFunds, and nothing is
	// written on any error.
	Tip(ctx context.Context, req TipRequest) (Tip, error)
	// Balance is the user's wallet balance; a user without a wallet has 0.
	Balance(ctx context.Context, userID string) (int64, error)
	// Credit adds amount to the user's wallet from the stripe/deposits
	// account, exactly once per externalRef (the Stripe PaymentIntent id). A
	// repeat with the same user and amount returns the original deposit with
	// Replayed set and credits nothing; the same externalRef with another
	// user or amount is ErrIdempotencyKeyReused. When a refund of
	// externalRef was recorded first (ApplyRefund before the payment), its
	// share is reversed in the same database transaction as the credit, and
	// Transfer.Reversed says how many tokens.
	Credit(ctx context.Context, userID string, amount int64, externalRef string) (Transfer, error)
	// ApplyRefund records what a charge.refunded event says about the
	// refunds of a PaymentIntent's charge and brings the deposit's reversal
	// up to it, in one transaction. It is order-independent and idempotent:
	// the facts are merged (the largest cumulative amount refunded, the
	// fully-refunded flag once set), and only the positive difference
	// between the tokens they take back (see ReversalTarget) and what was
	// already reversed or recorded as shortfall is posted. Without a
	// deposit yet the refund is recorded (RefundPending) and Credit applies
	// it later. Tokens the user already spent are not taken: they are
	// recorded as shortfall for an operator (RefundShortfall), and the user's
	// balance never goes below zero. Facts that contradict the recorded ones
	// (another charge, another charge amount) are ErrIdempotencyKeyReused;
	// malformed ones ErrInvalid.
	ApplyRefund(ctx context.Context, r Refund) (RefundResult, error)
	// RecordRefundFailure records, once per refund, that Stripe reports a
	// refund as failed or canceled. It moves no money (see the package
	// documentation, "Refunds"); a repeat returns the first record with
	// Replayed set.
	RecordRefundFailure(ctx context.Context, f RefundFailure) (RefundFailure, error)
	// RefundState is what the ledger and the recorded refunds say about one
	// PaymentIntent; the zero state (Recorded false, Deposit 0) when nothing
	// is known.
	RefundState(ctx context.Context, paymentRef string) (RefundState, error)
	// RefundExceptions lists what an operator must look at, oldest first,
	// at most limit rows (0 or less: DefaultExceptionsLimit): refunds still
	// waiting for their payment, shortfalls, and failed or canceled refunds.
	RefundExceptions(ctx context.Context, limit int) ([]RefundException, error)
	// TipsLast30Days sums the tips a creator received in the last 30 days.
	TipsLast30Days(ctx context.Context, creatorID string) (TipStats, error)
	// TippedCreators lists the creators tipped in the last 30 days, most
	// recently tipped first, at most limit (0 or less: none): whose
	// TipsLast30Days a scheduled refresh keeps current.
	TippedCreators(ctx context.Context, limit int) ([]string, error)
}

// Stream is a creator's channel and the state of its current (or last)
// broadcast. Username is lower-case.
type Stream struct {
	ID        int64      `json:"id"`
	CreatorID string     `json:"creatorId"`
	Username  string     `json:"username"`
	Title     string     `json:"title"`
	Live      bool       `json:"live"`
	Viewers   int        `json:"viewers"`
	StartedAt *time.Time `json:"startedAt,omitempty"`
	EndedAt   *time.Time `json:"endedAt,omitempty"`
}

// StartStreamRequest is the input of StartStream.
type StartStreamRequest struct {
	CreatorID string
	Username  string // 3-30 of [a-z0-9_], case-insensitive
	Title     string // at most 200 bytes
}

// TipRequest is the input of Tip.
type TipRequest struct {
	TipperID       string
	StreamID       int64
	Amount         int64 // tokens (minor units), > 0 and <= the store's MaxTipAmount
	IdempotencyKey string
}

// Tip is a recorded tip. Replayed is true when the call did not move money
// because the (tipper, key) pair had already paid: the fields then describe
// the original tip.
type Tip struct {
	ID             int64     `json:"id"`
	StreamID       int64     `json:"streamId"`
	TipperID       string    `json:"tipperId"`
	CreatorID      string    `json:"creatorId"`
	Amount         int64     `json:"amount"`
	IdempotencyKey string    `json:"-"`
	CreatedAt      time.Time `json:"createdAt"`
	Replayed       bool      `json:"-"`
}

// KindDeposit is the kind of a Transfer: a Stripe deposit.
const KindDeposit = "deposit"

// Transfer is a deposit (Credit). Replayed is true when the call changed
// nothing because it had already happened.
type Transfer struct {
	ID          int64     `json:"id"`
	Kind        string    `json:"kind"`
	UserID      string    `json:"userId"`
	Amount      int64     `json:"amount"` // tokens, positive
	ExternalRef string    `json:"externalRef"`
	CreatedAt   time.Time `json:"createdAt"`
	// Reversed is the tokens of this deposit reversed in the same
	// transaction, because its refund had been recorded first.
	Reversed int64 `json:"reversed,omitempty"`
	Replayed bool  `json:"-"`
}

// Refund is what one charge.refunded event says about the charge of a
// PaymentIntent. Amounts are the charge's currency in minor units (cents),
// not tokens.
type Refund struct {
	// PaymentRef is the PaymentIntent id: the deposit's external reference.
	PaymentRef string
	// ChargeRef is the charge id (ch_...). Optional; when given it must be
	// the same for every refund of the payment.
	ChargeRef string
	// ChargeAmount is what the charge captured. 0 means unknown, which is
	// only accepted with FullyRefunded (the share is then all of it).
	ChargeAmount int64
	// AmountRefunded is the charge's cumulative amount refunded, at most
	// ChargeAmount.
	AmountRefunded int64
	// FullyRefunded is the charge's "refunded" flag.
	FullyRefunded bool
}

// RefundOutcome says what ApplyRefund did.
type RefundOutcome string

// ApplyRefund outcomes.
const (
	// RefundReversed: tokens were reversed now.
	RefundReversed RefundOutcome = "reversed"
	// RefundPending: recorded; there is no deposit yet. Credit applies it.
	RefundPending RefundOutcome = "pending"
	// RefundUnchanged: a duplicate or an older (stale) event; nothing
	// changed.
	RefundUnchanged RefundOutcome = "unchanged"
	// RefundShortfall: the user could not cover all of it; what they had
	// was reversed and the rest recorded as shortfall for an operator.
	RefundShortfall RefundOutcome = "shortfall"
)

// RefundResult is what one ApplyRefund call did, and the state after it.
type RefundResult struct {
	Outcome RefundOutcome
	// Reversed is the tokens this call reversed.
	Reversed int64
	// Shortfall is the tokens this call could not reverse (recorded).
	Shortfall int64
	// TransactionID is the reversal's ledger transaction, 0 when none.
	TransactionID int64
	State         RefundState
}

// RefundState is one PaymentIntent's refund position.
type RefundState struct {
	PaymentRef string `json:"paymentRef"`
	// Recorded: at least one refund of the payment has been recorded.
	Recorded bool `json:"recorded"`
	// Deposit is the tokens credited for the payment (0: no deposit yet),
	// to UserID.
	Deposit int64  `json:"deposit"`
	UserID  string `json:"userId,omitempty"`
	// ChargeAmount, AmountRefunded and FullyRefunded are the merged facts.
	ChargeAmount   int64 `json:"chargeAmount"`
	AmountRefunded int64 `json:"amountRefunded"`
	FullyRefunded  bool  `json:"fullyRefunded"`
	// Target is the tokens the refunds take back (ReversalTarget); 0
	// without a deposit. Reversed + Shortfall == Target once every event
	// has been applied.
	Target    int64 `json:"target"`
	Reversed  int64 `json:"reversed"`
	Shortfall int64 `json:"shortfall"`
}

// Refund failure statuses (the Stripe Refund object's terminal unsuccessful
// states).
const (
	RefundFailed   = "failed"
	RefundCanceled = "canceled"
)

// RefundFailure is a refund Stripe reports as failed or canceled.
type RefundFailure struct {
	RefundRef  string    `json:"refundRef"`  // re_...
	PaymentRef string    `json:"paymentRef"` // the PaymentIntent
	Amount     int64     `json:"amount"`     // the refund's amount, charge currency minor units
	Status     string    `json:"status"`     // RefundFailed or RefundCanceled
	Reason     string    `json:"reason"`     // Stripe's failure_reason, [a-z_]{0,64}
	CreatedAt  time.Time `json:"createdAt"`
	Replayed   bool      `json:"-"`
}

// Refund exception kinds.
const (
	ExceptionPending        = "pending"         // refund recorded, payment not credited (yet)
	ExceptionShortfall      = "shortfall"       // tokens a refund could not take back
	ExceptionRefundFailed   = "refund_failed"   // Stripe: the refund failed
	ExceptionRefundCanceled = "refund_canceled" // Stripe: the refund was canceled
)

// RefundException is one row an operator must look at.
type RefundException struct {
	Kind       string    `json:"kind"`
	PaymentRef string    `json:"paymentRef"`
	RefundRef  string    `json:"refundRef,omitempty"` // failures only
	UserID     string    `json:"userId,omitempty"`    // when the deposit exists
	Tokens     int64     `json:"tokens,omitempty"`    // shortfall only
	Amount     int64     `json:"amount,omitempty"`    // pending: amount refunded; failures: the refund's amount (money)
	Since      time.Time `json:"since"`
}

// TipStats is a count and sum of tips.
type TipStats struct {
	Count int64 `json:"count"`
	Sum   int64 `json:"sum"`
}

// Limits shared by both implementations (and mirrored by CHECKs in the
// schema).
const (
	// DefaultMaxTipAmount caps one tip when the configuration sets no cap.
	DefaultMaxTipAmount int64 = 100_000
	// MaxCreditAmount caps one deposit, far below where bigint sums could
	// overflow.
	MaxCreditAmount int64 = 1_000_000_000_000
	maxIDLen              = 255
	maxTitleLen           = 200
	tipWindow             = 30 * 24 * time.Hour
	// DefaultExceptionsLimit caps RefundExceptions when no limit is given.
	DefaultExceptionsLimit = 100
	// SystemDepositsAccount is the system account on the other side of
	// every Stripe deposit; its balance is minus what users hold.
	SystemDepositsAccount = "stripe/deposits"
)

var usernameRE = regexp.MustCompile(`^[a-z0-9_]{3,30}$`)

// NormalizeUsername lower-cases a username and checks it is 3-30 of
// [a-z0-9_], the only form stored (and safe in cache keys).
func NormalizeUsername(s string) (string, error) {
	u := strings.ToLower(s)
	if !usernameRE.MatchString(u) {
		return "", invalid("username must be 3-30 characters of a-z, 0-9 and _")
	}
	return u, nil
}

// checkID is the store's last guard on ids and keys: PostgreSQL would
// refuse a NUL or invalid UTF-8 with an error that is no caller's fault.
func checkID(what, id string) error {
	if id == "" || len(id) > maxIDLen {
		return invalid("%s must be 1-%d bytes", what, maxIDLen)
	}
	if err := validtext.Line(what, id); err != nil {
		return &InvalidError{Reason: err.Error()}
	}
	return nil
}

// checkTip validates a tip request against the cap.
func checkTip(req TipRequest, maxAmount int64) error {
	if err := checkID("tipper id", req.TipperID); err != nil {
		return err
	}
	if err := checkID("idempotency key", req.IdempotencyKey); err != nil {
		return err
	}
	if req.StreamID <= 0 {
		return invalid("stream id must be positive")
	}
	if req.Amount <= 0 || req.Amount > maxAmount {
		return invalid("amount must be between 1 and %d", maxAmount)
	}
	return nil
}

func checkStart(req StartStreamRequest) (StartStreamRequest, error) {
	if err := checkID("creator id", req.CreatorID); err != nil {
		return req, err
	}
	u, err := NormalizeUsername(req.Username)
	if err != nil {
		return req, err
	}
	req.Username = u
	if len(req.Title) > maxTitleLen {
		return req, invalid("title must be at most %d bytes", maxTitleLen)
	}
	if err := validtext.Line("title", req.Title); err != nil {
		return req, &InvalidError{Reason: err.Error()}
	}
	return req, nil
}

func checkCredit(userID string, amount int64, externalRef string) error {
	if err := checkID("user id", userID); err != nil {
		return err
	}
	if err := checkID("external reference", externalRef); err != nil {
		return err
	}
	if amount <= 0 || amount > MaxCreditAmount {
		return invalid("amount must be between 1 and %d", MaxCreditAmount)
	}
	return nil
}

// sameTip reports whether a stored tip answers req (a replay) or the key
// was reused for something else.
func sameTip(t Tip, req TipRequest) bool {
	return t.StreamID == req.StreamID && t.Amount == req.Amount
}
