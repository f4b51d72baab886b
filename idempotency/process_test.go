package idempotency_test

import (
	"bufio"
	"bytes"
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
	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/idempotency"
)

// helperEnv makes the test binary serve the middleware over HTTP instead of
// running tests, so a test can start several real API processes on one Redis.
const helperEnv = "IDEMPOTENCY_TEST_HELPER_REDIS_ADDR"

func TestMain(m *testing.M) {
	if addr := os.Getenv(helperEnv); addr != "" {
		os.Exit(serveHelper(addr))
	}
	os.Exit(m.Run())
}

// serveHelper is one API process. Its handler counts executions in Redis and
// then waits for the test to open a gate (BLPOP), so duplicates overlap with
// the running request deterministically.
func serveHelper(addr string) int {
	rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	store, err := idempotency.NewStore(rdb, idempotency.StoreConfig{Namespace: "http"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	mw, err := idempotency.Middleware(store, testPrincipal)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.POST("/tips/quick", func(c echo.Context) error {
		ctx := c.Request().Context()
		body, _ := io.ReadAll(c.Request().Body)
		n, err := rdb.Incr(ctx, "test:runs:"+string(body)).Result()
		if err != nil {
			return err
		}
		if err := rdb.BLPop(ctx, 10*time.Second, "test:gate:"+string(body)).Err(); err != nil {
			return err
		}
		return c.JSON(http.StatusOK, map[string]any{"pid": os.Getpid(), "run": n})
	}, mw)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(ln.Addr().String())
	go func() { // the parent closes stdin (or dies): exit
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	_ = http.Serve(ln, e)
	return 0
}

func startHelper(t *testing.T, redisAddr string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+redisAddr)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("helper did not start: %v\n%s", err, stderr.String())
	}
	return "http://" + strings.TrimSpace(line)
}

// Two API processes share one Redis: identical requests spread over both run
// once per key; every other caller gets 409 or the replay, from either process.
func TestMiddlewareTwoProcessesShareOneRedis(t *testing.T) {
	t.Parallel()
	b := setupStore(t, idempotency.StoreConfig{})
	apis := []string{startHelper(t, b.srv.Addr()), startHelper(t, b.srv.Addr())}
	const keys, perKey = 5, 20
	type result struct {
		key int
		rep reply
	}
	results := make(chan result, keys*perKey)
	var wg sync.WaitGroup
	for k := 0; k < keys; k++ {
		for i := 0; i < perKey; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rep, err := doHTTP(context.Background(), apis[i%2], req{keys: key(fmt.Sprint("key-", k)), body: fmt.Sprint("tip-", k)})
				if err != nil {
					t.Error(err)
				}
				results <- result{k, rep}
			}()
		}
	}
	// While the holders wait at their gates, every duplicate is answered.
	conflicts := 0
	for conflicts < keys*(perKey-1) {
		r := <-results
		if r.rep.status != http.StatusConflict {
			t.Fatalf("key %d: %d %s while the holder runs", r.key, r.rep.status, r.rep.body)
		}
		conflicts++
	}
	for k := 0; k < keys; k++ {
		b.rdb.LPush(context.Background(), fmt.Sprint("test:gate:tip-", k), 1)
	}
	wg.Wait()
	close(results)
	firsts := map[int][]byte{}
	for r := range results {
		if r.rep.status != http.StatusOK || r.rep.replayed() {
			t.Fatalf("holder of key %d: %d replayed=%v", r.key, r.rep.status, r.rep.replayed())
		}
		firsts[r.key] = r.rep.body
	}
	for k := 0; k < keys; k++ {
		if runs := b.rdb.Get(context.Background(), fmt.Sprint("test:runs:tip-", k)).Val(); runs != "1" {
			t.Fatalf("key %d ran %s times", k, runs)
		}
		for _, api := range apis { // both processes replay the one result
			rep, err := doHTTP(context.Background(), api, req{keys: key(fmt.Sprint("key-", k)), body: fmt.Sprint("tip-", k)})
			if err != nil || !rep.replayed() || !bytes.Equal(rep.body, firsts[k]) {
				t.Fatalf("key %d via %s: %d %s %v", k, api, rep.status, rep.body, err)
			}
		}
	}
}
