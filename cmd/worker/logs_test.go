package main_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/proctest"
	"github.com/digis/jobworker/internal/redistest"
	"github.com/digis/jobworker/internal/testwait"
	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/webhooks/webhookstest"
)

// TestEveryDeliveryLoggedThroughShutdown runs the real worker, sends demo
// deliveries from eight clients without pause, SIGTERMs it in the middle of
// them and keeps sending until it stops answering. Every request that got
// an answer (200, or 503 once it was draining) has exactly one access line
// on the process's output, naming its job, message id and outcome, and the
// shutdown's last line ("stopped") is there too: the buffered log writer is
// flushed after the server drained, and nothing is lost on the way out.
func TestEveryDeliveryLoggedThroughShutdown(t *testing.T) {
	t.Parallel()
	bin := proctest.Build(t, "github.com/digis/jobworker/cmd/worker")
	rs := redistest.Start(t)
	port := proctest.FreePort(t)
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	p := proctest.Start(t, bin, nil, "PORT="+strconv.Itoa(port), "REDIS_URL="+rs.URL(), "WORKER_PUBLIC_URL="+base,
		"QSTASH_CURRENT_SIGNING_KEY="+qstashdev.DevCurrentSigningKey, "QSTASH_NEXT_SIGNING_KEY="+qstashdev.DevNextSigningKey,
		"STRIPE_WEBHOOK_SECRET=whsec_test", "QSTASH_TOKEN=unused", "DATABASE_URL=memory", "JOBWORKER_ENV=development",
		"LOG_FORMAT=json", "LOG_LEVEL=info", "SHUTDOWN_TIMEOUT=10s")
	p.WaitHealthy(t)

	url := base + "/jobs/demo.hello"
	body := []byte(`{"name":"world"}`)
	var (
		mu       sync.Mutex
		answered = map[string]int{} // request id → status
		nAnswers atomic.Int64
		stop     atomic.Bool
		wg       sync.WaitGroup
	)
	client := &http.Client{Timeout: 10 * time.Second}
	for c := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				id := "log-" + strconv.Itoa(c) + "-" + strconv.Itoa(i)
				sig, err := webhookstest.QStashSignature(qstashdev.DevCurrentSigningKey, url, body, time.Now())
				if err != nil {
					t.Error(err)
					return
				}
				req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(string(body)))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Upstash-Signature", sig)
				req.Header.Set("Upstash-Message-Id", "msg_"+id)
				req.Header.Set("X-Request-Id", id)
				res, err := client.Do(req)
				if err != nil {
					if !stop.Load() {
						t.Errorf("delivery before the shutdown: %v", err)
					}
					return // the listener is closed: the process is going
				}
				res.Body.Close()
				mu.Lock()
				answered[id] = res.StatusCode
				mu.Unlock()
				nAnswers.Add(1)
				if res.StatusCode != http.StatusOK && res.StatusCode != http.StatusServiceUnavailable {
					t.Errorf("delivery %s: %d", id, res.StatusCode)
				}
			}
		}()
	}
	// Answered, not sent: the requests in flight at the SIGTERM may find
	// their keep-alive connection closed and never get an answer.
	testwait.For(t, 30*time.Second, "300 deliveries answered", func() bool { return nAnswers.Load() >= 300 })
	stop.Store(true)
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
	wg.Wait()

	out := p.Output()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	var last map[string]any
	logged := map[string]int{}
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not a whole JSON line: %q", l)
		}
		last = m
		if m["msg"] != "request" || m["route"] != "/jobs/:name" {
			continue
		}
		id, _ := m["request_id"].(string)
		logged[id]++
		status := int(m["status"].(float64))
		if want := answered[id]; want != 0 && status != want {
			t.Errorf("%s: logged status %d, answered %d", id, status, want)
		}
		outcome := map[int]string{200: "done", 503: "draining"}[status]
		if m["job"] != "demo.hello" || m["message_id"] != "msg_"+id || m["outcome"] != outcome {
			t.Errorf("%s: access line without its delivery: %v", id, m)
		}
	}
	done := 0
	for id, status := range answered {
		if logged[id] != 1 {
			t.Errorf("request %s (answered %d) has %d access lines", id, status, logged[id])
		}
		if status == http.StatusOK {
			done++
		}
	}
	if last["msg"] != "stopped" {
		t.Fatalf("the last line is %v, not the shutdown's last", last)
	}
	t.Logf("%d deliveries answered (%d done) before and during the shutdown, each with one line", len(answered), done)
	if t.Failed() {
		t.Log(errors.New("output:\n" + out))
	}
}
