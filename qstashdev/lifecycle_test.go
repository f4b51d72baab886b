package qstashdev_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/digis/jobworker/qstashdev"
)

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	for _, cfg := range []qstashdev.Config{{TimeScale: -1}, {MaxBodyBytes: -1}, {Token: " padded "}} {
		if _, err := qstashdev.New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

// lifecycleEnv runs a server on an httptest listener so the test controls
// when it stops.
func lifecycleEnv(t *testing.T, release <-chan struct{}) (*qstashdev.Server, *httptest.Server, chan struct{}) {
	t.Helper()
	started := make(chan struct{}, 10)
	dst := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body) // lets the server notice the client hanging up
		started <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(dst.Close)
	srv, err := qstashdev.New(qstashdev.Config{})
	if err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(srv.Handler())
	t.Cleanup(api.Close)
	req, _ := http.NewRequest("POST", api.URL+"/v2/publish/"+dst.URL+"/slow", strings.NewReader("x"))
	req.Header.Set("Authorization", "Bearer "+qstashdev.DevToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("publish: %v %v", resp, err)
	}
	resp.Body.Close()
	<-started
	return srv, api, nil
}

func TestShutdownFinishesInFlightDelivery(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv, api, _ := lifecycleEnv(t, release)
	delivered := make(chan struct{}, 1)
	qstashdev.OnEvent(srv, func(state, _ string) {
		if state == "DELIVERED" {
			delivered <- struct{}{}
		}
	})
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- srv.Shutdown(ctx)
	}()
	// Shutdown may only return after the delivery's outcome is recorded,
	// and the destination answers only once released.
	close(release)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the delivery finished")
	}
	select {
	case <-delivered:
	default:
		t.Fatal("Shutdown returned before the in-flight delivery was recorded")
	}
	// A stopped server refuses new messages.
	req, _ := http.NewRequest("POST", api.URL+"/v2/publish/http://127.0.0.1:1/x", nil)
	req.Header.Set("Authorization", "Bearer "+qstashdev.DevToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("publish after shutdown: %d", resp.StatusCode)
	}
}

func TestCloseCancelsInFlightDelivery(t *testing.T) {
	t.Parallel()
	srv, _, _ := lifecycleEnv(t, make(chan struct{}))
	done := make(chan error, 1)
	go func() { done <- srv.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked on an in-flight delivery")
	}
}
