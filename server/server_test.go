package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/digis/jobworker/internal/problem"
	"github.com/digis/jobworker/internal/testwait"
	"github.com/digis/jobworker/server"
)

// start serves s on a loopback port until the test ends.
func start(t *testing.T, s *server.Server) (base string, stop func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		return <-done
	}
	t.Cleanup(func() { _ = stop() })
	return "http://" + ln.Addr().String(), stop
}

func newServer(t *testing.T, cfg server.Config) *server.Server {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "test"
	}
	s, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func get(t *testing.T, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

func TestHealthReadyMetrics(t *testing.T) {
	t.Parallel()
	var ready error
	s := newServer(t, server.Config{Ready: func(context.Context) error { return ready }})
	base, _ := start(t, s)

	if res, _ := get(t, base+"/healthz"); res.StatusCode != 200 {
		t.Fatalf("healthz %d", res.StatusCode)
	}
	if res, _ := get(t, base+"/readyz"); res.StatusCode != 200 {
		t.Fatalf("readyz %d", res.StatusCode)
	}
	ready = errors.New("redis down")
	if res, body := get(t, base+"/readyz"); res.StatusCode != 503 || strings.Contains(body, "redis down") {
		t.Fatalf("readyz with failing check: %d %s", res.StatusCode, body)
	}
	// Without a token /metrics is not on the serving port.
	if res, _ := get(t, base+"/metrics"); res.StatusCode != 404 {
		t.Fatalf("metrics on the serving port without a token: %d", res.StatusCode)
	}
	page := httptest.NewServer(s.MetricsHandler())
	defer page.Close()
	res, body := get(t, page.URL+"/metrics")
	if res.StatusCode != 200 || !strings.Contains(body, `jobworker_http_requests_total{code="503",method="GET",route="/readyz",server="test"} 1`) ||
		!strings.Contains(body, "go_goroutines") {
		t.Fatalf("metrics: %d\n%s", res.StatusCode, body)
	}
}

func TestMetricsToken(t *testing.T) {
	t.Parallel()
	const token = "metrics-token-0123456789"
	s := newServer(t, server.Config{MetricsToken: token})
	base, _ := start(t, s)
	for _, tt := range []struct {
		name, auth string
		want       int
	}{
		{"no token", "", 401},
		{"wrong token", "Bearer metrics-token-9876543210", 401},
		{"token as basic", "Basic " + token, 401},
		{"the token", "Bearer " + token, 200},
	} {
		res, body := get(t, base+"/metrics", "Authorization", tt.auth)
		if res.StatusCode != tt.want || (tt.want == 200) != strings.Contains(body, "go_goroutines") {
			t.Fatalf("%s: %d %.80s", tt.name, res.StatusCode, body)
		}
	}
	for _, bad := range []server.Config{
		{Name: "x", MetricsToken: "short"},
		{Name: "x", MetricsToken: " metrics-token-0123456789"},
		{Name: "x", MetricsAddr: "9300"},
		{Name: "x", Addr: ":3000", MetricsAddr: "127.0.0.1:3000"},
	} {
		if _, err := server.New(bad); err == nil {
			t.Fatalf("accepted %+v", bad)
		}
	}
}

// TestRunServesMetricsOnItsOwnListener runs the server as Run does, with
// MetricsAddr: /metrics answers there and nowhere on the serving port.
func TestRunServesMetricsOnItsOwnListener(t *testing.T) {
	t.Parallel()
	addr, metricsAddr := freeAddr(t), freeAddr(t)
	s := newServer(t, server.Config{Addr: addr, MetricsAddr: metricsAddr})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	testwait.For(t, 5*time.Second, "the server listening", func() bool {
		res, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			res.Body.Close()
		}
		return err == nil
	})
	if res, body := get(t, "http://"+metricsAddr+"/metrics"); res.StatusCode != 200 || !strings.Contains(body, `route="/healthz"`) {
		t.Fatalf("metrics listener: %d %.200s", res.StatusCode, body)
	}
	if res, _ := get(t, "http://"+metricsAddr+"/healthz"); res.StatusCode != 404 {
		t.Fatalf("the metrics listener serves more than /metrics: %d", res.StatusCode)
	}
	if res, _ := get(t, "http://"+addr+"/metrics"); res.StatusCode != 404 {
		t.Fatalf("metrics on the serving port: %d", res.StatusCode)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestErrorsBecomeProblems(t *testing.T) {
	t.Parallel()
	s := newServer(t, server.Config{BodyLimit: 16, RequestTimeout: 50 * time.Millisecond})
	s.Echo.GET("/panic", func(echo.Context) error { panic("secret detail") })
	s.Echo.GET("/fail", func(echo.Context) error { return errors.New("db password wrong") })
	s.Echo.GET("/bad", func(echo.Context) error { return echo.NewHTTPError(400, "amount must be positive") })
	s.Echo.POST("/echo", func(c echo.Context) error {
		b, err := io.ReadAll(c.Request().Body)
		if err != nil {
			return err
		}
		return c.Blob(200, "text/plain", b)
	})
	s.Echo.GET("/slow", func(c echo.Context) error {
		<-c.Request().Context().Done()
		return c.Request().Context().Err()
	})
	base, _ := start(t, s)

	tests := []struct {
		name, method, path, body string
		wantStatus               int
		wantDetail               string
	}{
		{"panic", "GET", "/panic", "", 500, ""},
		{"plain error", "GET", "/fail", "", 500, ""},
		{"http error", "GET", "/bad", "", 400, "amount must be positive"},
		{"unknown route", "GET", "/nope", "", 404, "Not Found"},
		{"body too large", "POST", "/echo", strings.Repeat("x", 17), 413, "Request Entity Too Large"},
		{"request timeout", "GET", "/slow", "", 503, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, base+tt.path, strings.NewReader(tt.body))
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var p problem.Details
			raw, _ := io.ReadAll(res.Body)
			if res.StatusCode != tt.wantStatus || res.Header.Get("Content-Type") != problem.ContentType {
				t.Fatalf("got %d %q %s", res.StatusCode, res.Header.Get("Content-Type"), raw)
			}
			if err := json.Unmarshal(raw, &p); err != nil || p.Status != tt.wantStatus {
				t.Fatalf("body %s: %v", raw, err)
			}
			if tt.wantDetail != "" && p.Detail != tt.wantDetail {
				t.Fatalf("detail %q, want %q", p.Detail, tt.wantDetail)
			}
			if strings.Contains(string(raw), "secret") || strings.Contains(string(raw), "password") {
				t.Fatalf("internal detail leaked: %s", raw)
			}
		})
	}
	// The process survived the panic.
	if res, _ := get(t, base+"/healthz"); res.StatusCode != 200 {
		t.Fatal("server down after panic")
	}
}

func TestRequestID(t *testing.T) {
	t.Parallel()
	base, _ := start(t, newServer(t, server.Config{}))
	res, _ := get(t, base+"/healthz", "X-Request-Id", "abc-123")
	if got := res.Header.Get("X-Request-Id"); got != "abc-123" {
		t.Fatalf("plain id not kept: %q", got)
	}
	res, _ = get(t, base+"/healthz", "X-Request-Id", "evil\" level=ERROR msg=forged")
	if got := res.Header.Get("X-Request-Id"); got == "" || strings.Contains(got, "forged") {
		t.Fatalf("unsafe id kept: %q", got)
	}
	res, _ = get(t, base+"/healthz")
	if len(res.Header.Get("X-Request-Id")) != 24 {
		t.Fatalf("no id generated: %q", res.Header.Get("X-Request-Id"))
	}
}

func TestDraining(t *testing.T) {
	t.Parallel()
	s := newServer(t, server.Config{})
	s.Echo.POST("/jobs/:name", func(c echo.Context) error { return c.NoContent(200) }, s.RejectWhileDraining())
	base, _ := start(t, s)
	res, err := http.Post(base+"/jobs/x", "application/json", nil)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("before drain: %v %v", res, err)
	}
	s.StartDraining()
	res, err = http.Post(base+"/jobs/x", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 503 || res.Header.Get("Retry-After") == "" {
		t.Fatalf("while draining: %d Retry-After=%q", res.StatusCode, res.Header.Get("Retry-After"))
	}
	if res, _ := get(t, base+"/readyz"); res.StatusCode != 503 {
		t.Fatalf("readyz while draining: %d", res.StatusCode)
	}
	if res, _ := get(t, base+"/healthz"); res.StatusCode != 200 {
		t.Fatalf("healthz while draining: %d", res.StatusCode)
	}
}

func TestShutdownFinishesInFlight(t *testing.T) {
	t.Parallel()
	s := newServer(t, server.Config{ShutdownTimeout: 5 * time.Second})
	entered, release := make(chan struct{}), make(chan struct{})
	s.Echo.GET("/work", func(c echo.Context) error {
		close(entered)
		<-release
		return c.String(200, "done")
	})
	base, stop := start(t, s)
	type result struct {
		status int
		body   string
		err    error
	}
	got := make(chan result, 1)
	go func() {
		res, err := http.Get(base + "/work")
		if err != nil {
			got <- result{err: err}
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		got <- result{status: res.StatusCode, body: string(b)}
	}()
	<-entered
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	// Shutdown is waiting for the request; new connections are refused.
	testwait.For(t, 5*time.Second, "the listener closed during shutdown", func() bool {
		conn, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), 100*time.Millisecond)
		if err == nil {
			conn.Close()
		}
		return err != nil
	})
	select {
	case err := <-stopped:
		t.Fatalf("shutdown returned (%v) before the in-flight request finished", err)
	default:
	}
	close(release)
	r := <-got
	if r.err != nil || r.status != 200 || r.body != "done" {
		t.Fatalf("in-flight request: %+v", r)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

func TestShutdownTimeout(t *testing.T) {
	t.Parallel()
	s := newServer(t, server.Config{ShutdownTimeout: 100 * time.Millisecond})
	entered, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	s.Echo.GET("/stuck", func(c echo.Context) error {
		close(entered)
		<-release
		return nil
	})
	base, stop := start(t, s)
	go func() { _, _ = http.Get(base + "/stuck") }()
	<-entered
	if err := stop(); err == nil || !strings.Contains(err.Error(), "did not finish") {
		t.Fatalf("stop with a stuck request: %v", err)
	}
}

// TestSIGTERMLetsInFlightFinish runs a real process (this test binary in
// helper mode), sends it SIGTERM while a request is running and checks that
// the request completes and the process exits cleanly.
func TestSIGTERMLetsInFlightFinish(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "SERVER_HELPER_PROCESS=1")
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	lines := bufio.NewScanner(stdout)
	next := func() string {
		if !lines.Scan() {
			t.Fatalf("helper ended early: %v", lines.Err())
		}
		return lines.Text()
	}
	addr := strings.TrimPrefix(next(), "addr=")
	got := make(chan string, 1)
	go func() {
		res, err := http.Get("http://" + addr + "/work")
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		got <- fmt.Sprintf("%d %s", res.StatusCode, b)
	}()
	if l := next(); l != "entered" {
		t.Fatalf("helper said %q", l)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if r := <-got; r != "200 finished" {
		t.Fatalf("in-flight request got %q", r)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("process exit: %v", err)
	}
}

func TestHelperProcess(t *testing.T) {
	if os.Getenv("SERVER_HELPER_PROCESS") != "1" {
		t.Skip("helper for TestSIGTERMLetsInFlightFinish")
	}
	s, err := server.New(server.Config{Name: "helper", ShutdownTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := server.SignalContext()
	s.Echo.GET("/work", func(c echo.Context) error {
		fmt.Println("entered")
		<-ctx.Done()                       // SIGTERM arrives while this request runs
		time.Sleep(100 * time.Millisecond) // the request's remaining work
		return c.String(200, "finished")
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("addr=" + ln.Addr().String())
	if err := s.Serve(ctx, ln); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}
