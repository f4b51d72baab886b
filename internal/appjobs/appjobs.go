// Package appjobs holds the reference application's job types (what the API
// enqueues) and their handlers (what the worker runs). The API imports the
// types; the worker registers the handlers with Register.
package appjobs

import (
	"context"
	"errors"
	"log/slog"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/digis/jobworker/cache"
	"github.com/digis/jobworker/internal/reqlog"
	"github.com/digis/jobworker/internal/store"
	"github.com/digis/jobworker/jobs"
)

// Hello is the demo job the local stack's curl line enqueues: the worker
// logs its delivery (job=demo.hello outcome=done, with the name's length). It shows the whole path (publish → signed delivery →
// verify → dedupe → run) with nothing else involved.
type Hello struct {
	Name string `json:"name"`
}

// Kind is the job's stable name.
func (Hello) Kind() string { return "demo.hello" }

// Validate rejects payloads no retry could fix (489, straight to the DLQ).
func (h Hello) Validate() error {
	if strings.TrimSpace(h.Name) == "" || len(h.Name) > 100 {
		return errors.New("name must be 1-100 characters")
	}
	return nil
}

// Deps is what the job handlers use. The worker builds it once at start-up.
type Deps struct {
	Log   *slog.Logger
	Store store.Store
	// Cache is the Redis cache the API reads through; handlers invalidate
	// and refresh derived keys in it.
	Cache *cache.Cache
	// Registerer receives the handlers' metrics. Defaults to nil: none.
	Registerer prometheus.Registerer
}

// Register adds every reference job handler to reg.
func Register(reg *jobs.Registry, d Deps) error {
	return errors.Join(
		jobs.Register(reg, func(ctx context.Context, j *jobs.Job[Hello]) error {
			d.done(ctx, j.Args.Kind(), j.MessageID, "hello from a job", slog.Int("name_len", len(j.Args.Name)))
			return nil
		}),
		registerStripe(reg, d),
		registerStreamsAndTips(reg, d),
	)
}

// done records what a job that went well has to say. Run by the worker, it
// goes on the delivery's one log line (the access line, which names the job,
// message id and outcome); run anywhere else, it is a line of its own. A
// job that fails says so in its own warning instead.
func (d Deps) done(ctx context.Context, job, messageID, msg string, attrs ...slog.Attr) {
	if reqlog.Add(ctx, attrs...) {
		return
	}
	d.Log.LogAttrs(ctx, slog.LevelInfo, msg,
		append([]slog.Attr{slog.String("job", job), slog.String("message_id", messageID)}, attrs...)...)
}
