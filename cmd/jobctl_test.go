package cmd_test

import (
	"context"
	"net/http"
	"strings"
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

// TestJobctlLimitsResetReachesEveryAPI: a user whose window two cmd/api
// processes both know is spent (each refuses from its local block cache,
// without asking Redis) is admitted by both right after one
// `jobctl limits reset`, not a minute later when the window ends.
func TestJobctlLimitsResetReachesEveryAPI(t *testing.T) {
	t.Parallel()
	apiBin := proctest.Build(t, "github.com/digis/jobworker/cmd/api")
	ctlBin := proctest.Build(t, "github.com/digis/jobworker/cmd/jobctl")
	rs := redistest.Start(t)
	db := pgtest.Create(t)
	if err := store.Migrate(context.Background(), db.Pool); err != nil {
		t.Fatal(err)
	}
	st, err := store.NewPostgres(db.Pool, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.StartStream(context.Background(), store.StartStreamRequest{CreatorID: "c1", Username: "reset_stream", Title: "live"}); err != nil {
		t.Fatal(err)
	}
	qs := qstashdevtest.Start(t, qstashdev.Config{})
	shared := []string{"REDIS_URL=" + rs.URL(), "REDIS_KEY_PREFIX=jw:", "QSTASH_URL=" + qs.URL, "QSTASH_TOKEN=" + qstashdev.DevToken,
		"RATE_LIMIT_OVERRIDES=streams:status=3/1m", "JOBWORKER_ENV=development"}
	var apis []string
	for range 2 {
		p := proctest.Start(t, apiBin, nil, append(shared, "DATABASE_URL="+db.URL, "WORKER_PUBLIC_URL=http://127.0.0.1:1",
			"AUTH_JWT_SECRET="+apiJWTSecret, "RATE_LIMIT_IP_SOURCE=direct", "LOG_LEVEL=error", "LOG_FORMAT=text")...)
		p.WaitHealthy(t)
		apis = append(apis, p.URL)
	}
	token, err := auth.DevToken([]byte(apiJWTSecret), "reset-user", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	get := func(base string) int {
		req, _ := http.NewRequest(http.MethodGet, base+"/api/streams/status?username=reset_stream", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i := range 3 {
		if code := get(apis[i%2]); code != http.StatusOK {
			t.Fatalf("request %d: %d", i, code)
		}
	}
	for _, base := range apis { // each instance learns the window is spent, and caches it
		if code := get(base); code != http.StatusTooManyRequests {
			t.Fatalf("past the limit: %d", code)
		}
	}
	code, out := proctest.Run(t, time.Minute, ctlBin, []string{"limits", "reset", "streams:status", "user:reset-user"}, shared...)
	if code != 0 || !strings.Contains(out, "remaining  3") {
		t.Fatalf("jobctl limits reset: exit %d\n%s", code, out)
	}
	for _, base := range apis {
		var got int
		deadline := time.Now().Add(10 * time.Second)
		for got = get(base); got != http.StatusOK && time.Now().Before(deadline); got = get(base) {
			time.Sleep(20 * time.Millisecond) // the reset is a Pub/Sub message on its way
		}
		if got != http.StatusOK {
			t.Errorf("%s still refuses after the reset: %d", base, got)
		}
	}
}
