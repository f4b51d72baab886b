package control_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/testwait"
	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/jobs/control"
	"github.com/digis/jobworker/qstashdev"
)

// actions renders a plan as "id:action" lines, sorted by id.
func actions(p control.SchedulePlan) string {
	var out []string
	for _, c := range p.Changes {
		out = append(out, c.ID+":"+string(c.Action))
	}
	return strings.Join(out, " ")
}

// foreign creates a schedule the way another tool would: POST
// /v2/schedules/{destination}, optionally with an id.
func (e *env) foreign(t *testing.T, id, dest string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.qs.URL+"/v2/schedules/"+dest, strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer "+qstashdev.DevToken)
	req.Header.Set("Upstash-Cron", "0 0 * * *")
	if id != "" {
		req.Header.Set("Upstash-Schedule-Id", id)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("foreign schedule: %v %v", resp, err)
	}
	resp.Body.Close()
}

func TestSyncSchedules(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	// Schedules that are not this app's: a random id and another app's id
	// to our worker, and our App's on another worker. (An unmarked one
	// under our id stops the plan: TestSyncRefusesSquatter.)
	e.foreign(t, "", e.worker.URL+"/jobs/test.ping")
	e.foreign(t, "billing.nightly", e.worker.URL+"/jobs/test.ping")
	elsewhere := e.control(t, control.Config{WorkerPublicURL: "https://elsewhere.example.com"})
	if _, err := elsewhere.SyncSchedules(ctx, []jobs.Periodic{{Name: "gone", Cron: "0 1 * * *", Args: other{}}}); err != nil {
		t.Fatal(err)
	}

	decls := []jobs.Periodic{
		{Cron: "*/5 * * * *", Args: ping{N: 1}, Options: []jobs.EnqueueOption{jobs.WithRetries(1)}},
		{Name: "nightly", Cron: "0 3 * * *", TimeZone: "Europe/Paris", Args: other{}},
	}
	dry, err := e.ctl.PlanSchedules(ctx, decls)
	if err != nil {
		t.Fatal(err)
	}
	if got := actions(dry); got != "jobworker.nightly:create jobworker.test.ping:create" || dry.Foreign != 3 {
		t.Fatalf("dry run = %q foreign %d", got, dry.Foreign)
	}
	if all, _ := e.ctl.Schedules(ctx); len(all) != 3 {
		t.Fatalf("the dry run changed QStash: %d schedules", len(all))
	}
	if _, err := e.ctl.SyncSchedules(ctx, decls); err != nil {
		t.Fatal(err)
	}
	s, err := e.ctl.Schedule(ctx, "jobworker.test.ping")
	if err != nil || !s.Owned || s.Name != "test.ping" || s.Job != "test.ping" || s.Cron != "CRON_TZ=UTC */5 * * * *" ||
		string(s.Body) != `{"n":1}` || s.Retries != 1 || s.Destination != e.worker.URL+"/jobs/test.ping" {
		t.Fatalf("synced schedule = %+v, %v", s, err)
	}

	// Twice: nothing changes, still one schedule per declaration.
	again, err := e.ctl.SyncSchedules(ctx, decls)
	if err != nil || again.Pending() || actions(again) != "jobworker.nightly:keep jobworker.test.ping:keep" {
		t.Fatalf("second sync = %q, %v", actions(again), err)
	}
	if all, _ := e.ctl.Schedules(ctx); len(all) != 5 {
		t.Fatalf("%d schedules after two syncs, want 5", len(all))
	}

	// A changed cron updates in place; a paused schedule stays paused.
	if err := e.ctl.PauseSchedule(ctx, "jobworker.test.ping"); err != nil {
		t.Fatal(err)
	}
	decls[0].Cron = "*/10 * * * *"
	plan, err := e.ctl.SyncSchedules(ctx, decls)
	if err != nil || actions(plan) != "jobworker.nightly:keep jobworker.test.ping:update" || plan.Changes[1].OldCron != "CRON_TZ=UTC */5 * * * *" {
		t.Fatalf("sync after a cron change = %q, %v", actions(plan), err)
	}
	if s, err = e.ctl.Schedule(ctx, "jobworker.test.ping"); err != nil || s.Cron != "CRON_TZ=UTC */10 * * * *" || !s.Paused {
		t.Fatalf("updated schedule = cron %q paused %v, %v", s.Cron, s.Paused, err)
	}
	if err := e.ctl.ResumeSchedule(ctx, "jobworker.test.ping"); err != nil {
		t.Fatal(err)
	}
	if s, err = e.ctl.Schedule(ctx, "jobworker.test.ping"); err != nil || s.Paused || s.NextRun.IsZero() {
		t.Fatalf("resumed schedule = paused %v next %v, %v", s.Paused, s.NextRun, err)
	}
	if err := e.ctl.PauseSchedule(ctx, "nope"); !errors.Is(err, control.ErrNotFound) {
		t.Errorf("pausing an unknown schedule = %v", err)
	}
	// Changed args update too.
	decls[0].Args = ping{N: 2}
	if plan, err = e.ctl.SyncSchedules(ctx, decls); err != nil || plan.Changes[1].Action != control.ActionUpdate {
		t.Fatalf("sync after an args change = %q, %v", actions(plan), err)
	}

	// A removed declaration is deleted; strangers stay.
	plan, err = e.ctl.SyncSchedules(ctx, decls[:1])
	if err != nil || actions(plan) != "jobworker.nightly:delete jobworker.test.ping:keep" {
		t.Fatalf("sync after a removal = %q, %v", actions(plan), err)
	}
	all, err := e.ctl.Schedules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range all {
		ids = append(ids, s.ID)
	}
	if len(all) != 4 || !strings.Contains(strings.Join(ids, " "), "billing.nightly") || !strings.Contains(strings.Join(ids, " "), "jobworker.gone") {
		t.Fatalf("schedules after the removal: %v", ids)
	}
	// Nothing declared: only ours go.
	if plan, err = e.ctl.SyncSchedules(ctx, nil); err != nil || actions(plan) != "jobworker.test.ping:delete" || plan.Foreign != 3 {
		t.Fatalf("empty sync = %q foreign %d, %v", actions(plan), plan.Foreign, err)
	}
}

func TestSyncRefusesSquatter(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.foreign(t, "jobworker.test.ping", e.worker.URL+"/jobs/test.ping")
	_, err := e.ctl.SyncSchedules(context.Background(), []jobs.Periodic{{Cron: "* * * * *", Args: ping{}}})
	if !errors.Is(err, control.ErrInvalidArgument) {
		t.Fatalf("sync over a stranger's id = %v", err)
	}
	s, err := e.ctl.Schedule(context.Background(), "jobworker.test.ping")
	if err != nil || s.Owned || s.Cron != "0 0 * * *" {
		t.Errorf("the stranger's schedule changed: %+v, %v", s, err)
	}
}

func TestSyncRejectsBadDeclarations(t *testing.T) {
	t.Parallel()
	e := setup(t)
	tests := []struct {
		name  string
		given []jobs.Periodic
	}{
		{name: "bad cron", given: []jobs.Periodic{{Cron: "every minute", Args: ping{}}}},
		{name: "six fields", given: []jobs.Periodic{{Cron: "0 * * * * *", Args: ping{}}}},
		{name: "tz in cron", given: []jobs.Periodic{{Cron: "CRON_TZ=UTC * * * * *", Args: ping{}}}},
		{name: "unknown zone", given: []jobs.Periodic{{Cron: "* * * * *", TimeZone: "Mars/Olympus", Args: ping{}}}},
		{name: "dedup", given: []jobs.Periodic{{Cron: "* * * * *", Args: ping{}, Options: []jobs.EnqueueOption{jobs.WithDeduplicationID("x")}}}},
		{name: "twice", given: []jobs.Periodic{{Cron: "* * * * *", Args: ping{}}, {Cron: "0 * * * *", Args: ping{}}}},
		{name: "bad name", given: []jobs.Periodic{{Name: "Nightly", Cron: "* * * * *", Args: ping{}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := e.ctl.SyncSchedules(context.Background(), tt.given); !errors.Is(err, control.ErrInvalidArgument) {
				t.Errorf("SyncSchedules = %v, want ErrInvalidArgument", err)
			}
		})
	}
	if all, _ := e.ctl.Schedules(context.Background()); len(all) != 0 {
		t.Errorf("a rejected sync created %d schedules", len(all))
	}
}

func TestRegistryPeriodic(t *testing.T) {
	t.Parallel()
	reg, err := jobs.NewRegistry(jobs.RegistryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	p := jobs.Periodic{Cron: " */5  * * * * ", Args: ping{}}
	if err := reg.AddPeriodic(p); !errors.Is(err, jobs.ErrInvalidPeriodic) {
		t.Errorf("AddPeriodic before Register = %v", err)
	}
	_ = jobs.Register(reg, func(context.Context, *jobs.Job[ping]) error { return nil })
	if err := reg.AddPeriodic(p); err != nil {
		t.Fatal(err)
	}
	if err := reg.AddPeriodic(p); !errors.Is(err, jobs.ErrInvalidPeriodic) {
		t.Errorf("AddPeriodic twice = %v", err)
	}
	got := reg.Periodic()
	if len(got) != 1 || got[0].Name != "test.ping" || got[0].TimeZone != "UTC" || got[0].CronSpec() != "CRON_TZ=UTC */5 * * * *" {
		t.Errorf("Periodic = %+v", got)
	}
}

// TestScheduledRun: a synced schedule's trigger is delivered to the job's
// route with its args. qstashdev fires a five-field cron on the minute, so
// this waits for the next minute boundary.
func TestScheduledRun(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a minute boundary")
	}
	t.Parallel()
	e := setup(t)
	if _, err := e.ctl.SyncSchedules(context.Background(), []jobs.Periodic{{Cron: "* * * * *", Args: ping{N: 9}}}); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 75*time.Second, "a scheduled run", func() bool { return e.ran("test.ping") > 0 })
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.bodies[0] != `{"n":9}` {
		t.Errorf("scheduled body = %s", e.bodies[0])
	}
}
