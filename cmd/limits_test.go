package cmd_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/auth"
	"github.com/digis/jobworker/internal/pgtest"
	"github.com/digis/jobworker/internal/proctest"
	"github.com/digis/jobworker/internal/redistest"
	"github.com/digis/jobworker/internal/store"
	"github.com/digis/jobworker/internal/testwait"
	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/qstashdev/qstashdevtest"
)

// The proof of issue #14 on the real API: 600 requests at once from one
// identity, spread over three cmd/api processes sharing one Redis, while
// both cores are kept busy. While Redis is up no window admits more than
// its limit; with Redis dead the strict tier (tips) admits nothing and the
// generous one (stream status) at most its limit per process.
func TestAPIBurstsNeverOverAdmit(t *testing.T) {
	t.Parallel()
	const tipLimit, statusLimit, burst = 5, 20, 600
	bin := proctest.Build(t, "github.com/digis/jobworker/cmd/api")
	rs := redistest.Start(t)
	db := pgtest.Create(t)
	if err := store.Migrate(context.Background(), db.Pool); err != nil {
		t.Fatal(err)
	}
	st, err := store.NewPostgres(db.Pool, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	stream, err := st.StartStream(ctx, store.StartStreamRequest{CreatorID: "burst-creator", Username: "burst_stream", Title: "live"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Credit(ctx, "burst-fan", 100_000, "seed:burst-fan"); err != nil {
		t.Fatal(err)
	}
	qs := qstashdevtest.Start(t, qstashdev.Config{})
	var apis []string
	for range 3 {
		p := proctest.Start(t, bin, nil,
			"REDIS_URL="+rs.URL(), "REDIS_TIMEOUT=250ms", "DATABASE_URL="+db.URL,
			"QSTASH_URL="+qs.URL, "QSTASH_TOKEN="+qstashdev.DevToken, "JOBWORKER_ENV=development", "WORKER_PUBLIC_URL=http://127.0.0.1:1",
			"AUTH_JWT_SECRET="+apiJWTSecret, "RATE_LIMIT_IP_SOURCE=direct", "LOG_LEVEL=error", "LOG_FORMAT=text",
			fmt.Sprintf("RATE_LIMIT_OVERRIDES=tips:quick=%d/1m,streams:status=%d/1m", tipLimit, statusLimit))
		p.WaitHealthy(t)
		apis = append(apis, p.URL)
	}
	fan, err := auth.DevToken([]byte(apiJWTSecret), "burst-fan", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// A second identity for the outage: the first one's windows are spent,
	// and an instance keeps refusing a window it knows is spent.
	fresh, err := auth.DevToken([]byte(apiJWTSecret), "burst-fan-2", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	stopLoad := busyCores(t)
	defer stopLoad()

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: burst, MaxConnsPerHost: 0}}
	fire := func(name string, do func(i int, base string) *http.Request) map[int]int {
		var mu sync.Mutex
		codes := map[int]int{}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range burst {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				res, err := client.Do(do(i, apis[i%len(apis)]))
				code := 0
				if err == nil {
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					code = res.StatusCode
				}
				mu.Lock()
				codes[code]++
				mu.Unlock()
			}()
		}
		close(start)
		wg.Wait()
		t.Logf("%s: %v", name, codes)
		return codes
	}
	tip := func(token, prefix string) func(int, string) *http.Request {
		return func(i int, base string) *http.Request {
			r, _ := http.NewRequest(http.MethodPost, base+"/api/tips/quick",
				strings.NewReader(`{"amount":1,"streamId":`+strconv.FormatInt(stream.ID, 10)+`}`))
			r.Header.Set("Authorization", "Bearer "+token)
			r.Header.Set("Idempotency-Key", prefix+strconv.Itoa(i))
			r.Header.Set("Content-Type", "application/json")
			return r
		}
	}
	status := func(token string) func(int, string) *http.Request {
		return func(_ int, base string) *http.Request {
			r, _ := http.NewRequest(http.MethodGet, base+"/api/streams/status?username=burst_stream", nil)
			r.Header.Set("Authorization", "Bearer "+token)
			return r
		}
	}
	tipsInDB := func() int {
		var n int
		if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM tips WHERE tipper_id LIKE 'burst-fan%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	onlyRefusals := func(codes map[int]int, admitted int) {
		t.Helper()
		for code, n := range codes {
			if code != admitted && code != http.StatusTooManyRequests && code != http.StatusServiceUnavailable {
				t.Errorf("%d answers of %d: want only %d, 429 or 503", n, code, admitted)
			}
		}
	}

	codes := fire("tips, Redis up", tip(fan, "up-"))
	onlyRefusals(codes, http.StatusCreated)
	if codes[http.StatusCreated] > tipLimit || tipsInDB() != codes[http.StatusCreated] {
		t.Fatalf("Redis up: %d tips admitted, %d in the database; the limit is %d", codes[http.StatusCreated], tipsInDB(), tipLimit)
	}
	codes = fire("status, Redis up", status(fan))
	onlyRefusals(codes, http.StatusOK)
	if codes[http.StatusOK] > statusLimit {
		t.Fatalf("Redis up: %d status reads admitted; the limit is %d", codes[http.StatusOK], statusLimit)
	}

	rs.Kill()
	before := tipsInDB()
	codes = fire("tips, Redis dead", tip(fresh, "down-"))
	onlyRefusals(codes, http.StatusCreated)
	if codes[http.StatusCreated] != 0 || tipsInDB() != before {
		t.Fatalf("Redis dead: %d tips admitted; the strict tier must refuse them all", codes[http.StatusCreated])
	}
	codes = fire("status, Redis dead", status(fresh))
	onlyRefusals(codes, http.StatusOK)
	if n := codes[http.StatusOK]; n == 0 || n > statusLimit*len(apis) {
		t.Fatalf("Redis dead: %d status reads admitted; want some, at most %d (the limit per process)", n, statusLimit*len(apis))
	}
}

// busyCores keeps every core busy until the returned func is called, so
// the processes under test compete for CPU as on a loaded host.
func busyCores(t *testing.T) func() {
	t.Helper()
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for x := 0; !stop.Load(); x++ {
				_ = x * x
			}
		}()
	}
	return func() { stop.Store(true); wg.Wait() }
}

// TestAPIWarnsOfBroadXFFTrust: in xff mode a client inside a trusted range
// chooses its own identity, so the api says so at start-up when a range is
// broad (a pod or VPC network), and stays quiet for single proxies.
func TestAPIWarnsOfBroadXFFTrust(t *testing.T) {
	t.Parallel()
	bin := proctest.Build(t, "github.com/digis/jobworker/cmd/api")
	for _, tc := range []struct {
		trusted string
		warn    bool
	}{
		{"10.0.0.0/8", true},
		{"203.0.113.7,2001:db8::/32", true},
		{"203.0.113.7,10.1.2.0/24,2001:db8::1", false},
		{"169.254.0.0/16,127.0.0.0/8", false}, // Cloud Run's front end, the Lambda adapter
	} {
		p := proctest.Start(t, bin, nil,
			"REDIS_URL=redis://127.0.0.1:1", "DATABASE_URL=memory", "QSTASH_TOKEN=xff-test-token",
			"WORKER_PUBLIC_URL=http://127.0.0.1:1", "AUTH_JWT_SECRET="+apiJWTSecret, "LOG_FORMAT=text",
			"RATE_LIMIT_IP_SOURCE=xff", "RATE_LIMIT_TRUSTED_PROXIES="+tc.trusted)
		testwait.For(t, 15*time.Second, "the api listening", func() bool { return strings.Contains(p.Output(), "listening") })
		out := p.Output()
		if got := strings.Contains(out, "trusts broad ranges"); got != tc.warn {
			t.Errorf("RATE_LIMIT_TRUSTED_PROXIES=%s: warning %v, want %v:\n%s", tc.trusted, got, tc.warn, out)
		}
	}
}
