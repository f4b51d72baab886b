package cmd_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/auth"
	"github.com/digis/jobworker/internal/metrictest"
	"github.com/digis/jobworker/internal/pgtest"
	"github.com/digis/jobworker/internal/proctest"
	"github.com/digis/jobworker/internal/redistest"
	"github.com/digis/jobworker/internal/store"
	"github.com/digis/jobworker/internal/testwait"
	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/webhooks/webhookstest"
)

// The attacks of the hardening issue, over real HTTP against the real
// binaries on a real redis-server and PostgreSQL.

const hardJWTSecret = "hardening-test-secret-0123456789abcdef"

type hardStack struct {
	api, worker *proctest.Proc
}

// startHardStack runs one api and one worker on a private Redis and a
// migrated database, with REQUEST_TIMEOUT=2s; env is added to both.
func startHardStack(t *testing.T, env ...string) *hardStack {
	t.Helper()
	return startHardStackBehind(t, 0, env...)
}

// startHardStackBehind is startHardStack with every Redis round trip taking
// at least redisRTT (a managed Redis in another zone).
func startHardStackBehind(t *testing.T, redisRTT time.Duration, env ...string) *hardStack {
	t.Helper()
	db := pgtest.Create(t)
	if err := store.Migrate(context.Background(), db.Pool); err != nil {
		t.Fatal(err)
	}
	rs := redistest.Start(t)
	redisURL := rs.URL()
	if redisRTT > 0 {
		redisURL = "redis://" + redistest.Delay(t, rs.Addr(), redisRTT)
	}
	workerPort := proctest.FreePort(t)
	common := append([]string{
		"REDIS_URL=" + redisURL, "DATABASE_URL=" + db.URL, "QSTASH_URL=http://127.0.0.1:1", "QSTASH_TOKEN=" + qstashdev.DevToken,
		"WORKER_PUBLIC_URL=http://127.0.0.1:" + strconv.Itoa(workerPort), "LOG_FORMAT=text", "LOG_LEVEL=error",
		"REQUEST_TIMEOUT=2s", "OUTBOX_RELAY=off",
		"JOBWORKER_ENV=development", // the dev signing keys and token
	}, env...)
	s := &hardStack{}
	s.worker = proctest.Start(t, proctest.Build(t, "github.com/digis/jobworker/cmd/worker"), nil,
		append(common, "PORT="+strconv.Itoa(workerPort), "STRIPE_WEBHOOK_SECRET="+chaosStripeSecret,
			"QSTASH_CURRENT_SIGNING_KEY="+qstashdev.DevCurrentSigningKey, "QSTASH_NEXT_SIGNING_KEY="+qstashdev.DevNextSigningKey)...)
	s.api = proctest.Start(t, proctest.Build(t, "github.com/digis/jobworker/cmd/api"), nil,
		append(common, "AUTH_JWT_SECRET="+hardJWTSecret, "RATE_LIMIT_IP_SOURCE=direct",
			"RATE_LIMIT_OVERRIDES=tips:quick=1000000/1m,streams:start=1000000/1m")...)
	s.worker.WaitStatus(t, "/readyz", http.StatusOK, 15*time.Second)
	s.api.WaitStatus(t, "/readyz", http.StatusOK, 15*time.Second)
	return s
}

func hardBearer(t *testing.T, user string) string {
	t.Helper()
	tok, err := auth.DevToken([]byte(hardJWTSecret), user, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return "Bearer " + tok
}

// dripper is one connection that sent a POST's headers and drips its body.
type dripper struct {
	conn   net.Conn
	sent   atomic.Int64
	closed chan struct{} // the server answered or closed
	status atomic.Int64  // the status it answered, 0 for none
}

// drip opens a connection, sends the headers and then the body's bytes one
// every interval, until the server closes the connection or the body is
// sent.
func drip(t *testing.T, base, path string, length int, interval time.Duration, hdr ...string) *dripper {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	var b strings.Builder
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n", path, strings.TrimPrefix(base, "http://"), length)
	for i := 0; i+1 < len(hdr); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", hdr[i], hdr[i+1])
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	d := &dripper{conn: conn, closed: make(chan struct{})}
	go func() {
		defer close(d.closed)
		br := bufio.NewReader(conn)
		if res, err := http.ReadResponse(br, nil); err == nil {
			d.status.Store(int64(res.StatusCode))
			_, _ = io.Copy(io.Discard, res.Body)
		}
		_, _ = io.Copy(io.Discard, br) // until the server closes
	}()
	go func() {
		for range length {
			select {
			case <-d.closed:
				return
			case <-time.After(interval): // the attack's pace
			}
			if _, err := conn.Write([]byte(" ")); err != nil { // white space: a JSON decoder waits for more
				return
			}
			d.sent.Add(1)
		}
	}()
	return d
}

func goroutines(t *testing.T, p *proctest.Proc) float64 {
	t.Helper()
	return metrictest.Scrape(t, p.MetricsURL, "go_goroutines")
}

// TestSlowBodiesAreCutOff: 40 connections dripping a body at 1 byte/s
// behind a junk Upstash-Signature are answered 401 and closed at once; 40
// more behind a valid token (the body is needed) and 40 to the API with a
// valid bearer token are closed at REQUEST_TIMEOUT (2 s), long before their
// 60-byte bodies could arrive; the goroutines return to their baseline. A
// POST with Content-Length: 100000 and no token gets its answer (413 or
// 401) without sending a byte of body.
func TestSlowBodiesAreCutOff(t *testing.T) {
	t.Parallel()
	s := startHardStack(t)
	const n, length = 40, 60
	for _, p := range []*proctest.Proc{s.api, s.worker} {
		// A first scrape makes the metrics listener's own goroutines.
		goroutines(t, p)
	}
	baseWorker, baseAPI := goroutines(t, s.worker), goroutines(t, s.api)

	// The token QStash would send for a 60-byte body at this URL: its
	// body is needed, so only the deadline stops the drip.
	body := []byte(strings.Repeat(" ", length))
	sig, err := webhookstest.QStashSignature(qstashdev.DevCurrentSigningKey,
		"http://127.0.0.1:"+strconv.Itoa(s.worker.Port)+"/jobs/demo.hello", body, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	bearer := hardBearer(t, "fan-slow")
	type attack struct {
		name   string
		d      *dripper
		status []int64 // what an answer may be
	}
	var attacks []attack
	for i := range n {
		attacks = append(attacks,
			attack{"worker, junk signature", drip(t, s.worker.URL, "/jobs/demo.hello", length, time.Second,
				"Upstash-Signature", "junk.junk.junk", "Upstash-Message-Id", "msg-"+strconv.Itoa(i)), []int64{401}},
			attack{"worker, valid token", drip(t, s.worker.URL, "/jobs/demo.hello", length, time.Second,
				"Upstash-Signature", sig, "Upstash-Message-Id", "msg-v"+strconv.Itoa(i)), []int64{401, 408}},
			attack{"api, valid bearer", drip(t, s.api.URL, "/api/streams/start", length, time.Second,
				"Authorization", bearer, "Content-Type", "application/json"), []int64{408}},
		)
	}
	for _, a := range attacks {
		select {
		case <-a.d.closed:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: the connection is still open after 30 s (%d bytes sent)", a.name, a.d.sent.Load())
		}
		if a.d.sent.Load() >= length {
			t.Fatalf("%s: the server waited for the whole body", a.name)
		}
		if st := a.d.status.Load(); st != 0 && !contains(a.status, st) {
			t.Fatalf("%s: answered %d, want one of %v", a.name, st, a.status)
		}
	}
	testwait.For(t, 15*time.Second, "the worker's and the API's goroutines back to their baselines", func() bool {
		return goroutines(t, s.worker) <= baseWorker+2 && goroutines(t, s.api) <= baseAPI+2
	})

	// No token, a body declared and never sent: the answer comes anyway
	// (413 here: the route checks the declared length before the token).
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.api.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /api/tips/quick HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second)) // only keeps a broken server from hanging the test
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || (res.StatusCode != http.StatusUnauthorized && res.StatusCode != http.StatusRequestEntityTooLarge) || !res.Close {
		t.Fatalf("POST without token, Content-Length 100000, no body: %v %v", res, err)
	}
	res.Body.Close()
}

func contains(xs []int64, x int64) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// TestOversizedChunkedBodiesAre413: a chunked body above the cap is 413 on
// every route with a body limit, whatever reads it (the API's JSON decoder,
// the idempotency middleware, the QStash and Stripe verifiers).
func TestOversizedChunkedBodiesAre413(t *testing.T) {
	t.Parallel()
	s := startHardStack(t, "BODY_LIMIT=64KiB")
	big := `{"title":"` + strings.Repeat("x", 100<<10) + `"}` // above the API's 16 KiB and BODY_LIMIT
	bearer := hardBearer(t, "fan-big")
	workerBase := "http://127.0.0.1:" + strconv.Itoa(s.worker.Port)
	jobSig, err := webhookstest.QStashSignature(qstashdev.DevCurrentSigningKey, workerBase+"/jobs/demo.hello", []byte(big), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	failSig, err := webhookstest.QStashSignature(qstashdev.DevCurrentSigningKey, workerBase+"/qstash/failed", []byte(big), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, url string
		hdr       []string
	}{
		{"api start", s.api.URL + "/api/streams/start", []string{"Authorization", bearer}},
		{"api stop", s.api.URL + "/api/streams/stop", []string{"Authorization", bearer}},
		{"api tip (idempotency reads first)", s.api.URL + "/api/tips/quick", []string{"Authorization", bearer, "Idempotency-Key", "big-1"}},
		{"worker job", s.worker.URL + "/jobs/demo.hello", []string{"Upstash-Signature", jobSig, "Upstash-Message-Id", "m1"}},
		{"worker failure callback", s.worker.URL + "/qstash/failed", []string{"Upstash-Signature", failSig}},
		{"stripe", s.worker.URL + "/webhooks/stripe", []string{"Stripe-Signature", webhookstest.StripeSignature(chaosStripeSecret, []byte(big), time.Now())}},
	} {
		// A reader of unknown length goes out chunked.
		req, _ := http.NewRequest(http.MethodPost, tt.url, io.MultiReader(strings.NewReader(big)))
		req.Header.Set("Content-Type", "application/json")
		for i := 0; i+1 < len(tt.hdr); i += 2 {
			req.Header.Set(tt.hdr[i], tt.hdr[i+1])
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		res.Body.Close()
		if req.ContentLength != 0 || len(req.TransferEncoding) != 0 && req.TransferEncoding[0] != "chunked" {
			t.Fatalf("%s: not sent chunked", tt.name)
		}
		if res.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("%s: %d, want 413", tt.name, res.StatusCode)
		}
	}
}

// scrapeAll returns a /metrics page's number of samples and its size.
func scrapeAll(t *testing.T, p *proctest.Proc) (int, int) {
	t.Helper()
	res, err := http.Get(p.MetricsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	n := 0
	for line := range strings.SplitSeq(string(b), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			n++
		}
	}
	return n, len(b)
}

// TestInventedMethodsAddNoSeries: 60 anonymous requests with invented
// 1 KiB methods (and invented paths) add no series to either binary.
func TestInventedMethodsAddNoSeries(t *testing.T) {
	t.Parallel()
	s := startHardStack(t)
	send := func(base, method, path string) {
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
	for _, p := range []*proctest.Proc{s.api, s.worker} {
		// One of each kind first, so the "other" and "unmatched" series exist.
		for _, path := range []string{"/api/streams/status", "/jobs/x", "/nowhere"} {
			send(p.URL, strings.Repeat("Q", 1024), path)
		}
		before, size := scrapeAll(t, p)
		for i := range 60 {
			method := fmt.Sprintf("%s%04d", strings.Repeat("M", 1020), i)
			send(p.URL, method, []string{"/api/streams/status", "/jobs/x", "/nowhere-" + strconv.Itoa(i)}[i%3])
		}
		after, sizeAfter := scrapeAll(t, p)
		// The process's own series may move by one or two (a histogram
		// bucket of the GC): an invented method made 18 each.
		if after > before+2 || sizeAfter > size*11/10 {
			t.Fatalf("%s: series %d → %d, page %d → %d bytes", p.URL, before, after, size, sizeAfter)
		}
	}
}

// TestMetricsAreNotPublic: /metrics is not on either binary's serving port;
// it is on METRICS_ADDR. With METRICS_TOKEN it is on the serving port too,
// behind the token, as on the metrics listener.
func TestMetricsAreNotPublic(t *testing.T) {
	t.Parallel()
	get := func(url, authz string) int {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	s := startHardStack(t)
	for _, p := range []*proctest.Proc{s.api, s.worker} {
		if c := get(p.URL+"/metrics", ""); c != http.StatusNotFound {
			t.Fatalf("%s/metrics: %d, want 404", p.URL, c)
		}
		if c := get(p.MetricsURL+"/metrics", ""); c != http.StatusOK {
			t.Fatalf("%s/metrics: %d, want 200", p.MetricsURL, c)
		}
	}
	const token = "hardening-metrics-token"
	s = startHardStack(t, "METRICS_TOKEN="+token)
	for _, p := range []*proctest.Proc{s.api, s.worker} {
		for _, base := range []string{p.URL, p.MetricsURL} {
			if c := get(base+"/metrics", ""); c != http.StatusUnauthorized {
				t.Fatalf("%s/metrics without the token: %d, want 401", base, c)
			}
			if c := get(base+"/metrics", "Bearer "+token); c != http.StatusOK {
				t.Fatalf("%s/metrics with the token: %d, want 200", base, c)
			}
		}
	}
}

// TestReadyzUnder200ConcurrentProbes: 200 concurrent probes of a healthy
// stack (Redis and PostgreSQL up, Redis 40 ms away as a managed one in
// another zone may be) all get 200, on both binaries. Each probe used to
// PING on its own: 200 PINGs queued for the pool's 20 connections and the
// later ones missed REDIS_TIMEOUT (250 ms).
func TestReadyzUnder200ConcurrentProbes(t *testing.T) {
	t.Parallel()
	s := startHardStackBehind(t, 40*time.Millisecond)
	for _, p := range []*proctest.Proc{s.api, s.worker} {
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 200}}
		for round := range 3 {
			var wg sync.WaitGroup
			codes := make(chan int, 200)
			for range 200 {
				wg.Go(func() {
					res, err := client.Get(p.URL + "/readyz")
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
			bad := map[int]int{}
			for c := range codes {
				if c != http.StatusOK {
					bad[c]++
				}
			}
			if len(bad) > 0 {
				t.Fatalf("%s round %d: probes not 200: %v", p.URL, round, bad)
			}
		}
	}
}
