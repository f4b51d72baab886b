package redistest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/freeport"
	"github.com/digis/jobworker/internal/testwait"
)

// startTimeout bounds how long a fresh redis-server may take to answer PING.
const startTimeout = 10 * time.Second

// Server is one private redis-server process.
type Server struct {
	tb   testing.TB
	port int
	dir  string
	args []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Option adds redis-server arguments, e.g. Args("--maxmemory", "10mb").
type Option func(*[]string)

// Args appends raw redis-server command-line arguments.
func Args(args ...string) Option {
	return func(a *[]string) { *a = append(*a, args...) }
}

// Start launches a redis-server on a free loopback port and stops it when
// the test ends. It skips (or fails under CI=true) when redis-server is
// missing.
func Start(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	bin := binary(tb, "redis-server")
	var extra []string
	for _, o := range opts {
		o(&extra)
	}
	s := &Server{tb: tb, dir: tb.TempDir(), args: extra}
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		s.port, err = freeport.Pick()
		if err != nil {
			continue
		}
		if err = s.launch(bin); err == nil {
			break
		}
	}
	if err != nil {
		tb.Fatalf("redistest: start redis-server: %v", err)
	}
	tb.Cleanup(s.Kill)
	return s
}

// Addr is host:port of the server.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL is a redis:// URL for the server.
func (s *Server) URL() string { return "redis://" + s.Addr() }

// Port is the TCP port the server listens on (kept across Restart).
func (s *Server) Port() int { return s.port }

// Client returns a go-redis client for the server, closed when the test ends.
// It uses short timeouts and no retries so failure tests see errors promptly.
func (s *Server) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(&redis.Options{
		Addr:         s.Addr(),
		DialTimeout:  time.Second,
		ReadTimeout:  2 * time.Second,
		WriteTimeout: 2 * time.Second,
		MaxRetries:   -1,
	})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// Stop shuts the server down after saving its dataset, so Restart brings the
// same data back (like a production Redis with persistence). Callers see
// connection errors until Restart.
func (s *Server) Stop() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1})
	// SHUTDOWN closes the connection instead of replying; the error is expected.
	_ = c.ShutdownSave(context.Background()).Err()
	_ = c.Close()
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
}

// Kill ends the server with SIGKILL: unsaved data is lost, as in a crash.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGCONT) // a paused process cannot die otherwise
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Restart starts the server again on the same port with the data saved by
// Stop (nothing after Kill).
func (s *Server) Restart() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return
	}
	if err := s.launch(binary(s.tb, "redis-server")); err != nil {
		s.tb.Fatalf("redistest: restart redis-server: %v", err)
	}
}

// Pause freezes the process (SIGSTOP): connections stay open but nothing
// answers, which is how a hung or overloaded Redis looks to a client.
func (s *Server) Pause() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGSTOP)
	// kill returns once the signal is queued; a thread on a busy core can
	// still answer a command before it stops. Return only once every
	// thread is stopped, so nothing sent after Pause is answered.
	pid := s.cmd.Process.Pid
	testwait.For(s.tb, startTimeout, "redis-server stopped after SIGSTOP", func() bool { return stopped(pid) })
}

// stopped reports whether every thread of process pid is stopped (state T
// in /proc/<pid>/task/<tid>/stat). A process that is gone counts as
// stopped: nothing will answer.
func stopped(pid int) bool {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if err != nil || len(tasks) == 0 {
		return true
	}
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the thread exited
		}
		// The state follows the command name, which is in parentheses
		// and may itself contain ") ".
		i := bytes.LastIndexByte(b, ')')
		if i < 0 || i+2 >= len(b) {
			return false
		}
		if st := b[i+2]; st != 'T' && st != 't' {
			return false
		}
	}
	return true
}

// Resume undoes Pause.
func (s *Server) Resume() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(syscall.SIGCONT)
	}
}

func (s *Server) launch(bin string) error {
	args := append([]string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--dbfilename", "dump.rdb",
		"--save", "",
		"--appendonly", "no",
		"--protected-mode", "no",
		"--daemonize", "no",
		"--logfile", filepath.Join(s.dir, "redis.log"),
	}, s.args...)
	cmd := exec.Command(bin, args...)
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	if err := waitReady(s.Addr(), done); err != nil {
		_ = cmd.Process.Kill()
		<-done
		log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
		return fmt.Errorf("%w\nredis log:\n%s", err, tail(log, 2000))
	}
	s.cmd, s.done = cmd, done
	return nil
}

// waitReady polls PING until the server answers or the process exits.
func waitReady(addr string, exited <-chan struct{}) error {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return errors.New("redis-server exited during start-up")
		case <-time.After(10 * time.Millisecond):
		}
	}
	return fmt.Errorf("redis-server on %s did not answer PING within %s", addr, startTimeout)
}

// binary finds a Redis executable, skipping the test (or failing under CI)
// when it is missing.
func binary(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("redistest: %s not found in PATH (install Debian's redis-server and redis-tools)", name)
	if os.Getenv("CI") == "true" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
	return ""
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
