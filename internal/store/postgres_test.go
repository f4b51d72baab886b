package store_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

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
	if b, _ := s.Balance(ctx, "fan"); b != 90 {
		t.Fatalf("fan balance = %d after refused writes, want 90", b)
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
