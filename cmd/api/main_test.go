package main_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/auth"
	"github.com/digis/jobworker/internal/pgtest"
	"github.com/digis/jobworker/internal/proctest"
	"github.com/digis/jobworker/internal/redistest"
	"github.com/digis/jobworker/internal/store"
	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/qstashdev/qstashdevtest"
)

const secret = "process-test-secret-of-at-least-32-bytes"

func TestMigrateFlag(t *testing.T) {
	t.Parallel()
	bin := proctest.Build(t, "github.com/digis/jobworker/cmd/api")
	db := pgtest.Create(t)
	for i := 0; i < 2; i++ { // a second run finds nothing to do
		if code, out := proctest.Run(t, time.Minute, bin, []string{"-migrate"}, "DATABASE_URL="+db.URL); code != 0 {
			t.Fatalf("-migrate run %d: exit %d\n%s", i+1, code, out)
		}
	}
	var n int
	if err := db.Pool.QueryRow(context.Background(), "SELECT count(*) FROM schema_migrations").Scan(&n); err != nil || n == 0 {
		t.Fatalf("schema_migrations rows %d (%v)", n, err)
	}
	if code, out := proctest.Run(t, time.Minute, bin, []string{"-migrate"}); code != 1 || !strings.Contains(out, "DATABASE_URL") {
		t.Fatalf("-migrate without DATABASE_URL: exit %d\n%s", code, out)
	}
	if code, _ := proctest.Run(t, time.Minute, bin, []string{"-bogus"}); code != 2 {
		t.Fatalf("unknown flag: exit %d, want 2", code)
	}
}

func TestStartUpFailsWithoutIPSourceOrAuth(t *testing.T) {
	t.Parallel()
	bin := proctest.Build(t, "github.com/digis/jobworker/cmd/api")
	base := []string{"REDIS_URL=redis://127.0.0.1:1", "QSTASH_TOKEN=t", "WORKER_PUBLIC_URL=http://127.0.0.1:2", "DATABASE_URL=memory"}
	for _, tt := range []struct {
		env     []string
		wantVar string
	}{
		{[]string{"AUTH_JWT_SECRET=" + secret}, "RATE_LIMIT_IP_SOURCE"},
		{[]string{"RATE_LIMIT_IP_SOURCE=direct"}, "AUTH_JWT_SECRET"},
	} {
		code, out := proctest.Run(t, time.Minute, bin, nil, append(base, tt.env...)...)
		if code != 1 || !strings.Contains(out, "config: "+tt.wantVar+": ") {
			t.Fatalf("without %s: exit %d\n%s", tt.wantVar, code, out)
		}
	}
}

// Two real api processes on one PostgreSQL and one Redis, both migrating at
// start-up: a stream started through one is live on the other's next read.
func TestTwoProcessesShareState(t *testing.T) {
	t.Parallel()
	bin := proctest.Build(t, "github.com/digis/jobworker/cmd/api")
	db := pgtest.Create(t)
	rs := redistest.Start(t)
	qs := qstashdevtest.Start(t, qstashdev.Config{})
	env := []string{
		"REDIS_URL=" + rs.URL(), "DATABASE_URL=" + db.URL, "DATABASE_MIGRATE=true",
		"QSTASH_URL=" + qs.URL, "QSTASH_TOKEN=" + qstashdev.DevToken, "JOBWORKER_ENV=development", "WORKER_PUBLIC_URL=http://127.0.0.1:9",
		"AUTH_JWT_SECRET=" + secret, "RATE_LIMIT_IP_SOURCE=direct", "LOG_LEVEL=warn", "LOG_FORMAT=text",
	}
	procs := make([]*proctest.Proc, 2)
	var wg sync.WaitGroup
	for i := range procs {
		procs[i] = proctest.Start(t, bin, nil, env...)
		wg.Add(1)
		go func() { defer wg.Done(); procs[i].WaitStatus(t, "/readyz", 200, 30*time.Second) }()
	}
	wg.Wait()
	tok, err := auth.DevToken([]byte(secret), "creator-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	live := func(p *proctest.Proc) (int, bool) {
		res, err := http.Get(p.URL + "/api/streams/status?username=procchan")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var s store.Stream
		_ = json.NewDecoder(res.Body).Decode(&s)
		return res.StatusCode, s.Live
	}
	if code, _ := live(procs[1]); code != 404 {
		t.Fatalf("before start: %d", code)
	}
	req, _ := http.NewRequest(http.MethodPost, procs[0].URL+"/api/streams/start", strings.NewReader(`{"username":"procchan","title":"hi"}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("start: %d %s", res.StatusCode, body)
	}
	if code, isLive := live(procs[1]); code != 200 || !isLive {
		t.Fatalf("second process after start: %d live=%v", code, isLive)
	}
}
