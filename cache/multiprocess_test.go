package cache

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// The multi-process proof re-executes this test binary as helper processes
// (separate OS processes, each its own Cache and connection pool) that all
// call GetOrCompute on one cold key against one redis-server.

const helperEnv = "JOBWORKER_CACHE_TEST_HELPER"

type helperSpec struct {
	Addr       string
	Key        string
	Counter    string // Redis key each computation INCRs
	Callers    int
	Hang       bool // the computation never returns: the process is to be killed
	LockTTL    time.Duration
	WaitBudget time.Duration
	// The computation holds until Total callers (over all processes) wait:
	// each process adds its callers to Arrived once all of them wait, the
	// last process pushes a token on Release, and the computation pops it
	// (BLPOP).
	Arrived, Release string
	Total            int
}

// helperReport is one process's view. Lag is how long a caller that did
// not compute returned after the value was computed (its computation time
// is in the value).
type helperReport struct {
	Outcomes map[Outcome]int
	Values   map[string]int
	Errors   []string
	Waiters  int
	LagP50   time.Duration
	LagP99   time.Duration
	LagMax   time.Duration
}

// helperMain runs in the child: READY, wait for a line on stdin, run the
// callers, print RESULT <json>.
func helperMain() int {
	var spec helperSpec
	if err := json.Unmarshal([]byte(os.Getenv(helperEnv)), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "bad spec:", err)
		return 2
	}
	rdb := redis.NewClient(&redis.Options{Addr: spec.Addr, MaxRetries: -1, PoolSize: 32})
	defer rdb.Close()
	ctx := context.Background()

	var mu sync.Mutex
	var arriveErrs []string
	var waiting atomic.Int32
	// arrive counts one caller in as waiting; once all of this process's
	// callers wait, it adds them to the shared count, and the last process
	// releases the computation.
	arrive := func() {
		if waiting.Add(1) != int32(spec.Callers) {
			return
		}
		err := func() error {
			var n *redis.IntCmd
			if _, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
				n = p.IncrBy(ctx, spec.Arrived, int64(spec.Callers))
				p.Expire(ctx, spec.Arrived, time.Minute)
				return nil
			}); err != nil || n.Val() != int64(spec.Total) {
				return err
			}
			_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.RPush(ctx, spec.Release, "go")
				p.Expire(ctx, spec.Release, time.Minute)
				return nil
			})
			return err
		}()
		if err != nil {
			mu.Lock()
			arriveErrs = append(arriveErrs, "arrive: "+err.Error())
			mu.Unlock()
		}
	}
	// A caller waits either on its process's flight (hooks.joined) or, as
	// that flight's leader, on the Redis lock; the leader arrives on its
	// first read of the lock, whether it finds it held or takes it.
	var leaderIn atomic.Bool
	obs := &observedRedis{Redis: rdb, afterScript: func(sha string, _ []string, _ *redis.Cmd) {
		if sha == readOrLockScript.Hash() && !spec.Hang && leaderIn.CompareAndSwap(false, true) {
			arrive()
		}
	}}
	// RedisTimeout is generous: these processes share two cores with the
	// other -race tests, and this test is about the lock, not timeouts.
	c, err := New(obs, Config{LockTTL: spec.LockTTL, WaitBudget: spec.WaitBudget, RedisTimeout: 2 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if !spec.Hang {
		c.hooks.joined = arrive
	}
	if err := rdb.Ping(ctx).Err(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var out sync.Mutex
	say := func(s string) { out.Lock(); fmt.Println(s); out.Unlock() }
	say("READY")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return 2
	}
	compute := func(ctx context.Context) (string, error) {
		var n *redis.IntCmd
		if _, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			n = p.Incr(ctx, spec.Counter)
			p.Expire(ctx, spec.Counter, time.Minute)
			return nil
		}); err != nil {
			return "", err
		}
		if spec.Hang {
			say("COMPUTING")
			select {}
		}
		if err := rdb.BLPop(ctx, 20*time.Second, spec.Release).Err(); err != nil {
			return "", fmt.Errorf("waiting for all callers: %w", err)
		}
		return fmt.Sprintf("pid%d-computation%d-at%d", os.Getpid(), n.Val(), time.Now().UnixNano()), nil
	}
	type call struct {
		o    Outcome
		v    string
		err  error
		done time.Time
	}
	calls := make([]call, spec.Callers)
	var wg sync.WaitGroup
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var o Outcome
			v, err := GetOrCompute(ctx, c, spec.Key, time.Minute, compute, WithOutcome(&o))
			calls[i] = call{o, v, err, time.Now()}
		}()
	}
	wg.Wait()
	rep := helperReport{Outcomes: map[Outcome]int{}, Values: map[string]int{}, Errors: arriveErrs}
	var lags []time.Duration
	for _, cl := range calls {
		rep.Outcomes[cl.o]++
		rep.Values[cl.v]++
		if cl.err != nil {
			rep.Errors = append(rep.Errors, cl.err.Error())
			continue
		}
		_, at, _ := strings.Cut(cl.v, "-at")
		if ns, err := strconv.ParseInt(at, 10, 64); err == nil && cl.o != OutcomeMissComputed {
			lags = append(lags, cl.done.Sub(time.Unix(0, ns)))
		}
	}
	if len(lags) > 0 {
		slices.Sort(lags)
		rep.Waiters = len(lags)
		rep.LagP50 = lags[len(lags)/2]
		rep.LagP99 = lags[(len(lags)*99)/100]
		rep.LagMax = lags[len(lags)-1]
	}
	b, _ := json.Marshal(rep)
	say("RESULT " + string(b))
	return 0
}

type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
}

func startChild(t *testing.T, spec helperSpec) *child {
	t.Helper()
	b, _ := json.Marshal(spec)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(b))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ch := &child{cmd: cmd, stdin: stdin, lines: make(chan string, 16)}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			ch.lines <- sc.Text()
		}
		close(ch.lines)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return ch
}

// expect waits for a line starting with prefix and returns the rest.
func (c *child) expect(t *testing.T, prefix string) string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				t.Fatalf("helper exited before %q", prefix)
			}
			if rest, found := strings.CutPrefix(l, prefix); found {
				return strings.TrimSpace(rest)
			}
		case <-timeout:
			t.Fatalf("no %q from helper", prefix)
		}
	}
}

func (c *child) start(t *testing.T) {
	t.Helper()
	if _, err := io.WriteString(c.stdin, "GO\n"); err != nil {
		t.Fatal(err)
	}
}

func (c *child) result(t *testing.T) helperReport {
	t.Helper()
	var rep helperReport
	if err := json.Unmarshal([]byte(c.expect(t, "RESULT")), &rep); err != nil {
		t.Fatal(err)
	}
	return rep
}

// TestStampedeProcesses: 1000 concurrent callers of one cold key in three
// processes cause exactly one computation; when the computing process is
// killed mid-computation, exactly one more.
func TestStampedeProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	t.Parallel()
	tests := []struct {
		name       string
		killHolder bool
		want       int64 // computations counted in Redis
	}{
		{name: "three live processes", want: 1},
		{name: "holder killed mid-computation", killHolder: true, want: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			rdb := srv.Client(t)
			spec := helperSpec{
				// The budget outlasts any wait for the callers to arrive on a
				// loaded machine: this test is about the lock, not the budget.
				Addr: srv.Addr(), Key: "status:{42}", Counter: "test:computations",
				LockTTL: 2 * time.Second, WaitBudget: 15 * time.Second,
				Arrived: "test:arrived", Release: "test:release", Total: 1000,
			}
			if tt.killHolder {
				// A short lock so the test does not wait long for the dead
				// holder's lock to expire; the budget stays above it.
				spec.LockTTL = 300 * time.Millisecond
				hs := spec
				hs.Hang, hs.Callers = true, 334
				holder := startChild(t, hs)
				holder.expect(t, "READY")
				holder.start(t)
				holder.expect(t, "COMPUTING")
				spec.Callers, spec.Total = 333, 666 // the survivors release the takeover
				others := []*child{startChild(t, spec), startChild(t, spec)}
				for _, c := range others {
					c.expect(t, "READY")
				}
				for _, c := range others {
					c.start(t)
				}
				killed := time.Now()
				if err := holder.cmd.Process.Kill(); err != nil {
					t.Fatal(err)
				}
				total, values := collect(t, others...)
				t.Logf("after the kill: %v, values %v, recovered in %v", total, values, time.Since(killed))
				if len(values) != 1 || total[OutcomeMissComputed] != 1 || total[OutcomeWaitedHit] != 665 {
					t.Fatalf("survivors: outcomes %v, values %v", total, values)
				}
			} else {
				var cs []*child
				for _, n := range []int{334, 333, 333} {
					s := spec
					s.Callers = n
					cs = append(cs, startChild(t, s))
				}
				for _, c := range cs {
					c.expect(t, "READY")
				}
				for _, c := range cs {
					c.start(t)
				}
				total, values := collect(t, cs...)
				// Every caller waited: the computation held until all had.
				if len(values) != 1 || total[OutcomeMissComputed] != 1 || total[OutcomeWaitedHit] != 999 {
					t.Fatalf("outcomes %v, values %v", total, values)
				}
			}
			n, err := rdb.Get(context.Background(), spec.Counter).Int64()
			if err != nil || n != tt.want {
				t.Fatalf("computations = %d (%v), want %d", n, err, tt.want)
			}
			assertAllKeysHaveTTL(t, rdb)
		})
	}
}

// collect gathers the children's reports: summed outcomes and the distinct
// values returned.
func collect(t *testing.T, cs ...*child) (map[Outcome]int, map[string]int) {
	t.Helper()
	total, values := map[Outcome]int{}, map[string]int{}
	for i, c := range cs {
		rep := c.result(t)
		if len(rep.Errors) > 0 {
			t.Fatalf("process %d: %d errors, first %s", i, len(rep.Errors), rep.Errors[0])
		}
		for o, n := range rep.Outcomes {
			total[o] += n
		}
		for v, n := range rep.Values {
			values[v] += n
		}
		t.Logf("process %d: outcomes %v; %d waiters, lag behind the value p50 %v p99 %v max %v",
			i, rep.Outcomes, rep.Waiters, rep.LagP50, rep.LagP99, rep.LagMax)
	}
	return total, values
}
