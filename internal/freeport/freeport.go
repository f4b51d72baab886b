// Package freeport picks loopback TCP ports for test servers that run in
// other processes (redis-server, the binaries under test), where the port is
// chosen in one process and bound in another, and nothing else may take it
// in between.
//
// Listening on port 0 and closing gets a port from the kernel's ephemeral
// range, the range every outgoing connection's local port is also drawn
// from: in a busy test run (thousands of connections a second, several test
// binaries at once) one of them can take the port in that gap, and the
// child exits with "address already in use". Pick therefore chooses ports
// below the ephemeral range (net.ipv4.ip_local_port_range), where the kernel
// never binds on its own, checks each by listening on it, and walks them in
// order from a random start per process, so one test binary never hands out
// a port twice and two binaries rarely meet.
package freeport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
)

// Ports are picked from [low, the start of the ephemeral range), or up to
// defaultHigh when that range cannot be read or starts too low to leave
// room.
const (
	low         = 10000
	defaultHigh = 32768 // Linux's default ip_local_port_range starts here
	minSpan     = 2000
)

var (
	mu     sync.Mutex
	lo, hi int // the span picked from, set by the first Pick
	next   int
)

// Pick returns a loopback TCP port that is free now, and for each offset
// given, port+offset is free too (a Redis Cluster node's bus port).
func Pick(offsets ...int) (int, error) {
	mu.Lock()
	defer mu.Unlock()
	if hi == 0 {
		lo, hi = span()
		next = lo + rand.IntN(hi-lo)
	}
	for range hi - lo {
		p := next
		if next++; next >= hi {
			next = lo
		}
		if free(p, offsets) {
			return p, nil
		}
	}
	return 0, errors.New("freeport: no free port below the ephemeral range")
}

// free reports whether p and p+each offset can be listened on, all of them
// below hi.
func free(p int, offsets []int) bool {
	ports := append([]int{p}, offsets...)
	for i := 1; i < len(ports); i++ {
		if ports[i] += p; ports[i] >= hi {
			return false
		}
	}
	var held []net.Listener
	defer func() {
		for _, l := range held {
			_ = l.Close()
		}
	}()
	for _, q := range ports {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(q)))
		if err != nil {
			return false
		}
		held = append(held, l)
	}
	return true
}

// span is where ports are picked from: from low up to the start of the
// ephemeral range.
func span() (int, int) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return low, defaultHigh
	}
	var first, last int
	if _, err := fmt.Sscan(string(b), &first, &last); err != nil || first < low+minSpan {
		return low, defaultHigh
	}
	return low, first
}
