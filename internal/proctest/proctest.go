// Package proctest builds and runs the project's binaries as real processes
// in tests: start with an environment, wait until healthy, signal, and read
// what they printed.
package proctest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/freeport"
)

var (
	buildMu sync.Mutex
	built   = map[string]string{}
)

// Build compiles the main package at pkg (an import path or ./dir) once per
// test binary and returns the executable's path.
func Build(tb testing.TB, pkg string) string {
	tb.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[pkg]; ok {
		return p
	}
	dir, err := os.MkdirTemp("", "proctest-")
	if err != nil {
		tb.Fatal(err)
	}
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("proctest: go build %s: %v\n%s", pkg, err, b)
	}
	built[pkg] = out
	return out
}

// Proc is a running binary.
type Proc struct {
	Cmd  *exec.Cmd
	Port int
	URL  string // http://127.0.0.1:port
	// MetricsURL is http://127.0.0.1:<METRICS_ADDR's port>, where the
	// binaries serve /metrics; "" when env turned it off.
	MetricsURL string

	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	err  error
}

// Start runs bin with args and env (KEY=VALUE, added to a minimal
// environment), and kills it when the test ends. PORT is taken from env when
// given there, else set to a free port; so is METRICS_ADDR (see MetricsURL).
// It does not wait for readiness; see WaitHealthy.
func Start(tb testing.TB, bin string, args []string, env ...string) *Proc {
	tb.Helper()
	port := 0
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PORT="); ok {
			port, _ = strconv.Atoi(v)
		}
	}
	if port == 0 {
		port = FreePort(tb)
		env = append(env, "PORT="+strconv.Itoa(port))
	}
	metricsAddr, given := "", false
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "METRICS_ADDR="); ok {
			metricsAddr, given = v, true
		}
	}
	if !given {
		// Never the binaries' default: parallel tests would share it.
		metricsAddr = "127.0.0.1:" + strconv.Itoa(FreePort(tb))
		env = append(env, "METRICS_ADDR="+metricsAddr)
	}
	p := &Proc{Port: port, URL: "http://127.0.0.1:" + strconv.Itoa(port), done: make(chan struct{})}
	if _, mport, err := net.SplitHostPort(metricsAddr); err == nil {
		p.MetricsURL = "http://127.0.0.1:" + mport
	}
	p.Cmd = exec.Command(bin, args...)
	p.Cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	w := writerFunc(func(b []byte) (int, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.out.Write(b)
	})
	p.Cmd.Stdout, p.Cmd.Stderr = w, w
	if err := p.Cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() { p.err = p.Cmd.Wait(); close(p.done) }()
	tb.Cleanup(func() {
		_ = p.Cmd.Process.Kill()
		<-p.done
		if tb.Failed() {
			tb.Logf("%s output:\n%s", filepath.Base(bin), p.Output())
		}
	})
	return p
}

// Output is everything the process printed so far.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// WaitHealthy polls GET /healthz until it answers 200.
func (p *Proc) WaitHealthy(tb testing.TB) {
	tb.Helper()
	p.WaitStatus(tb, "/healthz", http.StatusOK, 15*time.Second)
}

// WaitStatus polls GET path until it answers want, or fails the test.
func (p *Proc) WaitStatus(tb testing.TB, path string, want int, within time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(within)
	last := "no answer"
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			tb.Fatalf("proctest: process exited (%v) while waiting for %s %d:\n%s", p.err, path, want, p.Output())
		default:
		}
		res, err := http.Get(p.URL + path)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == want {
				return
			}
			last = res.Status
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Fatalf("proctest: %s never answered %d (last: %s)", path, want, last)
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error { return p.Cmd.Process.Signal(sig) }

// Wait waits for the process to exit and returns its exit code.
func (p *Proc) Wait(tb testing.TB, within time.Duration) int {
	tb.Helper()
	select {
	case <-p.done:
	case <-time.After(within):
		tb.Fatalf("proctest: process still running after %s", within)
	}
	if p.err == nil {
		return 0
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	tb.Fatalf("proctest: wait: %v", p.err)
	return -1
}

// Run executes bin with args to completion, with env, and returns its exit
// code and combined output (for start-up failures and one-shot modes).
func Run(tb testing.TB, within time.Duration, bin string, args []string, env ...string) (int, string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	out, err := cmd.CombinedOutput()
	if err == nil {
		return 0, string(out)
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	}
	tb.Fatalf("proctest: run %s: %v", bin, err)
	return -1, ""
}

// FreePort returns a loopback TCP port that is free now, for a process to
// listen on (see package freeport: not one an outgoing connection can take
// before the process binds it).
func FreePort(tb testing.TB) int {
	tb.Helper()
	p, err := freeport.Pick()
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// GetJSON GETs url with a bearer token and decodes the 200 answer's JSON
// into v; any other answer fails the test.
func GetJSON(tb testing.TB, url, token string, v any) {
	tb.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		tb.Fatalf("GET %s: %d %s", url, res.StatusCode, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		tb.Fatalf("GET %s: %v", url, err)
	}
}
