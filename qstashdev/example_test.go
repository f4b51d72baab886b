package qstashdev_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

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
