package server_test

import (
	"io"
	"log/slog"
	"net/http"
	"os"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/digis/jobworker/internal/cputime"
	"github.com/digis/jobworker/server"
)

// benchOutputs are where BenchmarkAccessLog's lines go; other files of the
// test add theirs (the buffered writer), so this one also runs on a tree
// without them (the "before" of docs/benchmarks.md).
var benchOutputs = []struct {
	name string
	open func(b *testing.B) (io.Writer, func())
}{
	{"discard", func(*testing.B) (io.Writer, func()) { return io.Discard, func() {} }},
	{"devnull", func(b *testing.B) (io.Writer, func()) {
		// A file, as os.Stderr is: one write system call per line.
		f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		return f, func() { f.Close() }
	}},
	{"pipe", openPipe},
}

// openPipe is stderr as a container runtime gives it: a pipe, read by
// another party (here a goroutine; its CPU counts, as the reader's would
// on the machine).
func openPipe(b *testing.B) (io.Writer, func()) {
	r, w, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, r); close(done) }()
	return w, func() {
		if w.Close() == nil {
			<-done
			r.Close()
		}
	}
}

// BenchmarkAccessLog serves one request through the server's whole
// middleware chain (request id, access log, recovery, body guard, request
// deadline) to a handler that answers 200, with the JSON access line at
// info written to each output, and at warn (no line). allocs/op is the
// whole request's, Echo's included; the handler adds nothing.
//
//	go test -run '^$' -bench AccessLog -benchmem ./server
func BenchmarkAccessLog(b *testing.B) {
	for _, out := range benchOutputs {
		for _, level := range []slog.Level{slog.LevelInfo, slog.LevelWarn} {
			b.Run("out="+out.name+"/level="+level.String(), func(b *testing.B) {
				w, closeOut := out.open(b)
				defer closeOut()
				log := server.NewLogger(w, "json", level).With("service", "bench")
				s, err := server.New(server.Config{Name: "bench", Logger: log})
				if err != nil {
					b.Fatal(err)
				}
				s.Echo.POST("/jobs/:name", func(c echo.Context) error { return c.NoContent(http.StatusOK) })
				req, err := http.NewRequest(http.MethodPost, "/jobs/demo.hello", http.NoBody)
				if err != nil {
					b.Fatal(err)
				}
				rw := &benchResponse{h: http.Header{}}
				b.ReportAllocs()
				b.ResetTimer()
				cpu0 := cputime.Self()
				for b.Loop() {
					s.Echo.ServeHTTP(rw, req)
				}
				b.StopTimer()
				closeOut() // the buffered writer's last flush is part of the cost
				// CPU time of the whole process (the writer's goroutine
				// included) per request: steadier than wall time on a
				// shared machine.
				b.ReportMetric(float64(cputime.Self()-cpu0)/float64(b.N), "cpu-ns/op")
				if rw.code != http.StatusOK {
					b.Fatalf("status %d", rw.code)
				}
			})
		}
	}
}

// benchResponse is a ResponseWriter that keeps nothing, so the benchmark
// counts the server's allocations, not a recorder's.
type benchResponse struct {
	h    http.Header
	code int
}

func (r *benchResponse) Header() http.Header         { return r.h }
func (r *benchResponse) Write(p []byte) (int, error) { return len(p), nil }
func (r *benchResponse) WriteHeader(code int)        { r.code = code }
