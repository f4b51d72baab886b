// Package cputime reads the CPU time this process has used, for benchmarks
// that report CPU per operation: on a shared machine it is steadier than a
// wall-clock rate, and it counts every goroutine of the process (the load
// generator and the servers of an in-process benchmark together).
package cputime

import "time"

// Self returns the CPU time (user and system, every thread) this process
// has used so far; 0 where the platform does not tell.
func Self() time.Duration { return self() }
