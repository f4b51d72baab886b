//go:build unix

package qstashdev_test

import (
	"syscall"
	"time"
)

// processCPU is the CPU time (user + system) this process has used:
// the server, the publisher and the destination together. Less sensitive
// to other load on the machine than a wall-clock rate.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
