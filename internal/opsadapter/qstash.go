// Package opsadapter connects the ops console (internal/opsconsole) to what
// it shows: QStash's REST API for the jobs' history and control, and the
// deployment's Redis for a sampled view of its keys.
package opsadapter

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/digis/jobworker/internal/opsconsole"
	"github.com/digis/jobworker/jobs"
)

// QStash is the console's job control over QStash's REST API
// (docs/qstash-protocol.md §7, §10.3, §12, §15).
type QStash struct {
	base, token string
	hc          *http.Client
}

var _ opsconsole.Jobs = (*QStash)(nil)

// NewQStash talks to the QStash at base (QSTASH_URL) with token.
func NewQStash(base, token string) *QStash {
	return &QStash{base: strings.TrimRight(base, "/"), token: token, hc: &http.Client{Timeout: 10 * time.Second}}
}

func (q *QStash) do(ctx context.Context, method, path string, query url.Values, out any) error {
	u := q.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+q.token)
	resp, err := q.hc.Do(req)
	if err != nil {
		return fmt.Errorf("qstash %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("qstash %s %s: %w", method, path, err)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("qstash %s %s: %w", method, path, opsconsole.ErrNotFound)
	case resp.StatusCode >= 300:
		return fmt.Errorf("qstash %s %s: status %d", method, path, resp.StatusCode)
	}
	if out == nil || len(body) == 0 {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("qstash %s %s: %w", method, path, err)
	}
	return nil
}

// jobName is the job a destination URL delivers to: the segment after
// jobs.PathPrefix, or "" for any other destination (whose URL is not shown).
func jobName(dest string) string {
	u, err := url.Parse(dest)
	if err != nil {
		return ""
	}
	_, after, ok := strings.Cut(u.Path, jobs.PathPrefix)
	if !ok {
		return ""
	}
	name, _, _ := strings.Cut(after, "/")
	return name
}

func millis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// Events lists recent events; a job filter is applied here, on the URL's
// path (QStash filters on the whole URL).
func (q *QStash) Events(ctx context.Context, f opsconsole.EventFilter) ([]opsconsole.Event, error) {
	if f.Limit == 0 {
		f.Limit = 100
	}
	v := url.Values{"count": {strconv.Itoa(min(f.Limit*4, 1000))}}
	if f.Job == "" {
		v.Set("count", strconv.Itoa(min(f.Limit, 1000)))
	}
	if f.State != "" {
		v.Set("state", f.State)
	}
	if f.MessageID != "" {
		v.Set("messageId", f.MessageID)
	}
	var page struct {
		Events []struct {
			Time           int64  `json:"time"`
			MessageID      string `json:"messageId"`
			State          string `json:"state"`
			URL            string `json:"url"`
			ResponseStatus int    `json:"responseStatus"`
		} `json:"events"`
	}
	if err := q.do(ctx, http.MethodGet, "/v2/events", v, &page); err != nil {
		return nil, err
	}
	out := []opsconsole.Event{}
	for _, e := range page.Events {
		job := jobName(e.URL)
		if f.Job != "" && job != f.Job {
			continue
		}
		out = append(out, opsconsole.Event{Time: millis(e.Time), MessageID: e.MessageID, State: e.State,
			Job: job, ResponseStatus: e.ResponseStatus})
		if len(out) == f.Limit {
			break
		}
	}
	return out, nil
}

// DeadLetters lists the DLQ, newest first, paging up to limit entries.
func (q *QStash) DeadLetters(ctx context.Context, limit int) ([]opsconsole.DeadLetter, error) {
	out := []opsconsole.DeadLetter{}
	cursor := ""
	for len(out) < limit {
		v := url.Values{"count": {strconv.Itoa(min(limit-len(out), 100))}, "order": {"latestFirst"}}
		if cursor != "" {
			v.Set("cursor", cursor)
		}
		var page struct {
			Cursor   string `json:"cursor"`
			Messages []struct {
				DLQID          string `json:"dlqId"`
				MessageID      string `json:"messageId"`
				URL            string `json:"url"`
				CreatedAt      int64  `json:"createdAt"`
				ResponseStatus int    `json:"responseStatus"`
				Retried        int    `json:"retried"`
			} `json:"messages"`
		}
		if err := q.do(ctx, http.MethodGet, "/v2/dlq", v, &page); err != nil {
			return nil, err
		}
		for _, m := range page.Messages {
			out = append(out, opsconsole.DeadLetter{DLQID: m.DLQID, MessageID: m.MessageID, Job: jobName(m.URL),
				Time: millis(m.CreatedAt), ResponseStatus: m.ResponseStatus, Retried: m.Retried})
		}
		if page.Cursor == "" || len(page.Messages) == 0 {
			break
		}
		cursor = page.Cursor
	}
	return out, nil
}

// RetryDeadLetter publishes the entry again (a new message) and removes it.
func (q *QStash) RetryDeadLetter(ctx context.Context, id string) error {
	return q.do(ctx, http.MethodPost, "/v2/dlq/retry/"+url.PathEscape(id), nil, nil)
}

// DeleteDeadLetter removes the entry.
func (q *QStash) DeleteDeadLetter(ctx context.Context, id string) error {
	return q.do(ctx, http.MethodDelete, "/v2/dlq/"+url.PathEscape(id), nil, nil)
}

// Schedules lists the schedules.
func (q *QStash) Schedules(ctx context.Context) ([]opsconsole.Schedule, error) {
	var list []struct {
		ScheduleID  string `json:"scheduleId"`
		Cron        string `json:"cron"`
		Destination string `json:"destination"`
		IsPaused    bool   `json:"isPaused"`
		CreatedAt   int64  `json:"createdAt"`
	}
	if err := q.do(ctx, http.MethodGet, "/v2/schedules", nil, &list); err != nil {
		return nil, err
	}
	out := make([]opsconsole.Schedule, 0, len(list))
	for _, s := range list {
		out = append(out, opsconsole.Schedule{ID: s.ScheduleID, Cron: s.Cron, Job: jobName(s.Destination),
			Paused: s.IsPaused, Created: millis(s.CreatedAt)})
	}
	return out, nil
}

// Queues lists the queues with their lag.
func (q *QStash) Queues(ctx context.Context) ([]opsconsole.Queue, error) {
	var list []struct {
		Name        string `json:"name"`
		Parallelism int    `json:"parallelism"`
		Lag         int    `json:"lag"`
		Paused      bool   `json:"paused"`
	}
	if err := q.do(ctx, http.MethodGet, "/v2/queues", nil, &list); err != nil {
		return nil, err
	}
	out := make([]opsconsole.Queue, 0, len(list))
	for _, x := range list {
		out = append(out, opsconsole.Queue(x))
	}
	return out, nil
}

// PauseQueue stops a queue's deliveries.
func (q *QStash) PauseQueue(ctx context.Context, name string) error {
	return q.do(ctx, http.MethodPost, "/v2/queues/"+url.PathEscape(name)+"/pause", nil, nil)
}

// ResumeQueue restarts them.
func (q *QStash) ResumeQueue(ctx context.Context, name string) error {
	return q.do(ctx, http.MethodPost, "/v2/queues/"+url.PathEscape(name)+"/resume", nil, nil)
}
