package logwriter_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/logwriter"
	"github.com/digis/jobworker/internal/testwait"
)

// output records what reached it; gate, when set, holds every write until
// it is closed (a stalled stdout).
type output struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
	gate   chan struct{}
	fail   error
}

func (o *output) Write(p []byte) (int, error) {
	if o.gate != nil {
		<-o.gate
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.fail != nil {
		return 0, o.fail
	}
	o.writes++
	return o.buf.Write(p)
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

func (o *output) Writes() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.writes
}

// Every line written before Close is in the output after it, whole and in
// each writer's order, however many goroutines wrote.
func TestCloseLosesNoLine(t *testing.T) {
	t.Parallel()
	out := &output{}
	w := logwriter.New(out, logwriter.Config{FlushBytes: 4 << 10, Interval: time.Hour})
	const writers, each = 8, 2000
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := fmt.Fprintf(w, "writer=%d line=%d\n", g, i); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != writers*each {
		t.Fatalf("%d lines out, want %d", len(lines), writers*each)
	}
	next := make([]int, writers)
	for _, l := range lines {
		var g, i int
		if _, err := fmt.Sscanf(l, "writer=%d line=%d", &g, &i); err != nil {
			t.Fatalf("broken line %q: %v", l, err)
		}
		if i != next[g] {
			t.Fatalf("writer %d: line %d after %d", g, i, next[g]-1)
		}
		next[g]++
	}
	if out.Writes() >= writers*each/10 {
		t.Errorf("%d writes to the output for %d lines: not buffered", out.Writes(), writers*each)
	}
	if w.Dropped() != 0 {
		t.Errorf("dropped %d", w.Dropped())
	}
}

// A lone line reaches the output within the interval, without a Flush.
func TestFlushesOnInterval(t *testing.T) {
	t.Parallel()
	out := &output{}
	w := logwriter.New(out, logwriter.Config{Interval: 10 * time.Millisecond})
	defer w.Close()
	_, _ = w.Write([]byte("one\n"))
	testwait.For(t, 5*time.Second, "the line written out", func() bool { return out.String() == "one\n" })
	_, _ = w.Write([]byte("two\n"))
	testwait.For(t, 5*time.Second, "the second line written out", func() bool { return out.String() == "one\ntwo\n" })
}

// FlushBytes of lines are written out at once, not after the interval.
func TestFlushesOnSize(t *testing.T) {
	t.Parallel()
	out := &output{}
	w := logwriter.New(out, logwriter.Config{FlushBytes: 1 << 10, Interval: time.Hour})
	defer w.Close()
	line := []byte(strings.Repeat("x", 99) + "\n")
	for range 11 { // 1100 bytes
		_, _ = w.Write(line)
	}
	testwait.For(t, 5*time.Second, "the full buffer written out", func() bool { return len(out.String()) >= 1<<10 })
}

// A stalled output never blocks Write: past MaxBytes lines are dropped and
// counted, OnDrop says how many once the output takes writes again, and
// every line that was not dropped arrives.
func TestStalledOutputDropsAndCounts(t *testing.T) {
	t.Parallel()
	out := &output{gate: make(chan struct{})}
	reported := make(chan uint64, 10)
	w := logwriter.New(out, logwriter.Config{FlushBytes: 100, MaxBytes: 1000, Interval: time.Millisecond,
		OnDrop: func(n uint64) { reported <- n }})
	line := []byte(strings.Repeat("y", 9) + "\n") // 10 bytes
	// The first line is taken by the goroutine, which then blocks in the
	// output; up to MaxBytes more wait in the buffer.
	_, _ = w.Write(line)
	accepted, dropped := 1, 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 500 {
			if _, err := w.Write(line); errors.Is(err, logwriter.ErrFull) {
				dropped++
			} else if err == nil {
				accepted++
			} else {
				t.Error(err)
			}
		}
	}()
	select {
	case <-done: // Write did not wait for the output
	case <-time.After(30 * time.Second):
		t.Fatal("Write blocked on a stalled output")
	}
	if dropped == 0 || uint64(dropped) != w.Dropped() {
		t.Fatalf("dropped %d lines, Dropped says %d", dropped, w.Dropped())
	}
	close(out.gate)
	var sum uint64
	testwait.For(t, 5*time.Second, "OnDrop called with every dropped line", func() bool {
		for {
			select {
			case n := <-reported:
				sum += n
			default:
				return sum == uint64(dropped)
			}
		}
	})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(out.String(), "\n"); got != accepted {
		t.Fatalf("%d lines out, %d accepted", got, accepted)
	}
}

// A failed write to the output counts its lines as dropped.
func TestFailedOutputCounts(t *testing.T) {
	t.Parallel()
	out := &output{fail: errors.New("broken pipe")}
	w := logwriter.New(out, logwriter.Config{Interval: time.Hour})
	_, _ = w.Write([]byte("a\nb\n"))
	_, _ = w.Write([]byte("c\n"))
	if err := w.Flush(); err == nil {
		t.Fatal("Flush hid the output's error")
	}
	if w.Dropped() != 3 {
		t.Fatalf("Dropped %d, want 3", w.Dropped())
	}
	_ = w.Close()
}

// After Close, a line goes straight to the output (what the process logs
// after its shutdown is not left in a buffer nobody flushes).
func TestWriteAfterClose(t *testing.T) {
	t.Parallel()
	out := &output{}
	w := logwriter.New(out, logwriter.Config{Interval: time.Hour})
	_, _ = w.Write([]byte("before\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write([]byte("after\n"))
	if got := out.String(); got != "before\nafter\n" {
		t.Fatalf("output %q", got)
	}
}
