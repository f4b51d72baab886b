package deploy_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/freeport"
	"github.com/digis/jobworker/internal/pgtest"
	"github.com/digis/jobworker/internal/redistest"
	"github.com/digis/jobworker/internal/store"
)

// TestColdStart measures what a serverless platform pays per new instance:
// process exec → first /readyz 200 (Redis answered), idle RSS after 1 s, and
// binary size, for the static api and worker against a baseline built in the
// same run (a static Go "hello" HTTP server: exec → first 200). Opt-in:
//
//	JOBWORKER_BENCH_COLDSTART=1 go test -run TestColdStart -v -count=1 ./deploy/
//
// Goals (issue 10): exec → ready ≤ 50 ms, idle RSS ≤ 30 MB.
func TestColdStart(t *testing.T) {
	if os.Getenv("JOBWORKER_BENCH_COLDSTART") != "1" {
		t.Skip("set JOBWORKER_BENCH_COLDSTART=1 to measure cold start")
	}
	runs := 20
	if n, err := strconv.Atoi(os.Getenv("JOBWORKER_BENCH_COLDSTART_RUNS")); err == nil && n > 0 {
		runs = n
	}
	gb := findGoBuild(t, parseDockerfile(t, "Dockerfile"))
	bins := buildStatic(t, gb)
	hello := filepath.Join(t.TempDir(), "hello")
	build := exec.Command("go", append(append([]string{"build"}, gb.flags...), "-o", hello, "./deploy/testdata/hello")...)
	build.Dir = repoRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build hello: %v\n%s", err, out)
	}
	rs := redistest.Start(t)
	// A real, migrated PostgreSQL: readiness pings it, as in production.
	db := pgtest.Create(t)
	if err := store.Migrate(context.Background(), db.Pool); err != nil {
		t.Fatal(err)
	}
	targets := []struct {
		name, bin string
		env       []string
	}{
		{"hello (baseline)", hello, nil},
		{"api", bins["api"], []string{
			"REDIS_URL=" + rs.URL(), "QSTASH_URL=http://127.0.0.1:1", "QSTASH_TOKEN=bench-token",
			"WORKER_PUBLIC_URL=http://127.0.0.1:2", "LOG_LEVEL=warn", "DATABASE_URL=" + db.URL,
			"AUTH_JWT_SECRET=bench-secret-bench-secret-bench-secret", "RATE_LIMIT_IP_SOURCE=direct", "METRICS_ADDR=off",
		}},
		{"worker", bins["worker"], []string{
			"REDIS_URL=" + rs.URL(), "WORKER_PUBLIC_URL=http://127.0.0.1:2", "LOG_LEVEL=warn",
			"QSTASH_CURRENT_SIGNING_KEY=sig_bench_current", "QSTASH_NEXT_SIGNING_KEY=sig_bench_next",
			"STRIPE_WEBHOOK_SECRET=whsec_bench", "QSTASH_URL=http://127.0.0.1:1", "QSTASH_TOKEN=bench-token",
			"DATABASE_URL=" + db.URL, "METRICS_ADDR=off",
		}},
	}
	client := &http.Client{
		Timeout:   200 * time.Millisecond,
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
	}
	var base time.Duration
	var lines []string
	for _, tg := range targets {
		var ready []time.Duration
		var rss []int
		for i := range runs {
			d, kb := startOnce(t, client, tg.bin, tg.env, i < 3)
			ready = append(ready, d)
			if kb > 0 {
				rss = append(rss, kb)
			}
		}
		sort.Slice(ready, func(i, j int) bool { return ready[i] < ready[j] })
		sort.Ints(rss)
		p50, p95, max := ready[len(ready)/2], ready[(len(ready)*95+99)/100-1], ready[len(ready)-1]
		if base == 0 {
			base = p50
		}
		fi, err := os.Stat(tg.bin)
		if err != nil {
			t.Fatal(err)
		}
		line := fmt.Sprintf("| %s | %s | %s | %s | %.1fx | %.1f MB | %.1f MiB |", tg.name, ms(p50), ms(p95), ms(max),
			float64(p50)/float64(base), float64(rss[len(rss)/2])/1000, float64(fi.Size())/(1<<20))
		lines = append(lines, line)
	}
	t.Logf("%d runs each, exec → first 200 on /readyz (baseline: any path), RSS = VmRSS after ready + 1 s idle (median of 3)\n"+
		"| binary | p50 | p95 | max | p50 / baseline | idle RSS | size |\n|---|---|---|---|---|---|---|\n%s",
		runs, strings.Join(lines, "\n"))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

// startOnce execs bin, polls GET /readyz every millisecond until it answers
// 200, optionally waits 1 s idle and reads VmRSS (kB), then stops it.
func startOnce(t *testing.T, client *http.Client, bin string, env []string, measureRSS bool) (time.Duration, int) {
	t.Helper()
	port := freePort(t)
	cmd := exec.Command(bin)
	cmd.Env = append([]string{"PORT=" + strconv.Itoa(port)}, env...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	url := "http://127.0.0.1:" + strconv.Itoa(port) + "/readyz"
	exited := make(chan error, 1)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { exited <- cmd.Wait() }()
	gone := false // the exit was already received below
	defer func() {
		if gone {
			return
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	deadline := start.Add(10 * time.Second)
	for {
		res, err := client.Get(url)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-exited:
			gone = true
			t.Fatalf("%s exited before ready: %v\n%s", bin, err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within 10 s", bin)
		}
		time.Sleep(time.Millisecond) // the resolution of the measurement
	}
	ready := time.Since(start)
	if !measureRSS {
		return ready, 0
	}
	time.Sleep(time.Second) // RSS after a second of idling, as the figure is defined
	status, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return ready, kb
		}
	}
	t.Fatal("no VmRSS in /proc/<pid>/status")
	return 0, 0
}

func freePort(t *testing.T) int {
	t.Helper()
	p, err := freeport.Pick()
	if err != nil {
		t.Fatal(err)
	}
	return p
}
