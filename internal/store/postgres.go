package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Postgres is the Store on PostgreSQL (pgx v5). Every money movement is one
// READ COMMITTED transaction that locks the wallets it touches in id order
// (no deadlocks between opposite tips), and the schema's CHECKs and unique
// constraints refuse what the Go checks should already have refused.
type Postgres struct {
	pool     *pgxpool.Pool
	maxTip   int64
	log      *slog.Logger
	schemaOK atomic.Bool // CheckSchema passed once; migrations are never undone
}

var _ Store = (*Postgres)(nil)

// NewPostgres wraps a pool whose database has been migrated (see Migrate).
// The caller owns the pool.
func NewPostgres(pool *pgxpool.Pool, opts Options) (*Postgres, error) {
	if pool == nil {
		return nil, fmt.Errorf("%w: nil pool", ErrInvalid)
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	return &Postgres{pool: pool, maxTip: opts.MaxTipAmount, log: opts.Logger}, nil
}

// Constraint names the code maps to sentinels.
const (
	conBalance      = "accounts_balance_nonnegative"
	conTipKey       = "tips_tipper_key_unique"
	conTipSelf      = "tips_not_self"
	conExternalRef  = "ledger_transactions_external_ref_key"
	conReversesOnce = "ledger_transactions_reverses_id_key"
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
	case pe.Code == "23505" && (pe.ConstraintName == conTipKey || pe.ConstraintName == conExternalRef || pe.ConstraintName == conReversesOnce):
		return errTaken
	case pe.Code == "23503": // foreign_key_violation: the stream vanished
		return ErrNotFound
	case pe.Code == "22003" || pe.Code == "23514": // numeric out of range, other CHECKs
		return fmt.Errorf("%w: refused by the database (%s)", ErrInvalid, pe.ConstraintName)
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

func scanStream(row pgx.Row) (Stream, error) {
	var st Stream
	err := row.Scan(&st.ID, &st.CreatorID, &st.Username, &st.Title, &st.Live, &st.Viewers, &st.StartedAt, &st.EndedAt)
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
	st, err := scanStream(s.pool.QueryRow(ctx, `
		INSERT INTO streams (creator_id, username, title, live, viewers, started_at)
		VALUES ($1, $2, $3, true, 0, now())
		ON CONFLICT (username) DO UPDATE SET
			title      = EXCLUDED.title,
			started_at = CASE WHEN streams.live THEN streams.started_at ELSE now() END,
			viewers    = CASE WHEN streams.live THEN streams.viewers ELSE 0 END,
			ended_at   = NULL,
			live       = true
		WHERE streams.creator_id = EXCLUDED.creator_id
		RETURNING `+streamCols, req.CreatorID, req.Username, req.Title))
	if errors.Is(err, ErrNotFound) {
		return Stream{}, ErrNotCreator
	}
	return st, err
}

// StopStream implements Store.
func (s *Postgres) StopStream(ctx context.Context, creatorID string, streamID int64) (Stream, error) {
	st, err := scanStream(s.pool.QueryRow(ctx, `
		UPDATE streams SET live = false, viewers = 0, ended_at = now()
		WHERE id = $1 AND creator_id = $2 AND live
		RETURNING `+streamCols, streamID, creatorID))
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
		s.log.Info("tip idempotency key reused with different parameters", "tipper_id", req.TipperID, "tip_id", t.ID)
		return Tip{}, ErrIdempotencyKeyReused
	}
	s.log.Info("tip replayed", "tipper_id", req.TipperID, "tip_id", t.ID)
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
		return transfer(ctx, tx, txID, req.TipperID, creatorID, req.Amount)
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
// behind it.
func transfer(ctx context.Context, tx pgx.Tx, txID int64, from, to string, amount int64) error {
	if _, err := tx.Exec(ctx, `INSERT INTO accounts (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING`, to); err != nil {
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

// depositByRef reads a deposit and, when reversed, its reversal.
func (s *Postgres) depositByRef(ctx context.Context, q querier, ref string) (dep, rev Transfer, accountID int64, found bool, err error) {
	const query = `
		SELECT d.id, d.created_at, a.id, a.user_id, e.amount, r.id, r.created_at
		FROM ledger_transactions d
		JOIN ledger_entries e ON e.transaction_id = d.id
		JOIN accounts a ON a.id = e.account_id AND a.user_id IS NOT NULL
		LEFT JOIN ledger_transactions r ON r.reverses_id = d.id
		WHERE d.external_ref = $1 AND d.kind = 'deposit'`
	var revID *int64
	var revAt *time.Time
	err = q.QueryRow(ctx, query, ref).Scan(&dep.ID, &dep.CreatedAt, &accountID, &dep.UserID, &dep.Amount, &revID, &revAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return dep, rev, 0, false, nil
	}
	if err != nil {
		return dep, rev, 0, false, mapErr(err)
	}
	dep.Kind, dep.ExternalRef = KindDeposit, ref
	if revID != nil {
		rev = Transfer{ID: *revID, Kind: KindReversal, UserID: dep.UserID, Amount: dep.Amount, ExternalRef: ref}
		if revAt != nil {
			rev.CreatedAt = *revAt
		}
	}
	return dep, rev, accountID, true, nil
}

func (s *Postgres) replayCredit(dep Transfer, userID string, amount int64) (Transfer, error) {
	if dep.UserID != userID || dep.Amount != amount {
		s.log.Info("deposit reference reused with different parameters", "user_id", userID, "transaction_id", dep.ID)
		return Transfer{}, ErrIdempotencyKeyReused
	}
	s.log.Info("deposit replayed", "user_id", userID, "transaction_id", dep.ID)
	dep.Replayed = true
	return dep, nil
}

// Credit implements Store.
func (s *Postgres) Credit(ctx context.Context, userID string, amount int64, externalRef string) (Transfer, error) {
	if err := checkCredit(userID, amount, externalRef); err != nil {
		return Transfer{}, err
	}
	if dep, _, _, ok, err := s.depositByRef(ctx, s.pool, externalRef); err != nil || ok {
		if err != nil {
			return Transfer{}, err
		}
		return s.replayCredit(dep, userID, amount)
	}
	out := Transfer{Kind: KindDeposit, UserID: userID, Amount: amount, ExternalRef: externalRef}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO accounts (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING`, userID); err != nil {
			return err
		}
		// Lock order everywhere: user wallets (by id), then the system
		// account (its row is locked by the entry trigger).
		if _, err := tx.Exec(ctx, `SELECT 1 FROM accounts WHERE user_id = $1 FOR UPDATE`, userID); err != nil {
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
		_, err = tx.Exec(ctx, `
			INSERT INTO ledger_entries (transaction_id, account_id, amount)
			SELECT $1, id, CASE WHEN user_id IS NULL THEN -$2::bigint ELSE $2::bigint END
			FROM accounts WHERE user_id = $3 OR system_name = $4
			ORDER BY id`, out.ID, amount, userID, SystemDepositsAccount)
		return err
	})
	if errors.Is(err, errTaken) {
		dep, _, _, ok, err := s.depositByRef(ctx, s.pool, externalRef)
		if err != nil {
			return Transfer{}, err
		}
		if !ok {
			return Transfer{}, fmt.Errorf("store: concurrent deposit with the same reference did not commit; retry")
		}
		return s.replayCredit(dep, userID, amount)
	}
	if err != nil {
		return Transfer{}, err
	}
	s.log.Info("deposit credited", "user_id", userID, "transaction_id", out.ID)
	return out, nil
}

// Reverse implements Store.
func (s *Postgres) Reverse(ctx context.Context, externalRef string) (Transfer, error) {
	if err := checkID("external reference", externalRef); err != nil {
		return Transfer{}, err
	}
	var out Transfer
	replayed := false
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		dep, rev, accountID, ok, err := s.depositByRef(ctx, tx, externalRef)
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		if rev.ID != 0 {
			out, replayed = rev, true
			return nil
		}
		out = Transfer{Kind: KindReversal, UserID: dep.UserID, Amount: dep.Amount, ExternalRef: externalRef}
		err = tx.QueryRow(ctx, `
			INSERT INTO ledger_transactions (kind, reverses_id) VALUES ('reversal', $1)
			ON CONFLICT (reverses_id) DO NOTHING RETURNING id, created_at`, dep.ID).Scan(&out.ID, &out.CreatedAt)
		if errors.Is(err, pgx.ErrNoRows) {
			return errTaken
		}
		if err != nil {
			return err
		}
		var balance int64
		if err := tx.QueryRow(ctx, `SELECT balance FROM accounts WHERE id = $1 FOR UPDATE`, accountID).Scan(&balance); err != nil {
			return err
		}
		if balance < dep.Amount {
			return ErrInsufficientFunds
		}
		_, err = tx.Exec(ctx, `
			INSERT INTO ledger_entries (transaction_id, account_id, amount)
			SELECT $1, id, CASE WHEN user_id IS NULL THEN $2::bigint ELSE -$2::bigint END
			FROM accounts WHERE id = $3 OR system_name = $4
			ORDER BY id`, out.ID, dep.Amount, accountID, SystemDepositsAccount)
		return err
	})
	if errors.Is(err, errTaken) {
		_, rev, _, _, rerr := s.depositByRef(ctx, s.pool, externalRef)
		if rerr != nil {
			return Transfer{}, rerr
		}
		if rev.ID == 0 {
			return Transfer{}, fmt.Errorf("store: concurrent reversal did not commit; retry")
		}
		out, replayed, err = rev, true, nil
	}
	if err != nil {
		if errors.Is(err, ErrInsufficientFunds) {
			s.log.Warn("deposit reversal refused: the user already spent the money; an operator must decide", "user_id", out.UserID)
		}
		return Transfer{}, err
	}
	out.Replayed = replayed
	if !replayed {
		s.log.Info("deposit reversed", "user_id", out.UserID, "transaction_id", out.ID)
	}
	return out, nil
}

// TipsLast30Days implements Store.
func (s *Postgres) TipsLast30Days(ctx context.Context, creatorID string) (TipStats, error) {
	var st TipStats
	err := s.pool.QueryRow(ctx, `
		SELECT count(*), coalesce(sum(amount), 0)::bigint FROM tips
		WHERE creator_id = $1 AND created_at > now() - interval '30 days'`, creatorID).Scan(&st.Count, &st.Sum)
	if err != nil {
		return TipStats{}, mapErr(err)
	}
	return st, nil
}
