// Package opsadapter connects the ops console (internal/opsconsole) to what
// it shows: QStash's job control (package jobs/control) for the jobs'
// history and actions, and the deployment's Redis (internal/keyscan) for a
// sampled view of its keys. It keeps to what an operator may see: ids, job
// names, states and statuses; no body, header or argument leaves here.
package opsadapter

import (
	"context"
	"errors"
	"fmt"

	"github.com/digis/jobworker/internal/opsconsole"
	"github.com/digis/jobworker/jobs/control"
)

// QStash is the console's job control.
type QStash struct{ c *control.Client }

var _ opsconsole.Jobs = QStash{}

// NewQStash adapts a control client (built with WorkerPublicURL, so the
// job filter works).
func NewQStash(c *control.Client) QStash { return QStash{c: c} }

// notFound makes control's 404 the console's.
func notFound(err error) error {
	if errors.Is(err, control.ErrNotFound) {
		return fmt.Errorf("%w: %w", opsconsole.ErrNotFound, err)
	}
	return err
}

// Events lists recent events, newest first.
func (q QStash) Events(ctx context.Context, f opsconsole.EventFilter) ([]opsconsole.Event, error) {
	ef := control.EventFilter{Job: f.Job}
	if f.State != "" {
		ef.States = []control.State{control.State(f.State)}
	}
	if f.MessageID != "" {
		ef.MessageIDs = []string{f.MessageID}
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	out := []opsconsole.Event{}
	page := control.Page{Count: min(limit, 100)}
	for len(out) < limit {
		p, err := q.c.Events(ctx, ef, page)
		if err != nil {
			return nil, notFound(err)
		}
		for _, e := range p.Events {
			if len(out) == limit {
				break
			}
			out = append(out, opsconsole.Event{Time: e.Time, MessageID: e.MessageID, State: string(e.State),
				Job: e.Job, ResponseStatus: e.ResponseStatus})
		}
		if p.Cursor == "" || len(p.Events) == 0 {
			break
		}
		page.Cursor = p.Cursor
	}
	return out, nil
}

// DeadLetters lists the DLQ, newest first, up to limit entries.
func (q QStash) DeadLetters(ctx context.Context, limit int) ([]opsconsole.DeadLetter, error) {
	out := []opsconsole.DeadLetter{}
	page := control.Page{Count: min(limit, 100)}
	for len(out) < limit {
		p, err := q.c.DLQ(ctx, control.DLQFilter{LatestFirst: true}, page)
		if err != nil {
			return nil, notFound(err)
		}
		for _, e := range p.Entries {
			if len(out) == limit {
				break
			}
			out = append(out, opsconsole.DeadLetter{DLQID: e.DLQID, MessageID: e.ID, Job: e.Job,
				Time: e.CreatedAt, ResponseStatus: e.ResponseStatus})
		}
		if p.Cursor == "" || len(p.Entries) == 0 {
			break
		}
		page.Cursor = p.Cursor
	}
	return out, nil
}

// RetryDeadLetter republishes the entry as a new message and removes it.
func (q QStash) RetryDeadLetter(ctx context.Context, id string) error {
	_, err := q.c.RetryDLQ(ctx, id)
	return notFound(err)
}

// DeleteDeadLetter removes the entry.
func (q QStash) DeleteDeadLetter(ctx context.Context, id string) error {
	_, err := q.c.DeleteDLQ(ctx, id)
	return notFound(err)
}

// Schedules lists every schedule of the account.
func (q QStash) Schedules(ctx context.Context) ([]opsconsole.Schedule, error) {
	list, err := q.c.Schedules(ctx)
	if err != nil {
		return nil, notFound(err)
	}
	out := make([]opsconsole.Schedule, 0, len(list))
	for _, s := range list {
		out = append(out, opsconsole.Schedule{ID: s.ID, Cron: s.Cron, Job: s.Job, Paused: s.Paused, Created: s.CreatedAt})
	}
	return out, nil
}

// Queues lists the queues with their lag.
func (q QStash) Queues(ctx context.Context) ([]opsconsole.Queue, error) {
	list, err := q.c.Queues(ctx)
	if err != nil {
		return nil, notFound(err)
	}
	out := make([]opsconsole.Queue, 0, len(list))
	for _, x := range list {
		out = append(out, opsconsole.Queue{Name: x.Name, Parallelism: x.Parallelism, Lag: x.Lag, Paused: x.Paused})
	}
	return out, nil
}

// PauseQueue stops a queue's deliveries.
func (q QStash) PauseQueue(ctx context.Context, name string) error {
	return notFound(q.c.PauseQueue(ctx, name))
}

// ResumeQueue restarts them.
func (q QStash) ResumeQueue(ctx context.Context, name string) error {
	return notFound(q.c.ResumeQueue(ctx, name))
}
