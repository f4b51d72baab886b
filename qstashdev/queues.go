package qstashdev

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

// Queues (docs/qstash-protocol.md §10.1, §10.3): the FIFO gate in front of
// a message's attempts, and the /v2/queues API.

// queue is a named FIFO queue: at most parallelism messages are active at
// once, and a message keeps its slot through its retries and until its
// callbacks are done. Guarded by Server.mu.
type queue struct {
	name        string
	parallelism int
	paused      bool
	createdAt   time.Time
	updatedAt   time.Time
	waiting     []*message
	active      int
	lag         int // messages of this queue not yet finished
}

// getQueue returns the named queue, creating it (parallelism 1) if needed.
// The caller holds s.mu.
func (s *Server) getQueue(name string) *queue {
	q := s.queues[name]
	if q == nil {
		now := s.cfg.Now()
		q = &queue{name: name, parallelism: 1, createdAt: now, updatedAt: now}
		s.queues[name] = q
		s.jQueue(q)
	}
	return q
}

// pumpQueue gives free slots to waiting messages in order. The caller
// holds s.mu.
func (s *Server) pumpQueue(q *queue) {
	for !q.paused && q.active < q.parallelism && len(q.waiting) > 0 {
		m := q.waiting[0]
		q.waiting[0] = nil
		q.waiting = q.waiting[1:]
		m.inQueueWait = false
		q.active++
		m.queueSlot = true
		s.attemptReady(m)
	}
}

// releaseQueueSlot frees m's slot once m and its callbacks are done. The
// caller holds s.mu.
func (s *Server) releaseQueueSlot(m *message) {
	if m.done && m.children == 0 && m.queueSlot {
		m.queueSlot = false
		m.queue.active--
		s.pumpQueue(m.queue)
	}
}

type queueJSON struct {
	Name        string `json:"name"`
	CreatedAt   int64  `json:"createdAt"`
	UpdatedAt   int64  `json:"updatedAt"`
	Parallelism int    `json:"parallelism"`
	Paused      bool   `json:"paused"`
	Lag         int    `json:"lag"`
}

func (q *queue) view() queueJSON {
	return queueJSON{Name: q.name, CreatedAt: q.createdAt.UnixMilli(), UpdatedAt: q.updatedAt.UnixMilli(),
		Parallelism: q.parallelism, Paused: q.paused, Lag: q.lag}
}

func (s *Server) routeQueues(w http.ResponseWriter, r *http.Request, rest string) {
	name, action, _ := strings.Cut(rest, "/")
	switch {
	case rest == "" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, views(s, s.queues))
	case rest == "" && r.Method == http.MethodPost:
		s.handleQueueUpsert(w, r)
	case rest == "":
		writeError(w, errMethod)
	case action == "" && r.Method == http.MethodGet:
		serveView(s, w, s.queues, "queue", name)
	case action == "" && r.Method == http.MethodDelete:
		s.mu.Lock()
		q := s.queues[name]
		if q != nil {
			for _, m := range s.messages {
				if m.queue == q {
					s.cancel(m)
				}
			}
			delete(s.queues, name)
			s.jQueueDeleted(name)
		}
		s.mu.Unlock()
		if q == nil {
			writeError(w, errorf(http.StatusNotFound, "queue %s not found", name))
			return
		}
		w.WriteHeader(http.StatusOK)
	case (strings.EqualFold(action, "pause") || strings.EqualFold(action, "resume")) && r.Method == http.MethodPost:
		s.mu.Lock()
		q := s.queues[name]
		if q != nil {
			q.paused = strings.EqualFold(action, "pause")
			q.updatedAt = s.cfg.Now()
			s.jQueue(q)
			s.pumpQueue(q)
		}
		s.mu.Unlock()
		if q == nil {
			writeError(w, errorf(http.StatusNotFound, "queue %s not found", name))
			return
		}
		w.WriteHeader(http.StatusOK)
	case action == "" || strings.EqualFold(action, "pause") || strings.EqualFold(action, "resume"):
		writeError(w, errMethod)
	default:
		writeError(w, errNotFound)
	}
}

// handleQueueUpsert is POST /v2/queues: create or update a queue's
// parallelism and paused state.
func (s *Server) handleQueueUpsert(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r, 1<<20)
	if err != nil {
		writeError(w, err)
		return
	}
	var req struct {
		QueueName   string `json:"queueName"`
		Parallelism *int   `json:"parallelism"`
		Paused      *bool  `json:"paused"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, errorf(http.StatusBadRequest, "invalid JSON body: %v", err))
		return
	}
	if !validName(req.QueueName) {
		writeError(w, errorf(http.StatusBadRequest, "invalid queue name %q", req.QueueName))
		return
	}
	if req.Parallelism != nil && (*req.Parallelism < 0 || *req.Parallelism > 1000) {
		writeError(w, errorf(http.StatusBadRequest, "invalid parallelism %d", *req.Parallelism))
		return
	}
	s.mu.Lock()
	q := s.getQueue(req.QueueName)
	if req.Parallelism != nil && *req.Parallelism > 0 {
		q.parallelism = *req.Parallelism
	}
	if req.Paused != nil {
		q.paused = *req.Paused
	}
	q.updatedAt = s.cfg.Now()
	s.jQueue(q)
	s.pumpQueue(q)
	s.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}
