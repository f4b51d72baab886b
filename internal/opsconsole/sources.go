package opsconsole

import (
	"context"
	"errors"
	"time"
)

// Jobs is what the console needs of QStash's job control: the jobs' own
// history is QStash's, which is global. Every method returns what an
// operator may see: ids, job names, states and HTTP statuses, never a body
// or a header.
type Jobs interface {
	// Events lists recent events, newest first, filtered as f says.
	Events(ctx context.Context, f EventFilter) ([]Event, error)
	// DeadLetters lists the DLQ, newest first.
	DeadLetters(ctx context.Context, limit int) ([]DeadLetter, error)
	// RetryDeadLetter publishes a DLQ entry again and removes it.
	RetryDeadLetter(ctx context.Context, dlqID string) error
	// DeleteDeadLetter removes a DLQ entry.
	DeleteDeadLetter(ctx context.Context, dlqID string) error
	// Schedules lists the schedules.
	Schedules(ctx context.Context) ([]Schedule, error)
	// Queues lists the queues with their lag.
	Queues(ctx context.Context) ([]Queue, error)
	// PauseQueue and ResumeQueue stop and restart a queue's deliveries.
	PauseQueue(ctx context.Context, name string) error
	ResumeQueue(ctx context.Context, name string) error
}

// ErrNotFound is what a Jobs method returns (wrapped) for an id or name
// QStash does not know: the console answers 404.
var ErrNotFound = errors.New("opsconsole: not found")

// EventFilter narrows Events. Zero fields do not filter.
type EventFilter struct {
	State     string // e.g. DELIVERED, RETRY, ERROR, FAILED
	Job       string // a job name
	MessageID string // one message's attempts
	Limit     int    // defaults to 100
}

// Event is one step of a message's life at QStash.
type Event struct {
	Time           time.Time `json:"time"`
	MessageID      string    `json:"messageId"`
	State          string    `json:"state"`
	Job            string    `json:"job"`
	ResponseStatus int       `json:"responseStatus,omitempty"`
}

// DeadLetter is one DLQ entry.
type DeadLetter struct {
	DLQID          string    `json:"dlqId"`
	MessageID      string    `json:"messageId"`
	Job            string    `json:"job"`
	Time           time.Time `json:"time"` // when the message was created
	ResponseStatus int       `json:"responseStatus,omitempty"`
}

// Schedule is one QStash schedule.
type Schedule struct {
	ID      string    `json:"id"`
	Cron    string    `json:"cron"`
	Job     string    `json:"job"`
	Paused  bool      `json:"paused"`
	Created time.Time `json:"created"`
}

// Queue is one QStash queue.
type Queue struct {
	Name        string `json:"name"`
	Parallelism int    `json:"parallelism"`
	Lag         int    `json:"lag"`
	Paused      bool   `json:"paused"`
}

// Keys samples the deployment's Redis keys.
type Keys interface {
	// Sample scans at most limit keys under the deployment's prefix
	// (SCAN, never KEYS) and reports them per key prefix.
	Sample(ctx context.Context, limit int) (KeyReport, error)
}

// KeyReport is what one sample found.
type KeyReport struct {
	Sampled  int         `json:"sampled"`
	Complete bool        `json:"complete"` // the scan saw every key
	Prefixes []KeyPrefix `json:"prefixes"`
	// TopLimited are the rate-limit counters with the highest counts in
	// the sample: hashed identities only, as stored.
	TopLimited []LimitedIdentity `json:"topLimited"`
}

// KeyPrefix counts the sampled keys of one prefix ("rl:strict",
// "idem:qstash", "cache:status", …) by remaining TTL.
type KeyPrefix struct {
	Prefix string `json:"prefix"`
	Count  int    `json:"count"`
	// TTL counts keys by remaining time to live: none (persistent),
	// <1m, <1h, <1d, >=1d.
	TTL map[string]int `json:"ttl"`
}

// LimitedIdentity is one rate-limit counter.
type LimitedIdentity struct {
	Tier     string `json:"tier"`
	Bucket   string `json:"bucket"`
	Identity string `json:"identity"` // the stored HMAC, shortened
	Count    int64  `json:"count"`
}
