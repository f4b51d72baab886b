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
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/digis/jobworker/internal/testwait"
	"github.com/digis/jobworker/server"
)

// rawPost opens a connection and sends a POST's headers (and no body).
func rawPost(t *testing.T, base, path string, hdr ...string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	var b strings.Builder
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: test\r\n", path)
	for i := 0; i+1 < len(hdr); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", hdr[i], hdr[i+1])
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	return conn
}

// readAnswer reads one response from conn; the deadline only keeps a broken
// server from hanging the test.
func readAnswer(t *testing.T, conn net.Conn) *http.Response {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res
}

// TestAnswerWithoutWaitingForTheBody: a route that refuses a request
// without reading its body (no token, or a declared length above the cap)
// answers at once, even when the client never sends the body it declared;
// and the connection closes after the answer.
func TestAnswerWithoutWaitingForTheBody(t *testing.T) {
	t.Parallel()
	s := newServer(t, server.Config{BodyLimit: 1 << 20})
	s.Echo.POST("/private", func(c echo.Context) error { return echo.ErrUnauthorized })
	s.Echo.POST("/small", func(c echo.Context) error { return c.NoContent(200) }, server.LimitBody(1000))
	base, _ := start(t, s)
	for _, tt := range []struct {
		path, length string
		want         int
	}{
		{"/private", "100000", 401},
		{"/small", "100000", 413},  // above the route's cap
		{"/small", "2000000", 413}, // above the server's cap
	} {
		conn := rawPost(t, base, tt.path, "Content-Length", tt.length, "Content-Type", "application/json")
		res := readAnswer(t, conn)
		if res.StatusCode != tt.want || !res.Close {
			t.Fatalf("%s with Content-Length %s: %d, Connection: close %v", tt.path, tt.length, res.StatusCode, res.Close)
		}
		// The server closes its end: nothing more to read.
		_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		if n, err := conn.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s: connection still open after the answer: %d %v", tt.path, n, err)
		}
	}
}

// TestEarlyAnswerReachesAClientStillSending: a client that sends its whole
// body while the server refuses the request unread (a 401, a 413) gets the
// answer, not a connection reset: the server reads what is already coming
// for a moment after answering, or half-closes and waits, before it closes.
func TestEarlyAnswerReachesAClientStillSending(t *testing.T) {
	t.Parallel()
	s := newServer(t, server.Config{BodyLimit: 4 << 20})
	s.Echo.POST("/private", func(c echo.Context) error { return echo.ErrUnauthorized })
	s.Echo.POST("/small", func(c echo.Context) error { return c.NoContent(200) }, server.LimitBody(1000))
	base, _ := start(t, s)
	for _, tt := range []struct {
		path string
		size int
		want int
	}{
		{"/private", 64 << 10, 401},
		{"/small", 64 << 10, 413},
		{"/small", 200 << 10, 413}, // more than loopback buffers while unread
		{"/small", 1 << 20, 413},   // more than net/http drains
		{"/small", 8 << 20, 413},   // above the server's cap
	} {
		body := strings.Repeat("x", tt.size)
		for i := range 20 {
			res, err := http.Post(base+tt.path, "application/json", strings.NewReader(body))
			if err != nil {
				t.Fatalf("%s with %d bytes, try %d: %v", tt.path, tt.size, i, err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != tt.want {
				t.Fatalf("%s with %d bytes: %d, want %d", tt.path, tt.size, res.StatusCode, tt.want)
			}
		}
	}
}

// TestSlowBodyIsCutOffAtTheDeadline drips a body one byte at a time; the
// server stops waiting for it at RequestTimeout instead of holding the
// connection until the client is done.
func TestSlowBodyIsCutOffAtTheDeadline(t *testing.T) {
	t.Parallel()
	s := newServer(t, server.Config{RequestTimeout: 300 * time.Millisecond})
	readErr := make(chan error, 1)
	s.Echo.POST("/echo", func(c echo.Context) error {
		_, err := io.ReadAll(c.Request().Body)
		readErr <- err
		return err
	})
	base, _ := start(t, s)
	const length = 200
	conn := rawPost(t, base, "/echo", "Content-Length", fmt.Sprint(length))
	var sent atomic.Int64
	go func() {
		for range length {
			if _, err := conn.Write([]byte("x")); err != nil {
				return
			}
			sent.Add(1)
			time.Sleep(50 * time.Millisecond) // the attack: a byte every 50 ms, 10 s in all
		}
	}()
	res := readAnswer(t, conn)
	if res.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("status %d, want 408", res.StatusCode)
	}
	if n := sent.Load(); n >= length {
		t.Fatalf("the server waited for the whole body (%d bytes)", n)
	}
	if err := <-readErr; err == nil {
		t.Fatal("the handler read the whole slow body")
	}
}

// TestSlowBodyDeadlineEndsWithTheBody: once the body is in, a handler may
// run past the body deadline (its context decides), and the connection is
// kept for the next request.
func TestSlowBodyDeadlineEndsWithTheBody(t *testing.T) {
	t.Parallel()
	s := newServer(t, server.Config{RequestTimeout: 200 * time.Millisecond})
	s.Echo.POST("/work", func(c echo.Context) error {
		b, err := io.ReadAll(c.Request().Body)
		if err != nil {
			return err
		}
		// Past the body deadline, within a detached context: the worker
		// runs its jobs this way.
		<-time.After(400 * time.Millisecond)
		return c.String(200, string(b))
	})
	base, _ := start(t, s)
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	for i := range 2 {
		res, err := client.Post(base+"/work", "text/plain", strings.NewReader("hello"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || string(b) != "hello" || res.Close {
			t.Fatalf("request %d: %d %q close=%v", i, res.StatusCode, b, res.Close)
		}
	}
}

// TestOversizedChunkedBodyIs413: a body without a declared length that
// turns out longer than the cap is 413, whether the handler returns the
// read error as is or decodes JSON from it.
func TestOversizedChunkedBodyIs413(t *testing.T) {
	t.Parallel()
	s := newServer(t, server.Config{BodyLimit: 64})
	s.Echo.POST("/raw", func(c echo.Context) error {
		_, err := io.ReadAll(c.Request().Body)
		return err
	})
	s.Echo.POST("/json", func(c echo.Context) error {
		var v map[string]any
		return json.NewDecoder(c.Request().Body).Decode(&v)
	}, server.LimitBody(16))
	s.Echo.POST("/bind", func(c echo.Context) error {
		var v map[string]any
		return c.Bind(&v)
	}, server.LimitBody(16))
	base, _ := start(t, s)
	for _, tt := range []struct{ path, body string }{
		{"/raw", strings.Repeat("x", 65)},
		{"/json", `{"a":"` + strings.Repeat("x", 20) + `"}`},
		{"/bind", `{"a":"` + strings.Repeat("x", 20) + `"}`},
	} {
		// An io.Reader of unknown length goes out chunked.
		req, _ := http.NewRequest(http.MethodPost, base+tt.path, io.MultiReader(strings.NewReader(tt.body)))
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if req.ContentLength != 0 || res.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("%s: %d (request length %d), want 413", tt.path, res.StatusCode, req.ContentLength)
		}
	}
}

// seriesCount is the number of samples on a /metrics page.
func seriesCount(t *testing.T, url string) (int, int) {
	t.Helper()
	_, body := get(t, url)
	n := 0
	for line := range strings.SplitSeq(body, "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			n++
		}
	}
	return n, len(body)
}

// TestInventedMethodsAndPathsAddNoSeries: 60 requests with 1 KiB invented
// methods and random paths leave the number of series as it was.
func TestInventedMethodsAndPathsAddNoSeries(t *testing.T) {
	t.Parallel()
	s := newServer(t, server.Config{})
	s.Echo.GET("/items/:id", func(c echo.Context) error { return c.NoContent(200) })
	base, _ := start(t, s)
	page := httptest.NewServer(s.MetricsHandler())
	defer page.Close()
	send := func(method, path string) {
		req, err := http.NewRequest(method, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
	}
	// One of each kind first: the "other" and "unmatched" series exist.
	send("GET", "/items/1")
	send("GET", "/nowhere")
	send(strings.Repeat("Q", 1024), "/items/1")
	send(strings.Repeat("Q", 1024), "/nowhere")
	before, size := seriesCount(t, page.URL+"/metrics")
	for i := range 60 {
		method := fmt.Sprintf("%s%04d", strings.Repeat("M", 1020), i)
		send(method, "/items/"+fmt.Sprint(i))
		send(method, fmt.Sprintf("/x%d/%s", i, strings.Repeat("p", 200)))
	}
	after, sizeAfter := seriesCount(t, page.URL+"/metrics")
	if after != before {
		t.Fatalf("series %d → %d (page %d → %d bytes)", before, after, size, sizeAfter)
	}
	_, body := get(t, page.URL+"/metrics")
	if !strings.Contains(body, `method="other",route="/items/:id"`) || !strings.Contains(body, `route="unmatched"`) {
		t.Fatalf("labels:\n%s", body)
	}
}

// TestConcurrentProbesShareOneCheck: 200 concurrent probes all answer 200
// and never run the readiness check more than once at a time.
func TestConcurrentProbesShareOneCheck(t *testing.T) {
	t.Parallel()
	var running, most, calls atomic.Int64
	s := newServer(t, server.Config{Ready: func(ctx context.Context) error {
		calls.Add(1)
		n := running.Add(1)
		defer running.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		// A round trip's worth of work, so that overlapping calls overlap.
		<-time.After(5 * time.Millisecond)
		return ctx.Err()
	}})
	base, _ := start(t, s)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 200}}
	var wg sync.WaitGroup
	codes := make(chan int, 200)
	for range 200 {
		wg.Go(func() {
			res, err := client.Get(base + "/readyz")
			if err != nil {
				codes <- 0
				return
			}
			res.Body.Close()
			codes <- res.StatusCode
		})
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Fatalf("a probe got %d", c)
		}
	}
	if most.Load() != 1 {
		t.Fatalf("%d checks ran at once (%d in all)", most.Load(), calls.Load())
	}
	testwait.For(t, time.Second, "no check left running", func() bool { return running.Load() == 0 })
}
