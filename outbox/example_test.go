package outbox_test

import (
	"context"
	"log"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/outbox"
)

// The job is written in the same transaction as the change it follows: it
// is published if and only if the transaction commits.
func ExampleEnqueue() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://localhost/app")
	if err != nil {
		log.Fatal(err)
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE streams SET live = true WHERE id = $1`, 42); err != nil {
			return err
		}
		// An invalid job fails here, and the transaction rolls back.
		_, err := outbox.Enqueue(ctx, tx, testJob{ID: "stream-42-started"}, jobs.WithRetries(5))
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
}

// A change's follow-up jobs go in one row: one insert in the transaction,
// one row for the relay, published together in one QStash batch call.
func ExampleEnqueueBatch() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://localhost/app")
	if err != nil {
		log.Fatal(err)
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO tips (id, amount) VALUES ($1, $2)`, 7, 100); err != nil {
			return err
		}
		_, err := outbox.EnqueueBatch(ctx, tx, []jobs.EnqueueRequest{
			{Args: testJob{ID: "tip-7-notify"}},
			{Args: testJob{ID: "tip-7-count"}, Options: []jobs.EnqueueOption{jobs.WithDelay(time.Minute)}},
		})
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
}

// A long-lived process runs the relay next to its server and stops it on
// shutdown, letting the batch in flight finish.
func ExampleRelay_Start() {
	ctx := context.Background()
	pool, _ := pgxpool.New(ctx, "postgres://localhost/app")
	if err := outbox.Migrate(ctx, pool); err != nil { // with the app's migrations
		log.Fatal(err)
	}
	client, _ := jobs.NewClient(jobs.ClientConfig{Token: "<QSTASH_TOKEN>", WorkerPublicURL: "https://worker.example.com"})
	relay, err := outbox.New(outbox.Config{Pool: pool, Publisher: client})
	if err != nil {
		log.Fatal(err)
	}
	if err := relay.Start(ctx); err != nil {
		log.Fatal(err)
	}
	// ... serve until SIGTERM ...
	stopCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := relay.Stop(stopCtx); err != nil {
		log.Print(err)
	}
}

// Serverless: a QStash schedule (e.g. every minute) calls a route that runs
// RunOnce. Mount it behind QStash signature verification.
func ExampleRelay_Handler() {
	var relay *outbox.Relay // built as in ExampleRelay_Start, never started
	var verifyQStash func(http.Handler) http.Handler
	mux := http.NewServeMux()
	mux.Handle("POST /internal/outbox/relay", verifyQStash(relay.Handler()))
}
