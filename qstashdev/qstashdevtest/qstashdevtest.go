// Package qstashdevtest starts a qstashdev server for a test and stops it
// when the test ends.
package qstashdevtest

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/digis/jobworker/qstashdev"
)

// Server is a running qstashdev.Server and the base URL it answers on.
type Server struct {
	*qstashdev.Server
	// URL is the base URL, e.g. "http://127.0.0.1:41234"; give it to SDKs as
	// their QStash URL.
	URL string
}

// Start serves a new qstashdev.Server on a free 127.0.0.1 port and shuts
// it down in tb.Cleanup. Zero Config fields take their defaults (the dev
// token and keys); cfg.Addr is ignored.
func Start(tb testing.TB, cfg qstashdev.Config) *Server {
	tb.Helper()
	srv, err := qstashdev.New(cfg)
	if err != nil {
		tb.Fatalf("qstashdevtest: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		tb.Fatalf("qstashdevtest: listen: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			tb.Errorf("qstashdevtest: shutdown: %v", err)
		}
		if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
			tb.Errorf("qstashdevtest: serve: %v", err)
		}
	})
	return &Server{Server: srv, URL: "http://" + ln.Addr().String()}
}
