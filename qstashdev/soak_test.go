package qstashdev_test

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/cputime"
	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/qstashdev/qstashdevtest"
)

// TestSoak publishes a mix of immediate, delayed, retried and
// flow-controlled messages over real loopback HTTP and checks every one is
// delivered exactly once. Messages are published at a steady rate
// (QSTASHDEV_SOAK_RATE per second, default 2,000) by 8 publishers. It
// reports how late deliveries were (arrival at the destination minus due
// time) as p50/p99/max, next to a baseline measured in the same run: a Go
// timer (time.AfterFunc) per message for the same due time, which is what
// the runtime and the machine's load alone cost. The figures are recorded
// in docs/benchmarks.md, never asserted. In the default suite it sends
// 3,000 messages; for the soak of docs/benchmarks.md:
//
//	QSTASHDEV_SOAK=100000 go test -run '^TestSoak$' -count=1 -v ./qstashdev/
func TestSoak(t *testing.T) {
	t.Parallel()
	n := 3000
	if v := os.Getenv("QSTASHDEV_SOAK"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n <= 0 {
			t.Fatalf("QSTASHDEV_SOAK=%q: want a message count", v)
		}
	}
	rate := 2000
	if v := os.Getenv("QSTASHDEV_SOAK_RATE"); v != "" {
		var err error
		if rate, err = strconv.Atoi(v); err != nil || rate <= 0 {
			t.Fatalf("QSTASHDEV_SOAK_RATE=%q: want messages per second", v)
		}
	}
	cpu0 := cputime.Self()
	res := runSoak(t, n, rate)
	t.Logf("soak: %d messages (%d retried, %d flow-controlled) in %v; process CPU %.1f µs per message (server, publishers, destination, baseline timers)",
		n, res.retried, res.flow, res.took.Round(time.Millisecond), float64((cputime.Self()-cpu0).Microseconds())/float64(n))
	// Every attempt together, herds included: the figure the goal is about.
	res.late["all"] = slices.Concat(res.late["first"], res.late["retry"], res.late["herd"])
	for _, k := range []string{"all", "first", "retry", "herd", "baseline"} {
		l := res.late[k]
		if len(l) == 0 {
			continue
		}
		slices.Sort(l)
		q := func(p float64) time.Duration { return l[int(p*float64(len(l)-1))] }
		t.Logf("lateness %-5s n=%d p50=%v p99=%v max=%v", k, len(l), q(0.5), q(0.99), l[len(l)-1])
	}
}

type soakResult struct {
	late          map[string][]time.Duration
	retried, flow int
	took          time.Duration
}

// soakKind is how one soak message is published and answered.
type soakKind struct {
	delay time.Duration
	herd  bool // Upstash-Not-Before the same second as every other herd message
	fail  bool // the first attempt answers 500; the retry is due 200 ms later
	flow  bool // under a flow-control key of parallelism 4
}

const soakRetryDelay = 200 * time.Millisecond

func runSoak(t *testing.T, n, rate int) soakResult {
	srv := qstashdevtest.Start(t, qstashdev.Config{MaxEvents: 1000})
	kinds := make([]soakKind, n)
	due := make([]time.Time, n)
	rng := rand.New(rand.NewPCG(1, 2))
	res := soakResult{late: map[string][]time.Duration{}}
	for i := range kinds {
		k := soakKind{}
		switch r := rng.IntN(100); {
		case r < 20: // immediate
		case r < 30:
			k.herd = true
		case r < 80:
			k.delay = time.Duration(rng.IntN(3000)) * time.Millisecond
		case r < 92:
			k.delay = time.Duration(rng.IntN(1000)) * time.Millisecond
			k.fail = true
			res.retried++
		default:
			k.flow = true
			res.flow++
		}
		kinds[i] = k
	}

	var mu sync.Mutex
	okCount := make([]int, n)
	attempts := make([]int, n)
	failedAt := make([]time.Time, n)
	dst := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		b, _ := io.ReadAll(r.Body)
		i, err := strconv.Atoi(string(b))
		if err != nil || i < 0 || i >= n {
			t.Errorf("soak destination: body %q", b)
			w.WriteHeader(400)
			return
		}
		k := kinds[i]
		mu.Lock()
		defer mu.Unlock()
		attempts[i]++
		switch {
		case k.fail && attempts[i] == 1:
			res.late["first"] = append(res.late["first"], now.Sub(due[i]))
			failedAt[i] = time.Now()
			w.WriteHeader(http.StatusInternalServerError)
			return
		case k.fail:
			res.late["retry"] = append(res.late["retry"], now.Sub(failedAt[i].Add(soakRetryDelay)))
		case k.herd:
			res.late["herd"] = append(res.late["herd"], now.Sub(due[i]))
		case !k.flow:
			res.late["first"] = append(res.late["first"], now.Sub(due[i]))
		}
		okCount[i]++
	}))
	t.Cleanup(dst.Close)

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	start := time.Now()
	var baseline sync.WaitGroup
	var wg sync.WaitGroup
	const publishers = 8
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := p; i < n; i += publishers {
				// The pace is the scenario: message i goes out at
				// start + i/rate.
				time.Sleep(time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))))
				k := kinds[i]
				// A herd shares one Upstash-Not-Before second with every
				// herd message published in the same second.
				herdAt := time.Unix(time.Now().Unix()+2, 0)
				req, _ := http.NewRequest("POST", srv.URL+"/v2/publish/"+dst.URL+"/soak", strings.NewReader(strconv.Itoa(i)))
				req.Header.Set("Authorization", "Bearer "+qstashdev.DevToken)
				if k.delay > 0 {
					req.Header.Set("Upstash-Delay", fmt.Sprintf("%dms", k.delay.Milliseconds()))
				}
				if k.herd {
					req.Header.Set("Upstash-Not-Before", strconv.FormatInt(herdAt.Unix(), 10))
				}
				if k.fail {
					req.Header.Set("Upstash-Retry-Delay", strconv.FormatInt(soakRetryDelay.Milliseconds(), 10))
				}
				if k.flow {
					req.Header.Set("Upstash-Flow-Control-Key", "soak-"+strconv.Itoa(i%8))
					req.Header.Set("Upstash-Flow-Control-Value", "parallelism=4")
				}
				mu.Lock()
				// Due is the publisher's clock just before the request: the
				// figure includes the publish round trip, so it overstates.
				due[i] = time.Now().Add(k.delay)
				if k.herd {
					due[i] = herdAt
				}
				d := due[i]
				mu.Unlock()
				if !k.flow {
					baseline.Add(1)
					time.AfterFunc(time.Until(d), func() {
						late := time.Since(d)
						mu.Lock()
						res.late["baseline"] = append(res.late["baseline"], late)
						mu.Unlock()
						baseline.Done()
					})
				}
				resp, err := client.Do(req)
				if err != nil {
					t.Errorf("publish %d: %v", i, err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("publish %d: %d", i, resp.StatusCode)
					return
				}
			}
		}()
	}
	wg.Wait()
	st := srv.AwaitIdle(t, 5*time.Minute)
	baseline.Wait()
	res.took = time.Since(start)
	if st.Dead != 0 {
		t.Errorf("%d messages dead-lettered", st.Dead)
	}
	mu.Lock()
	defer mu.Unlock()
	lost, twice := 0, 0
	for i := range okCount {
		switch {
		case okCount[i] == 0:
			lost++
		case okCount[i] > 1:
			twice++
		}
	}
	if lost > 0 || twice > 0 {
		t.Errorf("%d messages never delivered, %d delivered more than once", lost, twice)
	}
	return res
}

// TestHerdSharesConnections is the regression test for deliveries seconds
// late: messages due together used to dial one connection each, and a few
// thousand at once overflowed the destination's accept queue (the kernel
// retries a dropped SYN 1 s, then 3 s later). Now a destination gets at
// most 256 connections, which the attempts share. The destination holds
// the first 256 requests, so that every other attempt is started while
// none of those connections is free.
func TestHerdSharesConnections(t *testing.T) {
	t.Parallel()
	const n, limit = 600, 256
	var (
		mu       sync.Mutex
		held     int
		conns    int
		release  = make(chan struct{})
		released bool
	)
	dst := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		held++
		if held == limit && !released {
			released = true
			close(release)
		}
		mu.Unlock()
		<-release
	}))
	dst.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			mu.Lock()
			conns++
			mu.Unlock()
		}
	}
	dst.Start()
	t.Cleanup(dst.Close)
	srv := qstashdevtest.Start(t, qstashdev.Config{})
	body := `[` + strings.TrimSuffix(strings.Repeat(`{"destination":"`+dst.URL+`/herd","headers":{"Upstash-Delay":"300ms"}},`, n), ",") + `]`
	req, _ := http.NewRequest("POST", srv.URL+"/v2/batch", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+qstashdev.DevToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("batch: %v %v", resp, err)
	}
	resp.Body.Close()
	srv.AwaitIdle(t, time.Minute)
	mu.Lock()
	defer mu.Unlock()
	if conns > limit {
		t.Errorf("%d deliveries due together opened %d connections to one destination, want at most %d", n, conns, limit)
	}
}
