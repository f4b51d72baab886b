package workerapp_test

import (
	"strconv"
	"testing"

	"github.com/digis/jobworker/internal/redistest"
)

// BenchmarkDeliveriesLogLevel measures what logging costs a delivery: the
// production worker at LOG_LEVEL=info (its access line per delivery,
// written to /dev/null through the process's log writer) against the same
// worker at LOG_LEVEL=warn (no line), on one Redis, alternating in rounds
// and which side goes first. The ratio is info over warn; 1.0 is free.
//
//	go test -run '^$' -bench DeliveriesLogLevel -benchtime 20000x ./internal/workerapp
func BenchmarkDeliveriesLogLevel(b *testing.B) {
	rs := redistest.Start(b)
	infoURL := startBenchWorker(b, rs.URL(), "LOG_LEVEL", "info", "REDIS_TIMEOUT", "2s")
	warnURL := startBenchWorker(b, rs.URL(), "LOG_LEVEL", "warn", "REDIS_TIMEOUT", "2s")
	for _, senders := range []int{16, 64} {
		b.Run("senders="+strconv.Itoa(senders), func(b *testing.B) {
			info, warn := alternateLoads(b, infoURL, warnURL, "info", "warn", senders)
			b.ReportMetric(info.perSecond, "info-deliveries/s")
			b.ReportMetric(warn.perSecond, "warn-deliveries/s")
			b.ReportMetric(info.perSecond/warn.perSecond, "ratio")
			b.ReportMetric(info.p99.Seconds()*1000, "info-p99-ms")
			b.ReportMetric(warn.p99.Seconds()*1000, "warn-p99-ms")
		})
	}
}
