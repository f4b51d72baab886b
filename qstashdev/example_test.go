package qstashdev_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"time"

	"github.com/digis/jobworker/qstashdev"
	qstash "github.com/upstash/qstash-go"
)

// Publish with the official Go SDK to an embedded server and receive the
// signed delivery.
func Example() {
	got := make(chan string, 1)
	receiver := qstash.NewReceiver(qstashdev.DevCurrentSigningKey, qstashdev.DevNextSigningKey)
	var dest *httptest.Server
	dest = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		err := receiver.Verify(qstash.VerifyOptions{
			Signature: r.Header.Get("Upstash-Signature"), Body: string(body), Url: dest.URL + r.URL.RequestURI(),
		})
		got <- fmt.Sprintf("%s verified=%v", body, err == nil)
	}))
	defer dest.Close()

	srv, err := qstashdev.New(qstashdev.Config{TimeScale: 0.001})
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	api := httptest.NewServer(srv.Handler())
	defer api.Close()

	client := qstash.NewClientWith(qstash.Options{Url: api.URL, Token: qstashdev.DevToken})
	if _, err := client.Publish(qstash.PublishOptions{Url: dest.URL + "/jobs", Body: "hello"}); err != nil {
		panic(err)
	}
	fmt.Println(<-got)
	// Output: hello verified=true
}

// Wait until everything published has been delivered: here a message
// delayed 15 minutes, with delays scaled down 100,000 times.
func ExampleServer_WaitIdle() {
	var delivered atomic.Int32
	dest := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { delivered.Add(1) }))
	defer dest.Close()
	srv, err := qstashdev.New(qstashdev.Config{DelayScale: 0.00001})
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	api := httptest.NewServer(srv.Handler())
	defer api.Close()

	client := qstash.NewClientWith(qstash.Options{Url: api.URL, Token: qstashdev.DevToken})
	if _, err := client.Publish(qstash.PublishOptions{Url: dest.URL + "/later", Body: "x", Delay: "15m"}); err != nil {
		panic(err)
	}
	fmt.Printf("%+v\n", srv.Stats())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.WaitIdle(ctx); err != nil {
		panic(err)
	}
	fmt.Println("delivered:", delivered.Load(), "idle:", srv.Stats().Idle)
	// Output:
	// {Pending:1 Scheduled:1 Waiting:0 InFlight:0 Dead:0 Schedules:0 Idle:false}
	// delivered: 1 idle: true
}
