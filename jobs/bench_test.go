package jobs

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	qstash "github.com/upstash/qstash-go"
)

// Benchmarks compare this package's paths with a baseline doing the bare
// minimum in the same run; read them as ratios.

func fastQStash(b *testing.B) *httptest.Server {
	b.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, `{"messageId":"msg_1"}`)
	}))
	b.Cleanup(srv.Close)
	return srv
}

// BenchmarkEnqueue: Client.Enqueue (validation, defaults, per-call
// qstash-go client, context-bound transport) vs a bare qstash-go Publish
// with the same headers, both over loopback HTTP.
func BenchmarkEnqueue(b *testing.B) {
	srv := fastQStash(b)
	b.Run("baseline=qstash-go", func(b *testing.B) {
		q := qstash.NewClientWith(qstash.Options{Url: srv.URL, Token: testToken, Client: &http.Client{Transport: defaultTransport()}})
		b.ReportAllocs()
		for b.Loop() {
			body, _ := json.Marshal(testArgs{ID: "a", Count: 1})
			_, err := q.Publish(qstash.PublishOptions{
				Url: testWorker + "/jobs/test.job", Body: string(body), ContentType: "application/json",
				Retries: qstash.RetryCount(3), Delay: "10s", DeduplicationId: "d",
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("jobs.Client", func(b *testing.B) {
		c, err := NewClient(ClientConfig{QStashURL: srv.URL, Token: testToken, WorkerPublicURL: testWorker})
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			_, err := c.Enqueue(ctx, testArgs{ID: "a", Count: 1}, WithRetries(3), WithDelay(10*time.Second), WithDeduplicationID("d"))
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkDispatch: Registry.Dispatch (lookup, strict-ish decode,
// Validate, deadline, recover, metrics) vs json.Unmarshal + a direct call.
func BenchmarkDispatch(b *testing.B) {
	body := []byte(`{"id":"abc","count":3}`)
	handle := func(_ context.Context, j *Job[testArgs]) error {
		if j.Args.ID == "" {
			b.Fatal("empty")
		}
		return nil
	}
	b.Run("baseline=unmarshal+call", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var j Job[testArgs]
			if err := json.Unmarshal(body, &j.Args); err != nil {
				b.Fatal(err)
			}
			_ = handle(context.Background(), &j)
		}
	})
	b.Run("Registry.Dispatch", func(b *testing.B) {
		r, _ := NewRegistry(RegistryConfig{})
		_ = Register(r, handle)
		b.ReportAllocs()
		for b.Loop() {
			if err := r.Dispatch(context.Background(), "test.job", Delivery{MessageID: "m"}, body); err != nil {
				b.Fatal(err)
			}
		}
	})
}
