package control

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/digis/jobworker/jobs"
)

// MarkerHeader is forwarded with every message of a schedule SyncSchedules
// made (as Upstash-Forward-Jobworker-Schedule): its value is a digest of the
// declaration, so a sync sees what changed without comparing QStash's
// rendering of each field, and it marks the schedule as this app's.
const MarkerHeader = "Jobworker-Schedule"

// Action is what a sync does to one schedule.
type Action string

// The actions of a SchedulePlan.
const (
	ActionCreate Action = "create" // declared, not in QStash
	ActionUpdate Action = "update" // declared and in QStash, but different: replaced in place
	ActionDelete Action = "delete" // owned, in QStash, no longer declared
	ActionKeep   Action = "keep"   // declared and in QStash as declared
)

// ScheduleChange is one line of a SchedulePlan.
type ScheduleChange struct {
	Action Action
	// ID is the schedule id: Config.App + "." + Name.
	ID   string
	Name string
	Job  string
	// Cron is the declared Upstash-Cron (create, update, keep) or the
	// existing one (delete); OldCron is the existing one on an update.
	Cron, OldCron string
	// Paused: the existing schedule is paused, and stays paused.
	Paused bool

	want *wanted
}

// SchedulePlan is the difference between the declarations and QStash: what
// SyncSchedules would do (a dry run) or did.
type SchedulePlan struct {
	// Changes are sorted by ID; one per declaration and per owned schedule.
	Changes []ScheduleChange
	// Foreign counts the account's schedules this app does not own; a
	// sync never touches them.
	Foreign int
}

// Pending reports whether the plan changes anything.
func (p SchedulePlan) Pending() bool {
	for _, c := range p.Changes {
		if c.Action != ActionKeep {
			return true
		}
	}
	return false
}

// wanted is a declaration rendered as the schedule call that creates it.
type wanted struct {
	id, name, job, cron, dest, digest string
	header                            http.Header
	body                              []byte
}

// ScheduleID is the id SyncSchedules gives the declaration named name.
func (c *Client) ScheduleID(name string) string { return c.app + "." + name }

// claim sets s.Owned and s.Name: an owned schedule has this app's id
// prefix, the marker header and a destination under WorkerPublicURL's job
// routes. All three: a stranger's schedule is never deleted.
func (c *Client) claim(s *Schedule) {
	name, ok := strings.CutPrefix(s.ID, c.app+".")
	if !ok || c.destination == "" || !strings.HasPrefix(s.Destination, c.destination) {
		return
	}
	for k, vs := range s.Header {
		if (strings.EqualFold(k, MarkerHeader) || strings.EqualFold(k, "Upstash-Forward-"+MarkerHeader)) && len(vs) > 0 && vs[0] != "" {
			s.Owned, s.Name, s.digest = true, name, vs[0]
			return
		}
	}
}

func (c *Client) want(p jobs.Periodic) (*wanted, error) {
	p, err := p.Normalize()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	m, err := p.Message()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	w := &wanted{id: c.ScheduleID(p.Name), name: p.Name, job: m.Kind, cron: p.CronSpec(), dest: c.Destination(m.Kind),
		header: m.Header(), body: []byte(m.Body)}
	w.header.Set("Upstash-Cron", w.cron)
	w.header.Set("Upstash-Schedule-Id", w.id)
	// The digest covers everything the call sends except itself.
	sum := sha256.New()
	fmt.Fprintf(sum, "%s\n%s\n%s\n", w.id, w.dest, w.body)
	names := make([]string, 0, len(w.header))
	for k := range w.header {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		fmt.Fprintf(sum, "%s: %s\n", k, strings.Join(w.header[k], ","))
	}
	w.digest = hex.EncodeToString(sum.Sum(nil)[:16])
	w.header.Set("Upstash-Forward-"+MarkerHeader, w.digest)
	return w, nil
}

// PlanSchedules compares the declarations with QStash's schedules and
// returns what a sync would do, changing nothing (a dry run). It needs
// Config.WorkerPublicURL.
func (c *Client) PlanSchedules(ctx context.Context, decls []jobs.Periodic) (SchedulePlan, error) {
	if c.destination == "" {
		return SchedulePlan{}, invalid("schedule sync needs Config.WorkerPublicURL")
	}
	wants := map[string]*wanted{}
	for _, d := range decls {
		w, err := c.want(d)
		if err != nil {
			return SchedulePlan{}, err
		}
		if wants[w.id] != nil {
			return SchedulePlan{}, invalid("periodic job %q is declared twice", w.name)
		}
		wants[w.id] = w
	}
	have, err := c.Schedules(ctx)
	if err != nil {
		return SchedulePlan{}, err
	}
	var plan SchedulePlan
	seen := map[string]bool{}
	for _, s := range have {
		w := wants[s.ID]
		switch {
		case !s.Owned && w != nil:
			// Our id, but not our schedule: replacing it would take it over.
			return SchedulePlan{}, invalid("schedule %s exists but is not this app's (no marker, or another destination); delete it or rename the declaration", s.ID)
		case !s.Owned:
			plan.Foreign++
		case w == nil:
			plan.Changes = append(plan.Changes, ScheduleChange{Action: ActionDelete, ID: s.ID, Name: s.Name, Job: s.Job, Cron: s.Cron, Paused: s.Paused})
		default:
			seen[s.ID] = true
			ch := ScheduleChange{Action: ActionKeep, ID: s.ID, Name: w.name, Job: w.job, Cron: w.cron, Paused: s.Paused, want: w}
			if s.digest != w.digest {
				ch.Action, ch.OldCron = ActionUpdate, s.Cron
			}
			plan.Changes = append(plan.Changes, ch)
		}
	}
	for id, w := range wants {
		if !seen[id] {
			plan.Changes = append(plan.Changes, ScheduleChange{Action: ActionCreate, ID: id, Name: w.name, Job: w.job, Cron: w.cron, want: w})
		}
	}
	slices.SortFunc(plan.Changes, func(a, b ScheduleChange) int { return strings.Compare(a.ID, b.ID) })
	return plan, nil
}

// ApplySchedules carries out a plan from PlanSchedules: creates, then
// updates (a replaced schedule that was paused is paused again), then
// deletes. It goes on past a failed change and returns every error,
// joined.
func (c *Client) ApplySchedules(ctx context.Context, plan SchedulePlan) error {
	var errs []error
	for _, pass := range []Action{ActionCreate, ActionUpdate, ActionDelete} {
		for _, ch := range plan.Changes {
			if ch.Action != pass {
				continue
			}
			var err error
			switch {
			case pass == ActionDelete:
				err = c.DeleteSchedule(ctx, ch.ID)
				if errors.Is(err, ErrNotFound) {
					err = nil // already gone: the goal
				}
			case ch.want == nil:
				err = invalid("schedule %s: the plan was not made by PlanSchedules", ch.ID)
			default:
				err = c.putSchedule(ctx, ch.want)
				if err == nil && ch.Paused {
					err = c.PauseSchedule(ctx, ch.ID)
				}
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s %s: %w", pass, ch.ID, err))
			}
		}
	}
	return errors.Join(errs...)
}

// SyncSchedules makes QStash's schedules match the declarations: it plans,
// applies, and returns the plan it applied. Syncing twice changes nothing
// the second time.
func (c *Client) SyncSchedules(ctx context.Context, decls []jobs.Periodic) (SchedulePlan, error) {
	plan, err := c.PlanSchedules(ctx, decls)
	if err != nil {
		return plan, err
	}
	return plan, c.ApplySchedules(ctx, plan)
}

// putSchedule creates or fully replaces the schedule w.id
// (POST /v2/schedules/{destination} with Upstash-Schedule-Id,
// docs/qstash-protocol.md §12). qstash-go v1.0.0 cannot send the id, so
// this is a plain call. The destination goes into the path as is, as the
// SDKs send it.
func (c *Client) putSchedule(ctx context.Context, w *wanted) error {
	var out struct {
		ScheduleID string `json:"scheduleId"`
	}
	_, err := c.do(ctx, call{op: "schedule create", method: http.MethodPost, path: "/v2/schedules/" + w.dest,
		header: w.header.Clone(), body: w.body, out: &out})
	if err == nil && out.ScheduleID != "" && out.ScheduleID != w.id {
		err = &APIError{Op: "schedule create", StatusCode: http.StatusOK, Message: "qstash ignored Upstash-Schedule-Id (got " + out.ScheduleID + ")"}
	}
	return err
}
