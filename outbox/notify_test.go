package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/digis/jobworker/internal/metrictest"
	"github.com/digis/jobworker/internal/testwait"
	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/outbox"
)

// enqueueQuiet commits one testJob per id, each in its own transaction,
// through WithoutNotify.
func (b *bundle) enqueueQuiet(t *testing.T, ids ...string) {
	t.Helper()
	for _, id := range ids {
		err := pgx.BeginFunc(t.Context(), b.pool, func(tx pgx.Tx) error {
			_, err := outbox.EnqueueMany(t.Context(), outbox.WithoutNotify(tx), []jobs.EnqueueRequest{{Args: testJob{ID: id}}})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// A transaction that enqueues WithoutNotify sends no notification; Notify,
// outside it, does. Notifications arrive in commit order, so a sentinel on
// another channel committed after the quiet transaction must be the first
// thing the listener gets.
func TestWithoutNotifySendsNoNotification(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	listener, err := pgx.Connect(ctx, b.db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close(context.Background())
	for _, ch := range []string{outbox.Channel, "sentinel"} {
		if _, err := listener.Exec(ctx, "LISTEN "+ch); err != nil {
			t.Fatal(err)
		}
	}
	b.enqueueQuiet(t, "quiet")
	if _, err := b.pool.Exec(ctx, `SELECT pg_notify('sentinel', '')`); err != nil {
		t.Fatal(err)
	}
	if n, err := listener.WaitForNotification(ctx); err != nil || n.Channel != "sentinel" {
		t.Fatalf("first notification after the quiet commit: %+v, %v; want the sentinel", n, err)
	}
	if err := outbox.Notify(ctx, b.pool); err != nil {
		t.Fatal(err)
	}
	if n, err := listener.WaitForNotification(ctx); err != nil || n.Channel != outbox.Channel {
		t.Fatalf("after Notify: %+v, %v", n, err)
	}
	// The quiet row is an ordinary row.
	if got := b.states(t); got["pending"] != 1 {
		t.Fatalf("outbox %v", got)
	}
}

// Rows enqueued WithoutNotify go out at once when the committing process
// wakes its relay (the sweep is an hour away), or when Notify wakes a
// relay elsewhere.
func TestWakeAndNotifyPublishQuietRows(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.relay(t, func(c *outbox.Config) { c.SweepInterval = time.Hour })
	start(t, r)
	testwait.For(t, 5*time.Second, "LISTEN", func() bool {
		v, _ := metrictest.Value(t, b.reg, "jobworker_outbox_listening", nil)
		return v == 1
	})
	b.enqueueQuiet(t, ids("w", 10)...)
	r.Wake()
	testwait.For(t, 5*time.Second, "Wake to publish", func() bool { return b.recv.distinct() == 10 })
	b.enqueueQuiet(t, ids("n", 10)...)
	if err := outbox.Notify(t.Context(), b.pool); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 5*time.Second, "Notify to publish", func() bool { return b.recv.distinct() == 20 })
	if d := b.recv.duplicates(); len(d) > 0 {
		t.Fatalf("delivered more than once: %v", d)
	}
}
