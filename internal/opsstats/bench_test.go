package opsstats_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/digis/jobworker/internal/opsstats"
	"github.com/digis/jobworker/internal/redistest"
)

// BenchmarkFlush is one flush of a busy worker's registry: 20 jobs × 13
// delivery outcomes, each job's latency histogram (16 buckets, gathered but
// not sent), all growing between flushes, so every series is written. The
// time per op is what a process spends per OPS_STATS_INTERVAL (10 s by
// default), off the request path.
func BenchmarkFlush(b *testing.B) {
	rs := redistest.Start(b)
	rdb := rs.Client(b)
	reg := prometheus.NewRegistry()
	deliveries := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jobworker_deliveries_total", Help: "."}, []string{"job", "outcome"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "jobworker_delivery_duration_seconds", Help: ".",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}}, []string{"job"})
	reg.MustRegister(deliveries, duration)
	outcomes := []string{"done", "duplicate", "in_progress", "retry", "panic", "permanent", "unknown_job", "mismatch", "unavailable", "draining", "unverified", "too_large", "replayed"}
	var counters []prometheus.Counter
	for j := range 20 {
		job := "job." + strconv.Itoa(j)
		for _, o := range outcomes {
			counters = append(counters, deliveries.WithLabelValues(job, o))
		}
		duration.WithLabelValues(job).Observe(0.01)
	}
	f, err := opsstats.NewFlusher(opsstats.Config{Redis: rdb, Gatherer: reg})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for _, c := range counters {
			c.Inc()
		}
		if err := f.Flush(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(counters)), "series")
}
