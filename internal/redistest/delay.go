package redistest

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Delay starts a TCP proxy to addr (a Server's Addr) and returns its
// address. Every chunk a client sends is held for delay before it is passed
// on, so each round trip through the proxy takes at least delay: a healthy
// Redis behind a slow network, over real TCP. The proxy and its connections
// close when the test ends.
func Delay(tb testing.TB, addr string, delay time.Duration) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	tb.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", addr)
			if err != nil {
				_ = in.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, in, out)
			mu.Unlock()
			go func() { _, _ = io.Copy(in, out); _ = in.Close() }()
			go forwardLate(in, out, delay)
		}
	}()
	return ln.Addr().String()
}

// forwardLate copies in to out, each chunk delay after it was read.
func forwardLate(in, out net.Conn, delay time.Duration) {
	defer out.Close()
	buf := make([]byte, 64<<10)
	timer := time.NewTimer(0)
	<-timer.C
	for {
		n, err := in.Read(buf)
		if err != nil {
			return
		}
		timer.Reset(delay) // the injected latency itself
		<-timer.C
		if _, err := out.Write(buf[:n]); err != nil {
			return
		}
	}
}
