package control

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Queue is a QStash queue (docs/qstash-protocol.md §10.1).
type Queue struct {
	Name        string
	Parallelism int
	// Paused queues accept messages and deliver none.
	Paused bool
	// Lag is how many of its messages are not done yet.
	Lag       int
	CreatedAt time.Time
	UpdatedAt time.Time
}

type queueWire struct {
	Name        string `json:"name"`
	Parallelism int    `json:"parallelism"`
	Paused      bool   `json:"paused"`
	Lag         int    `json:"lag"`
	CreatedAt   int64  `json:"createdAt"`
	UpdatedAt   int64  `json:"updatedAt"`
}

func (w queueWire) queue() Queue {
	return Queue{Name: w.Name, Parallelism: w.Parallelism, Paused: w.Paused, Lag: w.Lag,
		CreatedAt: fromMillis(w.CreatedAt), UpdatedAt: fromMillis(w.UpdatedAt)}
}

// Queues lists the queues.
func (c *Client) Queues(ctx context.Context) ([]Queue, error) {
	var w []queueWire
	if _, err := c.do(ctx, call{op: "queues list", method: http.MethodGet, path: "/v2/queues", out: &w}); err != nil {
		return nil, err
	}
	out := make([]Queue, len(w))
	for i, q := range w {
		out[i] = q.queue()
	}
	return out, nil
}

// Queue returns one queue; errors match ErrNotFound when it does not exist.
func (c *Client) Queue(ctx context.Context, name string) (Queue, error) {
	if err := needID("queue name", name); err != nil {
		return Queue{}, err
	}
	var w queueWire
	if _, err := c.do(ctx, call{op: "queue get", method: http.MethodGet, path: "/v2/queues/" + url.PathEscape(name), out: &w}); err != nil {
		return Queue{}, err
	}
	return w.queue(), nil
}

// PauseQueue stops deliveries from a queue; it keeps accepting messages.
func (c *Client) PauseQueue(ctx context.Context, name string) error {
	return c.queueAction(ctx, name, "pause")
}

// ResumeQueue restarts deliveries from a paused queue.
func (c *Client) ResumeQueue(ctx context.Context, name string) error {
	return c.queueAction(ctx, name, "resume")
}

func (c *Client) queueAction(ctx context.Context, name, action string) error {
	if err := needID("queue name", name); err != nil {
		return err
	}
	_, err := c.do(ctx, call{op: "queue " + action, method: http.MethodPost, path: "/v2/queues/" + url.PathEscape(name) + "/" + action})
	return err
}
