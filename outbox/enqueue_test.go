package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"

	"github.com/digis/jobworker/internal/pgtest"
	"github.com/digis/jobworker/internal/store"
	"github.com/digis/jobworker/internal/testwait"
	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/outbox"
)

func TestMigrate(t *testing.T) {
	t.Parallel()
	db := pgtest.Create(t)
	ctx := t.Context()
	if err := outbox.CheckSchema(ctx, db.Pool); !errors.Is(err, outbox.ErrSchemaBehind) {
		t.Fatalf("CheckSchema before Migrate = %v, want ErrSchemaBehind", err)
	}
	// Replicas starting at once: the advisory lock serialises them.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() { errs <- outbox.Migrate(ctx, db.Pool) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Migrate: %v", err)
		}
	}
	if err := outbox.Migrate(ctx, db.Pool); err != nil {
		t.Fatalf("Migrate again: %v", err)
	}
	if err := outbox.CheckSchema(ctx, db.Pool); err != nil {
		t.Fatalf("CheckSchema after Migrate: %v", err)
	}
	// The application's own migrations coexist: separate version tables.
	if err := store.Migrate(ctx, db.Pool); err != nil {
		t.Fatalf("store.Migrate next to the outbox: %v", err)
	}
	migs, err := outbox.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	var applied int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM `+outbox.MigrationsTable).Scan(&applied); err != nil {
		t.Fatal(err)
	}
	if applied != len(migs) {
		t.Errorf("%s has %d rows, want %d", outbox.MigrationsTable, applied, len(migs))
	}
	if err := store.CheckSchema(ctx, db.Pool); err != nil {
		t.Errorf("store schema after both migrations: %v", err)
	}
}

// Invalid jobs fail at Enqueue, inside the caller's transaction, before
// anything is written; the transaction stays usable.
func TestEnqueueInvalid(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tests := []struct {
		name    string
		args    jobs.Args
		opts    []jobs.EnqueueOption
		wantErr error
	}{
		{name: "bad option", args: testJob{ID: "a"}, opts: []jobs.EnqueueOption{jobs.WithRetries(-1)}, wantErr: jobs.ErrInvalidOption},
		{name: "Validate refuses", args: checkedJob{}, wantErr: jobs.ErrInvalidOption},
		{name: "nil args", args: nil, wantErr: jobs.ErrInvalidOption},
		{name: "bad queue", args: testJob{ID: "a"}, opts: []jobs.EnqueueOption{jobs.WithQueue("no spaces")}, wantErr: jobs.ErrInvalidOption},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := pgx.BeginFunc(t.Context(), b.pool, func(tx pgx.Tx) error {
				_, err := outbox.Enqueue(t.Context(), tx, tt.args, tt.opts...)
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("Enqueue = %v, want %v", err, tt.wantErr)
				}
				// The transaction is not aborted: the failure came before SQL.
				var one int
				return tx.QueryRow(t.Context(), "SELECT 1").Scan(&one)
			})
			if err != nil {
				t.Fatalf("transaction after a refused Enqueue: %v", err)
			}
		})
	}
	if n := b.states(t); len(n) != 0 {
		t.Errorf("rows written for invalid jobs: %v", n)
	}
	// EnqueueMany writes nothing when any request is invalid.
	_, err := outbox.EnqueueMany(t.Context(), b.pool, []jobs.EnqueueRequest{{Args: testJob{ID: "ok"}}, {Args: checkedJob{}}})
	if !errors.Is(err, jobs.ErrInvalidOption) || !strings.Contains(err.Error(), "request 1") {
		t.Errorf("EnqueueMany with an invalid request = %v", err)
	}
	if n := b.states(t); len(n) != 0 {
		t.Errorf("EnqueueMany wrote rows despite an invalid request: %v", n)
	}
}

// A row is invisible to the relay until its transaction commits, and a
// rolled-back transaction publishes nothing — checked while a started relay
// sweeps and with RunOnce sweeping explicitly.
func TestPublishedOnlyAfterCommit(t *testing.T) {
	t.Parallel()
	for _, outcome := range []string{"commit", "rollback"} {
		t.Run(outcome, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			once := b.relay(t)
			started := b.relay(t, func(c *outbox.Config) { c.Registerer = nil })
			start(t, started)
			ctx := t.Context()
			tx, err := b.pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(context.WithoutCancel(ctx))
			if _, err := outbox.Enqueue(ctx, tx, testJob{ID: "held"}); err != nil {
				t.Fatal(err)
			}
			// Sweep while the transaction is open: nothing is due.
			for range 3 {
				res, err := once.RunOnce(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if res.Published != 0 || res.Rounds != 1 {
					t.Fatalf("RunOnce with the tx open = %+v, want one empty round", res)
				}
			}
			// The started relay publishes a job committed after the held
			// one (rounds take due rows oldest first), so it has looked
			// past the held row while the transaction was open.
			b.enqueueCommitted(t, "probe")
			testwait.For(t, 5*time.Second, "the probe job", func() bool { return b.recv.count("probe") == 1 })
			if n := b.recv.count("held"); n != 0 {
				t.Fatalf("delivered %d times before commit", n)
			}
			if outcome == "rollback" {
				if err := tx.Rollback(ctx); err != nil {
					t.Fatal(err)
				}
				res, err := once.RunOnce(ctx)
				if err != nil || res.Published != 0 {
					t.Fatalf("RunOnce after rollback = %+v, %v", res, err)
				}
				// A later committed job proves the relays were live all along.
				b.enqueueCommitted(t, "after")
				testwait.For(t, 5*time.Second, "the later job", func() bool { return b.recv.count("after") == 1 })
				if n := b.recv.count("held"); n != 0 {
					t.Fatalf("rolled-back job delivered %d times", n)
				}
				// QStash may deliver before the relay records "sent".
				testwait.For(t, 5*time.Second, "only the probe and the later job, sent", func() bool {
					st := b.states(t)
					return st["sent"] == 2 && len(st) == 1
				})
				return
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			testwait.For(t, 5*time.Second, "the committed job", func() bool { return b.recv.count("held") == 1 })
		})
	}
}

// A database/sql transaction works through SQLTx.
func TestEnqueueDatabaseSQL(t *testing.T) {
	t.Parallel()
	b := setup(t)
	db, err := sql.Open("pgx", b.db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := t.Context()
	for _, commit := range []bool{false, true} {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		id := map[bool]string{false: "sql-rolled-back", true: "sql-committed"}[commit]
		if _, err := outbox.Enqueue(ctx, outbox.SQLTx(tx), testJob{ID: id}, jobs.WithRetries(1)); err != nil {
			t.Fatal(err)
		}
		if commit {
			err = tx.Commit()
		} else {
			err = tx.Rollback()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	res, err := b.relay(t).RunOnce(ctx)
	if err != nil || res.Published != 1 {
		t.Fatalf("RunOnce = %+v, %v; want 1 published", res, err)
	}
	testwait.For(t, 5*time.Second, "delivery", func() bool { return b.recv.count("sql-committed") == 1 })
	if b.recv.count("sql-rolled-back") != 0 {
		t.Error("the rolled-back database/sql job was delivered")
	}
}

// A job without a deduplication id of its own gets "outbox-<row id>"; a
// job's own id is kept, so two rows of the same logical job deliver once.
func TestDeduplicationIDs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	plain, err := outbox.Enqueue(ctx, b.pool, testJob{ID: "plain"})
	if err != nil {
		t.Fatal(err)
	}
	own1, err := outbox.Enqueue(ctx, b.pool, testJob{ID: "own"}, jobs.WithDeduplicationID("mine:1"))
	if err != nil {
		t.Fatal(err)
	}
	content, err := outbox.Enqueue(ctx, b.pool, testJob{ID: "content"}, jobs.WithContentBasedDeduplication())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{plain: outbox.DeduplicationPrefix + plain, own1: "mine:1", content: ""}
	for id, w := range want {
		var got string
		if err := b.pool.QueryRow(ctx, `SELECT coalesce(options->>'deduplication_id', '') FROM jobworker_outbox WHERE id = $1`, id).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != w {
			t.Errorf("row %s: deduplication id %q, want %q", id, got, w)
		}
	}
	r := b.relay(t)
	if _, err := r.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	// The same logical job enqueued again by another transaction.
	if _, err := outbox.Enqueue(ctx, b.pool, testJob{ID: "own"}, jobs.WithDeduplicationID("mine:1")); err != nil {
		t.Fatal(err)
	}
	res, err := r.RunOnce(ctx)
	if err != nil || res.Published != 1 || res.Deduplicated != 1 {
		t.Fatalf("second RunOnce = %+v, %v; want 1 published, deduplicated", res, err)
	}
	testwait.For(t, 5*time.Second, "deliveries", func() bool { return b.recv.distinct() == 3 })
	if d := b.recv.duplicates(); len(d) > 0 {
		t.Errorf("delivered more than once: %v", d)
	}
}

// EnqueueMany splits large inputs into several statements of one
// transaction: all rows or none.
func TestEnqueueManyLarge(t *testing.T) {
	t.Parallel()
	b := setup(t)
	reqs := make([]jobs.EnqueueRequest, 2500)
	for i := range reqs {
		reqs[i] = jobs.EnqueueRequest{Args: testJob{ID: "m-" + strconv.Itoa(i)}}
	}
	err := pgx.BeginFunc(t.Context(), b.pool, func(tx pgx.Tx) error {
		got, err := outbox.EnqueueMany(t.Context(), tx, reqs)
		if err == nil && len(got) != len(reqs) {
			t.Errorf("%d ids for %d requests", len(got), len(reqs))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if st := b.states(t); st["pending"] != 2500 {
		t.Fatalf("rows = %v, want 2500 pending", st)
	}
}
