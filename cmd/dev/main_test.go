package main

import (
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/proctest"
	"github.com/digis/jobworker/internal/testwait"
	"github.com/digis/jobworker/qstashdev"
)

// TestLocalStack runs `go run ./cmd/dev` as a real process with nothing
// else around (no REDIS_URL, no DATABASE_URL), enqueues the demo job the way
// the printed curl line does, sees the worker run it, uses the API, and
// stops the whole stack with SIGINT.
func TestLocalStack(t *testing.T) {
	t.Parallel()
	bin := proctest.Build(t, "github.com/digis/jobworker/cmd/dev")
	addr := func() string { return "127.0.0.1:" + strconv.Itoa(proctest.FreePort(t)) }
	apiAddr, workerAddr, qstashAddr, apiMetrics, workerMetrics := addr(), addr(), addr(), addr(), addr()
	p := proctest.Start(t, bin, []string{"-api", apiAddr, "-worker", workerAddr, "-qstash", qstashAddr,
		"-api-metrics", apiMetrics, "-worker-metrics", workerMetrics, "-time-scale", "0.01"},
		"PORT="+strings.Split(apiAddr, ":")[1])
	waitFor(t, p, "jobworker local stack is up")
	waitOK(t, "http://"+workerAddr+"/readyz")
	waitOK(t, "http://"+apiAddr+"/readyz")
	// The metrics are where the banner says, and not on the serving ports.
	for _, m := range []string{apiMetrics, workerMetrics} {
		if !strings.Contains(p.Output(), "metrics http://"+m+"/metrics") {
			t.Fatalf("the banner does not say where the metrics are (%s):\n%s", m, p.Output())
		}
		waitOK(t, "http://"+m+"/metrics")
	}
	for _, a := range []string{apiAddr, workerAddr} {
		res, err := http.Get("http://" + a + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNotFound {
			t.Fatalf("/metrics on the serving port %s: %d", a, res.StatusCode)
		}
	}

	// The printed curl line, as an HTTP request.
	url := "http://" + qstashAddr + "/v2/publish/http://" + workerAddr + "/jobs/demo.hello"
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"name":"world"}`))
	req.Header.Set("Authorization", "Bearer "+qstashdev.DevToken)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(body), "messageId") {
		t.Fatalf("publish: %d %s", res.StatusCode, body)
	}
	testwait.For(t, 30*time.Second, "the demo job's delivery logged in:\n"+p.Output(), func() bool { return helloRuns(p.Output()) == 1 })

	res, err = http.Get("http://" + apiAddr + "/api/streams/status?username=democreator")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(body), `"live":true`) {
		t.Fatalf("status: %d %s", res.StatusCode, body)
	}

	// The console is on, at the printed URL, with the printed token.
	m := regexp.MustCompile(`ops console  (http://\S+/ops/)   token ([0-9a-f]{48})`).FindStringSubmatch(p.Output())
	if m == nil || m[1] != "http://"+workerAddr+"/ops/" {
		t.Fatalf("no ops console line with the worker's URL in:\n%s", p.Output())
	}
	req, _ = http.NewRequest(http.MethodGet, m[1]+"api/stats", nil)
	req.Header.Set("Authorization", "Bearer "+m[2])
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("ops console stats: %d", res.StatusCode)
	}

	if err := p.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := p.Wait(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.Output())
	}
	if !strings.Contains(p.Output(), "local stack stopped") {
		t.Fatalf("no clean stop:\n%s", p.Output())
	}
}

// helloRuns counts the demo jobs that ran: the access lines of their
// deliveries, which name the job and its outcome.
func helloRuns(out string) int {
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "msg=request ") && strings.Contains(l, " job=demo.hello ") && strings.Contains(l, " outcome=done") {
			n++
		}
	}
	return n
}

func waitFor(t *testing.T, p *proctest.Proc, text string) {
	t.Helper()
	testwait.For(t, 30*time.Second, "output "+text+" in:\n"+p.Output(), func() bool { return strings.Contains(p.Output(), text) })
}

func waitOK(t *testing.T, url string) {
	t.Helper()
	testwait.For(t, 15*time.Second, url+" answering 200", func() bool {
		res, err := http.Get(url)
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	})
}
