// Package outage puts a service that tests can take down in front of an
// http.Handler: Front serves it on a fixed loopback port, Down closes the
// listener and every connection (callers get "connection refused", as a
// service outage looks to its clients) and Up serves again on the same port,
// while the handler keeps its state. Tests use it for QStash outages: the
// qstashdev server behind it keeps its messages and goes on delivering.
package outage

import (
	"errors"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// Front is a handler served on a loopback port that can go down and come
// back.
type Front struct {
	// URL is the base URL, http://127.0.0.1:port; it stays the same across
	// Down and Up.
	URL string

	tb   testing.TB
	h    http.Handler
	addr string

	mu   sync.Mutex
	wrap func(w http.ResponseWriter, r *http.Request, next http.Handler)
	hs   *http.Server
	done chan error
}

// Start serves h on a free loopback port until the test ends.
func Start(tb testing.TB, h http.Handler) *Front {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("outage: listen: %v", err)
	}
	f := &Front{tb: tb, h: h, addr: ln.Addr().String(), URL: "http://" + ln.Addr().String()}
	f.serve(ln)
	tb.Cleanup(f.Down)
	return f
}

func (f *Front) serve(ln net.Listener) {
	hs := &http.Server{Handler: http.HandlerFunc(f.handle), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- hs.Serve(ln) }()
	f.mu.Lock()
	f.hs, f.done = hs, done
	f.mu.Unlock()
}

func (f *Front) handle(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	wrap := f.wrap
	f.mu.Unlock()
	if wrap != nil {
		wrap(w, r, f.h)
		return
	}
	f.h.ServeHTTP(w, r)
}

// Wrap makes every request go through w, which decides whether and how to
// call next (the handler): to count, hold or refuse requests. nil removes
// it.
func (f *Front) Wrap(w func(w http.ResponseWriter, r *http.Request, next http.Handler)) {
	f.mu.Lock()
	f.wrap = w
	f.mu.Unlock()
}

// IsUp reports whether the front is serving.
func (f *Front) IsUp() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hs != nil
}

// Down closes the listener and every open connection, requests in flight
// included. A front that is down stays down.
func (f *Front) Down() {
	f.mu.Lock()
	hs, done := f.hs, f.done
	f.hs = nil
	f.mu.Unlock()
	if hs == nil {
		return
	}
	_ = hs.Close()
	if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
		f.tb.Errorf("outage: serve: %v", err)
	}
}

// Up serves again on the same port; a front that is up stays up. Call it
// from the test's goroutine: it fails the test if the port cannot be had.
func (f *Front) Up() {
	f.tb.Helper()
	if f.IsUp() {
		return
	}
	var ln net.Listener
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; {
		if ln, err = net.Listen("tcp", f.addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // the kernel is still releasing the port
	}
	if err != nil {
		f.tb.Fatalf("outage: listen again on %s: %v", f.addr, err)
	}
	f.serve(ln)
}
