package workerapp_test

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	qstash "github.com/upstash/qstash-go"

	"github.com/digis/jobworker/qstashdev"
)

// The fault of issue #14: Redis is down for ten minutes. Jobs published
// with QStash's default 3 retries must neither run without dedupe nor be
// dead-lettered, and each runs exactly once when Redis is back (restarted
// empty). The worker's Retry-After follows QStash's own backoff, so the
// third retry comes about 33 minutes after the first attempt.
//
// QStash's waits are scaled by qstashdev's TimeScale, and so is the outage:
// 10 minutes are 6 s here, and the jobs run about 20 s in. JOBWORKER_OUTAGE_TIME_SCALE=1 runs it in real
// time (about 35 minutes; see docs/benchmarks.md).
func TestRedisOutageOfTenMinutesDeadLettersNothing(t *testing.T) {
	t.Parallel()
	// 0.01, not the usual 0.001: each refused attempt takes up to the
	// worker's Redis timeout (300 ms), which must stay small next to the
	// scaled waits, or any retry schedule would look long enough.
	b := &bundle{timeScale: 0.01, effects: newEffects()}
	if v := os.Getenv("JOBWORKER_OUTAGE_TIME_SCALE"); v != "" {
		scale, err := strconv.ParseFloat(v, 64)
		if err != nil || scale <= 0 {
			t.Fatalf("JOBWORKER_OUTAGE_TIME_SCALE=%q is not a positive number", v)
		}
		b.timeScale = scale
	}
	setupWith(t, b, b.effects.register, nil)
	outage := time.Duration(float64(10*time.Minute) * b.timeScale)

	b.redis.Stop()
	start := time.Now()
	ids := make([]string, 20)
	for i := range ids {
		ids[i] = "outage-" + strconv.Itoa(i)
		if _, err := b.client.Enqueue(context.Background(), countJob{ID: ids[i]}); err != nil { // QStash's default 3 retries
			t.Fatal(err)
		}
	}
	waitMetric(t, b.url, `jobworker_deliveries_total{job="test.count",outcome="unavailable"}`, float64(len(ids)))
	time.Sleep(time.Until(start.Add(outage))) // the length of the fault, not a wait for a result
	b.redis.Restart()                         // empty: every dedupe record is gone
	t.Logf("Redis back after %s", time.Since(start).Round(time.Millisecond))

	// The last retry comes about 33 scaled minutes after the first attempt.
	b.effects.waitFor(t, 10*time.Second+time.Duration(float64(40*time.Minute)*b.timeScale), "every job after Redis returned", func() bool {
		for _, id := range ids {
			if r, _ := b.effects.get(id); r != 1 {
				return false
			}
		}
		return true
	})
	for _, id := range ids {
		if runs, attempts := b.effects.get(id); runs != 1 || attempts != 1 {
			t.Fatalf("%s: runs %d, attempts %d; want exactly one run", id, runs, attempts)
		}
	}
	q := qstash.NewClientWith(qstash.Options{Url: b.qstash.URL, Token: qstashdev.DevToken})
	dead, _, err := q.Dlq().List(qstash.ListDlqOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 0 {
		t.Fatalf("%d messages dead-lettered during the outage", len(dead))
	}
	t.Logf("all %d jobs ran once, %s after the outage began", len(ids), time.Since(start).Round(time.Millisecond))
}
