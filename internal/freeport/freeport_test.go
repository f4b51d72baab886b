package freeport

import (
	"net"
	"strconv"
	"testing"
)

// Picked ports are free, below the ephemeral range, never handed out twice
// by one process, and leave their offsets free as well.
func TestPick(t *testing.T) {
	seen := map[int]bool{}
	for range 200 {
		p, err := Pick()
		if err != nil {
			t.Fatal(err)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		if p < lo || p >= hi {
			t.Fatalf("port %d outside [%d, %d)", p, lo, hi)
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("port %d is not free: %v", p, err)
		}
		l.Close()
	}
	p, err := Pick(1000)
	if err != nil {
		t.Fatal(err)
	}
	if p+1000 >= hi {
		t.Fatalf("bus port %d not below %d", p+1000, hi)
	}
}

// A port something already listens on is skipped.
func TestPickSkipsPortsInUse(t *testing.T) {
	p, err := Pick()
	if err != nil {
		t.Fatal(err)
	}
	if p+1 >= hi {
		t.Skip("picked the last port of the span")
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+1)))
	if err != nil {
		t.Skipf("port %d taken meanwhile: %v", p+1, err)
	}
	defer l.Close()
	mu.Lock()
	next = p + 1 // the next candidate is the one held
	mu.Unlock()
	q, err := Pick()
	if err != nil {
		t.Fatal(err)
	}
	if q == p+1 {
		t.Fatalf("Pick returned port %d, which is in use", q)
	}
}
