package cmd_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/proctest"
	"github.com/digis/jobworker/internal/redistest"
	"github.com/digis/jobworker/internal/testwait"
	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/qstashdev/qstashdevtest"
)

const opsStatsToken = "fleet-numbers-test-token-0123456789"

// TestOpsStatsAcrossProcesses runs three worker processes on one Redis,
// each given its own deliveries by QStash (qstash-dev): demo jobs that
// succeed and deliveries to an unknown job; and three API processes, each
// deciding the rate limit of its own stream-status reads. The console on
// the first worker must show, per job and outcome, the sum of what the
// three workers did, and as many status reads allowed as the three APIs
// answered. Every process but that one flushes only when it stops
// (OPS_STATS_INTERVAL=1h), as a serverless instance scaled in does, so
// their counts reach Redis through the flush at shutdown alone. Once the
// totals match they must stay exact: more flushes add nothing.
func TestOpsStatsAcrossProcesses(t *testing.T) {
	t.Parallel()
	bin := proctest.Build(t, "github.com/digis/jobworker/cmd/worker")
	rs := redistest.Start(t)
	rdb := rs.Client(t)
	qs := qstashdevtest.Start(t, qstashdev.Config{TimeScale: 0.01})

	done := []int{3, 5, 7}    // demo.hello deliveries per process
	unknown := []int{1, 2, 0} // deliveries to a job no process knows
	var workers []*proctest.Proc
	for i := range 3 {
		port := proctest.FreePort(t)
		url := "http://127.0.0.1:" + strconv.Itoa(port)
		env := []string{
			"PORT=" + strconv.Itoa(port), "REDIS_URL=" + rs.URL(), "WORKER_PUBLIC_URL=" + url,
			"QSTASH_CURRENT_SIGNING_KEY=" + qstashdev.DevCurrentSigningKey,
			"QSTASH_NEXT_SIGNING_KEY=" + qstashdev.DevNextSigningKey,
			"STRIPE_WEBHOOK_SECRET=whsec_test", "LOG_FORMAT=text", "LOG_LEVEL=warn",
			"QSTASH_URL=" + qs.URL, "QSTASH_TOKEN=" + qstashdev.DevToken, "DATABASE_URL=memory",
			"OPS_STATS_INTERVAL=1h", "JOBWORKER_ENV=development", // qstash-dev's published keys
		}
		if i == 0 {
			env = append(env, "OPS_TOKEN="+opsStatsToken, "OPS_STATS_INTERVAL=100ms")
		}
		p := proctest.Start(t, bin, nil, env...)
		p.WaitHealthy(t)
		workers = append(workers, p)
	}

	publish := func(workerURL, job string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, qs.URL+"/v2/publish/"+workerURL+"/jobs/"+job, strings.NewReader(`{"name":"fleet"}`))
		req.Header.Set("Authorization", "Bearer "+qstashdev.DevToken)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Upstash-Retries", "0")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode >= 300 {
			t.Fatalf("publish: %d", res.StatusCode)
		}
	}
	want := map[string]int{}
	for i, w := range workers {
		for range done[i] {
			publish(w.URL, "demo.hello")
		}
		for range unknown[i] {
			publish(w.URL, "nope.unknown")
		}
		want["demo.hello/done"] += done[i]
		want["_unknown/unknown_job"] += unknown[i] // unregistered names share one label
	}
	// QStash has every answer: each message delivered or failed.
	total := want["demo.hello/done"] + want["_unknown/unknown_job"]
	testwait.For(t, 30*time.Second, "every delivery answered", func() bool {
		var ev struct {
			Events []struct{ MessageID, State string } `json:"events"`
		}
		proctest.GetJSON(t, qs.URL+"/v2/events?count=1000", qstashdev.DevToken, &ev)
		final := map[string]bool{}
		for _, e := range ev.Events {
			if e.State == "DELIVERED" || e.State == "FAILED" {
				final[e.MessageID] = true
			}
		}
		return len(final) == total
	})
	// Three API processes, each deciding its own rate limits on stream
	// status reads, flushing only when they stop.
	reads := []int{4, 6, 8}
	var apis []*proctest.Proc
	apiBin := proctest.Build(t, "github.com/digis/jobworker/cmd/api")
	for i := range 3 {
		p := proctest.Start(t, apiBin, nil,
			"REDIS_URL="+rs.URL(), "QSTASH_URL="+qs.URL, "QSTASH_TOKEN="+qstashdev.DevToken,
			"WORKER_PUBLIC_URL="+workers[0].URL, "LOG_FORMAT=text", "LOG_LEVEL=warn",
			"AUTH_JWT_SECRET="+apiJWTSecret, "RATE_LIMIT_IP_SOURCE=direct", "DATABASE_URL=memory",
			"OPS_STATS_INTERVAL=1h", "JOBWORKER_ENV=development")
		p.WaitHealthy(t)
		for range reads[i] {
			res, err := http.Get(p.URL + "/api/streams/status?username=nobody")
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode == http.StatusTooManyRequests || res.StatusCode >= 500 {
				t.Fatalf("status read: %d", res.StatusCode)
			}
		}
		apis = append(apis, p)
	}
	wantAllowed := reads[0] + reads[1] + reads[2]

	for _, w := range append(workers[1:], apis...) {
		if err := w.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := w.Wait(t, 30*time.Second); code != 0 {
			t.Fatalf("worker exited %d:\n%s", code, w.Output())
		}
	}

	allowed := 0
	totals := func() map[string]int {
		var s struct {
			Deliveries struct {
				Totals map[string]map[string]int `json:"totals"`
			} `json:"deliveries"`
			Limits []struct {
				Bucket string         `json:"bucket"`
				Totals map[string]int `json:"totals"`
			} `json:"limits"`
		}
		proctest.GetJSON(t, workers[0].URL+"/ops/api/stats?minutes=10", opsStatsToken, &s)
		got := map[string]int{}
		for job, outcomes := range s.Deliveries.Totals {
			for o, n := range outcomes {
				got[job+"/"+o] += n
			}
		}
		allowed = 0
		for _, l := range s.Limits {
			if l.Bucket == "streams:status" {
				allowed += l.Totals["allowed"]
			}
		}
		return got
	}
	same := func(got map[string]int) bool {
		if len(got) != len(want) {
			return false
		}
		for k, v := range want {
			if got[k] != v {
				return false
			}
		}
		return true
	}
	var got map[string]int
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("console totals %v, want %v; status reads allowed %d, want %d", got, want, allowed, wantAllowed)
		}
	})
	testwait.For(t, 30*time.Second, "the console's totals equal the sum of the three processes", func() bool {
		got = totals()
		return same(got) && allowed == wantAllowed
	})

	// Two more flushes of the running process add nothing.
	flushes := func() int {
		n := 0
		keys, err := rdb.Keys(context.Background(), "ops:stats:*").Result() // a test's own Redis
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			fields, err := rdb.HGetAll(context.Background(), k).Result()
			if err != nil {
				t.Fatal(err)
			}
			for f, v := range fields {
				if strings.HasPrefix(f, "_instances:") {
					c, _ := strconv.Atoi(v)
					n += c
				}
			}
		}
		return n
	}
	before := flushes()
	if before < 3 {
		t.Errorf("%d flushes recorded, want at least one per process", before)
	}
	// Each flush that sends something counts; give the running one
	// something to send (a read of its console's stats is not counted, a
	// delivery is).
	publish(workers[0].URL, "demo.hello")
	want["demo.hello/done"]++
	testwait.For(t, 30*time.Second, "one more delivery counted once", func() bool {
		got = totals()
		return same(got)
	})
	if after := flushes(); after <= before {
		t.Errorf("flushes %d → %d: the running process did not flush again", before, after)
	}
	if got = totals(); !same(got) || allowed != wantAllowed {
		t.Fatalf("console totals %v and %d status reads allowed, want %v and %d", got, allowed, want, wantAllowed)
	}
}
