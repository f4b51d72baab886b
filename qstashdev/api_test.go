package qstashdev_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/digis/jobworker/qstashdev"
)

// TestBadInput sends what a careless or hostile client might, and expects
// the real service's kind of answer: a JSON {"error"} with the right status,
// and a server that keeps working afterwards.
func TestBadInput(t *testing.T) {
	t.Parallel()
	e := setup(t, qstashdev.Config{MaxBodyBytes: 1024}, nil)
	dest := e.rcv.URL("/ok")
	tests := []struct {
		name    string
		method  string
		path    string
		header  map[string]string
		body    string
		noAuth  bool
		status  int
		errPart string
	}{
		{name: "no token", method: "POST", path: "/v2/publish/" + dest, noAuth: true, status: 401, errPart: "unauthorized"},
		{name: "wrong token", method: "POST", path: "/v2/publish/" + dest, header: map[string]string{"Authorization": "Bearer nope"}, status: 401},
		{name: "unknown route", method: "GET", path: "/v2/nothing", status: 404, errPart: "not found"},
		{name: "unknown version", method: "POST", path: "/v1/publish/" + dest, status: 404},
		{name: "root", method: "GET", path: "/", status: 404},
		{name: "wrong method", method: "GET", path: "/v2/publish/" + dest, status: 405},
		{name: "batch subpath", method: "POST", path: "/v2/batch/x", status: 404},
		{name: "missing destination", method: "POST", path: "/v2/publish/", status: 400},
		{name: "bad scheme", method: "POST", path: "/v2/publish/ftp://example.com/x", status: 400, errPart: "invalid destination url: endpoint has invalid scheme, add http:// or https://"},
		{name: "no scheme", method: "POST", path: "/v2/publish/localhost:3000/api", status: 400, errPart: "invalid scheme"},
		{name: "no host", method: "POST", path: "/v2/publish/https://", status: 400},
		{name: "unknown url group", method: "POST", path: "/v2/publish/ghost", status: 404, errPart: "url group"},
		{name: "delay garbage", method: "POST", path: "/v2/publish/" + dest, header: map[string]string{"Upstash-Delay": "soon"}, status: 400, errPart: "Upstash-Delay"},
		{name: "delay negative", method: "POST", path: "/v2/publish/" + dest, header: map[string]string{"Upstash-Delay": "-5s"}, status: 400},
		{name: "delay too long", method: "POST", path: "/v2/publish/" + dest, header: map[string]string{"Upstash-Delay": "400d"}, status: 400},
		{name: "not-before garbage", method: "POST", path: "/v2/publish/" + dest, header: map[string]string{"Upstash-Not-Before": "tomorrow"}, status: 400, errPart: "Upstash-Not-Before"},
		{name: "retries negative", method: "POST", path: "/v2/publish/" + dest, header: map[string]string{"Upstash-Retries": "-1"}, status: 400, errPart: "Upstash-Retries"},
		{name: "retries too many", method: "POST", path: "/v2/publish/" + dest, header: map[string]string{"Upstash-Retries": "99"}, status: 400},
		{name: "method unknown", method: "POST", path: "/v2/publish/" + dest, header: map[string]string{"Upstash-Method": "BREW"}, status: 400, errPart: "Upstash-Method"},
		{name: "timeout zero", method: "POST", path: "/v2/publish/" + dest, header: map[string]string{"Upstash-Timeout": "0s"}, status: 400},
		{name: "retry delay bad", method: "POST", path: "/v2/publish/" + dest, header: map[string]string{"Upstash-Retry-Delay": "pow(2"}, status: 400, errPart: "Upstash-Retry-Delay"},
		{name: "flow key alone", method: "POST", path: "/v2/publish/" + dest, header: map[string]string{"Upstash-Flow-Control-Key": "k"}, status: 400},
		{name: "flow value bad", method: "POST", path: "/v2/publish/" + dest, header: map[string]string{"Upstash-Flow-Control-Key": "k", "Upstash-Flow-Control-Value": "parallelism=0"}, status: 400},
		{name: "callback not url", method: "POST", path: "/v2/publish/" + dest, header: map[string]string{"Upstash-Callback": "callme"}, status: 400, errPart: "Upstash-Callback"},
		{name: "dedup flag bad", method: "POST", path: "/v2/publish/" + dest, header: map[string]string{"Upstash-Content-Based-Deduplication": "maybe"}, status: 400},
		{name: "redact bad", method: "POST", path: "/v2/publish/" + dest, header: map[string]string{"Upstash-Redact-Fields": "everything"}, status: 400},
		{name: "oversized body", method: "POST", path: "/v2/publish/" + dest, body: strings.Repeat("x", 2048), status: 413, errPart: "1024"},
		{name: "bad queue name", method: "POST", path: "/v2/enqueue/bad%20name/" + dest, status: 400, errPart: "queue name"},
		{name: "enqueue no destination", method: "POST", path: "/v2/enqueue/q", status: 400},
		{name: "batch not json", method: "POST", path: "/v2/batch", body: "{oops", status: 400, errPart: "batch"},
		{name: "batch empty", method: "POST", path: "/v2/batch", body: "[]", status: 400},
		{name: "batch oversized item", method: "POST", path: "/v2/batch", body: `[{"destination":"` + dest + `","body":"` + strings.Repeat("y", 2048) + `"}]`, status: 200, errPart: "exceeds"},
		{name: "unknown message", method: "GET", path: "/v2/messages/msg_nope", status: 404},
		{name: "cancel unknown", method: "DELETE", path: "/v2/messages/msg_nope", status: 404},
		{name: "bulk cancel bad json", method: "DELETE", path: "/v2/messages", body: "[", status: 400},
		{name: "unknown dlq", method: "GET", path: "/v2/dlq/1-1", status: 404},
		{name: "retry unknown dlq", method: "POST", path: "/v2/dlq/retry/1-1", status: 404},
		{name: "dlq bad count", method: "GET", path: "/v2/dlq?count=0", status: 400},
		{name: "dlq bad cursor", method: "GET", path: "/v2/dlq?cursor=x", status: 400},
		{name: "schedule without cron", method: "POST", path: "/v2/schedules/" + dest, status: 400, errPart: "Upstash-Cron"},
		{name: "schedule bad id", method: "POST", path: "/v2/schedules/" + dest, header: map[string]string{"Upstash-Cron": "* * * * *", "Upstash-Schedule-Id": "a b"}, status: 400},
		{name: "unknown schedule", method: "GET", path: "/v2/schedules/scd_nope", status: 404},
		{name: "pause unknown schedule", method: "PATCH", path: "/v2/schedules/scd_nope/pause", status: 404},
		{name: "queue upsert bad json", method: "POST", path: "/v2/queues", body: "nope", status: 400},
		{name: "unknown queue", method: "GET", path: "/v2/queues/none", status: 404},
		{name: "endpoints bad body", method: "POST", path: "/v2/topics/g/endpoints", body: `{"endpoints":[]}`, status: 400},
		{name: "endpoints bad url", method: "POST", path: "/v2/topics/g/endpoints", body: `{"endpoints":[{"url":"nope"}]}`, status: 400},
		{name: "keys wrong method", method: "DELETE", path: "/v2/keys", status: 405},
		{name: "events bad count", method: "GET", path: "/v2/events?count=5000", status: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req, _ := http.NewRequest(tt.method, e.srv.URL+tt.path, strings.NewReader(tt.body))
			if !tt.noAuth {
				req.Header.Set("Authorization", "Bearer "+qstashdev.DevToken)
			}
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, raw)
			}
			if tt.status >= 400 {
				var body struct{ Error string }
				if err := json.Unmarshal(raw, &body); err != nil || body.Error == "" || resp.Header.Get("Content-Type") != "application/json" {
					t.Fatalf("error body %q (%v)", raw, err)
				}
			}
			if !strings.Contains(string(raw), tt.errPart) {
				t.Errorf("body %s does not mention %q", raw, tt.errPart)
			}
		})
	}
	t.Cleanup(func() {
		// Still alive and delivering after all that.
		status, body := e.api(t, "POST", "/v2/publish/"+dest, strings.NewReader("alive"), nil)
		if status != 200 {
			t.Errorf("publish after bad input: %d %s", status, body)
		}
	})
}

// TestDestinationForms checks the routing of docs/qstash-protocol.md §2.2: the destination arrives raw
// (with "//"), percent-encoded, or collapsed, and its query string is
// restored minus our own parameters; the token's sub is the exact URL.
func TestDestinationForms(t *testing.T) {
	t.Parallel()
	e := setup(t, qstashdev.Config{AllowQueryToken: true}, nil)
	base := e.rcv.URL("")
	hostPort := strings.TrimPrefix(base, "http://")
	tests := []struct {
		name, path, want string
		noAuthHeader     bool
	}{
		{name: "raw", path: "/v2/publish/" + base + "/raw/", want: base + "/raw/"},
		{name: "query kept in order", path: "/v2/publish/" + base + "/q?z=1&a=%2F&a=2", want: base + "/q?z=1&a=%2F&a=2"},
		{name: "percent-encoded", path: "/v2/publish/" + url.PathEscape(base+"/enc?x=1"), want: base + "/enc?x=1"},
		{name: "collapsed scheme", path: "/v2/publish/http:/" + hostPort + "/collapsed", want: base + "/collapsed"},
		{name: "token and config in query", path: "/v2/publish/" + base + "/cfg?keep=1&qstash_token=" + url.QueryEscape(qstashdev.DevToken) + "&upstash-forward-x-q=from-query",
			want: base + "/cfg?keep=1", noAuthHeader: true},
		{name: "capitalised resource", path: "/v2/Publish/" + base + "/cap", want: base + "/cap"},
		{name: "enqueue", path: "/v2/enqueue/forms/" + base + "/enq?k=v", want: base + "/enq?k=v"},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest("POST", e.srv.URL+tt.path, strings.NewReader(tt.name))
		if !tt.noAuthHeader {
			req.Header.Set("Authorization", "Bearer "+qstashdev.DevToken)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var pr struct{ MessageID, URL string }
		json.Unmarshal(raw, &pr)
		if resp.StatusCode != 200 || pr.URL != tt.want {
			t.Errorf("%s: %d %s, want url %s", tt.name, resp.StatusCode, raw, tt.want)
			continue
		}
		d := e.rcv.next(t, 5*time.Second)
		if d.url != tt.want || string(d.body) != tt.name {
			t.Errorf("%s: delivered to %s (%q), want %s", tt.name, d.url, d.body, tt.want)
		}
		if tt.name == "token and config in query" && d.header.Get("X-Q") != "from-query" {
			t.Errorf("query config not applied: %v", d.header)
		}
	}
}
