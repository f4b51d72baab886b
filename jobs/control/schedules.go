package control

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Schedule is a QStash schedule (docs/qstash-protocol.md §12).
type Schedule struct {
	ID          string
	Cron        string
	Destination string
	// Job is the job name read from Destination ("" when not a job route).
	Job    string
	Method string
	// Header holds the headers forwarded to each message.
	Header          http.Header
	Body            []byte
	Retries         int
	Delay           time.Duration
	Timeout         time.Duration
	Callback        string
	FailureCallback string
	Paused          bool
	Queue           string
	FlowControlKey  string
	Labels          []string
	CreatedAt       time.Time
	// LastRun and NextRun are QStash's last and next trigger times (zero
	// when unknown; NextRun is zero while paused).
	LastRun, NextRun time.Time
	// LastStates maps the message ids of the last trigger to
	// IN_PROGRESS, SUCCESS or FAIL.
	LastStates map[string]string
	// Owned is true for a schedule SyncSchedules manages for this Client's
	// App and WorkerPublicURL; sync never touches any other.
	Owned bool
	// Name is the declaration's name of an owned schedule ("" otherwise).
	Name string
	// digest is the marker header's value: the declaration it was made from.
	digest string
}

type scheduleWire struct {
	ScheduleID         string            `json:"scheduleId"`
	Cron               string            `json:"cron"`
	Destination        string            `json:"destination"`
	Method             string            `json:"method"`
	Header             http.Header       `json:"header"`
	Body               string            `json:"body"`
	BodyBase64         string            `json:"bodyBase64"`
	Retries            int               `json:"retries"`
	Delay              int64             `json:"delay"`
	Timeout            int64             `json:"timeout"`
	Callback           string            `json:"callback"`
	FailureCallback    string            `json:"failureCallback"`
	IsPaused           bool              `json:"isPaused"`
	QueueName          string            `json:"queueName"`
	FlowControlKey     string            `json:"flowControlKey"`
	Label              string            `json:"label"`
	Labels             []string          `json:"labels"`
	CreatedAt          int64             `json:"createdAt"`
	LastScheduleTime   int64             `json:"lastScheduleTime"`
	NextScheduleTime   int64             `json:"nextScheduleTime"`
	LastScheduleStates map[string]string `json:"lastScheduleStates"`
}

func (c *Client) schedule(w scheduleWire) Schedule {
	s := Schedule{
		ID: w.ScheduleID, Cron: strings.TrimSpace(w.Cron), Destination: w.Destination, Job: jobOf(w.Destination),
		Method: w.Method, Header: w.Header, Body: body(w.Body, w.BodyBase64), Retries: w.Retries,
		Delay: time.Duration(w.Delay) * time.Second, Timeout: time.Duration(w.Timeout) * time.Second,
		Callback: w.Callback, FailureCallback: w.FailureCallback, Paused: w.IsPaused, Queue: w.QueueName,
		FlowControlKey: w.FlowControlKey, Labels: w.Labels, CreatedAt: fromMillis(w.CreatedAt),
		LastRun: fromMillis(w.LastScheduleTime), NextRun: fromMillis(w.NextScheduleTime), LastStates: w.LastScheduleStates,
	}
	if len(s.Labels) == 0 && w.Label != "" {
		s.Labels = []string{w.Label}
	}
	c.claim(&s)
	return s
}

// Schedules lists every schedule of the QStash account, this app's and
// others' (Schedule.Owned tells them apart).
func (c *Client) Schedules(ctx context.Context) ([]Schedule, error) {
	var w []scheduleWire
	if _, err := c.do(ctx, call{op: "schedules list", method: http.MethodGet, path: "/v2/schedules", out: &w}); err != nil {
		return nil, err
	}
	out := make([]Schedule, len(w))
	for i, s := range w {
		out[i] = c.schedule(s)
	}
	return out, nil
}

// Schedule returns one schedule; errors match ErrNotFound when it does not
// exist.
func (c *Client) Schedule(ctx context.Context, id string) (Schedule, error) {
	if err := needID("schedule id", id); err != nil {
		return Schedule{}, err
	}
	var w scheduleWire
	if _, err := c.do(ctx, call{op: "schedule get", method: http.MethodGet, path: "/v2/schedules/" + url.PathEscape(id), out: &w}); err != nil {
		return Schedule{}, err
	}
	return c.schedule(w), nil
}

// PauseSchedule stops a schedule from triggering until resumed. A sync
// keeps an owned schedule paused.
func (c *Client) PauseSchedule(ctx context.Context, id string) error {
	return c.scheduleAction(ctx, id, "pause")
}

// ResumeSchedule lets a paused schedule trigger again.
func (c *Client) ResumeSchedule(ctx context.Context, id string) error {
	return c.scheduleAction(ctx, id, "resume")
}

func (c *Client) scheduleAction(ctx context.Context, id, action string) error {
	if err := needID("schedule id", id); err != nil {
		return err
	}
	// The SDKs send PATCH; the OpenAPI document says POST (qstashdev takes both).
	_, err := c.do(ctx, call{op: "schedule " + action, method: http.MethodPatch, path: "/v2/schedules/" + url.PathEscape(id) + "/" + action})
	return err
}

// DeleteSchedule removes a schedule (any schedule: this is an operator's
// call; SyncSchedules only removes owned ones).
func (c *Client) DeleteSchedule(ctx context.Context, id string) error {
	if err := needID("schedule id", id); err != nil {
		return err
	}
	_, err := c.do(ctx, call{op: "schedule delete", method: http.MethodDelete, path: "/v2/schedules/" + url.PathEscape(id)})
	return err
}
