package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/proctest"
	"github.com/digis/jobworker/internal/testwait"
	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/qstashdev/qstashdevtest"
)

// TestDataDirSurvivesKill runs the real binary with -data-dir, fills it
// with scheduled (delayed), queued (paused queue) and dead messages, a
// schedule and a URL group, kills it with SIGKILL right after the last
// publish was answered, and starts it again on the same directory: every
// message is there and is delivered exactly once; a third start after a
// clean stop finds nothing left to deliver and the same dead letters.
func TestDataDirSurvivesKill(t *testing.T) {
	t.Parallel()
	bin := proctest.Build(t, "github.com/digis/jobworker/cmd/qstash-dev")
	dir := t.TempDir()
	var mu sync.Mutex
	got := map[string]int{}
	dst := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/dead" {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		mu.Lock()
		got[string(b)]++
		mu.Unlock()
	}))
	t.Cleanup(dst.Close)
	start := func(extra ...string) *proctest.Proc {
		port := proctest.FreePort(t)
		args := append([]string{"-port", strconv.Itoa(port), "-data-dir", dir, "-time-scale", "0.001", "-log-level", "warn"}, extra...)
		p := proctest.Start(t, bin, args, "PORT="+strconv.Itoa(port))
		p.WaitStatus(t, "/v2/keys", http.StatusUnauthorized, 15*time.Second)
		return p
	}
	call := func(p *proctest.Proc, method, path, body string, header map[string]string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, p.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+qstashdev.DevToken)
		for k, v := range header {
			req.Header.Set(k, v)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, b
	}
	mustOK := func(status int, body []byte) []byte {
		t.Helper()
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, body)
		}
		return body
	}

	p1 := start()
	mustOK(call(p1, "POST", "/v2/queues", `{"queueName":"held","paused":true}`, nil))
	mustOK(call(p1, "POST", "/v2/topics/group/endpoints", `{"endpoints":[{"url":"`+dst.URL+`/group"}]}`, nil))
	mustOK(call(p1, "POST", "/v2/schedules/"+dst.URL+"/cron", "", map[string]string{"Upstash-Cron": "0 0 1 1 *", "Upstash-Schedule-Id": "yearly"}))
	for i := range 5 {
		mustOK(call(p1, "POST", "/v2/publish/"+dst.URL+"/dead", "dead", map[string]string{"Upstash-Retries": strconv.Itoa(i % 2)}))
	}
	testwait.For(t, 10*time.Second, "5 dead letters", func() bool {
		var st qstashdev.Stats
		_, b := call(p1, "GET", "/qstashdev/stats", "", nil)
		return json.Unmarshal(b, &st) == nil && st.Dead == 5
	})
	var ids []string
	want := map[string]bool{}
	for i := range 100 {
		body := fmt.Sprintf("delayed-%d", i)
		b := mustOK(call(p1, "POST", "/v2/publish/"+dst.URL+"/delayed", body, map[string]string{"Upstash-Delay": "1h", "Upstash-Retries": "2"}))
		var pr struct{ MessageID string }
		json.Unmarshal(b, &pr)
		ids, want[body] = append(ids, pr.MessageID), true
	}
	for i := range 50 {
		body := fmt.Sprintf("queued-%d", i)
		mustOK(call(p1, "POST", "/v2/enqueue/held/"+dst.URL+"/queued", body, nil))
		want[body] = true
	}
	if err := p1.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p1.Wait(t, 10*time.Second)

	// The 1 h delay now takes 3.6 s. A message the restarted server
	// already delivered is gone from /v2/messages (404): the delivery
	// count below is what proves it survived.
	p2 := start("-delay-scale", "0.001")
	for _, id := range ids {
		if status, body := call(p2, "GET", "/v2/messages/"+id, "", nil); status != http.StatusOK && status != http.StatusNotFound {
			t.Fatalf("message %s after the restart: %d %s", id, status, body)
		}
	}
	var q struct {
		Paused bool
		Lag    int
	}
	json.Unmarshal(mustOK(call(p2, "GET", "/v2/queues/held", "", nil)), &q)
	if !q.Paused || q.Lag != 50 {
		t.Errorf("queue after the restart: %+v, want paused with lag 50", q)
	}
	mustOK(call(p2, "GET", "/v2/schedules/yearly", "", nil))
	mustOK(call(p2, "GET", "/v2/topics/group", "", nil))
	var dlq struct{ Messages []json.RawMessage }
	json.Unmarshal(mustOK(call(p2, "GET", "/v2/dlq", "", nil)), &dlq)
	if len(dlq.Messages) != 5 {
		t.Errorf("%d dead letters after the restart, want 5", len(dlq.Messages))
	}
	mustOK(call(p2, "POST", "/v2/queues/held/resume", "", nil))
	st := qstashdevtest.AwaitIdleURL(t, p2.URL, qstashdev.DevToken, 30*time.Second)
	mu.Lock()
	for body := range want {
		if got[body] != 1 {
			t.Errorf("%s delivered %d times, want once", body, got[body])
		}
	}
	mu.Unlock()
	if st.Dead != 5 {
		t.Errorf("stats after delivery: %+v", st)
	}
	if err := p2.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p2.Wait(t, 15*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}

	p3 := start()
	var st3 qstashdev.Stats
	json.Unmarshal(mustOK(call(p3, "GET", "/qstashdev/stats", "", nil)), &st3)
	if st3.Pending != 0 || st3.Dead != 5 || st3.Schedules != 1 {
		t.Errorf("third start: %+v, want nothing pending, 5 dead, 1 schedule", st3)
	}
}

// TestDataDirKeepsFlowControl: pauses and pins set through the flow-control
// management API survive a SIGKILL with -data-dir. A paused key's messages
// wait across the restart and are delivered once it is resumed; a pinned
// parallelism stays in force over what new messages ask for; an unpinned
// rate stays unpinned.
func TestDataDirKeepsFlowControl(t *testing.T) {
	t.Parallel()
	bin := proctest.Build(t, "github.com/digis/jobworker/cmd/qstash-dev")
	dir := t.TempDir()
	var mu sync.Mutex
	got := map[string]int{}
	dst := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got[string(b)]++
		mu.Unlock()
	}))
	t.Cleanup(dst.Close)
	start := func() *proctest.Proc {
		port := proctest.FreePort(t)
		p := proctest.Start(t, bin, []string{"-port", strconv.Itoa(port), "-data-dir", dir, "-log-level", "warn"}, "PORT="+strconv.Itoa(port))
		p.WaitStatus(t, "/v2/keys", http.StatusUnauthorized, 15*time.Second)
		return p
	}
	call := func(p *proctest.Proc, method, path, body string, header map[string]string) []byte {
		t.Helper()
		req, _ := http.NewRequest(method, p.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+qstashdev.DevToken)
		for k, v := range header {
			req.Header.Set(k, v)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("%s %s: %d %s", method, path, res.StatusCode, b)
		}
		return b
	}
	type flowView struct {
		WaitListSize        int
		ParallelismMax      int
		RateMax             int
		RatePeriod          int64
		IsPaused            bool
		IsPinnedParallelism bool
		IsPinnedRate        bool
	}
	view := func(p *proctest.Proc, key string) flowView {
		t.Helper()
		var v flowView
		if err := json.Unmarshal(call(p, "GET", "/v2/flowControl/"+key, "", nil), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}

	p1 := start()
	call(p1, "POST", "/v2/flowControl/held/pause", "", nil)
	call(p1, "POST", "/v2/flowControl/pinned/pin?parallelism=2&rate=7&period=60", "", nil)
	call(p1, "POST", "/v2/flowControl/unpinned/pin?parallelism=3&rate=5", "", nil)
	call(p1, "POST", "/v2/flowControl/unpinned/unpin?rate=true", "", nil)
	want := map[string]bool{}
	for i := range 10 {
		body := fmt.Sprintf("held-%d", i)
		call(p1, "POST", "/v2/publish/"+dst.URL+"/held", body, map[string]string{
			"Upstash-Flow-Control-Key": "held", "Upstash-Flow-Control-Value": "parallelism=5"})
		want[body] = true
	}
	if v := view(p1, "held"); !v.IsPaused || v.WaitListSize != 10 {
		t.Fatalf("before the kill: %+v, want paused with 10 waiting", v)
	}
	if err := p1.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p1.Wait(t, 10*time.Second)

	p2 := start()
	// The restored messages reach the key's wait list when the scheduler
	// fires them, just after the start.
	testwait.For(t, 10*time.Second, "10 messages waiting on the paused key", func() bool { return view(p2, "held").WaitListSize == 10 })
	if v := view(p2, "held"); !v.IsPaused {
		t.Errorf("paused key after the restart: %+v, want paused", v)
	}
	if v := view(p2, "pinned"); !v.IsPinnedParallelism || v.ParallelismMax != 2 || !v.IsPinnedRate || v.RateMax != 7 || v.RatePeriod != 60 {
		t.Errorf("pinned key after the restart: %+v, want parallelism 2 and 7 per 60 s, both pinned", v)
	}
	if v := view(p2, "unpinned"); !v.IsPinnedParallelism || v.ParallelismMax != 3 || v.IsPinnedRate {
		t.Errorf("partly unpinned key after the restart: %+v, want parallelism 3 pinned, rate not pinned", v)
	}
	// A pinned parallelism wins over what a new message asks for.
	call(p2, "POST", "/v2/publish/"+dst.URL+"/pinned", "pinned-0", map[string]string{
		"Upstash-Flow-Control-Key": "pinned", "Upstash-Flow-Control-Value": "parallelism=9"})
	want["pinned-0"] = true
	if v := view(p2, "pinned"); v.ParallelismMax != 2 {
		t.Errorf("pinned parallelism after a message asking for 9: %d, want 2", v.ParallelismMax)
	}
	testwait.For(t, 10*time.Second, "pinned-0 delivered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return got["pinned-0"] == 1
	})
	// The destination has answered; qstash-dev records that answer just
	// after, so pinned-0 may still count as in flight for a moment.
	var st qstashdev.Stats
	testwait.For(t, 10*time.Second, "pinned-0 acknowledged and only the paused key's 10 left", func() bool {
		st = qstashdev.Stats{}
		json.Unmarshal(call(p2, "GET", "/qstashdev/stats", "", nil), &st)
		return st.InFlight == 0 && st.Pending <= 10
	})
	if st.Pending != 10 || st.Waiting != 10 {
		t.Errorf("with the key still paused: %+v, want 10 pending and waiting", st)
	}
	call(p2, "POST", "/v2/flowControl/held/resume", "", nil)
	qstashdevtest.AwaitIdleURL(t, p2.URL, qstashdev.DevToken, 30*time.Second)
	mu.Lock()
	for body := range want {
		if got[body] != 1 {
			t.Errorf("%s delivered %d times, want once", body, got[body])
		}
	}
	mu.Unlock()
	if err := p2.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p2.Wait(t, 15*time.Second)

	// Resumed before the clean stop, with nothing left waiting: the key is
	// not kept for the third start; the pinned one is.
	p3 := start()
	var keys []struct {
		FlowControlKey string
		IsPaused       bool
	}
	json.Unmarshal(call(p3, "GET", "/v2/flowControl", "", nil), &keys)
	for _, k := range keys {
		if k.FlowControlKey == "held" && k.IsPaused {
			t.Errorf("third start: the resumed key is paused again")
		}
	}
	if v := view(p3, "pinned"); !v.IsPinnedParallelism || v.ParallelismMax != 2 {
		t.Errorf("pinned key on the third start: %+v", v)
	}
}
