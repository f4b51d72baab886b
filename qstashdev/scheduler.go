package qstashdev

import (
	"container/heap"
	"time"
)

// The scheduler: one goroutine and a min-heap of due times start every
// delayed or retried attempt, reopen flow-control rate windows and fire
// cron schedules. No polling: it sleeps until the earliest timer is due or
// an earlier one is added.

type timerKind uint8

const (
	timerMessage  timerKind = iota // a message's next attempt is due
	timerFlow                      // a flow-control rate window ends
	timerSchedule                  // a cron schedule fires
)

type timerItem struct {
	at   time.Time // monotonic
	seq  uint64
	kind timerKind
	msg  *message
	flow *flowKey
	sch  *schedule
	idx  int
}

// timerHeap is a min-heap by due time, ties broken by insertion order so
// messages due together stay FIFO. Guarded by Server.mu.
type timerHeap []*timerItem

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	if h[i].at.Equal(h[j].at) {
		return h[i].seq < h[j].seq
	}
	return h[i].at.Before(h[j].at)
}
func (h timerHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i]; h[i].idx = i; h[j].idx = j }
func (h *timerHeap) Push(x any) {
	it := x.(*timerItem)
	it.idx = len(*h)
	*h = append(*h, it)
}
func (h *timerHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	it.idx = -1
	return it
}

// addTimer schedules it, waking the loop when it is the new earliest. The
// caller holds s.mu.
func (s *Server) addTimer(it *timerItem) {
	s.seq++
	it.seq = s.seq
	heap.Push(&s.timers, it)
	if it.idx == 0 {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// removeTimer unschedules it if still pending. The caller holds s.mu.
func (s *Server) removeTimer(it *timerItem) {
	if it != nil && it.idx >= 0 && it.idx < len(s.timers) && s.timers[it.idx] == it {
		heap.Remove(&s.timers, it.idx)
	}
}

// loop is the one scheduler goroutine: it sleeps until the earliest timer is
// due (or a new earlier one is added), fires every due timer with s.mu
// held, and repeats. A delayed message starts within timer resolution of
// its due time.
func (s *Server) loop() {
	defer close(s.loopDone)
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		s.mu.Lock()
		now := time.Now()
		for fired := 0; fired < maxFirePerLock && len(s.timers) > 0 && !s.timers[0].at.After(now); fired++ {
			it := heap.Pop(&s.timers).(*timerItem)
			s.fire(it)
		}
		wait := time.Duration(-1)
		if len(s.timers) > 0 {
			// Measured after firing: what was not yet due when firing began
			// may be due now, and must not wait as long again.
			wait = max(s.timers[0].at.Sub(time.Now()), 0)
		}
		s.mu.Unlock()
		if wait >= 0 {
			t.Reset(wait)
		} else {
			t.Stop()
		}
		select {
		case <-t.C:
		case <-s.wake:
		case <-s.stop:
			t.Stop()
			return
		}
	}
}

// maxFirePerLock bounds the timers fired under one hold of s.mu, so a
// thousand messages due at once do not keep the API and the deliveries'
// outcomes waiting for the lock until all have started.
const maxFirePerLock = 256

// fire runs one due timer. The caller holds s.mu.
func (s *Server) fire(it *timerItem) {
	switch it.kind {
	case timerMessage:
		if it.msg.timer == it {
			it.msg.timer = nil
		}
		s.ready(it.msg)
	case timerFlow:
		if it.flow.timer == it {
			it.flow.timer = nil
		}
		s.pumpFlow(it.flow)
	case timerSchedule:
		if it.sch.timer == it {
			it.sch.timer = nil
		}
		s.fireSchedule(it.sch)
	}
}

// monoAt converts a wall-clock instant of Config.Now into a monotonic
// deadline for the timer heap.
func (s *Server) monoAt(wall time.Time) time.Time {
	return time.Now().Add(wall.Sub(s.cfg.Now()))
}
