// Package testwait waits, in tests, for a condition of the system under test
// to hold: a delivery recorded, a metric reached, a key gone. Tests wait on
// such conditions (or on channels), never on a fixed delay that may be too
// short on a busy machine.
package testwait

import (
	"testing"
	"time"
)

// For checks cond until it holds, first at once, then with waits doubling
// from 1 ms to 20 ms, and fails the test with what when within passes.
func For(tb testing.TB, within time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	wait := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(wait)
		wait = min(2*wait, 20*time.Millisecond)
	}
}
