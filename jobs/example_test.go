package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/qstashdev"
)

// NotifyFollowers is a job: a payload type with a stable name.
type NotifyFollowers struct {
	StreamID string `json:"stream_id"`
}

func (NotifyFollowers) Kind() string { return "streams.notify-followers" }

// EnqueueDefaults makes every enqueue of this job retry 5 times and
// deduplicate per stream; Enqueue options override these.
func (a NotifyFollowers) EnqueueDefaults() []jobs.EnqueueOption {
	return []jobs.EnqueueOption{
		jobs.WithRetries(5),
		jobs.WithDeduplicationID("notify-followers:" + a.StreamID),
	}
}

// Validate runs before publishing and after decoding a delivery.
func (a NotifyFollowers) Validate() error {
	if a.StreamID == "" {
		return errors.New("stream_id is required")
	}
	return nil
}

// The worker side: register a typed handler and dispatch a delivery by
// name (package worker does this for verified QStash requests and answers
// QStash from the result).
func Example() {
	reg, err := jobs.NewRegistry(jobs.RegistryConfig{})
	if err != nil {
		panic(err)
	}
	err = jobs.Register(reg, func(ctx context.Context, j *jobs.Job[NotifyFollowers]) error {
		fmt.Printf("notifying followers of %s (attempt %d)\n", j.Args.StreamID, j.Attempt())
		return nil
	}, jobs.WithHandlerTimeout(30*time.Second))
	if err != nil {
		panic(err)
	}

	// In the worker this comes from a verified QStash request.
	h := http.Header{}
	h.Set("Upstash-Message-Id", "msg_1")
	h.Set("Upstash-Retried", "0")
	for _, body := range []string{`{"stream_id":"s_1"}`, `{"stream_id":""}`} {
		err := reg.Dispatch(context.Background(), "streams.notify-followers", jobs.DeliveryFromHeader(h), []byte(body))
		fmt.Printf("err=%v permanent=%t\n", err != nil, jobs.IsPermanent(err))
	}
	// Output:
	// notifying followers of s_1 (attempt 1)
	// err=false permanent=false
	// err=true permanent=true
}

// Handlers steer QStash's retries with the errors they return.
func ExampleRetryAfter() {
	for _, err := range []error{
		errors.New("database unavailable"),                                   // retried with QStash's backoff
		jobs.RetryAfter(90*time.Second, errors.New("rate limited upstream")), // retried no sooner than 90 s
		jobs.Permanent(errors.New("stream was deleted")),                     // dead-lettered at once
	} {
		after, ok := jobs.RetryAfterOf(err)
		fmt.Println(jobs.IsPermanent(err), after, ok)
	}
	// Output:
	// false 0s false
	// false 1m30s true
	// true 0s false
}

// The API side: publish a job through QStash. Here QStash is a local
// qstashdev server and the worker a test server that prints what it gets.
func ExampleClient_Enqueue() {
	qs, _ := qstashdev.New(qstashdev.Config{})
	defer qs.Close()
	qsHTTP := httptest.NewServer(qs.Handler())
	defer qsHTTP.Close()

	delivered := make(chan string, 1)
	worker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		delivered <- r.URL.Path + " " + string(body) + " traceparent=" + r.Header.Get("Traceparent")
	}))
	defer worker.Close()

	client, err := jobs.NewClient(jobs.ClientConfig{
		QStashURL:       qsHTTP.URL,
		Token:           qstashdev.DevToken,
		WorkerPublicURL: worker.URL,
	})
	if err != nil {
		panic(err)
	}
	ctx := jobs.WithTraceparent(context.Background(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")

	first, err := client.Enqueue(ctx, NotifyFollowers{StreamID: "s_1"}, jobs.WithTimeout(time.Minute))
	if err != nil {
		panic(err)
	}
	// Same deduplication id (from EnqueueDefaults): QStash drops it.
	again, err := client.Enqueue(ctx, NotifyFollowers{StreamID: "s_1"})
	if err != nil {
		panic(err)
	}
	fmt.Println(strings.HasPrefix(first.MessageID, "msg_"), again.Deduplicated, again.MessageID == first.MessageID)
	fmt.Println(<-delivered)

	_, err = client.Enqueue(ctx, NotifyFollowers{})
	fmt.Println(errors.Is(err, jobs.ErrInvalidOption))
	// Output:
	// true true true
	// /jobs/streams.notify-followers {"stream_id":"s_1"} traceparent=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
	// true
}

func ExampleClient_EnqueueBatch() {
	qs, _ := qstashdev.New(qstashdev.Config{})
	defer qs.Close()
	qsHTTP := httptest.NewServer(qs.Handler())
	defer qsHTTP.Close()
	worker := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer worker.Close()
	client, _ := jobs.NewClient(jobs.ClientConfig{QStashURL: qsHTTP.URL, Token: qstashdev.DevToken, WorkerPublicURL: worker.URL})

	results, err := client.EnqueueBatch(context.Background(), []jobs.EnqueueRequest{
		{Args: NotifyFollowers{StreamID: "s_1"}},
		{Args: NotifyFollowers{StreamID: "s_2"}, Options: []jobs.EnqueueOption{
			jobs.WithDelay(10 * time.Second),
			jobs.WithFlowControl(jobs.FlowControl{Key: "creator-7", Parallelism: 2, Rate: 10, Period: time.Minute}),
		}},
	})
	fmt.Println(len(results), err)
	// Output: 2 <nil>
}
