package keyscan_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/keyscan"
	"github.com/digis/jobworker/internal/redistest"
)

// TestMain doubles as the PING loop's process: with KEYSCAN_PINGER=addr
// the test binary PINGs addr until its stdin closes, then prints every
// round-trip time in microseconds. A process of its own keeps the scan's
// garbage collection and goroutines out of the PING times.
// KEYSCAN_PING_EVERY (a duration) spaces the PINGs, as redis-cli
// --latency does; without it they go back to back.
func TestMain(m *testing.M) {
	if addr := os.Getenv("KEYSCAN_PINGER"); addr != "" {
		every, _ := time.ParseDuration(os.Getenv("KEYSCAN_PING_EVERY"))
		os.Exit(pinger(addr, every))
	}
	os.Exit(m.Run())
}

func pinger(addr string, every time.Duration) int {
	c := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 1, MaxRetries: -1, ReadTimeout: 5 * time.Second})
	ctx := context.Background()
	if err := c.Ping(ctx).Err(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready")
	var stop atomic.Bool
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); stop.Store(true) }()
	var rtts []int64
	next := time.Now()
	for !stop.Load() {
		if every > 0 {
			next = next.Add(every)
			time.Sleep(time.Until(next)) // the pacing is the scenario
		}
		start := time.Now()
		if err := c.Ping(ctx).Err(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		rtts = append(rtts, time.Since(start).Microseconds())
	}
	w := bufio.NewWriter(os.Stdout)
	for _, r := range rtts {
		fmt.Fprintln(w, r)
	}
	_ = w.Flush()
	return 0
}

// pingLoop starts the PING loop process against addr, a PING every
// interval (0: back to back); the function it returns stops it and
// returns the round-trip times, sorted.
func pingLoop(t testing.TB, addr string, every time.Duration) func() []time.Duration {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "KEYSCAN_PINGER="+addr, "KEYSCAN_PING_EVERY="+every.String(), "GOMAXPROCS=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "ready" {
		t.Fatalf("pinger did not start: %q", sc.Text())
	}
	return func() []time.Duration {
		_ = stdin.Close()
		var rtts []time.Duration
		for sc.Scan() {
			us, err := strconv.ParseInt(sc.Text(), 10, 64)
			if err != nil {
				t.Fatalf("pinger output %q", sc.Text())
			}
			rtts = append(rtts, time.Duration(us)*time.Microsecond)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("pinger: %v", err)
		}
		slices.Sort(rtts)
		return rtts
	}
}

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[min(len(d)-1, int(float64(len(d))*q))]
}

// large fills a private server with 500k keys over three prefixes, a
// fifth of them with a TTL. Its slow log records every command over 200 µs.
func large(t testing.TB) (*redistest.Server, *redis.Client) {
	srv := redistest.Start(t, redistest.Args("--slowlog-log-slower-than", "200", "--slowlog-max-len", "100000"))
	rdb := srv.Client(t)
	fill(t, rdb, "jw:rl:strict:", 100_000, 16, time.Hour)
	fill(t, rdb, "jw:idem:http:", 250_000, 64, 0)
	fill(t, rdb, "jw:cache:status:", 150_000, 32, 0)
	if err := rdb.SlowLogReset(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	return srv, rdb
}

// slowest empties the slow log and returns its longest command: how long
// Redis itself was busy with one command, whatever the machine's
// scheduling did to the PING loop.
func slowest(t testing.TB, rdb *redis.Client) (time.Duration, string) {
	t.Helper()
	ctx := context.Background()
	logs, err := rdb.SlowLogGet(ctx, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	_ = rdb.SlowLogReset(ctx).Err()
	var worst time.Duration
	name := ""
	for _, l := range logs {
		if l.Duration > worst && len(l.Args) > 0 {
			worst, name = l.Duration, fmt.Sprint(l.Args[0])
		}
	}
	return worst, name
}

// TestScanLargeKeyspace: 500k keys counted exactly per prefix while a PING
// loop runs in another process; the PING times are logged (measured, not
// asserted: see BenchmarkScanUnderPing and docs/benchmarks.md).
func TestScanLargeKeyspace(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 500k keys")
	}
	t.Parallel()
	srv, rdb := large(t)
	rtts := pingLoop(t, srv.Addr(), time.Millisecond)
	rep, err := keyscan.Scan(context.Background(), rdb, keyscan.Options{MaxKeys: -1, Pause: keyscan.DefaultPause})
	got := rtts()
	if err != nil {
		t.Fatal(err)
	}
	ps := byPrefix(rep)
	if rep.Keys != 500_000 || ps["jw:rl:strict:"].Keys != 100_000 || ps["jw:rl:strict:"].NoTTL != 0 ||
		ps["jw:idem:http:"].Keys != 250_000 || ps["jw:cache:status:"].Keys != 150_000 || ps["jw:cache:status:"].NoTTL != 150_000 {
		t.Errorf("counts: %d keys, %+v", rep.Keys, rep.Prefixes)
	}
	busy, cmd := slowest(t, rdb)
	t.Logf("500k keys: %d PINGs during the scan, p50 %v, p99 %v, max %v; slowest command in Redis %v (%s)",
		len(got), quantile(got, 0.5), quantile(got, 0.99), got[len(got)-1], busy, cmd)
}

// BenchmarkScanUnderPing measures the slowest PING another client sees while
// 500k keys are walked: keyscan.Scan (SCAN COUNT 500 plus pipelined
// TYPE/PTTL/MEMORY USAGE) back to back and with DefaultPause between round
// trips, against KEYS * and against an idle server, in the same run (the
// machine's own scheduling noise shows in the idle case). The PING loop
// runs twice: a PING every millisecond (as redis-cli --latency, which
// waits 10 ms between PINGs; a server stall longer than a millisecond
// meets one), and back to back (a client that itself keeps a core busy,
// so three busy processes share the two cores).
//
//	go test ./internal/keyscan -run '^$' -bench ScanUnderPing -benchtime 3x
func BenchmarkScanUnderPing(b *testing.B) {
	srv, rdb := large(b)
	ctx := context.Background()
	scan := func(pause time.Duration) func() error {
		return func() error {
			_, err := keyscan.Scan(ctx, rdb, keyscan.Options{MaxKeys: -1, Pause: pause})
			return err
		}
	}
	for _, pl := range []struct {
		name  string
		every time.Duration
	}{{"ping-1ms", time.Millisecond}, {"ping-b2b", 0}} {
		for _, bc := range []struct {
			name string
			walk func() error
		}{
			{name: "keyscan", walk: scan(0)},
			{name: "keyscan-pause", walk: scan(keyscan.DefaultPause)},
			{name: "KEYS", walk: func() error { return rdb.Keys(ctx, "*").Err() }},
			// The baseline: the same PING loop with nothing else talking to
			// Redis, for about as long as a scan (the sleep is the scenario).
			{name: "idle", walk: func() error { time.Sleep(4 * time.Second); return nil }},
		} {
			b.Run(pl.name+"/"+bc.name, func(b *testing.B) {
				var worst, p99, busy time.Duration
				over := 0
				for b.Loop() {
					rtts := pingLoop(b, srv.Addr(), pl.every)
					if err := bc.walk(); err != nil {
						b.Fatal(err)
					}
					got := rtts()
					worst = max(worst, got[len(got)-1])
					p99 = max(p99, quantile(got, 0.99))
					over += len(got) - sort.Search(len(got), func(i int) bool { return got[i] > 10*time.Millisecond })
					d, _ := slowest(b, rdb)
					busy = max(busy, d)
				}
				b.ReportMetric(float64(busy.Microseconds())/1000, "redis-busy-max-ms")
				b.ReportMetric(float64(worst.Microseconds())/1000, "ping-max-ms")
				b.ReportMetric(float64(p99.Microseconds())/1000, "ping-p99-ms")
				b.ReportMetric(float64(over), "pings-over-10ms")
			})
		}
	}
}
