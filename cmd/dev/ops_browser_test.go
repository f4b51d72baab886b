package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/proctest"
	"github.com/digis/jobworker/internal/redistest"
	"github.com/digis/jobworker/internal/testwait"
	"github.com/digis/jobworker/qstashdev"
)

const opsToken = "ops-console-test-token-0123456789abcdef"

// browserDir is the playwright-core package (pinned by its lock file) that
// drives the console; ScreenshotDir (gitignored) receives one screenshot per
// view, kept after the test for people to look at.
var (
	browserDir    = filepath.Join("testdata", "opsbrowser")
	screenshotDir = filepath.Join(browserDir, "screenshots")
)

// TestOpsConsoleBrowser runs the local stack as a real process on a real
// Redis, makes a run (demo jobs, stream-status reads through the cache and
// the rate limiter), makes one job dead in qstash-dev (Redis paused during
// its only attempt: 503, no retries left) and a queue, then drives the
// console in Debian's headless Chromium (testdata/opsbrowser/check.mjs):
// sign-in, the numbers of the run on the overview, rate-limit and cache
// views, the dead job's attempts, the queue paused and the DLQ entry
// retried from the page, refusals without the credential or the CSRF
// token, a screenshot per view. Afterwards the retried job has run
// exactly once. Without node, the installed node_modules or
// /usr/bin/chromium it skips, except under CI=true, where it fails.
// Prepare with: npm ci --prefix cmd/dev/testdata/opsbrowser
func TestOpsConsoleBrowser(t *testing.T) {
	t.Parallel()
	node, chromium := browserTools(t)
	rs := redistest.Start(t)
	bin := proctest.Build(t, "github.com/digis/jobworker/cmd/dev")
	addr := func() string { return "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t)) }
	apiAddr, workerAddr, qstashAddr := addr(), addr(), addr()
	p := proctest.Start(t, bin, []string{"-api", apiAddr, "-worker", workerAddr, "-qstash", qstashAddr, "-time-scale", "0.01"},
		"PORT="+strings.Split(apiAddr, ":")[1], "REDIS_URL="+rs.URL(), "OPS_TOKEN="+opsToken, "OPS_STATS_INTERVAL=200ms")
	waitFor(t, p, "jobworker local stack is up")
	waitOK(t, "http://"+workerAddr+"/readyz")
	waitOK(t, "http://"+apiAddr+"/readyz")
	qs := "http://" + qstashAddr
	hellos := func() int { return helloRuns(p.Output()) }

	// The run: five demo jobs, ten stream-status reads.
	const jobs, reads = 5, 10
	for range jobs {
		publishHello(t, qs, workerAddr, nil)
	}
	testwait.For(t, 30*time.Second, "five demo jobs run", func() bool { return hellos() == jobs })
	for range reads {
		res, err := http.Get("http://" + apiAddr + "/api/streams/status?username=democreator")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("status read: %d", res.StatusCode)
		}
	}

	// A tip sent twice with one Idempotency-Key: first, then replayed (its
	// follow-up jobs are delivered too).
	fan := regexp.MustCompile(`export FAN=(\S+)`).FindStringSubmatch(p.Output())
	streamID := regexp.MustCompile(`"streamId":(\d+)`).FindStringSubmatch(p.Output())
	if fan == nil || streamID == nil {
		t.Fatalf("no FAN token or stream id in:\n%s", p.Output())
	}
	for range 2 {
		req, _ := http.NewRequest(http.MethodPost, "http://"+apiAddr+"/api/tips/quick", strings.NewReader(`{"amount":5,"streamId":`+streamID[1]+`}`))
		req.Header.Set("Authorization", "Bearer "+fan[1])
		req.Header.Set("Idempotency-Key", "ops-tip-1")
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK && res.StatusCode != http.StatusCreated {
			t.Fatalf("tip: %d", res.StatusCode)
		}
	}
	qstashIdle(t, qs)

	// A dead job: its only attempt meets a paused Redis (503).
	rs.Pause()
	publishHello(t, qs, workerAddr, map[string]string{"Upstash-Retries": "0"})
	var dlq []struct {
		DLQID string `json:"dlqId"`
	}
	testwait.For(t, 30*time.Second, "the job in the DLQ", func() bool {
		var page struct {
			Messages []struct {
				DLQID string `json:"dlqId"`
			} `json:"messages"`
		}
		qstashGet(t, qs+"/v2/dlq", &page)
		dlq = page.Messages
		return len(dlq) == 1
	})
	rs.Resume()

	// The fleet numbers the console will show, once flushed: every attempt
	// QStash made (an answer is a DELIVERED or an ERROR event), 10 status
	// decisions allowed.
	qstashIdle(t, qs)
	var ev struct {
		Events []struct{ State string } `json:"events"`
	}
	qstashGet(t, qs+"/v2/events?count=1000", &ev)
	deliveries := 0
	for _, e := range ev.Events {
		if e.State == "DELIVERED" || e.State == "ERROR" {
			deliveries++
		}
	}
	var bucket string
	testwait.For(t, 30*time.Second, "the run's numbers flushed", func() bool {
		var s struct {
			Deliveries struct {
				Total int `json:"total"`
			} `json:"deliveries"`
			Limits []struct {
				Bucket, Tier string
				Totals       map[string]int `json:"totals"`
			} `json:"limits"`
		}
		opsGet(t, "http://"+workerAddr+"/ops/api/stats", &s)
		for _, l := range s.Limits {
			if l.Bucket == "streams:status" && l.Totals["allowed"] == reads {
				bucket = l.Tier + "/" + l.Bucket
			}
		}
		return s.Deliveries.Total == deliveries && bucket != ""
	})

	// A queue, to pause from the page.
	req, _ := http.NewRequest(http.MethodPost, qs+"/v2/queues", strings.NewReader(`{"queueName":"ops-demo","parallelism":1}`))
	req.Header.Set("Authorization", "Bearer "+qstashdev.DevToken)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode >= 300 {
		t.Fatalf("creating a queue: %d", res.StatusCode)
	}

	if err := os.MkdirAll(screenshotDir, 0o755); err != nil {
		t.Fatal(err)
	}
	shots, err := filepath.Abs(screenshotDir)
	if err != nil {
		t.Fatal(err)
	}
	expect, _ := json.Marshal(map[string]any{"deliveries": deliveries, "dlqId": dlq[0].DLQID,
		"bucket": bucket, "allowed": reads, "family": "status", "queue": "ops-demo"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "check.mjs")
	cmd.Dir = browserDir
	cmd.Env = append(os.Environ(), "OPS_URL=http://"+workerAddr+"/ops/", "OPS_TOKEN="+opsToken,
		"SHOT_DIR="+shots, "EXPECT="+string(expect), "CHROMIUM="+chromium)
	out, err := cmd.CombinedOutput()
	t.Logf("browser: %s", out)
	if err != nil {
		t.Fatalf("node check.mjs: %v", err)
	}
	t.Logf("screenshots in %s", shots)

	// The retried job runs once, and nothing is left to run.
	testwait.For(t, 30*time.Second, "the retried job run", func() bool { return hellos() == jobs+1 })
	qstashIdle(t, qs)
	var page struct {
		Messages []json.RawMessage `json:"messages"`
	}
	qstashGet(t, qs+"/v2/dlq", &page)
	if len(page.Messages) != 0 {
		t.Errorf("%d entries left in the DLQ", len(page.Messages))
	}
	if n := hellos(); n != jobs+1 {
		t.Fatalf("demo jobs run %d times, want %d: the retried one ran %d times", n, jobs+1, n-jobs)
	}
	var queues []struct {
		Name   string `json:"name"`
		Paused bool   `json:"paused"`
	}
	qstashGet(t, qs+"/v2/queues", &queues)
	if len(queues) != 1 || !queues[0].Paused {
		t.Errorf("queues after the page paused ops-demo: %+v", queues)
	}
	for _, action := range []string{"action=dlq.retry", "action=queue.pause"} {
		// Log lines are buffered for up to 100 ms: wait for it.
		testwait.For(t, 10*time.Second, action+" logged", func() bool { return strings.Contains(p.Output(), action) })
	}
}

// qstashIdle waits until every message QStash took is delivered or failed.
func qstashIdle(t *testing.T, qs string) {
	t.Helper()
	testwait.For(t, 30*time.Second, "QStash idle", func() bool {
		var ev struct {
			Events []struct{ MessageID, State string } `json:"events"`
		}
		qstashGet(t, qs+"/v2/events?count=1000", &ev)
		last := map[string]string{} // newest first: the first seen is a message's state
		for _, e := range ev.Events {
			if _, ok := last[e.MessageID]; !ok {
				last[e.MessageID] = e.State
			}
		}
		for _, s := range last {
			if s != "DELIVERED" && s != "FAILED" {
				return false
			}
		}
		return true
	})
}

// browserTools finds node, the installed playwright-core and Chromium.
func browserTools(t *testing.T) (node, chromium string) {
	t.Helper()
	ci := os.Getenv("CI") == "true"
	skip := func(format string, args ...any) {
		t.Helper()
		if ci {
			t.Fatalf(format+" (CI=true requires it)", args...)
		}
		t.Skipf(format, args...)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		skip("node not found in PATH")
	}
	if _, err := os.Stat(filepath.Join(browserDir, "node_modules", "playwright-core", "package.json")); err != nil {
		skip("%s/node_modules missing; run `npm ci --prefix cmd/dev/testdata/opsbrowser`", browserDir)
	}
	chromium = "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		skip("%s missing; apt-get install chromium", chromium)
	}
	return node, chromium
}

func publishHello(t *testing.T, qs, workerAddr string, headers map[string]string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, qs+"/v2/publish/http://"+workerAddr+"/jobs/demo.hello", strings.NewReader(`{"name":"ops"}`))
	req.Header.Set("Authorization", "Bearer "+qstashdev.DevToken)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK && res.StatusCode != http.StatusCreated {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("publish: %d %s", res.StatusCode, b)
	}
}

func qstashGet(t *testing.T, url string, v any) {
	t.Helper()
	proctest.GetJSON(t, url, qstashdev.DevToken, v)
}
func opsGet(t *testing.T, url string, v any) { t.Helper(); proctest.GetJSON(t, url, opsToken, v) }
