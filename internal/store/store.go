package store

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
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
	// user or amount is ErrIdempotencyKeyReused.
	Credit(ctx context.Context, userID string, amount int64, externalRef string) (Transfer, error)
	// Reverse undoes the deposit made for externalRef (a refund), once: a
	// repeat returns the first reversal with Replayed set. Policy when the
	// user already spent the money: nothing is written and the error is
	// ErrInsufficientFunds, so the job fails permanently and an operator
	// decides (tips already paid to creators are not clawed back
	// automatically). ErrNotFound when no deposit has that reference.
	Reverse(ctx context.Context, externalRef string) (Transfer, error)
	// TipsLast30Days sums the tips a creator received in the last 30 days.
	TipsLast30Days(ctx context.Context, creatorID string) (TipStats, error)
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

// Transfer kinds.
const (
	KindDeposit  = "deposit"
	KindReversal = "reversal"
)

// Transfer is a deposit (Credit) or its reversal (Reverse). Replayed is true
// when the call changed nothing because it had already happened.
type Transfer struct {
	ID          int64     `json:"id"`
	Kind        string    `json:"kind"`
	UserID      string    `json:"userId"`
	Amount      int64     `json:"amount"` // always positive; Kind says the direction
	ExternalRef string    `json:"externalRef"`
	CreatedAt   time.Time `json:"createdAt"`
	Replayed    bool      `json:"-"`
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
		return "", fmt.Errorf("%w: username must be 3-30 characters of a-z, 0-9 and _", ErrInvalid)
	}
	return u, nil
}

func checkID(what, id string) error {
	if id == "" || len(id) > maxIDLen {
		return fmt.Errorf("%w: %s must be 1-%d bytes", ErrInvalid, what, maxIDLen)
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
		return fmt.Errorf("%w: stream id must be positive", ErrInvalid)
	}
	if req.Amount <= 0 || req.Amount > maxAmount {
		return fmt.Errorf("%w: amount must be between 1 and %d", ErrInvalid, maxAmount)
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
		return req, fmt.Errorf("%w: title must be at most %d bytes", ErrInvalid, maxTitleLen)
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
		return fmt.Errorf("%w: amount must be between 1 and %d", ErrInvalid, MaxCreditAmount)
	}
	return nil
}

// sameTip reports whether a stored tip answers req (a replay) or the key
// was reused for something else.
func sameTip(t Tip, req TipRequest) bool {
	return t.StreamID == req.StreamID && t.Amount == req.Amount
}
