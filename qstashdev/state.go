package qstashdev

import (
	"net/http"
	"slices"
	"time"
)

// Message states as the logs API names them (§2.2, §5.6).
const (
	stateCreated         = "CREATED"
	stateActive          = "ACTIVE"
	stateRetry           = "RETRY"
	stateError           = "ERROR"
	stateDelivered       = "DELIVERED"
	stateFailed          = "FAILED"
	stateCancelRequested = "CANCEL_REQUESTED"
	stateCancelled       = "CANCELLED"
)

// message is one delivery target of a publish (a URL-group publish makes one
// per endpoint). Fields above the blank line never change after creation,
// so delivery goroutines may read them without the lock.
type message struct {
	id         string
	url        string
	topic      string
	endpoint   string
	queueName  string
	method     string
	header     http.Header
	body       []byte
	retries    int
	retryDelay *retryExpr
	timeout    time.Duration
	callback   *callbackConfig
	failure    *callbackConfig
	flow       *flowConfig
	labels     []string
	redact     redaction
	scheduleID string
	callerIP   string
	createdAt  time.Time
	notBefore  time.Time
	origHeader http.Header // publish config headers, replayed by DLQ retry
	isCallback bool        // carries a callback payload; fires no callbacks itself

	queue       *queue
	flowKey     *flowKey
	parent      *message // for callback messages: the message they report on
	children    int      // callback messages of this message still pending
	state       string
	attempts    int
	nextAt      time.Time // wall time of the next attempt
	timer       *timerItem
	inflight    bool
	cancelled   bool
	done        bool
	inQueueWait bool
	inFlowWait  bool
	queueSlot   bool
	flowSlot    bool
}

// queue is a named FIFO queue (§2.6): at most parallelism messages are
// active at once, and a message keeps its slot through its retries and
// until its callbacks are done.
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

// flowKey gates attempts sharing an Upstash-Flow-Control-Key (§2.6).
type flowKey struct {
	key         string
	parallelism int
	rate        int
	period      time.Duration
	waiting     []*message
	inflight    int
	windowStart time.Time
	count       int
	timer       *timerItem
}

type topic struct {
	name      string
	createdAt time.Time
	updatedAt time.Time
	endpoints []endpoint
}

type endpoint struct {
	Name string `json:"name,omitempty"`
	URL  string `json:"url"`
}

type dedupEntry struct {
	key     string
	expires time.Time
	resp    any // the publish response to replay
	gone    bool
}

// dedupWindow is how long a deduplication id is remembered (§2.7).
const dedupWindow = 10 * time.Minute

// --- lifecycle (all called with s.mu held) --------------------------------

// admit registers a new message and schedules its first attempt.
func (s *Server) admit(m *message) {
	s.messages[m.id] = m
	s.pending++
	m.state = stateCreated
	if m.queue != nil {
		m.queue.lag++
	}
	s.event(m, stateCreated, nil, "")
	if d := m.notBefore.Sub(s.cfg.Now()); d > 0 {
		m.nextAt = m.notBefore
		m.timer = &timerItem{at: time.Now().Add(d), kind: timerMessage, msg: m}
		s.addTimer(m.timer)
		return
	}
	s.ready(m)
}

// ready is called when an attempt of m is due.
func (s *Server) ready(m *message) {
	if m.done {
		return
	}
	if m.queue != nil && !m.queueSlot {
		m.inQueueWait = true
		m.queue.waiting = append(m.queue.waiting, m)
		s.pumpQueue(m.queue)
		return
	}
	s.attemptReady(m)
}

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

func (s *Server) attemptReady(m *message) {
	if fk := m.flowKey; fk != nil {
		m.inFlowWait = true
		fk.waiting = append(fk.waiting, m)
		s.pumpFlow(fk)
		return
	}
	s.start(m)
}

func (s *Server) pumpFlow(fk *flowKey) {
	now := time.Now()
	if fk.rate > 0 && !now.Before(fk.windowStart.Add(fk.period)) {
		fk.windowStart, fk.count = now, 0
	}
	for len(fk.waiting) > 0 {
		if fk.parallelism > 0 && fk.inflight >= fk.parallelism {
			return
		}
		if fk.rate > 0 && fk.count >= fk.rate {
			if fk.timer == nil {
				fk.timer = &timerItem{at: fk.windowStart.Add(fk.period), kind: timerFlow, flow: fk}
				s.addTimer(fk.timer)
			}
			return
		}
		m := fk.waiting[0]
		fk.waiting[0] = nil
		fk.waiting = fk.waiting[1:]
		m.inFlowWait = false
		fk.inflight++
		fk.count++
		m.flowSlot = true
		s.start(m)
	}
}

// start launches one delivery attempt in its own goroutine.
func (s *Server) start(m *message) {
	if s.closed {
		return
	}
	m.inflight = true
	if !m.cancelled {
		m.state = stateActive
	}
	s.event(m, stateActive, nil, "")
	a := attempt{
		url: m.url, method: m.method, header: m.header, body: m.body,
		retried: m.attempts, timeout: m.timeout, key: s.curKey,
		messageID: m.id, topic: m.topic, scheduleID: m.scheduleID, callerIP: m.callerIP,
	}
	if a.timeout == 0 {
		a.timeout = s.cfg.DeliveryTimeout
	}
	s.deliveries.Add(1)
	go func() {
		defer s.deliveries.Done()
		res := s.deliver(a)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.finishAttempt(m, res)
	}()
}

// finishAttempt classifies an attempt's outcome (§2.2) and decides what
// comes next: done, retry, or dead letter.
func (s *Server) finishAttempt(m *message, res *attemptResult) {
	m.inflight = false
	m.attempts++
	if m.flowSlot {
		m.flowSlot = false
		m.flowKey.inflight--
		defer s.pumpFlow(m.flowKey)
	}
	if m.cancelled {
		s.finalize(m, stateCancelled)
		return
	}
	if m.callback != nil && !m.isCallback {
		s.spawnCallback(m, m.callback, res, "")
	}
	if res.success() {
		s.log.Debug("delivered", "messageId", m.id, "url", m.url, "status", res.status, "retried", m.attempts-1)
		s.event(m, stateDelivered, res, "")
		s.finalize(m, stateDelivered)
		return
	}
	errText := res.errorText()
	nonRetryable := res.status == 489 && equalFoldTrim(res.header.Get("Upstash-NonRetryable-Error"), "true")
	if nonRetryable || m.attempts > m.retries {
		s.event(m, stateError, res, errText)
		dlqID := s.deadLetter(m, res)
		s.log.Info("dead-lettered", "messageId", m.id, "url", m.url, "status", res.status,
			"attempts", m.attempts, "nonRetryable", nonRetryable, "dlqId", dlqID)
		if m.failure != nil && !m.isCallback {
			s.spawnCallback(m, m.failure, res, dlqID)
		}
		s.event(m, stateFailed, res, errText)
		s.finalize(m, stateFailed)
		return
	}
	wait := s.backoff(m, res)
	m.state = stateRetry
	m.nextAt = s.cfg.Now().Add(wait)
	s.event(m, stateError, res, errText)
	s.event(m, stateRetry, res, errText)
	s.log.Debug("retry scheduled", "messageId", m.id, "status", res.status, "retried", m.attempts, "in", wait)
	m.timer = &timerItem{at: time.Now().Add(wait), kind: timerMessage, msg: m}
	s.addTimer(m.timer)
}

// finalize ends m's life: it leaves every wait list and index, and frees its
// queue slot once its callbacks are done too.
func (s *Server) finalize(m *message, state string) {
	if m.done {
		return
	}
	m.done = true
	m.state = state
	s.removeTimer(m.timer)
	m.timer = nil
	if m.inQueueWait {
		m.queue.waiting = slices.DeleteFunc(m.queue.waiting, func(x *message) bool { return x == m })
		m.inQueueWait = false
	}
	if m.inFlowWait {
		m.flowKey.waiting = slices.DeleteFunc(m.flowKey.waiting, func(x *message) bool { return x == m })
		m.inFlowWait = false
	}
	delete(s.messages, m.id)
	s.pending--
	if m.queue != nil {
		m.queue.lag--
	}
	if state == stateCancelled {
		s.event(m, stateCancelled, nil, "")
	}
	if m.scheduleID != "" {
		if sch := s.schedules[m.scheduleID]; sch != nil {
			if _, ok := sch.lastStates[m.id]; ok {
				sch.lastStates[m.id] = scheduleStateOf(state)
			}
		}
	}
	s.releaseQueueSlot(m)
	if p := m.parent; p != nil {
		m.parent = nil
		p.children--
		s.releaseQueueSlot(p)
	}
}

func (s *Server) releaseQueueSlot(m *message) {
	if m.done && m.children == 0 && m.queueSlot {
		m.queueSlot = false
		m.queue.active--
		s.pumpQueue(m.queue)
	}
}

// cancel stops m. An attempt already in flight cannot be recalled; its
// outcome is ignored and the message ends as cancelled.
func (s *Server) cancel(m *message) {
	if m.done {
		return
	}
	m.cancelled = true
	if m.inflight {
		m.state = stateCancelRequested
		s.event(m, stateCancelRequested, nil, "")
		return
	}
	s.finalize(m, stateCancelled)
}

func scheduleStateOf(state string) string {
	switch state {
	case stateDelivered:
		return "SUCCESS"
	case stateFailed, stateCancelled:
		return "FAIL"
	default:
		return "IN_PROGRESS"
	}
}

// getQueue returns the named queue, creating it (parallelism 1) if needed.
func (s *Server) getQueue(name string) *queue {
	q := s.queues[name]
	if q == nil {
		now := s.cfg.Now()
		q = &queue{name: name, parallelism: 1, createdAt: now, updatedAt: now}
		s.queues[name] = q
	}
	return q
}

// getFlowKey returns the key's gate with the latest message's settings
// (§2.6: the newest config wins).
func (s *Server) getFlowKey(fc *flowConfig) *flowKey {
	fk := s.flows[fc.key]
	if fk == nil {
		fk = &flowKey{key: fc.key}
		s.flows[fc.key] = fk
	}
	fk.parallelism, fk.rate, fk.period = fc.parallelism, fc.rate, fc.period
	return fk
}

// rememberDedup stores a publish response under key for the window,
// evicting expired keys first (they expire in insertion order).
func (s *Server) rememberDedup(key string, resp any) {
	now := time.Now()
	for len(s.dedupOrder) > 0 && (s.dedupOrder[0].gone || !now.Before(s.dedupOrder[0].expires)) {
		e := s.dedupOrder[0]
		if s.dedup[e.key] == e {
			delete(s.dedup, e.key)
		}
		s.dedupOrder[0] = nil
		s.dedupOrder = s.dedupOrder[1:]
	}
	e := &dedupEntry{key: key, expires: now.Add(dedupWindow), resp: resp}
	s.dedup[key] = e
	s.dedupOrder = append(s.dedupOrder, e)
}

func (s *Server) lookupDedup(key string) (any, bool) {
	e := s.dedup[key]
	if e == nil {
		return nil, false
	}
	if !time.Now().Before(e.expires) {
		delete(s.dedup, key)
		e.gone = true
		return nil, false
	}
	return e.resp, true
}
