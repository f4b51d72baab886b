package workerapp_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/redistest"
	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/webhooks/webhookstest"
)

// BenchmarkDeliveryAllocs serves deliveries one after another through the
// production handler (the shared middleware, verification, claim with its
// replay nonce, the job, the done marker, the access line) with a real
// Redis, skipping only net/http's connection handling: allocs/op and B/op
// are what one delivery costs the garbage collector. Each delivery has its
// own message id and token, signed before the clock starts.
//
//	go test ./internal/workerapp -run '^$' -bench DeliveryAllocs -benchtime 20000x -benchmem
func BenchmarkDeliveryAllocs(b *testing.B) {
	rs := redistest.Start(b)
	const publicURL = "http://worker.test"
	p := buildBenchWorker(b, rs.URL(), publicURL)
	b.Cleanup(p.Abort) // before Redis stops: the stop functions flush to it
	body := []byte(`{"n":1}`)
	url := publicURL + "/jobs/bench.noop"
	now := time.Now()
	reqs := make([]*http.Request, b.N)
	for i := range reqs {
		sig, err := webhookstest.QStashSignature(qstashdev.DevCurrentSigningKey, url, body, now)
		if err != nil {
			b.Fatal(err)
		}
		r, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		r.RequestURI = "/jobs/bench.noop"
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Upstash-Signature", sig)
		r.Header.Set("Upstash-Message-Id", fmt.Sprintf("msg_allocs_%d_%d", now.UnixNano(), i))
		r.Header.Set("Upstash-Retried", "0")
		reqs[i] = r
	}
	w := &benchWriter{h: http.Header{}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range reqs {
		clear(w.h)
		p.Server.Echo.ServeHTTP(w, reqs[i])
		if w.code != http.StatusOK {
			b.Fatalf("delivery %d: status %d", i, w.code)
		}
	}
}

// benchWriter is a ResponseWriter that keeps nothing but the status and
// takes read deadlines (as a connection's writer does), so the benchmark
// counts the worker's allocations, not a recorder's or an "unsupported"
// error's.
type benchWriter struct {
	h    http.Header
	code int
}

func (w *benchWriter) Header() http.Header              { return w.h }
func (w *benchWriter) Write(p []byte) (int, error)      { return io.Discard.Write(p) }
func (w *benchWriter) WriteHeader(code int)             { w.code = code }
func (w *benchWriter) SetReadDeadline(time.Time) error  { return nil }
func (w *benchWriter) SetWriteDeadline(time.Time) error { return nil }
