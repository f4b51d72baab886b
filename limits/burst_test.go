package limits

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/redistest"
)

// Helper modes of the test binary (see TestMain).
const (
	helperServe = "serve" // an HTTP server behind the limits middleware
	helperBurn  = "burn"  // a busy loop on one core
)

// The burst servers' quotas: the strict limit of 5, and a moderate
// bucket of 20.
const (
	burstStrictLimit   = 5
	burstModerateLimit = 20
	burstSize          = 600
	burstProcesses     = 3
)

// TestBurstsAcrossProcessesNeverOverAdmit sends bursts of 600 concurrent
// requests from one identity to three OS processes serving HTTP through the
// limits middleware, on one redis-server, while two more processes keep
// both cores busy. Each burst uses a fresh identity, so it falls in one
// window (a minute long): its admissions (200s) are checked against the
// limit.
//
//   - Redis up: never above the limit, with and without leases. The strict
//     bucket runs the real defaults (50 ms Timeout, fail closed): a round
//     trip the busy machine delays past the deadline is refused, never
//     admitted. The moderate bucket falls back to the local limiter on a
//     missed deadline (an outage by definition, up to its limit per
//     instance), so its servers get a 1 s Timeout: what is checked there is
//     that queueing, batching and leases never over-admit.
//   - Redis slow (paused and resumed in 30 ms pulses, shorter than the
//     deadline): never above the limit.
//   - Redis killed: the strict bucket answers 503 with Retry-After; the
//     moderate one admits at most its limit per process (the outage
//     limiter), so at most limit × 3.
func TestBurstsAcrossProcessesNeverOverAdmit(t *testing.T) {
	// Not parallel: it loads both cores, and other tests' deadlines should
	// not pay for it.
	if testing.Short() {
		t.Skip("loads the machine for several seconds")
	}
	burn(t, 2)
	for _, tc := range []struct {
		name   string
		leases string
	}{
		{"no leases", ""},
		{"leases", "tips:quick=2,default=4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t)
			strict := startServers(t, srv, tc.leases, "50ms")
			moderate := startServers(t, srv, tc.leases, "1s")
			round := 0
			burstAll := func(phase string, check func(bucket string, limit int, b burstResult)) {
				for _, s := range []struct {
					servers []string
					path    string
					bucket  string
					limit   int
				}{
					{strict, "/tips/quick", "tips:quick", burstStrictLimit},
					{moderate, "/default", "default", burstModerateLimit},
				} {
					for range 2 {
						round++
						res := burst(t, s.servers, s.path, fmt.Sprintf("%s-%d", phase, round))
						t.Logf("%s %s: %v", phase, s.bucket, res)
						check(s.bucket, s.limit, res)
					}
				}
			}
			burstAll("redis-up", func(bucket string, limit int, b burstResult) {
				if b.admitted() > limit {
					t.Errorf("%s: %d admitted in one window, limit %d", bucket, b.admitted(), limit)
				}
				if b.admitted() == 0 || b.other > 0 {
					t.Errorf("%s: nothing admitted or unexpected answers: %v", bucket, b)
				}
			})
			pulses := pulse(srv, 30*time.Millisecond)
			burstAll("redis-slow", func(bucket string, limit int, b burstResult) {
				if b.admitted() > limit || b.other > 0 {
					t.Errorf("%s with Redis slow: %v, limit %d", bucket, b, limit)
				}
			})
			if n := pulses(); n < 2 {
				t.Errorf("only %d pauses during the slow bursts", n)
			}
			srv.Kill()
			burstAll("redis-killed", func(bucket string, limit int, b burstResult) {
				switch {
				case b.other > 0:
					t.Errorf("%s with Redis killed: unexpected answers %v", bucket, b)
				case bucket == "tips:quick" && (b.admitted() > 0 || b.unavailable != burstSize || !b.retryAfter):
					t.Errorf("strict bucket with Redis killed: %v, want all 503 with Retry-After", b)
				case bucket == "default":
					for i, n := range b.ok {
						if n > limit {
							t.Errorf("process %d admitted %d with Redis killed, limit %d per process", i, n, limit)
						}
					}
					if b.admitted() == 0 {
						t.Errorf("the outage limiter admitted nothing: %v", b)
					}
				}
			})
			for _, u := range append(strict, moderate...) {
				t.Logf("%s degraded decisions: %s", u, degradedCounts(t, u))
			}
		})
	}
}

// burstResult counts the answers of one burst.
type burstResult struct {
	ok          [burstProcesses]int // 200s per process
	tooMany     int                 // 429
	unavailable int                 // 503
	retryAfter  bool                // every 429/503 carried Retry-After
	other       int
}

func (b burstResult) admitted() int {
	n := 0
	for _, v := range b.ok {
		n += v
	}
	return n
}

func (b burstResult) String() string {
	return fmt.Sprintf("200s %v (%d), 429s %d, 503s %d, other %d", b.ok, b.admitted(), b.tooMany, b.unavailable, b.other)
}

// burst sends burstSize requests of user at once, spread over servers.
func burst(t *testing.T, servers []string, path, user string) burstResult {
	t.Helper()
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: burstSize}}
	defer client.CloseIdleConnections()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		res   = burstResult{retryAfter: true}
		start = make(chan struct{})
	)
	for i := range burstSize {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPost, servers[i%len(servers)]+path, nil)
			req.Header.Set("X-User", user)
			<-start
			resp, err := client.Do(req)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Errorf("request: %v", err)
				res.other++
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusOK:
				res.ok[i%len(servers)]++
				return
			case http.StatusTooManyRequests:
				res.tooMany++
			case http.StatusServiceUnavailable:
				res.unavailable++
			default:
				res.other++
				return
			}
			if resp.Header.Get(HeaderRetryAfter) == "" || resp.Header.Get(HeaderRemaining) != "0" {
				res.retryAfter = false
			}
		}()
	}
	close(start)
	wg.Wait()
	return res
}

// pulse pauses and resumes srv in pulses of d until the returned function
// is called, which reports how many pauses there were.
func pulse(srv *redistest.Server, d time.Duration) func() int {
	stop, done := make(chan struct{}), make(chan int)
	go func() {
		n := 0
		tick := time.NewTicker(d)
		defer tick.Stop()
		for paused := false; ; paused = !paused {
			select {
			case <-stop:
				if paused {
					srv.Resume()
				}
				done <- n
				return
			case <-tick.C:
			}
			if paused {
				srv.Resume()
			} else {
				srv.Pause()
				n++
			}
		}
	}()
	return func() int { close(stop); return <-done }
}

// startServers starts burstProcesses serving helpers on srv and returns
// their base URLs.
func startServers(t *testing.T, srv *redistest.Server, leases, timeout string) []string {
	t.Helper()
	urls := make([]string, burstProcesses)
	for i := range urls {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"="+helperServe, "REDIS_ADDR="+srv.Addr(), "LEASES="+leases, "TIMEOUT="+timeout)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdin, err := cmd.StdinPipe() // closing it stops the server
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = stdin.Close()
			if err := cmd.Wait(); err != nil {
				t.Errorf("server helper: %v", err)
			}
		})
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "LISTEN ") {
			t.Fatalf("server helper said %q, %v", line, err)
		}
		urls[i] = "http://" + strings.TrimSpace(strings.TrimPrefix(line, "LISTEN "))
	}
	return urls
}

// degradedCounts reads a server's degraded and overloaded decisions from
// its /metrics.
func degradedCounts(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	var out []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "jobworker_ratelimit_decisions_total{") &&
			(strings.Contains(line, `reason="degraded-`) || strings.Contains(line, `reason="overloaded"`)) && !strings.HasSuffix(line, " 0") {
			out = append(out, line[len("jobworker_ratelimit_decisions_total"):])
		}
	}
	return strings.Join(out, " ")
}

// serveMain is one burst server: the limits middleware in front of two
// routes, the identity from X-User, until stdin closes.
func serveMain() int {
	timeout, err := time.ParseDuration(os.Getenv("TIMEOUT"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	leases, err := ParseLeases(os.Getenv("LEASES"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv("REDIS_ADDR"), ContextTimeoutEnabled: true, MaxRetries: 1})
	defer rdb.Close()
	reg := prometheus.NewRegistry()
	l, err := New(Config{
		Client:     rdb,
		HashKey:    testHashKey, // shared by every instance
		Overrides:  map[string]Quota{"tips:quick": PerMinute(burstStrictLimit), DefaultBucket: PerMinute(burstModerateLimit)},
		Leases:     leases,
		Timeout:    timeout,
		Registerer: reg,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	x, err := ParseIPSource("direct", "")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	mw, err := MiddlewareConfig{Limiter: l, IPExtractor: x,
		BucketFunc: BucketByRoute(map[string]string{"/tips/quick": "tips:quick"}),
		UserID:     func(c echo.Context) string { return c.Request().Header.Get("X-User") },
	}.ToMiddleware()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	ok := func(c echo.Context) error { return c.NoContent(http.StatusOK) }
	e.POST("/tips/quick", ok, mw)
	e.POST("/default", ok, mw)
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	hs := &http.Server{Handler: e, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	fmt.Printf("LISTEN %s\n", ln.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin) // until the test closes stdin (or dies)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(ctx)
	return 0
}

// burn starts n helper processes that each keep one core busy until the
// test ends.
func burn(t *testing.T, n int) {
	t.Helper()
	for range n {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"="+helperBurn, "GOMAXPROCS=1")
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = stdin.Close(); _ = cmd.Wait() })
	}
}

// burnMain spins until stdin closes, or for two minutes at most.
func burnMain() int {
	done := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(done) }()
	deadline := time.Now().Add(2 * time.Minute)
	for x := 0; time.Now().Before(deadline); x++ {
		if x%1_000_000 == 0 {
			select {
			case <-done:
				return 0
			default:
			}
		}
	}
	return 0
}
