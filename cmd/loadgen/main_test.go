package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/proctest"
)

// The load generator runs against the real worker binary, its own baseline
// process and the floors, with small counts, and reports numbers that make
// sense. Every floor answers only 200s here, or its round would fail: each
// verified, claimed and finished every delivery.
// (A smoke test of the tool; what the numbers are is for docs/benchmarks.md.)
func TestLoadgenAgainstARealWorker(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-server not found in PATH")
		}
		t.Skip("redis-server not found in PATH")
	}
	worker := proctest.Build(t, "github.com/digis/jobworker/cmd/worker")
	self := proctest.Build(t, "github.com/digis/jobworker/cmd/loadgen")
	cfg, err := parseFlags([]string{"-worker", worker, "-floors", "-conns", "2,4", "-pairs", "2", "-n", "200"})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Self = self
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	res, err := run(ctx, cfg, &out)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if len(res) != 2 || res[0].Conns != 2 || res[1].Conns != 4 {
		t.Fatalf("summaries %+v", res)
	}
	for _, s := range res {
		sides := map[string]side{"worker": s.Worker, "baseline": s.Baseline}
		for _, name := range floorKinds {
			o := s.other(name)
			if o == nil {
				t.Fatalf("conns=%d: no %s floor in %+v", s.Conns, name, s.Others)
			}
			if o.Ratio <= 0 || o.RatioMin > o.Ratio || o.Ratio > o.RatioMax {
				t.Errorf("conns=%d %s: ratio %v (%v–%v)", s.Conns, name, o.Ratio, o.RatioMin, o.RatioMax)
			}
			sides[name] = o.Side
		}
		for name, sd := range sides {
			if len(sd.Rates) != 2 || sd.medianRate() <= 0 || sd.P50 <= 0 || sd.P99 < sd.P50 || sd.P99 > 10*time.Second {
				t.Errorf("conns=%d %s: rates %v p50 %v p99 %v", s.Conns, name, sd.Rates, sd.P50, sd.P99)
			}
			// CPU is counted in ticks of 10 ms: a few hundred requests may
			// round to zero, never to more than a second each.
			if sd.CPUPerReq < 0 || sd.CPUPerReq > time.Second || sd.RedisPerReq < 0 || sd.RedisPerReq > time.Second {
				t.Errorf("conns=%d %s: CPU per request %v, redis %v", s.Conns, name, sd.CPUPerReq, sd.RedisPerReq)
			}
		}
		if s.Ratio <= 0 || s.RatioMin > s.Ratio || s.Ratio > s.RatioMax {
			t.Errorf("conns=%d: ratio %v (%v–%v)", s.Conns, s.Ratio, s.RatioMin, s.RatioMax)
		}
	}
	for _, want := range []string{"| 4 | worker |", "| 4 | guarantees |", "conns=4 kit/guarantees: rate", "conns=4 verified/baseline: rate"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no %q in the summary:\n%s", want, out.String())
		}
	}
}

// A refused delivery fails the round instead of being counted: here the
// worker is given another signing key than the deliveries carry.
func TestLoadgenFailsOnRefusedDeliveries(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server not found in PATH")
	}
	worker := proctest.Build(t, "github.com/digis/jobworker/cmd/worker")
	self := proctest.Build(t, "github.com/digis/jobworker/cmd/loadgen")
	// The last value of a variable wins: the worker gets another key.
	cfg, err := parseFlags([]string{"-worker", worker, "-conns", "2", "-pairs", "1", "-n", "20",
		"-worker-env", "QSTASH_CURRENT_SIGNING_KEY=sig_not_the_key_the_deliveries_have"})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Self = self
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	if _, err := run(ctx, cfg, &out); err == nil || !strings.Contains(err.Error(), "status 401") {
		t.Fatalf("run = %v, want a round failed with status 401\n%s", err, out.String())
	}
}
