package control_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/testwait"
	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/jobs/control"
	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/qstashdev/qstashdevtest"
)

func TestMain(m *testing.M) {
	// qstash-go lets QSTASH_URL override its Url option; tests talk to
	// their own server.
	os.Unsetenv("QSTASH_URL")
	os.Exit(m.Run())
}

// ping is the job of these tests; a worker answers it with w.answer.
type ping struct {
	N int `json:"n"`
}

func (ping) Kind() string { return "test.ping" }

type other struct{}

func (other) Kind() string { return "test.other" }

// env is qstashdev, a worker that records deliveries and answers as told,
// an enqueue client and a control client.
type env struct {
	qs      *qstashdevtest.Server
	jobs    *jobs.Client
	ctl     *control.Client
	worker  *httptest.Server
	mu      sync.Mutex
	answers map[string]int // job name -> the worker's answer (default 200); 489 adds the non-retryable header
	runs    map[string]int // job name -> deliveries answered 2xx
	bodies  []string
}

func setup(t *testing.T) *env {
	t.Helper()
	e := &env{answers: map[string]int{}, runs: map[string]int{}}
	e.qs = qstashdevtest.Start(t, qstashdev.Config{TimeScale: 0.001})
	e.worker = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		job := strings.TrimPrefix(r.URL.Path, jobs.PathPrefix)
		e.mu.Lock()
		status, ok := e.answers[job]
		if !ok {
			status = http.StatusOK
		}
		if status < 300 {
			e.runs[job]++
			e.bodies = append(e.bodies, string(body))
		}
		e.mu.Unlock()
		if status == jobs.StatusNonRetryable {
			w.Header().Set(jobs.HeaderNonRetryable, "true")
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, "answer "+strconv.Itoa(status))
	}))
	t.Cleanup(e.worker.Close)
	var err error
	e.jobs, err = jobs.NewClient(jobs.ClientConfig{QStashURL: e.qs.URL, Token: qstashdev.DevToken, WorkerPublicURL: e.worker.URL})
	if err != nil {
		t.Fatal(err)
	}
	e.ctl = e.control(t, control.Config{})
	return e
}

// control returns a control client for e's QStash and worker; cfg's zero
// fields are filled in.
func (e *env) control(t *testing.T, cfg control.Config) *control.Client {
	t.Helper()
	if cfg.QStashURL == "" {
		cfg.QStashURL = e.qs.URL
	}
	if cfg.Token == "" {
		cfg.Token = qstashdev.DevToken
	}
	if cfg.WorkerPublicURL == "" {
		cfg.WorkerPublicURL = e.worker.URL
	}
	c, err := control.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// answer sets the worker's answer to job's deliveries.
func (e *env) answer(job string, status int) {
	e.mu.Lock()
	e.answers[job] = status
	e.mu.Unlock()
}

func (e *env) ran(job string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.runs[job]
}

func (e *env) enqueue(t *testing.T, args jobs.Args, opts ...jobs.EnqueueOption) string {
	t.Helper()
	res, err := e.jobs.Enqueue(context.Background(), args, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return res.MessageID
}

// deadLetters waits until the DLQ holds n entries of job and returns them.
func (e *env) deadLetters(t *testing.T, job string, n int) []control.DLQEntry {
	t.Helper()
	var got []control.DLQEntry
	testwait.For(t, 10*time.Second, "dead letters", func() bool {
		page, err := e.ctl.DLQ(context.Background(), control.DLQFilter{Job: job}, control.Page{})
		if err != nil {
			t.Fatal(err)
		}
		got = page.Entries
		return len(got) == n
	})
	return got
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
