package control

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/digis/jobworker/jobs"
)

// Message is a message QStash still holds (pending, or between retries):
// GET /v2/messages/{id} (docs/qstash-protocol.md §13). The publisher's IP
// address QStash records is deliberately not exposed.
type Message struct {
	ID string
	// Job is the job name read from the destination (its path after
	// jobs.PathPrefix), or "" when the destination is not a job route.
	Job    string
	URL    string
	Method string
	// Header holds the headers forwarded to the destination.
	Header http.Header
	// Body is the payload as sent (a job's JSON args).
	Body []byte
	// Args is Body when it is JSON, else nil.
	Args           json.RawMessage
	MaxRetries     int
	NotBefore      time.Time
	CreatedAt      time.Time
	Queue          string
	ScheduleID     string
	Labels         []string
	FlowControlKey string
	// RetryDelayExpression is the message's Upstash-Retry-Delay.
	RetryDelayExpression string
	Callback             string
	FailureCallback      string
}

// messageWire is QStash's Message object.
type messageWire struct {
	MessageID            string      `json:"messageId"`
	URL                  string      `json:"url"`
	Method               string      `json:"method"`
	Header               http.Header `json:"header"`
	Body                 string      `json:"body"`
	BodyBase64           string      `json:"bodyBase64"`
	MaxRetries           int         `json:"maxRetries"`
	NotBefore            int64       `json:"notBefore"`
	CreatedAt            int64       `json:"createdAt"`
	QueueName            string      `json:"queueName"`
	ScheduleID           string      `json:"scheduleId"`
	Label                string      `json:"label"`
	Labels               []string    `json:"labels"`
	FlowControlKey       string      `json:"flowControlKey"`
	RetryDelayExpression string      `json:"retryDelayExpression"`
	Callback             string      `json:"callback"`
	FailureCallback      string      `json:"failureCallback"`
}

func (w messageWire) message() Message {
	m := Message{
		ID: w.MessageID, Job: jobOf(w.URL), URL: w.URL, Method: w.Method, Header: w.Header,
		Body: body(w.Body, w.BodyBase64), MaxRetries: w.MaxRetries,
		NotBefore: fromMillis(w.NotBefore), CreatedAt: fromMillis(w.CreatedAt),
		Queue: w.QueueName, ScheduleID: w.ScheduleID, Labels: w.Labels, FlowControlKey: w.FlowControlKey,
		RetryDelayExpression: w.RetryDelayExpression, Callback: w.Callback, FailureCallback: w.FailureCallback,
	}
	if len(m.Labels) == 0 && w.Label != "" {
		m.Labels = []string{w.Label}
	}
	if json.Valid(m.Body) {
		m.Args = json.RawMessage(m.Body)
	}
	return m
}

// body decodes QStash's body / bodyBase64 pair.
func body(text, b64 string) []byte {
	if b64 != "" {
		if b, err := base64.StdEncoding.DecodeString(b64); err == nil {
			return b
		}
	}
	if text == "" {
		return nil
	}
	return []byte(text)
}

// ArgsOf decodes a message's body into the args type T, after checking the
// message is a T job. A DLQ entry's message works the same way
// (ArgsOf[T](entry.Message)).
func ArgsOf[T jobs.Args](m Message) (T, error) {
	var args T
	if want := args.Kind(); m.Job != want {
		return args, invalid("message %s is a %q job, not %q", m.ID, m.Job, want)
	}
	if err := json.Unmarshal(m.Body, &args); err != nil {
		return args, fmt.Errorf("%w: %s: %w", jobs.ErrBadPayload, m.Job, err)
	}
	return args, nil
}

// Message returns the message QStash holds under id. Delivered, cancelled
// and dead-lettered messages leave QStash's store: for them the error
// matches ErrNotFound (look in Events or the DLQ).
func (c *Client) Message(ctx context.Context, id string) (Message, error) {
	if err := needID("message id", id); err != nil {
		return Message{}, err
	}
	var w messageWire
	if _, err := c.do(ctx, call{op: "message get", method: http.MethodGet, path: "/v2/messages/" + url.PathEscape(id), out: &w}); err != nil {
		return Message{}, err
	}
	return w.message(), nil
}

// CancelMessage cancels a pending message: no further attempt starts. An
// attempt already in flight cannot be recalled. Errors match ErrNotFound
// when the message is not pending (anymore).
func (c *Client) CancelMessage(ctx context.Context, id string) error {
	if err := needID("message id", id); err != nil {
		return err
	}
	_, err := c.do(ctx, call{op: "message cancel", method: http.MethodDelete, path: "/v2/messages/" + url.PathEscape(id)})
	return err
}
