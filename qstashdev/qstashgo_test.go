package qstashdev_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/digis/jobworker/qstashdev"
	qstash "github.com/upstash/qstash-go"
)

func TestPublishDeliversSignedRequest(t *testing.T) {
	t.Parallel()
	e := setup(t, qstashdev.Config{}, nil)
	dest := e.rcv.URL("/jobs/run?tenant=a&x=1&list=b%20c")
	res, err := e.client.Publish(qstash.PublishOptions{
		Url: dest, Body: `{"hello":"world"}`, ContentType: "application/json", Method: "PUT",
		Headers: map[string]string{"test-header": "test-value", "Authorization": "Bearer fwd-secret"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(res.MessageId, "msg_") || res.Deduplicated {
		t.Fatalf("response %+v", res)
	}
	d := e.rcv.next(t, 5*time.Second)
	checks := map[string]string{
		"method":             d.method,
		"url":                d.url,
		"body":               string(d.body),
		"Content-Type":       d.header.Get("Content-Type"),
		"Test-Header":        d.header.Get("Test-Header"),
		"Authorization":      d.header.Get("Authorization"),
		"Upstash-Message-Id": d.header.Get("Upstash-Message-Id"),
		"Upstash-Retried":    d.header.Get("Upstash-Retried"),
		"Upstash-Caller-Ip":  d.header.Get("Upstash-Caller-Ip"),
	}
	want := map[string]string{
		"method": "PUT", "url": dest, "body": `{"hello":"world"}`, "Content-Type": "application/json",
		"Test-Header": "test-value", "Authorization": "Bearer fwd-secret", "Upstash-Message-Id": res.MessageId,
		"Upstash-Retried": "0", "Upstash-Caller-Ip": "127.0.0.1",
	}
	for k, w := range want {
		if checks[k] != w {
			t.Errorf("%s = %q, want %q", k, checks[k], w)
		}
	}
	// Delivered messages leave the message store (docs/qstash-protocol.md §13).
	e.waitFor(t, func() bool { _, err := e.client.Messages().Get(res.MessageId); return err != nil })
}

func TestDelayAndNotBefore(t *testing.T) {
	t.Parallel()
	e := setup(t, qstashdev.Config{}, nil)
	start := time.Now()
	res, err := e.client.Publish(qstash.PublishOptions{Url: e.rcv.URL("/delay"), Body: "d", Delay: "1s", Retries: qstash.RetryCount(0)})
	if err != nil {
		t.Fatal(err)
	}
	// While pending, the message is visible with its notBefore.
	m, err := e.client.Messages().Get(res.MessageId)
	if err != nil {
		t.Fatal(err)
	}
	if m.Body != "d" || m.Url != e.rcv.URL("/delay") || m.MaxRetries != 0 || m.NotBefore-m.CreatedAt != 1000 {
		t.Errorf("pending message %+v", m)
	}
	// Not-Before wins over Delay (docs/qstash-protocol.md §3.3).
	nb := time.Now().Add(1500 * time.Millisecond).Unix()
	_, err = e.client.Publish(qstash.PublishOptions{Url: e.rcv.URL("/notbefore"), Body: "n", Delay: "1h", NotBefore: strconv.FormatInt(nb, 10)})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range e.rcv.take(t, 2, 5*time.Second) {
		switch d.path {
		case "/delay":
			if late := d.at.Sub(start); late < time.Second {
				t.Errorf("delayed message arrived after %v, before its 1s delay", late)
			}
		case "/notbefore":
			if d.at.Before(time.Unix(nb, 0)) {
				t.Errorf("not-before message arrived at %v, before %v", d.at, time.Unix(nb, 0))
			}
		}
	}
}

func TestRetriesUseScaledBackoff(t *testing.T) {
	t.Parallel()
	const scale = 0.002 // first retry after ~24 ms, second after ~297 ms
	e := setup(t, qstashdev.Config{TimeScale: scale}, func(d delivery) reply {
		if d.n <= 2 {
			return reply{status: 500, body: "boom"}
		}
		return reply{status: 200}
	})
	res, err := e.client.Publish(qstash.PublishOptions{Url: e.rcv.URL("/flaky"), Body: "x"})
	if err != nil {
		t.Fatal(err)
	}
	ds := e.rcv.take(t, 3, 10*time.Second)
	for i, d := range ds {
		if d.retried() != i || d.header.Get("Upstash-Message-Id") != res.MessageId {
			t.Errorf("attempt %d: retried=%d id=%s", i, d.retried(), d.header.Get("Upstash-Message-Id"))
		}
		if i > 0 {
			gap := d.at.Sub(ds[i-1].at)
			min := time.Duration(math.Exp(2.5*float64(i)) * scale * float64(time.Second))
			if gap < min || gap > min+time.Second {
				t.Errorf("gap before retry %d = %v, want about %v", i, gap, min)
			}
		}
	}
	// The retry's next delivery time is in the event log.
	status, body := e.api(t, "GET", "/v2/events?state=RETRY&messageId="+res.MessageId, nil, nil)
	var ev struct {
		Events []struct {
			State            string `json:"state"`
			NextDeliveryTime int64  `json:"nextDeliveryTime"`
			ResponseStatus   int    `json:"responseStatus"`
		} `json:"events"`
	}
	if err := json.Unmarshal(body, &ev); err != nil || status != 200 || len(ev.Events) != 2 || ev.Events[0].NextDeliveryTime == 0 || ev.Events[0].ResponseStatus != 500 {
		t.Errorf("events: %d %s", status, body)
	}
}

func TestOutcomeClassification(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		reply     reply
		retries   int
		attempts  int           // expected deliveries
		minGap    time.Duration // lower bound between attempts
		dlqStatus int           // 0: not dead-lettered
	}{
		{name: "2xx done", reply: reply{status: 204}, retries: 3, attempts: 1},
		{name: "489 with header stops", reply: reply{status: 489, header: map[string]string{"Upstash-NonRetryable-Error": "true"}, body: "bad payload"}, retries: 3, attempts: 1, dlqStatus: 489},
		{name: "489 without header retries", reply: reply{status: 489}, retries: 1, attempts: 2, dlqStatus: 489},
		{name: "Retry-After seconds", reply: reply{status: 429, header: map[string]string{"Retry-After": "150"}}, retries: 1, attempts: 2, minGap: 150 * time.Millisecond, dlqStatus: 429},
		{name: "X-RateLimit-Reset duration", reply: reply{status: 503, header: map[string]string{"X-RateLimit-Reset": "2m30s"}}, retries: 1, attempts: 2, minGap: 150 * time.Millisecond, dlqStatus: 503},
		{name: "Retry-After beyond a day ignored", reply: reply{status: 503, header: map[string]string{"Retry-After": "90000"}}, retries: 1, attempts: 2, dlqStatus: 503},
		{name: "3xx is a failure", reply: reply{status: 302, header: map[string]string{"Location": "/elsewhere"}}, retries: 0, attempts: 1, dlqStatus: 302},
		{name: "retries 0 one attempt", reply: reply{status: 500}, retries: 0, attempts: 1, dlqStatus: 500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := setup(t, qstashdev.Config{TimeScale: 0.001}, func(delivery) reply { return tt.reply })
			res, err := e.client.Publish(qstash.PublishOptions{Url: e.rcv.URL("/x"), Body: "b", Retries: qstash.RetryCount(tt.retries)})
			if err != nil {
				t.Fatal(err)
			}
			ds := e.rcv.take(t, tt.attempts, 5*time.Second)
			if tt.attempts > 1 {
				if gap := ds[1].at.Sub(ds[0].at); gap < tt.minGap {
					t.Errorf("gap %v < %v", gap, tt.minGap)
				}
			}
			if tt.dlqStatus == 0 {
				e.waitFor(t, func() bool { _, err := e.client.Messages().Get(res.MessageId); return err != nil })
				msgs, _, err := e.client.Dlq().List(qstash.ListDlqOptions{})
				if err != nil || len(msgs) != 0 {
					t.Errorf("DLQ = %v, %v; want empty", msgs, err)
				}
				return
			}
			var msgs []qstash.DlqMessage
			e.waitFor(t, func() bool {
				msgs, _, err = e.client.Dlq().List(qstash.ListDlqOptions{Filter: qstash.DlqFilter{MessageId: res.MessageId}})
				return err == nil && len(msgs) == 1
			})
			if msgs[0].ResponseStatus != tt.dlqStatus || msgs[0].ResponseBody != tt.reply.body {
				t.Errorf("DLQ entry %+v", msgs[0])
			}
			select {
			case d := <-e.rcv.ch:
				t.Errorf("extra delivery after dead-lettering: retried=%d", d.retried())
			default:
			}
		})
	}
}

func TestRetryDelayExpression(t *testing.T) {
	t.Parallel()
	e := setup(t, qstashdev.Config{TimeScale: 0.1}, func(d delivery) reply {
		if d.n == 1 {
			return reply{status: 500}
		}
		return reply{}
	})
	// 1000 * (1 + retried) ms = 1 s before the first retry, scaled to 100 ms.
	status, body := e.api(t, "POST", "/v2/publish/"+e.rcv.URL("/rd"), strings.NewReader("x"), map[string]string{"Upstash-Retry-Delay": "1000 * (1 + retried)"})
	if status != 200 {
		t.Fatalf("publish: %d %s", status, body)
	}
	ds := e.rcv.take(t, 2, 5*time.Second)
	if gap := ds[1].at.Sub(ds[0].at); gap < 100*time.Millisecond || gap > 900*time.Millisecond {
		t.Errorf("gap %v, want ~100ms", gap)
	}
}

func TestDeduplication(t *testing.T) {
	t.Parallel()
	e := setup(t, qstashdev.Config{}, nil)
	pub := func(opts qstash.PublishOptions) qstash.PublishOrEnqueueResponse {
		t.Helper()
		opts.Url = e.rcv.URL("/dedup")
		res, err := e.client.Publish(opts)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	a := pub(qstash.PublishOptions{Body: "1", DeduplicationId: "order-42", Delay: "1s"})
	b := pub(qstash.PublishOptions{Body: "2", DeduplicationId: "order-42"})
	if !b.Deduplicated || b.MessageId != a.MessageId || a.Deduplicated {
		t.Errorf("dedup by id: first %+v second %+v", a, b)
	}
	c := pub(qstash.PublishOptions{Body: "same", ContentBasedDeduplication: true})
	d := pub(qstash.PublishOptions{Body: "same", ContentBasedDeduplication: true})
	f := pub(qstash.PublishOptions{Body: "other", ContentBasedDeduplication: true})
	if !d.Deduplicated || d.MessageId != c.MessageId || f.Deduplicated {
		t.Errorf("content dedup: %+v %+v %+v", c, d, f)
	}
	status, _ := e.api(t, "POST", "/v2/publish/"+e.rcv.URL("/dedup"), strings.NewReader("2"), map[string]string{"Upstash-Deduplication-Id": "order-42"})
	if status != http.StatusAccepted {
		t.Errorf("dedup hit status %d, want 202", status)
	}
	got := map[string]bool{}
	for _, d := range e.rcv.take(t, 3, 5*time.Second) {
		got[string(d.body)] = true
	}
	if !got["1"] || !got["same"] || !got["other"] {
		t.Errorf("deliveries %v", got)
	}
	// Duplicates are refused while publishing: six publishes, three messages.
	if n := e.countEvents(t, "state=CREATED&url="+url.QueryEscape(e.rcv.URL("/dedup"))); n != 3 {
		t.Errorf("%d messages created, want 3", n)
	}
}

type callbackPayload struct {
	Status          int                 `json:"status"`
	Header          map[string][]string `json:"header"`
	Body            string              `json:"body"`
	Retried         int                 `json:"retried"`
	MaxRetries      int                 `json:"maxRetries"`
	DLQID           string              `json:"dlqId"`
	SourceMessageID string              `json:"sourceMessageId"`
	URL             string              `json:"url"`
	Method          string              `json:"method"`
	SourceBody      string              `json:"sourceBody"`
	NotBefore       string              `json:"notBefore"`
	CreatedAt       string              `json:"createdAt"`
}

func TestCallbacksFailureCallbackAndDLQ(t *testing.T) {
	t.Parallel()
	e := setup(t, qstashdev.Config{}, func(d delivery) reply {
		if d.path == "/work" {
			return reply{status: 500, body: "nope " + strconv.Itoa(d.n), header: map[string]string{"X-Reason": "down"}}
		}
		return reply{}
	})
	status, body := e.api(t, "POST", "/v2/publish/"+e.rcv.URL("/work"), strings.NewReader("payload"), map[string]string{
		"Upstash-Retries":                    "1",
		"Upstash-Callback":                   e.rcv.URL("/cb"),
		"Upstash-Callback-Forward-X-Cb":      "cb-1",
		"Upstash-Failure-Callback":           e.rcv.URL("/failed"),
		"Upstash-Failure-Callback-Method":    "PUT",
		"Upstash-Failure-Callback-Forward-Y": "fcb",
	})
	if status != 200 {
		t.Fatalf("publish: %d %s", status, body)
	}
	var pub struct{ MessageID string }
	json.Unmarshal(body, &pub)
	byPath := map[string][]delivery{}
	for _, d := range e.rcv.take(t, 5, 5*time.Second) { // 2 attempts, 2 callbacks, 1 failure callback
		byPath[d.path] = append(byPath[d.path], d)
	}
	if len(byPath["/work"]) != 2 || len(byPath["/cb"]) != 2 || len(byPath["/failed"]) != 1 {
		t.Fatalf("deliveries per path: work=%d cb=%d failed=%d", len(byPath["/work"]), len(byPath["/cb"]), len(byPath["/failed"]))
	}
	seen := map[int]bool{}
	for _, d := range byPath["/cb"] {
		var p callbackPayload
		if err := json.Unmarshal(d.body, &p); err != nil {
			t.Fatal(err)
		}
		rb, _ := base64.StdEncoding.DecodeString(p.Body)
		sb, _ := base64.StdEncoding.DecodeString(p.SourceBody)
		if p.Status != 500 || p.SourceMessageID != pub.MessageID || p.MaxRetries != 1 || string(sb) != "payload" ||
			string(rb) != "nope "+strconv.Itoa(p.Retried+1) || p.URL != e.rcv.URL("/work") || p.Header["X-Reason"][0] != "down" ||
			d.header.Get("X-Cb") != "cb-1" || d.header.Get("Content-Type") != "application/json" || p.CreatedAt == "" {
			t.Errorf("callback %+v headers %v", p, d.header)
		}
		seen[p.Retried] = true
	}
	if !seen[0] || !seen[1] {
		t.Errorf("callback retried values %v, want 0 and 1", seen)
	}
	f := byPath["/failed"][0]
	var fp callbackPayload
	json.Unmarshal(f.body, &fp)
	if f.method != "PUT" || f.header.Get("Y") != "fcb" || fp.DLQID == "" || fp.Retried != 1 || fp.Status != 500 {
		t.Errorf("failure callback %s %+v %v", f.method, fp, f.header)
	}

	// The DLQ holds the message with its last response, reachable by id.
	dm, err := e.client.Dlq().Get(fp.DLQID)
	if err != nil {
		t.Fatal(err)
	}
	if dm.MessageId != pub.MessageID || dm.ResponseStatus != 500 || dm.ResponseBody != "nope 2" || dm.Body != "payload" ||
		dm.ResponseHeaders.Get("X-Reason") != "down" || dm.Callback != e.rcv.URL("/cb") {
		t.Errorf("DLQ message %+v", dm)
	}
	// Retrying from the DLQ republishes (with an override) and removes the entry.
	status, body = e.api(t, "POST", "/v2/dlq/retry/"+fp.DLQID, nil, map[string]string{"Upstash-Retries": "0", "Upstash-Callback": ""})
	if status != http.StatusCreated {
		t.Fatalf("dlq retry: %d %s", status, body)
	}
	var rr struct{ MessageID string }
	json.Unmarshal(body, &rr)
	again := e.rcv.next(t, 5*time.Second)
	if again.path != "/work" || again.header.Get("Upstash-Message-Id") != rr.MessageID || string(again.body) != "payload" || rr.MessageID == pub.MessageID {
		t.Errorf("retried delivery %s %v", again.path, again.header)
	}
	if _, err := e.client.Dlq().Get(fp.DLQID); err == nil {
		t.Error("DLQ entry still there after retry")
	}
	// The retry failed again (Retries 0) and landed in the DLQ; delete it.
	var msgs []qstash.DlqMessage
	e.waitFor(t, func() bool {
		msgs, _, err = e.client.Dlq().List(qstash.ListDlqOptions{Filter: qstash.DlqFilter{MessageId: rr.MessageID}})
		return err == nil && len(msgs) == 1
	})
	if msgs[0].MaxRetries != 0 {
		t.Errorf("override not applied: maxRetries %d", msgs[0].MaxRetries)
	}
	if err := e.client.Dlq().Delete(msgs[0].DlqId); err != nil {
		t.Fatal(err)
	}
	if err := e.client.Dlq().Delete(msgs[0].DlqId); err == nil {
		t.Error("second delete succeeded")
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	e := setup(t, qstashdev.Config{}, nil)
	var ids []string
	for i := range 4 {
		res, err := e.client.Publish(qstash.PublishOptions{Url: e.rcv.URL("/never"), Body: strconv.Itoa(i), Delay: "1h"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.MessageId)
	}
	if err := e.client.Messages().Cancel(ids[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.Messages().Get(ids[0]); err == nil {
		t.Error("cancelled message still readable")
	}
	if err := e.client.Messages().Cancel(ids[0]); err == nil {
		t.Error("cancelling twice succeeded")
	}
	n, err := e.client.Messages().CancelMany(ids[1:3])
	if err != nil || n != 2 {
		t.Errorf("CancelMany = %d, %v", n, err)
	}
	n, err = e.client.Messages().CancelAll()
	if err != nil || n != 1 {
		t.Errorf("CancelAll = %d, %v", n, err)
	}
	status, body := e.api(t, "GET", "/v2/events?state=CANCELED&messageId="+ids[0], nil, nil)
	if status != 200 || !strings.Contains(string(body), `"CANCELLED"`) {
		t.Errorf("events: %s", body)
	}
	// A message delayed to the near future, cancelled, never arrives; a
	// later one does (the barrier proving the first was due already).
	res, _ := e.client.Publish(qstash.PublishOptions{Url: e.rcv.URL("/cancelled"), Body: "c", Delay: "1s"})
	e.client.Messages().Cancel(res.MessageId)
	e.client.Publish(qstash.PublishOptions{Url: e.rcv.URL("/barrier"), Body: "b", Delay: "1s"})
	if d := e.rcv.next(t, 5*time.Second); d.path != "/barrier" {
		t.Errorf("got %s, want only the barrier", d.path)
	}
}

func TestQueueIsFIFOAndWaitsThroughRetries(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	e := setup(t, qstashdev.Config{}, func(d delivery) reply {
		rep := reply{hold: release}
		if string(d.body) == "3" && d.retried() == 0 {
			rep.status = 500
		}
		return rep
	})
	const n = 10
	for i := range n {
		_, err := e.client.Enqueue(qstash.EnqueueOptions{Queue: "orders", PublishOptions: qstash.PublishOptions{Url: e.rcv.URL("/q"), Body: strconv.Itoa(i)}})
		if err != nil {
			t.Fatal(err)
		}
	}
	// Each delivery is held until the queue's state is checked: attempt i
	// in flight means exactly i+1 attempts started, none beside it.
	var order []string
	for i := range n + 1 {
		d := e.rcv.next(t, 10*time.Second)
		order = append(order, string(d.body))
		if started := e.countEvents(t, "state=ACTIVE&queueName=orders"); started != i+1 {
			t.Fatalf("attempt %d in flight, %d started", i, started)
		}
		release <- struct{}{}
	}
	want := "0 1 2 3 3 4 5 6 7 8 9"
	if got := strings.Join(order, " "); got != want {
		t.Errorf("order %q, want %q", got, want)
	}
	if m := e.rcv.maxIn.Load(); m != 1 {
		t.Errorf("max concurrent deliveries %d, want 1", m)
	}
	status, body := e.api(t, "GET", "/v2/queues/orders", nil, nil)
	if status != 200 || !strings.Contains(string(body), `"parallelism":1`) {
		t.Errorf("queue: %d %s", status, body)
	}
}

func TestQueueParallelismAndPause(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	e := setup(t, qstashdev.Config{}, func(d delivery) reply { return reply{hold: release} })
	status, body := e.api(t, "POST", "/v2/queues", strings.NewReader(`{"queueName":"wide","parallelism":3,"paused":true}`), nil)
	if status != 200 {
		t.Fatalf("upsert queue: %d %s", status, body)
	}
	for i := range 9 {
		if _, err := e.client.Enqueue(qstash.EnqueueOptions{Queue: "wide", PublishOptions: qstash.PublishOptions{Url: e.rcv.URL("/w"), Body: strconv.Itoa(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	// A queue starts attempts synchronously when it admits a message, so a
	// paused queue's nine messages have none started, and all nine wait.
	if started := e.countEvents(t, "state=ACTIVE&queueName=wide"); started != 0 {
		t.Fatalf("%d attempts started from a paused queue", started)
	}
	if status, body := e.api(t, "GET", "/v2/queues/wide", nil, nil); status != 200 || !strings.Contains(string(body), `"lag":9`) {
		t.Fatalf("paused queue: %d %s", status, body)
	}
	if status, _ := e.api(t, "POST", "/v2/queues/wide/resume", nil, nil); status != 200 {
		t.Fatal("resume failed")
	}
	// Three at a time: each batch is held until it is all in flight and no
	// fourth attempt has started.
	for batch := 1; batch <= 3; batch++ {
		e.rcv.take(t, 3, 5*time.Second)
		if started := e.countEvents(t, "state=ACTIVE&queueName=wide"); started != 3*batch {
			t.Fatalf("batch %d: %d attempts started, want %d", batch, started, 3*batch)
		}
		for range 3 {
			release <- struct{}{}
		}
	}
	if m := e.rcv.maxIn.Load(); m != 3 {
		t.Errorf("max concurrent %d, want 3", m)
	}
}

func TestFlowControl(t *testing.T) {
	t.Parallel()
	t.Run("parallelism", func(t *testing.T) {
		t.Parallel()
		release := make(chan struct{})
		e := setup(t, qstashdev.Config{}, func(d delivery) reply { return reply{hold: release} })
		for i := range 8 {
			status, body := e.api(t, "POST", "/v2/publish/"+e.rcv.URL("/fc"), strings.NewReader(strconv.Itoa(i)), map[string]string{
				"Upstash-Flow-Control-Key": "tenant-1", "Upstash-Flow-Control-Value": "parallelism=2",
			})
			if status != 200 {
				t.Fatalf("publish: %d %s", status, body)
			}
		}
		// Two at a time: each pair is held while the key shows it in flight
		// and the rest waiting.
		for pair := 1; pair <= 4; pair++ {
			e.rcv.take(t, 2, 5*time.Second)
			status, body := e.api(t, "GET", "/v2/flowControl/tenant-1", nil, nil)
			want := fmt.Sprintf(`"waitListSize":%d,"parallelismMax":2,"parallelismCount":2`, 8-2*pair)
			if status != 200 || !strings.Contains(string(body), want) {
				t.Fatalf("pair %d: flow control key %d %s, want %s", pair, status, body, want)
			}
			release <- struct{}{}
			release <- struct{}{}
		}
		if m := e.rcv.maxIn.Load(); m != 2 {
			t.Errorf("max concurrent %d, want 2", m)
		}
	})
	t.Run("rate", func(t *testing.T) {
		t.Parallel()
		e := setup(t, qstashdev.Config{}, nil)
		start := time.Now()
		for i := range 6 {
			status, body := e.api(t, "POST", "/v2/publish/"+e.rcv.URL("/rate"), strings.NewReader(strconv.Itoa(i)), map[string]string{
				"Upstash-Flow-Control-Key": "rl", "Upstash-Flow-Control-Value": "rate=3, period=1s",
			})
			if status != 200 {
				t.Fatalf("publish: %d %s", status, body)
			}
		}
		ds := e.rcv.take(t, 6, 5*time.Second)
		// The rate window opens after publishing starts, so the 4th attempt
		// cannot start earlier than a full period after that.
		if gap := ds[3].at.Sub(start); gap < time.Second {
			t.Errorf("4th delivery %v after publishing began; rate 3/s allows it only after 1s", gap)
		}
	})
}

func TestBatch(t *testing.T) {
	t.Parallel()
	e := setup(t, qstashdev.Config{}, nil)
	res, err := e.client.Batch([]qstash.BatchOptions{
		{Url: e.rcv.URL("/b1"), Body: "one", Headers: map[string]string{"k": "v"}},
		{Url: e.rcv.URL("/b2"), Body: "two", Queue: "bq", Delay: "1s"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || len(res[0]) != 1 || len(res[1]) != 1 || res[0][0].MessageId == "" {
		t.Fatalf("batch response %+v", res)
	}
	got := map[string]delivery{}
	for _, d := range e.rcv.take(t, 2, 5*time.Second) {
		got[d.path] = d
	}
	if string(got["/b1"].body) != "one" || got["/b1"].header.Get("K") != "v" || string(got["/b2"].body) != "two" {
		t.Errorf("batch deliveries %+v", got)
	}
	// JSON variant with a bad item: the others are still sent.
	status, body := e.api(t, "POST", "/v2/batch", strings.NewReader(`[{"destination":"ftp://x"},{"destination":"`+e.rcv.URL("/b3")+`","headers":{"upstash-method":"PATCH"}}]`), nil)
	if status != 200 || !strings.Contains(string(body), `"error"`) || !strings.Contains(string(body), `"messageId"`) {
		t.Errorf("mixed batch: %d %s", status, body)
	}
	if d := e.rcv.next(t, 5*time.Second); d.method != "PATCH" {
		t.Errorf("method %s", d.method)
	}
}

func TestURLGroupFanOut(t *testing.T) {
	t.Parallel()
	e := setup(t, qstashdev.Config{}, nil)
	err := e.client.UrlGroups().UpsertEndpoints("team", []qstash.Endpoint{{Url: e.rcv.URL("/a"), Name: "a"}, {Url: e.rcv.URL("/b")}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.client.UrlGroups().Publish(qstash.PublishUrlGroupOptions{UrlGroup: "team", Body: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0].Url != e.rcv.URL("/a") {
		t.Fatalf("response %+v", res)
	}
	for _, d := range e.rcv.take(t, 2, 5*time.Second) {
		if d.header.Get("Upstash-Topic-Name") != "team" {
			t.Errorf("topic header %q", d.header.Get("Upstash-Topic-Name"))
		}
	}
	if _, err := e.client.Publish(qstash.PublishOptions{Url: "nosuchgroup", Body: "x"}); err == nil {
		t.Error("publish to unknown group succeeded")
	}
	if err := e.client.UrlGroups().Delete("team"); err != nil {
		t.Fatal(err)
	}
}

func TestSchedules(t *testing.T) {
	t.Parallel()
	e := setup(t, qstashdev.Config{}, nil)
	s := e.client.Schedules()
	// qstash-go v1.0.0 creates at /v2/Schedules (capital S).
	id, err := s.Create(qstash.ScheduleOptions{
		Destination: e.rcv.URL("/tick"), Cron: "* * * * * *", Body: "tick", ContentType: "text/plain",
		Headers: map[string]string{"test-header": "v"}, Retries: qstash.RetryCount(2),
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(id, "scd_") {
		t.Errorf("schedule id %q", id)
	}
	for _, d := range e.rcv.take(t, 2, 5*time.Second) {
		if d.header.Get("Upstash-Schedule-Id") != id || string(d.body) != "tick" || d.header.Get("Test-Header") != "v" {
			t.Errorf("scheduled delivery %v %q", d.header, d.body)
		}
	}
	got, err := s.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	if got.Cron != "* * * * * *" || got.Destination != e.rcv.URL("/tick") || got.Retries != 2 || got.Body != "tick" ||
		http.Header(got.Header).Get("Test-Header") != "v" || got.LastScheduleTime == 0 || got.NextScheduleTime == 0 {
		t.Errorf("schedule %+v", got)
	}
	if err := s.Pause(id); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(id); !got.IsPaused {
		t.Error("not paused")
	}
	// A paused schedule creates no messages. Triggers create their
	// messages under the server's lock, so the count is final once Pause
	// returns. A barrier schedule on the same cron is due no earlier than
	// the paused one's next trigger would be, and due triggers fire in
	// order: once the barrier has created a message, the paused schedule
	// would have too.
	created := func(scheduleID string) int { return e.countEvents(t, "state=CREATED&scheduleId="+scheduleID) }
	before := created(id)
	barrier, err := s.Create(qstash.ScheduleOptions{Destination: e.rcv.URL("/barrier"), Cron: "* * * * * *"})
	if err != nil {
		t.Fatal(err)
	}
	e.waitFor(t, func() bool { return created(barrier) > 0 })
	if after := created(id); after != before {
		t.Errorf("paused schedule created %d messages", after-before)
	}
	if err := s.Delete(barrier); err != nil {
		t.Fatal(err)
	}
	if err := s.Resume(id); err != nil {
		t.Fatal(err)
	}
	// Deliveries of earlier triggers (and the barrier's) may still arrive;
	// wait for one created after the resume.
	e.waitFor(t, func() bool { return created(id) > before })
	list, err := s.List()
	if err != nil || len(list) != 1 || list[0].Id != id {
		t.Errorf("List = %v, %v", list, err)
	}
	if err := s.Delete(id); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(id); err == nil {
		t.Error("deleted schedule still readable")
	}
	// A custom id with CRON_TZ; creating it twice replaces it.
	for _, body := range []string{"first", ""} {
		status, b := e.api(t, "POST", "/v2/schedules/"+e.rcv.URL("/daily"), strings.NewReader(body), map[string]string{
			"Upstash-Cron": "CRON_TZ=Europe/Istanbul 0 9 * * 1 ", "Upstash-Schedule-Id": "daily.report",
		})
		if status != 200 || !strings.Contains(string(b), "daily.report") {
			t.Fatalf("create: %d %s", status, b)
		}
	}
	status, b := e.api(t, "GET", "/v2/schedules/daily.report", nil, nil)
	if status != 200 || strings.Contains(string(b), `"body"`) || !strings.Contains(string(b), `"cron":"CRON_TZ=Europe/Istanbul 0 9 * * 1"`) {
		t.Errorf("replaced schedule: %d %s", status, b)
	}
	if status, b := e.api(t, "POST", "/v2/schedules/"+e.rcv.URL("/x"), nil, map[string]string{"Upstash-Cron": "not a cron"}); status != 400 {
		t.Errorf("bad cron: %d %s", status, b)
	}
}

func TestKeysAndRotation(t *testing.T) {
	t.Parallel()
	e := setup(t, qstashdev.Config{}, nil)
	keys, err := e.client.Keys().Get()
	if err != nil || keys.Current != qstashdev.DevCurrentSigningKey || keys.Next != qstashdev.DevNextSigningKey {
		t.Fatalf("keys %+v %v", keys, err)
	}
	rotated, err := e.client.Keys().Rotate() // POST /v2/rotate
	if err != nil || rotated.Current != qstashdev.DevNextSigningKey || !strings.HasPrefix(rotated.Next, "sig_") {
		t.Fatalf("rotated %+v %v", rotated, err)
	}
	status, body := e.api(t, "POST", "/v2/keys/rotate", nil, nil)
	if status != 200 || !strings.Contains(string(body), rotated.Next) {
		t.Errorf("keys/rotate: %d %s", status, body)
	}
	// Deliveries are signed with the new current key (the receiver verifies
	// with the server's keys of the moment).
	if _, err := e.client.Publish(qstash.PublishOptions{Url: e.rcv.URL("/after-rotate"), Body: "r"}); err != nil {
		t.Fatal(err)
	}
	e.rcv.next(t, 5*time.Second)
}

func TestTimeoutFailsAttempt(t *testing.T) {
	t.Parallel()
	e := setup(t, qstashdev.Config{}, func(d delivery) reply { return reply{block: true} })
	res, err := e.client.Publish(qstash.PublishOptions{Url: e.rcv.URL("/slow"), Body: "s", Timeout: "1s", Retries: qstash.RetryCount(0)})
	if err != nil {
		t.Fatal(err)
	}
	e.rcv.next(t, 5*time.Second)
	var msgs []qstash.DlqMessage
	e.waitFor(t, func() bool {
		msgs, _, _ = e.client.Dlq().List(qstash.ListDlqOptions{Filter: qstash.DlqFilter{MessageId: res.MessageId}})
		return len(msgs) == 1
	})
	if msgs[0].ResponseStatus != 0 {
		t.Errorf("timed-out attempt has status %d", msgs[0].ResponseStatus)
	}
}

func TestConcurrentPublishers(t *testing.T) {
	t.Parallel()
	e := setup(t, qstashdev.Config{}, nil)
	const workers, each = 8, 40
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				opts := qstash.PublishOptions{Url: e.rcv.URL("/c"), Body: strconv.Itoa(w*each + i)}
				if i%3 == 0 {
					opts.DeduplicationId = "d-" + strconv.Itoa(w*each+i)
				}
				if _, err := e.client.Publish(opts); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	// Management calls race with publishing and delivery.
	for range 20 {
		e.client.Dlq().List(qstash.ListDlqOptions{})
		e.api(t, "GET", "/v2/events", nil, nil)
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, d := range e.rcv.take(t, workers*each, 10*time.Second) {
		if seen[string(d.body)] {
			t.Errorf("duplicate delivery %s", d.body)
		}
		seen[string(d.body)] = true
	}
}
