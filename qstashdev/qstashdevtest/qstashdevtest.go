// Package qstashdevtest starts a qstashdev server for a test and stops it
// when the test ends, and waits for a server (in the test's process or a
// qstash-dev process) to have nothing left to deliver:
//
//	srv := qstashdevtest.Start(t, qstashdev.Config{TimeScale: 0.001, DelayScale: 0.001})
//	// ... publish through an SDK at srv.URL ...
//	st := srv.AwaitIdle(t, 10*time.Second) // every message delivered or dead
//	if st.Dead != 0 { t.Fatalf("%d dead letters", st.Dead) }
package qstashdevtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
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

// AwaitIdle waits until s has no pending message (every one delivered,
// dead-lettered or cancelled) and returns its Stats; it fails tb when that
// takes longer than within.
func (s *Server) AwaitIdle(tb testing.TB, within time.Duration) qstashdev.Stats {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if err := s.WaitIdle(ctx); err != nil {
		tb.Fatalf("qstashdevtest: not idle within %v: %+v", within, s.Stats())
	}
	return s.Stats()
}

// AwaitIdleURL is AwaitIdle for a server in another process (cmd/qstash-dev
// at baseURL, with the given bearer token), through its development-only
// GET /qstashdev/stats?waitIdle= endpoint.
func AwaitIdleURL(tb testing.TB, baseURL, token string, within time.Duration) qstashdev.Stats {
	tb.Helper()
	st, idle, err := fetchStats(baseURL, token, within)
	if err != nil {
		tb.Fatalf("qstashdevtest: %v", err)
	}
	if !idle {
		tb.Fatalf("qstashdevtest: %s not idle within %v: %+v", baseURL, within, st)
	}
	return st
}

func fetchStats(baseURL, token string, within time.Duration) (qstashdev.Stats, bool, error) {
	var st qstashdev.Stats
	ctx, cancel := context.WithTimeout(context.Background(), within+5*time.Second)
	defer cancel()
	u := strings.TrimSuffix(baseURL, "/") + "/qstashdev/stats?waitIdle=" + fmt.Sprintf("%dms", max(within.Milliseconds(), 1))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return st, false, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, false, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return st, false, err
	}
	if res.StatusCode != http.StatusOK && res.StatusCode != http.StatusRequestTimeout {
		return st, false, fmt.Errorf("GET /qstashdev/stats: %s: %s", res.Status, b)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, false, fmt.Errorf("GET /qstashdev/stats: %w", err)
	}
	return st, res.StatusCode == http.StatusOK, nil
}
