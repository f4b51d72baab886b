package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Postgres is the Store on PostgreSQL (pgx v5). Every money movement is one
// READ COMMITTED transaction that locks the wallets it touches in id order
// (no deadlocks between opposite tips), and the schema's CHECKs and unique
// constraints refuse what the Go checks should already have refused.
type Postgres struct {
	pool      *pgxpool.Pool
	maxTip    int64
	log       *slog.Logger
	schemaOK  atomic.Bool // CheckSchema passed once; migrations are never undone
	hook      func(op string)
	followUps FollowUps
}

// FollowUps write the work that follows a change inside the change's own
// transaction, so that work is committed with the change or not at all: the
// API enqueues its jobs into the outbox (package outbox) through them, and
// the relay publishes them only once the transaction committed. An error
// from a function rolls the change back and is returned wrapped; so does
// any failure after it, up to the commit. A transaction that PostgreSQL
// aborts on a race (a serialization failure or deadlock) is run again,
// functions included: only the committed run's writes remain.
type FollowUps struct {
	// Tip runs in Tip's transaction once the tip row is written and before
	// the wallets are locked, so the follow-ups do not lengthen the time a
	// popular creator's wallet is held; a refusal after it (insufficient
	// funds) rolls them back with the tip. A replayed tip does not run it
	// again: the original transaction did. Its statements are pipelined
	// (see Pipeline): they travel with the transfer's first one.
	Tip func(ctx context.Context, tx Pipeline, t Tip) error
	// StreamChange runs last in StartStream's or StopStream's transaction
	// when the stream went live or ended; st is the stream after the
	// change. A start of a live stream (a retry, a new title) and a stop of
	// an ended one change no state and do not run it.
	StreamChange func(ctx context.Context, tx pgx.Tx, st Stream) error
}

// Pipeline is the transaction as a tip's follow-ups see it: Exec queues
// the statement and returns at once with an empty tag and no error, and the
// queued statements are sent in one round trip with the transaction's next
// one. A statement that fails there fails the tip, its error wrapped as
// any follow-up's. The outbox then costs a tip its insert but no round trip
// of its own. Exec only: a follow-up cannot read in a pipeline
// (outbox.Enqueue never does).
type Pipeline interface {
	Exec(ctx context.Context, sql string, arguments ...any) (pgconn.CommandTag, error)
}

type pipeline struct{ b *pgx.Batch }

func (p pipeline) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	p.b.Queue(sql, args...)
	return pgconn.CommandTag{}, nil
}

// WithFollowUps returns a Postgres on the same pool whose Tip, StartStream
// and StopStream run f in their transactions. s itself is unchanged, so one
// pool can serve a store with follow-ups (the API's) and one without (the
// worker's job handlers).
func (s *Postgres) WithFollowUps(f FollowUps) *Postgres {
	return &Postgres{pool: s.pool, maxTip: s.maxTip, log: s.log, hook: s.hook, followUps: f}
}

// Pool is the connection pool the store runs on; the outbox relay claims
// the follow-up jobs through it. The caller of NewPostgres still owns it.
func (s *Postgres) Pool() *pgxpool.Pool { return s.pool }

var _ Store = (*Postgres)(nil)

// NewPostgres wraps a pool whose database has been migrated (see Migrate).
// The caller owns the pool.
func NewPostgres(pool *pgxpool.Pool, opts Options) (*Postgres, error) {
	if pool == nil {
		return nil, invalid("nil pool")
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	return &Postgres{pool: pool, maxTip: opts.MaxTipAmount, log: opts.Logger}, nil
}

// Constraint names the code maps to sentinels.
const (
	conBalance     = "accounts_balance_nonnegative"
	conTipKey      = "tips_tipper_key_unique"
	conTipSelf     = "tips_not_self"
	conExternalRef = "ledger_transactions_external_ref_key"
)

// errTaken: an idempotency key (or external ref) was claimed by a
// concurrent transaction that committed first; the caller re-reads it.
var errTaken = errors.New("store: key taken concurrently")

// mapErr turns PostgreSQL errors the schema raises on purpose into
// sentinels; anything else is returned wrapped.
func mapErr(err error) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return err
	}
	switch {
	case pe.Code == "23514" && pe.ConstraintName == conBalance: // check_violation
		return ErrInsufficientFunds
	case pe.Code == "23514" && pe.ConstraintName == conTipSelf:
		return ErrSelfTip
	case pe.Code == "23505" && (pe.ConstraintName == conTipKey || pe.ConstraintName == conExternalRef):
		return errTaken
	case pe.Code == "23503": // foreign_key_violation: the stream vanished
		return ErrNotFound
	case pe.Code == "22003" || pe.Code == "23514": // numeric out of range, other CHECKs
		return invalid("refused by the database (%s)", pe.ConstraintName)
	}
	return fmt.Errorf("store: %w", err)
}

// retryable: the transaction lost a race PostgreSQL resolves by aborting
// one side (serialization failure, deadlock); running it again is safe.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

func (s *Postgres) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	for attempt := 0; ; attempt++ {
		err := pgx.BeginFunc(ctx, s.pool, fn)
		if err != nil && retryable(err) && attempt < 3 {
			continue
		}
		if err != nil {
			return mapErr(err)
		}
		return nil
	}
}

// Ping checks the database answers and holds every migration this binary
// needs (see CheckSchema), so an instance started before its release's
// migration has run stays unready instead of failing requests.
func (s *Postgres) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return err
	}
	if s.schemaOK.Load() {
		return nil
	}
	if err := CheckSchema(ctx, s.pool); err != nil {
		return err
	}
	s.schemaOK.Store(true)
	return nil
}

const streamCols = `id, creator_id, username, title, live, viewers, started_at, ended_at`

// scanStream reads streamCols, then into extra any further columns.
func scanStream(row pgx.Row, extra ...any) (Stream, error) {
	var st Stream
	dest := append([]any{&st.ID, &st.CreatorID, &st.Username, &st.Title, &st.Live, &st.Viewers, &st.StartedAt, &st.EndedAt}, extra...)
	err := row.Scan(dest...)
	if errors.Is(err, pgx.ErrNoRows) {
		return Stream{}, ErrNotFound
	}
	if err != nil {
		return Stream{}, mapErr(err)
	}
	return st, nil
}

// StreamByUsername implements Store.
func (s *Postgres) StreamByUsername(ctx context.Context, username string) (Stream, error) {
	u, err := NormalizeUsername(username)
	if err != nil {
		return Stream{}, ErrNotFound // no stream can have a malformed name
	}
	return scanStream(s.pool.QueryRow(ctx, `SELECT `+streamCols+` FROM streams WHERE username = $1`, u))
}

// StreamByID implements Store.
func (s *Postgres) StreamByID(ctx context.Context, id int64) (Stream, error) {
	return scanStream(s.pool.QueryRow(ctx, `SELECT `+streamCols+` FROM streams WHERE id = $1`, id))
}

// StartStream implements Store.
func (s *Postgres) StartStream(ctx context.Context, req StartStreamRequest) (Stream, error) {
	req, err := checkStart(req)
	if err != nil {
		return Stream{}, err
	}
	// One statement: claim the username or restart our own stream. The
	// WHERE on the conflict branch makes a foreign username return no row.
	// began: this statement put the stream live (a new broadcast starts at
	// the transaction's now(); a live one keeps its started_at, even when a
	// concurrent start won the row first).
	st, err := s.changeStream(ctx, func(q querier) (Stream, bool, error) {
		var began bool
		st, err := scanStream(q.QueryRow(ctx, `
			INSERT INTO streams (creator_id, username, title, live, viewers, started_at)
			VALUES ($1, $2, $3, true, 0, now())
			ON CONFLICT (username) DO UPDATE SET
				title      = EXCLUDED.title,
				started_at = CASE WHEN streams.live THEN streams.started_at ELSE now() END,
				viewers    = CASE WHEN streams.live THEN streams.viewers ELSE 0 END,
				ended_at   = NULL,
				live       = true
			WHERE streams.creator_id = EXCLUDED.creator_id
			RETURNING `+streamCols+`, started_at = now()`, req.CreatorID, req.Username, req.Title), &began)
		return st, began, err
	})
	if errors.Is(err, ErrNotFound) {
		return Stream{}, ErrNotCreator
	}
	return st, err
}

// changeStream runs one stream change: a single statement on the pool, or,
// with a StreamChange follow-up, in a transaction that also runs the
// follow-up when change reports that the stream went live or ended.
func (s *Postgres) changeStream(ctx context.Context, change func(querier) (Stream, bool, error)) (Stream, error) {
	if s.followUps.StreamChange == nil {
		st, _, err := change(s.pool)
		return st, err
	}
	var st Stream
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var changed bool
		var err error
		if st, changed, err = change(tx); err != nil || !changed {
			return err
		}
		if err := s.followUps.StreamChange(ctx, tx, st); err != nil {
			return fmt.Errorf("store: stream follow-up: %w", err)
		}
		return nil
	})
	return st, err
}

// StopStream implements Store.
func (s *Postgres) StopStream(ctx context.Context, creatorID string, streamID int64) (Stream, error) {
	if err := checkID("creator id", creatorID); err != nil {
		return Stream{}, err
	}
	st, err := s.changeStream(ctx, func(q querier) (Stream, bool, error) {
		st, err := scanStream(q.QueryRow(ctx, `
			UPDATE streams SET live = false, viewers = 0, ended_at = now()
			WHERE id = $1 AND creator_id = $2 AND live
			RETURNING `+streamCols, streamID, creatorID))
		return st, err == nil, err
	})
	if !errors.Is(err, ErrNotFound) {
		return st, err
	}
	// Nothing updated: tell apart missing, foreign and already stopped.
	st, err = s.StreamByID(ctx, streamID)
	if err != nil {
		return Stream{}, err
	}
	if st.CreatorID != creatorID {
		return Stream{}, ErrNotCreator
	}
	return st, nil
}

// querier is a pool or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

const tipCols = `id, stream_id, tipper_id, creator_id, amount, idempotency_key, created_at`

func (s *Postgres) tipByKey(ctx context.Context, tipperID, key string) (Tip, bool, error) {
	var t Tip
	err := s.pool.QueryRow(ctx, `SELECT `+tipCols+` FROM tips WHERE tipper_id = $1 AND idempotency_key = $2`, tipperID, key).
		Scan(&t.ID, &t.StreamID, &t.TipperID, &t.CreatorID, &t.Amount, &t.IdempotencyKey, &t.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Tip{}, false, nil
	}
	if err != nil {
		return Tip{}, false, mapErr(err)
	}
	return t, true, nil
}

func (s *Postgres) replayTip(t Tip, req TipRequest) (Tip, error) {
	if !sameTip(t, req) {
		s.log.Info("tip idempotency key reused with different parameters", "tip_id", t.ID)
		return Tip{}, ErrIdempotencyKeyReused
	}
	s.log.Info("tip replayed", "tip_id", t.ID)
	t.Replayed = true
	return t, nil
}

// Tip implements Store.
func (s *Postgres) Tip(ctx context.Context, req TipRequest) (Tip, error) {
	if err := checkTip(req, s.maxTip); err != nil {
		return Tip{}, err
	}
	if t, ok, err := s.tipByKey(ctx, req.TipperID, req.IdempotencyKey); err != nil || ok {
		if err != nil {
			return Tip{}, err
		}
		return s.replayTip(t, req)
	}
	var out Tip
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var creatorID string
		var live bool
		// FOR SHARE: a concurrent StopStream waits for this tip, so no tip
		// commits after the stream's ended_at.
		err := tx.QueryRow(ctx, `SELECT creator_id, live FROM streams WHERE id = $1 FOR SHARE`, req.StreamID).Scan(&creatorID, &live)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return ErrNotFound
		case err != nil:
			return err
		case !live:
			return ErrStreamNotLive
		case creatorID == req.TipperID:
			return ErrSelfTip
		}
		var txID int64
		if err := tx.QueryRow(ctx, `INSERT INTO ledger_transactions (kind) VALUES ('tip') RETURNING id`).Scan(&txID); err != nil {
			return err
		}
		// Claim the key first. A concurrent claim of the same key makes
		// this wait for that transaction; if it commits we get no row and
		// answer with its tip instead.
		out = Tip{StreamID: req.StreamID, TipperID: req.TipperID, CreatorID: creatorID, Amount: req.Amount, IdempotencyKey: req.IdempotencyKey}
		err = tx.QueryRow(ctx, `
			INSERT INTO tips (stream_id, tipper_id, creator_id, amount, idempotency_key, transaction_id)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT ON CONSTRAINT `+conTipKey+` DO NOTHING
			RETURNING id, created_at`,
			req.StreamID, req.TipperID, creatorID, req.Amount, req.IdempotencyKey, txID).Scan(&out.ID, &out.CreatedAt)
		if errors.Is(err, pgx.ErrNoRows) {
			return errTaken
		}
		if err != nil {
			return err
		}
		queued := &pgx.Batch{}
		if s.followUps.Tip != nil {
			if err := s.followUps.Tip(ctx, pipeline{queued}, out); err != nil {
				return fmt.Errorf("store: tip follow-ups: %w", err)
			}
		}
		if err := transfer(ctx, tx, queued, txID, req.TipperID, creatorID, req.Amount); err != nil {
			return err
		}
		s.beforeCommit("tip")
		return nil
	})
	if errors.Is(err, errTaken) {
		t, ok, err := s.tipByKey(ctx, req.TipperID, req.IdempotencyKey)
		if err != nil {
			return Tip{}, err
		}
		if !ok { // the winner rolled back after all; the client may retry
			return Tip{}, fmt.Errorf("store: concurrent tip with the same key did not commit; retry")
		}
		return s.replayTip(t, req)
	}
	if err != nil {
		return Tip{}, err
	}
	return out, nil
}

// transfer posts the two entries of a user-to-user movement. It locks both
// wallets in id order, so opposite transfers cannot deadlock, and checks
// the balance itself for a clear error; the CHECK constraint is the guard
// behind it. The statements queued in followUps (a Pipeline's) are sent
// with its first statement, in one round trip.
func transfer(ctx context.Context, tx pgx.Tx, followUps *pgx.Batch, txID int64, from, to string, amount int64) error {
	n := followUps.Len()
	followUps.Queue(`INSERT INTO accounts (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING`, to)
	br := tx.SendBatch(ctx, followUps)
	for i := range n + 1 {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			if i < n {
				return fmt.Errorf("store: tip follow-ups: %w", err)
			}
			return err
		}
	}
	if err := br.Close(); err != nil {
		return err
	}
	rows, err := tx.Query(ctx, `SELECT id, user_id, balance FROM accounts WHERE user_id = ANY($1) ORDER BY id FOR UPDATE`, []string{from, to})
	if err != nil {
		return err
	}
	var fromID, toID, balance int64
	for rows.Next() {
		var id, bal int64
		var user string
		if err := rows.Scan(&id, &user, &bal); err != nil {
			return err
		}
		if user == from {
			fromID, balance = id, bal
		} else {
			toID = id
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if fromID == 0 || balance < amount {
		return ErrInsufficientFunds
	}
	_, err = tx.Exec(ctx, `INSERT INTO ledger_entries (transaction_id, account_id, amount) VALUES ($1, $2, $3), ($1, $4, $5)`,
		txID, fromID, -amount, toID, amount)
	return err
}

// Balance implements Store.
func (s *Postgres) Balance(ctx context.Context, userID string) (int64, error) {
	var b int64
	err := s.pool.QueryRow(ctx, `SELECT balance FROM accounts WHERE user_id = $1`, userID).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, mapErr(err)
	}
	return b, nil
}

// paymentLockClass namespaces the per-payment advisory locks ("jobr" in
// ASCII, recognisable in pg_locks next to the migration lock).
const paymentLockClass int32 = 0x6a6f6272

// lockPayment serialises every transaction about one payment reference (its
// credit and its refunds) whether or not its rows exist yet. Row locks
// cannot: a refund and its payment committing at the same moment would each
// miss the other's uncommitted row, and the refund would never be applied.
// Held to the end of the transaction; taken before any wallet lock.
func lockPayment(ctx context.Context, tx pgx.Tx, ref string) error {
	_, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`, paymentLockClass, ref)
	return err
}

// deposit is a deposit with the wallet it credited and what is reversed.
type deposit struct {
	Transfer
	accountID int64
	reversed  int64 // tokens reversed so far (the last step's reversed_total)
}

// depositByRef reads a deposit and how much of it is reversed.
func depositByRef(ctx context.Context, q querier, ref string) (deposit, bool, error) {
	// The trigger ledger_reversal_within_deposit keeps every step's
	// reversed_total equal to the running sum, so the largest is the total.
	const query = `
		SELECT d.id, d.created_at, a.id, a.user_id, e.amount,
		       coalesce((SELECT max(r.reversed_total) FROM ledger_transactions r WHERE r.reverses_id = d.id), 0)
		FROM ledger_transactions d
		JOIN ledger_entries e ON e.transaction_id = d.id
		JOIN accounts a ON a.id = e.account_id AND a.user_id IS NOT NULL
		WHERE d.external_ref = $1 AND d.kind = 'deposit'`
	var d deposit
	err := q.QueryRow(ctx, query, ref).Scan(&d.ID, &d.CreatedAt, &d.accountID, &d.UserID, &d.Amount, &d.reversed)
	if errors.Is(err, pgx.ErrNoRows) {
		return deposit{}, false, nil
	}
	if err != nil {
		return deposit{}, false, mapErr(err)
	}
	d.Kind, d.ExternalRef = KindDeposit, ref
	return d, true, nil
}

// refundRow is a stripe_refunds row.
type refundRow struct {
	refundFacts
	shortfall int64
}

func readRefund(ctx context.Context, q querier, ref string) (refundRow, bool, error) {
	var r refundRow
	err := q.QueryRow(ctx, `
		SELECT coalesce(charge_ref, ''), charge_amount, amount_refunded, fully_refunded, shortfall
		FROM stripe_refunds WHERE payment_ref = $1`, ref).
		Scan(&r.ChargeRef, &r.ChargeAmount, &r.AmountRefunded, &r.FullyRefunded, &r.shortfall)
	if errors.Is(err, pgx.ErrNoRows) {
		return refundRow{}, false, nil
	}
	if err != nil {
		return refundRow{}, false, mapErr(err)
	}
	return r, true, nil
}

// postReversal posts one reversal step of amount tokens, bringing the
// deposit's reversed total to total. The caller holds the payment lock and
// has locked the wallet (user wallet, then the system account: the lock
// order of every money movement).
func postReversal(ctx context.Context, tx pgx.Tx, dep deposit, total, amount int64) (int64, error) {
	var txID int64
	err := tx.QueryRow(ctx, `INSERT INTO ledger_transactions (kind, reverses_id, reversed_total) VALUES ('reversal', $1, $2) RETURNING id`,
		dep.ID, total).Scan(&txID)
	if err != nil {
		return 0, err
	}
	_, err = tx.Exec(ctx, `
		INSERT INTO ledger_entries (transaction_id, account_id, amount)
		SELECT $1, id, CASE WHEN user_id IS NULL THEN $2::bigint ELSE -$2::bigint END
		FROM accounts WHERE id = $3 OR system_name = $4
		ORDER BY id`, txID, amount, dep.accountID, SystemDepositsAccount)
	return txID, err
}

func (s *Postgres) replayCredit(dep Transfer, userID string, amount int64) (Transfer, error) {
	if dep.UserID != userID || dep.Amount != amount {
		s.log.Info("deposit reference reused with different parameters", "transaction_id", dep.ID)
		return Transfer{}, ErrIdempotencyKeyReused
	}
	s.log.Info("deposit replayed", "transaction_id", dep.ID)
	dep.Replayed = true
	return dep, nil
}

// beforeCommit runs a test hook at the end of a money transaction (after
// its follow-ups), when its locks are held and nothing is committed yet.
func (s *Postgres) beforeCommit(op string) {
	if s.hook != nil {
		s.hook(op)
	}
}

// Credit implements Store.
func (s *Postgres) Credit(ctx context.Context, userID string, amount int64, externalRef string) (Transfer, error) {
	if err := checkCredit(userID, amount, externalRef); err != nil {
		return Transfer{}, err
	}
	if dep, ok, err := depositByRef(ctx, s.pool, externalRef); err != nil || ok {
		if err != nil {
			return Transfer{}, err
		}
		return s.replayCredit(dep.Transfer, userID, amount)
	}
	var out Transfer
	var reversalID int64
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		out, reversalID = Transfer{Kind: KindDeposit, UserID: userID, Amount: amount, ExternalRef: externalRef}, 0
		if err := lockPayment(ctx, tx, externalRef); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO accounts (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING`, userID); err != nil {
			return err
		}
		dep := deposit{Transfer: out}
		// Lock order everywhere: user wallets (by id), then the system
		// account (its row is locked by the entry trigger).
		if err := tx.QueryRow(ctx, `SELECT id FROM accounts WHERE user_id = $1 FOR UPDATE`, userID).Scan(&dep.accountID); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `
			INSERT INTO ledger_transactions (kind, external_ref) VALUES ('deposit', $1)
			ON CONFLICT (external_ref) DO NOTHING RETURNING id, created_at`, externalRef).Scan(&out.ID, &out.CreatedAt)
		if errors.Is(err, pgx.ErrNoRows) {
			return errTaken
		}
		if err != nil {
			return err
		}
		dep.ID = out.ID
		_, err = tx.Exec(ctx, `
			INSERT INTO ledger_entries (transaction_id, account_id, amount)
			SELECT $1, id, CASE WHEN user_id IS NULL THEN -$2::bigint ELSE $2::bigint END
			FROM accounts WHERE user_id = $3 OR system_name = $4
			ORDER BY id`, out.ID, amount, userID, SystemDepositsAccount)
		if err != nil {
			return err
		}
		// A refund recorded before its payment is applied here, in the
		// credit's transaction: the tokens were never spendable. The
		// wallet now holds at least amount, so it always covers the share.
		rf, ok, err := readRefund(ctx, tx, externalRef)
		if err != nil {
			return err
		}
		if t := rf.target(amount); ok && t > 0 {
			if reversalID, err = postReversal(ctx, tx, dep, t, t); err != nil {
				return err
			}
			out.Reversed = t
		}
		s.beforeCommit("credit")
		return nil
	})
	if errors.Is(err, errTaken) {
		dep, ok, err := depositByRef(ctx, s.pool, externalRef)
		if err != nil {
			return Transfer{}, err
		}
		if !ok {
			return Transfer{}, fmt.Errorf("store: concurrent deposit with the same reference did not commit; retry")
		}
		return s.replayCredit(dep.Transfer, userID, amount)
	}
	if err != nil {
		return Transfer{}, err
	}
	s.log.Info("deposit credited", "transaction_id", out.ID)
	if out.Reversed > 0 {
		s.log.Info("refund recorded before its payment applied with the credit",
			"transaction_id", reversalID, "tokens", out.Reversed)
	}
	return out, nil
}

// ApplyRefund implements Store.
func (s *Postgres) ApplyRefund(ctx context.Context, r Refund) (RefundResult, error) {
	if err := checkRefund(r); err != nil {
		return RefundResult{}, err
	}
	var res RefundResult
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		if res, err = s.applyRefund(ctx, tx, r); err != nil {
			return err
		}
		s.beforeCommit("refund")
		return nil
	})
	if err != nil {
		return RefundResult{}, err
	}
	// Record ids only: the user is found from the transaction, and a
	// user's id is PII in a log line.
	switch res.Outcome {
	case RefundPending:
		s.log.Info("refund recorded before its payment; applied when it is credited")
	case RefundReversed:
		s.log.Info("deposit reversed", "transaction_id", res.TransactionID, "tokens", res.Reversed)
	case RefundShortfall:
		s.log.Warn("refund exceeds what the user still holds: the rest is recorded as shortfall for an operator",
			"transaction_id", res.TransactionID, "tokens", res.Reversed, "shortfall", res.Shortfall)
	}
	return res, nil
}

func (s *Postgres) applyRefund(ctx context.Context, tx pgx.Tx, r Refund) (RefundResult, error) {
	if err := lockPayment(ctx, tx, r.PaymentRef); err != nil {
		return RefundResult{}, err
	}
	row, _, err := readRefund(ctx, tx, r.PaymentRef)
	if err != nil {
		return RefundResult{}, err
	}
	facts, changed, err := row.merge(r)
	if err != nil {
		return RefundResult{}, err
	}
	if changed {
		_, err := tx.Exec(ctx, `
			INSERT INTO stripe_refunds (payment_ref, charge_ref, charge_amount, amount_refunded, fully_refunded)
			VALUES ($1, nullif($2, ''), $3, $4, $5)
			ON CONFLICT (payment_ref) DO UPDATE SET
				charge_ref = EXCLUDED.charge_ref, charge_amount = EXCLUDED.charge_amount,
				amount_refunded = EXCLUDED.amount_refunded, fully_refunded = EXCLUDED.fully_refunded,
				updated_at = now()`,
			r.PaymentRef, facts.ChargeRef, facts.ChargeAmount, facts.AmountRefunded, facts.FullyRefunded)
		if err != nil {
			return RefundResult{}, err
		}
	}
	dep, ok, err := depositByRef(ctx, tx, r.PaymentRef)
	if err != nil {
		return RefundResult{}, err
	}
	res := RefundResult{State: refundState(r.PaymentRef, true, facts, row.shortfall, dep, ok)}
	owed := res.State.Target - res.State.Reversed - res.State.Shortfall
	switch {
	case !ok && changed:
		res.Outcome = RefundPending
		return res, nil
	case owed <= 0:
		res.Outcome = RefundUnchanged
		return res, nil
	}
	var balance int64
	if err := tx.QueryRow(ctx, `SELECT balance FROM accounts WHERE id = $1 FOR UPDATE`, dep.accountID).Scan(&balance); err != nil {
		return RefundResult{}, err
	}
	res.Reversed = min(owed, balance)
	res.Shortfall = owed - res.Reversed
	if res.Reversed > 0 {
		if res.TransactionID, err = postReversal(ctx, tx, dep, dep.reversed+res.Reversed, res.Reversed); err != nil {
			return RefundResult{}, err
		}
	}
	if res.Shortfall > 0 {
		_, err := tx.Exec(ctx, `
			UPDATE stripe_refunds SET shortfall = shortfall + $2, shortfall_at = coalesce(shortfall_at, now()), updated_at = now()
			WHERE payment_ref = $1`, r.PaymentRef, res.Shortfall)
		if err != nil {
			return RefundResult{}, err
		}
	}
	res.State.Reversed += res.Reversed
	res.State.Shortfall += res.Shortfall
	res.Outcome = RefundReversed
	if res.Shortfall > 0 {
		res.Outcome = RefundShortfall
	}
	return res, nil
}

// refundState assembles a RefundState from the merged facts and the
// deposit (when found).
func refundState(ref string, recorded bool, f refundFacts, shortfall int64, dep deposit, found bool) RefundState {
	st := RefundState{PaymentRef: ref, Recorded: recorded, ChargeAmount: f.ChargeAmount,
		AmountRefunded: f.AmountRefunded, FullyRefunded: f.FullyRefunded, Shortfall: shortfall}
	if found {
		st.Deposit, st.UserID, st.Reversed = dep.Amount, dep.UserID, dep.reversed
		if recorded {
			st.Target = f.target(dep.Amount)
		}
	}
	return st
}

// RefundState implements Store.
func (s *Postgres) RefundState(ctx context.Context, paymentRef string) (RefundState, error) {
	if err := checkID("payment reference", paymentRef); err != nil {
		return RefundState{}, err
	}
	var st RefundState
	// One snapshot, so the deposit and the refund row agree.
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		row, recorded, err := readRefund(ctx, tx, paymentRef)
		if err != nil {
			return err
		}
		dep, found, err := depositByRef(ctx, tx, paymentRef)
		if err != nil {
			return err
		}
		st = refundState(paymentRef, recorded, row.refundFacts, row.shortfall, dep, found)
		return nil
	})
	if err != nil {
		return RefundState{}, mapErr(err)
	}
	return st, nil
}

// RecordRefundFailure implements Store.
func (s *Postgres) RecordRefundFailure(ctx context.Context, f RefundFailure) (RefundFailure, error) {
	if err := checkRefundFailure(f); err != nil {
		return RefundFailure{}, err
	}
	out := f
	err := s.pool.QueryRow(ctx, `
		INSERT INTO stripe_refund_failures (refund_ref, payment_ref, amount, status, reason) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (refund_ref) DO NOTHING RETURNING created_at`,
		f.RefundRef, f.PaymentRef, f.Amount, f.Status, f.Reason).Scan(&out.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		// Recorded before (refund.failed and refund.updated both report
		// one failure): the first record stands.
		err = s.pool.QueryRow(ctx, `
			SELECT payment_ref, amount, status, reason, created_at FROM stripe_refund_failures WHERE refund_ref = $1`, f.RefundRef).
			Scan(&out.PaymentRef, &out.Amount, &out.Status, &out.Reason, &out.CreatedAt)
		if err != nil {
			return RefundFailure{}, mapErr(err)
		}
		if out.PaymentRef != f.PaymentRef {
			return RefundFailure{}, fmt.Errorf("%w: the refund was recorded for another payment", ErrIdempotencyKeyReused)
		}
		out.Replayed = true
		return out, nil
	}
	if err != nil {
		return RefundFailure{}, mapErr(err)
	}
	s.log.Warn("refund failed or canceled at Stripe; recorded for an operator (tokens are not re-credited automatically)", "status", f.Status, "reason", f.Reason)
	return out, nil
}

// RefundExceptions implements Store.
func (s *Postgres) RefundExceptions(ctx context.Context, limit int) ([]RefundException, error) {
	if limit <= 0 {
		limit = DefaultExceptionsLimit
	}
	rows, err := s.pool.Query(ctx, `
		SELECT kind, payment_ref, coalesce(refund_ref, ''), coalesce(user_id, ''), coalesce(tokens, 0), coalesce(amount, 0), since
		FROM refund_exceptions ORDER BY since, kind, payment_ref, refund_ref LIMIT $1`, limit)
	if err != nil {
		return nil, mapErr(err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (RefundException, error) {
		var e RefundException
		err := row.Scan(&e.Kind, &e.PaymentRef, &e.RefundRef, &e.UserID, &e.Tokens, &e.Amount, &e.Since)
		return e, err
	})
	if err != nil {
		return nil, mapErr(err)
	}
	return out, nil
}

// TippedCreators implements Store.
func (s *Postgres) TippedCreators(ctx context.Context, limit int) ([]string, error) {
	if limit <= 0 {
		return []string{}, nil
	}
	rows, err := s.pool.Query(ctx, `
		SELECT creator_id FROM tips WHERE created_at > now() - interval '30 days'
		GROUP BY creator_id ORDER BY max(created_at) DESC, creator_id LIMIT $1`, limit)
	if err != nil {
		return nil, mapErr(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, mapErr(err)
	}
	return ids, nil
}

// TipsLast30Days implements Store.
func (s *Postgres) TipsLast30Days(ctx context.Context, creatorID string) (TipStats, error) {
	if err := checkID("creator id", creatorID); err != nil {
		return TipStats{}, err
	}
	var st TipStats
	err := s.pool.QueryRow(ctx, `
		SELECT count(*), coalesce(sum(amount), 0)::bigint FROM tips
		WHERE creator_id = $1 AND created_at > now() - interval '30 days'`, creatorID).Scan(&st.Count, &st.Sum)
	if err != nil {
		return TipStats{}, mapErr(err)
	}
	return st, nil
}
