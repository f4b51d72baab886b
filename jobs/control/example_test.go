package control_test

import (
	"context"
	"fmt"
	"net/http/httptest"

	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/jobs/control"
	"github.com/digis/jobworker/qstashdev"
)

type refreshCounts struct{}

func (refreshCounts) Kind() string { return "tips.refresh-counts" }

// Declare a periodic job, look at the plan, sync it, and sync again: the
// second sync changes nothing.
func ExampleClient_SyncSchedules() {
	srv, err := qstashdev.New(qstashdev.Config{})
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	api := httptest.NewServer(srv.Handler())
	defer api.Close()

	reg, _ := jobs.NewRegistry(jobs.RegistryConfig{})
	_ = jobs.Register(reg, func(context.Context, *jobs.Job[refreshCounts]) error { return nil })
	if err := reg.AddPeriodic(jobs.Periodic{Cron: "*/5 * * * *", TimeZone: "Europe/Paris", Args: refreshCounts{}}); err != nil {
		panic(err)
	}

	c, err := control.New(control.Config{QStashURL: api.URL, Token: qstashdev.DevToken,
		WorkerPublicURL: "https://worker.example.com", App: "tips"})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	for _, dry := range []bool{true, false, false} {
		var plan control.SchedulePlan
		if dry {
			plan, err = c.PlanSchedules(ctx, reg.Periodic())
		} else {
			plan, err = c.SyncSchedules(ctx, reg.Periodic())
		}
		if err != nil {
			panic(err)
		}
		for _, ch := range plan.Changes {
			fmt.Println(ch.Action, ch.ID, ch.Cron)
		}
	}
	// Output:
	// create tips.tips.refresh-counts CRON_TZ=Europe/Paris */5 * * * *
	// create tips.tips.refresh-counts CRON_TZ=Europe/Paris */5 * * * *
	// keep tips.tips.refresh-counts CRON_TZ=Europe/Paris */5 * * * *
}
