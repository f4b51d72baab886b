package opsstats_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/opsstats"
	"github.com/digis/jobworker/internal/redistest"
)

// instance is one process's registry with the delivery counter and the
// outbox gauge as package worker and outbox declare them.
type instance struct {
	reg        *prometheus.Registry
	deliveries *prometheus.CounterVec
	pending    prometheus.Gauge
	other      prometheus.Counter
}

func newInstance(t *testing.T) *instance {
	t.Helper()
	in := &instance{reg: prometheus.NewRegistry(),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jobworker_deliveries_total", Help: "."}, []string{"job", "outcome"}),
		pending:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "jobworker_outbox_pending", Help: "."}),
		other:      prometheus.NewCounter(prometheus.CounterOpts{Name: "jobworker_http_requests_total", Help: "."}),
	}
	in.reg.MustRegister(in.deliveries, in.pending, in.other)
	return in
}

func total(minutes []opsstats.Minute, name string, labels map[string]string) (sum float64) {
	for _, m := range minutes {
	series:
		for _, s := range m.Series {
			if s.Name != name {
				continue
			}
			for k, v := range labels {
				if s.Labels[k] != v {
					continue series
				}
			}
			sum += s.Value
		}
	}
	return sum
}

func TestFlushSumsInstancesPerMinute(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	rdb := rs.Client(t)
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }

	a, b := newInstance(t), newInstance(t)
	fa, err := opsstats.NewFlusher(opsstats.Config{Redis: rdb, Gatherer: a.reg, Prefix: "p:", Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	fb, err := opsstats.NewFlusher(opsstats.Config{Redis: rdb, Gatherer: b.reg, Prefix: "p:", Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	a.deliveries.WithLabelValues("x", "done").Add(3)
	b.deliveries.WithLabelValues("x", "done").Add(4)
	b.deliveries.WithLabelValues("x", "retry").Add(1)
	a.other.Add(100)
	a.pending.Set(7)
	for _, f := range []*opsstats.Flusher{fa, fb} {
		if err := f.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Only what grew since is sent: a second flush of the same counts adds
	// nothing, a later increment lands in the next minute.
	if err := fa.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Minute)
	a.deliveries.WithLabelValues("x", "done").Add(2)
	if err := fa.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	r := opsstats.NewReader(rdb, "p:")
	minutes, err := r.Read(ctx, now.Add(-time.Minute), now)
	if err != nil {
		t.Fatal(err)
	}
	if len(minutes) != 2 {
		t.Fatalf("minutes = %d, want 2", len(minutes))
	}
	if got := total(minutes[:1], "jobworker_deliveries_total", map[string]string{"outcome": "done"}); got != 7 {
		t.Errorf("first minute done = %v, want 7 (3 + 4)", got)
	}
	if got := total(minutes[1:], "jobworker_deliveries_total", map[string]string{"outcome": "done"}); got != 2 {
		t.Errorf("second minute done = %v, want 2", got)
	}
	if got := total(minutes, "jobworker_deliveries_total", map[string]string{"outcome": "retry"}); got != 1 {
		t.Errorf("retry = %v, want 1", got)
	}
	if got := total(minutes, "jobworker_http_requests_total", nil); got != 0 {
		t.Errorf("a family not flushed was: %v", got)
	}
	if got := total(minutes[:1], "jobworker_outbox_pending", nil); got != 7 {
		t.Errorf("gauge = %v, want its last value 7", got)
	}
	if minutes[0].Instances != 2 || minutes[1].Instances != 1 {
		t.Errorf("instances = %d, %d; want 2, 1", minutes[0].Instances, minutes[1].Instances)
	}
	ttl := rdb.TTL(ctx, opsstats.Key("p:", now)).Val()
	if ttl <= 24*time.Hour || ttl > opsstats.DefaultRetention {
		t.Errorf("TTL = %v, want about %v", ttl, opsstats.DefaultRetention)
	}
}

// A flush Redis refuses loses nothing: its counts go with the next one.
func TestFailedFlushKeepsItsCounts(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	rdb := rs.Client(t)
	ctx := context.Background()
	in := newInstance(t)
	f, err := opsstats.NewFlusher(opsstats.Config{Redis: rdb, Gatherer: in.reg, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	in.deliveries.WithLabelValues("x", "done").Add(5)
	rs.Pause()
	if err := f.Flush(ctx); err == nil {
		t.Fatal("flush to a paused Redis succeeded")
	}
	rs.Resume()
	in.deliveries.WithLabelValues("x", "done").Add(1)
	if err := f.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	minutes, err := opsstats.NewReader(rdb, "").Read(ctx, time.Now().Add(-2*time.Minute), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if got := total(minutes, "jobworker_deliveries_total", nil); got != 6 {
		t.Errorf("total = %v, want 6", got)
	}
}

// The flush is one MULTI on one key: it runs on Redis Cluster.
func TestFlushOnCluster(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()
	in := newInstance(t)
	f, err := opsstats.NewFlusher(opsstats.Config{Redis: rdb, Gatherer: in.reg, Prefix: "app:"})
	if err != nil {
		t.Fatal(err)
	}
	in.deliveries.WithLabelValues("x", "done").Add(2)
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	minutes, err := opsstats.NewReader(rdb, "app:").Read(ctx, time.Now().Add(-3*time.Minute), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if got := total(minutes, "jobworker_deliveries_total", nil); got != 2 {
		t.Errorf("total = %v, want 2", got)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	_, err := opsstats.NewFlusher(opsstats.Config{})
	var ce *opsstats.ConfigError
	if !errors.As(err, &ce) || ce.Field != "Redis" || !errors.Is(err, opsstats.ErrInvalidConfig) {
		t.Fatalf("err = %v, want a ConfigError on Redis", err)
	}
}
