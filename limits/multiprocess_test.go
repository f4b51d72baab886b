package limits

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/redistest"
)

// helperEnv selects the helper mode of the test binary: TestMain runs
// helperMain instead of the tests (the TestHelperProcess pattern).
const helperEnv = "JOBWORKER_LIMITS_HELPER"

const (
	mpLimit      = 20
	mpPeriod     = time.Second
	mpProcesses  = 3
	mpGoroutines = 4
	mpRun        = 2500 * time.Millisecond
)

// TestProcessesNeverExceedLimitPerWindow runs three OS processes, each with
// its own Limiter and several goroutines, hammering one bucket and identifier
// on one redis-server, and checks the bound the algorithm promises:
//   - per window at most Limit admissions (all processes together);
//   - in any interval of one Period at most 2×Limit.
//
// Each admission reports its window's end and the Redis server time of the
// decision, so windows are told apart by the server's clock alone.
//
// It runs twice: every admission asking Redis, and with leases (each
// process takes requests ahead and admits them from memory), which must
// keep the same bound.
func TestProcessesNeverExceedLimitPerWindow(t *testing.T) {
	t.Parallel()
	for _, lease := range []int{0, 4} {
		t.Run("lease="+strconv.Itoa(lease), func(t *testing.T) {
			t.Parallel()
			processesNeverExceedLimit(t, lease)
		})
	}
}

func processesNeverExceedLimit(t *testing.T, lease int) {
	srv := redistest.Start(t)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		outs [][]byte
	)
	for i := 0; i < mpProcesses; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"=1", "REDIS_ADDR="+srv.Addr(), "LEASE="+strconv.Itoa(lease))
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := cmd.Wait()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Errorf("helper process: %v\n%s", err, stderr.Bytes())
			}
			outs = append(outs, stdout.Bytes())
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	type admission struct{ reset, at int64 } // Unix ms, server clock
	var adm []admission
	perProcess := make([]int, 0, mpProcesses)
	local := 0         // admissions from a lease
	var attempts []int // per process
	for _, out := range outs {
		n := 0
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 3 && f[0] == "L" {
				l, _ := strconv.Atoi(f[1])
				a, _ := strconv.Atoi(f[2])
				local += l
				attempts = append(attempts, a)
				continue
			}
			if len(f) != 3 || f[0] != "A" {
				t.Fatalf("helper line %q", sc.Text())
			}
			r, _ := strconv.ParseInt(f[1], 10, 64)
			a, _ := strconv.ParseInt(f[2], 10, 64)
			adm = append(adm, admission{r, a})
			n++
		}
		perProcess = append(perProcess, n)
	}

	// Per window: admissions of one window share its end (to within the
	// millisecond rounding of TIME vs PTTL); windows are ≥ one period apart.
	sort.Slice(adm, func(i, j int) bool { return adm[i].reset < adm[j].reset })
	var windows []int
	for i, a := range adm {
		if i == 0 || a.reset-adm[i-1].reset > mpPeriod.Milliseconds()/2 {
			windows = append(windows, 0)
		}
		windows[len(windows)-1]++
	}
	full := 0
	for i, n := range windows {
		if n > mpLimit {
			t.Errorf("window %d admitted %d requests, limit %d", i, n, mpLimit)
		}
		if n == mpLimit {
			full++
		}
	}
	// Sliding: any interval of one period holds at most 2×limit.
	sort.Slice(adm, func(i, j int) bool { return adm[i].at < adm[j].at })
	worst := 0
	for i, j := 0, 0; i < len(adm); i++ {
		for j < len(adm) && adm[j].at < adm[i].at+mpPeriod.Milliseconds() {
			j++
		}
		worst = max(worst, j-i)
	}
	if worst > 2*mpLimit {
		t.Errorf("%d admissions within one period, bound is %d", worst, 2*mpLimit)
	}
	// The test only proves something if the processes really competed.
	if full < 2 {
		t.Errorf("only %d of %d windows were filled; processes did not contend (per process %v)", full, len(windows), perProcess)
	}
	// Every process must have run and asked, and at least two must have got
	// in. (On a loaded machine one process can lose every race at the start
	// of a window; its refused attempts still competed.)
	in := 0
	for _, n := range perProcess {
		if n > 0 {
			in++
		}
	}
	if in < 2 || len(attempts) != mpProcesses || slices.Contains(attempts, 0) {
		t.Errorf("processes did not compete: admissions %v, attempts %v", perProcess, attempts)
	}
	if lease > 0 && local == 0 {
		t.Error("no admission came from a lease: the lease variant proved nothing")
	}
	t.Logf("windows %v, admissions per process %v of %v attempts (%d from leases), worst sliding period %d",
		windows, perProcess, attempts, local, worst)
}

// helperMain is one hammering process. It prints "A <resetMs> <serverNowMs>"
// per admission and, last, "L <local> <attempts>": how many admissions came
// from a lease, and how many decisions it asked for.
func helperMain() int {
	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv("REDIS_ADDR"), ContextTimeoutEnabled: true, PoolSize: mpGoroutines})
	defer rdb.Close()
	cfg := Config{
		Client:         rdb,
		HashKey:        testHashKey,
		Overrides:      map[string]Quota{DefaultBucket: {Limit: mpLimit, Period: mpPeriod}},
		Timeout:        2 * time.Second, // a degraded decision would not prove anything here
		LocalCacheSize: -1,              // every attempt goes to Redis: maximum contention
	}
	if lease, _ := strconv.Atoi(os.Getenv("LEASE")); lease > 0 {
		cfg.Leases = map[string]int{DefaultBucket: lease}
		cfg.LocalCacheSize = 0 // leases live in the local cache
	}
	l, err := New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		out   = bufio.NewWriter(os.Stdout)
		fail  error
		local int
		tries int
	)
	deadline := time.Now().Add(mpRun)
	for g := 0; g < mpGoroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				res, err := l.Allow(context.Background(), DefaultBucket, "ip:192.0.2.1")
				if err == nil && (res.Reason.Degraded() || res.Reason == ReasonOverloaded) {
					err = res.Err
				}
				mu.Lock()
				tries++
				if err != nil {
					fail = err
				} else if res.Allowed {
					fmt.Fprintf(out, "A %d %d\n", res.Reset.UnixMilli(), res.Reset.Add(-res.ResetAfter).UnixMilli())
					if res.Reason == ReasonAllowedLocally {
						local++
					}
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	fmt.Fprintf(out, "L %d %d\n", local, tries)
	_ = out.Flush()
	if fail != nil {
		fmt.Fprintln(os.Stderr, fail)
		return 1
	}
	return 0
}
