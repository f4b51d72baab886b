package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// These tests are golden tests of the wire format: a strict recording server
// stands in for QStash and the real qstash-go client does the talking.

const (
	testToken  = "test-token-do-not-log"
	testWorker = "https://worker.example.com"
	testTP     = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
)

type recorded struct {
	Method     string
	RequestURI string
	Header     http.Header
	Body       []byte
}

// upstash returns the request's Upstash-* headers, one value each.
func (r recorded) upstash() map[string]string {
	out := map[string]string{}
	for k, v := range r.Header {
		if strings.HasPrefix(k, "Upstash-") {
			out[k] = strings.Join(v, "|")
		}
	}
	return out
}

type recorder struct {
	srv  *httptest.Server
	reqs chan recorded
}

// newRecorder starts a fake QStash that records each request and answers
// with respond (default: 200 {"messageId":"msg_1"}). A plain handler, not a
// ServeMux, so the raw destination in the path is not "cleaned" away.
func newRecorder(t *testing.T, respond http.HandlerFunc) *recorder {
	t.Helper()
	rec := &recorder{reqs: make(chan recorded, 16)}
	if respond == nil {
		respond = func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, `{"messageId":"msg_1"}`) }
	}
	rec.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rec.reqs <- recorded{Method: r.Method, RequestURI: r.RequestURI, Header: r.Header.Clone(), Body: body}
		respond(w, r)
	}))
	t.Cleanup(rec.srv.Close)
	return rec
}

func (rec *recorder) next(t *testing.T) recorded {
	t.Helper()
	select {
	case r := <-rec.reqs:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no request reached the fake QStash")
		return recorded{}
	}
}

func (rec *recorder) none(t *testing.T) {
	t.Helper()
	select {
	case r := <-rec.reqs:
		t.Fatalf("unexpected request %s %s", r.Method, r.RequestURI)
	default:
	}
}

func newTestClient(t *testing.T, qstashURL string, mod ...func(*ClientConfig)) *Client {
	t.Helper()
	cfg := ClientConfig{QStashURL: qstashURL, Token: testToken, WorkerPublicURL: testWorker + "/"}
	for _, m := range mod {
		m(&cfg)
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type defaultedArgs struct {
	ID string `json:"id"`
}

func (defaultedArgs) Kind() string { return "test.defaulted" }

func (a defaultedArgs) EnqueueDefaults() []EnqueueOption {
	return []EnqueueOption{
		WithRetries(5),
		WithDelay(time.Minute),
		WithDeduplicationID("defaulted:" + a.ID),
		WithTimeout(30 * time.Second),
		WithFlowControl(FlowControl{Key: "creator-1", Parallelism: 2}),
	}
}

func TestEnqueueWire(t *testing.T) {
	t.Parallel()
	notBefore := time.Unix(1_900_000_000, 0)
	publish := "/v2/publish/" + testWorker + "/jobs/"
	tests := []struct {
		name     string
		ctx      context.Context
		args     Args
		opts     []EnqueueOption
		wantURI  string
		wantHead map[string]string // exactly the Upstash-* headers expected
		wantBody string
	}{
		{
			name: "plain", args: testArgs{ID: "a", Count: 1},
			wantURI: publish + "test.job", wantHead: map[string]string{}, wantBody: `{"id":"a","count":1}`,
		},
		{
			name: "delay rounds up to seconds", args: testArgs{}, opts: []EnqueueOption{WithDelay(1500 * time.Millisecond)},
			wantURI: publish + "test.job", wantHead: map[string]string{"Upstash-Delay": "2s"}, wantBody: `{"id":"","count":0}`,
		},
		{
			name: "not before", args: testArgs{}, opts: []EnqueueOption{WithNotBefore(notBefore)},
			wantURI: publish + "test.job", wantHead: map[string]string{"Upstash-Not-Before": "1900000000"}, wantBody: `{"id":"","count":0}`,
		},
		{
			name: "last of delay and not-before wins", args: testArgs{}, opts: []EnqueueOption{WithNotBefore(notBefore), WithDelay(time.Hour)},
			wantURI: publish + "test.job", wantHead: map[string]string{"Upstash-Delay": "3600s"}, wantBody: `{"id":"","count":0}`,
		},
		{
			name: "zero retries is sent", args: testArgs{}, opts: []EnqueueOption{WithRetries(0)},
			wantURI: publish + "test.job", wantHead: map[string]string{"Upstash-Retries": "0"}, wantBody: `{"id":"","count":0}`,
		},
		{
			name: "retry delay", args: testArgs{}, opts: []EnqueueOption{WithRetries(4), WithRetryDelay("1000 * pow(2, retried)")},
			wantURI:  publish + "test.job",
			wantHead: map[string]string{"Upstash-Retries": "4", "Upstash-Retry-Delay": "1000 * pow(2, retried)"}, wantBody: `{"id":"","count":0}`,
		},
		{
			name: "deduplication id", args: testArgs{}, opts: []EnqueueOption{WithDeduplicationID("tips:settle:42")},
			wantURI: publish + "test.job", wantHead: map[string]string{"Upstash-Deduplication-Id": "tips:settle:42"}, wantBody: `{"id":"","count":0}`,
		},
		{
			name: "content-based deduplication", args: testArgs{}, opts: []EnqueueOption{WithContentBasedDeduplication()},
			wantURI: publish + "test.job", wantHead: map[string]string{"Upstash-Content-Based-Deduplication": "true"}, wantBody: `{"id":"","count":0}`,
		},
		{
			name: "callbacks", args: testArgs{},
			opts:    []EnqueueOption{WithCallback("https://api.example.com/cb"), WithFailureCallback("https://api.example.com/failed?x=1")},
			wantURI: publish + "test.job",
			wantHead: map[string]string{
				"Upstash-Callback": "https://api.example.com/cb", "Upstash-Failure-Callback": "https://api.example.com/failed?x=1",
			},
			wantBody: `{"id":"","count":0}`,
		},
		{
			name: "flow control", args: testArgs{},
			opts:    []EnqueueOption{WithFlowControl(FlowControl{Key: "creator-42", Parallelism: 5, Rate: 10, Period: time.Minute})},
			wantURI: publish + "test.job",
			wantHead: map[string]string{
				"Upstash-Flow-Control-Key": "creator-42", "Upstash-Flow-Control-Value": "parallelism=5,rate=10,period=60s",
			},
			wantBody: `{"id":"","count":0}`,
		},
		{
			name: "flow control rate only", args: testArgs{}, opts: []EnqueueOption{WithFlowControl(FlowControl{Key: "k", Rate: 3})},
			wantURI:  publish + "test.job",
			wantHead: map[string]string{"Upstash-Flow-Control-Key": "k", "Upstash-Flow-Control-Value": "rate=3"}, wantBody: `{"id":"","count":0}`,
		},
		{
			name: "timeout", args: testArgs{}, opts: []EnqueueOption{WithTimeout(90 * time.Second)},
			wantURI: publish + "test.job", wantHead: map[string]string{"Upstash-Timeout": "90s"}, wantBody: `{"id":"","count":0}`,
		},
		{
			name: "queue", args: testArgs{}, opts: []EnqueueOption{WithQueue("emails")},
			wantURI: "/v2/enqueue/emails/" + testWorker + "/jobs/test.job", wantHead: map[string]string{}, wantBody: `{"id":"","count":0}`,
		},
		{
			name: "traceparent forwarded", ctx: WithTraceparent(context.Background(), testTP), args: testArgs{},
			wantURI: publish + "test.job", wantHead: map[string]string{"Upstash-Forward-Traceparent": testTP}, wantBody: `{"id":"","count":0}`,
		},
		{
			name: "content-based dedup drops the traceparent", ctx: WithTraceparent(context.Background(), testTP), args: testArgs{},
			opts:    []EnqueueOption{WithContentBasedDeduplication()},
			wantURI: publish + "test.job", wantHead: map[string]string{"Upstash-Content-Based-Deduplication": "true"}, wantBody: `{"id":"","count":0}`,
		},
		{
			name: "type defaults", args: defaultedArgs{ID: "x"},
			wantURI: publish + "test.defaulted",
			wantHead: map[string]string{
				"Upstash-Retries": "5", "Upstash-Delay": "60s", "Upstash-Deduplication-Id": "defaulted:x", "Upstash-Timeout": "30s",
				"Upstash-Flow-Control-Key": "creator-1", "Upstash-Flow-Control-Value": "parallelism=2",
			},
			wantBody: `{"id":"x"}`,
		},
		{
			name: "call overrides type defaults", args: defaultedArgs{ID: "x"},
			opts: []EnqueueOption{
				WithRetries(0), WithNotBefore(notBefore), WithContentBasedDeduplication(), WithTimeout(0), WithFlowControl(FlowControl{}),
			},
			wantURI: publish + "test.defaulted",
			wantHead: map[string]string{
				"Upstash-Retries": "0", "Upstash-Not-Before": "1900000000", "Upstash-Content-Based-Deduplication": "true",
			},
			wantBody: `{"id":"x"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := newRecorder(t, nil)
			c := newTestClient(t, rec.srv.URL)
			ctx := tt.ctx
			if ctx == nil {
				ctx = context.Background()
			}

			// Enqueue, and PrepareMessage + a JSON round trip (as an outbox
			// stores it) + PublishMessage, must send the same request.
			for _, via := range []string{"Enqueue", "PublishMessage"} {
				var res EnqueueResult
				var err error
				if via == "Enqueue" {
					res, err = c.Enqueue(ctx, tt.args, tt.opts...)
				} else {
					res, err = publishStored(ctx, c, tt.args, tt.opts...)
				}
				if err != nil {
					t.Fatalf("%s: %v", via, err)
				}
				if res != (EnqueueResult{MessageID: "msg_1"}) {
					t.Errorf("%s: result = %+v", via, res)
				}
				checkWire(t, via, rec.next(t), tt.wantURI, tt.wantHead, tt.wantBody)
			}
		})
	}
}

// publishStored publishes args the way an outbox does: prepare, store as
// JSON, load, publish.
func publishStored(ctx context.Context, c *Client, args Args, opts ...EnqueueOption) (EnqueueResult, error) {
	m, err := PrepareMessage(ctx, args, opts...)
	if err != nil {
		return EnqueueResult{}, err
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return EnqueueResult{}, err
	}
	var loaded Message
	if err := json.Unmarshal(raw, &loaded); err != nil {
		return EnqueueResult{}, err
	}
	return c.PublishMessage(context.Background(), loaded)
}

func checkWire(t *testing.T, via string, got recorded, wantURI string, wantHead map[string]string, wantBody string) {
	t.Helper()
	if got.Method != http.MethodPost {
		t.Errorf("%s: method = %s", via, got.Method)
	}
	if got.RequestURI != wantURI {
		t.Errorf("%s: request URI = %s\nwant          %s", via, got.RequestURI, wantURI)
	}
	if a := got.Header.Get("Authorization"); a != "Bearer "+testToken {
		t.Errorf("%s: Authorization = %q", via, a)
	}
	if ct := got.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type = %q", via, ct)
	}
	if h := got.upstash(); !maps.Equal(h, wantHead) {
		t.Errorf("%s: Upstash headers = %v\nwant              %v", via, h, wantHead)
	}
	if string(got.Body) != wantBody {
		t.Errorf("%s: body = %s, want %s", via, got.Body, wantBody)
	}
}

func TestEnqueueInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args Args
		opts []EnqueueOption
		want error
	}{
		{"nil args", nil, nil, ErrInvalidOption},
		{"bad name", badNameArgs{}, nil, ErrInvalidName},
		{"validate fails", testArgs{Count: -1}, nil, ErrInvalidOption},
		{"negative delay", testArgs{}, []EnqueueOption{WithDelay(-time.Second)}, ErrInvalidOption},
		{"negative retries", testArgs{}, []EnqueueOption{WithRetries(-1)}, ErrInvalidOption},
		{"negative timeout", testArgs{}, []EnqueueOption{WithTimeout(-time.Second)}, ErrInvalidOption},
		{"relative callback", testArgs{}, []EnqueueOption{WithCallback("/cb")}, ErrInvalidOption},
		{"ftp callback", testArgs{}, []EnqueueOption{WithFailureCallback("ftp://x/cb")}, ErrInvalidOption},
		{"callback with credentials", testArgs{}, []EnqueueOption{WithCallback("https://u:p@x/cb")}, ErrInvalidOption},
		{"dedup id with newline", testArgs{}, []EnqueueOption{WithDeduplicationID("a\nb")}, ErrInvalidOption},
		{"dedup id too long", testArgs{}, []EnqueueOption{WithDeduplicationID(strings.Repeat("a", 513))}, ErrInvalidOption},
		{"retry delay control char", testArgs{}, []EnqueueOption{WithRetryDelay("1\r\n")}, ErrInvalidOption},
		{"queue name", testArgs{}, []EnqueueOption{WithQueue("a/b")}, ErrInvalidOption},
		{"flow without key", testArgs{}, []EnqueueOption{WithFlowControl(FlowControl{Rate: 1})}, ErrInvalidOption},
		{"flow without limits", testArgs{}, []EnqueueOption{WithFlowControl(FlowControl{Key: "k"})}, ErrInvalidOption},
		{"flow period without rate", testArgs{}, []EnqueueOption{WithFlowControl(FlowControl{Key: "k", Parallelism: 1, Period: time.Second})}, ErrInvalidOption},
		{"flow period too long", testArgs{}, []EnqueueOption{WithFlowControl(FlowControl{Key: "k", Rate: 1, Period: 8 * 24 * time.Hour})}, ErrInvalidOption},
		{"flow negative", testArgs{}, []EnqueueOption{WithFlowControl(FlowControl{Key: "k", Rate: -1})}, ErrInvalidOption},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := newRecorder(t, nil)
			c := newTestClient(t, rec.srv.URL)
			_, err := c.Enqueue(context.Background(), tt.args, tt.opts...)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if errors.Is(err, ErrPublish) {
				t.Errorf("validation error also matches ErrPublish: %v", err)
			}
			_, err = c.EnqueueBatch(context.Background(), []EnqueueRequest{{Args: testArgs{}}, {Args: tt.args, Options: tt.opts}})
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), "request 1") {
				t.Fatalf("batch err = %v, want %v naming request 1", err, tt.want)
			}
			rec.none(t)
		})
	}
}

func TestEnqueueAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		status     int
		header     map[string]string
		body       string
		want       EnqueueResult
		wantStatus int // 0 with wantErr: no HTTP status
		wantErr    bool
		temporary  bool
		retryAfter time.Duration
	}{
		{name: "created", status: 201, body: `{"messageId":"msg_2","url":"x"}`, want: EnqueueResult{MessageID: "msg_2"}},
		{name: "deduplicated", status: 202, body: `{"messageId":"msg_1","deduplicated":true}`, want: EnqueueResult{MessageID: "msg_1", Deduplicated: true}},
		{name: "bad request", status: 400, body: `{"error":"invalid destination url"}`, wantErr: true, wantStatus: 400},
		{name: "unauthorized", status: 401, body: `{"error":"unauthorized"}`, wantErr: true, wantStatus: 401},
		{name: "quota", status: 429, header: map[string]string{"Retry-After": "7"}, body: `{"error":"daily quota"}`, wantErr: true, wantStatus: 429, temporary: true, retryAfter: 7 * time.Second},
		{name: "html 502", status: 502, body: `<html>bad gateway</html>`, wantErr: true, wantStatus: 502, temporary: true},
		{name: "no message id", status: 200, body: `{}`, wantErr: true, temporary: true},
		{name: "not json", status: 200, body: `ok`, wantErr: true, temporary: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := newRecorder(t, func(w http.ResponseWriter, _ *http.Request) {
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			})
			var logs bytes.Buffer
			promReg := prometheus.NewRegistry()
			c := newTestClient(t, rec.srv.URL, func(cfg *ClientConfig) {
				cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
				cfg.Registerer = promReg
			})
			res, err := c.Enqueue(context.Background(), testArgs{ID: "secret-payload"})
			rec.next(t)
			if strings.Contains(logs.String(), testToken) || strings.Contains(logs.String(), "secret-payload") {
				t.Errorf("token or payload logged: %s", logs.String())
			}
			result := "ok"
			if tt.want.Deduplicated {
				result = "deduplicated"
			}
			if tt.wantErr {
				result = "error"
			}
			if v := metricValue(t, promReg, "jobworker_jobs_enqueued_total", map[string]string{"job": "test.job", "result": result}); v != 1 {
				t.Errorf("enqueued_total{result=%s} = %v", result, v)
			}
			if v := metricValue(t, promReg, "jobworker_jobs_publish_duration_seconds", map[string]string{"call": "publish"}); v != 1 {
				t.Errorf("publish_duration count = %v", v)
			}
			if !tt.wantErr {
				if err != nil || res != tt.want {
					t.Fatalf("got %+v, %v; want %+v", res, err, tt.want)
				}
				return
			}
			var pe *PublishError
			if !errors.As(err, &pe) || !errors.Is(err, ErrPublish) {
				t.Fatalf("err = %v, want *PublishError", err)
			}
			if pe.StatusCode != tt.wantStatus || pe.Temporary() != tt.temporary || pe.RetryAfter != tt.retryAfter || pe.Job != "test.job" {
				t.Errorf("PublishError = %+v (temporary %v)", pe, pe.Temporary())
			}
		})
	}
}

// hangingQStash accepts requests and never answers until the test ends.
func hangingQStash(t *testing.T) (*httptest.Server, <-chan struct{}) {
	t.Helper()
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	return srv, arrived
}

func TestEnqueueHonoursContext(t *testing.T) {
	t.Parallel()
	t.Run("cancel", func(t *testing.T) {
		t.Parallel()
		srv, arrived := hangingQStash(t)
		c := newTestClient(t, srv.URL)
		ctx, cancel := context.WithCancel(context.Background())
		go func() { <-arrived; cancel() }()
		start := time.Now()
		_, err := c.Enqueue(ctx, testArgs{})
		var pe *PublishError
		if !errors.Is(err, context.Canceled) || !errors.As(err, &pe) || pe.StatusCode != 0 || !pe.Temporary() {
			t.Fatalf("err = %v, want a temporary *PublishError wrapping context.Canceled", err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("Enqueue took %v after cancel", took)
		}
	})
	t.Run("client timeout", func(t *testing.T) {
		t.Parallel()
		srv, _ := hangingQStash(t)
		c := newTestClient(t, srv.URL, func(cfg *ClientConfig) { cfg.Timeout = 100 * time.Millisecond })
		_, err := c.EnqueueBatch(context.Background(), []EnqueueRequest{{Args: testArgs{}}})
		if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrPublish) {
			t.Fatalf("err = %v, want ErrPublish wrapping DeadlineExceeded", err)
		}
	})
	t.Run("http client timeout is the default", func(t *testing.T) {
		t.Parallel()
		srv, _ := hangingQStash(t)
		c := newTestClient(t, srv.URL, func(cfg *ClientConfig) { cfg.HTTPClient = &http.Client{Timeout: 100 * time.Millisecond} })
		if _, err := c.Enqueue(context.Background(), testArgs{}); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want DeadlineExceeded", err)
		}
	})
}

func TestEnqueueBatchWire(t *testing.T) {
	t.Parallel()
	rec := newRecorder(t, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `[{"messageId":"msg_a","url":"x"},{"messageId":"msg_b","deduplicated":true},{"messageId":"msg_c"}]`)
	})
	c := newTestClient(t, rec.srv.URL)
	ctx := WithTraceparent(context.Background(), testTP)
	reqs := []EnqueueRequest{
		{Args: testArgs{ID: "a"}, Options: []EnqueueOption{WithDelay(5 * time.Second), WithRetryDelay("1000")}},
		{Args: defaultedArgs{ID: "b"}},
		{Args: testArgs{ID: "c"}, Options: []EnqueueOption{WithQueue("emails"), WithDeduplicationID("c")}},
	}
	t.Run("EnqueueBatch", func(t *testing.T) {
		res, err := c.EnqueueBatch(ctx, reqs)
		checkBatchWire(t, rec, res, err)
	})
	t.Run("PublishMessages", func(t *testing.T) {
		msgs := make([]Message, len(reqs))
		for i, r := range reqs {
			var err error
			if msgs[i], err = PrepareMessage(ctx, r.Args, r.Options...); err != nil {
				t.Fatal(err)
			}
		}
		res, err := c.PublishMessages(context.Background(), msgs)
		checkBatchWire(t, rec, res, err)
	})
}

func checkBatchWire(t *testing.T, rec *recorder, res []EnqueueResult, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	want := []EnqueueResult{{MessageID: "msg_a"}, {MessageID: "msg_b", Deduplicated: true}, {MessageID: "msg_c"}}
	if !slices.Equal(res, want) {
		t.Errorf("results = %+v", res)
	}

	got := rec.next(t)
	if got.Method != http.MethodPost || got.RequestURI != "/v2/batch" || got.Header.Get("Authorization") != "Bearer "+testToken {
		t.Fatalf("request = %s %s auth %q", got.Method, got.RequestURI, got.Header.Get("Authorization"))
	}
	var items []struct {
		Destination string            `json:"destination"`
		Headers     map[string]string `json:"headers"`
		Body        string            `json:"body"`
		Queue       string            `json:"queue"`
	}
	if err := json.Unmarshal(got.Body, &items); err != nil || len(items) != 3 {
		t.Fatalf("batch body %s: %v", got.Body, err)
	}
	wantItems := []struct {
		dest, body, queue string
		headers           map[string]string
	}{
		{testWorker + "/jobs/test.job", `{"id":"a","count":0}`, "", map[string]string{
			"Content-Type": "application/json", "Upstash-Delay": "5s", "Upstash-Retry-Delay": "1000",
			"Upstash-Forward-Traceparent": testTP,
		}},
		{testWorker + "/jobs/test.defaulted", `{"id":"b"}`, "", map[string]string{
			"Content-Type": "application/json", "Upstash-Retries": "5", "Upstash-Delay": "60s",
			"Upstash-Deduplication-Id": "defaulted:b", "Upstash-Timeout": "30s",
			"Upstash-Flow-Control-Key": "creator-1", "Upstash-Flow-Control-Value": "parallelism=2",
			"Upstash-Forward-Traceparent": testTP,
		}},
		{testWorker + "/jobs/test.job", `{"id":"c","count":0}`, "emails", map[string]string{
			"Content-Type": "application/json", "Upstash-Deduplication-Id": "c", "Upstash-Forward-Traceparent": testTP,
		}},
	}
	for i, w := range wantItems {
		it := items[i]
		if it.Destination != w.dest || it.Body != w.body || it.Queue != w.queue || !maps.Equal(it.Headers, w.headers) {
			t.Errorf("item %d = %+v\nwant     %+v", i, it, w)
		}
	}
}

func TestEnqueueBatchPartialFailure(t *testing.T) {
	t.Parallel()
	rec := newRecorder(t, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `[{"messageId":"msg_a"},{"error":"invalid destination"}]`)
	})
	c := newTestClient(t, rec.srv.URL)
	res, err := c.EnqueueBatch(context.Background(), []EnqueueRequest{{Args: testArgs{}}, {Args: strictArgs{}}})
	rec.next(t)
	if !errors.Is(err, ErrPublish) || !strings.Contains(err.Error(), "request 1 (test.strict)") {
		t.Fatalf("err = %v", err)
	}
	if len(res) != 2 || res[0].MessageID != "msg_a" || res[1].MessageID != "" {
		t.Errorf("results = %+v", res)
	}
}

func TestEnqueueBatchEmpty(t *testing.T) {
	t.Parallel()
	rec := newRecorder(t, nil)
	c := newTestClient(t, rec.srv.URL)
	if res, err := c.EnqueueBatch(context.Background(), nil); res != nil || err != nil {
		t.Fatalf("got %v, %v", res, err)
	}
	rec.none(t)
}

// qstash-go lets the QSTASH_URL variable override its Url option; the
// configured URL must win. Not parallel: it sets an environment variable.
func TestConfiguredQStashURLWinsOverEnv(t *testing.T) {
	wrong := newRecorder(t, nil)
	right := newRecorder(t, nil)
	t.Setenv("QSTASH_URL", wrong.srv.URL+"/prefix")
	c := newTestClient(t, right.srv.URL)
	if _, err := c.Enqueue(context.Background(), testArgs{}); err != nil {
		t.Fatal(err)
	}
	if got := right.next(t); got.RequestURI != "/v2/publish/"+testWorker+"/jobs/test.job" {
		t.Errorf("request URI = %s", got.RequestURI)
	}
	wrong.none(t)
}

func TestClientConfigValidate(t *testing.T) {
	t.Parallel()
	ok := ClientConfig{Token: "t", WorkerPublicURL: "https://w.example.com/base"}
	tests := []struct {
		name  string
		given func(c *ClientConfig)
		ok    bool
	}{
		{"minimal", func(*ClientConfig) {}, true},
		{"qstash url", func(c *ClientConfig) { c.QStashURL = "http://127.0.0.1:8080" }, true},
		{"no token", func(c *ClientConfig) { c.Token = "" }, false},
		{"no worker url", func(c *ClientConfig) { c.WorkerPublicURL = "" }, false},
		{"relative worker url", func(c *ClientConfig) { c.WorkerPublicURL = "/jobs" }, false},
		{"worker url with query", func(c *ClientConfig) { c.WorkerPublicURL = "https://w/?a=1" }, false},
		{"worker url with fragment", func(c *ClientConfig) { c.WorkerPublicURL = "https://w/#x" }, false},
		{"worker url with credentials", func(c *ClientConfig) { c.WorkerPublicURL = "https://u:p@w/" }, false},
		{"qstash url with token query", func(c *ClientConfig) { c.QStashURL = "https://q/?qstash_token=x" }, false},
		{"qstash url scheme", func(c *ClientConfig) { c.QStashURL = "ftp://q" }, false},
		{"negative timeout", func(c *ClientConfig) { c.Timeout = -1 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := ok
			tt.given(&cfg)
			err := cfg.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate = %v, want ok=%v", err, tt.ok)
			}
			if _, nerr := NewClient(cfg); (nerr == nil) != tt.ok {
				t.Fatalf("NewClient = %v, want ok=%v", nerr, tt.ok)
			}
		})
	}
	c, _ := NewClient(ok)
	if d := c.Destination("tips.settle"); d != "https://w.example.com/base/jobs/tips.settle" {
		t.Errorf("Destination = %s", d)
	}
}
