package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/digis/jobworker/internal/env"
)

// outboxStatus reads jobworker_outbox (DATABASE_URL): rows per state, the
// oldest pending row's age, and the latest failed rows.
func (a *app) outboxStatus(ctx context.Context, args []string) error {
	if len(args) > 0 {
		return usagef("outbox status takes no arguments")
	}
	r := env.NewReader(a.getenv)
	url := r.Str("DATABASE_URL", "")
	if url == "" || url == env.MemoryStore {
		r.Fail("DATABASE_URL", "required: the postgres:// URL of the outbox (the in-memory store has none)")
	}
	if err := r.Err(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return &env.Error{Var: "DATABASE_URL", Reason: "not a usable postgres URL"}
	}
	defer pool.Close()
	type failed struct {
		ID        string    `json:"id"`
		Job       string    `json:"job"`
		Attempts  int       `json:"attempts"`
		LastError string    `json:"lastError"`
		At        time.Time `json:"finishedAt"`
	}
	out := struct {
		Pending       int64         `json:"pending"`
		Sent          int64         `json:"sent"`
		Failed        int64         `json:"failed"`
		OldestPending time.Duration `json:"oldestPending"`
		LatestFailed  []failed      `json:"latestFailed"`
	}{LatestFailed: []failed{}}
	var oldest *float64
	err = pool.QueryRow(ctx, `
		SELECT count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'sent'),
		       count(*) FILTER (WHERE state = 'failed'),
		       extract(epoch FROM now() - min(created_at) FILTER (WHERE state = 'pending'))::float8
		FROM jobworker_outbox`).Scan(&out.Pending, &out.Sent, &out.Failed, &oldest)
	if err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	if oldest != nil {
		out.OldestPending = time.Duration(*oldest * float64(time.Second)).Round(time.Millisecond)
	}
	rows, err := pool.Query(ctx, `
		SELECT id::text, coalesce(kind, jobs::jsonb->0->>'kind', ''), attempts, coalesce(last_error, ''), finished_at FROM jobworker_outbox
		WHERE state = 'failed' ORDER BY finished_at DESC LIMIT 10`)
	if err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	for rows.Next() {
		var f failed
		if err := rows.Scan(&f.ID, &f.Job, &f.Attempts, &f.LastError, &f.At); err != nil {
			return fmt.Errorf("outbox: %w", err)
		}
		out.LatestFailed = append(out.LatestFailed, f)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	return a.emit(out, func(t *tabwriter.Writer) {
		row(t, "pending", out.Pending)
		row(t, "oldest pending", out.OldestPending)
		row(t, "sent (kept for the retention)", out.Sent)
		row(t, "failed (an operator's to look at)", out.Failed)
		if len(out.LatestFailed) > 0 {
			row(t)
			row(t, "FAILED ROW", "JOB", "ATTEMPTS", "AT", "LAST ERROR")
			for _, f := range out.LatestFailed {
				row(t, f.ID, f.Job, f.Attempts, when(f.At), short(f.LastError, 80))
			}
		}
	})
}
