// Package schedules syncs the reference application's periodic jobs
// (appjobs.Periodic) to QStash schedules for the binaries: worker
// -sync-schedules (a release step), SCHEDULES_SYNC=on (at the worker's
// start) and jobctl schedules diff|sync. It reads the environment they
// share and prints plans for people.
package schedules

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/digis/jobworker/internal/appjobs"
	"github.com/digis/jobworker/internal/env"
	"github.com/digis/jobworker/jobs/control"
)

// Config is what a sync needs, and only that, so a release job can run it
// without the worker's other secrets.
type Config struct {
	// Control reaches QStash: QSTASH_URL, QSTASH_TOKEN, WORKER_PUBLIC_URL
	// and SCHEDULES_APP (the owner of the schedules; defaults to
	// control.DefaultApp).
	Control control.Config
}

// LoadConfig reads Config. A bad or missing value is an *env.Error naming
// the variable.
func LoadConfig(getenv env.Getenv) (Config, error) {
	c, err := LoadControl(getenv, true)
	return Config{Control: c}, err
}

// LoadControl reads the job-control client's configuration: QSTASH_URL,
// QSTASH_TOKEN, SCHEDULES_APP, and WORKER_PUBLIC_URL, which is optional
// unless requireWorker (only job filters and schedule sync need it).
func LoadControl(getenv env.Getenv, requireWorker bool) (control.Config, error) {
	r := env.NewReader(getenv)
	c := control.Config{
		QStashURL: r.URL("QSTASH_URL", "https://qstash.upstash.io"),
		Token:     r.Secret("QSTASH_TOKEN"),
		App:       r.Str("SCHEDULES_APP", control.DefaultApp),
	}
	if requireWorker || r.Str("WORKER_PUBLIC_URL", "") != "" {
		c.WorkerPublicURL = r.URL("WORKER_PUBLIC_URL", "")
	}
	if err := r.Err(); err != nil {
		return control.Config{}, err
	}
	if err := CheckApp(c); err != nil {
		return control.Config{}, err
	}
	return c, nil
}

// CheckApp maps a bad control.Config.App to SCHEDULES_APP.
func CheckApp(c control.Config) error {
	var ce *control.ConfigError
	for _, err := range unjoin(c.Validate()) {
		if errors.As(err, &ce) && ce.Field == "Config.App" {
			return &env.Error{Var: "SCHEDULES_APP", Reason: ce.Reason}
		}
	}
	return nil
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if err == nil {
		return nil
	}
	return []error{err}
}

// Sync plans the application's schedules against QStash and, unless dry,
// applies the plan.
func Sync(ctx context.Context, c *control.Client, dry bool) (control.SchedulePlan, error) {
	if dry {
		return c.PlanSchedules(ctx, appjobs.Periodic())
	}
	return c.SyncSchedules(ctx, appjobs.Periodic())
}

// Print writes plan as a table: ACTION ID JOB CRON, and a summary line.
func Print(w io.Writer, plan control.SchedulePlan, dry bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACTION\tSCHEDULE\tJOB\tCRON\tNOTE")
	counts := map[control.Action]int{}
	for _, ch := range plan.Changes {
		counts[ch.Action]++
		note := ""
		if ch.OldCron != "" && ch.OldCron != ch.Cron {
			note = "was " + ch.OldCron
		} else if ch.Action == control.ActionUpdate {
			note = "args or options changed"
		}
		if ch.Paused {
			note = join(note, "paused, stays paused")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", ch.Action, ch.ID, ch.Job, ch.Cron, note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	verb := "done"
	if dry {
		verb = "to do (dry run)"
	}
	_, err := fmt.Fprintf(w, "%s: %d create, %d update, %d delete, %d unchanged; %d schedules of others left alone\n",
		verb, counts[control.ActionCreate], counts[control.ActionUpdate], counts[control.ActionDelete], counts[control.ActionKeep], plan.Foreign)
	return err
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
