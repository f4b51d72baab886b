package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/digis/jobworker/internal/pgtest"
	"github.com/digis/jobworker/internal/store"
)

// The database is the last guard: these bypass the Go code and check the
// schema itself refuses what would lose or invent money.
func TestPostgresSchemaGuards(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	s, err := store.NewPostgres(pool, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	st, err := s.StartStream(ctx, store.StartStreamRequest{CreatorID: "creator", Username: "creator"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Credit(ctx, "fan", 100, "pi_1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Tip(ctx, store.TipRequest{TipperID: "fan", StreamID: st.ID, Amount: 10, IdempotencyKey: "k"}); err != nil {
		t.Fatal(err)
	}
	// A deposit reversed by one partial step of 10 tokens: fan holds 90 + 40.
	if _, err := s.Credit(ctx, "fan", 50, "pi_2"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ApplyRefund(ctx, store.Refund{PaymentRef: "pi_2", ChargeAmount: 100, AmountRefunded: 20}); err != nil {
		t.Fatal(err)
	}
	// reversal(total, tokens, account) posts a reversal step of pi_2 by hand.
	reversal := func(total, tokens int, user string) []string {
		return []string{
			fmt.Sprintf(`INSERT INTO ledger_transactions (kind, reverses_id, reversed_total) SELECT 'reversal', id, %d FROM ledger_transactions WHERE external_ref = 'pi_2'`, total),
			fmt.Sprintf(`INSERT INTO ledger_entries (transaction_id, account_id, amount) SELECT currval(pg_get_serial_sequence('ledger_transactions','id')), id, CASE WHEN user_id IS NULL THEN %d ELSE -%d END FROM accounts WHERE user_id = '%s' OR system_name = 'stripe/deposits'`, tokens, tokens, user),
		}
	}

	cases := []struct {
		name string
		sql  []string // run in one transaction
		code string   // SQLSTATE expected
	}{
		{"negative user balance", []string{`UPDATE accounts SET balance = -1 WHERE user_id = 'fan'`}, "23514"},
		{"entry overdrawing a wallet", []string{
			`INSERT INTO ledger_transactions (kind) VALUES ('tip')`,
			`INSERT INTO ledger_entries (transaction_id, account_id, amount) SELECT currval(pg_get_serial_sequence('ledger_transactions','id')), id, -1000 FROM accounts WHERE user_id = 'fan'`,
		}, "23514"},
		{"unbalanced transaction", []string{
			`INSERT INTO ledger_transactions (kind) VALUES ('tip')`,
			`INSERT INTO ledger_entries (transaction_id, account_id, amount) SELECT currval(pg_get_serial_sequence('ledger_transactions','id')), id, 5 FROM accounts WHERE user_id = 'fan'`,
		}, "23514"},
		{"transaction without entries", []string{`INSERT INTO ledger_transactions (kind) VALUES ('tip')`}, "23514"},
		{"editing an entry", []string{`UPDATE ledger_entries SET amount = amount * 2`}, "23001"},
		{"deleting an entry", []string{`DELETE FROM ledger_entries`}, "23001"},
		{"second credit for one payment", []string{`INSERT INTO ledger_transactions (kind, external_ref) VALUES ('deposit', 'pi_1')`}, "23505"},
		{"second tip for one key", []string{
			`INSERT INTO tips (stream_id, tipper_id, creator_id, amount, idempotency_key, transaction_id) SELECT stream_id, tipper_id, creator_id, amount, idempotency_key, transaction_id FROM tips`,
		}, "23505"},
		{"self tip row", []string{
			`INSERT INTO tips (stream_id, tipper_id, creator_id, amount, idempotency_key, transaction_id) SELECT stream_id, creator_id, creator_id, amount, 'other', transaction_id FROM tips`,
		}, "23514"},
		{"non-positive tip", []string{`UPDATE tips SET amount = 0`}, "23514"},
		{"reversal beyond the deposit", reversal(60, 50, "fan"), "23514"},
		{"reversal step with a wrong running total", reversal(30, 5, "fan"), "23514"},
		{"the same reversal step twice", reversal(10, 10, "fan"), "23505"},
		{"reversal from another wallet", reversal(15, 5, "creator"), "23514"},
		{"reversal without a total", []string{`INSERT INTO ledger_transactions (kind, reverses_id) SELECT 'reversal', id FROM ledger_transactions WHERE external_ref = 'pi_2'`}, "23514"},
		{"reversal of a tip", []string{
			`INSERT INTO ledger_transactions (kind, reverses_id, reversed_total) SELECT 'reversal', transaction_id, 1 FROM tips`,
			`INSERT INTO ledger_entries (transaction_id, account_id, amount) SELECT currval(pg_get_serial_sequence('ledger_transactions','id')), id, CASE WHEN user_id IS NULL THEN 1 ELSE -1 END FROM accounts WHERE user_id = 'fan' OR system_name = 'stripe/deposits'`,
		}, "23514"},
		{"refund beyond its charge", []string{`INSERT INTO stripe_refunds (payment_ref, charge_amount, amount_refunded) VALUES ('pi_x', 10, 11)`}, "23514"},
		{"partial refund of unknown share", []string{`INSERT INTO stripe_refunds (payment_ref) VALUES ('pi_x')`}, "23514"},
		{"undated shortfall", []string{`UPDATE stripe_refunds SET shortfall = 5`}, "23514"},
		{"refund failure with a success status", []string{`INSERT INTO stripe_refund_failures (refund_ref, payment_ref, amount, status) VALUES ('re_1', 'pi_2', 1, 'succeeded')`}, "23514"},
		{"upper-case username", []string{`UPDATE streams SET username = 'Creator'`}, "23514"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				for _, q := range c.sql {
					if _, err := tx.Exec(ctx, q); err != nil {
						return err
					}
				}
				return nil
			})
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != c.code {
				t.Fatalf("err = %v, want SQLSTATE %s", err, c.code)
			}
		})
	}
	if b, _ := s.Balance(ctx, "fan"); b != 130 {
		t.Fatalf("fan balance = %d after refused writes, want 130", b)
	}
	checkLedger(t, pool)
}

func TestMigrateIdempotentAndConcurrent(t *testing.T) {
	t.Parallel()
	db := pgtest.Create(t)
	migs, err := store.Migrations()
	if err != nil || len(migs) == 0 {
		t.Fatalf("Migrations() = %d, %v", len(migs), err)
	}
	// Several processes starting at once: the advisory lock serialises them.
	_, errs := concurrently(5, func(int) (struct{}, error) { return struct{}{}, store.Migrate(context.Background(), db.Pool) })
	for _, err := range errs {
		if err != nil {
			t.Fatalf("concurrent Migrate: %v", err)
		}
	}
	if err := store.Migrate(t.Context(), db.Pool); err != nil {
		t.Fatalf("Migrate again: %v", err)
	}
	var n, max int
	if err := db.Pool.QueryRow(t.Context(), `SELECT count(*), max(version) FROM schema_migrations`).Scan(&n, &max); err != nil {
		t.Fatal(err)
	}
	if n != len(migs) || max != migs[len(migs)-1].Version {
		t.Fatalf("schema_migrations has %d rows (max %d), want %d", n, max, len(migs))
	}
	var locks int
	if err := db.Pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&locks); err != nil {
		t.Fatal(err)
	}
	if locks != 0 {
		t.Fatalf("%d advisory locks left held after Migrate", locks)
	}
}

// TestReadinessWaitsForMigrations: a binary started on a database its
// release has not migrated yet is not ready, says why, and becomes ready once
// the migration step has run.
func TestReadinessWaitsForMigrations(t *testing.T) {
	t.Parallel()
	db := pgtest.Create(t)
	var logs bytes.Buffer
	s, closeFn, err := store.Open(t.Context(), store.Config{DatabaseURL: db.URL,
		Options: store.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))}})
	if err != nil {
		t.Fatalf("Open on an unmigrated database: %v", err)
	}
	defer closeFn()
	if !strings.Contains(logs.String(), "schema is behind") {
		t.Errorf("no start-up warning; logs: %s", logs.String())
	}
	if err := s.Ping(t.Context()); !errors.Is(err, store.ErrSchemaBehind) || !strings.Contains(err.Error(), "never migrated") {
		t.Fatalf("Ping before migrating = %v, want ErrSchemaBehind", err)
	}
	// Half-way: the table exists but this release's migration is missing.
	if _, err := db.Pool.Exec(t.Context(), `CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(t.Context()); !errors.Is(err, store.ErrSchemaBehind) || !strings.Contains(err.Error(), "0001_") {
		t.Fatalf("Ping with a migration missing = %v, want ErrSchemaBehind naming it", err)
	}
	if _, err := db.Pool.Exec(t.Context(), `DROP TABLE schema_migrations`); err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(t.Context(), db.Pool); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping after migrating: %v", err)
	}
	// A newer release's migration in the database does not make this one unready.
	if _, err := db.Pool.Exec(t.Context(), `INSERT INTO schema_migrations (version, name) VALUES (9999, 'future')`); err != nil {
		t.Fatal(err)
	}
	if err := store.CheckSchema(t.Context(), db.Pool); err != nil {
		t.Fatalf("CheckSchema with a newer version present: %v", err)
	}
}

func TestOpen(t *testing.T) {
	t.Parallel()
	t.Run("memory when DATABASE_URL is empty", func(t *testing.T) {
		t.Parallel()
		s, closeFn, err := store.Open(t.Context(), store.Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer closeFn()
		if _, ok := s.(*store.Memory); !ok {
			t.Fatalf("Open without URL = %T, want *store.Memory", s)
		}
	})
	t.Run("postgres with migrate", func(t *testing.T) {
		t.Parallel()
		db := pgtest.Create(t)
		s, closeFn, err := store.Open(t.Context(), store.Config{DatabaseURL: db.URL, Migrate: true})
		if err != nil {
			t.Fatal(err)
		}
		defer closeFn()
		if _, _, err := store.SeedDemo(t.Context(), s, store.Demo{}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("bad URL does not echo it", func(t *testing.T) {
		t.Parallel()
		_, _, err := store.Open(t.Context(), store.Config{DatabaseURL: "postgres://u:s3cret@[::1"})
		if err == nil || strings.Contains(err.Error(), "s3cret") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("bad options", func(t *testing.T) {
		t.Parallel()
		if _, _, err := store.Open(t.Context(), store.Config{Options: store.Options{MaxTipAmount: -1}}); !errors.Is(err, store.ErrInvalid) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestParseMaxTipAmount(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"", store.DefaultMaxTipAmount, true},
		{"500", 500, true},
		{" 7 ", 7, true},
		{"0", 0, false},
		{"-3", 0, false},
		{"1.5", 0, false},
		{"abc", 0, false},
		{"99999999999999999999", 0, false},
	} {
		got, err := store.ParseMaxTipAmount(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseMaxTipAmount(%q) = %d, %v", c.in, got, err)
		}
	}
}

// newPostgres is a store on a fresh database whose ledger invariants are
// checked when the test ends.
func newPostgres(t *testing.T) (*store.Postgres, *pgxpool.Pool) {
	t.Helper()
	pool := pgtest.New(t)
	s, err := store.NewPostgres(pool, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { checkLedger(t, pool) })
	return s, pool
}

// TestPostgresPaymentAndRefundRace holds one side's transaction open right
// before its commit, with its writes made and its locks held, and starts
// the other side on another connection: the worst moment, where each would
// miss the other's uncommitted row. The second must wait for the first, not
// slip past it, and the end state must be the whole reversal, once.
func TestPostgresPaymentAndRefundRace(t *testing.T) {
	t.Parallel()
	for _, first := range []string{"credit", "refund"} {
		t.Run(first+" first", func(t *testing.T) {
			t.Parallel()
			s, pool := newPostgres(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			paused, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			store.SetBeforeCommit(s, func(op string) {
				if op == first {
					once.Do(func() { close(paused); <-release })
				}
			})
			ops := map[string]func() error{
				"credit": func() error { _, err := s.Credit(ctx, "fan", 100, "pi_1"); return err },
				"refund": func() error {
					_, err := s.ApplyRefund(ctx, store.Refund{PaymentRef: "pi_1", ChargeAmount: 500, AmountRefunded: 500, FullyRefunded: true})
					return err
				},
			}
			second := map[string]string{"credit": "refund", "refund": "credit"}[first]
			firstDone, secondDone := make(chan error, 1), make(chan error, 1)
			go func() { firstDone <- ops[first]() }()
			select {
			case <-paused:
			case err := <-firstDone:
				t.Fatalf("%s finished without reaching its commit: %v", first, err)
			case <-ctx.Done():
				t.Fatal("timed out waiting for the first transaction")
			}
			go func() { secondDone <- ops[second]() }()
			// Until the second is blocked on a lock (or, if the store were
			// wrong, has finished without waiting).
			var secondErr error
			secondFinished := false
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			for waiting := false; !waiting && !secondFinished; {
				select {
				case secondErr = <-secondDone:
					secondFinished = true
				case <-tick.C:
					if err := pool.QueryRow(ctx, `SELECT count(*) > 0 FROM pg_stat_activity
						WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil {
						t.Fatal(err)
					}
				case <-ctx.Done():
					t.Fatal("timed out waiting for the second transaction to block")
				}
			}
			if secondFinished {
				t.Errorf("%s committed while %s was uncommitted (err %v): it did not wait", second, first, secondErr)
			}
			close(release)
			if err := <-firstDone; err != nil {
				t.Fatalf("%s: %v", first, err)
			}
			if !secondFinished {
				secondErr = <-secondDone
			}
			if secondErr != nil {
				t.Fatalf("%s: %v", second, secondErr)
			}
			st, err := s.RefundState(ctx, "pi_1")
			if err != nil || st.Deposit != 100 || st.Reversed != 100 || st.Target != 100 {
				t.Fatalf("state = %+v, %v; want the deposit reversed once", st, err)
			}
			if got := ledgerReversed(t, pool, "pi_1"); got != 100 {
				t.Fatalf("ledger reverses %d tokens, want 100", got)
			}
			if b, _ := s.Balance(ctx, "fan"); b != 0 {
				t.Fatalf("balance %d, want 0", b)
			}
		})
	}
}

// TestPostgresCreditAppliesPendingRefundAtomically: the refund came first;
// the credit that applies it loses its database connection right before
// committing. Nothing of it may remain (no deposit without its reversal),
// the refund stays pending, and the retry credits and reverses in one
// transaction.
func TestPostgresCreditAppliesPendingRefundAtomically(t *testing.T) {
	t.Parallel()
	s, pool := newPostgres(t)
	ctx := t.Context()
	if res, err := s.ApplyRefund(ctx, store.Refund{PaymentRef: "pi_1", ChargeAmount: 400, AmountRefunded: 100}); err != nil || res.Outcome != store.RefundPending {
		t.Fatalf("refund = %+v, %v", res, err)
	}
	var killed atomic.Int64
	store.SetBeforeCommit(s, func(op string) {
		if op != "credit" || killed.Load() > 0 {
			return
		}
		var n int64
		// Every other backend of this database: the credit's is the only one busy.
		err := pool.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'idle in transaction'`).Scan(&n)
		if err != nil {
			t.Error(err)
		}
		killed.Store(n)
	})
	if _, err := s.Credit(ctx, "fan", 100, "pi_1"); err == nil {
		t.Fatal("credit committed although its connection was killed")
	}
	if killed.Load() != 1 {
		t.Fatalf("killed %d backends, want the credit's", killed.Load())
	}
	st, err := s.RefundState(ctx, "pi_1")
	if err != nil || st.Deposit != 0 || st.Reversed != 0 || !st.Recorded {
		t.Fatalf("after the failed credit: %+v, %v; want only the pending refund", st, err)
	}
	if b, _ := s.Balance(ctx, "fan"); b != 0 {
		t.Fatalf("balance %d after the failed credit", b)
	}
	tr, err := s.Credit(ctx, "fan", 100, "pi_1")
	if err != nil || tr.Replayed || tr.Reversed != 25 {
		t.Fatalf("retried credit = %+v, %v; want 25 reversed with it", tr, err)
	}
	// Same transaction: the deposit and its reversal rows share xmin.
	var same bool
	if err := pool.QueryRow(ctx, `SELECT d.xmin = r.xmin FROM ledger_transactions d JOIN ledger_transactions r ON r.reverses_id = d.id
		WHERE d.external_ref = 'pi_1'`).Scan(&same); err != nil || !same {
		t.Fatalf("deposit and reversal in one transaction: %v, %v", same, err)
	}
	if b, _ := s.Balance(ctx, "fan"); b != 75 {
		t.Fatalf("balance %d, want 75", b)
	}
}

// TestMigrationKeeps0001Reversals upgrades a database that 0001's code
// used (a whole deposit reversed once) and checks the new code sees the
// reversal: a repeat of that refund changes nothing.
func TestMigrationKeeps0001Reversals(t *testing.T) {
	t.Parallel()
	db := pgtest.Create(t)
	ctx := t.Context()
	migs, err := store.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	old := []string{
		`CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
		migs[0].SQL,
		`INSERT INTO schema_migrations (version, name) VALUES (1, 'init')`,
		`INSERT INTO accounts (user_id) VALUES ('fan')`,
	}
	for _, q := range old {
		if _, err := db.Pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	// What 0001's Credit and Reverse wrote.
	post := func(sql ...string) {
		t.Helper()
		err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
			for _, q := range sql {
				if _, err := tx.Exec(ctx, q); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	entries := func(userAmount int) string {
		return fmt.Sprintf(`INSERT INTO ledger_entries (transaction_id, account_id, amount) SELECT currval(pg_get_serial_sequence('ledger_transactions','id')), id, CASE WHEN user_id IS NULL THEN %d ELSE %d END FROM accounts WHERE user_id = 'fan' OR system_name = 'stripe/deposits'`, -userAmount, userAmount)
	}
	post(`INSERT INTO ledger_transactions (kind, external_ref) VALUES ('deposit', 'pi_old')`, entries(100))
	post(`INSERT INTO ledger_transactions (kind, reverses_id) SELECT 'reversal', id FROM ledger_transactions WHERE external_ref = 'pi_old'`, entries(-100))
	post(`INSERT INTO ledger_transactions (kind, external_ref) VALUES ('deposit', 'pi_keep')`, entries(50))

	if err := store.Migrate(ctx, db.Pool); err != nil {
		t.Fatal(err)
	}
	s, err := store.NewPostgres(db.Pool, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.RefundState(ctx, "pi_old")
	if err != nil || st != (store.RefundState{PaymentRef: "pi_old", Recorded: true, Deposit: 100, UserID: "fan", FullyRefunded: true, Target: 100, Reversed: 100}) {
		t.Fatalf("migrated reversal = %+v, %v", st, err)
	}
	if res, err := s.ApplyRefund(ctx, store.Refund{PaymentRef: "pi_old", ChargeAmount: 1000, AmountRefunded: 1000, FullyRefunded: true}); err != nil || res.Outcome != store.RefundUnchanged {
		t.Fatalf("old refund again = %+v, %v", res, err)
	}
	if res, err := s.ApplyRefund(ctx, store.Refund{PaymentRef: "pi_keep", ChargeAmount: 1000, AmountRefunded: 200}); err != nil || res.Reversed != 10 {
		t.Fatalf("partial refund after the upgrade = %+v, %v", res, err)
	}
	if b, _ := s.Balance(ctx, "fan"); b != 40 {
		t.Fatalf("balance %d, want 40", b)
	}
	checkLedger(t, db.Pool)
}

// TestPostgresReversalGuardAcrossConnections bypasses the Go code: two
// connections each post a reversal step computed from the same stale read
// (nothing reversed yet). Whichever commits second must be refused by the
// schema, so the ledger never holds steps that do not add up.
func TestPostgresReversalGuardAcrossConnections(t *testing.T) {
	t.Parallel()
	s, pool := newPostgres(t)
	ctx := t.Context()
	if _, err := s.Credit(ctx, "fan", 50, "pi_1"); err != nil {
		t.Fatal(err)
	}
	// Enough in the wallet for both steps: only the reversal guard may refuse.
	if _, err := s.Credit(ctx, "fan", 100, "pi_2"); err != nil {
		t.Fatal(err)
	}
	step := func(tokens int) (pgx.Tx, error) {
		tx, err := pool.Begin(ctx)
		if err != nil {
			return nil, err
		}
		for _, q := range []string{
			fmt.Sprintf(`INSERT INTO ledger_transactions (kind, reverses_id, reversed_total) SELECT 'reversal', id, %d FROM ledger_transactions WHERE external_ref = 'pi_1'`, tokens),
			fmt.Sprintf(`INSERT INTO ledger_entries (transaction_id, account_id, amount) SELECT currval(pg_get_serial_sequence('ledger_transactions','id')), id, CASE WHEN user_id IS NULL THEN %d ELSE -%d END FROM accounts WHERE user_id = 'fan' OR system_name = 'stripe/deposits'`, tokens, tokens),
		} {
			if _, err := tx.Exec(ctx, q); err != nil {
				_ = tx.Rollback(ctx)
				return nil, err
			}
		}
		return tx, nil
	}
	first, err := step(30)
	if err != nil {
		t.Fatal(err)
	}
	// The second waits on the wallet row the first updated; it proceeds
	// once the first commits, having computed its total (40 = 0 + 40)
	// before seeing the first step. 30 + 40 would also exceed the deposit.
	secondErr := make(chan error, 1)
	go func() {
		tx, err := step(40)
		if err == nil {
			err = tx.Commit(ctx)
		}
		secondErr <- err
	}()
	if err := first.Commit(ctx); err != nil {
		t.Fatalf("first step: %v", err)
	}
	var pe *pgconn.PgError
	if err := <-secondErr; !errors.As(err, &pe) || pe.Code != "23514" || pe.ConstraintName != "ledger_reversal_within_deposit" {
		t.Fatalf("second stale step committed or failed otherwise: %v", err)
	}
	st, err := s.RefundState(ctx, "pi_1")
	if err != nil || st.Reversed != 30 {
		t.Fatalf("state = %+v, %v; want the first step only", st, err)
	}
	if b, _ := s.Balance(ctx, "fan"); b != 120 {
		t.Fatalf("balance %d, want 120", b)
	}
}
