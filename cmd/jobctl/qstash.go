package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/digis/jobworker/internal/schedules"
	"github.com/digis/jobworker/jobs/control"
)

// control builds the job-control client from QSTASH_URL, QSTASH_TOKEN,
// SCHEDULES_APP and WORKER_PUBLIC_URL (required only by -job filters and
// schedules).
func (a *app) control(needWorker bool) (*control.Client, error) {
	cfg, err := schedules.LoadControl(a.getenv, needWorker)
	if err != nil {
		return nil, err
	}
	return control.New(cfg)
}

// dlqRow is a DLQ entry for -json: args as JSON, bodies as text.
type dlqRow struct {
	DLQID          string          `json:"dlqId"`
	MessageID      string          `json:"messageId"`
	Job            string          `json:"job"`
	Args           json.RawMessage `json:"args,omitempty"`
	URL            string          `json:"url"`
	CreatedAt      time.Time       `json:"createdAt"`
	MaxRetries     int             `json:"maxRetries"`
	Attempts       int             `json:"attempts,omitempty"`
	ResponseStatus int             `json:"responseStatus"`
	ResponseBody   string          `json:"responseBody,omitempty"`
	Queue          string          `json:"queue,omitempty"`
	ScheduleID     string          `json:"scheduleId,omitempty"`
	Error          string          `json:"error,omitempty"`
}

func toRow(e control.DLQEntry) dlqRow {
	return dlqRow{DLQID: e.DLQID, MessageID: e.ID, Job: e.Job, Args: e.Args, URL: e.URL, CreatedAt: e.CreatedAt,
		MaxRetries: e.MaxRetries, Attempts: e.Attempts, ResponseStatus: e.ResponseStatus, ResponseBody: string(e.ResponseBody),
		Queue: e.Queue, ScheduleID: e.ScheduleID, Error: e.Error}
}

func dlqFilterFlags(fs *flag.FlagSet, f *control.DLQFilter) {
	fs.StringVar(&f.Job, "job", "", "only this job")
	fs.IntVar(&f.ResponseStatus, "status", 0, "only entries whose last answer had this status")
	fs.StringVar(&f.Queue, "queue", "", "only this queue")
}

func (a *app) dlqList(ctx context.Context, args []string) error {
	var f control.DLQFilter
	limit := 100
	fs, err := flags("dlq list", args, func(fs *flag.FlagSet) {
		dlqFilterFlags(fs, &f)
		fs.IntVar(&limit, "limit", 100, "at most this many entries (0: all)")
	})
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("dlq list takes no arguments")
	}
	c, err := a.control(f.Job != "")
	if err != nil {
		return err
	}
	var rows []dlqRow
	p := control.Page{}
	for {
		page, err := c.DLQ(ctx, f, p)
		if err != nil {
			return err
		}
		for _, e := range page.Entries {
			rows = append(rows, toRow(e))
		}
		if page.Cursor == "" || (limit > 0 && len(rows) >= limit) {
			break
		}
		p.Cursor = page.Cursor
	}
	if limit > 0 && len(rows) > limit {
		rows = rows[:limit]
	}
	if rows == nil {
		rows = []dlqRow{}
	}
	return a.emit(rows, func(t *tabwriter.Writer) {
		row(t, "DLQ ID", "JOB", "STATUS", "CREATED", "MESSAGE", "ARGS")
		for _, r := range rows {
			row(t, r.DLQID, r.Job, r.ResponseStatus, when(r.CreatedAt), r.MessageID, short(string(r.Args), 60))
		}
	})
}

func (a *app) dlqShow(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return usagef("dlq show needs one DLQ id")
	}
	c, err := a.control(false)
	if err != nil {
		return err
	}
	e, err := c.DLQEntry(ctx, args[0])
	if err != nil {
		return err
	}
	r := toRow(e)
	return a.emit(r, func(t *tabwriter.Writer) {
		row(t, "dlq id", r.DLQID)
		row(t, "message", r.MessageID)
		row(t, "job", r.Job)
		row(t, "args", string(r.Args))
		row(t, "url", r.URL)
		row(t, "created", when(r.CreatedAt))
		row(t, "attempts", fmt.Sprintf("%d (max retries %d)", r.Attempts, r.MaxRetries))
		row(t, "last status", r.ResponseStatus)
		row(t, "last body", short(r.ResponseBody, 200))
		if r.Error != "" {
			row(t, "error", r.Error)
		}
		if r.Queue != "" {
			row(t, "queue", r.Queue)
		}
		if r.ScheduleID != "" {
			row(t, "schedule", r.ScheduleID)
		}
	})
}

// dlqAct retries or deletes entries: by id, or by filter (-all for every
// entry).
func (a *app) dlqAct(ctx context.Context, verb string, args []string) error {
	var f control.DLQFilter
	fs, err := flags("dlq "+verb, args, func(fs *flag.FlagSet) {
		dlqFilterFlags(fs, &f)
		fs.BoolVar(&f.All, "all", false, "every entry")
	})
	if err != nil {
		return err
	}
	ids := fs.Args()
	for _, id := range ids {
		if strings.HasPrefix(id, "-") {
			return usagef("dlq %s: flags go before the ids (%s)", verb, id)
		}
	}
	byFilter := f.All || f.Job != "" || f.ResponseStatus != 0 || f.Queue != ""
	if len(ids) > 0 == byFilter {
		return usagef("dlq %s needs DLQ ids, or a filter (-job, -status, -queue, -all), not both", verb)
	}
	c, err := a.control(f.Job != "")
	if err != nil {
		return err
	}
	type result struct {
		Retried  []string `json:"retried,omitempty"`
		Deleted  int      `json:"deleted"`
		Messages []string `json:"messageIds,omitempty"`
	}
	var res result
	switch {
	case verb == "retry" && byFilter:
		res.Messages, err = c.RetryDLQWhere(ctx, f)
	case verb == "retry":
		res.Messages, err = c.RetryDLQ(ctx, ids...)
		if err == nil {
			res.Retried = ids
		}
	case byFilter:
		res.Deleted, err = c.DeleteDLQWhere(ctx, f)
	default:
		res.Deleted, err = c.DeleteDLQ(ctx, ids...)
	}
	if err != nil {
		return err
	}
	if verb == "delete" && len(ids) > 1 && res.Deleted < len(ids) {
		defer func() {
			fmt.Fprintf(a.stderr, "jobctl: %d of %d entries were not there\n", len(ids)-res.Deleted, len(ids))
		}()
	}
	return a.emit(res, func(t *tabwriter.Writer) {
		if verb == "retry" {
			row(t, "retried", len(res.Messages), "new messages:", strings.Join(res.Messages, " "))
			return
		}
		row(t, "deleted", res.Deleted)
	})
}

// messageRow is a pending message for -json.
type messageRow struct {
	ID         string          `json:"messageId"`
	Job        string          `json:"job"`
	Args       json.RawMessage `json:"args,omitempty"`
	URL        string          `json:"url"`
	CreatedAt  time.Time       `json:"createdAt"`
	NotBefore  time.Time       `json:"notBefore"`
	MaxRetries int             `json:"maxRetries"`
	Queue      string          `json:"queue,omitempty"`
	ScheduleID string          `json:"scheduleId,omitempty"`
	Events     []eventRow      `json:"events"`
}

type eventRow struct {
	Time           time.Time `json:"time"`
	MessageID      string    `json:"messageId"`
	Job            string    `json:"job"`
	State          string    `json:"state"`
	ResponseStatus int       `json:"responseStatus,omitempty"`
	Error          string    `json:"error,omitempty"`
	NextDelivery   time.Time `json:"nextDelivery,omitzero"`
}

func toEvent(e control.Event) eventRow {
	return eventRow{Time: e.Time, MessageID: e.MessageID, Job: e.Job, State: string(e.State),
		ResponseStatus: e.ResponseStatus, Error: e.Error, NextDelivery: e.NextDelivery}
}

// jobs shows (with its events) or cancels a message. A message QStash no
// longer holds is shown from its events alone; none at all is exit 3.
func (a *app) jobs(ctx context.Context, verb string, args []string) error {
	if len(args) != 1 {
		return usagef("jobs %s needs one message id", verb)
	}
	c, err := a.control(false)
	if err != nil {
		return err
	}
	id := args[0]
	if verb == "cancel" {
		if err := c.CancelMessage(ctx, id); err != nil {
			return err
		}
		return a.emit(map[string]string{"cancelled": id}, func(t *tabwriter.Writer) { row(t, "cancelled", id) })
	}
	m, merr := c.Message(ctx, id)
	if merr != nil && !isNotFound(merr) {
		return merr
	}
	page, err := c.Events(ctx, control.EventFilter{MessageIDs: []string{id}}, control.Page{})
	if err != nil {
		return err
	}
	if merr != nil && len(page.Events) == 0 {
		return &notFound{what: "message " + id}
	}
	r := messageRow{ID: id, Job: m.Job, Args: m.Args, URL: m.URL, CreatedAt: m.CreatedAt, NotBefore: m.NotBefore,
		MaxRetries: m.MaxRetries, Queue: m.Queue, ScheduleID: m.ScheduleID, Events: []eventRow{}}
	for _, e := range page.Events {
		r.Events = append(r.Events, toEvent(e))
		if r.Job == "" {
			r.Job, r.URL = e.Job, e.URL
		}
	}
	state := "pending"
	if merr != nil {
		state = "no longer held by QStash (done, cancelled or dead-lettered)"
	}
	return a.emit(r, func(t *tabwriter.Writer) {
		row(t, "message", r.ID)
		row(t, "job", r.Job)
		row(t, "state", state)
		if merr == nil {
			row(t, "args", string(r.Args))
			row(t, "created", when(r.CreatedAt))
			row(t, "not before", when(r.NotBefore))
			row(t, "max retries", r.MaxRetries)
		}
		row(t, "")
		row(t, "TIME", "STATE", "STATUS", "ERROR")
		for _, e := range r.Events {
			row(t, when(e.Time), e.State, e.ResponseStatus, short(e.Error, 80))
		}
	})
}

func isNotFound(err error) bool {
	ae, ok := err.(*control.APIError)
	return ok && ae.StatusCode == 404
}

func (a *app) events(ctx context.Context, args []string) error {
	var f control.EventFilter
	var id, state string
	limit := 100
	fs, err := flags("jobs events", args, func(fs *flag.FlagSet) {
		fs.StringVar(&f.Job, "job", "", "only this job")
		fs.StringVar(&id, "id", "", "only this message")
		fs.StringVar(&state, "state", "", "only this state (CREATED, ACTIVE, RETRY, ERROR, DELIVERED, FAILED, CANCELLED, IN_PROGRESS)")
		fs.IntVar(&limit, "limit", 100, "at most this many events (0: all)")
	})
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("jobs events takes no arguments")
	}
	if id != "" {
		f.MessageIDs = []string{id}
	}
	if state != "" {
		f.States = []control.State{control.State(strings.ToUpper(state))}
	}
	c, err := a.control(f.Job != "")
	if err != nil {
		return err
	}
	rows := []eventRow{}
	p := control.Page{}
	for {
		page, err := c.Events(ctx, f, p)
		if err != nil {
			return err
		}
		for _, e := range page.Events {
			rows = append(rows, toEvent(e))
		}
		if page.Cursor == "" || (limit > 0 && len(rows) >= limit) {
			break
		}
		p.Cursor = page.Cursor
	}
	if limit > 0 && len(rows) > limit {
		rows = rows[:limit]
	}
	return a.emit(rows, func(t *tabwriter.Writer) {
		row(t, "TIME", "MESSAGE", "JOB", "STATE", "STATUS")
		for _, e := range rows {
			row(t, when(e.Time), e.MessageID, e.Job, e.State, e.ResponseStatus)
		}
	})
}

type scheduleRow struct {
	ID      string    `json:"scheduleId"`
	Owned   bool      `json:"owned"`
	Job     string    `json:"job,omitempty"`
	Cron    string    `json:"cron"`
	Paused  bool      `json:"paused"`
	LastRun time.Time `json:"lastRun,omitzero"`
	NextRun time.Time `json:"nextRun,omitzero"`
	Dest    string    `json:"destination"`
}

func (a *app) schedulesList(ctx context.Context, args []string) error {
	if len(args) > 0 {
		return usagef("schedules list takes no arguments")
	}
	c, err := a.control(false)
	if err != nil {
		return err
	}
	all, err := c.Schedules(ctx)
	if err != nil {
		return err
	}
	rows := []scheduleRow{}
	for _, s := range all {
		rows = append(rows, scheduleRow{ID: s.ID, Owned: s.Owned, Job: s.Job, Cron: s.Cron, Paused: s.Paused,
			LastRun: s.LastRun, NextRun: s.NextRun, Dest: s.Destination})
	}
	return a.emit(rows, func(t *tabwriter.Writer) {
		row(t, "SCHEDULE", "OURS", "JOB", "CRON", "PAUSED", "LAST RUN", "NEXT RUN")
		for _, r := range rows {
			row(t, r.ID, map[bool]string{true: "yes", false: "-"}[r.Owned], r.Job, r.Cron, r.Paused, when(r.LastRun), when(r.NextRun))
		}
	})
}

type changeRow struct {
	Action  string `json:"action"`
	ID      string `json:"scheduleId"`
	Job     string `json:"job,omitempty"`
	Cron    string `json:"cron"`
	OldCron string `json:"oldCron,omitempty"`
	Paused  bool   `json:"paused,omitempty"`
}

func (a *app) schedulesSync(ctx context.Context, dry bool, args []string) error {
	if len(args) > 0 {
		return usagef("schedules diff and sync take no arguments")
	}
	c, err := a.control(true)
	if err != nil {
		return err
	}
	plan, err := schedules.Sync(ctx, c, dry)
	if err != nil {
		return err
	}
	if a.json {
		out := struct {
			DryRun  bool        `json:"dryRun"`
			Changes []changeRow `json:"changes"`
			Foreign int         `json:"foreign"`
		}{DryRun: dry, Changes: []changeRow{}, Foreign: plan.Foreign}
		for _, ch := range plan.Changes {
			out.Changes = append(out.Changes, changeRow{Action: string(ch.Action), ID: ch.ID, Job: ch.Job, Cron: ch.Cron, OldCron: ch.OldCron, Paused: ch.Paused})
		}
		if err := a.emit(out, nil); err != nil {
			return err
		}
	} else if err := schedules.Print(a.stdout, plan, dry); err != nil {
		return err
	}
	if dry && plan.Pending() {
		return errPending
	}
	return nil
}
