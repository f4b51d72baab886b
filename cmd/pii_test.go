package cmd_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/appjobs"
	"github.com/digis/jobworker/internal/metrictest"
	"github.com/digis/jobworker/internal/pgtest"
	"github.com/digis/jobworker/internal/proctest"
	"github.com/digis/jobworker/internal/redistest"
	"github.com/digis/jobworker/internal/store"
	"github.com/digis/jobworker/internal/testwait"
	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/qstashdev/qstashdevtest"
)

// TestNoUserIDInLogs runs the real api and worker at LOG_LEVEL=debug through
// every path that logged a person's id: a tip and its follow-up jobs, the
// same tip replayed from the database after Redis lost its record, a stream
// start and its job, a Stripe deposit and its refund. The users' ids look
// like e-mail addresses, as a deployment's may; none may appear in any log
// line of either process (record ids such as tip_id and transaction_id
// are what an operator looks up instead).
func TestNoUserIDInLogs(t *testing.T) {
	t.Parallel()
	db := pgtest.Create(t)
	rs := redistest.Start(t)
	st, err := store.NewPostgres(db.Pool, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(context.Background(), db.Pool); err != nil {
		t.Fatal(err)
	}
	qs := qstashdevtest.Start(t, qstashdev.Config{TimeScale: 0.01})
	workerPort := proctest.FreePort(t)
	workerURL := "http://127.0.0.1:" + strconv.Itoa(workerPort)
	common := []string{
		"REDIS_URL=" + rs.URL(), "DATABASE_URL=" + db.URL, "QSTASH_URL=" + qs.URL, "QSTASH_TOKEN=" + qstashdev.DevToken,
		"JOBWORKER_ENV=development", "WORKER_PUBLIC_URL=" + workerURL, "LOG_FORMAT=json", "LOG_LEVEL=debug", "SHUTDOWN_TIMEOUT=5s",
	}
	worker := proctest.Start(t, proctest.Build(t, "github.com/digis/jobworker/cmd/worker"), nil,
		append(common, "PORT="+strconv.Itoa(workerPort), "STRIPE_WEBHOOK_SECRET="+chaosStripeSecret,
			"QSTASH_CURRENT_SIGNING_KEY="+qstashdev.DevCurrentSigningKey, "QSTASH_NEXT_SIGNING_KEY="+qstashdev.DevNextSigningKey)...)
	api := proctest.Start(t, proctest.Build(t, "github.com/digis/jobworker/cmd/api"), nil,
		append(common, "PORT="+strconv.Itoa(proctest.FreePort(t)), "AUTH_JWT_SECRET="+outboxJWTSecret, "RATE_LIMIT_IP_SOURCE=direct")...)
	worker.WaitStatus(t, "/readyz", http.StatusOK, 15*time.Second)
	api.WaitStatus(t, "/readyz", http.StatusOK, 15*time.Second)

	const creator, fan, buyer, streamer = "creator.pii@example.com", "fan.pii@example.com", "buyer.pii@example.com", "streamer.pii@example.com"
	ctx := context.Background()
	tipped, err := st.StartStream(ctx, store.StartStreamRequest{CreatorID: creator, Username: "pii_tipped", Title: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Credit(ctx, fan, 100, "seed:fan"); err != nil {
		t.Fatal(err)
	}
	done := func(job string, n float64) {
		t.Helper()
		series := `jobworker_deliveries_total{job="` + job + `",outcome="done"}`
		testwait.For(t, 20*time.Second, series, func() bool { return metrictest.Scrape(t, worker.MetricsURL, series) >= n })
	}

	tip := func() int {
		return call(ctx, api.URL+"/api/tips/quick", bearerFor(t, fan), "pii-tip", tipJSON(tipped.ID, 5))
	}
	if code := tip(); code != http.StatusCreated {
		t.Fatalf("tip: %d", code)
	}
	done("tips.notify-creator", 1)
	done("tips.refresh-count", 1)
	// Redis forgets the answer: the database replays the tip (and logs it).
	if err := rs.Client(t).FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if code := tip(); code != http.StatusCreated {
		t.Fatalf("replayed tip: %d", code)
	}
	if code := call(ctx, api.URL+"/api/streams/start", bearerFor(t, streamer), "", `{"username":"pii_stream","title":"x"}`); code != http.StatusOK {
		t.Fatalf("start: %d", code)
	}
	done("streams.notify-followers", 1)
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, ev := range [][]byte{
		chaosEvent("evt_pii_pay", appjobs.StripePaymentSucceeded, map[string]any{
			"id": "pi_pii", "object": "payment_intent", "amount": 1000, "status": "succeeded",
			"metadata": map[string]string{appjobs.MetadataUserID: buyer, appjobs.MetadataTokens: "100"},
		}),
		chaosRefund("evt_pii_ref", "pi_pii", 1000),
	} {
		if !sendUntilAcknowledged(sctx, worker.URL, ev) {
			t.Fatal("stripe event not acknowledged")
		}
	}
	done("stripe.event", 2)

	for name, p := range map[string]*proctest.Proc{"api": api, "worker": worker} {
		// Stopped first, so every line the process logged is out of its
		// log buffer and in what is checked.
		if err := p.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := p.Wait(t, 20*time.Second); code != 0 {
			t.Fatalf("%s exited %d after SIGTERM", name, code)
		}
		out := p.Output()
		if !strings.Contains(out, `"msg":"tip replayed"`) && name == "api" {
			t.Fatalf("the api did not log the replay (the path under test):\n%s", out)
		}
		for _, id := range []string{creator, fan, buyer, streamer} {
			if strings.Contains(out, id) {
				for _, line := range strings.Split(out, "\n") {
					if strings.Contains(line, id) {
						t.Errorf("%s logs %s: %s", name, id, line)
					}
				}
			}
		}
	}
}
