package qstashdev_test

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/digis/jobworker/qstashdev"
)

// TestFlowControlManagement checks pause, resume, pin, unpin and resetRate
// (docs/qstash-protocol.md §10.3) by what reaches the destination: a paused
// key starts nothing, resume releases its wait list, a pinned parallelism
// wins over what messages ask for.
func TestFlowControlManagement(t *testing.T) {
	t.Parallel()
	hold := make(chan struct{})
	e := setup(t, qstashdev.Config{}, func(d delivery) reply {
		if strings.HasPrefix(d.path, "/pinned") {
			return reply{hold: hold}
		}
		return reply{}
	})
	flow := func(key string) map[string]any {
		t.Helper()
		status, body := e.api(t, "GET", "/v2/flowControl/"+key, nil, nil)
		var v map[string]any
		if status != 200 || json.Unmarshal(body, &v) != nil {
			t.Fatalf("GET flowControl %s: %d %s", key, status, body)
		}
		return v
	}
	post := func(path string, want int) {
		t.Helper()
		if status, body := e.api(t, "POST", path, nil, nil); status != want {
			t.Fatalf("POST %s: %d %s, want %d", path, status, body, want)
		}
	}
	publish := func(path, key, value string) {
		t.Helper()
		status, body := e.api(t, "POST", "/v2/publish/"+e.rcv.URL(path), strings.NewReader(path),
			map[string]string{"Upstash-Flow-Control-Key": key, "Upstash-Flow-Control-Value": value})
		if status != 200 {
			t.Fatalf("publish: %d %s", status, body)
		}
	}

	// Paused before its first message: the key is created, and holds.
	post("/v2/flowControl/fc-a/pause", 200)
	publish("/a1", "fc-a", "parallelism=1")
	publish("/a2", "fc-a", "parallelism=1")
	e.waitFor(t, func() bool { return flow("fc-a")["waitListSize"] == 2.0 })
	if v := flow("fc-a"); v["isPaused"] != true || v["parallelismCount"] != 0.0 {
		t.Fatalf("paused key: %v", v)
	}
	post("/v2/flowControl/fc-a/resume", 200)
	got := e.rcv.take(t, 2, 5*time.Second)
	if got[0].path != "/a1" || got[1].path != "/a2" {
		t.Errorf("after resume: %s, %s", got[0].path, got[1].path)
	}

	// A pinned parallelism of 2 wins over the messages' parallelism=1.
	post("/v2/flowControl/fc-b/pin?parallelism=2", 200)
	for _, p := range []string{"/pinned1", "/pinned2", "/pinned3"} {
		publish(p, "fc-b", "parallelism=1")
	}
	e.rcv.take(t, 2, 5*time.Second)
	e.waitFor(t, func() bool { return flow("fc-b")["parallelismCount"] == 2.0 })
	if v := flow("fc-b"); v["parallelismMax"] != 2.0 || v["isPinnedParallelism"] != true || v["waitListSize"] != 1.0 {
		t.Errorf("pinned key: %v", v)
	}
	post("/v2/flowControl/fc-b/unpin?parallelism=true", 200)
	if v := flow("fc-b"); v["isPinnedParallelism"] != false || v["parallelismMax"] != 2.0 {
		t.Errorf("unpinned key keeps its setting until the next message: %v", v)
	}
	close(hold)
	e.rcv.take(t, 1, 5*time.Second)

	// resetRate clears the window's count.
	publish("/r1", "fc-c", "rate=1,period=1h")
	publish("/r2", "fc-c", "rate=1,period=1h")
	e.rcv.take(t, 1, 5*time.Second)
	e.waitFor(t, func() bool { return flow("fc-c")["waitListSize"] == 1.0 })
	post("/v2/flowControl/fc-c/resetRate", 200)
	if d := e.rcv.next(t, 5*time.Second); d.path != "/r2" {
		t.Errorf("after resetRate: %s", d.path)
	}

	// Bad input.
	post("/v2/flowControl/none/resume", 404)
	post("/v2/flowControl/none/resetRate", 404)
	post("/v2/flowControl/fc-a/pin", 400)
	post("/v2/flowControl/fc-a/pin?parallelism=x", 400)
	post("/v2/flowControl/fc-a/unpin", 400)
	post("/v2/flowControl/fc-a/explode", 404)
	if status, _ := e.api(t, "GET", "/v2/flowControl/fc-a/pause", nil, nil); status != 405 {
		t.Errorf("GET pause: %d, want 405", status)
	}
}

// TestURLGroupDefaultHeaders checks PATCH /v2/topics/{name}: defaults
// apply to every publish to the group, the publish's own headers win, bad
// defaults are refused.
func TestURLGroupDefaultHeaders(t *testing.T) {
	t.Parallel()
	e := setup(t, qstashdev.Config{}, nil)
	if status, body := e.api(t, "POST", "/v2/topics/hooks/endpoints",
		strings.NewReader(`{"endpoints":[{"url":"`+e.rcv.URL("/hook")+`"}]}`), nil); status != 200 {
		t.Fatalf("create group: %d %s", status, body)
	}
	patch := func(name, body string) (int, []byte) {
		return e.api(t, "PATCH", "/v2/topics/"+name, strings.NewReader(body), map[string]string{"Content-Type": "application/json"})
	}
	for _, bad := range []string{`{}`, `nope`, `{"headers":{"Upstash-Retries":"-1"}}`, `{"headers":{"Upstash-Delay":"soon"}}`, `{"headers":{"X":1}}`, `{"headers":{"Authorization":"x"}}`} {
		if status, body := patch("hooks", bad); status != 400 {
			t.Errorf("PATCH %s: %d %s, want 400", bad, status, body)
		}
	}
	if status, _ := patch("ghost", `{"headers":{}}`); status != 404 {
		t.Errorf("PATCH unknown group: %d, want 404", status)
	}
	if status, body := patch("hooks", `{"headers":{"Upstash-Forward-X-Tenant":"t1","Upstash-Forward-X-Env":["dev"]}}`); status != 200 {
		t.Fatalf("PATCH: %d %s", status, body)
	}
	status, body := e.api(t, "GET", "/v2/topics/hooks", nil, nil)
	if status != 200 || !strings.Contains(string(body), `"Upstash-Forward-X-Tenant":["t1"]`) {
		t.Errorf("group view: %d %s", status, body)
	}
	e.api(t, "POST", "/v2/publish/hooks", strings.NewReader("one"), map[string]string{"Upstash-Forward-X-Env": "prod"})
	d := e.rcv.next(t, 5*time.Second)
	if d.header.Get("X-Tenant") != "t1" || d.header.Get("X-Env") != "prod" {
		t.Errorf("delivered headers %v: want the default X-Tenant and the publish's own X-Env", d.header)
	}
}

// TestDelayScale checks Config.DelayScale shrinks Upstash-Delay and
// Upstash-Not-Before waits, while the API reports the real notBefore.
func TestDelayScale(t *testing.T) {
	t.Parallel()
	e := setup(t, qstashdev.Config{DelayScale: 0.0001}, nil)
	start := time.Now()
	_, body := e.api(t, "POST", "/v2/publish/"+e.rcv.URL("/late"), strings.NewReader("x"), map[string]string{"Upstash-Delay": "2h"})
	var pr struct{ MessageID string }
	json.Unmarshal(body, &pr)
	status, msg := e.api(t, "GET", "/v2/messages/"+pr.MessageID, nil, nil)
	var m struct{ NotBefore int64 }
	if json.Unmarshal(msg, &m); status != 200 || time.UnixMilli(m.NotBefore).Sub(start) < 2*time.Hour-time.Minute {
		t.Errorf("message view: %d %s, want the unscaled notBefore", status, msg)
	}
	e.rcv.next(t, 10*time.Second) // 2 h × 0.0001 = 720 ms
	e.api(t, "POST", "/v2/publish/"+e.rcv.URL("/nb"), strings.NewReader("x"),
		map[string]string{"Upstash-Not-Before": strconv.FormatInt(time.Now().Add(3*time.Hour).Unix(), 10)})
	e.rcv.next(t, 10*time.Second)
	if _, err := qstashdev.New(qstashdev.Config{DelayScale: -1}); err == nil {
		t.Error("negative DelayScale accepted")
	}
}

// TestStatsAndWaitIdle checks the development-only stats endpoint and
// Server.WaitIdle.
func TestStatsAndWaitIdle(t *testing.T) {
	t.Parallel()
	hold := make(chan struct{})
	e := setup(t, qstashdev.Config{}, func(d delivery) reply {
		switch d.path {
		case "/hold":
			return reply{hold: hold}
		case "/dead":
			return reply{status: 500}
		}
		return reply{}
	})
	e.api(t, "POST", "/v2/publish/"+e.rcv.URL("/hold"), nil, nil)
	e.api(t, "POST", "/v2/publish/"+e.rcv.URL("/later"), nil, map[string]string{"Upstash-Delay": "1h"})
	e.api(t, "POST", "/v2/publish/"+e.rcv.URL("/dead"), nil, map[string]string{"Upstash-Retries": "0"})
	e.api(t, "POST", "/v2/enqueue/one/"+e.rcv.URL("/hold"), nil, nil)
	e.api(t, "POST", "/v2/enqueue/one/"+e.rcv.URL("/queued"), nil, nil)
	e.waitFor(t, func() bool {
		st := e.srv.Stats()
		return st.InFlight == 2 && st.Dead == 1
	})
	want := qstashdev.Stats{Pending: 4, Scheduled: 1, Waiting: 1, InFlight: 2, Dead: 1}
	if st := e.srv.Stats(); st != want {
		t.Errorf("Stats() = %+v, want %+v", st, want)
	}
	status, body := e.api(t, "GET", "/qstashdev/stats?waitIdle=10ms", nil, nil)
	var st qstashdev.Stats
	if json.Unmarshal(body, &st); status != http.StatusRequestTimeout || st != want {
		t.Errorf("waitIdle while busy: %d %s", status, body)
	}
	for path, want := range map[string]int{"/qstashdev/stats?waitIdle=soon": 400, "/qstashdev/nothing": 404, "/qstashdev/stats?waitIdle=1h": 400} {
		if status, body := e.api(t, "GET", path, nil, nil); status != want {
			t.Errorf("GET %s: %d %s, want %d", path, status, body, want)
		}
	}
	req, _ := http.NewRequest("GET", e.srv.URL+"/qstashdev/stats", nil)
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != 401 {
		t.Errorf("stats without a token: %v %v", res, err)
	}
	e.api(t, "DELETE", "/v2/messages", nil, nil) // cancels the delayed one and the queued one; in-flight ones end on answer
	close(hold)
	got := e.srv.AwaitIdle(t, 10*time.Second)
	if !got.Idle || got.Pending != 0 || got.Dead != 1 {
		t.Errorf("after idle: %+v", got)
	}
	status, body = e.api(t, "GET", "/qstashdev/stats?waitIdle=1s", nil, nil)
	if status != 200 || !strings.Contains(string(body), `"idle":true`) {
		t.Errorf("waitIdle when idle: %d %s", status, body)
	}
}
