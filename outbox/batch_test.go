package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/digis/jobworker/internal/metrictest"
	"github.com/digis/jobworker/internal/pgtest"
	"github.com/digis/jobworker/internal/testwait"
	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/outbox"
)

func reqs(ids ...string) []jobs.EnqueueRequest {
	out := make([]jobs.EnqueueRequest, len(ids))
	for i, id := range ids {
		out[i] = jobs.EnqueueRequest{Args: testJob{ID: id}}
	}
	return out
}

// EnqueueBatch writes a change's jobs as one row: published if and only if
// the transaction commits, each job once, each with its own deduplication
// id.
func TestEnqueueBatch(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	var row string
	err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		var err error
		row, err = outbox.EnqueueBatch(ctx, tx, []jobs.EnqueueRequest{
			{Args: testJob{ID: "b-0"}},
			{Args: testJob{ID: "b-1"}, Options: []jobs.EnqueueOption{jobs.WithDeduplicationID("mine:b-1")}},
			{Args: testJob{ID: "b-2"}},
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	rollback := errors.New("roll back")
	err = pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		if _, err := outbox.EnqueueBatch(ctx, tx, reqs("r-0", "r-1")); err != nil {
			return err
		}
		return rollback
	})
	if !errors.Is(err, rollback) {
		t.Fatal(err)
	}
	if st := b.states(t); st["pending"] != 1 || len(st) != 1 {
		t.Fatalf("rows = %v, want the committed row only", st)
	}
	var dedup []string
	if err := b.pool.QueryRow(ctx, `SELECT array_agg(j->'options'->>'deduplication_id' ORDER BY n)
		FROM jobworker_outbox, jsonb_array_elements(jobs::jsonb) WITH ORDINALITY AS a(j, n) WHERE id = $1`, row).Scan(&dedup); err != nil {
		t.Fatal(err)
	}
	p := outbox.DeduplicationPrefix + row
	if want := []string{p + "-0", "mine:b-1", p + "-2"}; strings.Join(dedup, " ") != strings.Join(want, " ") {
		t.Errorf("deduplication ids %q, want %q", dedup, want)
	}
	r := b.relay(t)
	res, err := r.RunOnce(ctx)
	if err != nil || res.Published != 3 || res.Deduplicated != 0 {
		t.Fatalf("RunOnce = %+v, %v; want the row's 3 jobs published", res, err)
	}
	testwait.For(t, 5*time.Second, "the row's jobs", func() bool { return b.recv.distinct() == 3 })
	var msgIDs string
	if err := b.pool.QueryRow(ctx, `SELECT state || ' ' || message_id FROM jobworker_outbox WHERE id = $1`, row).Scan(&msgIDs); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(msgIDs, "sent ") || strings.Count(msgIDs, ",") != 2 {
		t.Errorf("row after publishing: %q, want sent with 3 message ids", msgIDs)
	}
	if v, _ := metrictest.Value(t, b.reg, "jobworker_outbox_published_total", map[string]string{"job": "outbox.test", "result": "ok"}); v != 3 {
		t.Errorf("published_total = %v, want 3 (one per job)", v)
	}
	for _, id := range []string{"b-0", "b-1", "b-2"} {
		if n := b.recv.count(id); n != 1 {
			t.Errorf("%s delivered %d times", id, n)
		}
	}

	// A relay that died after QStash accepted the row but before recording
	// it: the row is published again, and QStash drops every job of it.
	if _, err := b.pool.Exec(ctx, `UPDATE jobworker_outbox SET state = 'pending', finished_at = NULL, message_id = NULL WHERE id = $1`, row); err != nil {
		t.Fatal(err)
	}
	res, err = r.RunOnce(ctx)
	if err != nil || res.Published != 3 || res.Deduplicated != 3 {
		t.Fatalf("RunOnce of the republished row = %+v, %v; want 3 deduplicated", res, err)
	}
	if n := b.deduplicatedRows(t); n != 1 {
		t.Errorf("%d rows marked deduplicated, want 1", n)
	}
	// Later jobs prove QStash has delivered what it would.
	b.enqueueCommitted(t, "after")
	if _, err := r.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 5*time.Second, "the later job", func() bool { return b.recv.count("after") == 1 })
	if d := b.recv.duplicates(); len(d) > 0 {
		t.Errorf("delivered more than once: %v", d)
	}
}

// EnqueueBatch refuses what it cannot write, before writing anything; one
// request is an ordinary one-job row.
func TestEnqueueBatchInvalid(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	many := make([]string, outbox.MaxJobsPerRow+1)
	for i := range many {
		many[i] = "x"
	}
	for name, rq := range map[string][]jobs.EnqueueRequest{
		"none":     nil,
		"too many": reqs(many...),
		"invalid":  {{Args: testJob{ID: "ok"}}, {Args: checkedJob{}}},
	} {
		if _, err := outbox.EnqueueBatch(ctx, b.pool, rq); !errors.Is(err, jobs.ErrInvalidOption) {
			t.Errorf("%s: err = %v, want ErrInvalidOption", name, err)
		}
	}
	if st := b.states(t); len(st) != 0 {
		t.Fatalf("rows after refusals = %v, want none", st)
	}
	one, err := outbox.EnqueueBatch(ctx, b.pool, reqs("single"))
	if err != nil {
		t.Fatal(err)
	}
	var kind, dedup string
	if err := b.pool.QueryRow(ctx, `SELECT kind, options->>'deduplication_id' FROM jobworker_outbox WHERE id = $1 AND jobs IS NULL`, one).Scan(&kind, &dedup); err != nil {
		t.Fatal(err)
	}
	if kind != "outbox.test" || dedup != outbox.DeduplicationPrefix+one {
		t.Errorf("one-job batch row: kind %q, deduplication id %q", kind, dedup)
	}
}

// A round mixing one-job and multi-job rows publishes them in one batch
// call; a job QStash refuses for good fails its row (the reason names the
// job) and only its row, whose other jobs are still published.
func TestMultiJobRowsInARound(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	b.enqueueCommitted(t, "single-1")
	good, err := outbox.EnqueueBatch(ctx, b.pool, reqs("good-0", "good-1"))
	if err != nil {
		t.Fatal(err)
	}
	// qstash-dev refuses more than 20 retries (a plan limit): 400.
	bad, err := outbox.EnqueueBatch(ctx, b.pool, []jobs.EnqueueRequest{
		{Args: testJob{ID: "bad-0"}},
		{Args: testJob{ID: "bad-1"}, Options: []jobs.EnqueueOption{jobs.WithRetries(50)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	b.enqueueCommitted(t, "single-2")
	r := b.relay(t)
	res, err := r.RunOnce(ctx)
	if err != nil || res.Published != 4 || res.Failed != 2 {
		t.Fatalf("RunOnce = %+v, %v; want 4 jobs published, the bad row's 2 failed", res, err)
	}
	testwait.For(t, 5*time.Second, "the good jobs", func() bool {
		return b.recv.count("single-1")+b.recv.count("single-2")+b.recv.count("good-0")+b.recv.count("good-1") == 4
	})
	for id, want := range map[string]string{good: "sent", bad: "failed"} {
		var state, lastErr string
		if err := b.pool.QueryRow(ctx, `SELECT state, coalesce(last_error, '') FROM jobworker_outbox WHERE id = $1`, id).Scan(&state, &lastErr); err != nil {
			t.Fatal(err)
		}
		if state != want {
			t.Errorf("row %s: %s, want %s", id, state, want)
		}
		if want == "failed" && (!strings.Contains(lastErr, "job 1 of 2") || !strings.Contains(lastErr, "400")) {
			t.Errorf("failed row's reason %q does not name job 1 and QStash's 400", lastErr)
		}
	}
	if logs := b.logs.String(); !strings.Contains(logs, "job given up") || !strings.Contains(logs, bad) || !strings.Contains(logs, "jobs_in_row=2") {
		t.Errorf("no give-up log naming the multi-job row:\n%s", logs)
	}
	if v, _ := metrictest.Value(t, b.reg, "jobworker_outbox_gave_up_total", map[string]string{"job": "outbox.test"}); v != 1 {
		t.Errorf("gave_up_total = %v, want 1 (one row)", v)
	}
}

// A database migrated by a release before multi-job rows keeps its pending
// rows through migration 0002: they are published as they were written,
// and the upgraded table takes multi-job rows.
func TestMigrationKeepsPendingRows(t *testing.T) {
	t.Parallel()
	db := pgtest.Create(t)
	ctx := t.Context()
	if err := outbox.MigrateUpTo(ctx, db.Pool, 1); err != nil {
		t.Fatal(err)
	}
	// A pending row as the release before wrote it.
	var oldID string
	if err := db.Pool.QueryRow(ctx, `INSERT INTO jobworker_outbox (id, kind, body, options)
		VALUES (gen_random_uuid(), 'outbox.old', '{"n":1}', '{}') RETURNING id::text`).Scan(&oldID); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE jobworker_outbox SET options = jsonb_build_object('deduplication_id', $1::text)`, outbox.DeduplicationPrefix+oldID); err != nil {
		t.Fatal(err)
	}
	if err := outbox.CheckSchema(ctx, db.Pool); !errors.Is(err, outbox.ErrSchemaBehind) {
		t.Fatalf("CheckSchema on the old schema = %v, want outbox.ErrSchemaBehind", err)
	}
	if err := outbox.Migrate(ctx, db.Pool); err != nil {
		t.Fatal(err)
	}
	if err := outbox.CheckSchema(ctx, db.Pool); err != nil {
		t.Fatal(err)
	}
	newRow, err := outbox.EnqueueBatch(ctx, db.Pool, []jobs.EnqueueRequest{
		{Args: newA{N: 2}}, {Args: newB{N: 3}},
	})
	if err != nil {
		t.Fatal(err)
	}
	pub := &recordingPublisher{}
	r, err := outbox.New(outbox.Config{Pool: db.Pool, Publisher: pub})
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.RunOnce(ctx)
	if err != nil || res.Published != 3 {
		t.Fatalf("RunOnce = %+v, %v; want the old row's job and the new row's 2", res, err)
	}
	got := map[string]string{}
	for _, m := range pub.msgs {
		got[m.Kind] = m.Body + " " + m.Options.DeduplicationID
	}
	want := map[string]string{
		"outbox.old":   `{"n":1} ` + outbox.DeduplicationPrefix + oldID,
		"outbox.new-a": `{"n":2} ` + outbox.DeduplicationPrefix + newRow + "-0",
		"outbox.new-b": `{"n":3} ` + outbox.DeduplicationPrefix + newRow + "-1",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("published %v, want %v", got, want)
	}
	// The table refuses a row that is neither one job nor several.
	if _, err := db.Pool.Exec(ctx, `INSERT INTO jobworker_outbox (id, kind, body, jobs) VALUES (gen_random_uuid(), 'x', '{}', '[]')`); err == nil {
		t.Error("a row with both kind and jobs was accepted")
	}
}

// recordingPublisher accepts everything and remembers it.
type recordingPublisher struct {
	mu   sync.Mutex
	msgs []jobs.Message
}

func (p *recordingPublisher) PublishMessages(_ context.Context, msgs []jobs.Message) ([]jobs.EnqueueResult, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]jobs.EnqueueResult, len(msgs))
	for i, m := range msgs {
		p.msgs = append(p.msgs, m)
		out[i] = jobs.EnqueueResult{MessageID: fmt.Sprintf("msg-%d", len(p.msgs))}
	}
	return out, nil
}

func (p *recordingPublisher) PublishMessage(ctx context.Context, m jobs.Message) (jobs.EnqueueResult, error) {
	res, err := p.PublishMessages(ctx, []jobs.Message{m})
	return res[0], err
}

type newA struct {
	N int `json:"n"`
}

func (newA) Kind() string { return "outbox.new-a" }

type newB struct {
	N int `json:"n"`
}

func (newB) Kind() string { return "outbox.new-b" }
