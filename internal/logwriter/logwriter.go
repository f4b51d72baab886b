// Package logwriter is the buffered writer under a process's logger: a
// log line is appended to memory and written out with the lines around it,
// by one goroutine, when the buffer holds FlushBytes or Interval has passed
// since its first line, so a request pays for a copy and not for a write
// system call.
//
// The buffer is bounded. When the output is slower than the lines arrive
// (a stalled log collector, a full pipe) and MaxBytes are waiting, new lines
// are dropped, never blocked on: a stalled stdout must not stall the
// requests that log, whose senders would time out and redeliver. Nothing is
// dropped silently: Dropped counts the lines, and once the output accepts
// writes again OnDrop is called with how many were lost since the last call
// (the processes log a warning with the count and export the counter).
//
// Flush writes out what is buffered; Close flushes and stops the goroutine,
// and after it every Write goes straight to the output, so the lines of a
// graceful shutdown (and anything logged after it) are never lost. A crash
// loses what was buffered: at most Interval's worth of lines.
package logwriter

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Config tunes a Writer. The zero value is usable.
type Config struct {
	// FlushBytes is how much buffered output wakes the writer goroutine
	// before Interval passed. Defaults to 64 KiB.
	FlushBytes int
	// MaxBytes bounds what waits to be written; a line that would not fit is
	// dropped and counted. Defaults to 4 MiB.
	MaxBytes int
	// Interval is the longest a line waits in the buffer. Defaults to 100ms.
	Interval time.Duration
	// OnDrop is called, from the writer goroutine and outside any lock
	// (so it may log through this Writer), with the number of lines dropped
	// since its last call, after a write to the output succeeded. Defaults
	// to nil: only Dropped counts them.
	OnDrop func(lines uint64)
}

// ErrFull is what Write returns for a line it dropped.
var ErrFull = errors.New("logwriter: buffer full, line dropped")

// Writer buffers lines for an output. Each Write must be whole lines, as
// slog handlers write them (one record per call), so a dropped Write never
// leaves half a line.
type Writer struct {
	out io.Writer
	cfg Config

	mu      sync.Mutex
	buf     []byte // lines waiting
	closed  bool
	pending bool // the goroutine was told buf has lines

	// outMu serialises writes to out (the goroutine, Flush, writes after
	// Close) and owns spare, the buffer being written.
	outMu sync.Mutex
	spare []byte

	wake     chan struct{} // buf went from empty to not empty
	full     chan struct{} // buf reached FlushBytes
	stop     chan struct{}
	stopOnce sync.Once
	stopped  chan struct{}

	dropped  atomic.Uint64 // lines lost, ever
	reportMu sync.Mutex
	reported uint64 // dropped as of the last OnDrop
}

// New starts a Writer for out. Call Close when the process ends.
func New(out io.Writer, cfg Config) *Writer {
	if cfg.FlushBytes <= 0 {
		cfg.FlushBytes = 64 << 10
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 4 << 20
	}
	if cfg.MaxBytes < cfg.FlushBytes {
		cfg.MaxBytes = cfg.FlushBytes
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 100 * time.Millisecond
	}
	w := &Writer{
		out: out, cfg: cfg,
		buf:  make([]byte, 0, cfg.FlushBytes),
		wake: make(chan struct{}, 1), full: make(chan struct{}, 1),
		stop: make(chan struct{}), stopped: make(chan struct{}),
	}
	go w.run()
	return w
}

// Write buffers p, or writes it through once the Writer is closed. It never
// waits for the output while the Writer runs: with MaxBytes waiting it drops
// p, counts it and returns ErrFull.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		w.outMu.Lock()
		defer w.outMu.Unlock()
		return w.out.Write(p)
	}
	if len(w.buf)+len(p) > w.cfg.MaxBytes {
		w.mu.Unlock()
		w.dropped.Add(lines(p))
		return 0, ErrFull
	}
	w.buf = append(w.buf, p...)
	wake := !w.pending
	w.pending = true
	full := len(w.buf) >= w.cfg.FlushBytes
	w.mu.Unlock()
	if wake {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
	if full {
		select {
		case w.full <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

// Dropped is the number of lines dropped since New: buffer full, or a
// failed write to the output.
func (w *Writer) Dropped() uint64 { return w.dropped.Load() }

// Flush writes out every line buffered so far.
func (w *Writer) Flush() error {
	w.outMu.Lock()
	defer w.outMu.Unlock()
	return w.flushLocked()
}

// flushLocked swaps the buffers and writes the full one. outMu is held, so
// writers fill the other buffer meanwhile.
func (w *Writer) flushLocked() error {
	w.mu.Lock()
	w.buf, w.spare = w.spare[:0], w.buf
	w.pending = false
	w.mu.Unlock()
	if len(w.spare) == 0 {
		return nil
	}
	_, err := w.out.Write(w.spare)
	if err != nil {
		w.dropped.Add(lines(w.spare))
	}
	if cap(w.spare) > 16*w.cfg.FlushBytes {
		// A burst's buffer is not kept for ever; up to 1 MiB (by default)
		// is, so a busy process does not grow a new one each flush.
		w.spare = nil
	} else {
		w.spare = w.spare[:0]
	}
	return err
}

// Close flushes, stops the goroutine and makes later Writes go straight to
// the output, in order after the buffered lines. It is safe to call more
// than once and from several goroutines.
func (w *Writer) Close() error {
	w.stopOnce.Do(func() { close(w.stop) })
	<-w.stopped
	w.outMu.Lock()
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	err := w.flushLocked()
	w.outMu.Unlock()
	w.report()
	return err
}

func (w *Writer) run() {
	defer close(w.stopped)
	t := time.NewTimer(w.cfg.Interval)
	t.Stop()
	for {
		select {
		case <-w.wake: // sent by the first line after a flush, so before any full
		case <-w.stop:
			return
		}
		// A line is waiting: give it Interval to gather company, unless
		// the buffer fills first.
		t.Reset(w.cfg.Interval)
		select {
		case <-t.C:
		case <-w.full:
			t.Stop()
		case <-w.stop:
			t.Stop()
			return
		}
		if w.Flush() == nil {
			w.report()
		}
	}
}

// report calls OnDrop with what was dropped since its last call.
func (w *Writer) report() {
	if w.cfg.OnDrop == nil {
		return
	}
	w.reportMu.Lock()
	defer w.reportMu.Unlock()
	n := w.dropped.Load()
	if n == w.reported {
		return
	}
	w.cfg.OnDrop(n - w.reported)
	w.reported = n
}

// lines counts the lines in p (a partial last line counts as one).
func lines(p []byte) uint64 {
	n := uint64(bytes.Count(p, []byte{'\n'}))
	if len(p) > 0 && p[len(p)-1] != '\n' {
		n++
	}
	return n
}
