package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/redistest"
	"github.com/digis/jobworker/internal/testwait"
	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/qstashdev/qstashdevtest"
)

func TestMain(m *testing.M) {
	os.Unsetenv("QSTASH_URL") // qstash-go would prefer it to the test's server
	os.Exit(m.Run())
}

// ctl runs jobctl in process with env as its whole environment.
type ctl struct {
	env map[string]string
}

func (c *ctl) set(kv ...string) *ctl {
	n := &ctl{env: map[string]string{}}
	for k, v := range c.env {
		n.env[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		n.env[kv[i]] = kv[i+1]
	}
	return n
}

// run returns the exit code, stdout and stderr.
func (c *ctl) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	a := &app{stdout: &out, stderr: &errb, getenv: func(k string) string { return c.env[k] }}
	code := a.run(context.Background(), args)
	return code, out.String(), errb.String()
}

// json runs jobctl -json args, wants exit 0 and decodes stdout into v.
func (c *ctl) json(t *testing.T, v any, args ...string) {
	t.Helper()
	code, out, errs := c.run(t, append([]string{"-json"}, args...)...)
	if code != 0 {
		t.Fatalf("jobctl %v: exit %d\n%s%s", args, code, out, errs)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("jobctl %v: %v\n%s", args, err, out)
	}
}

func (c *ctl) want(t *testing.T, code int, args ...string) (string, string) {
	t.Helper()
	got, out, errs := c.run(t, args...)
	if got != code {
		t.Fatalf("jobctl %v: exit %d, want %d\n%s%s", args, got, code, out, errs)
	}
	return out, errs
}

// compact is raw JSON without white space.
func compact(raw json.RawMessage) string {
	var b bytes.Buffer
	_ = json.Compact(&b, raw)
	return b.String()
}

func TestUsage(t *testing.T) {
	t.Parallel()
	c := &ctl{}
	for _, args := range [][]string{nil, {"nope"}, {"dlq"}, {"dlq", "nope"}, {"keys"}, {"dlq", "retry"},
		{"dlq", "retry", "1-1", "-all"}, {"limits", "show", "tips:quick"}, {"jobs", "show"}} {
		if code, _, _ := c.run(t, args...); code != exitUsage {
			t.Errorf("jobctl %v: exit %d, want %d", args, code, exitUsage)
		}
	}
	out, _ := c.want(t, exitOK, "help")
	if !strings.Contains(out, "exit codes") {
		t.Errorf("help: %s", out)
	}
	// Missing configuration names the variable.
	for _, tt := range []struct {
		args    []string
		wantVar string
	}{
		{args: []string{"keys", "*"}, wantVar: "REDIS_URL"},
		{args: []string{"dlq", "list"}, wantVar: "QSTASH_TOKEN"},
		{args: []string{"schedules", "diff"}, wantVar: "QSTASH_TOKEN"},
		{args: []string{"outbox", "status"}, wantVar: "DATABASE_URL"},
	} {
		_, errs := c.want(t, exitConfig, tt.args...)
		if !strings.Contains(errs, tt.wantVar) {
			t.Errorf("jobctl %v: %s", tt.args, errs)
		}
	}
	// The published development token, outside development, as the binaries refuse it.
	_, errs := c.set("QSTASH_TOKEN", qstashdev.DevToken).want(t, exitConfig, "dlq", "list")
	if !strings.Contains(errs, "QSTASH_TOKEN") || !strings.Contains(errs, "development") {
		t.Errorf("dlq list with the development token: %s", errs)
	}
	_, errs = c.set("QSTASH_TOKEN", "t").want(t, exitConfig, "schedules", "diff")
	if !strings.Contains(errs, "WORKER_PUBLIC_URL") {
		t.Errorf("schedules diff without a worker URL: %s", errs)
	}
}

// stack is a private Redis, qstashdev and a worker that answers each job
// as told and counts its successful runs.
type stack struct {
	rdb    *redistest.Server
	qs     *qstashdevtest.Server
	worker *httptest.Server
	jobs   *jobs.Client
	ctl    *ctl
	mu     sync.Mutex
	answer map[string]int
	runs   map[string]int
}

func newStack(t *testing.T) *stack {
	t.Helper()
	s := &stack{answer: map[string]int{}, runs: map[string]int{}}
	s.rdb = redistest.Start(t)
	s.qs = qstashdevtest.Start(t, qstashdev.Config{TimeScale: 0.001})
	s.worker = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		job := strings.TrimPrefix(r.URL.Path, jobs.PathPrefix)
		s.mu.Lock()
		status, ok := s.answer[job]
		if !ok {
			status = http.StatusOK
		}
		if status < 300 {
			s.runs[job]++
		}
		s.mu.Unlock()
		if status == jobs.StatusNonRetryable {
			w.Header().Set(jobs.HeaderNonRetryable, "true")
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(s.worker.Close)
	var err error
	s.jobs, err = jobs.NewClient(jobs.ClientConfig{QStashURL: s.qs.URL, Token: qstashdev.DevToken, WorkerPublicURL: s.worker.URL})
	if err != nil {
		t.Fatal(err)
	}
	s.ctl = (&ctl{}).set("REDIS_URL", s.rdb.URL(), "REDIS_KEY_PREFIX", "jw:", "QSTASH_URL", s.qs.URL,
		"QSTASH_TOKEN", qstashdev.DevToken, "WORKER_PUBLIC_URL", s.worker.URL, "JOBWORKER_ENV", "development")
	return s
}

func (s *stack) setAnswer(job string, status int) {
	s.mu.Lock()
	s.answer[job] = status
	s.mu.Unlock()
}

func (s *stack) ran(job string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runs[job]
}

type ping struct {
	N int `json:"n"`
}

func (ping) Kind() string { return "test.ping" }

func (s *stack) enqueue(t *testing.T, args jobs.Args, opts ...jobs.EnqueueOption) string {
	t.Helper()
	res, err := s.jobs.Enqueue(context.Background(), args, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return res.MessageID
}

func TestDLQCommands(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.setAnswer("test.ping", jobs.StatusNonRetryable)
	for i := range 3 {
		s.enqueue(t, ping{N: i}, jobs.WithRetries(2))
	}
	var rows []dlqRow
	testwait.For(t, 10*time.Second, "three dead letters", func() bool {
		s.ctl.json(t, &rows, "dlq", "list", "-job", "test.ping")
		return len(rows) == 3
	})
	if rows[0].Job != "test.ping" || rows[0].ResponseStatus != jobs.StatusNonRetryable || !strings.HasPrefix(compact(rows[0].Args), `{"n":`) {
		t.Errorf("dlq list row = %+v", rows[0])
	}
	out, _ := s.ctl.want(t, exitOK, "dlq", "list")
	if !strings.Contains(out, "DLQ ID") || !strings.Contains(out, rows[1].DLQID) {
		t.Errorf("dlq list table:\n%s", out)
	}
	var one dlqRow
	s.ctl.json(t, &one, "dlq", "show", rows[0].DLQID)
	if one.Attempts != 1 || one.MaxRetries != 2 || one.MessageID != rows[0].MessageID {
		t.Errorf("dlq show = %+v", one)
	}
	s.ctl.want(t, exitNotFound, "dlq", "show", "1-404")

	// A DLQ entry retried from jobctl runs once.
	s.setAnswer("test.ping", http.StatusOK)
	out, _ = s.ctl.want(t, exitOK, "dlq", "retry", rows[0].DLQID)
	if !strings.Contains(out, "retried  1") {
		t.Errorf("dlq retry:\n%s", out)
	}
	testwait.For(t, 10*time.Second, "the retried job ran", func() bool { return s.ran("test.ping") == 1 })
	s.ctl.want(t, exitNotFound, "dlq", "retry", rows[0].DLQID)
	s.ctl.want(t, exitNotFound, "dlq", "show", rows[0].DLQID)

	var del struct{ Deleted int }
	s.ctl.json(t, &del, "dlq", "delete", rows[1].DLQID)
	if del.Deleted != 1 {
		t.Errorf("dlq delete = %+v", del)
	}
	// By filter: a status nothing has deletes nothing; retry by job runs
	// the last entry, once.
	s.ctl.json(t, &del, "dlq", "delete", "-status", "500")
	if del.Deleted != 0 {
		t.Errorf("dlq delete -status 500 = %+v", del)
	}
	var retried struct {
		Messages []string `json:"messageIds"`
	}
	s.ctl.json(t, &retried, "dlq", "retry", "-job", "test.ping")
	if len(retried.Messages) != 1 {
		t.Errorf("dlq retry -job = %+v", retried)
	}
	testwait.For(t, 10*time.Second, "the job retried by filter ran", func() bool { return s.ran("test.ping") == 2 })
	s.ctl.json(t, &del, "dlq", "delete", "-all")
	if del.Deleted != 0 {
		t.Errorf("dlq delete -all of an empty DLQ = %+v", del)
	}
	s.ctl.json(t, &rows, "dlq", "list")
	if len(rows) != 0 {
		t.Errorf("DLQ left: %+v", rows)
	}
	if n := s.ran("test.ping"); n != 2 {
		t.Errorf("test.ping ran %d times, want 2 (each retried entry once)", n)
	}
}

func TestJobsCommands(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	id := s.enqueue(t, ping{N: 5}, jobs.WithDelay(time.Hour))
	var m messageRow
	s.ctl.json(t, &m, "jobs", "show", id)
	if m.Job != "test.ping" || compact(m.Args) != `{"n":5}` || len(m.Events) != 1 || m.Events[0].State != "CREATED" {
		t.Errorf("jobs show = %+v", m)
	}
	s.ctl.want(t, exitOK, "jobs", "cancel", id)
	s.ctl.want(t, exitNotFound, "jobs", "cancel", id)
	out, _ := s.ctl.want(t, exitOK, "jobs", "show", id)
	if !strings.Contains(out, "no longer held") || !strings.Contains(out, "CANCELLED") {
		t.Errorf("jobs show after cancel:\n%s", out)
	}
	s.ctl.want(t, exitNotFound, "jobs", "show", "msg_nope")
	var evs []eventRow
	s.ctl.json(t, &evs, "jobs", "events", "-job", "test.ping", "-state", "cancelled")
	if len(evs) != 1 || evs[0].MessageID != id {
		t.Errorf("jobs events = %+v", evs)
	}
}

func TestSchedulesCommands(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	out, _ := s.ctl.want(t, exitPending, "schedules", "diff")
	if !strings.Contains(out, "create") || !strings.Contains(out, "jobworker.tips.refresh-counts") || !strings.Contains(out, "dry run") {
		t.Errorf("schedules diff:\n%s", out)
	}
	s.ctl.want(t, exitOK, "schedules", "sync")
	s.ctl.want(t, exitOK, "schedules", "diff")
	var plan struct {
		DryRun  bool
		Changes []changeRow
	}
	s.ctl.json(t, &plan, "schedules", "sync")
	if len(plan.Changes) != 1 || plan.Changes[0].Action != "keep" {
		t.Errorf("second sync = %+v", plan)
	}
	var list []scheduleRow
	s.ctl.json(t, &list, "schedules", "list")
	if len(list) != 1 || !list[0].Owned || list[0].Job != "tips.refresh-counts" || list[0].Cron != "CRON_TZ=UTC */5 * * * *" {
		t.Errorf("schedules list = %+v", list)
	}
	// Another app's sync on the same account leaves ours alone.
	other := s.ctl.set("SCHEDULES_APP", "other")
	other.want(t, exitOK, "schedules", "sync")
	s.ctl.json(t, &list, "schedules", "list")
	if len(list) != 2 {
		t.Errorf("after another app's sync: %+v", list)
	}
	s.ctl.want(t, exitOK, "schedules", "diff")
}
