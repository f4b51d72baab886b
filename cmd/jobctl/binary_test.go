package main

import (
	"strings"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/proctest"
	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/qstashdev/qstashdevtest"
)

// TestBinary runs the real jobctl: its exit codes are what scripts see.
func TestBinary(t *testing.T) {
	t.Parallel()
	bin := proctest.Build(t, "github.com/digis/jobworker/cmd/jobctl")
	qs := qstashdevtest.Start(t, qstashdev.Config{})
	env := []string{"QSTASH_URL=" + qs.URL, "QSTASH_TOKEN=" + qstashdev.DevToken, "WORKER_PUBLIC_URL=https://worker.example.com", "JOBWORKER_ENV=development"}
	for _, tt := range []struct {
		args []string
		env  []string
		code int
		want string
	}{
		{args: nil, code: exitUsage, want: "usage: jobctl"},
		{args: []string{"-json", "schedules", "diff"}, env: env, code: exitPending, want: `"action": "create"`},
		{args: []string{"schedules", "sync"}, env: env, code: exitOK, want: "1 create"},
		{args: []string{"schedules", "diff"}, env: env, code: exitOK, want: "1 unchanged"},
		{args: []string{"dlq", "show", "1-1"}, env: env, code: exitNotFound, want: "not found"},
		{args: []string{"keys", "*"}, code: exitConfig, want: "config: REDIS_URL"},
	} {
		code, out := proctest.Run(t, time.Minute, bin, tt.args, tt.env...)
		if code != tt.code || !strings.Contains(out, tt.want) {
			t.Errorf("jobctl %v: exit %d (want %d)\n%s", tt.args, code, tt.code, out)
		}
	}
}
