package qstashdev_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/cputime"
	"github.com/digis/jobworker/qstashdev"
)

// All benchmarks run on loopback only, bounded in count. Reproduce the
// figures in docs/benchmarks.md with:
//
//	go test -run '^$' -bench . -benchtime 20000x ./qstashdev/   (throughput)
//	go test -run '^$' -bench 'Lateness|Memory' -benchtime 5x ./qstashdev/
//	go test -run '^$' -bench Herd -benchtime 1x -count 3 ./qstashdev/

func benchServer(b *testing.B) (*qstashdev.Server, string) {
	b.Helper()
	srv, err := qstashdev.New(qstashdev.Config{})
	if err != nil {
		b.Fatal(err)
	}
	api := httptest.NewServer(srv.Handler())
	b.Cleanup(func() { api.Close(); srv.Close() })
	return srv, api.URL
}

func benchClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	return &http.Client{Transport: tr}
}

func publishRaw(b *testing.B, c *http.Client, url, body string, header map[string]string) {
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+qstashdev.DevToken)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		b.Error(err)
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Errorf("publish: %d", resp.StatusCode)
	}
}

// BenchmarkPublishDeliver measures end-to-end throughput: b.N messages
// published by 8 concurrent clients, each delivered (signed) to a no-op
// destination. One op = one publish + one delivery.
func BenchmarkPublishDeliver(b *testing.B) {
	var got atomic.Int64
	all := make(chan struct{})
	target := int64(b.N)
	dst := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if got.Add(1) == target {
			close(all)
		}
	}))
	defer dst.Close()
	_, api := benchServer(b)
	url := api + "/v2/publish/" + dst.URL + "/noop"
	c := benchClient()
	const publishers = 8
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for p := range publishers {
		n := b.N / publishers
		if p < b.N%publishers {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				publishRaw(b, c, url, `{"job":"noop"}`, map[string]string{"Content-Type": "application/json"})
			}
		}()
	}
	wg.Wait()
	select {
	case <-all:
	case <-time.After(60 * time.Second):
		b.Fatalf("delivered %d of %d", got.Load(), b.N)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkDelayedLateness publishes 200 messages per op with delays spread
// over 100–500 ms and measures arrival minus due time (due = the client's
// clock just before publishing + delay, so the figure includes publish
// latency and slightly overstates the real lateness).
func BenchmarkDelayedLateness(b *testing.B) {
	const perOp = 200
	var mu sync.Mutex
	var lateness []time.Duration
	var arrived atomic.Int64
	round := make(chan struct{}, 1)
	dst := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		body, _ := io.ReadAll(r.Body)
		due, _ := strconv.ParseInt(string(body), 10, 64)
		mu.Lock()
		lateness = append(lateness, now.Sub(time.Unix(0, due)))
		mu.Unlock()
		if arrived.Add(1)%perOp == 0 {
			round <- struct{}{}
		}
	}))
	defer dst.Close()
	_, api := benchServer(b)
	url := api + "/v2/publish/" + dst.URL + "/late"
	c := benchClient()
	b.ResetTimer()
	for range b.N {
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range perOp / 4 {
					delay := time.Duration(100+rand.IntN(401)) * time.Millisecond
					due := time.Now().Add(delay)
					publishRaw(b, c, url, strconv.FormatInt(due.UnixNano(), 10), map[string]string{"Upstash-Delay": fmt.Sprintf("%dms", delay.Milliseconds())})
				}
				_ = w
			}()
		}
		wg.Wait()
		select {
		case <-round:
		case <-time.After(10 * time.Second):
			b.Fatalf("only %d deliveries arrived", arrived.Load())
		}
	}
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lateness)
	q := func(p float64) float64 {
		return float64(lateness[int(p*float64(len(lateness)-1))]) / float64(time.Millisecond)
	}
	if lateness[0] < 0 {
		b.Errorf("a message arrived %v before its due time", -lateness[0])
	}
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(1), "max-ms")
}

// BenchmarkMemoryPerQueuedMessage publishes 20,000 messages delayed by an
// hour (256-byte body, one forwarded header) into a fresh server and
// reports the live heap they add, per message.
func BenchmarkMemoryPerQueuedMessage(b *testing.B) {
	const n = 20_000
	body := strings.Repeat("x", 256)
	var perMsg float64
	for range b.N {
		srv, err := qstashdev.New(qstashdev.Config{})
		if err != nil {
			b.Fatal(err)
		}
		h := srv.Handler()
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for i := range n {
			req := httptest.NewRequest("POST", "/v2/publish/http://127.0.0.1:1/jobs/"+strconv.Itoa(i), strings.NewReader(body))
			req.Host = "127.0.0.1:8080" // the server answers loopback names only (see guard.go)
			req.Header.Set("Authorization", "Bearer "+qstashdev.DevToken)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Upstash-Forward-X-Tenant", "t-1")
			req.Header.Set("Upstash-Delay", "1h")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != 200 {
				b.Fatalf("publish: %d %s", rec.Code, rec.Body)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perMsg = float64(after.HeapAlloc-before.HeapAlloc) / n
		runtime.KeepAlive(srv)
		srv.Close()
	}
	b.ReportMetric(perMsg, "B/msg")
}

// BenchmarkHerd publishes 8,000 messages with the same Upstash-Not-Before
// second (one batch request per 500) and reports arrival minus that second
// (p50, p99, max) and the connections the destination accepted. Baseline:
// the delivery client as it was before the per-host connection cap
// (uncapped), in the same run. Run with -benchtime 1x: one op is one herd.
func BenchmarkHerd(b *testing.B) {
	uncapped := func() *http.Client {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 512, 256
		return &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	for _, bc := range []struct {
		name   string
		client func() *http.Client
	}{{"client=default", nil}, {"baseline=uncapped", uncapped}} {
		b.Run(bc.name, func(b *testing.B) {
			const n = 8000
			var mu sync.Mutex
			var arrivals []time.Time
			var conns atomic.Int64
			done := make(chan struct{}, 1)
			dst := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				mu.Lock()
				arrivals = append(arrivals, time.Now())
				if len(arrivals)%n == 0 {
					done <- struct{}{}
				}
				mu.Unlock()
			}))
			dst.Config.ConnState = func(_ net.Conn, st http.ConnState) {
				if st == http.StateNew {
					conns.Add(1)
				}
			}
			dst.Start()
			defer dst.Close()
			cfg := qstashdev.Config{}
			if bc.client != nil {
				cfg.HTTPClient = bc.client()
			}
			srv, err := qstashdev.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			api := httptest.NewServer(srv.Handler())
			defer func() { api.Close(); srv.Close() }()
			c := benchClient()
			var late []time.Duration
			for range b.N {
				due := time.Unix(time.Now().Unix()+2, 0)
				item := `{"destination":"` + dst.URL + `/herd","headers":{"Upstash-Not-Before":"` + strconv.FormatInt(due.Unix(), 10) + `"}},`
				batch := "[" + strings.TrimSuffix(strings.Repeat(item, 500), ",") + "]"
				for range n / 500 {
					publishRaw(b, c, api.URL+"/v2/batch", batch, nil)
				}
				select {
				case <-done:
				case <-time.After(30 * time.Second):
					b.Fatal("herd not delivered in 30 s")
				}
				mu.Lock()
				for _, a := range arrivals[len(arrivals)-n:] {
					late = append(late, a.Sub(due))
				}
				mu.Unlock()
			}
			slices.Sort(late)
			q := func(p float64) float64 { return float64(late[int(p*float64(len(late)-1))]) / float64(time.Millisecond) }
			b.ReportMetric(q(0.5), "p50-ms")
			b.ReportMetric(q(0.99), "p99-ms")
			b.ReportMetric(q(1), "max-ms")
			b.ReportMetric(float64(conns.Load())/float64(b.N), "conns/op")
		})
	}
}

// BenchmarkFlowDrain is the server's side of the drain of docs/benchmarks.md
// (issue #21) in one process: b.N messages published through /v2/batch
// under one flow-control key of parallelism 16 or 64, delivered (signed)
// to a no-op destination. One op = one message published and delivered.
//
//	go test -run '^$' -bench FlowDrain -benchtime 10000x ./qstashdev/
func BenchmarkFlowDrain(b *testing.B) {
	for _, par := range []int{16, 64} {
		b.Run("parallelism="+strconv.Itoa(par), func(b *testing.B) {
			dst := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
			}))
			defer dst.Close()
			srv, api := benchServer(b)
			c := benchClient()
			key := fmt.Sprintf("drain-%d-%d", par, b.N)
			var batches []string
			for i := 0; i < b.N; i += 1000 {
				var sb strings.Builder
				sb.WriteByte('[')
				for j := i; j < min(i+1000, b.N); j++ {
					if j > i {
						sb.WriteByte(',')
					}
					fmt.Fprintf(&sb, `{"destination":%q,"headers":{"Content-Type":"application/json","Upstash-Flow-Control-Key":%q,"Upstash-Flow-Control-Value":"parallelism=%d"},"body":"{\"name\":\"drain-%d\"}"}`,
						dst.URL+"/jobs/demo.hello", key, par, j)
				}
				sb.WriteByte(']')
				batches = append(batches, sb.String())
			}
			b.ResetTimer()
			start, cpu0 := time.Now(), cputime.Self()
			for _, body := range batches {
				publishRaw(b, c, api+"/v2/batch", body, map[string]string{"Content-Type": "application/json"})
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := srv.WaitIdle(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
			b.ReportMetric(float64((cputime.Self()-cpu0).Microseconds())/float64(b.N), "cpu-µs/msg")
		})
	}
}
