package jobs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// ErrInvalidPeriodic: a Periodic declaration is wrong (name, cron, time
// zone, args or options) or its name is taken.
var ErrInvalidPeriodic = errors.New("jobs: invalid periodic job")

// Periodic declares a job QStash runs on a cron schedule. Declare it next to
// the job's handler with Registry.AddPeriodic; package jobs/control syncs
// the declarations to QStash schedules (SyncSchedules), each under a stable
// id derived from Name, so syncing twice changes nothing and a changed
// Cron updates the schedule in place.
type Periodic struct {
	// Name identifies the declaration for good: the schedule's id derives
	// from it, so renaming it replaces the schedule. Job-name rules
	// (ValidateName). Defaults to Args.Kind().
	Name string
	// Cron has five fields (minute hour day-of-month month day-of-week),
	// e.g. "*/5 * * * *"; QStash's resolution is one minute.
	Cron string
	// TimeZone is the IANA zone Cron is read in, e.g. "Europe/Paris".
	// Defaults to UTC.
	TimeZone string
	// Args is the payload of every run; its type must have a registered
	// handler.
	Args Args
	// Options are the enqueue options of every run, after the type's
	// EnqueueDefaults (retries, delay, timeout, callbacks, flow control,
	// queue, retry delay). Deduplication and WithNotBefore are refused:
	// they would drop or stall the later runs.
	Options []EnqueueOption
}

// cronParser is QStash's five-field cron (docs/qstash-protocol.md §12).
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)

// Normalize checks p and returns it with its defaults filled in (Name,
// TimeZone) and its Cron trimmed. Errors wrap ErrInvalidPeriodic.
func (p Periodic) Normalize() (Periodic, error) {
	bad := func(format string, a ...any) (Periodic, error) {
		return Periodic{}, fmt.Errorf("%w: %q: "+format, append([]any{ErrInvalidPeriodic, p.Name}, a...)...)
	}
	if p.Args == nil {
		return bad("nil Args")
	}
	if p.Name == "" {
		p.Name = p.Args.Kind()
	}
	if err := ValidateName(p.Name); err != nil {
		return bad("name: %v", err)
	}
	p.Cron = strings.Join(strings.Fields(p.Cron), " ")
	if strings.HasPrefix(p.Cron, "CRON_TZ=") || strings.HasPrefix(p.Cron, "TZ=") {
		return bad("set TimeZone instead of a TZ prefix in Cron")
	}
	if _, err := cronParser.Parse(p.Cron); err != nil {
		return bad("cron %q: %v", p.Cron, err)
	}
	if p.TimeZone == "" {
		p.TimeZone = "UTC"
	}
	if _, err := time.LoadLocation(p.TimeZone); err != nil || strings.ContainsAny(p.TimeZone, " \t") {
		return bad("unknown time zone %q", p.TimeZone)
	}
	m, err := p.Message()
	if err != nil {
		return bad("%v", err)
	}
	o := m.Options
	if o.DeduplicationID != "" || o.ContentBasedDeduplication || !o.NotBefore.IsZero() {
		return bad("deduplication and not-before options would drop or stall later runs")
	}
	return p, nil
}

// Message is what every run publishes: the args and options as
// PrepareMessage encodes them (no traceparent).
func (p Periodic) Message() (Message, error) {
	return PrepareMessage(context.Background(), p.Args, p.Options...)
}

// CronSpec is the schedule's Upstash-Cron value: the zone as a CRON_TZ
// prefix, then Cron.
func (p Periodic) CronSpec() string {
	tz := p.TimeZone
	if tz == "" {
		tz = "UTC"
	}
	return "CRON_TZ=" + tz + " " + strings.Join(strings.Fields(p.Cron), " ")
}

// AddPeriodic declares a periodic job. Its args type must already be
// registered (Register); its name must be unused. Errors wrap
// ErrInvalidPeriodic.
func (r *Registry) AddPeriodic(p Periodic) error {
	p, err := p.Normalize()
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.handlers[p.Args.Kind()] == nil {
		return fmt.Errorf("%w: %q: job %q has no registered handler", ErrInvalidPeriodic, p.Name, p.Args.Kind())
	}
	for _, q := range r.periodic {
		if q.Name == p.Name {
			return fmt.Errorf("%w: %q is declared twice", ErrInvalidPeriodic, p.Name)
		}
	}
	r.periodic = append(r.periodic, p)
	return nil
}

// Periodic returns the declared periodic jobs, normalized, sorted by name.
func (r *Registry) Periodic() []Periodic {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := slices.Clone(r.periodic)
	slices.SortFunc(out, func(a, b Periodic) int { return strings.Compare(a.Name, b.Name) })
	return out
}
