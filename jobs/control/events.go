package control

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// State is a message state in QStash's event log
// (docs/qstash-protocol.md §6.5).
type State string

// The states QStash logs. StateInProgress is a filter only: it selects
// StateActive, StateRetry and StateError.
const (
	StateCreated         State = "CREATED"
	StateActive          State = "ACTIVE"
	StateRetry           State = "RETRY"
	StateError           State = "ERROR"
	StateDelivered       State = "DELIVERED"
	StateFailed          State = "FAILED"
	StateCancelRequested State = "CANCEL_REQUESTED"
	StateCancelled       State = "CANCELLED"
	StateInProgress      State = "IN_PROGRESS"
)

// Event is one entry of QStash's event log: a message entering a state.
type Event struct {
	Time      time.Time
	MessageID string
	State     State
	// Error is QStash's text for a failed attempt.
	Error string
	// NextDelivery is when a RETRY will be attempted.
	NextDelivery time.Time
	URL          string
	// Job is the job name read from URL ("" when not a job route).
	Job            string
	Queue          string
	ScheduleID     string
	ResponseStatus int
	MaxRetries     int
	Labels         []string
}

type eventWire struct {
	Time             int64    `json:"time"`
	MessageID        string   `json:"messageId"`
	State            string   `json:"state"`
	Error            string   `json:"error"`
	NextDeliveryTime int64    `json:"nextDeliveryTime"`
	URL              string   `json:"url"`
	QueueName        string   `json:"queueName"`
	ScheduleID       string   `json:"scheduleId"`
	ResponseStatus   int      `json:"responseStatus"`
	MaxRetries       int      `json:"maxRetries"`
	Label            string   `json:"label"`
	Labels           []string `json:"labels"`
}

// EventFilter selects events: every set field must match (AND); within
// MessageIDs and States any value matches (OR).
type EventFilter struct {
	MessageIDs []string
	States     []State
	// Job selects events of one job's destination; it needs
	// Config.WorkerPublicURL.
	Job        string
	URL        string
	Queue      string
	ScheduleID string
	Label      string
	// From and To bound the event time (inclusive); zero means unbounded.
	From, To time.Time
}

// EventPage is one page of events, newest first.
type EventPage struct {
	Events []Event
	// Cursor fetches the next page (Page.Cursor); "" at the end.
	Cursor string
}

// Events lists the event log, newest first, one page at a time: pass the
// returned Cursor in p for the next page until it is "". QStash's cursor is
// a unix time in milliseconds (docs/qstash-protocol.md §15); treat it as
// opaque.
func (c *Client) Events(ctx context.Context, f EventFilter, p Page) (EventPage, error) {
	q := url.Values{}
	if err := p.apply(q); err != nil {
		return EventPage{}, err
	}
	dest, err := c.jobURL(f.Job)
	if err != nil {
		return EventPage{}, err
	}
	if dest != "" && f.URL != "" && dest != f.URL {
		return EventPage{}, invalid("the Job and URL filters disagree")
	}
	setQ(q, "url", dest)
	setQ(q, "url", f.URL)
	if len(f.MessageIDs) > 0 {
		q.Set("messageIds", strings.Join(f.MessageIDs, ","))
	}
	for _, s := range f.States {
		q.Add("state", string(s))
	}
	setQ(q, "queueName", f.Queue)
	setQ(q, "scheduleId", f.ScheduleID)
	setQ(q, "label", f.Label)
	setQ(q, "fromDate", millis(f.From))
	setQ(q, "toDate", millis(f.To))
	var w struct {
		Events []eventWire `json:"events"`
		Cursor string      `json:"cursor"`
	}
	if _, err := c.do(ctx, call{op: "events list", method: http.MethodGet, path: "/v2/events", query: q, out: &w}); err != nil {
		return EventPage{}, err
	}
	out := EventPage{Events: make([]Event, len(w.Events)), Cursor: w.Cursor}
	if out.Cursor == "0" {
		out.Cursor = ""
	}
	for i, e := range w.Events {
		out.Events[i] = Event{
			Time: fromMillis(e.Time), MessageID: e.MessageID, State: normalState(e.State), Error: e.Error,
			NextDelivery: fromMillis(e.NextDeliveryTime), URL: e.URL, Job: jobOf(e.URL), Queue: e.QueueName,
			ScheduleID: e.ScheduleID, ResponseStatus: e.ResponseStatus, MaxRetries: e.MaxRetries, Labels: e.Labels,
		}
		if len(e.Labels) == 0 && e.Label != "" {
			out.Events[i].Labels = []string{e.Label}
		}
	}
	return out, nil
}

// normalState folds the SDKs' spelling CANCELED into CANCELLED.
func normalState(s string) State {
	s = strings.ToUpper(s)
	if s == "CANCELED" {
		return StateCancelled
	}
	return State(s)
}

// attempts counts a message's delivery attempts in the event log (one
// ACTIVE event each); 0 when the log no longer holds them.
func (c *Client) attempts(ctx context.Context, messageID string) (int, error) {
	n := 0
	p := Page{Count: 100}
	for range 50 { // a message has at most a few dozen events
		page, err := c.Events(ctx, EventFilter{MessageIDs: []string{messageID}, States: []State{StateActive}}, p)
		if err != nil {
			return 0, err
		}
		n += len(page.Events)
		if page.Cursor == "" {
			break
		}
		p.Cursor = page.Cursor
	}
	return n, nil
}
