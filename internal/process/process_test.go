package process_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/digis/jobworker/internal/env"
	"github.com/digis/jobworker/internal/metrictest"
	"github.com/digis/jobworker/internal/pgtest"
	"github.com/digis/jobworker/internal/process"
	"github.com/digis/jobworker/internal/redisconn"
	"github.com/digis/jobworker/internal/redistest"
	"github.com/digis/jobworker/internal/testwait"
	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/outbox"
	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/qstashdev/qstashdevtest"
)

func newProcess(t *testing.T) *process.Process {
	t.Helper()
	rs := redistest.Start(t)
	p, err := process.New("test", env.Common{
		Redis: redisconn.Config{URL: rs.URL(), Timeout: time.Second}, ShutdownTimeout: 5 * time.Second,
		LogFormat: "text", LogLevel: 8, // quiet
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Without a relay in the process, OutboxCommitted wakes the relays
// elsewhere with a NOTIFY sent outside the transaction: commits arriving
// while one is in flight share the next, and the last one due still goes
// out at shutdown.
func TestOutboxCommittedNotifiesRelaysElsewhere(t *testing.T) {
	t.Parallel()
	db := pgtest.Create(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	listener, err := pgx.Connect(ctx, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close(context.Background())
	if _, err := listener.Exec(ctx, "LISTEN "+outbox.Channel); err != nil {
		t.Fatal(err)
	}
	p := newProcess(t)
	committed := p.OutboxCommitted(db.Pool, nil)

	committed()
	if _, err := listener.WaitForNotification(ctx); err != nil {
		t.Fatalf("no notification after a commit: %v", err)
	}
	const burst = 100
	for range burst {
		committed()
	}
	if _, err := listener.WaitForNotification(ctx); err != nil {
		t.Fatalf("no notification after a burst of commits: %v", err)
	}
	// Coalesced: a burst costs one or two NOTIFYs, not one per commit.
	got := 1
	for {
		wctx, wcancel := context.WithTimeout(ctx, 200*time.Millisecond) // bounds the wait for one more; none is the expected outcome
		_, err := listener.WaitForNotification(wctx)
		wcancel()
		if err != nil {
			break
		}
		got++
	}
	if got > 2 {
		t.Fatalf("%d notifications for a burst of %d commits, want them coalesced", got, burst)
	}
	committed()
	if err := p.Server.Abort(); err != nil { // the stop functions, as at shutdown
		t.Fatal(err)
	}
	if _, err := listener.WaitForNotification(ctx); err != nil {
		t.Fatalf("the last notification due was not sent at shutdown: %v", err)
	}
}

// With a relay started in the process, OutboxCommitted wakes it directly,
// without a NOTIFY: rows written WithoutNotify go out at once although the
// relay's sweep is an hour away.
func TestOutboxCommittedWakesTheLocalRelay(t *testing.T) {
	t.Parallel()
	db := pgtest.Create(t)
	ctx := t.Context()
	if err := outbox.Migrate(ctx, db.Pool); err != nil {
		t.Fatal(err)
	}
	delivered := make(chan struct{}, 10)
	worker := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { delivered <- struct{}{} }))
	defer worker.Close()
	qs := qstashdevtest.Start(t, qstashdev.Config{})
	client, err := jobs.NewClient(jobs.ClientConfig{QStashURL: qs.URL, Token: qstashdev.DevToken, WorkerPublicURL: worker.URL})
	if err != nil {
		t.Fatal(err)
	}
	p := newProcess(t)
	relay, err := p.Relay(outbox.Config{Pool: db.Pool, Publisher: client, SweepInterval: time.Hour}, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Server.Abort() })
	// Once it listens, only a notification or a wake-up can start a round.
	testwait.For(t, 10*time.Second, "the relay to listen", func() bool {
		v, _ := metrictest.Value(t, p.Registry, "jobworker_outbox_listening", nil)
		return v == 1
	})
	committed := p.OutboxCommitted(db.Pool, relay)
	err = pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		_, err := outbox.Enqueue(ctx, outbox.WithoutNotify(tx), wakeJob{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	committed()
	select {
	case <-delivered:
	case <-time.After(10 * time.Second):
		t.Fatal("the woken relay published nothing")
	}
}

type wakeJob struct{}

func (wakeJob) Kind() string { return "process.wake" }
