package main_test

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/proctest"
	"github.com/digis/jobworker/internal/redistest"
	"github.com/digis/jobworker/internal/testwait"
	"github.com/digis/jobworker/jobs/control"
	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/qstashdev/qstashdevtest"
)

// schedules lists qstashdev's schedules by id.
func schedules(t *testing.T, c *control.Client) map[string]control.Schedule {
	t.Helper()
	all, err := c.Schedules(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]control.Schedule{}
	for _, s := range all {
		out[s.ID] = s
	}
	return out
}

// foreignSchedule is one another tool made, to our worker.
func foreignSchedule(t *testing.T, qsURL, dest string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, qsURL+"/v2/schedules/"+dest, strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer "+qstashdev.DevToken)
	req.Header.Set("Upstash-Cron", "0 0 * * *")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("foreign schedule: %v %v", resp, err)
	}
	resp.Body.Close()
}

// TestSyncSchedulesFlag: worker -sync-schedules, run twice as a release
// step would be, leaves one schedule for the tip-count refresh and the
// foreign one as it was; it needs no Redis, database or Stripe secret.
func TestSyncSchedulesFlag(t *testing.T) {
	t.Parallel()
	bin := proctest.Build(t, "github.com/digis/jobworker/cmd/worker")
	qs := qstashdevtest.Start(t, qstashdev.Config{})
	const worker = "https://worker.example.com"
	foreignSchedule(t, qs.URL, worker+"/jobs/tips.refresh-counts")
	env := []string{"QSTASH_URL=" + qs.URL, "QSTASH_TOKEN=" + qstashdev.DevToken, "WORKER_PUBLIC_URL=" + worker, "JOBWORKER_ENV=development"}
	for i, want := range []string{"create", "keep"} {
		code, out := proctest.Run(t, time.Minute, bin, []string{"-sync-schedules"}, env...)
		if code != 0 || !regexp.MustCompile(`(?m)^`+want+` +jobworker\.tips\.refresh-counts `).MatchString(out) || !strings.Contains(out, "1 schedules of others left alone") {
			t.Fatalf("run %d: exit %d\n%s", i+1, code, out)
		}
	}
	c, err := control.New(control.Config{QStashURL: qs.URL, Token: qstashdev.DevToken, WorkerPublicURL: worker})
	if err != nil {
		t.Fatal(err)
	}
	got := schedules(t, c)
	s, ok := got["jobworker.tips.refresh-counts"]
	if len(got) != 2 || !ok || !s.Owned || s.Cron != "CRON_TZ=UTC */5 * * * *" || s.Destination != worker+"/jobs/tips.refresh-counts" || s.Retries != 0 {
		t.Fatalf("schedules after two syncs: %+v", got)
	}
	for _, tt := range []struct {
		env     []string
		wantVar string
	}{
		{env: append(env[:2:2], "WORKER_PUBLIC_URL=ftp://x", "JOBWORKER_ENV=development"), wantVar: "WORKER_PUBLIC_URL"},
		{env: append(env[:4:4], "SCHEDULES_APP=a.b"), wantVar: "SCHEDULES_APP"},
		{env: env[:1], wantVar: "QSTASH_TOKEN"},
		{env: env[:3], wantVar: "QSTASH_TOKEN"}, // the published development token, outside development
	} {
		if code, out := proctest.Run(t, time.Minute, bin, []string{"-sync-schedules"}, tt.env...); code != 1 || !strings.Contains(out, "config: "+tt.wantVar) {
			t.Errorf("without a good %s: exit %d\n%s", tt.wantVar, code, out)
		}
	}
	if code, _ := proctest.Run(t, time.Minute, bin, []string{"-bogus"}); code != 2 {
		t.Errorf("unknown flag: exit %d, want 2", code)
	}
}

// TestSyncSchedulesAtStart: SCHEDULES_SYNC=on syncs before serving.
func TestSyncSchedulesAtStart(t *testing.T) {
	t.Parallel()
	bin := proctest.Build(t, "github.com/digis/jobworker/cmd/worker")
	qs := qstashdevtest.Start(t, qstashdev.Config{})
	rs := redistest.Start(t)
	const worker = "https://worker.example.com"
	p := proctest.Start(t, bin, nil, "REDIS_URL="+rs.URL(), "WORKER_PUBLIC_URL="+worker,
		"QSTASH_CURRENT_SIGNING_KEY="+qstashdev.DevCurrentSigningKey, "QSTASH_NEXT_SIGNING_KEY="+qstashdev.DevNextSigningKey,
		"STRIPE_WEBHOOK_SECRET=whsec_test", "QSTASH_URL="+qs.URL, "QSTASH_TOKEN="+qstashdev.DevToken,
		"DATABASE_URL=memory", "JOBWORKER_ENV=development", "SCHEDULES_SYNC=on", "SCHEDULES_APP=tipsapp", "LOG_FORMAT=text")
	p.WaitHealthy(t)
	c, err := control.New(control.Config{QStashURL: qs.URL, Token: qstashdev.DevToken, WorkerPublicURL: worker, App: "tipsapp"})
	if err != nil {
		t.Fatal(err)
	}
	if s, ok := schedules(t, c)["tipsapp.tips.refresh-counts"]; !ok || !s.Owned {
		t.Fatalf("no schedule after the start:\n%s", p.Output())
	}
	// Log lines are buffered for up to 100 ms: wait for it.
	testwait.For(t, 10*time.Second, "the start-up line schedules synced", func() bool { return strings.Contains(p.Output(), "schedules synced") })
}
