// Package jobs defines background jobs as typed Go values, routes QStash
// deliveries to their handlers, maps handler results to the answers that
// steer QStash's retries, and enqueues jobs by publishing them to QStash.
//
// A job is a type with a stable name and a JSON payload:
//
//	type NotifyFollowers struct {
//		StreamID string `json:"stream_id"`
//	}
//
//	func (NotifyFollowers) Kind() string { return "streams.notify-followers" }
//
// The API process enqueues it; QStash delivers it to
// $WORKER_PUBLIC_URL/jobs/streams.notify-followers:
//
//	client, err := jobs.NewClient(jobs.ClientConfig{Token: token, WorkerPublicURL: workerURL})
//	res, err := client.Enqueue(ctx, NotifyFollowers{StreamID: "s_1"},
//		jobs.WithDelay(30*time.Second), jobs.WithDeduplicationID("notify:s_1"))
//
// The worker registers a handler per type; package worker receives QStash's
// deliveries, verifies and dedupes them, dispatches by name and answers:
//
//	reg, _ := jobs.NewRegistry(jobs.RegistryConfig{})
//	err := jobs.Register(reg, func(ctx context.Context, j *jobs.Job[NotifyFollowers]) error {
//		return notify(ctx, j.Args.StreamID)
//	}, jobs.WithHandlerTimeout(30*time.Second))
//	w, err := worker.New(worker.Config{Registry: reg, ...})
//	http.Handle("/jobs/", w)
//
// Handlers steer retries with errors: Permanent(err) stops them (bad input);
// RetryAfter(d, err) asks for a later retry; any other error is retried with
// QStash's backoff. Unknown job names and undecodable payloads are permanent.
//
// Defaults per job type (retries, delay, timeout, deduplication, flow
// control, queue) live on the type, by implementing ArgsWithDefaults; options
// passed to Enqueue override them.
//
// The enqueue client uses github.com/upstash/qstash-go, which has no context
// support; the client binds each call to the caller's context through its
// HTTP transport, so cancellation is prompt. A cancelled publish may still
// have reached QStash: pair retries with WithDeduplicationID.
//
// PrepareMessage does Enqueue's validation and encoding without sending,
// returning a Message that marshals to JSON; Client.PublishMessage and
// PublishMessages send such messages later, exactly as Enqueue and
// EnqueueBatch would have. Package outbox builds transactional enqueue on
// them.
//
// A job QStash should run on a cron schedule is declared next to its
// handler with Registry.AddPeriodic(Periodic{Cron: "*/5 * * * *", Args: …});
// package jobs/control syncs the declarations to QStash schedules, and
// inspects, cancels and replays jobs (messages, events, the DLQ).
//
// Delivery is at-least-once. This package does not deduplicate: the worker's
// route does, keyed on Delivery.MessageID (see package idempotency).
package jobs
