package qstashdev

import (
	"context"
	"net/http"
	"time"
)

// The development-only API, under /qstashdev/ so nobody mistakes it for
// part of QStash: what the server holds now, and a wait until it has
// nothing left to deliver. The real service has no such endpoint; code
// that must also run against QStash should not call it.

// devPrefix is the first path segment of the development-only API.
const devPrefix = "qstashdev"

// Stats is a snapshot of the server's messages (Server.Stats, GET
// /qstashdev/stats).
type Stats struct {
	// Pending counts messages not yet delivered, dead-lettered or
	// cancelled: Scheduled + Waiting + InFlight + those about to start.
	Pending int `json:"pending"`
	// Scheduled counts pending messages waiting for their delay,
	// not-before time or retry backoff.
	Scheduled int `json:"scheduled"`
	// Waiting counts pending messages that are due but held by their queue
	// (parallelism, pause) or flow-control key.
	Waiting int `json:"waiting"`
	// InFlight counts attempts whose HTTP request is running now.
	InFlight int `json:"inFlight"`
	// Dead counts dead-letter queue entries.
	Dead int `json:"dead"`
	// Schedules counts cron schedules (they never make the server busy).
	Schedules int `json:"schedules"`
	// Idle is Pending == 0: nothing is left to deliver.
	Idle bool `json:"idle"`
}

// Stats reports what the server holds now.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Pending: s.pending, Dead: len(s.dlq.byID), Schedules: len(s.schedules), Idle: s.pending == 0}
	for _, m := range s.messages {
		switch {
		case m.inflight:
			st.InFlight++
		case m.timer != nil:
			st.Scheduled++
		case m.inQueueWait || m.inFlowWait:
			st.Waiting++
		}
	}
	return st
}

// WaitIdle returns nil once no message is pending (Stats.Idle), or ctx's
// error. Delayed messages count as pending: with long delays, set
// Config.DelayScale or cancel them first.
func (s *Server) WaitIdle(ctx context.Context) error {
	s.mu.Lock()
	if s.pending == 0 {
		s.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	s.idleWaiters = append(s.idleWaiters, ch)
	s.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for i, c := range s.idleWaiters {
			if c == ch {
				s.idleWaiters = append(s.idleWaiters[:i], s.idleWaiters[i+1:]...)
				break
			}
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}

// notifyIdle wakes the WaitIdle callers once nothing is pending. The
// caller holds s.mu.
func (s *Server) notifyIdle() {
	if s.pending != 0 {
		return
	}
	for _, ch := range s.idleWaiters {
		close(ch)
	}
	s.idleWaiters = nil
}

// maxIdleWait bounds ?waitIdle= so a forgotten request cannot hang forever.
const maxIdleWait = 5 * time.Minute

// routeDev serves GET /qstashdev/stats[?waitIdle=<duration>]: the Stats,
// after waiting up to the duration for the server to become idle. It
// answers 200 when the wait ended idle (or none was asked), and 408 with
// the current Stats when the wait timed out, so `curl -f` fails then.
func (s *Server) routeDev(w http.ResponseWriter, r *http.Request, rest string) {
	if rest != "stats" {
		writeError(w, errNotFound)
		return
	}
	if r.Method != http.MethodGet {
		writeError(w, errMethod)
		return
	}
	status := http.StatusOK
	if v := r.URL.Query().Get("waitIdle"); v != "" {
		d, err := parseDuration(v)
		if err != nil || d <= 0 || d > maxIdleWait {
			writeError(w, errorf(http.StatusBadRequest, "invalid waitIdle %q: want a duration like 10s, at most 5m", v))
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), d)
		err = s.WaitIdle(ctx)
		cancel()
		if err != nil {
			status = http.StatusRequestTimeout
		}
	}
	writeJSON(w, status, s.Stats())
}
