// Package appjobs holds the reference application's job types (what the API
// enqueues) and their handlers (what the worker runs). The API imports the
// types; the worker registers the handlers with Register.
package appjobs

import (
	"context"
	"errors"
	"log/slog"
	"strings"

	"github.com/digis/jobworker/jobs"
)

// Hello is the demo job the local stack's curl line enqueues: the worker
// logs a greeting. It shows the whole path (publish → signed delivery →
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

// Register adds every reference job handler to reg.
func Register(reg *jobs.Registry, log *slog.Logger) error {
	return jobs.Register(reg, func(ctx context.Context, j *jobs.Job[Hello]) error {
		log.InfoContext(ctx, "hello from a job", "job", j.Args.Kind(), "message_id", j.MessageID, "name_len", len(j.Args.Name))
		return nil
	})
}
