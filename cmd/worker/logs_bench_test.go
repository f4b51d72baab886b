package main_test

import (
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/proctest"
	"github.com/digis/jobworker/internal/redistest"
	"github.com/digis/jobworker/internal/testwait"
	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/webhooks/webhookstest"
)

// BenchmarkLogLevelCPU measures what logging costs the real worker binary:
// the CPU time (user + system, from /proc) the process spends per delivery
// of demo.hello (the job that logged a line of its own), with LOG_LEVEL=info
// against a second worker at LOG_LEVEL=warn, both on one Redis, stderr a
// pipe read by this process (as under a container runtime). Rounds
// alternate, and which side goes first; CPU time is steadier than
// throughput on a shared machine. ratio = info/warn CPU per delivery
// (1.0: logging is free). Linux only.
//
//	go test -run '^$' -bench LogLevelCPU -benchtime 20000x ./cmd/worker
func BenchmarkLogLevelCPU(b *testing.B) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		b.Skip("needs /proc")
	}
	bin := proctest.Build(b, "github.com/digis/jobworker/cmd/worker")
	rs := redistest.Start(b)
	start := func(level string) (*proctest.Proc, string) {
		port := proctest.FreePort(b)
		base := "http://127.0.0.1:" + strconv.Itoa(port)
		p := proctest.Start(b, bin, nil, "PORT="+strconv.Itoa(port), "REDIS_URL="+rs.URL(), "WORKER_PUBLIC_URL="+base,
			"QSTASH_CURRENT_SIGNING_KEY="+qstashdev.DevCurrentSigningKey, "QSTASH_NEXT_SIGNING_KEY="+qstashdev.DevNextSigningKey,
			"STRIPE_WEBHOOK_SECRET=whsec_bench", "QSTASH_TOKEN=unused", "DATABASE_URL=memory", "JOBWORKER_ENV=development",
			"LOG_FORMAT=json", "LOG_LEVEL="+level, "REDIS_TIMEOUT=2s", "OPS_STATS_INTERVAL=0")
		p.WaitHealthy(b)
		return p, base + "/jobs/demo.hello"
	}
	info, infoURL := start("info")
	warn, warnURL := start("warn")
	const senders = 16
	infoReqs := helloRequests(b, infoURL, b.N, "i")
	warnReqs := helloRequests(b, warnURL, b.N, "w")
	b.ResetTimer()
	var infoCPU, warnCPU time.Duration
	const rounds = 6
	for r := 0; r < rounds; r++ {
		lo, hi := r*b.N/rounds, (r+1)*b.N/rounds
		run := func(p *proctest.Proc, reqs []helloRequest) time.Duration {
			c0 := procCPU(b, p.Cmd.Process.Pid)
			send(b, reqs[lo:hi], senders)
			return procCPU(b, p.Cmd.Process.Pid) - c0
		}
		if r%2 == 0 {
			infoCPU += run(info, infoReqs)
			warnCPU += run(warn, warnReqs)
		} else {
			warnCPU += run(warn, warnReqs)
			infoCPU += run(info, infoReqs)
		}
	}
	b.StopTimer()
	// (Its lines are buffered for up to 100 ms.)
	testwait.For(b, 10*time.Second, "the info worker logging its deliveries", func() bool {
		return strings.Contains(info.Output(), `"job":"demo.hello"`) || strings.Contains(info.Output(), `hello from a job`)
	})
	b.ReportMetric(float64(infoCPU.Microseconds())/float64(b.N), "info-cpu-µs/delivery")
	b.ReportMetric(float64(warnCPU.Microseconds())/float64(b.N), "warn-cpu-µs/delivery")
	b.ReportMetric(float64(infoCPU)/float64(warnCPU), "ratio")
}

type helloRequest struct {
	url    string
	header http.Header
}

var helloBody = `{"name":"world"}`

func helloRequests(b *testing.B, url string, n int, prefix string) []helloRequest {
	out := make([]helloRequest, n)
	now := time.Now()
	for i := range out {
		sig, err := webhookstest.QStashSignature(qstashdev.DevCurrentSigningKey, url, []byte(helloBody), now)
		if err != nil {
			b.Fatal(err)
		}
		h := http.Header{}
		h.Set("Content-Type", "application/json")
		h.Set("Upstash-Signature", sig)
		h.Set("Upstash-Message-Id", "msg_"+prefix+strconv.FormatInt(now.UnixNano(), 36)+"_"+strconv.Itoa(i))
		out[i] = helloRequest{url: url, header: h}
	}
	return out
}

// send delivers reqs with senders concurrent clients; any answer but 200
// fails the benchmark.
func send(b *testing.B, reqs []helloRequest, senders int) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: senders, MaxConnsPerHost: senders}}
	defer client.CloseIdleConnections()
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(reqs) {
					return
				}
				req, _ := http.NewRequest(http.MethodPost, reqs[i].url, strings.NewReader(helloBody))
				req.Header = reqs[i].header
				res, err := client.Do(req)
				if err != nil || res.StatusCode != http.StatusOK {
					failed.Add(1)
				}
				if res != nil {
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
				}
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d deliveries failed", n, len(reqs))
	}
}

// procCPU is the user + system CPU time of process pid so far.
func procCPU(b *testing.B, pid int) time.Duration {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name (which may hold spaces, in parens):
	// utime and stime are the 14th and 15th fields, in clock ticks.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const ticksPerSecond = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / ticksPerSecond
}
