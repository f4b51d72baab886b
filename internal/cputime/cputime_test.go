package cputime

import (
	"runtime"
	"testing"
	"time"
)

// CPU time grows with work done, and not with time spent idle.
func TestSelf(t *testing.T) {
	if runtime.GOOS == "windows" || runtime.GOOS == "plan9" {
		t.Skip("not measured on", runtime.GOOS)
	}
	start, wall := Self(), time.Now()
	x := 0
	for time.Since(wall) < 50*time.Millisecond { // busy: one core's worth
		for i := range 100_000 {
			x += i
		}
	}
	_ = x
	if got := Self() - start; got < 10*time.Millisecond {
		t.Fatalf("CPU after 50ms of busy work: %v", got)
	}
	before := Self()
	idle := time.NewTimer(100 * time.Millisecond) // the measurement itself: no work
	<-idle.C
	if got := Self() - before; got > 50*time.Millisecond {
		t.Fatalf("CPU while idle for 100ms: %v", got)
	}
}
